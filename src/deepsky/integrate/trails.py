"""Satellite and airplane trails: found as straight lines in a frame's residual, then masked.

A trail is a line in ``residual = frame - provisional robust stack`` (both registered to the
reference, on a coarse binned grid where a 2-4 px wide trail gains signal-to-noise). The
search is a Hough transform of the residual's significant pixels (:func:`hough_lines`): for
every direction and offset, the count of pixels above 1.5 sigma along the line. A trail of
modest signal per pixel adds up over hundreds of pixels, while star residuals, being compact,
cannot. Each candidate line is refined by a least-squares fit of its pixels, its width
measured from the cross profile and its extent from the along-line profile, and kept when the
sum of its (clipped) significance stands out from the same sum on parallel lines; it is then
blanked and the search repeats (several trails per frame).

This works with as few as 3 frames: the provisional stack is a median, which a trail in one
frame of three does not survive, and the mask removes the trail's pixels before the rejection
has to find them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from deepsky.medians import median
from deepsky.types import Transform


@dataclass(frozen=True)
class Trail:
    """A straight trail segment in reference pixel coordinates (full resolution)."""

    x0: float
    y0: float
    x1: float
    y1: float
    width: float  # full width at half maximum of the trail, px
    significance: float
    halo: float = 0.0  # half-width out to which the trail's wings stand above the noise, px

    @property
    def radius(self) -> float:
        """Half-width of the trail to mask (before any margin)."""
        return max(self.width / 2, self.halo)

    def to_json(self) -> dict[str, float]:
        return {"x0": round(self.x0, 2), "y0": round(self.y0, 2), "x1": round(self.x1, 2),
                "y1": round(self.y1, 2), "width": round(self.width, 2),
                "significance": round(self.significance, 1), "halo": round(self.halo, 2)}

    @classmethod
    def from_json(cls, d: dict[str, float]) -> "Trail":
        return cls(d["x0"], d["y0"], d["x1"], d["y1"], d["width"], d["significance"],
                   d.get("halo", 0.0))

    def transformed(self, t: Transform) -> "Trail":
        (a, b), (c, d) = t.apply([[self.x0, self.y0], [self.x1, self.y1]])
        return Trail(float(a), float(b), float(c), float(d), self.width * t.scale,
                     self.significance, self.halo * t.scale)

    def extended(self, by: float) -> "Trail":
        """The same trail lengthened by ``by`` pixels at each end."""
        dx, dy = self.x1 - self.x0, self.y1 - self.y0
        L = math.hypot(dx, dy)
        if L == 0 or by <= 0:
            return self
        ux, uy = dx / L, dy / L
        return Trail(self.x0 - by * ux, self.y0 - by * uy, self.x1 + by * ux,
                     self.y1 + by * uy, self.width, self.significance, self.halo)

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Distance of points from the segment."""
        dx, dy = self.x1 - self.x0, self.y1 - self.y0
        L2 = dx * dx + dy * dy
        if L2 == 0:
            return np.hypot(x - self.x0, y - self.y0)
        t = np.clip(((x - self.x0) * dx + (y - self.y0) * dy) / L2, 0.0, 1.0)
        return np.hypot(x - (self.x0 + t * dx), y - (self.y0 + t * dy))


def trail_mask(trails: list[Trail], origin: tuple[int, int], shape: tuple[int, int], *,
               margin: float) -> np.ndarray:
    """Boolean mask (True = excluded) of a window of the reference grid: the pixels within
    half the trail width plus ``margin`` of any trail. ``origin`` is (x0, y0) of the window."""
    h, w = shape
    mask = np.zeros((h, w), bool)
    if not trails:
        return mask
    x0, y0 = origin
    for t in trails:
        r = t.radius + margin
        # Only the part of the window inside the segment's bounding box grown by r can be
        # within r of it; within that box, one row of the box at a time (a short trail
        # piece crossing a tile corner need not cost the tile's area in temporaries).
        bx0 = max(x0, math.floor(min(t.x0, t.x1) - r))
        bx1 = min(x0 + w, math.ceil(max(t.x0, t.x1) + r) + 1)
        by0 = max(y0, math.floor(min(t.y0, t.y1) - r))
        by1 = min(y0 + h, math.ceil(max(t.y0, t.y1) + r) + 1)
        if bx1 <= bx0 or by1 <= by0:
            continue
        xs = np.arange(bx0, bx1, dtype=np.float64)[None, :]
        for ry0 in range(by0, by1, 256):
            ry1 = min(by1, ry0 + 256)
            ys = np.arange(ry0, ry1, dtype=np.float64)[:, None]
            mask[ry0 - y0:ry1 - y0, bx0 - x0:bx1 - x0] |= t.distance(xs, ys) <= r
    return mask


