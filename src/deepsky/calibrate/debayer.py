"""Demosaicing of one-shot-colour (Bayer CFA) frames.

Methods
-------
``rcd``         Ratio Corrected Demosaicing (L. Sanz Rodriguez, v2.3), the edge-aware method
                Siril uses by default: directional discrimination from high-pass filters,
                green interpolated with low-pass ratio corrections, red and blue from colour
                differences. Round stars without colour fringes. (numba, parallel)
``bilinear``    normalised convolution of each colour's samples (fast, softer).
``superpixel``  each 2x2 cell becomes one pixel (R, mean of the two G, B): half size, no
                interpolation at all.
``none``        keep the CFA mosaic (for Bayer drizzle, which builds colour from the mosaics).

The pattern is the effective one of the array (``FrameMeta.bayer``: offsets and ROWORDER
already applied). The output is ``(3, H, W)`` R, G, B (``(3, H/2, W/2)`` for superpixel).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from deepsky.errors import CalibrationError
from deepsky.parallel import for_bands, resolve_workers
from deepsky.types import BAYER_PATTERNS, bayer_channel_masks

METHODS = ("rcd", "vng", "bilinear", "superpixel", "none")


def check_pattern(pattern: str | None, *, cfa: str | None = None, where: str = "") -> str:
    """Validate a Bayer pattern; refuse X-Trans and missing patterns with a clear message."""
    if cfa == "xtrans":
        raise CalibrationError(f"{where}X-Trans sensors (Fujifilm) cannot be debayered by deepsky; "
                               "convert the RAW files with a raw converter first")
    if pattern is None or pattern.upper() not in BAYER_PATTERNS:
        raise CalibrationError(f"{where}no valid Bayer pattern ({pattern!r}); expected one of "
                               + ", ".join(BAYER_PATTERNS))
    return pattern.upper()


def mosaic_spread(data: np.ndarray) -> float:
    """How far apart the levels of the four 2x2 sub-images of a single-plane frame are, in
    units of the frame's robust noise: near 0 for a mono sensor, above 1 for a raw colour
    mosaic whose sky and flat are not grey. NaN when it cannot be measured.

    >>> round(mosaic_spread(np.tile([[10.0, 20.0], [20.0, 5.0]], (8, 8))), 1) > 1
    True
    """
    a = np.asarray(data, dtype=np.float32)
    if a.ndim != 2 or min(a.shape) < 4:
        return float("nan")
    from deepsky.calibrate.cosmetic import robust_sigma

    # A large frame is measured on every k-th 2x2 cell across and down (at least ~260 000
    # pixels, all four CFA phases alike): its medians and MAD are the whole frame's to a
    # fraction of a percent, for a sixteenth of the time or less (a 4 MP frame took 0.3 s).
    h, w = a.shape
    k = int(np.sqrt(h * w / 262144))
    if k > 1:
        ch, cw = h // (2 * k), w // (2 * k)
        a = a[: ch * 2 * k, : cw * 2 * k].reshape(ch, 2 * k, cw, 2 * k)[:, :2, :, :2]
        a = a.reshape(2 * ch, 2 * cw)

    # numpy's medians, not the compiled ones: a run measures this while numba starts (0.25
    # s; its ~10 ms here are spent then instead of waiting for it)
    levels = [float(np.nanmedian(a[i::2, j::2])) for i in (0, 1) for j in (0, 1)]
    sigma = robust_sigma(a, select=np.median)  # 1.4826 MAD, on one copy of the frame
    spread = float(np.max(levels) - np.min(levels))
    if not np.isfinite(spread):
        return float("nan")
    return spread / sigma if sigma > 0 else (0.0 if spread == 0 else float("inf"))


def debayer(mosaic: np.ndarray, pattern: str, *, method: str = "rcd",
            value_range: tuple[float, float] | None = None,
            workers: int | None = None) -> np.ndarray:
    """Demosaic a CFA mosaic ``(H, W)`` into ``(3, H, W)`` R, G, B float32.

    ``value_range`` (RCD only) is the ``(min, max)`` its normalisation uses, by default the
    mosaic's own: give the whole frame's when demosaicing windows of it, so that every
    window (every tile size, every memory budget) gets the pixels the whole frame would.
    ``workers`` (RCD only): threads (default: one per core; the result does not change).

    >>> m = np.full((8, 8), 10.0, np.float32)
    >>> debayer(m, "RGGB", method="bilinear").shape
    (3, 8, 8)
    """
    pattern = check_pattern(pattern)
    if mosaic.ndim != 2:
        raise ValueError(f"a CFA mosaic is 2-D, got shape {mosaic.shape}")
    m = np.ascontiguousarray(mosaic, dtype=np.float32)
    if method == "superpixel":
        return superpixel(m, pattern)
    if method == "bilinear":
        return bilinear(m, pattern)
    if method in ("rcd", "vng"):
        # "vng" is accepted as a synonym of the edge-aware method (RCD is better on stars).
        return rcd(m, pattern, value_range=value_range, workers=workers)
    if method == "none":
        raise ValueError("method 'none' keeps the mosaic: do not call debayer")
    raise ValueError(f"unknown debayer method {method!r}; one of {', '.join(METHODS)}")


def superpixel(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """2x2 cells to one RGB pixel (half size; an odd last row/column is dropped)."""
    h, w = (mosaic.shape[0] // 2) * 2, (mosaic.shape[1] // 2) * 2
    m = mosaic[:h, :w]
    out = np.zeros((3, h // 2, w // 2), np.float32)
    count = np.zeros(3, np.float32)
    for k, c in enumerate(pattern):
        dy, dx = divmod(k, 2)
        ch = "RGB".index(c)
        out[ch] += m[dy::2, dx::2]
        count[ch] += 1
    out /= count[:, None, None]
    return out


_K_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32)
_K_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32)


def bilinear(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """Bilinear demosaicing by normalised convolution (samples kept where measured)."""
    import cv2  # (here: a run's start need not wait for OpenCV's import, ~25 ms)

    masks = bayer_channel_masks(pattern, mosaic.shape)
    out = np.empty((3,) + mosaic.shape, np.float32)
    for c in range(3):
        mk = masks[c].astype(np.float32)
        k = _K_G if c == 1 else _K_RB
        num = cv2.filter2D(mosaic * mk, -1, k, borderType=cv2.BORDER_REFLECT_101)
        den = cv2.filter2D(mk, -1, k, borderType=cv2.BORDER_REFLECT_101)
        out[c] = np.where(masks[c], mosaic, num / den)
    return out


# ----------------------------------------------------------------------------------------------
# RCD
# ----------------------------------------------------------------------------------------------
_EPS = 1e-5
_EPSSQ = 1e-10


@nb.njit(cache=True, nogil=True)
def _rcd_kernel(cfa: np.ndarray, fc: np.ndarray, rgb: np.ndarray) -> None:
    """cfa: (H, W) in [0, 1]; fc: 2x2 colour index table; rgb: (3, H, W), filled with the
    bilinear result beforehand (the 4-pixel border keeps it)."""
    h, w = cfa.shape
    eps = _EPS
    epssq = _EPSSQ
    vh_dir = np.zeros((h, w), np.float32)
    pq_dir = np.zeros((h, w), np.float32)
    lpf = np.zeros((h, w), np.float32)

    # Step 1: V/H discrimination from squared 7-tap high-pass filters, over 3 lines.
    vhpf = np.zeros((h, w), np.float32)
    hhpf = np.zeros((h, w), np.float32)
    for r in range(3, h - 3):
        for c in range(3, w - 3):
            v = (cfa[r - 3, c] - cfa[r - 1, c] - cfa[r + 1, c] + cfa[r + 3, c]
                 - 3.0 * (cfa[r - 2, c] + cfa[r + 2, c]) + 6.0 * cfa[r, c])
            hh = (cfa[r, c - 3] - cfa[r, c - 1] - cfa[r, c + 1] + cfa[r, c + 3]
                  - 3.0 * (cfa[r, c - 2] + cfa[r, c + 2]) + 6.0 * cfa[r, c])
            vhpf[r, c] = v * v
            hhpf[r, c] = hh * hh
    for r in range(4, h - 4):
        for c in range(4, w - 4):
            vs = max(epssq, vhpf[r - 1, c] + vhpf[r, c] + vhpf[r + 1, c])
            hs = max(epssq, hhpf[r, c - 1] + hhpf[r, c] + hhpf[r, c + 1])
            vh_dir[r, c] = vs / (vs + hs)

    # Step 2: low-pass filter at R and B sites.
    for r in range(2, h - 2):
        for c in range(2, w - 2):
            if fc[r & 1, c & 1] == 1:
                continue
            lpf[r, c] = (cfa[r, c] + 0.5 * (cfa[r - 1, c] + cfa[r + 1, c] + cfa[r, c - 1]
                                             + cfa[r, c + 1])
                         + 0.25 * (cfa[r - 1, c - 1] + cfa[r - 1, c + 1] + cfa[r + 1, c - 1]
                                   + cfa[r + 1, c + 1]))

    # Step 3: green at R and B sites.
    for r in range(4, h - 4):
        for c in range(4, w - 4):
            if fc[r & 1, c & 1] == 1:
                continue
            n_grad = (eps + abs(cfa[r - 1, c] - cfa[r + 1, c]) + abs(cfa[r, c] - cfa[r - 2, c])
                      + abs(cfa[r - 1, c] - cfa[r - 3, c]) + abs(cfa[r - 2, c] - cfa[r - 4, c]))
            s_grad = (eps + abs(cfa[r + 1, c] - cfa[r - 1, c]) + abs(cfa[r, c] - cfa[r + 2, c])
                      + abs(cfa[r + 1, c] - cfa[r + 3, c]) + abs(cfa[r + 2, c] - cfa[r + 4, c]))
            w_grad = (eps + abs(cfa[r, c - 1] - cfa[r, c + 1]) + abs(cfa[r, c] - cfa[r, c - 2])
                      + abs(cfa[r, c - 1] - cfa[r, c - 3]) + abs(cfa[r, c - 2] - cfa[r, c - 4]))
            e_grad = (eps + abs(cfa[r, c + 1] - cfa[r, c - 1]) + abs(cfa[r, c] - cfa[r, c + 2])
                      + abs(cfa[r, c + 1] - cfa[r, c + 3]) + abs(cfa[r, c + 2] - cfa[r, c + 4]))
            lc = lpf[r, c]
            n_est = cfa[r - 1, c] * 2.0 * lc / (eps + lc + lpf[r - 2, c])
            s_est = cfa[r + 1, c] * 2.0 * lc / (eps + lc + lpf[r + 2, c])
            w_est = cfa[r, c - 1] * 2.0 * lc / (eps + lc + lpf[r, c - 2])
            e_est = cfa[r, c + 1] * 2.0 * lc / (eps + lc + lpf[r, c + 2])
            v_est = (s_grad * n_est + n_grad * s_est) / (n_grad + s_grad)
            h_est = (w_grad * e_est + e_grad * w_est) / (e_grad + w_grad)
            cen = vh_dir[r, c]
            nei = 0.25 * (vh_dir[r - 1, c - 1] + vh_dir[r - 1, c + 1] + vh_dir[r + 1, c - 1]
                          + vh_dir[r + 1, c + 1])
            disc = nei if abs(0.5 - cen) < abs(0.5 - nei) else cen
            g = v_est + disc * (h_est - v_est)
            rgb[1, r, c] = min(1.0, max(0.0, g))

    # Step 4.0/4.1: P/Q (diagonal) discrimination at R and B sites.
    phpf = np.zeros((h, w), np.float32)
    qhpf = np.zeros((h, w), np.float32)
    for r in range(3, h - 3):
        for c in range(3, w - 3):
            p = (cfa[r - 3, c - 3] - cfa[r - 1, c - 1] - cfa[r + 1, c + 1] + cfa[r + 3, c + 3]
                 - 3.0 * (cfa[r - 2, c - 2] + cfa[r + 2, c + 2]) + 6.0 * cfa[r, c])
            q = (cfa[r - 3, c + 3] - cfa[r - 1, c + 1] - cfa[r + 1, c - 1] + cfa[r + 3, c - 3]
                 - 3.0 * (cfa[r - 2, c + 2] + cfa[r + 2, c - 2]) + 6.0 * cfa[r, c])
            phpf[r, c] = p * p
            qhpf[r, c] = q * q
    for r in range(4, h - 4):
        for c in range(4, w - 4):
            ps = max(epssq, phpf[r - 1, c - 1] + phpf[r, c] + phpf[r + 1, c + 1])
            qs = max(epssq, qhpf[r - 1, c + 1] + qhpf[r, c] + qhpf[r + 1, c - 1])
            pq_dir[r, c] = ps / (ps + qs)

    # Step 4.2: R at B sites and B at R sites, from diagonal colour differences.
    for r in range(4, h - 4):
        for c in range(4, w - 4):
            own = fc[r & 1, c & 1]
            if own == 1:
                continue
            k = 2 - own
            nw_grad = (eps + abs(rgb[k, r - 1, c - 1] - rgb[k, r + 1, c + 1])
                       + abs(rgb[k, r - 1, c - 1] - rgb[k, r - 3, c - 3])
                       + abs(rgb[1, r, c] - rgb[1, r - 2, c - 2]))
            ne_grad = (eps + abs(rgb[k, r - 1, c + 1] - rgb[k, r + 1, c - 1])
                       + abs(rgb[k, r - 1, c + 1] - rgb[k, r - 3, c + 3])
                       + abs(rgb[1, r, c] - rgb[1, r - 2, c + 2]))
            sw_grad = (eps + abs(rgb[k, r + 1, c - 1] - rgb[k, r - 1, c + 1])
                       + abs(rgb[k, r + 1, c - 1] - rgb[k, r + 3, c - 3])
                       + abs(rgb[1, r, c] - rgb[1, r + 2, c - 2]))
            se_grad = (eps + abs(rgb[k, r + 1, c + 1] - rgb[k, r - 1, c - 1])
                       + abs(rgb[k, r + 1, c + 1] - rgb[k, r + 3, c + 3])
                       + abs(rgb[1, r, c] - rgb[1, r + 2, c + 2]))
            nw_est = rgb[k, r - 1, c - 1] - rgb[1, r - 1, c - 1]
            ne_est = rgb[k, r - 1, c + 1] - rgb[1, r - 1, c + 1]
            sw_est = rgb[k, r + 1, c - 1] - rgb[1, r + 1, c - 1]
            se_est = rgb[k, r + 1, c + 1] - rgb[1, r + 1, c + 1]
            p_est = (nw_grad * se_est + se_grad * nw_est) / (nw_grad + se_grad)
            q_est = (ne_grad * sw_est + sw_grad * ne_est) / (ne_grad + sw_grad)
            cen = pq_dir[r, c]
            nei = 0.25 * (pq_dir[r - 1, c - 1] + pq_dir[r - 1, c + 1] + pq_dir[r + 1, c - 1]
                          + pq_dir[r + 1, c + 1])
            disc = nei if abs(0.5 - cen) < abs(0.5 - nei) else cen
            v = rgb[1, r, c] + (1.0 - disc) * p_est + disc * q_est
            rgb[k, r, c] = min(1.0, max(0.0, v))

    # Step 4.3: R and B at G sites, from cardinal colour differences.
    for r in range(4, h - 4):
        for c in range(4, w - 4):
            if fc[r & 1, c & 1] != 1:
                continue
            cen = vh_dir[r, c]
            nei = 0.25 * (vh_dir[r - 1, c - 1] + vh_dir[r - 1, c + 1] + vh_dir[r + 1, c - 1]
                          + vh_dir[r + 1, c + 1])
            disc = nei if abs(0.5 - cen) < abs(0.5 - nei) else cen
            for k in (0, 2):
                n_grad = (eps + abs(rgb[1, r, c] - rgb[1, r - 2, c])
                          + abs(rgb[k, r - 1, c] - rgb[k, r + 1, c])
                          + abs(rgb[k, r - 1, c] - rgb[k, r - 3, c]))
                s_grad = (eps + abs(rgb[1, r, c] - rgb[1, r + 2, c])
                          + abs(rgb[k, r + 1, c] - rgb[k, r - 1, c])
                          + abs(rgb[k, r + 1, c] - rgb[k, r + 3, c]))
                w_grad = (eps + abs(rgb[1, r, c] - rgb[1, r, c - 2])
                          + abs(rgb[k, r, c - 1] - rgb[k, r, c + 1])
                          + abs(rgb[k, r, c - 1] - rgb[k, r, c - 3]))
                e_grad = (eps + abs(rgb[1, r, c] - rgb[1, r, c + 2])
                          + abs(rgb[k, r, c + 1] - rgb[k, r, c - 1])
                          + abs(rgb[k, r, c + 1] - rgb[k, r, c + 3]))
                n_est = rgb[k, r - 1, c] - rgb[1, r - 1, c]
                s_est = rgb[k, r + 1, c] - rgb[1, r + 1, c]
                w_est = rgb[k, r, c - 1] - rgb[1, r, c - 1]
                e_est = rgb[k, r, c + 1] - rgb[1, r, c + 1]
                v_est = (n_grad * s_est + s_grad * n_est) / (n_grad + s_grad)
                h_est = (e_grad * w_est + w_grad * e_est) / (e_grad + w_grad)
                v = rgb[1, r, c] + (1.0 - disc) * v_est + disc * h_est
                rgb[k, r, c] = min(1.0, max(0.0, v))


def rcd(mosaic: np.ndarray, pattern: str, *, workers: int | None = None,
        value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Ratio Corrected Demosaicing (the 4-pixel border is bilinear).

    The algorithm works on positive data in 0..1 (its ratio corrections divide by local
    means), so the mosaic is shifted to a small positive pedestal and scaled first, and the
    result mapped back: calibrated data keep their negative noise and their units. The
    scaling (and the clipping of estimates to it) uses ``value_range``, by default the
    mosaic's minimum and maximum. ``workers``: threads on bands of rows (the same result
    for any number; 1 where the caller already works on several windows at once).
    """
    h, w = mosaic.shape
    if h < 10 or w < 10:
        return bilinear(mosaic, pattern)
    m32 = np.ascontiguousarray(mosaic, dtype=np.float32)
    if value_range is None:
        lo, hi = _finite_range(m32)
    else:
        lo, hi = float(value_range[0]), float(value_range[1])
    span = hi - lo
    if not span > 0:
        return bilinear(mosaic, pattern)
    # Pedestal: keep the darkest pixels a little above zero so the ratios stay stable.
    ped = 0.02 * span
    scale = span + 2 * ped
    fc = np.array([["RGB".index(pattern[0]), "RGB".index(pattern[1])],
                   ["RGB".index(pattern[2]), "RGB".index(pattern[3])]], np.int64)
    # The kernel's input and start, scaled in one pass, numpy's float32 arithmetic (the
    # Python floats rounded to float32 first, as numpy does with them).
    lo32, ped32, scale32 = np.float32(lo), np.float32(ped), np.float32(scale)
    cfa = np.empty((h, w), np.float32)
    rgb = np.empty((3, h, w), np.float32)
    any_bad = _rcd_prepare(m32, fc, lo32, ped32, scale32, cfa, rgb)
    _bilinear_border(rgb, m32, pattern, lo32, ped32, scale32)
    # Bands of rows on separate threads, each with a 12-row overlap (RCD's chained estimates
    # reach 10 rows away: with 8, the result changed with the number of threads); an even
    # overlap keeps each band's CFA phase.
    pad = 12
    bands = resolve_workers(workers) > 1 and h >= 128

    def run(y0: int, y1: int) -> None:
        a, b = max(0, y0 - pad), min(h, y1 + pad)
        sub = np.ascontiguousarray(rgb[:, a:b]) if bands else rgb
        fc_band = fc if a % 2 == 0 else fc[::-1].copy()
        _rcd_kernel(np.ascontiguousarray(cfa[a:b]), fc_band, sub)
        if bands:
            rgb_out[:, y0:y1] = sub[:, y0 - a:y1 - a]

    if bands:
        rgb_out = rgb.copy()
        for_bands(run, h, workers=workers, min_rows=64)
        rgb = rgb_out
    else:
        run(0, h)
    # Back to the data's units; measured samples exact, NaN where the mosaic has one.
    _rcd_finish(rgb, m32, fc, scale32, np.float32(lo - ped), any_bad)
    return rgb


