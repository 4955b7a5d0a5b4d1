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

import math

import numba as nb
import numpy as np

from deepsky.parallel import for_bands

METHODS = ("none", "mean", "median", "minmax", "percentile", "sigma", "winsorized", "mad",
           "linear", "gesd")
_CODE = {m: i for i, m in enumerate(METHODS)}


# ----------------------------------------------------------------------------------------------
# Small helpers on a sorted buffer
# ----------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _sort(buf: np.ndarray, idx: np.ndarray, n: int) -> None:
    """Sort buf[:n] ascending, carrying idx along (insertion sort for small n)."""
    if n > 32:
        order = np.argsort(buf[:n])
        b2 = buf[:n][order]
        i2 = idx[:n][order]
        buf[:n] = b2
        idx[:n] = i2
        return
    for i in range(1, n):
        v = buf[i]
        k = idx[i]
        j = i - 1
        while j >= 0 and buf[j] > v:
            buf[j + 1] = buf[j]
            idx[j + 1] = idx[j]
            j -= 1
        buf[j + 1] = v
        idx[j + 1] = k


@nb.njit(cache=True, nogil=True, inline="always")
def _median_sorted(buf: np.ndarray, lo: int, hi: int) -> float:
    n = hi - lo
    m = lo + n // 2
    if n % 2 == 1:
        return buf[m]
    return 0.5 * (buf[m - 1] + buf[m])


@nb.njit(cache=True, nogil=True)
def _mean_std(buf: np.ndarray, lo: int, hi: int) -> tuple[float, float]:
    n = hi - lo
    s = 0.0
    for i in range(lo, hi):
        s += buf[i]
    mean = s / n
    v = 0.0
    for i in range(lo, hi):
        d = buf[i] - mean
        v += d * d
    return mean, math.sqrt(v / (n - 1)) if n > 1 else 0.0


@nb.njit(cache=True, nogil=True)
def _mad_sorted(buf: np.ndarray, tmp: np.ndarray, lo: int, hi: int, med: float) -> float:
    n = hi - lo
    for i in range(n):
        tmp[i] = abs(buf[lo + i] - med)
    # insertion sort of tmp[:n]
    for i in range(1, n):
        v = tmp[i]
        j = i - 1
        while j >= 0 and tmp[j] > v:
            tmp[j + 1] = tmp[j]
            j -= 1
        tmp[j + 1] = v
    m = n // 2
    if n % 2 == 1:
        return tmp[m]
    return 0.5 * (tmp[m - 1] + tmp[m])