# ----------------------------------------------------------------------------------------------
# Line search
# ----------------------------------------------------------------------------------------------
def find_trails(
    z: np.ndarray,
    *,
    min_length: float,
    threshold: float = 8.0,
    max_trails: int = 4,
    angle_step_deg: float = 0.25,
    cut: float = 1.5,
    max_width: float = 4.0,
    seed: int = 0,
) -> list[tuple[float, float, float, float, float, float]]:
    """Lines in a significance map ``z`` (residual / noise; NaN = no data).

    Pixels above ``cut`` vote in a Hough transform (a Radon transform of the thresholded
    map); a noise pixel passes with a few percent probability, a trail pixel of modest signal
    with a good fraction, so a trail collects far more votes along its line than chance
    allows. Each candidate is refined (least-squares line, width, extent, at most
    ``max_width`` wide) and kept when its extent is at least ``min_length`` and its summed
    significance reaches ``threshold`` times the spread of the same sum over parallel lines
    at random offsets (an empirical null: neighbouring pixels of a resampled image are
    correlated, so the naive square-root-of-n noise would be too optimistic).

    Returns ``(x0, y0, x1, y1, width, halo, significance)`` in ``z``'s pixel coordinates.
    """
    rng = np.random.default_rng(seed)
    work = np.array(z, dtype=np.float32, copy=True)
    found: list[tuple[float, float, float, float, float, float]] = []
    p_noise = 0.5 * math.erfc(cut / math.sqrt(2))
    # Votes a trail of the minimum length must beat: chance plus 6 sigma.
    n_min = min_length
    votes = max(10, int(p_noise * n_min + 6 * math.sqrt(p_noise * n_min) + 0.15 * n_min))
    for _ in range(max_trails):
        lines = hough_lines(work, cut, angle_step_deg, votes, 20,
                            min_points=min_length * 0.2)
        if lines is None:
            break
        accepted = None
        for rho, theta in lines:
            line = _refine(work, float(theta), float(rho), min_length=min_length,
                           max_width=max_width)
            if line is None:
                continue
            sig = _line_significance(work, line[:5])
            if sig < threshold:
                continue
            null = _null_spread(work, line[:5], rng)
            if null > 0 and sig / null >= threshold:
                accepted = (*line, sig / null)
                break
        if accepted is None:
            break
        found.append(accepted)
        _blank_segment(work, accepted[:4], max(accepted[4] / 2, accepted[5]) + 2.0)
    return found


