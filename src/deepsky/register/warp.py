"""Resampling a frame onto the reference grid (pure: arrays and a transform in, arrays out).

The output pixel at reference coordinates ``p`` takes the source value interpolated at
``transform.inverse()(p)``. Interpolation kernels:

``"lanczos3"`` (default)
    windowed sinc, 6 x 6 taps, ``a = 3``; the sharpest, preserves star profiles, fluxes and
    noise texture. Its negative lobes leave a dark ring (undershoot) around bright stars;
    with ``clamp=True`` no result falls below the darkest of the 4 x 4 source pixels around
    the sampling point, which removes the rings. Only the low side is clamped: a star's
    true peak lies between pixels and is brighter than every sample, so clamping the high
    side to the neighbours (as a 2 x 2 min/max clamp does) cuts star peaks: on FWHM 2 px
    stars it lost up to 2.3 % of the flux and moved centroids by up to 0.026 px, against
    +0.5 % and 0.006 px with the low-side clamp (and 0 % / 0.006 px unclamped).
``"bicubic"``
    Keys cubic convolution (``a = -0.5``), 4 x 4 taps; clamping as for Lanczos.
``"bilinear"``, ``"nearest"``
    2 x 2 taps and 1 tap (never ring).

Kernel weights are normalised to sum to one along each axis. Taps outside the source take
the nearest edge pixel. Source points outside the source frame (beyond half a pixel from
the outer pixel centres) get ``fill``. The *footprint* returned with each result is the
fraction (0-1, ``float32``) of the kernel's absolute weight that fell on real source pixels:
1 where the source fully supports the output pixel, 0 where there was no source at all.

The kernels are numba functions that release the GIL. ``parallel=True`` splits the rows
over numba's threads; pass ``parallel=False`` when calling from your own thread pool.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange

from deepsky.errors import ConfigError, InputError
from deepsky.types import Transform

__all__ = ["METHODS", "warp_image", "warp_window", "source_bounds"]

METHODS: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "lanczos3")
_METHOD_ID = {m: i for i, m in enumerate(METHODS)}
_MARGIN = {"nearest": 1, "bilinear": 1, "bicubic": 2, "lanczos3": 3}


def warp_image(
    image: Any,
    transform: Transform,
    out_shape: tuple[int, int],
    *,
    method: str = "lanczos3",
    clamp: bool = True,
    fill: float = np.nan,
    parallel: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a frame onto the reference grid.

    Parameters
    ----------
    image : array_like, shape (H, W) or (C, H, W)
        The frame; a colour frame is warped plane by plane.
    transform : Transform
        Frame-to-reference transform (as in :class:`~deepsky.types.Registration`).
    out_shape : (int, int)
        ``(height, width)`` of the reference grid.
    method : {"lanczos3", "bicubic", "bilinear", "nearest"}
        Interpolation kernel.
    clamp : bool
        Keep Lanczos and bicubic results at or above the darkest of the 4 x 4 nearest source
        pixels (no dark rings around stars).
    fill : float
        Value of output pixels with no source.
    parallel : bool
        Use numba's threads over rows (False inside your own thread pool).

    Returns
    -------
    (warped, footprint)
        ``float32`` arrays: warped of shape ``out_shape`` (or ``(C,) + out_shape``), and the
        footprint of shape ``out_shape`` (1 = full source support, 0 = none).

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((8, 8), np.float32); img[3, 3] = 1.0
    >>> out, foot = warp_image(img, Transform.translation(1, 2), (8, 8), method="nearest")
    >>> float(out[5, 4]), float(foot[5, 4]), bool(np.isnan(out[0, 0]))
    (1.0, 1.0, True)
    """
    arr = _as_src(image)
    src_shape = arr.shape[-2:]
    return warp_window(arr, (0, 0), transform, (0, 0), out_shape, src_shape=src_shape,
                       method=method, clamp=clamp, fill=fill, parallel=parallel)


