"""Pixel rejection and combination: pure kernels over an ``(N, h, w)`` block.

Every method looks at the N samples of one pixel (NaN = no sample: outside a frame's footprint
or masked), rejects outliers on the low and the high side with separate thresholds, and returns
the (weighted) mean of what is kept, with the number of samples rejected low and high.

Methods
-------
``none``/``mean``   plain (weighted) mean of all samples
``median``          median (no weights)
``minmax``          drop the ``low`` lowest and ``high`` highest samples (counts)
``percentile``      drop samples below median*(1-low) or above median*(1+high) (fractions)
``sigma``           iterative kappa-sigma around the median (sample sigma)
``winsorized``      Siril's winsorized sigma clipping: sigma from the winsorized sample
``mad``             kappa-sigma with sigma = 1.4826 * MAD around the median (robust with few
                    frames, where a sample sigma inflated by the outlier itself rejects nothing)
``linear``          linear-fit clipping: sigma from the residuals of a line fitted to the
                    sorted samples
``gesd``            generalized extreme Studentized deviate test (Rosner 1983) with up to
                    ``max_outliers`` outliers, significance ``alpha``

With 3-9 frames the sample standard deviation includes the outlier it should find, so a
satellite trail in one of 5 frames survives a plain sigma clip. ``mad`` and ``winsorized`` use
robust scale estimates; the pipeline also masks detected trails before integration.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterable

import numba as nb
import numpy as np

from deepsky.parallel import for_bands

# Fast-math without "no NaNs / no infinities": NaN marks a missing sample and must be seen.
_FAST = {"reassoc", "contract", "arcp", "nsz"}
# The helpers called once per pixel (or per sample) take arrays but never allocate: compiled
# without numba's reference counting (``_nrt=False``, as numba's own sort and string helpers
# are). With it, every call increments and decrements each array argument's count, atomic
# operations that cost 40-60 ns per call: as much as the sorting of 20 samples.
# ``error_model="numpy"``: a division by zero gives inf or NaN instead of raising, as numpy
# does; with Python's model every division carries a test for zero and a branch to raise,
# which keeps LLVM from vectorising any loop that divides (the winsorizing pass across a run
# of pixels: 12.5 -> 3 ns per pixel). No kernel here divides by zero on purpose: results are
# the same where the Python model would not have raised.
_LEAF = dict(cache=True, nogil=True, fastmath=_FAST, _nrt=False, error_model="numpy")

METHODS = ("none", "mean", "median", "minmax", "percentile", "sigma", "winsorized", "mad",
           "linear", "gesd")
_CODE = {m: i for i, m in enumerate(METHODS)}


# ----------------------------------------------------------------------------------------------
# Selection and statistics on small buffers (no full sort: O(N) per pixel)
# ----------------------------------------------------------------------------------------------
@nb.njit(**_LEAF)
def _select(a: np.ndarray, b: np.ndarray, n: int, k: int) -> float:
    """k-th smallest of a[:n] (Hoare quickselect in place, moving b along with a)."""
    lo = 0
    hi = n - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        if x > y:
            x, y = y, x
        if y > z:
            y = z
            if x > y:
                y = x
        pivot = y
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                u = b[i]
                b[i] = b[j]
                b[j] = u
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return a[k]
    return a[k]


@nb.njit(**_LEAF)
def _median(v: np.ndarray, idx: np.ndarray, n: int) -> float:
    """Median of v[:n]; reorders v (and idx with it), which the callers do not mind."""
    k = n >> 1
    hi = _select(v, idx, n, k)
    if n & 1:
        return hi
    lo = v[0]
    for i in range(1, k):
        if v[i] > lo:
            lo = v[i]
    return 0.5 * (lo + hi)


_CENTER_SAMPLES = 33


@nb.njit(**_LEAF)
def _center(v: np.ndarray, idx: np.ndarray, n: int, tmp: np.ndarray,
            tmp2: np.ndarray) -> float:
    """The clipping centre: the median of the samples, or, beyond 33 samples, the median of
    33 of them spread over the frames (every k-th). The centre only has to be robust: with
    100 frames the subsample's median is within 0.2 sigma of the full one, and a selection
    over 33 values instead of 100 is what makes clipping large stacks affordable."""
    if n <= _CENTER_SAMPLES:
        return _median(v, idx, n)
    step = (n + _CENTER_SAMPLES - 1) // _CENTER_SAMPLES
    m = 0
    for i in range(0, n, step):
        tmp[m] = v[i]
        tmp2[m] = 0.0
        m += 1
    return _median(tmp, tmp2, m)


@nb.njit(**_LEAF)
def _mean_std(v: np.ndarray, n: int) -> tuple[float, float]:
    # One pass, shifted by the first sample for accuracy.
    c = v[0]
    s = 0.0
    q = 0.0
    for i in range(n):
        d = v[i] - c
        s += d
        q += d * d
    mean = s / n
    var = (q - s * mean) / (n - 1) if n > 1 else 0.0
    return c + mean, math.sqrt(var) if var > 0 else 0.0


@nb.njit(**_LEAF)
def _mad(v: np.ndarray, n: int, med: float, tmp: np.ndarray, tmp2: np.ndarray) -> float:
    for i in range(n):
        tmp2[i] = abs(v[i] - med)
    return _median(tmp2, tmp, n)


@nb.njit(**_LEAF)
def _winsorized_sigma(v: np.ndarray, n: int, med: float, tmp: np.ndarray,
                      hint: np.ndarray) -> float:
    """Siril's winsorized sigma: clip at median +- 1.5 sigma, sigma = 1.134 std, repeat
    (each round one pass: clip and moments together).

    The iteration converges to the same value from any reasonable start; starting from the
    neighbouring pixel's result (``hint[0]``, pixels of a row share their noise) instead of
    the sample deviation saves about half of the rounds."""
    _, sigma = _mean_std(v, n)
    h = hint[0]
    if h > 0.0 and 0.3 * sigma < h < 3.0 * sigma:
        sigma = h
    for _w in range(20):
        s0 = sigma
        a = med - 1.5 * s0
        b = med + 1.5 * s0
        s = 0.0
        q = 0.0
        for i in range(n):
            x = v[i]
            x = a if x < a else (b if x > b else x)
            d = x - med
            s += d
            q += d * d
        m = s / n
        var = (q - s * m) / (n - 1) if n > 1 else 0.0
        sigma = 1.134 * math.sqrt(var) if var > 0 else 0.0
        if abs(sigma - s0) <= s0 * 0.002:
            break
    hint[0] = sigma
    return sigma


@nb.njit(**_LEAF)
def _sort_pairs(v: np.ndarray, idx: np.ndarray, n: int) -> None:
    """Sort v[:n] ascending carrying idx (shell sort: no allocation, fine for n <= ~1000)."""
    gap = 1
    while gap < n // 3:
        gap = 3 * gap + 1
    while gap > 0:
        for i in range(gap, n):
            x = v[i]
            k = idx[i]
            j = i
            while j >= gap and v[j - gap] > x:
                v[j] = v[j - gap]
                idx[j] = idx[j - gap]
                j -= gap
            v[j] = x
            idx[j] = k
        gap //= 3


@nb.njit(**_LEAF)
def _compact(v: np.ndarray, idx: np.ndarray, n: int, lo_cut: float, hi_cut: float) -> tuple[int, int, int]:
    """Drop samples outside [lo_cut, hi_cut]; return (new n, dropped low, dropped high)."""
    k = 0
    nl = 0
    nh = 0
    for i in range(n):
        x = v[i]
        if x < lo_cut:
            nl += 1
        elif x > hi_cut:
            nh += 1
        else:
            v[k] = x
            idx[k] = idx[i]
            k += 1
    return k, nl, nh


@nb.njit(**_LEAF)
def _gesd_critical(n: int, i: int, alpha: float) -> float:
    """Rosner's critical value lambda_i for the (i+1)-th removal from n samples, using a
    Wilson-Hilferty approximation of the t quantile (no scipy inside numba)."""
    p = 1.0 - alpha / (2.0 * (n - i))
    dof = n - i - 2
    if dof < 1:
        return 1e30
    # normal quantile (Acklam's rational approximation)
    q = p
    if q < 0.02425:
        t = math.sqrt(-2.0 * math.log(q))
        z = (((((-7.784894002430293e-03 * t - 3.223964580411365e-01) * t - 2.400758277161838e+00)
               * t - 2.549732539343734e+00) * t + 4.374664141464968e+00) * t
             + 2.938163982698783e+00) / ((((7.784695709041462e-03 * t + 3.224671290700398e-01)
                                          * t + 2.445134137142996e+00) * t
                                         + 3.754408661907416e+00) * t + 1.0)
    elif q <= 1 - 0.02425:
        r = q - 0.5
        t = r * r
        z = (((((-3.969683028665376e+01 * t + 2.209460984245205e+02) * t - 2.759285104469687e+02)
               * t + 1.383577518672690e+02) * t - 3.066479806614716e+01) * t
             + 2.506628277459239e+00) * r / (((((-5.447609879822406e+01 * t
                                                  + 1.615858368580409e+02) * t
                                                 - 1.556989798598866e+02) * t
                                                + 6.680131188771972e+01) * t
                                               - 1.328068155288572e+01) * t + 1.0)
    else:
        t = math.sqrt(-2.0 * math.log(1.0 - q))
        z = -(((((-7.784894002430293e-03 * t - 3.223964580411365e-01) * t
                 - 2.400758277161838e+00) * t - 2.549732539343734e+00) * t
               + 4.374664141464968e+00) * t + 2.938163982698783e+00) / (
            (((7.784695709041462e-03 * t + 3.224671290700398e-01) * t + 2.445134137142996e+00)
             * t + 3.754408661907416e+00) * t + 1.0)
    # Student t quantile from the normal one (Cornish-Fisher expansion)
    g1 = (z ** 3 + z) / 4.0
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96.0
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384.0
    tq = z + g1 / dof + g2 / dof ** 2 + g3 / dof ** 3
    m = n - i
    return (m - 1) * tq / math.sqrt((dof + tq * tq) * m)


# ----------------------------------------------------------------------------------------------
# One pixel
# ----------------------------------------------------------------------------------------------
@nb.njit(**_LEAF)
def _rank_sort(v: np.ndarray, idx: np.ndarray, n: int, tmp: np.ndarray,
               tmp2: np.ndarray) -> None:
    """Sort v[:n] ascending carrying idx, by ranks: each sample's rank is the number of
    samples before it in the order (ties broken by position). O(n^2) comparisons, but
    without a branch (they vectorise), which for n <= 33 beats any comparison sort."""
    for i in range(n):
        x = v[i]
        lt = 0.0
        eq = 0.0
        for j in range(n):  # branch-free: vectorised
            lt += 1.0 if v[j] < x else 0.0
            eq += 1.0 if v[j] == x else 0.0
        r = int(lt)
        if eq > 1.0:  # ties (integer data): the earlier ones first
            for j in range(i):
                if v[j] == x:
                    r += 1
        tmp[r] = x
        tmp2[r] = idx[i]
    for i in range(n):
        v[i] = tmp[i]
        idx[i] = int(tmp2[i])


@nb.njit(**_LEAF)
def _sorted_mad(v: np.ndarray, col: int, lo: int, hi: int, med: float) -> float:
    """Median absolute deviation of the sorted column v[lo:hi, col] from ``med``: the
    deviations grow outwards from the median on each side, so a merge from the middle
    finds it."""
    m = hi - lo
    k = m >> 1  # the (k)-th smallest deviation, 0-based, and the (k-1)-th for even m
    # Left run: v[l] for l going down from the last sample below med; right run going up.
    r = lo
    while r < hi and v[r, col] < med:
        r += 1
    left = r - 1
    right = r
    prev = 0.0
    cur = 0.0
    for t in range(k + 1):
        dl = med - v[left, col] if left >= lo else np.inf
        dr = v[right, col] - med if right < hi else np.inf
        prev = cur
        if dl <= dr:
            cur = dl
            left -= 1
        else:
            cur = dr
            right += 1
    if m & 1:
        return cur
    return 0.5 * (prev + cur)


@nb.njit(**_LEAF, inline="always")
def _walk_in(v: np.ndarray, col: int, lo: int, hi: int, a: float, b: float) -> tuple[int, int]:
    """``(i, j)``: the kept range of the sorted column v[lo:hi, col] between the cuts ``a``
    and ``b`` (the samples >= a and <= b), walked to from its ends: the cuts clip few
    samples, so this costs one mispredicted branch where a binary search costs about half
    of its steps."""
    i = lo
    while i < hi and v[i, col] < a:
        i += 1
    j = hi
    while j > i and v[j - 1, col] > b:
        j -= 1
    return i, j


@nb.njit(**_LEAF)
def _clip_sorted(v: np.ndarray, idx: np.ndarray, n: int, tmp: np.ndarray, tmp2: np.ndarray,
                 method: int, low: float, high: float, max_iter: int) -> tuple[int, int, int]:
    """Iterative clipping of a small stack (n <= 33): sorted once (by rank), then
    :func:`_clip_presorted`; the kept samples are moved to the front of v and idx."""
    _rank_sort(v, idx, n, tmp, tmp2)
    m, nl, nh, lo = _clip_presorted(v, n, tmp, tmp2, method, low, high, max_iter)
    if lo > 0:
        for i in range(m):
            v[i] = v[lo + i]
            idx[i] = idx[lo + i]
    return m, nl, nh


@nb.njit(**_LEAF)
def _clip_presorted(v: np.ndarray, n: int, tmp: np.ndarray, tmp2: np.ndarray, method: int,
                    low: float, high: float, max_iter: int) -> tuple[int, int, int, int]:
    """Iterative clipping of the sorted v[:n] (sigma 5, winsorized 6, mad 7): the prefix
    sums of the samples less a shift (the middle sample: near every later median, so the
    sums stay accurate) into ``tmp`` and ``tmp2``, then :func:`_clip_prefixed`."""
    shift = float(v[n >> 1])
    tmp[0] = 0.0
    tmp2[0] = 0.0
    for i in range(n):
        d = v[i] - shift
        tmp[i + 1] = tmp[i] + d
        tmp2[i + 1] = tmp2[i] + d * d
    return _clip_prefixed(v.reshape((-1, 1)), 0, n, tmp.reshape((-1, 1)),
                          tmp2.reshape((-1, 1)), shift, method, low, high, max_iter)


@nb.njit(**_LEAF, inline="always")
def _winsorize_step(tmp: np.ndarray, tmp2: np.ndarray, col: int, lo: int, hi: int, pa: int,
                    pb: int, m: float, dm: float, s0: float) -> tuple[float, bool]:
    """:func:`_winsorize_sums` of the sorted column ``col`` whose prefix sums are ``tmp``,
    ``tmp2``."""
    return _winsorize_sums(tmp[pb, col] - tmp[pa, col], tmp2[pb, col] - tmp2[pa, col],
                           np.float64(lo), np.float64(hi), np.float64(pa), np.float64(pb), m,
                           dm, s0)


@nb.njit(**_LEAF, inline="always")
def _winsorize_sums(s_in: float, q_in: float, lo: float, hi: float, pa: float, pb: float,
                    m: float, dm: float, s0: float) -> tuple[float, bool]:
    """One winsorizing pass of a sorted column whose kept range is [lo, hi) (``m``
    samples), from the cuts of sigma ``s0`` at positions ``pa``, ``pb`` (the samples in
    [pa, pb) lie between them, their sum and sum of squares less the shift ``s_in``,
    ``q_in``; ``dm`` = median - shift): ``(sigma, True)``, the fixed point of the quadratic
    the map is while no sample crosses a cut, or ``(sigma, False)``, Siril's plain step,
    where more than a third of the samples are clipped. Positions are floats (exact: small
    integers) and both answers are computed, one selected: no branch, so that a loop over
    pixels that calls this vectorises."""
    k = pb - pa
    # Samples in [pa, pb) relative to med; the others sit at -c / +c.
    m1 = s_in - k * dm
    m2 = q_in - 2.0 * dm * s_in + k * dm * dm
    nlo = pa - lo
    nhi = hi - pb
    u = nhi + nlo
    dd = nhi - nlo
    # s^2 = K (qsum - ssum^2 / m), qsum = m2 + 2.25 u s^2, ssum = m1 + 1.5 dd s:
    # qa s^2 + qb s + qc = 0 (qc <= 0: one positive root when qa > 0).
    kk = 1.134 * 1.134 / (m - 1)
    qa = 1.0 - 2.25 * kk * (u - dd * dd / m)
    qb = 3.0 * kk * m1 * dd / m
    qc = -kk * (m2 - m1 * m1 / m)
    fixed = qa > 1e-9 and qc <= 0.0
    root = math.sqrt(qb * qb - 4.0 * qa * qc)
    den = qb + root
    # 0 when the unclipped samples have no spread: the limit is 0
    r_pos = -2.0 * qc / den if den > 0.0 else 0.0
    r_fix = (root - qb) / (2.0 * qa) if qb < 0.0 else r_pos
    # more than a third clipped: f grows faster than sigma, a plain step
    c = 1.5 * s0
    ssum = m1 + c * dd
    qsum = m2 + c * c * u
    var = (qsum - ssum * ssum / m) / (m - 1)
    r_plain = 1.134 * math.sqrt(var) if var > 0 else 0.0
    return (r_fix if fixed else r_plain), fixed


@nb.njit(**_LEAF)
def _clip_prefixed(v: np.ndarray, col: int, n: int, tmp: np.ndarray, tmp2: np.ndarray,
                   shift: float, method: int, low: float, high: float,
                   max_iter: int) -> tuple[int, int, int, int]:
    """Iterative clipping of the sorted column v[:n, col] (see :func:`_clip_from`)."""
    return _clip_from(v, col, n, tmp, tmp2, shift, method, low, high, max_iter, 0, n)


@nb.njit(**_LEAF)
def _clip_from(v: np.ndarray, col: int, n: int, tmp: np.ndarray, tmp2: np.ndarray,
               shift: float, method: int, low: float, high: float, max_iter: int,
               lo: int, hi: int) -> tuple[int, int, int, int]:
    """Iterative clipping of the sorted column v[:n, col], the same rounds as the general
    path: the median of the kept range is its middle, the clipping narrows the range from
    both ends, and the sums the sigma and the winsorized sigma need come from the prefix
    sums ``tmp[:, col]`` and ``tmp2[:, col]`` (sum and sum of squares of v[:i, col] - shift at i),
    so that each round and each winsorizing pass is a few short searches instead of a pass
    over the samples. ``v`` may be float32 (the sorted run): every statistic is computed in
    float64. (Columns of 2-D arrays, not 1-D views: a view per pixel costs numba a
    reference count.) Returns (n kept, n low, n high, first kept): the kept samples are
    v[first : first + n kept, col]. ``lo, hi``: the kept range to start from (0, n; or where
    earlier rounds left it: :func:`_winsorized_lockstep`)."""
    for _ in range(max_iter):
        m = hi - lo
        if m < 3:
            break
        mid = lo + (m >> 1)
        med = float(v[mid, col]) if m & 1 else 0.5 * (float(v[mid - 1, col]) + float(v[mid, col]))
        s1 = tmp[hi, col] - tmp[lo, col]
        s2 = tmp2[hi, col] - tmp2[lo, col]
        var = (s2 - s1 * s1 / m) / (m - 1)
        sigma = math.sqrt(var) if var > 0 else 0.0
        if method == 6:
            # Siril's winsorized sigma (see _winsorized_sigma): clip at med +- 1.5 sigma,
            # sigma = 1.134 std of the clipped samples, repeat, i.e. the fixed point of
            # sigma = f(sigma). While no sample crosses a cut, f(sigma)^2 is a quadratic in
            # sigma (the clipped samples sit at +-1.5 sigma), so each round solves for the
            # fixed point exactly and stops when the cuts it gives clip the same samples:
            # the limit itself rather than a value within its tolerance. It starts from the
            # kept samples' own standard deviation: 1.5 rounds a pixel on biases, 1.9 on
            # lights. (Started from the neighbouring pixel's result it took 2.05 and 2.4, and
            # a start below the answer clips more than a third of the samples, where the
            # plain step takes over: 8 % of the pixels against 0.06 %. The limits reached
            # were the same, bit for bit, on 24 576 pixels of the benchmark's frames.)
            dm = med - shift
            pa = -1
            pb = -1
            for _w in range(20):
                s0 = sigma
                c = 1.5 * s0
                a = med - c
                b = med + c
                if pa < 0:  # a sixth of the samples or so lie beyond each cut
                    pa, pb = _walk_in(v, col, lo, hi, a, b)
                else:  # the cuts moved a little: walk from the last positions
                    while pa > lo and v[pa - 1, col] >= a:
                        pa -= 1
                    while pa < hi and v[pa, col] < a:
                        pa += 1
                    if pb < pa:
                        pb = pa
                    while pb > pa and v[pb - 1, col] > b:
                        pb -= 1
                    while pb < hi and v[pb, col] <= b:
                        pb += 1
                sigma, fixed = _winsorize_step(tmp, tmp2, col, lo, hi, pa, pb, m, dm, s0)
                if fixed:
                    c = 1.5 * sigma
                    a = med - c
                    b = med + c
                    if ((pa == lo or v[pa - 1, col] < a) and (pa == hi or v[pa, col] >= a)
                            and (pb == pa or v[pb - 1, col] <= b)
                            and (pb == hi or v[pb, col] > b)):
                        break  # the same samples clipped: the fixed point
                elif abs(sigma - s0) <= s0 * 0.002:
                    break
        elif method == 7:
            sigma = 1.4826 * _sorted_mad(v, col, lo, hi, med)
        if sigma <= 0.0:
            break
        new_lo, new_hi = _walk_in(v, col, lo, hi, med - low * sigma, med + high * sigma)
        if new_hi - new_lo < 2:
            break  # never reject (almost) everything: keep what was there
        if new_lo == lo and new_hi == hi:
            break
        lo = new_lo
        hi = new_hi
    return hi - lo, lo, n - hi, lo


# The lock step's scratch rows, shared by _winsorized_lockstep and _lockstep_pass: float64
# ``fl`` (median, sigma, median - shift, the two cuts, the sample count, then the prefix sums
# at the cuts) and int32 ``it`` (the cuts' positions, the state, the last pass's kind and
# positions).
_MED, _SIG, _DMS, _CA, _CB, _MF, _A1, _A2, _B1, _B2, _NFL = range(11)
_CL, _CE, _ACT, _QUAD, _PAP, _PBP, _NIT = range(7)


@nb.njit(**_LEAF)
def _winsorized_lockstep(vals: np.ndarray, cnt: np.ndarray, ps1: np.ndarray, ps2: np.ndarray,
                         shift: np.ndarray, cw: int, n: int, low: float, high: float,
                         max_iter: int, res: np.ndarray, fl: np.ndarray, it: np.ndarray,
                         f32: np.ndarray) -> None:
    """The winsorized clipping (:func:`_clip_from`, method 6) of a run's ``cw`` sorted
    columns ``vals[:, :cw]`` at once: its first clipping round, every pixel's winsorizing
    passes in lock step. Where :func:`_clip_from` walks to each cut from the ends of the
    kept range (a loop whose length, and so its branch, differs from pixel to pixel), the
    position of a cut in a sorted column is the count of the samples below it, and counts
    over the rows of ``vals`` are vectorised across the run's pixels: one pass decides every
    pixel's cuts (:func:`_count_cuts`), one more takes the prefix sums at them and makes
    every pixel's winsorizing pass (:func:`_lockstep_pass`), without a branch. The same
    expressions in the same order, so the same results, bit for bit: a pass ends a pixel's
    winsorizing where :func:`_clip_from`'s would, and a pixel the first round clipped
    continues in :func:`_clip_from` from the range it left (as do the few whose passes run
    long, from the start).

    ``res[:, x]``: (n kept, n low, n high, first kept) of each pixel with 3 samples or
    more. Scratch: ``fl`` (_NFL, cw) float64, ``it`` (_NIT, cw) int32, ``f32`` (2, cw)
    float32."""
    med = fl[_MED]
    sig = fl[_SIG]
    dms = fl[_DMS]
    ca = fl[_CA]
    cb = fl[_CB]
    m_f = fl[_MF]
    act = it[_ACT]
    for x in range(cw):
        k = cnt[x]
        ok = np.int32(k >= 3)
        act[x] = ok
        m = k if ok == 1 else np.int32(3)  # (no sample read and no result used when k < 3)
        mid = m >> 1
        # (float() of a float32 sample is a float32: the middle pair is summed in float32,
        # as _clip_from sums it)
        v1 = float(vals[mid, x])
        v0 = float(vals[mid - 1, x])
        md = np.float64(v1) if (m & 1) == 1 else 0.5 * (v0 + v1)
        mf = np.float64(m)
        s1 = ps1[m, x] - ps1[0, x]
        s2 = ps2[m, x] - ps2[0, x]
        var = (s2 - s1 * s1 / mf) / (mf - 1)
        sig[x] = math.sqrt(var) if var > 0 else 0.0
        med[x] = md
        dms[x] = md - shift[x]
        m_f[x] = mf
    it[_QUAD, :cw] = 0  # no pass made yet
    remaining = 0
    for x in range(cw):
        remaining += act[x]
    for r in range(20):
        if remaining == 0:
            break
        if r >= 3 and remaining * 8 <= cw:
            # the last few go on in _clip_from (see below): a pass costs the whole run
            # (after the third, ~1 % of a run's pixels are still winsorizing; 20 biases,
            # one thread: 104 -> 95 ns per pixel)
            break
        for x in range(cw):
            c = 1.5 * sig[x]
            ca[x] = med[x] - c
            cb[x] = med[x] + c
        _count_cuts(vals, n, cw, ca, cb, f32, it[_CL], it[_CE])
        remaining = _lockstep_pass(ps1, ps2, cw, cnt, fl, it, r == 19)
    # The first round's cuts at low and high sigma: the pixels they clip, those whose passes
    # ran long and those with non-finite samples go on in _clip_from.
    for x in range(cw):
        ca[x] = med[x] - low * sig[x]
        cb[x] = med[x] + high * sig[x]
    _count_cuts(vals, n, cw, ca, cb, f32, it[_CL], it[_CE])
    cl = it[_CL]
    ce = it[_CE]
    need = it[_QUAD]  # (no longer needed by the passes)
    anyneed = 0
    for x in range(cw):
        k = cnt[x]
        lo = min(cl[x], k)
        hi = max(lo, min(ce[x], k))
        fin = np.int32(math.isfinite(ca[x])) & np.int32(math.isfinite(cb[x]))
        full = np.int32(act[x] != 0) | (1 - fin)
        part = ((1 - full) & np.int32(sig[x] > 0.0) & np.int32(hi - lo >= 2)
                & (np.int32(lo != 0) | np.int32(hi != k)))
        nd = (full + 2 * part) * np.int32(k >= 3)  # 1: from the start, 2: from [lo, hi)
        need[x] = nd
        anyneed |= nd
        cl[x] = lo
        ce[x] = hi
        res[0, x] = k
        res[1, x] = 0
        res[2, x] = 0
        res[3, x] = 0
    if anyneed == 0:
        return
    for x in range(cw):
        nd = need[x]
        if nd == 0:
            continue
        if nd == 1:
            m, nl, nh, first = _clip_from(vals, x, cnt[x], ps1, ps2, shift[x], 6, low, high,
                                          max_iter, 0, cnt[x])
        else:
            m, nl, nh, first = _clip_from(vals, x, cnt[x], ps1, ps2, shift[x], 6, low, high,
                                          max_iter - 1, cl[x], ce[x])
        res[0, x] = m
        res[1, x] = nl
        res[2, x] = nh
        res[3, x] = first


@nb.njit(**_LEAF)
def _lockstep_pass(ps1: np.ndarray, ps2: np.ndarray, cw: int, cnt: np.ndarray,
                   fl: np.ndarray, it: np.ndarray, last: bool) -> int:
    """One winsorizing pass of every active pixel of :func:`_winsorized_lockstep` (whose
    scratch rows ``fl`` and ``it`` carry the state), the cuts' positions counted in
    rows ``_CL``, ``_CE`` of ``it``: the prefix sums at the cuts gathered, then the pass itself,
    written without a branch (flags as 0/1 integers) so that both loops vectorise.
    Returns the pixels still active."""
    sig = fl[_SIG]
    dms = fl[_DMS]
    ca = fl[_CA]
    cb = fl[_CB]
    m_f = fl[_MF]
    a1 = fl[_A1]
    a2 = fl[_A2]
    b1 = fl[_B1]
    b2 = fl[_B2]
    cl = it[_CL]
    ce = it[_CE]
    act = it[_ACT]  # 1 winsorizing, 0 done, 2 non-finite samples (the walks' own answer)
    quad = it[_QUAD]  # the last pass was the quadratic's fixed point
    pap = it[_PAP]
    pbp = it[_PBP]
    for x in range(cw):
        hi = cnt[x]
        pa = min(cl[x], hi)
        pb = max(pa, min(ce[x], hi))
        a1[x] = ps1[pa, x]
        a2[x] = ps2[pa, x]
        b1[x] = ps1[pb, x]
        b2[x] = ps2[pb, x]
    remaining = 0
    lst = np.int32(last)
    for x in range(cw):
        ac = act[x]
        on = np.int32(ac == 1)
        fin = np.int32(math.isfinite(ca[x])) & np.int32(math.isfinite(cb[x]))
        hi = cnt[x]
        # (recomputed: storing them in the loop above was no faster)
        pa = min(cl[x], hi)
        pb = max(pa, min(ce[x], hi))
        # the same samples clipped as after the last (fixed-point) pass: the fixed point
        same = np.int32(quad[x] == 1) & np.int32(pa == pap[x]) & np.int32(pb == pbp[x])
        s0 = sig[x]
        sigma, fixed = _winsorize_sums(b1[x] - a1[x], b2[x] - a2[x], 0.0, np.float64(hi),
                                       np.float64(pa), np.float64(pb), m_f[x], dms[x], s0)
        fx = np.int32(fixed)
        upd = on & fin & (1 - same)
        conv = (1 - fx) & np.int32(abs(sigma - s0) <= s0 * 0.002)
        a_new = ((1 - conv) & (1 - lst)) if upd == 1 else ((2 * (1 - fin)) if on == 1 else ac)
        act[x] = a_new
        sig[x] = sigma if upd == 1 else s0
        quad[x] = fx if upd == 1 else quad[x]
        pap[x] = pa if upd == 1 else pap[x]
        pbp[x] = pb if upd == 1 else pbp[x]
        remaining += np.int32(a_new == 1)
    return remaining


@nb.njit(**_LEAF)
def _count_cuts(vals: np.ndarray, n: int, cw: int, a: np.ndarray, b: np.ndarray,
                f32: np.ndarray, below: np.ndarray, upto: np.ndarray) -> None:
    """Per column x of the sorted float32 ``vals[:, :cw]``: the samples below ``a[x]`` and
    those up to ``b[x]`` (the cuts' positions), a pass over the rows vectorised across the
    columns. The comparisons are made in float32 (twice the lanes of float64) against the
    cuts rounded inwards to float32 (``f32`` rows): for a float32 v, v < a exactly when v is
    below the least float32 >= a, and v <= b exactly when v is at most the greatest
    float32 <= b."""
    a32 = f32[0]
    b32 = f32[1]
    ai = a32.view(np.int32)
    bi = b32.view(np.int32)
    for x in range(cw):
        a32[x] = np.float32(a[x])
        b32[x] = np.float32(b[x])
    for x in range(cw):
        # one float32 step inwards where the rounding went outwards (the bit pattern of a
        # float's magnitude counts up with it; NaN compares false either way)
        ia = ai[x]
        ai[x] = (ia + (np.int32(1) if ia >= 0 else np.int32(-1))
                 if np.float64(a32[x]) < a[x] else ia)
        ib = bi[x]
        bi[x] = (ib - (np.int32(1) if ib > 0 else np.int32(-1))
                 if np.float64(b32[x]) > b[x] else ib)
    bl = below[:cw]
    up = upto[:cw]
    bl[:] = 0
    up[:] = 0
    aa = a32[:cw]
    bb = b32[:cw]
    for i in range(n):
        row = vals[i, :cw]
        for x in range(cw):
            v = row[x]
            bl[x] += np.int32(v < aa[x])
            up[x] += np.int32(v <= bb[x])


@nb.njit(**_LEAF)
def _reject_pixel(v: np.ndarray, idx: np.ndarray, n: int, tmp: np.ndarray, tmp2: np.ndarray,
                  method: int, low: float, high: float, max_iter: int, alpha: float,
                  max_outliers: int, hint: np.ndarray) -> tuple[int, int, int]:
    """Reject outliers among v[:n] (compacting v and idx); return (n kept, n low, n high)."""
    tl = 0
    th = 0
    if method <= 1 or n < 3:  # none / mean
        return n, 0, 0
    if method == 3:  # minmax: low/high are counts
        nl = int(low)
        nh = int(high)
        if nl + nh >= n:
            return n, 0, 0
        _sort_pairs(v, idx, n)
        for i in range(n - nl - nh):
            v[i] = v[i + nl]
            idx[i] = idx[i + nl]
        return n - nl - nh, nl, nh
    if method == 4:  # percentile around the median
        med = _median(v, idx, n)
        return _compact(v, idx, n, med - abs(med) * low, med + abs(med) * high)
    if method == 8:  # linear fit to the sorted samples (Siril's linear-fit clipping)
        _sort_pairs(v, idx, n)
        lo = 0
        hi = n
        for _ in range(max_iter):
            m = hi - lo
            if m <= 4:
                break
            sx = 0.0
            sy = 0.0
            sxx = 0.0
            sxy = 0.0
            for i in range(m):
                y = v[lo + i]
                sx += i
                sy += y
                sxx += i * i
                sxy += i * y
            den = m * sxx - sx * sx
            b = (m * sxy - sx * sy) / den if den != 0 else 0.0
            a = (sy - b * sx) / m
            r = 0.0
            for i in range(m):
                r += abs(v[lo + i] - (a + b * i))
            sigma = r / m
            if sigma <= 0.0:
                break
            new_lo = lo
            while new_lo < hi and v[new_lo] < a + b * (new_lo - lo) - low * sigma:
                new_lo += 1
            new_hi = hi
            while new_hi > new_lo and v[new_hi - 1] > a + b * (new_hi - 1 - lo) + high * sigma:
                new_hi -= 1
            if new_hi - new_lo < 2 or (new_lo == lo and new_hi == hi):
                break
            lo = new_lo
            hi = new_hi
        for i in range(hi - lo):
            v[i] = v[lo + i]
            idx[i] = idx[lo + i]
        return hi - lo, lo, n - hi
    if method == 9:  # GESD (Rosner): remove the most extreme sample while it is significant
        if n < 4:
            return n, 0, 0
        kmax = min(max_outliers, n - 3)
        # Test statistics on a working copy; the low side is relaxed by low/3, high by high/3.
        for i in range(n):
            tmp2[i] = v[i]
        m = n
        n_out = 0
        cut_lo = -np.inf
        cut_hi = np.inf
        lo_trial = -np.inf
        hi_trial = np.inf
        for i in range(kmax):
            mean, sd = _mean_std(tmp2, m)
            if sd <= 0:
                break
            jmin = 0
            jmax = 0
            for j in range(1, m):
                if tmp2[j] < tmp2[jmin]:
                    jmin = j
                if tmp2[j] > tmp2[jmax]:
                    jmax = j
            rl = (mean - tmp2[jmin]) / sd * 3.0 / max(low, 1e-6)
            rh = (tmp2[jmax] - mean) / sd * 3.0 / max(high, 1e-6)
            if rl >= rh:
                r = rl
                lo_trial = tmp2[jmin]
                tmp2[jmin] = tmp2[m - 1]
            else:
                r = rh
                hi_trial = tmp2[jmax]
                tmp2[jmax] = tmp2[m - 1]
            m -= 1
            if r > _gesd_critical(n, i, alpha):
                n_out = i + 1
                cut_lo = lo_trial
                cut_hi = hi_trial
        if n_out == 0:
            return n, 0, 0
        # Everything at or beyond the last significant removal on each side goes.
        k = 0
        for i in range(n):
            x = v[i]
            if x <= cut_lo:
                tl += 1
            elif x >= cut_hi:
                th += 1
            else:
                v[k] = x
                idx[k] = idx[i]
                k += 1
        return k, tl, th
    # Iterative clipping around the median: sigma (5), winsorized (6), mad (7).
    if n <= _CENTER_SAMPLES:
        return _clip_sorted(v, idx, n, tmp, tmp2, method, low, high, max_iter)
    for _ in range(max_iter):
        if n < 3:
            break
        med = _center(v, idx, n, tmp, tmp2)
        if method == 5:
            _, sigma = _mean_std(v, n)
        elif method == 6:
            sigma = _winsorized_sigma(v, n, med, tmp, hint)
        else:
            sigma = 1.4826 * _mad(v, n, med, tmp, tmp2)
        if sigma <= 0.0:
            break
        new_n, nl, nh = _compact(v, idx, n, med - low * sigma, med + high * sigma)
        if new_n < 2:
            # Never reject (almost) everything: keep what was there.
            break
        tl += nl
        th += nh
        if new_n == n:
            break
        n = new_n
    return n, tl, th


@nb.njit(cache=True, nogil=True, inline="always")
def _put(out: np.ndarray, nlow: np.ndarray, nhigh: np.ndarray, nused: np.ndarray, y: int,
         x: int, value: float, nl: int, nh: int, m: int) -> None:
    """One pixel's result: the value, the samples rejected low and high, the samples kept."""
    out[y, x] = value
    nlow[y, x] = nl
    nhigh[y, x] = nh
    nused[y, x] = m


@nb.njit(cache=True, nogil=True, fastmath=_FAST)
def _combine(block: np.ndarray, weights: np.ndarray, method: int, low: float, high: float,
             max_iter: int, alpha: float, max_outliers: int,
             out: np.ndarray, nlow: np.ndarray, nhigh: np.ndarray, nused: np.ndarray,
             wvalid: np.ndarray) -> None:
    n, h, w = block.shape
    rowbuf = np.empty((w, n), np.float32)  # one row, transposed: a pixel's samples contiguous
    v = np.empty(n, np.float64)
    idx = np.empty(n, np.int64)
    tmp = np.empty(n + 1, np.float64)  # n + 1: prefix sums of the small-stack path
    tmp2 = np.empty(n + 1, np.float64)
    hint = np.zeros(1, np.float64)
    for y in range(h):
        for i in range(n):
            for x in range(w):
                rowbuf[x, i] = block[i, y, x]
        for x in range(w):
            k = 0
            wv = 0.0
            for i in range(n):
                val = rowbuf[x, i]
                if val == val:  # not NaN
                    v[k] = val
                    idx[k] = i
                    k += 1
                    wv += weights[i]
            wvalid[y, x] = wv
            if k == 0:
                _put(out, nlow, nhigh, nused, y, x, np.nan, 0, 0, 0)
                continue
            if method == 2:  # median
                _put(out, nlow, nhigh, nused, y, x, _median(v, idx, k), 0, 0, k)
                continue
            m, nl, nh = _reject_pixel(v, idx, k, tmp, tmp2, method, low, high, max_iter,
                                      alpha, max_outliers, hint)
            s = 0.0
            sw = 0.0
            for i in range(m):
                wt = weights[idx[i]]
                s += wt * v[i]
                sw += wt
            _put(out, nlow, nhigh, nused, y, x, s / sw if sw > 0 else np.nan, nl, nh, m)


# ----------------------------------------------------------------------------------------------
# Sorted path: a sorting network across the pixels of a row
# ----------------------------------------------------------------------------------------------
_NETWORK_MAX = 512  # beyond this many samples the per-pixel path (centre from 33 samples)
# Sorted samples of a run of columns (their prefix sums take twice that again): in L2.
_NETWORK_CHUNK_BYTES = 128 * 1024
# ... but never fewer than 512 columns: each compare-exchange is a loop over the run, and
# with many frames a byte budget left runs too short to pay for the loop (81 columns at 200
# frames). Winsorized, one thread, ns per sample, 128 KB rule -> 512 columns: 5.93 -> 5.42
# at 50 frames, 5.39 -> 4.44 at 100, 5.52 -> 4.07 at 200, 5.79 -> 3.61 at 400 (up to 20
# frames the byte rule already gives 819 or more).
_NETWORK_MIN_COLUMNS = 512
# Winsorizing in lock step (_winsorized_lockstep) up to this many samples: each pass counts
# over all of them, which beyond ~120 costs more than the per-pixel walks save. One thread,
# the 100-frame benchmark's integration tiles (weighted, NaN where a frame does not cover),
# ns per pixel, walks -> lock step: 20 frames 150 -> 104-117, 32: 198 -> 162, 50: 266 ->
# 220-230, 100: 541 -> 418-458; 150 (noise-added copies): 892 -> 929; 20 biases 150 -> 95.
_LOCKSTEP_MAX = 100


@functools.lru_cache(maxsize=64)
def _network(n: int) -> np.ndarray:
    """Compare-exchange pairs (i < j) of Batcher's odd-even merge sort for n elements: the
    network for the next power of two with the pairs that touch an element >= n left out
    (those elements would be +inf and never move)."""
    p = 1
    while p < n:
        p *= 2
    pairs = []
    t = 1
    while t < p:
        k = t
        while k >= 1:
            j = k % t
            while j + k < p:
                for i in range(min(k, p - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * t) == b // (2 * t) and b < n:
                        pairs.append((a, b))
                j += 2 * k
            k //= 2
        t *= 2
    return np.array(pairs, np.int64).reshape(-1, 2)


@nb.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _combine_sorted(block: np.ndarray, weights: np.ndarray, uniform: bool, method: int,
                    low: float, high: float, max_iter: int, pairs: np.ndarray, chunk: int,
                    lockstep: bool,
                    out: np.ndarray, nlow: np.ndarray, nhigh: np.ndarray,
                    nused: np.ndarray, wvalid: np.ndarray) -> None:
    """median (2), sigma (5), winsorized (6), mad (7) on an ``(N, h, w)`` block: the samples
    of a run of columns are sorted together by a sorting network (each compare-exchange a
    min/max over the run: branch-free and vectorised across pixels), missing samples (NaN)
    sorting last as +inf; each pixel is then clipped on its sorted samples
    (:func:`_clip_prefixed`). The kept samples are those between the cuts, i.e. between
    the first and the last kept value: with weights that differ, the weighted mean (and the
    weight of the valid samples) is summed over the frames in their own order, samples
    within those two values, in a second pass vectorised across the run's pixels, instead
    of carrying every sample's frame index through the sort (which doubled its cost)."""
    n, h, w = block.shape
    vals = np.empty((n, chunk), np.float32)
    cnt = np.empty(chunk, np.int32)
    # Prefix sums of each pixel's sorted samples less its middle sample (rows: samples,
    # columns: pixels of the run), computed a row at a time: vectorised across pixels.
    ps1 = np.empty((n + 1, chunk), np.float64)
    ps2 = np.empty((n + 1, chunk), np.float64)
    shift = np.empty(chunk, np.float64)
    # Each pixel's clipping result (n kept, n low, n high, first kept: from the lock step,
    # or kept here for the weighted pass); with weights, its kept values [lov, hiv] and the
    # sums of the pass over the frames.
    res = np.zeros((4, chunk), np.int64)
    lov = np.empty(chunk, np.float32)
    hiv = np.empty(chunk, np.float32)
    sums = np.empty((3, chunk), np.float64)
    fl = np.empty((_NFL, chunk), np.float64)
    it = np.empty((_NIT, chunk), np.int32)
    f32 = np.empty((2, chunk), np.float32)
    npairs = pairs.shape[0]
    inf = np.float32(np.inf)
    for y in range(h):
        for c0 in range(0, w, chunk):
            cw = min(chunk, w - c0)
            # The loops over a run's pixels work on row views (1-D arrays): indexing the
            # 2-D and 3-D arrays in them kept LLVM from vectorising them (the gathering
            # took 23 ns per pixel of 20 samples instead of 7).
            cnt[:cw] = 0
            for i in range(n):
                src = block[i, y, c0:c0 + cw]
                dst = vals[i, :cw]
                for x in range(cw):
                    a = src[x]
                    good = a == a
                    cnt[x] += good
                    dst[x] = a if good else inf
            for p in range(npairs):
                vi = vals[pairs[p, 0], :cw]
                vj = vals[pairs[p, 1], :cw]
                for x in range(cw):
                    a = vi[x]
                    b = vj[x]
                    vi[x] = min(a, b)
                    vj[x] = max(a, b)
            if method != 2:
                for x in range(cw):
                    k = cnt[x]
                    shift[x] = vals[k >> 1, x] if k > 0 else 0.0
                ps1[0, :cw] = 0.0
                ps2[0, :cw] = 0.0
                sh = shift[:cw]
                for i in range(n):  # beyond a pixel's count: +inf, never read
                    v = vals[i, :cw]
                    p1, q1 = ps1[i, :cw], ps1[i + 1, :cw]
                    p2, q2 = ps2[i, :cw], ps2[i + 1, :cw]
                    for x in range(cw):
                        d = np.float64(v[x]) - sh[x]
                        q1[x] = p1[x] + d
                        q2[x] = p2[x] + d * d
                if lockstep:
                    _winsorized_lockstep(vals, cnt, ps1, ps2, shift, cw, n, low, high,
                                         max_iter, res, fl, it, f32)
            for x in range(cw):
                X = c0 + x
                k = cnt[x]
                if uniform:
                    wvalid[y, X] = k * weights[0]
                lov[x] = np.inf  # nothing kept, unless clipped below
                hiv[x] = -np.inf
                if k == 0:
                    _put(out, nlow, nhigh, nused, y, X, np.nan, 0, 0, 0)
                    continue
                if method == 2:
                    mid = k >> 1
                    _put(out, nlow, nhigh, nused, y, X, float(vals[mid, x]) if k & 1
                         else 0.5 * (float(vals[mid - 1, x]) + float(vals[mid, x])), 0, 0, k)
                    continue
                m, nl, nh, first = k, 0, 0, 0
                if k >= 3 and lockstep:
                    m, nl, nh, first = res[0, x], res[1, x], res[2, x], res[3, x]
                elif k >= 3:
                    m, nl, nh, first = _clip_prefixed(vals, x, k, ps1, ps2, shift[x], method,
                                                      low, high, max_iter)
                if uniform:  # the kept samples' sum from the prefix sums
                    mean = shift[x] + (ps1[first + m, x] - ps1[first, x]) / m
                    _put(out, nlow, nhigh, nused, y, X, mean, nl, nh, m)
                else:
                    lov[x] = vals[first, x]
                    hiv[x] = vals[first + m - 1, x]
                    res[0, x] = m
                    res[1, x] = nl
                    res[2, x] = nh
            if not uniform:
                s = sums[0, :cw]
                sw = sums[1, :cw]
                wv = sums[2, :cw]
                s[:] = 0.0
                sw[:] = 0.0
                wv[:] = 0.0
                lo_v = lov[:cw]
                hi_v = hiv[:cw]
                for i in range(n):
                    src = block[i, y, c0:c0 + cw]
                    wt = weights[i]
                    for x in range(cw):
                        a = src[x]
                        keep = (a >= lo_v[x]) & (a <= hi_v[x])
                        s[x] += wt * a if keep else 0.0
                        sw[x] += wt if keep else 0.0
                        wv[x] += wt if a == a else 0.0
                for x in range(cw):
                    X = c0 + x
                    wvalid[y, X] = wv[x]
                    if cnt[x] == 0 or method == 2:
                        continue
                    mean = s[x] / sw[x] if sw[x] > 0 else np.nan
                    _put(out, nlow, nhigh, nused, y, X, mean, res[1, x], res[2, x],
                         res[0, x])


def combine(
    block: np.ndarray,
    *,
    method: str = "winsorized",
    low: float = 3.0,
    high: float = 3.0,
    weights: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    max_iter: int = 10,
    alpha: float = 0.05,
    max_outliers: int | None = None,
    workers: int | None = None,
    valid_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Combine an ``(N, h, w)`` block into one ``(h, w)`` image with outlier rejection.

    Parameters
    ----------
    block : array (N, h, w)
        The samples; NaN means "no sample".
    method : str
        One of :data:`METHODS`.
    low, high : float
        Rejection thresholds on each side (sigma for the clipping methods, counts for minmax,
        fractions for percentile; for gesd they scale the test statistic, 3 = neutral).
    weights : array (N,), optional
        Per-frame weights for the mean of the kept samples.
    mask : bool array (N, h, w), optional
        ``True`` excludes a sample (it is treated as NaN).

    workers : int, optional
        Threads working on separate row bands (default: one per core).
    valid_weight : float32 array (h, w), optional
        Filled with the sum of the weights of each pixel's samples (before rejection).

    Returns
    -------
    combined (h, w) float32, rejected_low (h, w) uint16, rejected_high (h, w) uint16,
    used (h, w) uint16 (samples kept).

    Examples
    --------
    >>> b = np.ones((5, 1, 1), np.float32); b[2] = 100.0
    >>> combine(b, method="mad")[0].item()
    1.0
    """
    run, result = _prepare(block, method, low, high, weights, mask, max_iter, alpha,
                           max_outliers, valid_weight)
    for_bands(run, result[0].shape[0], workers=workers, min_rows=8)
    return result


def _prepare(block: np.ndarray, method: str, low: float, high: float,
             weights: np.ndarray | None, mask: np.ndarray | None, max_iter: int, alpha: float,
             max_outliers: int | None, valid_weight: np.ndarray | None
             ) -> tuple[Callable[[int, int], None],
                        tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`combine`'s checks and outputs, and ``run(y0, y1)``, which combines rows
    ``y0:y1`` of the block into them."""
    if method not in _CODE:
        raise ValueError(f"unknown rejection method {method!r}; one of {', '.join(METHODS)}")
    arr = np.asarray(block, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"block must be (N, h, w), got shape {arr.shape}")
    if mask is not None:
        arr = np.where(mask, np.float32(np.nan), arr)
    n, h, w = arr.shape
    wts = np.ones(n, np.float64) if weights is None else np.asarray(weights, np.float64)
    if wts.shape != (n,):
        raise ValueError(f"weights must have {n} entries, got {wts.shape}")
    out = np.empty((h, w), np.float32)
    nlow = np.empty((h, w), np.uint16)
    nhigh = np.empty((h, w), np.uint16)
    nused = np.empty((h, w), np.uint16)
    wvalid = np.empty((h, w), np.float32) if valid_weight is None else valid_weight
    if wvalid.shape != (h, w) or wvalid.dtype != np.float32:
        raise ValueError(f"valid_weight must be float32 {(h, w)}")
    mo = max(1, n // 3) if max_outliers is None else int(max_outliers)
    arr = np.ascontiguousarray(arr)
    code = _CODE[method]

    if code in (2, 5, 6, 7) and 1 <= n <= _NETWORK_MAX:
        pairs = _network(n)
        uniform = bool(np.all(wts == wts[0]))
        chunk = int(min(w, max(_NETWORK_MIN_COLUMNS, _NETWORK_CHUNK_BYTES // (8 * n))))
        # (n >= 3: with fewer samples no pixel is clipped, and the lock step's set-up
        # reads the 3 samples a clipped pixel has)
        lockstep = code == 6 and max_iter >= 1 and 3 <= n <= _LOCKSTEP_MAX

        def run(y0: int, y1: int) -> None:
            _combine_sorted(arr[:, y0:y1], wts, uniform, code, float(low), float(high),
                            int(max_iter), pairs, chunk, lockstep, out[y0:y1], nlow[y0:y1],
                            nhigh[y0:y1], nused[y0:y1], wvalid[y0:y1])
    else:
        def run(y0: int, y1: int) -> None:
            _combine(arr[:, y0:y1], wts, code, float(low), float(high), int(max_iter),
                     float(alpha), mo, out[y0:y1], nlow[y0:y1], nhigh[y0:y1], nused[y0:y1],
                     wvalid[y0:y1])

    return run, (out, nlow, nhigh, nused)


def preload(methods: Iterable[str]) -> None:
    """Load the compiled kernels that ``methods`` use from numba's on-disk cache (compile
    them if it has none), with the argument types the pipeline's combinations give them (a
    band of rows of a larger block, or a whole block). Run in a background thread while a
    run starts, it takes the load (0.15 s: numba's code generator is initialised by the
    first) off the first master's way."""
    block = np.zeros((8, 16, 8), np.float32)
    for method in dict.fromkeys(methods):
        if method in _CODE:
            run, _result = _prepare(block, method, 3.0, 3.0, None, None, 10, 0.05, None, None)
            # A band of the block (one array layout), the whole block (another); in this
            # thread (no pool: a thread pool's workers are joined at exit, and a first run
            # compiles for minutes; this thread is a daemon).
            run(0, 8)
            run(0, 16)