def hough_lines(z: np.ndarray, cut: float, angle_step_deg: float, min_votes: int,
                max_lines: int, *, min_points: float = 0.0) -> np.ndarray | None:
    """The ``max_lines`` strongest lines ``(rho, theta)`` of the pixels of ``z`` above
    ``cut`` (a NaN counts as 0), as OpenCV's ``HoughLines(binary, 1, step, min_votes)``
    gives them, bit for bit: the same angles (a float32 angle stepped in float32, its
    float32 sine and cosine), a pixel's offset ``x cos + y sin`` summed in float32 and
    rounded half to even into bins of one pixel, local maxima of the votes above
    ``min_votes`` (above the previous bin and angle, at least the next), ordered by votes
    and then by angle and offset. ``None`` when fewer than ``min_points`` pixels vote or no
    line has the votes.

    OpenCV 5.1's (Intel's IPP build in the wheel) votes pixel by pixel across all its
    angles, a cache line a vote in a 6 MB accumulator: 24-28 ms of CPU a 512 x 512 map of
    ~18 000 points. Here the votes go angle by angle into one row in L1, the offsets of
    all points computed first (vectorised) and then counted: ~9 ms, one thread. The test
    compares the lines with OpenCV's."""
    h, w = z.shape
    if h + w >= 1 << 22:  # the float32 rounding below needs |offset| < 2^22
        raise ValueError(f"a {w} x {h} map is too large for the Hough transform")
    step = np.float32(math.radians(angle_step_deg))
    n_angles = int(math.floor(math.pi / float(step))) + 1
    if n_angles > 1 and abs(math.pi - (n_angles - 1) * float(step)) < float(step) / 2:
        n_angles -= 1  # the last angle is the first's line again
    tab_cos, tab_sin = _hough_tables(step, n_angles)
    acc = np.zeros((n_angles + 2, 2 * (h + w) + 3), np.int32)  # a border of zero bins
    n_points = _hough_votes(np.ascontiguousarray(z, dtype=np.float32), np.float32(cut),
                            tab_cos, tab_sin, int(math.ceil(min_points)), acc)
    if n_points < min_points:
        return None
    peaks = _hough_peaks(acc, int(min_votes))
    if len(peaks) == 0:
        return None
    v = acc.ravel()[peaks]
    if len(peaks) > max_lines:  # those with at least the max_lines-th most votes, then sorted
        kth = np.partition(v, len(v) - max_lines)[len(v) - max_lines]
        peaks, v = peaks[v >= kth], v[v >= kth]
    peaks = peaks[np.lexsort((peaks, -v))][:max_lines]
    n, r = np.divmod(peaks, acc.shape[1])
    rho = (r - 1 - (h + w)).astype(np.float64)
    theta = ((n - 1) * np.float64(step)).astype(np.float32).astype(np.float64)
    return np.column_stack([rho, theta])