def _finite_range(m: np.ndarray) -> tuple[float, float]:
    """Minimum and maximum of a mosaic, its non-finite pixels counted as 0 (a NaN or an
    infinity shows in the plain minimum or maximum: the all-finite test is that pass)."""
    lo, hi = float(np.min(m)), float(np.max(m))
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi
    src = np.where(np.isfinite(m), m, np.float32(0.0))
    return float(np.min(src)), float(np.max(src))


@nb.njit(cache=True, nogil=True)
def _rcd_prepare(m: np.ndarray, fc: np.ndarray, lo: np.float32, ped: np.float32,
                 scale: np.float32, cfa: np.ndarray, rgb: np.ndarray) -> bool:
    """``cfa = ((m - lo) + ped) / scale`` (0 for a non-finite pixel: ``lo``'s image), and
    the kernel's start: each measured sample so scaled and clipped to 0..1 in its own
    channel (NaN kept), 0 in the others (the kernel writes them before it reads them; the
    border is :func:`_bilinear_border`'s). Returns whether a pixel is non-finite."""
    h, w = m.shape
    bad = False
    zero = (np.float32(0.0) - lo + ped) / scale
    for y in range(h):
        for x in range(w):
            v = m[y, x]
            s = (v - lo + ped) / scale
            fin = np.isfinite(v)
            bad |= not fin
            cfa[y, x] = s if fin else zero
            c = s
            if c < 0:
                c = np.float32(0.0)
            elif c > 1:
                c = np.float32(1.0)
            own = fc[y & 1, x & 1]
            for k in range(3):
                rgb[k, y, x] = c if k == own else np.float32(0.0)
    return bad


