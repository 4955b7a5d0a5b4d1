"""Background (light-pollution gradient and vignetting) extraction.

How it works
------------
1. **Samples.** A regular grid of square boxes covers the image (``grid`` boxes along the
   long side). A box is a *sample*: its value is the sigma-clipped mean of the pixels it
   holds (clipped at 2 sigma above and 3 below: faint star wings only ever add light), per
   channel, leaving out the pixels of the source mask (stars, galaxies and, from a 4x4
   binned map, their faint halos; see :func:`deepsky.postprocess._common.sky_model`).
   :func:`background_samples` returns
   the automatic sample positions as an editable ``(n, 2)`` array of ``(x, y)`` box centres;
   :func:`fit_background` fits a surface through any given list of positions, so a user can
   add, move or delete samples and fit again (``process_file`` writes the list it used to
   ``background_samples.csv`` and reads one back with ``gradient.samples_file``).
2. **Rejection of samples on objects.** A sample is dropped when more than 70 % of its box
   is masked, when it is brighter (or much darker) than the median of its neighbours by more
   than ``tolerance`` times the scatter of such differences (or of the sample noise), and,
   for the polynomial surface, when it lies more than ``tolerance`` sigma above a robust
   polynomial fit of all samples (iterated; a sample next to two rejected bright ones is
   held to 1 sigma): the faint outer halo of a galaxy, invisible pixel by pixel, stands out
   at the level of a box.
3. **Surface.** ``method="poly"``: a least-squares polynomial of total degree 1-4 in the
   normalised coordinates, per channel, weighted by the valid pixels of each sample.
   ``method="rbf"``: a thin-plate-spline radial basis function with a quadratic trend
   (scipy's ``RBFInterpolator``; the trend carries the surface into corners without
   samples; ``smoothing`` > 0 lets it pass near rather than through the samples, 0 through
   them), evaluated on a coarse grid and interpolated bicubically. A sample's value applies
   at the centroid of its valid pixels, not at the box centre, so a half-masked box does not
   shift the surface along a steep gradient.
4. **Correction.** ``mode="subtract"`` (light pollution, additive):
   ``out = data - model + pedestal``; ``mode="divide"`` (vignetting, multiplicative):
   ``out = data / model * pedestal``; ``pedestal`` is the median of the model per channel,
   so the image keeps its overall level (nothing is pushed below zero) and the model is the
   image of what was removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.interpolate import RBFInterpolator, RectBivariateSpline

from deepsky.errors import ConfigError, ProcessingError
from deepsky.postprocess._common import (
    MADN, as_image, as_mask, check_choice, check_number, like, luminance, planes, sky_model,
    step,
)

__all__ = [
    "BackgroundResult",
    "background_samples",
    "sample_values",
    "fit_background",
    "apply_background",
    "extract_background",
]

METHODS = ("poly", "rbf")
MODES = ("subtract", "divide")


@dataclass(frozen=True, eq=False)
class BackgroundResult:
    """The corrected image and what was removed.

    ``data`` has the input's shape; ``model`` is the background surface in the input's units
    (same shape); ``samples`` the ``(n, 2)`` sample positions ``(x, y)`` used; ``pedestal``
    the per-channel level kept in the image; ``history`` the recipe line.
    """

    data: np.ndarray
    model: np.ndarray
    samples: np.ndarray
    pedestal: np.ndarray
    history: tuple[str, ...]


# ----------------------------------------------------------------------------------------------
# samples
# ----------------------------------------------------------------------------------------------
def default_box(shape: tuple[int, ...], grid: int) -> int:
    """Sample box side for a grid of ``grid`` boxes along the long side (odd, >= 5)."""
    s = max(shape[-2:]) / grid
    b = max(5, int(s))
    return b if b % 2 else b - 1


def _box_indices(samples: np.ndarray, box: int, shape: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices ``(n, box)`` of each sample's box, moved inside the image."""
    h, w = shape
    bh, bw = min(box, h), min(box, w)
    x0 = np.clip(np.floor(samples[:, 0] - (bw - 1) / 2.0 + 0.5).astype(np.int64), 0, w - bw)
    y0 = np.clip(np.floor(samples[:, 1] - (bh - 1) / 2.0 + 0.5).astype(np.int64), 0, h - bh)
    # Boxes wider than 48 px use every k-th row and column: 2000+ pixels are plenty for a
    # clipped mean, and the statistics stay fast on large images.
    k = max(1, min(bh, bw) // 48)
    return (y0[:, None] + np.arange(0, bh, k)[None, :],
            x0[:, None] + np.arange(0, bw, k)[None, :])


def _box_centres(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``(n, 2)`` centres ``(x, y)`` of the boxes (where their median applies)."""
    return np.stack([cols.mean(axis=1), rows.mean(axis=1)], axis=1)


def _valid_centres(rows: np.ndarray, cols: np.ndarray, excl: np.ndarray | None) -> np.ndarray:
    """``(n, 2)`` centroid ``(x, y)`` of the valid pixels of each box: where a box's median
    applies when part of it is masked (the box centre when nothing is)."""
    if excl is None:
        return _box_centres(rows, cols)
    valid = ~excl[rows[:, :, None], cols[:, None, :]]
    cnt = valid.sum(axis=(1, 2)).astype(np.float64)
    safe = np.maximum(cnt, 1.0)
    x = (valid * cols[:, None, :]).sum(axis=(1, 2)) / safe
    y = (valid * rows[:, :, None]).sum(axis=(1, 2)) / safe
    out = np.stack([x, y], axis=1)
    empty = cnt == 0
    out[empty] = _box_centres(rows[empty], cols[empty])
    return out


def _box_stats(img: np.ndarray, rows: np.ndarray, cols: np.ndarray,
               excl: np.ndarray | None, nsigma: float = 3.0, high: float = 2.0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-clipped median of each box of each plane ``(C, n)`` and the fraction of valid
    pixels of each box ``(n,)``. Clipping is asymmetric (``high`` sigma above, ``nsigma``
    below): the faint wings of stars only ever add light. The small bias this leaves on pure
    noise is the same for every sample, so it moves the pedestal, not the gradient."""
    p = planes(img)
    n = rows.shape[0]
    out = np.full((p.shape[0], n), np.nan)
    valid = np.ones((n, rows.shape[1], cols.shape[1]), dtype=bool)
    if excl is not None:
        valid = ~excl[rows[:, :, None], cols[:, None, :]]
    frac = valid.reshape(n, -1).mean(axis=1)
    for c in range(p.shape[0]):
        v = p[c][rows[:, :, None], cols[:, None, :]].astype(np.float64).reshape(n, -1)
        v = np.where(valid.reshape(n, -1), v, np.nan)
        ok = frac > 0
        if not ok.any():
            continue
        vv = v[ok]
        for _ in range(5):
            med = np.nanmedian(vv, axis=1)
            sig = np.maximum(MADN * np.nanmedian(np.abs(vv - med[:, None]), axis=1), 1e-30)
            dev = vv - med[:, None]
            clip = (dev > high * sig[:, None]) | (dev < -nsigma * sig[:, None])
            if not clip.any():
                break
            vv = np.where(clip, np.nan, vv)
        # The mean of the clipped values: 1.25x less noisy than their median.
        out[c, ok] = np.nanmean(vv, axis=1)
    return out, frac


def sample_values(data: Any, samples: Any, *, box: int | None = None, mask: Any = None,
                  grid: int = 16) -> np.ndarray:
    """Background value at each sample: the sigma-clipped mean of its box, per channel.

    Parameters
    ----------
    data : array_like, (H, W) or (3, H, W)
        The linear image.
    samples : array_like, (n, 2)
        Sample centres ``(x, y)`` in pixels.
    box : int, optional
        Box side in pixels (default: :func:`default_box` for ``grid``).
    mask : array_like of bool, (H, W), optional
        ``True`` marks pixels left out of the statistics.

    Returns
    -------
    ndarray, (C, n)
        NaN where a box holds no valid pixel.
    """
    img = as_image(data)
    pts = _check_samples(samples, img.shape)
    b = default_box(img.shape, grid) if box is None else check_number("box", box, 3, None,
                                                                       integer=True)
    rows, cols = _box_indices(pts, b, img.shape[-2:])
    vals, _ = _box_stats(img, rows, cols, as_mask(mask, img.shape[-2:]))
    return vals


def background_samples(
    data: Any,
    *,
    grid: int = 16,
    box: int | None = None,
    mask: Any = None,
    tolerance: float = 3.0,
    degree: int | None = 2,
    sources: Any = None,
) -> np.ndarray:
    """Automatic background sample positions that avoid stars, galaxies and nebulae.

    Parameters
    ----------
    data : array_like, (H, W) or (3, H, W)
        The linear image (stack), any units.
    grid : int
        Samples along the long side of the image (4-64).
    box : int, optional
        Sample box side in pixels; default the grid spacing.
    mask : array_like of bool, (H, W), optional
        ``True`` marks pixels no sample may use (added to the automatic source mask).
    tolerance : float
        Rejection threshold in sigma (see the module notes); lower rejects more.
    degree : int or None
        Degree of the robust polynomial the samples are compared with (1-4); ``None``
        compares them with their neighbours only (for backgrounds no polynomial follows,
        which the RBF surface is for).
    sources : array_like of bool, (H, W), optional
        A source mask already computed for this image (``True`` = excluded); by default
        the automatic one.

    Returns
    -------
    ndarray, (n, 2)
        Sample centres ``(x, y)``, float64; an editable list for :func:`fit_background`.

    Examples
    --------
    >>> pts = background_samples(stack)                  # doctest: +SKIP
    >>> pts = pts[pts[:, 0] > 40]                        # drop the samples near the left edge
    >>> model = fit_background(stack, pts)               # doctest: +SKIP
    """
    img = as_image(data)
    grid = check_number("grid", grid, 4, 64, integer=True)
    tolerance = check_number("tolerance", tolerance, 0.5, 100.0)
    if degree is not None:
        degree = check_number("degree", degree, 1, 4, integer=True)
    b = default_box(img.shape, grid) if box is None else check_number("box", box, 3, None,
                                                                       integer=True)
    h, w = img.shape[-2:]
    user = as_mask(mask, (h, w))
    lum = luminance(img)
    if sources is None:
        sky = sky_model(lum, mask=user)
        src, noise = sky.sources, sky.noise
    else:
        src = as_mask(sources, (h, w), "sources")
        # Pixel noise from differences of neighbours over the sky (blind to gradients).
        diff = lum[:, 1:] - lum[:, :-1]
        ok = ~(src[:, 1:] | src[:, :-1])
        vals = diff[ok] if ok.any() else diff.ravel()
        noise = float(MADN * np.median(np.abs(vals - np.median(vals)))) / math.sqrt(2.0)
    excl = src if user is None else (src | user)

    spacing = max(h, w) / grid
    nx, ny = max(2, int(round(w / spacing))), max(2, int(round(h / spacing)))
    xs = (np.arange(nx) + 0.5) * (w / nx) - 0.5
    ys = (np.arange(ny) + 0.5) * (h / ny) - 0.5
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    rows, cols = _box_indices(pts, b, (h, w))
    vals, frac = _box_stats(lum, rows, cols, excl)
    v = vals[0]
    keep = (frac >= 0.3) & np.isfinite(v)
    # Noise of one sample value: the clipped mean of n pixels, about sigma / sqrt(n).
    n_pix = np.maximum(frac * rows.shape[1] * cols.shape[1], 1.0)
    sample_noise = 1.05 * noise / np.sqrt(n_pix)

    keep = _reject_by_neighbours(pts, v, keep, spacing, tolerance, sample_noise)
    if degree is not None:
        keep = _reject_by_surface(_valid_centres(rows, cols, excl), v, keep, (h, w), degree,
                                  tolerance, sample_noise, spacing)
    out = pts[keep]
    if len(out) < _n_terms(1):
        raise ProcessingError(f"only {len(out)} background samples are free of objects "
                              f"(grid={grid}); use a finer grid, a smaller tolerance or "
                              "give the samples by hand")
    return out


def _reject_by_neighbours(pts: np.ndarray, v: np.ndarray, keep: np.ndarray, spacing: float,
                          tol: float, noise: np.ndarray) -> np.ndarray:
    keep = keep.copy()
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    near = (d2 <= (1.6 * spacing) ** 2) & ~np.eye(len(pts), dtype=bool)
    for _ in range(5):
        diff = np.full(len(pts), np.nan)
        for i in np.flatnonzero(keep):
            nb = near[i] & keep
            if nb.sum() >= 3:
                diff[i] = v[i] - np.median(v[nb])
        ok = np.isfinite(diff)
        if ok.sum() < 5:
            break
        sig = max(MADN * float(np.median(np.abs(diff[ok]))), 1.5 * float(np.median(noise[ok])))
        bad = ok & ((diff > tol * sig) | (diff < -2.0 * tol * sig))
        if not bad.any():
            break
        keep &= ~bad
    return keep


def _reject_by_surface(pts: np.ndarray, v: np.ndarray, keep: np.ndarray,
                       shape: tuple[int, int], degree: int, tol: float, noise: np.ndarray,
                       spacing: float) -> np.ndarray:
    keep = keep.copy()
    a = _design(pts, shape, degree)
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    near = (d2 <= (1.6 * spacing) ** 2) & ~np.eye(len(pts), dtype=bool)
    high = np.zeros(len(pts), dtype=bool)
    for _ in range(8):
        if keep.sum() < 3 * a.shape[1]:
            break
        coef, *_ = np.linalg.lstsq(a[keep], v[keep], rcond=None)
        r = v - a @ coef
        sig = max(MADN * float(np.median(np.abs(r[keep]))), 1.5 * float(np.median(noise[keep])))
        # A sample next to two or more rejected bright samples is held to a tighter limit:
        # the halo of an object fades smoothly into the sky.
        crowd = (near & high[None, :]).sum(axis=1) >= 2
        bad = keep & ((r > tol * sig) | (r < -2.0 * tol * sig) | (crowd & (r > 1.0 * sig)))
        if not bad.any() or keep.sum() - bad.sum() < 3 * a.shape[1]:
            break
        high |= bad & (r > 0)
        keep &= ~bad
    return keep


# ----------------------------------------------------------------------------------------------
# surfaces
# ----------------------------------------------------------------------------------------------
def _n_terms(degree: int) -> int:
    return (degree + 1) * (degree + 2) // 2


def _norm_coords(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    return (x - (w - 1) / 2.0) / (w / 2.0), (y - (h - 1) / 2.0) / (h / 2.0)


def _design(pts: np.ndarray, shape: tuple[int, int], degree: int) -> np.ndarray:
    u, v = _norm_coords(pts[:, 0], pts[:, 1], shape)
    cols = [u ** (k - j) * v ** j for k in range(degree + 1) for j in range(k + 1)]
    return np.stack(cols, axis=1)


def _eval_poly(coef: np.ndarray, shape: tuple[int, int], degree: int) -> np.ndarray:
    """The polynomial of :func:`_design`'s terms (``coef[t]`` for ``u^(k-j) v^j``) on every
    pixel, as one product of a (rows x powers of v) and a (powers of v x columns) matrix:
    ``sum_j v^j (sum_k coef u^(k-j))`` (one pass over the image instead of one per term)."""
    h, w = shape
    u, v = _norm_coords(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64), shape)
    rows = np.stack([v ** j for j in range(degree + 1)], axis=1)  # (h, degree + 1)
    cols = np.zeros((degree + 1, w), dtype=np.float64)
    t = 0
    for k in range(degree + 1):
        for j in range(k + 1):
            cols[j] += coef[t] * u ** (k - j)
            t += 1
    return (rows @ cols).astype(np.float32)


def fit_background(
    data: Any,
    samples: Any,
    *,
    method: str = "poly",
    degree: int = 2,
    smoothing: float = 1.0,
    box: int | None = None,
    grid: int = 16,
    mask: Any = None,
    exclude_sources: bool = True,
    sources: Any = None,
) -> np.ndarray:
    """Fit a background surface through the given samples.

    Parameters
    ----------
    data : array_like, (H, W) or (3, H, W)
        The linear image.
    samples : array_like, (n, 2)
        Sample centres ``(x, y)``: the automatic ones (:func:`background_samples`) or any
        edited list. Samples are used as given (no rejection).
    method : {"poly", "rbf"}
        Polynomial of total ``degree`` (1-4) or thin-plate-spline RBF.
    smoothing : float
        RBF only: 0 passes exactly through the samples; larger values smooth more, towards
        the quadratic trend (the value is relative to the scatter and number of the
        samples; 1 suits most stacks).
    box, grid : int
        Sample box side (default: the spacing of a ``grid``-box grid).
    mask : array_like of bool, (H, W), optional
        ``True`` marks pixels left out of the sample statistics.
    exclude_sources : bool
        Leave the pixels of the automatic source mask (stars, galaxies) out of each box's
        statistics as well (default), so a sample placed by hand near a star still measures
        the sky.
    sources : array_like of bool, (H, W), optional
        That source mask, if already computed.

    Returns
    -------
    ndarray
        The model, float32, with the shape of ``data``.
    """
    img = as_image(data)
    method = check_choice("method", method, METHODS)
    degree = check_number("degree", degree, 1, 4, integer=True)
    smoothing = check_number("smoothing", smoothing, 0.0, 1e6)
    pts = _check_samples(samples, img.shape)
    b = default_box(img.shape, grid) if box is None else check_number("box", box, 3, None,
                                                                       integer=True)
    rows, cols = _box_indices(pts, b, img.shape[-2:])
    excl = as_mask(mask, img.shape[-2:])
    if exclude_sources:
        src = sky_model(luminance(img), mask=excl).sources if sources is None else \
            as_mask(sources, img.shape[-2:], "sources")
        excl = src if excl is None else (src | excl)
    vals, frac = _box_stats(img, rows, cols, excl)
    centres = _valid_centres(rows, cols, excl)
    weak = frac < 0.1
    if weak.any():
        # A box (almost) covered by the mask falls back to all its pixels, clipped.
        vals[:, weak] = _box_stats(img, rows[weak], cols[weak], None)[0]
        centres[weak] = _box_centres(rows[weak], cols[weak])
    ok = np.all(np.isfinite(vals), axis=0)
    # Least-squares weights: a sample's variance falls with the pixels it averages.
    wts = np.sqrt(np.where(weak, 1.0, np.maximum(frac, 0.05)))[ok]
    pts, vals = centres[ok], vals[:, ok]
    shape = img.shape[-2:]
    need = _n_terms(degree) if method == "poly" else 3
    if len(pts) < need:
        raise ProcessingError(f"{len(pts)} usable background samples are too few for "
                              f"method={method!r}, degree={degree} (need {need})")
    if method == "poly":
        a = _design(pts, shape, degree)
        coef, *_ = np.linalg.lstsq(a * wts[:, None], vals.T * wts[:, None], rcond=None)
        model = np.stack([_eval_poly(coef[:, c], shape, degree) for c in range(vals.shape[0])])
    else:
        model = _fit_rbf(pts, vals, shape, smoothing)
    return like(img, model)


def _fit_rbf(pts: np.ndarray, vals: np.ndarray, shape: tuple[int, int], smoothing: float
             ) -> np.ndarray:
    h, w = shape
    scale = float(max(h, w))
    xy = pts / scale
    # Values are standardised so that ``smoothing`` means the same for any units; the
    # thin-plate spline's smoothing weight is relative to the sample count.
    mu = vals.mean(axis=1, keepdims=True)
    sd = vals.std(axis=1, keepdims=True)
    sd[sd <= 0] = 1.0
    z = ((vals - mu) / sd).T
    rbf = RBFInterpolator(xy, z, kernel="thin_plate_spline", degree=2 if len(pts) >= 12 else 1,
                          smoothing=smoothing * 1e-2 * len(pts))
    step_px = max(4, int(round(max(h, w) / 96)))
    gy = np.unique(np.append(np.arange(0, h, step_px), h - 1)).astype(np.float64)
    gx = np.unique(np.append(np.arange(0, w, step_px), w - 1)).astype(np.float64)
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    coarse = rbf(np.stack([xx.ravel(), yy.ravel()], axis=1) / scale)  # (m, C)
    out = np.empty((vals.shape[0], h, w), dtype=np.float32)
    k = 3 if min(len(gx), len(gy)) > 3 else 1
    for c in range(vals.shape[0]):
        grid_c = coarse[:, c].reshape(len(gy), len(gx)) * sd[c, 0] + mu[c, 0]
        spl = RectBivariateSpline(gy, gx, grid_c, kx=k, ky=k)
        out[c] = spl(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64))
    return out


def _check_samples(samples: Any, shape: tuple[int, ...]) -> np.ndarray:
    try:
        pts = np.asarray(samples, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"samples must be an (n, 2) array of x, y positions, got "
                          f"{samples!r}") from err
    pts = pts.reshape(-1, 2) if pts.size % 2 == 0 and pts.ndim <= 2 else pts
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
        raise ConfigError(f"samples must be an (n, 2) array of finite x, y positions, got "
                          f"shape {np.shape(samples)}")
    h, w = shape[-2:]
    out = (pts[:, 0] < -0.5) | (pts[:, 0] > w - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > h - 0.5)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise ConfigError(f"background sample {i} at (x={pts[i, 0]:g}, y={pts[i, 1]:g}) is "
                          f"outside the image ({w} x {h})")
    return pts


# ----------------------------------------------------------------------------------------------
# correction
# ----------------------------------------------------------------------------------------------
def apply_background(data: Any, model: Any, *, mode: str = "subtract"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Remove a background model: ``(corrected, pedestal)``.

    ``subtract``: ``data - model + pedestal``; ``divide``: ``data / model * pedestal``, with
    ``pedestal`` the median of the model per channel (the image keeps its level).
    """
    img = as_image(data)
    mode = check_choice("mode", mode, MODES)
    mdl = as_image(model, "model")
    if mdl.shape != img.shape:
        raise ProcessingError(f"model has shape {mdl.shape}, the image has {img.shape}")
    mp = planes(mdl)
    ped = np.array([float(np.median(p[::2, ::2])) for p in mp])
    out = np.empty_like(planes(img))
    for c, (src, m) in enumerate(zip(planes(img), mp)):
        if mode == "subtract":
            out[c] = src - m + np.float32(ped[c])
        else:
            if not (m > 0).all():
                raise ProcessingError("the background model is not positive everywhere, it "
                                      "cannot divide the image; use mode='subtract'")
            out[c] = src / m * np.float32(ped[c])
    return like(img, out), ped


def extract_background(
    data: Any,
    *,
    samples: Any = None,
    mode: str = "subtract",
    method: str = "poly",
    degree: int = 2,
    smoothing: float = 1.0,
    grid: int = 16,
    box: int | None = None,
    tolerance: float = 3.0,
    mask: Any = None,
) -> BackgroundResult:
    """Find the background (automatic samples unless ``samples`` are given), fit it and
    remove it. See the module notes and :func:`background_samples`, :func:`fit_background`.

    Examples
    --------
    >>> res = extract_background(stack, degree=2)      # doctest: +SKIP
    >>> res.data, res.model                              # doctest: +SKIP
    """
    img = as_image(data)
    mode = check_choice("mode", mode, MODES)
    given = samples is not None
    user = as_mask(mask, img.shape[-2:])
    src = sky_model(luminance(img), mask=user).sources
    if given:
        pts = _check_samples(samples, img.shape)
    else:
        pts = background_samples(img, grid=grid, box=box, mask=user, tolerance=tolerance,
                                 degree=None if method == "rbf" else degree,
                                 sources=src)
    model = fit_background(img, pts, method=method, degree=degree, smoothing=smoothing,
                           box=box, grid=grid, mask=user, sources=src)
    out, ped = apply_background(img, model, mode=mode)
    what = f"degree {degree}" if method == "poly" else f"smoothing {smoothing:g}"
    line = step("background", f"{mode} {method} ({what}), {len(pts)} "
                              f"{'given' if given else 'automatic'} samples, "
                              f"pedestal {', '.join(f'{p:.6g}' for p in ped)}")
    return BackgroundResult(data=out, model=model, samples=pts, pedestal=ped, history=(line,))


def samples_to_text(samples: np.ndarray) -> str:
    """The sample list as CSV text (``x,y`` per line, with a header)."""
    lines = ["x,y"] + [f"{x:.2f},{y:.2f}" for x, y in np.asarray(samples).reshape(-1, 2)]
    return "\n".join(lines) + "\n"


def samples_from_text(text: str, source: str = "samples") -> np.ndarray:
    """Parse ``x,y`` (or ``x y``) lines; blank lines, ``#`` comments and a header skipped."""
    pts: list[tuple[float, float]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").replace(";", " ").split()
        try:
            x, y = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            if n == 1 or not pts and parts and parts[0].lower() == "x":
                continue
            raise ConfigError(f"{source}, line {n}: expected 'x,y', got {raw!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ConfigError(f"{source}, line {n}: expected finite numbers, got {raw!r}")
        pts.append((x, y))
    return np.array(pts, dtype=np.float64).reshape(-1, 2)