@functools.lru_cache(maxsize=8)
def _hough_tables(step: np.float32, n_angles: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's angle tables: the angle accumulated in float32, its sine and cosine
    rounded to float32."""
    tab_cos = np.empty(n_angles, np.float32)
    tab_sin = np.empty(n_angles, np.float32)
    ang = np.float32(0.0)
    for i in range(n_angles):
        tab_cos[i] = math.cos(float(ang))
        tab_sin[i] = math.sin(float(ang))
        ang = np.float32(ang + step)
    tab_cos.flags.writeable = False
    tab_sin.flags.writeable = False
    return tab_cos, tab_sin


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _hough_votes(z: np.ndarray, cut: np.float32, tab_cos: np.ndarray, tab_sin: np.ndarray,
                 min_points: int, acc: np.ndarray) -> int:
    """The votes of the pixels above ``cut`` into ``acc`` (angle i in row i + 1, offset
    rho in column rho + h + w + 1); returns the number of voting pixels (no votes when
    fewer than ``min_points``)."""
    h, w = z.shape
    zero_votes = np.float32(0.0) > cut
    xs = np.empty(h * w, np.float32)
    ys = np.empty(h * w, np.float32)
    m = 0
    for i in range(h):
        row = z[i]
        for j in range(w):
            v = row[j]
            if (v > cut) if v == v else zero_votes:
                xs[m] = j
                ys[m] = i
                m += 1
    if m < min_points:
        return m
    xs = xs[:m]
    ys = ys[:m]
    bins = np.empty(m, np.int32)
    # float32 rounding to the nearest integer, ties to even (OpenCV's cvRound): adding and
    # taking away 1.5 * 2^23 leaves the rounded value for |v| < 2^22
    magic = np.float32(12582912.0)
    off = h + w + 1
    for a in range(tab_cos.size):
        c = tab_cos[a]
        s = tab_sin[a]
        for k in range(m):
            bins[k] = np.int32((xs[k] * c + ys[k] * s + magic) - magic)
        counts = acc[a + 1]
        for k in range(m):
            counts[bins[k] + off] += 1
    return m


@nb.njit(cache=True, nogil=True)
def _hough_peaks(acc: np.ndarray, min_votes: int) -> np.ndarray:
    """Flat indices of the bins of ``acc`` (bordered by zeros) with more than ``min_votes``
    votes, more than the previous offset's and angle's and at least the next's."""
    na, nr = acc.shape[0] - 2, acc.shape[1] - 2
    out = np.empty(na * ((nr + 1) // 2), np.int64)  # (no two neighbours in a row are both)
    m = 0
    for a in range(1, na + 1):
        up, row, down = acc[a - 1], acc[a], acc[a + 1]
        for r in range(1, nr + 1):
            v = row[r]
            if (v > min_votes and v > row[r - 1] and v >= row[r + 1] and v > up[r]
                    and v >= down[r]):
                out[m] = a * (nr + 2) + r
                m += 1
    return out[:m]


def _null_spread(z: np.ndarray, line: tuple[float, float, float, float, float],
                 rng: np.random.Generator, n: int = 48) -> float:
    """Robust spread of the line statistic over ``n`` parallel copies of the line shifted
    by random offsets (at least 3 widths away), where no trail is: the noise the statistic
    really has in this image."""
    x0, y0, x1, y1, width = line
    dx, dy = x1 - x0, y1 - y0
    L = math.hypot(dx, dy)
    if L == 0:
        return 0.0
    nx, ny = -dy / L, dx / L
    h, w = z.shape
    half = max(0.75, width / 2)
    vals = []
    for _ in range(n):
        off = rng.uniform(3 * width + 6, max(3 * width + 7, 0.5 * max(h, w)))
        off *= 1 if rng.random() < 0.5 else -1
        seg = Trail(x0 + off * nx, y0 + off * ny, x1 + off * nx, y1 + off * ny, width, 0.0)
        zc = z[_segment_pixels(z, seg, half)]
        zc = zc[np.isfinite(zc)]
        k = zc.size
        if k >= 0.5 * L:
            vals.append(float(np.clip(zc, -5, 5).sum() / math.sqrt(k)))
    if len(vals) < 8:
        return 1.0
    v = np.array(vals)
    return max(1.0, 1.4826 * float(np.median(np.abs(v - np.median(v)))))


def _line_significance(z: np.ndarray, line: tuple[float, float, float, float, float],
                       pieces: int = 8) -> float:
    """Significance of a trail: the sum of its core pixels' (clipped) significance divided
    by the square root of their number -- counted only if it is spread along the line.

    The line is cut into ``pieces``; a trail lights most of them, a blob (a galaxy core's
    residual) only one or two. The result is 0 unless three quarters of the pieces are
    positive and the median piece carries at least a third of its fair share.
    """
    x0, y0, x1, y1, width = line
    seg = Trail(x0, y0, x1, y1, width, 0.0)
    ys, xs = _segment_pixels(z, seg, max(0.75, width / 2))
    zc = z[ys, xs]
    core = np.isfinite(zc)
    n = int(core.sum())
    if n < pieces:
        return 0.0
    vals = np.clip(zc[core], -5, 5)
    total = float(vals.sum() / math.sqrt(n))
    dx, dy = x1 - x0, y1 - y0
    L2 = dx * dx + dy * dy
    t = ((xs[core] - x0) * dx + (ys[core] - y0) * dy) / L2 if L2 > 0 else np.zeros(n)
    k = np.clip((t * pieces).astype(int), 0, pieces - 1)
    sums = np.bincount(k, weights=vals, minlength=pieces)
    cnts = np.bincount(k, minlength=pieces)
    s_k = np.where(cnts > 0, sums / np.sqrt(np.maximum(cnts, 1)), 0.0)
    fair = total / math.sqrt(pieces)
    if (s_k > 0).mean() < 0.75 or np.median(s_k) < max(fair / 3, 2.0):
        return 0.0
    return total


def _line_coords(theta: float, rho: float, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Points along the line x cos + y sin = rho, one per unit step, inside the image."""
    c, s = math.cos(theta), math.sin(theta)
    x0, y0 = rho * c, rho * s  # foot of the normal
    dx, dy = -s, c
    L = math.hypot(h, w)
    t = np.arange(-L, L, 1.0)
    x = x0 + t * dx
    y = y0 + t * dy
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return x[inside], y[inside]


@nb.njit(cache=True, nogil=True)
def _band(c: float, s: float, rho: float, half: float, h: int,
          w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (ys, xs) of an h x w image within ``half`` of the line x c + y s = rho (unit
    normal (c, s)), found column by column (row by row for a steep line) instead of over
    the whole image: for each offset from the line's pixel in a column, each column."""
    steep = abs(s) < abs(c)
    cu, sv, hv, wu = (s, c, w, h) if steep else (c, s, h, w)  # steep: x as a function of y
    k = int(math.ceil(half / abs(sv))) + 1
    cap = (2 * k + 2) * wu
    ys = np.empty(cap, np.intp)
    xs = np.empty(cap, np.intp)
    m = 0
    for j in range(-k, k + 2):
        for u in range(wu):
            v = math.floor((rho - u * cu) / sv) + j
            if v < 0 or v >= hv or abs(u * cu + v * sv - rho) > half:
                continue
            ys[m], xs[m] = (u, v) if steep else (v, u)
            m += 1
    return ys[:m], xs[:m]


def _segment_pixels(z: np.ndarray, seg: "Trail", half: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (ys, xs) within ``half`` of a segment."""
    dx, dy = seg.x1 - seg.x0, seg.y1 - seg.y0
    L = math.hypot(dx, dy)
    h, w = z.shape
    if L == 0:
        c, s = 0.0, 1.0
    else:
        c, s = -dy / L, dx / L
    ys, xs = _band(c, s, seg.x0 * c + seg.y0 * s, half, h, w)
    near = seg.distance(xs.astype(float), ys.astype(float)) <= half
    return ys[near], xs[near]


def _refine(z: np.ndarray, theta: float, rho: float, *, min_length: float,
            max_width: float = 4.0) -> tuple[float, float, float, float, float, float] | None:
    """Least-squares line through the significant pixels near (theta, rho), its width and
    its extent. Compiled (:func:`_refine_fit`, :func:`_refine_shape`): each Hough candidate
    was ~0.7 ms of small numpy operations holding the GIL, 20 candidates on a frame without
    a trail; only the 2 x 2 eigen-decomposition stays numpy's (its eigenvectors' signs are
    LAPACK's, and the extent's binning follows the direction)."""
    c, s = math.cos(theta), math.sin(theta)
    fit = _refine_fit(z, c, s, rho, 0.25 * min_length)
    n, mx, my, cxx, cxy, cyy, xx, yy, zv = fit
    if n == 0:
        return None
    _, evecs = np.linalg.eigh(np.array([[cxx, cxy], [cxy, cyy]]))
    ux, uy = evecs[:, 1]  # direction of the line
    r = _refine_shape(xx, yy, zv, mx, my, float(ux), float(uy), min_length, max_width)
    if not r[0] == r[0]:  # NaN: not a trail
        return None
    return (float(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]))


@nb.njit(cache=True, nogil=True)
def _refine_fit(z: np.ndarray, c: float, s: float, rho: float, min_sel: float
                ) -> tuple[int, float, float, float, float, float, np.ndarray, np.ndarray,
                           np.ndarray]:
    """The strip within 15.5 px of the line x c + y s = rho (:func:`_band`), and the
    weighted centre and covariance (as ``np.cov(..., aweights)``) of its pixels within 4 px
    above 1.5 sigma, weights the significance clipped to 10. n = 0 when fewer than max(5, ``min_sel``) pixels qualify."""
    ys, xs = _band(c, s, rho, 15.5, z.shape[0], z.shape[1])
    m = ys.size
    xx = xs.astype(np.float64)
    yy = ys.astype(np.float64)
    zv = np.empty(m)
    for i in range(m):
        zv[i] = z[ys[i], xs[i]]
    sel = np.empty(m, np.int64)  # the qualifying pixels, in strip order
    n = 0
    sw = 0.0
    sx = 0.0
    sy = 0.0
    for i in range(m):
        zi = zv[i]
        if zi > 1.5 and abs(xx[i] * c + yy[i] * s - rho) <= 4.0:
            wt = min(zi, 10.0)
            sel[n] = i
            n += 1
            sw += wt
            sx += wt * xx[i]
            sy += wt * yy[i]
    if n < max(5.0, min_sel):
        return 0, 0.0, 0.0, 0.0, 0.0, 0.0, xx, yy, zv
    mx = sx / sw
    my = sy / sw
    # np.cov with aweights: centred again on the weighted mean of the centred values, then
    # divided by sum(w) - sum(w^2) / sum(w)
    ax = 0.0
    ay = 0.0
    sw2 = 0.0
    for i in sel[:n]:
        wt = min(zv[i], 10.0)
        ax += wt * (xx[i] - mx)
        ay += wt * (yy[i] - my)
        sw2 += wt * wt
    ax /= sw
    ay /= sw
    cxx = 0.0
    cxy = 0.0
    cyy = 0.0
    for i in sel[:n]:
        wt = min(zv[i], 10.0)
        dx = xx[i] - mx - ax
        dy = yy[i] - my - ay
        cxx += wt * dx * dx
        cxy += wt * dx * dy
        cyy += wt * dy * dy
    fact = sw - sw2 / sw
    return n, mx, my, cxx / fact, cxy / fact, cyy / fact, xx, yy, zv


@nb.njit(cache=True, nogil=True)
def _refine_shape(xx: np.ndarray, yy: np.ndarray, zv: np.ndarray, mx: float, my: float,
                  ux: float, uy: float, min_length: float, max_width: float) -> np.ndarray:
    """The fitted line's extent (:func:`_extent_of`), width (from the cross profile: mean
    significance in 0.5 px bins of distance out to 12 px) and halo, as (x0, y0, x1, y1,
    width, halo); NaNs when the candidate is no trail (too short, too wide, or a blob)."""
    nan6 = np.full(6, np.nan)
    nx, ny = -uy, ux
    m = xx.size
    dist = np.empty(m)
    along = np.empty(m)
    for i in range(m):
        dist[i] = (xx[i] - mx) * nx + (yy[i] - my) * ny
        along[i] = (xx[i] - mx) * ux + (yy[i] - my) * uy
    ext = _extent_of(zv, along, dist, min_length)
    if not ext[0] == ext[0]:
        return nan6
    ta, tb = ext[0], ext[1]
    # Cross profile over the extent (np.digitize on the edges -12, -11.5, ..., 12: bin j
    # holds edges[j] <= d < edges[j + 1]; d = 12 falls beyond the last and is dropped).
    nbin = 48
    prof = np.zeros(nbin)
    cntp = np.zeros(nbin, np.int64)
    for i in range(m):
        d = dist[i]
        zi = zv[i]
        if abs(d) <= 12.0 and zi == zi and along[i] >= ta and along[i] <= tb:
            j = min(nbin, max(0, int(math.floor((d + 12.0) * 2.0))))
            while j > 0 and d < -12.0 + 0.5 * j:
                j -= 1
            while j < nbin and d >= -12.0 + 0.5 * (j + 1):
                j += 1
            if j < nbin:
                prof[j] += max(zi, -5.0)
                cntp[j] += 1
    for j in range(nbin):
        prof[j] = prof[j] / cntp[j] if cntp[j] > 0 else 0.0
    peak = prof.max()
    if peak <= 0:
        return nan6
    width = max(1.0, 0.5 * float(np.sum(prof >= 0.5 * peak)))
    # A trail is narrow: its cross profile falls back to the noise a few pixels out. A line
    # through a blob (a galaxy core's residual) does not.
    centres = -12.0 + 0.5 * np.arange(nbin) + 0.25
    lim = max(3.0, 1.5 * width)
    so = 0.0
    no = 0
    for j in range(nbin):
        if abs(centres[j]) >= lim and cntp[j] > 0:
            so += prof[j]
            no += 1
    if width > max_width or (no > 0 and so / no > 0.25 * peak):
        return nan6
    # Halo: out to where the profile (contiguous from the centre) stays above 1 sigma of the
    # bin mean: a bright trail's wings reach well beyond its half maximum.
    centre = int(np.argmax(prof))
    filled = cntp[cntp > 0]
    per_bin = float(np.median(filled.astype(np.float64))) if filled.size else 1.0
    level = 1.0 / math.sqrt(max(1.0, per_bin))
    lo_i = centre
    while lo_i > 0 and prof[lo_i - 1] > 2.0 * level:
        lo_i -= 1
    hi_i = centre
    while hi_i < nbin - 1 and prof[hi_i + 1] > 2.0 * level:
        hi_i += 1
    halo = max(abs(centres[lo_i]), abs(centres[hi_i])) + 0.5
    out = np.empty(6)
    out[0] = mx + ta * ux
    out[1] = my + ta * uy
    out[2] = mx + tb * ux
    out[3] = my + tb * uy
    out[4] = width
    out[5] = halo
    return out


@nb.njit(cache=True, nogil=True)
def _extent_of(zv: np.ndarray, along: np.ndarray, dist: np.ndarray,
               min_length: float) -> np.ndarray:
    """Where along the line the trail is, (start, end) or NaNs: the stretch that maximises
    the summed excess of the along-line mean significance (pixels within 1 px of the line,
    clipped to -5..20, in 1 px bins) over half the trail's typical level (Kadane's maximum
    subarray), which bridges short dips (dashed airplane lights, noise) and stops where the
    trail really ends."""
    none = np.full(2, np.nan)
    m = zv.size
    nc = 0
    t0 = np.inf
    t1 = -np.inf
    for i in range(m):
        if abs(dist[i]) <= 1.0 and zv[i] == zv[i]:
            nc += 1
            t0 = min(t0, along[i])
            t1 = max(t1, along[i])
    if nc < 3:
        return none
    nb_ = int(t1 - t0) + 1
    if nb_ < 3:
        return none
    sums = np.zeros(nb_)
    cnts = np.zeros(nb_, np.int64)
    for i in range(m):
        if abs(dist[i]) <= 1.0 and zv[i] == zv[i]:
            k = min(max(int(along[i] - t0), 0), nb_ - 1)
            sums[k] += min(max(zv[i], -5.0), 20.0)
            cnts[k] += 1
    mean = np.empty(nb_)
    for k in range(nb_):
        mean[k] = sums[k] / cnts[k] if cnts[k] > 0 else 0.0
    win = max(5, int(min_length / 10))
    sm = _convolve_same(mean, np.ones(win) / win)
    filled = cnts[cnts > 0]
    per_px = max(1.0, float(np.median(filled.astype(np.float64))))
    noise = 1.0 / math.sqrt(per_px * win)
    on = sm > 3.0 * noise
    if not on.any():
        return none
    tau = 0.5 * float(np.median(sm[on]))
    a, b = _max_run(mean - tau)
    if b - a < min_length:
        return none
    # The ends of a faint trail fade into the noise: extend 5 % on each side, the cheaper
    # error (a few more masked pixels in one frame) than leaving a trail's end in the stack.
    ext = 0.05 * (b - a)
    out = np.empty(2)
    out[0] = t0 + a - ext
    out[1] = t0 + b + 1 + ext
    return out


@nb.njit(cache=True, nogil=True)
def _convolve_same(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``np.convolve(a, v, mode="same")``: the middle max(len a, len v) values of the full
    convolution (numpy convolves the shorter with the longer)."""
    if v.size > a.size:
        a, v = v, a
    n, m = a.size, v.size
    off = (m - 1) // 2
    out = np.empty(n)
    for i in range(n):
        k = i + off
        acc = 0.0
        for j in range(max(0, k - n + 1), min(m, k + 1)):
            acc += a[k - j] * v[j]
        out[i] = acc
    return out


@nb.njit(cache=True, nogil=True)
def _max_run(v: np.ndarray) -> tuple[int, int]:
    """First and last index of the stretch of ``v`` with the largest sum (Kadane; the
    earliest such stretch, starting after the last non-positive running sum)."""
    best = -np.inf
    a, b = 0, -1
    run = 0.0
    start = 0
    for i in range(v.size):
        if run <= 0:
            run = v[i]
            start = i
        else:
            run += v[i]
        if run > best:
            best = run
            a, b = start, i
    return a, b


def _blank_segment(z: np.ndarray, seg: tuple[float, float, float, float], half: float) -> None:
    z[_segment_pixels(z, Trail(*seg, width=0.0, significance=0.0), half)] = np.nan


def object_mask(stack: np.ndarray, *, sigma: float = 3.0, grow: int = 3) -> np.ndarray:
    """Pixels of a (binned) provisional stack standing ``sigma`` above its background, grown
    by ``grow`` pixels: the stars and bright objects whose residuals are not trustworthy."""
    from scipy import ndimage

    v = stack[np.isfinite(stack)]
    if v.size == 0:
        return np.zeros(stack.shape, bool)
    med = float(median(v))
    sig = 1.4826 * float(median(np.abs(v - med)))
    hot = np.nan_to_num(stack, nan=med) > med + sigma * max(sig, 1e-12)
    if grow > 0 and hot.any():
        hot = ndimage.binary_dilation(hot, iterations=grow)
    return hot


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks (NaN-aware; a partial last block is dropped)."""
    if factor == 1:
        return image.astype(np.float32, copy=True)
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    if np.isfinite(image).all():
        import cv2

        # OpenCV's area resampling at an integer factor is the block mean (the same values
        # as numpy's, 6x faster)
        return cv2.resize(np.asarray(image[:h, :w], np.float32), (w // factor, h // factor),
                          interpolation=cv2.INTER_AREA)
    v = image[:h, :w].reshape(h // factor, factor, w // factor, factor)
    with np.errstate(invalid="ignore"):
        return np.nanmean(v, axis=(1, 3)).astype(np.float32)


def binned_transform(t: Transform, factor: int) -> Transform:
    """The transform between binned grids: binned pixel p covers full pixels
    ``factor * p + (factor - 1) / 2`` at its centre."""
    s = Transform(np.array([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2],
                            [0, 0, 1.0]]))
    return s.inverse() @ t @ s


def trails_from_residual(residual: np.ndarray, *, factor: int, mask: np.ndarray | None = None,
                         min_length_frac: float = 0.15, threshold: float = 8.0,
                         max_trails: int = 4, max_width_px: float = 16.0) -> list[Trail]:
    """Trails (full-resolution reference coordinates) in a binned residual image.

    ``mask`` (True = excluded) hides pixels whose residual cannot be trusted: the cores of
    stars and bright objects in the provisional stack, where small differences of seeing
    leave strong compact residuals.
    """
    if mask is not None:
        residual = np.where(mask, np.float32(np.nan), residual)
    max_width = max(2.0, max_width_px / factor)
    # Remove what is smooth (sky gradients that changed during the night, vignetting
    # residuals): a trail is narrower than the mesh by far and survives.
    finite = np.isfinite(residual)
    if finite.sum() > 1000:
        from deepsky.detect.background import estimate_background

        box = int(max(16, 4 * max_width))
        if min(residual.shape) >= 2 * box:
            bkg = estimate_background(np.where(finite, residual, 0).astype(np.float32),
                                      mask=~finite, box=box)
            residual = residual - bkg.level()
    v = residual[np.isfinite(residual)]
    if v.size < 100:
        return []
    med = float(median(v))
    sigma = 1.4826 * float(median(np.abs(v - med)))
    if sigma <= 0:
        return []
    z = (residual - med) / sigma
    h, w = z.shape
    min_len = min_length_frac * math.hypot(h, w)
    out = []
    for x0, y0, x1, y1, width, halo, sig in find_trails(
            z, min_length=min_len, threshold=threshold, max_trails=max_trails,
            max_width=max_width):
        f = factor
        c = (f - 1) / 2
        out.append(Trail(f * x0 + c, f * y0 + c, f * x1 + c, f * y1 + c, width * f, sig,
                         halo * f))
    return out