def _bilinear_border(rgb: np.ndarray, m: np.ndarray, pattern: str, lo: np.float32,
                     ped: np.float32, scale: np.float32) -> None:
    """The bilinear estimate, scaled and clipped as :func:`_rcd_prepare` scales, in the
    4-pixel border of ``rgb`` that the RCD kernel keeps and reads: from strips with one
    more row or column of context, so that it is the whole mosaic's estimate, bit for bit.
    (The whole mosaic's bilinear estimate, the first version, took as long as the kernel.)"""
    h, w = m.shape
    b = 4
    # (strip of the mosaic, its part kept, where that goes)
    for (y0, y1, x0, x1), keep, into in (
            ((0, b + 1, 0, w), np.s_[:, :b, :], np.s_[:, :b, :]),
            ((h - b - 1, h, 0, w), np.s_[:, 1:, :], np.s_[:, h - b:, :]),
            ((0, h, 0, b + 1), np.s_[:, :, :b], np.s_[:, :, :b]),
            ((0, h, w - b - 1, w), np.s_[:, :, 1:], np.s_[:, :, w - b:])):
        strip = bilinear(m[y0:y1, x0:x1], _shifted(pattern, y0, x0))
        rgb[into] = np.clip((strip[keep] - lo + ped) / scale, 0.0, 1.0)


@nb.njit(cache=True, nogil=True)
def _rcd_finish(rgb: np.ndarray, m: np.ndarray, fc: np.ndarray, scale: np.float32,
                off: np.float32, any_bad: bool) -> None:
    """In place: ``rgb * scale + off`` (float32, numpy's two roundings), each measured
    sample the mosaic's own, NaN in every channel where the mosaic has one."""
    _, h, w = rgb.shape
    for k in range(3):
        for y in range(h):
            for x in range(w):
                if fc[y & 1, x & 1] == k:
                    rgb[k, y, x] = m[y, x]
                else:
                    rgb[k, y, x] = rgb[k, y, x] * scale + off
    if any_bad:
        nan = np.float32(np.nan)
        for y in range(h):
            for x in range(w):
                if not np.isfinite(m[y, x]):
                    for k in range(3):
                        rgb[k, y, x] = nan


def _shifted(pattern: str, y0: int, x0: int) -> str:
    """The CFA pattern of a window whose origin is pixel (x0, y0) of a ``pattern`` mosaic."""
    return "".join(pattern[2 * ((a + y0) % 2) + (c + x0) % 2] for a in (0, 1) for c in (0, 1))
