"""Cosmetic correction: find defective pixels, columns and rows, and replace them.

Defects are found where they show best:

* **hot pixels** in the master dark (dark current far above the pixel's neighbourhood),
* **cold/dead pixels** in the master flat (response far below the neighbourhood),
* **bad columns and rows** as whole lines standing out in the dark current or the flat
  (a stable offset in the bias is removed by the subtraction itself),
* pixels that **spike in most lights** (for sessions without darks: a hot pixel lights no
  neighbour and stays on the same pixel; a star is spread over several).

A defect is replaced by the median of its nearest same-colour neighbours that are not
defective themselves (the inner ring of 4: distance 1 for mono, the nearest pixels of the same
CFA colour on a mosaic; the next ring of 4 when fewer than two of those are usable). The
nearest pixels matter on a star, whose profile falls fast.
The defect map is a boolean image, ``True`` = defective (excluded).
"""

from __future__ import annotations

from typing import Any, Callable

import numba as nb
import numpy as np

from deepsky.medians import median

_MAD = 1.4826


def _same_color_planes(image: np.ndarray, bayer: str | None) -> list[tuple[slice, slice]]:
    if bayer:
        return [(slice(dy, None, 2), slice(dx, None, 2)) for dy in (0, 1) for dx in (0, 1)]
    return [(slice(None), slice(None))]


def local_residual(image: np.ndarray, bayer: str | None, size: int = 5) -> np.ndarray:
    """Image minus the median of its same-colour neighbourhood (``size`` x ``size`` of the
    same colour; OpenCV's median for 3 and 5, scipy's otherwise). The median is computed
    into the result and subtracted in place: one full-size array, no temporaries."""
    out = np.empty(image.shape, dtype=np.float32)
    for sl in _same_color_planes(image, bayer):
        plane = np.ascontiguousarray(image[sl], dtype=np.float32)
        dst = out[sl]
        if size in (3, 5) and min(plane.shape) > size and np.isfinite(plane).all():
            _minus_median(plane, dst, size)
        else:
            from scipy import ndimage  # (imported when needed: 0.16 s at start-up)

            target = dst if dst.flags.c_contiguous else None
            med = ndimage.median_filter(plane, size=size, mode="reflect", output=target)
            np.subtract(plane, med, out=dst)
    return out


def _minus_median(plane: np.ndarray, dst: np.ndarray, size: int) -> None:
    """``dst = plane - medianBlur(plane, size)`` (OpenCV, float32, size 3 or 5), the median
    computed into ``dst`` itself unless it is strided (a mosaic's colour plane)."""
    import cv2

    med = cv2.medianBlur(plane, size, dst=dst if dst.flags.c_contiguous else None)
    np.subtract(plane, med, out=dst)


def robust_sigma(values: np.ndarray, *, select: Callable[[np.ndarray], Any] = median) -> float:
    """1.4826 x the median absolute deviation of the finite values (computed on one copy of
    them, in place); ``select`` takes the medians (``np.median`` where numba's kernels may
    not be loaded yet)."""
    v = values[np.isfinite(values)]  # a copy: ours to reorder
    if v.size == 0:
        return 0.0
    med = select(v)
    v -= med
    np.abs(v, out=v)
    return float(_MAD * select(v))


def find_hot_pixels(dark: np.ndarray, bayer: str | None, *, sigma: float = 5.0,
                    min_level: float = 0.0) -> np.ndarray:
    """Pixels of a master dark (bias-subtracted or not) more than ``sigma`` robust standard
    deviations above their same-colour neighbourhood, and more than ``min_level`` above it."""
    r = local_residual(dark, bayer)
    thr = max(sigma * robust_sigma(_spread_sample(r)), min_level)
    return r > thr


def find_cold_pixels(flat: np.ndarray, bayer: str | None, *, sigma: float = 5.0,
                     min_drop: float = 0.1) -> np.ndarray:
    """Pixels of a normalised master flat far below their neighbourhood (dead or dim pixels):
    more than ``sigma`` robust sigmas and more than ``min_drop`` (fraction) below."""
    r = local_residual(flat, bayer)
    return r < -max(sigma * robust_sigma(_spread_sample(r)), min_drop)


def _spread_sample(r: np.ndarray) -> np.ndarray:
    """Every third pixel of a residual image above 3 million pixels (a million or more
    samples: the MAD to ~0.1 %, in a third of the time), else all of it. Every third in
    storage order meets both row and both column parities, so all four colours of a mosaic
    (every other row and column would see only one)."""
    return np.ravel(r)[::3] if r.size > 3_000_000 else r