@nb.njit(cache=True, nogil=True)
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
@nb.njit(cache=True, nogil=True)
def _reject_pixel(buf: np.ndarray, idx: np.ndarray, tmp: np.ndarray, n: int, method: int,
                  low: float, high: float, max_iter: int, alpha: float,
                  max_outliers: int) -> tuple[int, int]:
    """Sort buf[:n] and return the kept range [lo, hi) of the sorted samples."""
    _sort(buf, idx, n)
    lo = 0
    hi = n
    if method <= 1 or n < 3:  # none / mean
        return lo, hi
    if method == 3:  # minmax: low/high are counts
        nl = int(low)
        nh = int(high)
        if nl + nh >= n:
            return lo, hi
        return nl, n - nh
    if method == 4:  # percentile around the median
        med = _median_sorted(buf, 0, n)
        while lo < hi - 1 and buf[lo] < med - abs(med) * low:
            lo += 1
        while hi > lo + 1 and buf[hi - 1] > med + abs(med) * high:
            hi -= 1
        return lo, hi
    for _ in range(max_iter):
        m = hi - lo
        if m < 3:
            break
        med = _median_sorted(buf, lo, hi)
        if method == 5:  # sigma
            _, sigma = _mean_std(buf, lo, hi)
        elif method == 6:  # winsorized (Siril)
            _, sigma = _mean_std(buf, lo, hi)
            for _w in range(50):
                s0 = sigma
                a = med - 1.5 * s0
                b = med + 1.5 * s0
                for i in range(m):
                    v = buf[lo + i]
                    tmp[i] = a if v < a else (b if v > b else v)
                _, sw = _mean_std(tmp, 0, m)
                sigma = 1.134 * sw
                if abs(sigma - s0) <= s0 * 0.0005:
                    break
        elif method == 7:  # mad
            sigma = 1.4826 * _mad_sorted(buf, tmp, lo, hi, med)
        elif method == 8:  # linear fit to the sorted samples (Siril's linear-fit clipping)
            sx = 0.0
            sy = 0.0
            sxx = 0.0
            sxy = 0.0
            for i in range(m):
                y = buf[lo + i]
                sx += i
                sy += y
                sxx += i * i
                sxy += i * y
            den = m * sxx - sx * sx
            b = (m * sxy - sx * sy) / den if den != 0 else 0.0
            a = (sy - b * sx) / m
            r = 0.0
            for i in range(m):
                r += abs(buf[lo + i] - (a + b * i))
            sigma = r / m
            if sigma <= 0.0:
                break
            new_lo = lo
            while new_lo < hi and buf[new_lo] < a + b * (new_lo - lo) - low * sigma:
                new_lo += 1
            new_hi = hi
            while new_hi > new_lo and buf[new_hi - 1] > a + b * (new_hi - 1 - lo) + high * sigma:
                new_hi -= 1
            if new_hi - new_lo < 2 or (new_lo == lo and new_hi == hi):
                break
            lo = new_lo
            hi = new_hi
            continue
        else:  # gesd
            break
        if sigma <= 0.0:
            break
        new_lo = lo
        new_hi = hi
        while new_lo < new_hi and med - buf[new_lo] > low * sigma:
            new_lo += 1
        while new_hi > new_lo and buf[new_hi - 1] - med > high * sigma:
            new_hi -= 1
        if new_hi - new_lo < 2:
            break
        if new_lo == lo and new_hi == hi:
            break
        lo = new_lo
        hi = new_hi
    if method == 9 and n >= 4:
        # GESD: test the most extreme sample repeatedly; keep the largest i whose R_i > lambda_i
        kmax = min(max_outliers, n - 3)
        cl = lo
        ch = hi
        n_out = 0
        rl = cl
        rh = ch
        for i in range(kmax):
            mean, sd = _mean_std(buf, cl, ch)
            if sd <= 0:
                break
            dl = mean - buf[cl]
            dh = buf[ch - 1] - mean
            # low and high thresholds scale the statistic on each side
            if dl / max(low, 1e-6) >= dh / max(high, 1e-6):
                r = dl / sd * 3.0 / max(low, 1e-6)
                cl += 1
            else:
                r = dh / sd * 3.0 / max(high, 1e-6)
                ch -= 1
            if r > _gesd_critical(n, i, alpha):
                n_out = i + 1
                rl = cl
                rh = ch
        if n_out > 0:
            lo = rl
            hi = rh
    return lo, hi


@nb.njit(cache=True, nogil=True)
def _combine(block: np.ndarray, weights: np.ndarray, method: int, low: float, high: float,
             max_iter: int, alpha: float, max_outliers: int,
             out: np.ndarray, nlow: np.ndarray, nhigh: np.ndarray, nused: np.ndarray) -> None:
    n, h, w = block.shape
    for y in range(h):
        buf = np.empty(n, np.float64)
        idx = np.empty(n, np.int64)
        tmp = np.empty(n, np.float64)
        for x in range(w):
            k = 0
            for i in range(n):
                v = block[i, y, x]
                if v == v:  # not NaN
                    buf[k] = v
                    idx[k] = i
                    k += 1
            if k == 0:
                out[y, x] = np.nan
                nlow[y, x] = 0
                nhigh[y, x] = 0
                nused[y, x] = 0
                continue
            if method == 2:  # median
                _sort(buf, idx, k)
                out[y, x] = _median_sorted(buf, 0, k)
                nlow[y, x] = 0
                nhigh[y, x] = 0
                nused[y, x] = k
                continue
            lo, hi = _reject_pixel(buf, idx, tmp, k, method, low, high, max_iter, alpha,
                                   max_outliers)
            s = 0.0
            sw = 0.0
            for i in range(lo, hi):
                wt = weights[idx[i]]
                s += wt * buf[i]
                sw += wt
            out[y, x] = s / sw if sw > 0 else np.nan
            nlow[y, x] = lo
            nhigh[y, x] = k - hi
            nused[y, x] = hi - lo


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
    mo = max(1, n // 3) if max_outliers is None else int(max_outliers)
    arr = np.ascontiguousarray(arr)
    code = _CODE[method]

    def run(y0: int, y1: int) -> None:
        _combine(arr[:, y0:y1], wts, code, float(low), float(high), int(max_iter),
                 float(alpha), mo, out[y0:y1], nlow[y0:y1], nhigh[y0:y1], nused[y0:y1])

    for_bands(run, h, workers=workers, min_rows=8)
    return out, nlow, nhigh, nused