def warp_window(
    src_band: Any,
    src_origin: tuple[int, int],
    transform: Transform,
    out_origin: tuple[int, int],
    out_shape: tuple[int, int],
    *,
    src_shape: tuple[int, int] | None = None,
    method: str = "lanczos3",
    clamp: bool = True,
    fill: float = np.nan,
    parallel: bool = True,
    out: np.ndarray | None = None,
    footprint: bool = True,
    gain: Any = 1.0,
    offset: Any = 0.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample a window of the reference grid from a band of the source frame.

    The stacker warps tile by tile: it asks :func:`source_bounds` which source region a
    reference window needs, reads only that band, and calls this function. The result is
    identical to the same window of :func:`warp_image` on the whole frame.

    Parameters
    ----------
    src_band : array_like, shape (h, w) or (C, h, w)
        Source pixels ``[y0:y0+h, x0:x0+w]`` of the frame.
    src_origin : (int, int)
        ``(x0, y0)``: frame coordinates of ``src_band[0, 0]``.
    transform : Transform
        Frame-to-reference transform.
    out_origin : (int, int)
        ``(X0, Y0)``: reference coordinates of the window's first pixel.
    out_shape : (int, int)
        ``(height, width)`` of the window.
    src_shape : (int, int), optional
        ``(H, W)`` of the whole source frame: pixels beyond it have no source (footprint 0,
        ``fill``). Defaults to the band's extent.
    method, clamp, fill, parallel
        As in :func:`warp_image`.
    out : float32 array, optional
        Where to write the result (the shape of the result below), instead of a new array.
    footprint : bool
        False: skip the footprint (None is returned in its place).
    gain, offset : float or one per channel
        The result is ``warped * gain + offset`` (a normalisation applied on the way; pixels
        without source keep ``fill``).

    Returns
    -------
    (warped, footprint)
        As in :func:`warp_image`, for the window.
    """
    if method not in _METHOD_ID:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(transform, Transform):
        raise InputError(None, f"transform must be a Transform, got {type(transform).__name__}")
    band = _as_src(src_band)
    oh, ow = _shape2("out_shape", out_shape)
    x0, y0 = (int(v) for v in src_origin)
    ox, oy = (int(v) for v in out_origin)
    bh, bw = band.shape[-2:]
    sh, sw = (y0 + bh, x0 + bw) if src_shape is None else _shape2("src_shape", src_shape)
    minv = np.ascontiguousarray(transform.inverse().matrix, dtype=np.float64)
    if method == "lanczos3" and minv[2, 0] == 0 and minv[2, 1] == 0:
        # The vectorised runs need source columns that advance with the output's: a frame
        # turned by about 90 degrees is warped from the transposed band, a mirrored one (a
        # meridian flip) from the mirrored band (the kernel is symmetric and separable: the
        # same values).
        if abs(minv[0, 0]) < abs(minv[0, 1]):
            band = np.ascontiguousarray(np.swapaxes(band, -1, -2))
            x0, y0, sw, sh, bw, bh = y0, x0, sh, sw, bh, bw
            minv = minv[[1, 0, 2]]
        if minv[0, 0] < 0:
            band = np.ascontiguousarray(band[..., ::-1])
            x0 = sw - x0 - bw
            minv = np.array([[-1.0, 0.0, sw - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ minv
    kernel = _warp_parallel if parallel else _warp_serial
    planes = band[None] if band.ndim == 2 else band
    shape = (len(planes), oh, ow)
    if out is None:
        res = np.empty(shape, np.float32)
    else:
        if (out.dtype != np.float32 or out.size != np.prod(shape)
                or not out.flags.c_contiguous):
            raise ValueError(f"out must be C-contiguous float32 of "
                             f"{shape[1:] if band.ndim == 2 else shape}")
        res = out.reshape(shape)
    foot = np.empty((oh, ow) if footprint else (1, 1), np.float32)
    gains = np.broadcast_to(np.asarray(gain, np.float64), (len(planes),))
    offsets = np.broadcast_to(np.asarray(offset, np.float64), (len(planes),))
    for k, plane in enumerate(planes):
        kernel(plane, y0, x0, sh, sw, minv, oy, ox, _METHOD_ID[method], bool(clamp),
               float(fill), res[k], foot, footprint and k == 0, _LANCZOS3_POLY,
               _LANCZOS3_POLY_F32, float(gains[k]), float(offsets[k]))
    return (res[0] if band.ndim == 2 else res), (foot if footprint else None)


def source_bounds(
    transform: Transform,
    out_origin: tuple[int, int],
    out_shape: tuple[int, int],
    src_shape: tuple[int, int],
    margin: int = 3,
) -> tuple[int, int, int, int]:
    """The source rows and columns a reference window needs: ``(y0, y1, x0, x1)``.

    ``src[y0:y1, x0:x1]`` holds every pixel the kernels touch for the window of
    ``out_shape`` at ``out_origin = (X0, Y0)`` (``margin`` = 3 covers Lanczos-3). Clipped to
    the frame; empty (``y0 == y1`` or ``x0 == x1``) when the window sees no source pixel.
    """
    oh, ow = _shape2("out_shape", out_shape)
    sh, sw = _shape2("src_shape", src_shape)
    ox, oy = out_origin
    # The window's corners and edge midpoints mapped back (in plain Python: this runs for
    # every frame of every tile, where numpy's per-call overhead dominated).
    m = transform.inverse().matrix.tolist()
    xmin = ymin = math.inf
    xmax = ymax = -math.inf
    for gy in (oy - 0.5, oy + oh / 2.0, oy + oh - 0.5):
        for gx in (ox - 0.5, ox + ow / 2.0, ox + ow - 0.5):
            w = gx * m[2][0] + gy * m[2][1] + m[2][2]
            if w == 0.0:  # a point mapped to infinity: the whole frame may be needed
                return (0, sh, 0, sw)
            x = (gx * m[0][0] + gy * m[0][1] + m[0][2]) / w
            y = (gx * m[1][0] + gy * m[1][1] + m[1][2]) / w
            xmin, xmax = min(xmin, x), max(xmax, x)
            ymin, ymax = min(ymin, y), max(ymax, y)
    lim = 4.0 * (sh + sw + oh + ow)  # (beyond the frame either way: clipped below)
    xmin, xmax = min(max(xmin, -lim), lim), min(max(xmax, -lim), lim)
    ymin, ymax = min(max(ymin, -lim), lim), min(max(ymax, -lim), lim)
    x0 = int(min(max(math.floor(xmin) - margin, 0), sw))
    x1 = int(min(max(math.ceil(xmax) + margin + 1, 0), sw))
    y0 = int(min(max(math.floor(ymin) - margin, 0), sh))
    y1 = int(min(max(math.ceil(ymax) + margin + 1, 0), sh))
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0)
    return (y0, y1, x0, x1)


# ----------------------------------------------------------------------------------------------
def _as_src(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.shape[-1] == 0 or arr.shape[-2] == 0:
        raise InputError(None, f"image must be (H, W) or (C, H, W), got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _shape2(name: str, shape: Any) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in shape)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name} must be (height, width), got {shape!r}") from err
    if h <= 0 or w <= 0:
        raise ConfigError(f"{name} must be positive, got {shape!r}")
    return h, w


def _lanczos3_poly(degree: int = 9) -> np.ndarray:
    """The normalised Lanczos-3 weights of taps -2, -1, 0 at offset t in [0, 1) as
    polynomials in u = 2 t - 1 (taps 3, 2, 1 are the same at -u), split into even and odd
    parts: row k holds the even part's coefficients in s = u^2 (highest first), then the odd
    part's (w_k = E(s) + u O(s)). A least-squares fit on Chebyshev nodes: within 1.3e-7 of
    the formula's weights, 2.3e-7 evaluated in float32 (a 4096-row table, rounding t to
    the nearest row, was off by up to 1.7e-4), and exact at t = 0 by construction of the
    kernels (which copy the pixel there). The kernels use it written out,
    ``_LANCZOS3_POLY``."""
    from numpy.polynomial import chebyshev

    nodes = np.cos(np.pi * (np.arange(400) + 0.5) / 400)  # u in (-1, 1)
    t = (nodes + 1.0) / 2.0
    d = t[:, None] - np.arange(-2, 4, dtype=np.float64)[None, :]
    w = np.sinc(d) * np.sinc(d / 3.0)
    w /= w.sum(axis=1, keepdims=True)
    half = degree // 2
    out = np.empty((3, 2 * (half + 1)))
    for k in range(3):
        c = chebyshev.cheb2poly(chebyshev.chebfit(nodes, w[:, k], degree))  # lowest first
        out[k, : half + 1] = c[0::2][::-1]
        out[k, half + 1:] = c[1::2][::-1]
    return out


# _lanczos3_poly() written out (a fit's last bits may differ with the LAPACK it runs on; the
# kernel's weights should not): the test holds the two together.
_LANCZOS3_POLY = np.array([
    [-9.1369562924889522e-05, 1.2198299751174171e-03, -3.5535945417544254e-03,
     -2.2031433405917115e-02, 2.4456545718991612e-02, -9.7372199263267699e-05,
     8.5992529688968308e-04, -7.5471206427529759e-03, 3.8746590555452279e-02,
     -3.1962038315276234e-02],
    [-1.3838828481209755e-04, 4.4398734354896501e-04, -7.1265475709878469e-03,
     1.4269043183265939e-01, -1.3586952308381531e-01, 2.4157471097225247e-04,
     -2.0371907480368160e-03, 1.6400412732921150e-02, -1.0518404094952735e-01,
     9.0579280367994036e-02],
    [2.2975784774798995e-04, -1.6638173186853222e-03, 1.0680142112750680e-02,
     -1.2065899842674246e-01, 6.1141297736482358e-01, -4.7148496733780712e-04,
     4.0459882308669015e-03, -2.8390591815368734e-02, 1.9315101191160394e-01,
     -6.6833499061914348e-01]])
_LANCZOS3_POLY_F32 = _LANCZOS3_POLY.astype(np.float32)


@njit(cache=True, nogil=True, inline="always")
def _weights(t, method, w, poly):  # pragma: no cover - numba
    """Kernel weights for fractional offset t in [0, 1) into w; returns (ntaps, first)."""
    if method == 0:  # nearest
        w[0] = 1.0
        return 1, (1 if t >= 0.5 else 0)
    if method == 1:  # bilinear
        w[0] = 1.0 - t
        w[1] = t
        return 2, 0
    if method == 2:  # Keys cubic, a = -0.5: taps at -1, 0, 1, 2
        t2 = t * t
        t3 = t2 * t
        w[0] = -0.5 * t3 + t2 - 0.5 * t
        w[1] = 1.5 * t3 - 2.5 * t2 + 1.0
        w[2] = -1.5 * t3 + 2.0 * t2 + 0.5 * t
        w[3] = 0.5 * t3 - 0.5 * t2
        return 4, -1
    # Lanczos-3, taps at -2..3: the polynomials of _lanczos3_poly, much cheaper than the
    # two sines per axis the formula needs
    _poly6(t, poly, w)
    return 6, -2


@njit(cache=True, nogil=True, inline="always")
def _poly6(t, poly, w):  # pragma: no cover - numba
    """:func:`_poly_weights` for one offset, in the precision of ``poly``."""
    if t == 0.0:
        for k in range(6):
            w[k] = 1.0 if k == 2 else 0.0
        return
    u = 2.0 * t - 1.0
    s = u * u
    for k in range(3):
        ev = (((poly[k, 0] * s + poly[k, 1]) * s + poly[k, 2]) * s + poly[k, 3]) * s + poly[k, 4]
        od = ((((poly[k, 5] * s + poly[k, 6]) * s + poly[k, 7]) * s + poly[k, 8]) * s
              + poly[k, 9]) * u
        w[k] = ev + od
        w[5 - k] = ev - od


@njit(cache=True, nogil=True, fastmath={"contract"})
def _poly_weights(tx, ty, poly, W, n):  # pragma: no cover - numba
    """Lanczos-3 weights of the fractional offsets ``tx[:n]``, ``ty[:n]`` into ``W`` rows
    0-5 (x) and 6-11 (y), by :func:`_lanczos3_poly`'s polynomials, vectorised across the
    pixels: taps k and 5 - k from one even and one odd polynomial in u (E(u^2) +- u O(u^2)).
    An offset of exactly 0 gets the exact weights (0, 0, 1, 0, 0, 0): a whole-pixel shift
    copies the pixels."""
    for a in range(2):
        t = tx[:n] if a == 0 else ty[:n]
        for k in range(3):
            e0, e1, e2, e3, e4 = poly[k, 0], poly[k, 1], poly[k, 2], poly[k, 3], poly[k, 4]
            o0, o1, o2, o3, o4 = poly[k, 5], poly[k, 6], poly[k, 7], poly[k, 8], poly[k, 9]
            lo = W[6 * a + k, :n]
            hi = W[6 * a + 5 - k, :n]
            one = np.float32(1.0 if k == 2 else 0.0)
            for i in range(n):
                v = t[i]
                u = np.float32(2.0) * v - np.float32(1.0)
                s = u * u
                ev = (((e0 * s + e1) * s + e2) * s + e3) * s + e4
                od = ((((o0 * s + o1) * s + o2) * s + o3) * s + o4) * u
                z = v == np.float32(0.0)
                lo[i] = one if z else ev + od
                hi[i] = np.float32(0.0) if z else ev - od


@njit(cache=True, nogil=True, fastmath={"contract"})  # no reassociation: the same bits
def _lanczos_run(src, by, bx, n, W, i, clamp, gain, offset, out):  # pragma: no cover
    """Lanczos-3 for ``n`` consecutive output pixels from ``i`` whose 6 x 6 source windows
    start at row ``by`` and columns ``bx``, ``bx + 1``, ...: every tap is a contiguous load
    across the pixels, so the loop vectorises (weights per pixel in ``W``: 6 along x, 6
    along y, single precision). A pixel's value does not depend on the run it falls in
    (no reassociation), so tiles of any size give the same bits."""
    e = bx + n + 5
    r0 = src[by, bx:e]
    r1 = src[by + 1, bx:e]
    r2 = src[by + 2, bx:e]
    r3 = src[by + 3, bx:e]
    r4 = src[by + 4, bx:e]
    r5 = src[by + 5, bx:e]
    a0 = W[0, i:i + n]
    a1 = W[1, i:i + n]
    a2 = W[2, i:i + n]
    a3 = W[3, i:i + n]
    a4 = W[4, i:i + n]
    a5 = W[5, i:i + n]
    b0 = W[6, i:i + n]
    b1 = W[7, i:i + n]
    b2 = W[8, i:i + n]
    b3 = W[9, i:i + n]
    b4 = W[10, i:i + n]
    b5 = W[11, i:i + n]
    o = out[i:i + n]
    g = np.float32(gain)
    c = np.float32(offset)
    for t in range(n):
        x0, x1, x2, x3, x4, x5 = a0[t], a1[t], a2[t], a3[t], a4[t], a5[t]
        acc = b0[t] * (x0 * r0[t] + x1 * r0[t + 1] + x2 * r0[t + 2] + x3 * r0[t + 3]
                       + x4 * r0[t + 4] + x5 * r0[t + 5])
        acc += b1[t] * (x0 * r1[t] + x1 * r1[t + 1] + x2 * r1[t + 2] + x3 * r1[t + 3]
                        + x4 * r1[t + 4] + x5 * r1[t + 5])
        acc += b2[t] * (x0 * r2[t] + x1 * r2[t + 1] + x2 * r2[t + 2] + x3 * r2[t + 3]
                        + x4 * r2[t + 4] + x5 * r2[t + 5])
        acc += b3[t] * (x0 * r3[t] + x1 * r3[t + 1] + x2 * r3[t + 2] + x3 * r3[t + 3]
                        + x4 * r3[t + 4] + x5 * r3[t + 5])
        acc += b4[t] * (x0 * r4[t] + x1 * r4[t + 1] + x2 * r4[t + 2] + x3 * r4[t + 3]
                        + x4 * r4[t + 4] + x5 * r4[t + 5])
        acc += b5[t] * (x0 * r5[t] + x1 * r5[t + 1] + x2 * r5[t + 2] + x3 * r5[t + 3]
                        + x4 * r5[t + 4] + x5 * r5[t + 5])
        if clamp:
            lo = min(min(min(r1[t + 1], r1[t + 2]), min(r1[t + 3], r1[t + 4])),
                     min(min(r2[t + 1], r2[t + 2]), min(r2[t + 3], r2[t + 4])))
            lo = min(lo, min(min(min(r3[t + 1], r3[t + 2]), min(r3[t + 3], r3[t + 4])),
                             min(min(r4[t + 1], r4[t + 2]), min(r4[t + 3], r4[t + 4]))))
            acc = lo if acc < lo else acc  # (a NaN result stays NaN)
        o[t] = acc * g + c


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "arcp", "nsz"})
def _warp_rows(src, y0, x0, sh, sw, m, oy, ox, method, clamp, fill, out, foot, write_foot,
               poly, poly32, gain, offset, j0, j1):  # pragma: no cover - numba
    """Output rows ``j0 .. j1 - 1`` (see :func:`warp_window`); each interpolated value is
    written as ``value * gain + offset``.

    Lanczos-3 first finds, in each row, the runs of pixels whose source windows lie inside
    the band (and the frame) and advance by exactly one column per pixel in the same rows:
    the common case of a small rotation, where runs are ~1 / sin(angle) pixels long. Those
    go through :func:`_lanczos_run` (vectorised, single precision, the weights of a row's
    pixels computed together by :func:`_poly_weights`), affine and projective transforms
    alike; the pixels near the frame's edges take the general per-pixel code below (the
    same polynomials, in double precision). Which path a pixel takes depends only on the
    frame and the transform, never on the window asked for."""
    bh, bw = src.shape
    oh, ow = out.shape
    wx = np.empty(6)
    wy = np.empty(6)
    # A pixel of a run: its window's first row and first column less its own index,
    # packed as ((column - i + ow) << 32) | row (equal keys: the same run); -1 otherwise
    key = np.empty(ow, np.int64)
    rest = np.empty(ow, np.int64)  # the pixels left to the per-pixel code
    sxs = np.empty(ow)
    sys_ = np.empty(ow)
    txs = np.empty(ow, np.float32)
    tys = np.empty(ow, np.float32)
    W = np.empty((12, ow), np.float32)
    affine = m[2, 0] == 0.0 and m[2, 1] == 0.0 and m[2, 2] == 1.0
    for j in range(j0, j1):
        Y = oy + j
        if method == 3:
            # Where each pixel's window is (branch-free, vectorised) ...
            cx = m[0, 1] * Y + m[0, 2]
            cy = m[1, 1] * Y + m[1, 2]
            cd = m[2, 1] * Y + m[2, 2]
            lx = 2.0 if write_foot else -0.5  # the window inside the frame for the footprint
            hx = sw - 4.0 if write_foot else sw - 0.5
            hy = sh - 4.0 if write_foot else sh - 0.5
            if affine:
                for i in range(ow):
                    X = ox + i
                    sxs[i] = m[0, 0] * X + cx
                    sys_[i] = m[1, 0] * X + cy
            else:
                for i in range(ow):
                    X = ox + i
                    den = m[2, 0] * X + cd
                    sxs[i] = (m[0, 0] * X + cx) / den
                    sys_[i] = (m[1, 0] * X + cy) / den
            for i in range(ow):
                sx = sxs[i]
                sy = sys_[i]
                fx = math.floor(sx)
                fy = math.floor(sy)
                bx = int(fx) - x0 - 2
                by = int(fy) - y0 - 2
                ok = ((sx >= -0.5) & (sx < sw - 0.5) & (sy >= -0.5) & (sy < sh - 0.5)
                      & (fx >= lx) & (fy >= lx) & (fx <= hx) & (fy <= hy)
                      & (bx >= 0) & (by >= 0) & (bx + 6 <= bw) & (by + 6 <= bh))
                key[i] = (((bx - i + ow) << 32) | by) if ok else -1
                txs[i] = np.float32(sx - fx)
                tys[i] = np.float32(sy - fy)
            # ... and its weights, from the polynomials (every pixel: no branch)
            _poly_weights(txs, tys, poly32, W, ow)
            # the runs (one key compared per pixel), and the list of the others
            nrest = 0
            i = 0
            while i < ow:
                kk = key[i]
                if kk < 0:
                    rest[nrest] = i
                    nrest += 1
                    i += 1
                    continue
                k = i + 1
                while k < ow and key[k] == kk:
                    k += 1
                _lanczos_run(src, kk & 0xFFFFFFFF, (kk >> 32) - ow + i, k - i, W, i, clamp,
                             gain, offset, out[j])
                if write_foot:
                    for t in range(i, k):
                        foot[j, t] = 1.0
                i = k
        else:
            nrest = ow
            for i in range(ow):
                rest[i] = i
        for q in range(nrest):
            i = rest[q]
            X = ox + i
            den = m[2, 0] * X + m[2, 1] * Y + m[2, 2]
            sx = (m[0, 0] * X + m[0, 1] * Y + m[0, 2]) / den
            sy = (m[1, 0] * X + m[1, 1] * Y + m[1, 2]) / den
            if not (sx >= -0.5 and sx < sw - 0.5 and sy >= -0.5 and sy < sh - 0.5):
                out[j, i] = fill
                if write_foot:
                    foot[j, i] = 0.0
                continue
            fx = math.floor(sx)
            fy = math.floor(sy)
            if method == 3:
                # Lanczos-3 away from the edges: table rows read in place, fixed 6 x 6 taps,
                # no index clamping
                bx = int(fx) - x0 - 2
                by = int(fy) - y0 - 2
                if bx >= 0 and by >= 0 and bx + 6 <= bw and by + 6 <= bh:
                    _poly6(sx - fx, poly, wx)
                    _poly6(sy - fy, poly, wy)
                    w0, w1, w2, w3, w4, w5 = wx[0], wx[1], wx[2], wx[3], wx[4], wx[5]
                    acc = 0.0
                    for b in range(6):
                        yy = by + b
                        acc += wy[b] * (w0 * src[yy, bx] + w1 * src[yy, bx + 1]
                                        + w2 * src[yy, bx + 2] + w3 * src[yy, bx + 3]
                                        + w4 * src[yy, bx + 4] + w5 * src[yy, bx + 5])
                    if clamp:
                        lo = src[by + 1, bx + 1]
                        for b in range(1, 5):
                            yy = by + b
                            lo = min(lo, min(min(src[yy, bx + 1], src[yy, bx + 2]),
                                             min(src[yy, bx + 3], src[yy, bx + 4])))
                        if acc < lo:
                            acc = lo
                    out[j, i] = acc * gain + offset
                    if write_foot:
                        fx0 = int(fx) - 2
                        fy0 = int(fy) - 2
                        if fx0 >= 0 and fy0 >= 0 and fx0 + 6 <= sw and fy0 + 6 <= sh:
                            foot[j, i] = 1.0
                        else:
                            _weights(sx - fx, method, wx, poly)
                            _weights(sy - fy, method, wy, poly)
                            foot[j, i] = _coverage(fx0, fy0, 6, 6, wx, wy, sw, sh)
                    continue
            nx, kx = _weights(sx - fx, method, wx, poly)
            ny, ky = _weights(sy - fy, method, wy, poly)
            bx = int(fx) - x0 + kx  # first tap, band coordinates
            by = int(fy) - y0 + ky
            acc = 0.0
            inside = bx >= 0 and by >= 0 and bx + nx <= bw and by + ny <= bh
            if inside:
                for b in range(ny):
                    row = 0.0
                    for a in range(nx):
                        row += wx[a] * src[by + b, bx + a]
                    acc += wy[b] * row
            else:
                for b in range(ny):
                    yy = min(max(by + b, 0), bh - 1)
                    row = 0.0
                    for a in range(nx):
                        xx = min(max(bx + a, 0), bw - 1)
                        row += wx[a] * src[yy, xx]
                    acc += wy[b] * row
            if clamp and method >= 2:
                # no result below the darkest of the 4 x 4 source pixels around the point
                lo = np.inf
                for b in range(-1, 3):
                    yy = min(max(int(fy) - y0 + b, 0), bh - 1)
                    for a in range(-1, 3):
                        xx = min(max(int(fx) - x0 + a, 0), bw - 1)
                        lo = min(lo, src[yy, xx])
                if acc < lo:
                    acc = lo
            out[j, i] = acc * gain + offset
            if write_foot:
                fx0 = int(fx) + kx
                fy0 = int(fy) + ky
                if fx0 >= 0 and fy0 >= 0 and fx0 + nx <= sw and fy0 + ny <= sh:
                    foot[j, i] = 1.0
                    continue
                foot[j, i] = _coverage(fx0, fy0, nx, ny, wx, wy, sw, sh)


@njit(cache=True, nogil=True, inline="always")
def _coverage(fx0, fy0, nx, ny, wx, wy, sw, sh):  # pragma: no cover - numba
    """Fraction of the kernel's absolute weight on source pixels (first taps fx0, fy0)."""
    fxin = 0.0
    fxall = 0.0
    for a in range(nx):
        aw = abs(wx[a])
        fxall += aw
        if fx0 + a >= 0 and fx0 + a < sw:
            fxin += aw
    fyin = 0.0
    fyall = 0.0
    for b in range(ny):
        aw = abs(wy[b])
        fyall += aw
        if fy0 + b >= 0 and fy0 + b < sh:
            fyin += aw
    return (fxin / fxall) * (fyin / fyall)


# Two distinct functions, not two njit wrappers of one: numba's on-disk cache is keyed by
# the function, so wrappers of the same function would load each other's compiled code.
@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "arcp", "nsz"})
def _warp_serial(src, y0, x0, sh, sw, m, oy, ox, method, clamp, fill, out, foot, write_foot,
                 poly, poly32, gain, offset):  # pragma: no cover - numba
    _warp_rows(src, y0, x0, sh, sw, m, oy, ox, method, clamp, fill, out, foot, write_foot,
               poly, poly32, gain, offset, 0, out.shape[0])


@njit(cache=True, nogil=True, parallel=True)
def _warp_parallel(src, y0, x0, sh, sw, m, oy, ox, method, clamp, fill, out, foot,
                   write_foot, poly, poly32, gain, offset):  # pragma: no cover - numba
    oh = out.shape[0]
    nblk = (oh + 15) // 16
    for b in prange(nblk):
        _warp_rows(src, y0, x0, sh, sw, m, oy, ox, method, clamp, fill, out, foot,
                   write_foot, poly, poly32, gain, offset, 16 * b, min(oh, 16 * b + 16))