def find_bad_lines(image: np.ndarray, bayer: str | None, *, sigma: float = 5.0,
                   min_level: float = 0.0, min_pixel_sigmas: float = 1.0) -> np.ndarray:
    """Whole columns or rows whose median stands out from their neighbours' (a defect mask
    with those lines set). Works per CFA colour on a mosaic.

    The threshold is ``sigma`` times the larger of the spread of the line medians and the
    noise a median of that many pixels has, so a clean frame flags nothing; and a line must
    also stand out by ``min_pixel_sigmas`` times the per-pixel noise: a defect worth
    replacing, not a faint offset that subtraction already removes.
    """
    from scipy import ndimage

    mask = np.zeros(image.shape, bool)
    for sl in _same_color_planes(image, bayer):
        plane = np.asarray(image[sl], dtype=np.float32)
        pix_noise = robust_sigma(local_residual(plane, None, size=3)[::2, ::2])
        for axis in (0, 1):  # axis 0: one median per column (down the rows)
            prof = _line_medians(plane, axis)
            if prof.size < 7:
                continue
            base = ndimage.median_filter(prof, size=7, mode="reflect")
            d = prof - base
            n_pix = plane.shape[axis]
            floor = 1.2533 * pix_noise / np.sqrt(max(1, n_pix))
            bad = np.abs(d) > max(sigma * max(robust_sigma(d), floor), min_level,
                                  min_pixel_sigmas * pix_noise)
            if not bad.any():
                continue
            sub = np.zeros(plane.shape, bool)
            if axis == 0:
                sub[:, bad] = True
            else:
                sub[bad, :] = True
            mask[sl] |= sub
    return mask


def _line_medians(plane: np.ndarray, axis: int, chunk: int = 256) -> np.ndarray:
    """``np.median(plane, axis)`` (``nanmedian`` where a line has NaN), a block of lines at
    a time: numpy copies what it partitions, so a block costs a block's copy, not the
    frame's. np.median partitions at both middle positions of an even count; one partition
    at the upper and the maximum of the samples below it give the same pair (and the same
    float32 mean of it) in ~60 % of the time."""
    parts = []
    n = plane.shape[axis]
    k = n // 2
    for i in range(0, plane.shape[1 - axis], chunk):
        blk = plane[:, i:i + chunk] if axis == 0 else plane[i:i + chunk]
        if not np.isfinite(blk).all():
            parts.append(np.nanmedian(blk, axis=axis))
            continue
        part = np.partition(blk, k, axis=axis)
        upper = part[k] if axis == 0 else part[:, k]
        if n % 2:
            parts.append(upper)
        else:
            lower = (part[:k] if axis == 0 else part[:, :k]).max(axis=axis)
            parts.append((lower + upper) / np.float32(2))
    return np.concatenate(parts)


def find_spikes(image: np.ndarray, bayer: str | None, *, sigma: float = 8.0,
                neighbour_ratio: float = 0.25) -> np.ndarray:
    """Single-pixel spikes (hot, and dead pixels as negative spikes) in one raw light.

    A spike stands more than ``sigma`` noise sigmas out of its same-colour background while
    its four nearest neighbours (any colour) carry less than ``neighbour_ratio`` of its
    excess: a star, however sharp, lights its neighbours; a hot pixel does not. Counted over
    many lights, pixels that spike in most of them are defects.
    """
    img = np.ascontiguousarray(image, dtype=np.float32)
    excess = np.empty_like(img)
    for sl in _same_color_planes(img, bayer):
        plane = np.ascontiguousarray(img[sl])
        _minus_median(plane, excess[sl], 5 if plane.size > 25 else 3)
    s = robust_sigma(excess[::4, ::4])
    if s <= 0:
        return np.zeros(img.shape, bool)
    # Only the few pixels beyond the threshold need their neighbours looked at.
    t = sigma * s
    beyond = excess > t
    beyond |= excess < -t
    ys, xs = np.nonzero(beyond)
    del beyond
    out = np.zeros(img.shape, bool)
    if ys.size == 0:
        return out
    h, w = excess.shape
    e = excess[ys, xs]
    nbs = np.stack([excess[np.maximum(ys - 1, 0), xs], excess[np.minimum(ys + 1, h - 1), xs],
                    excess[ys, np.maximum(xs - 1, 0)], excess[ys, np.minimum(xs + 1, w - 1)]])
    hot = (e > 0) & (nbs.max(axis=0) < neighbour_ratio * e)
    cold = (e < 0) & (nbs.min(axis=0) > neighbour_ratio * e)
    out[ys[hot | cold], xs[hot | cold]] = True
    return out


# ----------------------------------------------------------------------------------------------
# Replacement
# ----------------------------------------------------------------------------------------------
def _neighbour_offsets(bayer: str | None) -> dict[str, np.ndarray]:
    """Offsets (dy, dx) of same-colour neighbours for the colour at each 2x2 phase: the 4
    nearest first (the inner ring), then the next 4."""
    if not bayer:
        return {"*": np.array([(-1, 0), (1, 0), (0, -1), (0, 1),
                               (-1, -1), (-1, 1), (1, -1), (1, 1)])}
    rb = [(-2, 0), (2, 0), (0, -2), (0, 2), (-2, -2), (-2, 2), (2, -2), (2, 2)]
    g = [(-1, -1), (-1, 1), (1, -1), (1, 1), (-2, 0), (2, 0), (0, -2), (0, 2)]
    return {"R": np.array(rb), "B": np.array(rb), "G": np.array(g)}


class DefectMap:
    """Defective pixels with their precomputed same-colour neighbours; applies to whole frames
    or to bands of rows (``y0`` = first row of the band in the frame)."""

    def __init__(self, mask: np.ndarray, bayer: str | None) -> None:
        if mask.ndim != 2:
            raise ValueError("a defect map is 2-D")
        self.mask = np.asarray(mask, bool)
        self.bayer = bayer
        self.height, self.width = mask.shape
        ys, xs = np.nonzero(self.mask)
        self.ys = ys.astype(np.int64)
        self.xs = xs.astype(np.int64)
        offsets = _neighbour_offsets(bayer)
        k = max(len(v) for v in offsets.values())
        ny = np.full((len(ys), k), -1, np.int64)
        nx = np.full((len(ys), k), -1, np.int64)
        if bayer:
            phase = 2 * (ys % 2) + (xs % 2)
            for p in range(4):
                sel = phase == p
                offs = offsets[bayer[p]]
                ny[sel, :len(offs)] = ys[sel, None] + offs[None, :, 0]
                nx[sel, :len(offs)] = xs[sel, None] + offs[None, :, 1]
        else:
            offs = offsets["*"]
            ny[:] = ys[:, None] + offs[None, :, 0]
            nx[:] = xs[:, None] + offs[None, :, 1]
        inside = (ny >= 0) & (ny < self.height) & (nx >= 0) & (nx < self.width)
        # A neighbour that is itself defective is no help.
        good = inside.copy()
        good[inside] = ~self.mask[ny[inside], nx[inside]]
        self.ny = np.where(good, ny, -1)
        self.nx = np.where(good, nx, -1)

    @property
    def count(self) -> int:
        return int(self.ys.size)

    def apply(self, data: np.ndarray, *, y0: int = 0, x0: int = 0) -> np.ndarray:
        """Replace the defects inside ``data`` (the region whose top-left pixel is
        ``(x0, y0)``) in place and return it.

        Neighbours outside the region are ignored, so read regions with a margin of 2 pixels
        where the exact result matters at the edges.
        """
        if self.count == 0:
            return data
        planes = data if data.ndim == 3 else data[None]
        for plane in planes:
            _replace_defects(plane, self.ys, self.xs, self.ny, self.nx, int(y0), int(x0))
        return data


@nb.njit(cache=True, nogil=True)
def _replace_defects(plane: np.ndarray, ys: np.ndarray, xs: np.ndarray, ny: np.ndarray,
                     nx: np.ndarray, y0: int, x0: int) -> None:
    """:meth:`DefectMap.apply` on one plane: each defect inside the region becomes the median
    of its finite inner-ring neighbours inside the region (of the whole ring of 8 when fewer
    than 2 of those are usable); left as it is when none is. All values are taken before any
    is written (in float32, as numpy's median of float32 values: (a + b) / 2)."""
    h, w = plane.shape
    n = ys.size
    rep = np.empty(n, np.float32)
    done = np.zeros(n, np.bool_)
    buf = np.empty(ny.shape[1], np.float32)
    for i in range(n):
        y = ys[i] - y0
        x = xs[i] - x0
        if y < 0 or y >= h or x < 0 or x >= w:
            continue
        for ring in (4, ny.shape[1]):
            k = 0
            for j in range(ring):
                yy = ny[i, j]
                if yy < 0:  # outside the frame, or a defect itself
                    continue
                yy -= y0
                xx = nx[i, j] - x0
                if yy < 0 or yy >= h or xx < 0 or xx >= w:
                    continue
                v = plane[yy, xx]
                if np.isfinite(v):
                    m = k  # insertion sort
                    while m > 0 and buf[m - 1] > v:
                        buf[m] = buf[m - 1]
                        m -= 1
                    buf[m] = v
                    k += 1
            if k >= 2:
                break
        if k == 0:
            continue
        if k % 2 == 1:
            rep[i] = buf[k // 2]
        else:
            rep[i] = (buf[k // 2 - 1] + buf[k // 2]) / np.float32(2.0)
        done[i] = True
    for i in range(n):
        if done[i]:
            plane[ys[i] - y0, xs[i] - x0] = rep[i]
