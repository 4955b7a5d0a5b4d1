"""Star detection with sub-pixel centroids and shape measurements.

How :func:`find_stars` works
----------------------------
1. The background mesh (:func:`~deepsky.detect.background.estimate_background`) gives the
   local sky level and noise.
2. The image is smoothed with a Gaussian of ``smooth_sigma`` pixels (a matched filter for
   stars of a few pixels FWHM) and every local maximum whose smoothed height exceeds
   ``threshold`` times the *smoothed* noise is a candidate.
3. The brightest candidates give a first estimate of the frame's FWHM; candidates closer
   than ~1.5 FWHM without a significant dip between them are merged (one star, one peak).
4. Each candidate is fitted with an elliptical Gaussian plus a constant (Levenberg-Marquardt
   on a stamp of radius ~1.5 FWHM, saturated and masked pixels left out); below SNR ~20
   the shape is held at the frame's mean (centre, background and amplitude fitted: their
   own shape would be noise, and the fit is ~3x cheaper), so their shape measures are NaN. Stars with
   neighbours are fitted again twice with their neighbours' fitted light subtracted, which
   deblends close pairs. The fit gives the sub-pixel centroid (unbiased by pixel phase down
   to FWHM ~1.5 px, unlike windowed centroids), FWHM, roundness, eccentricity and angle
   (FWHM corrected for the pixel's own width).
5. Rejected: failed fits; hot pixels and cosmic rays (``sharpness`` = peak / sum of the
   3x3 around it above ``max_sharpness``, minor-axis FWHM below ``min_fwhm``, or, when
   bright, a half-flux radius below 0.3 FWHM: the light sits in one or two pixels); extended
   objects (FWHM above ``max_fwhm_factor`` x the median, or light between 1.5 and 3 FWHM
   from the centre above 10 % of the peak: a small Gaussian fitted to the top of a galaxy
   core); unresolved pairs (roundness below ``min_roundness_ratio`` x the median);
   detections with a flux SNR below ``threshold``.

For one-shot-colour (Bayer) frames :func:`detect_frame` detects on the 2x2-mean luminance
(:func:`cfa_luminance`) and fits each star on the raw mosaic with one amplitude and one
background per colour channel, so the centroids are in mosaic pixels and do not depend on
the star's colour.

Everything heavy is numba (``nogil``) or OpenCV, so frames can be detected in parallel
threads.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from scipy.ndimage import minimum_filter
from scipy.spatial import cKDTree

from deepsky.detect import _psf
from deepsky.detect._validate import as_image, as_mask, in_range, positive
from deepsky.detect.background import Background, estimate_background
from deepsky.errors import ConfigError, InputError
from deepsky.medians import all_finite, median
from deepsky.types import BAYER_PATTERNS, StarList

__all__ = ["find_stars", "cfa_luminance", "detect_frame"]

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548
_BOX2_VAR = 0.25  # variance per axis added by the 2x2 box of cfa_luminance
_PIXEL_VAR = 1.0 / 12.0  # variance per axis of a square pixel's response
# largest |median light between 1.5 and 3 FWHM| / amplitude of a star (Moffat wings: ~0.02)
_MAX_WING = 0.1
# SNR from which a star's own shape is fitted (below: the frame's shape, and NaN shapes)
_FREE_SHAPE_SNR = 20.0


def cfa_luminance(mosaic: Any) -> np.ndarray:
    """Luminance of a Bayer mosaic without debayering: the mean of each 2x2 window.

    Every 2x2 window of a Bayer mosaic holds one red, two green and one blue pixel whatever
    its phase, so ``L[y, x] = mean(mosaic[y:y+2, x:x+2])`` is a colour-independent luminance
    sampled at the point ``(x + 0.5, y + 0.5)`` of the mosaic. The result has the mosaic's
    shape: its last row and column repeat the one before.

    Parameters
    ----------
    mosaic : array_like, shape (H, W)
        The raw CFA frame.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape (H, W). Coordinates measured on it are mosaic coordinates
        minus 0.5 (add 0.5 to get back to the mosaic).

    Examples
    --------
    >>> import numpy as np
    >>> cfa_luminance(np.arange(16, dtype=np.float32).reshape(4, 4))[0, 0]
    np.float32(2.5)
    """
    m = as_image(mosaic, "mosaic", min_size=2)
    lum = np.empty_like(m)
    core = 0.25 * (m[:-1, :-1] + m[:-1, 1:] + m[1:, :-1] + m[1:, 1:])
    lum[:-1, :-1] = core
    lum[-1, :-1] = core[-1]
    lum[:, -1] = lum[:, -2]
    return lum


def find_stars(
    image: Any,
    *,
    background: Background | None = None,
    mask: Any = None,
    threshold: float = 5.0,
    min_area: int = 3,
    saturation: float | None = None,
    max_stars: int = 2000,
    deblend: bool = True,
    smooth_sigma: float = 1.0,
    min_fwhm: float = 0.9,
    max_fwhm_factor: float = 3.0,
    max_sharpness: float = 0.7,
    min_roundness_ratio: float = 0.6,
    gain: float | None = None,
) -> StarList:
    """Detect stars and measure sub-pixel centroids, flux, FWHM, HFR and shape.

    Parameters
    ----------
    image : array_like, shape (H, W)
        A mono frame (raw or calibrated). For a Bayer mosaic use :func:`detect_frame`.
    background : Background, optional
        Background model of ``image``; estimated with default settings when omitted.
    mask : array_like of bool, shape (H, W), optional
        ``True`` marks pixels to exclude (no detection there, left out of the fits).
    threshold : float
        Detection threshold in units of the background noise of the smoothed image; also
        the minimum flux signal-to-noise ratio of a kept star.
    min_area : int
        Pixels of the 3x3 neighbourhood of a peak that must exceed the threshold (1-9).
    saturation : float, optional
        Pixel value at which the sensor saturates (e.g. 65535 for 16-bit data). Saturated
        pixels are left out of the fits and their stars flagged ``saturated``. ``None``: not
        known (nothing flagged).
    max_stars : int
        Keep at most this many stars, the brightest.
    deblend : bool
        Separate close pairs (each fitted with its neighbour's light subtracted). If False,
        the fainter peak of a close pair is dropped and the brighter fitted alone.
    smooth_sigma : float
        Sigma in pixels of the Gaussian detection filter.
    min_fwhm : float
        Smallest minor-axis FWHM of a star, in pixels; sharper detections are hot pixels or
        cosmic rays.
    max_fwhm_factor : float
        Largest FWHM, as a multiple of the median FWHM of the frame; broader detections are
        galaxies, nebula knots or blends.
    max_sharpness : float
        Largest ratio of the peak pixel to the sum of the 3x3 pixels around it (a lone hot
        pixel is ~1, a star of FWHM 1.5 px ~0.35).
    min_roundness_ratio : float
        Smallest roundness as a fraction of the frame's median roundness; much more
        elongated detections are unresolved pairs (whose centroid depends on the seeing).
    gain : float, optional
        Electrons per ADU; when given the SNR includes the star's photon noise, otherwise
        only the background noise.

    Returns
    -------
    StarList
        Brightest first; empty when no star is found. ``x, y`` are fitted centroids;
        ``flux`` the integral of the fitted Gaussian; ``peak`` the highest pixel above the
        background; ``background`` the local fitted sky; ``fwhm`` the geometric mean of the
        major and minor axis FWHM; ``hfr`` the half-flux radius within 3 FWHM; ``theta`` the
        major axis angle from +x towards +y, in radians. Stars fainter than SNR ~20 are
        fitted with the frame's mean shape (their own would be noise): their ``fwhm``,
        ``roundness``, ``eccentricity`` and ``theta`` are NaN.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[0:64, 0:64]
    >>> img = 100 + 1000 * np.exp(-((xx - 30.3) ** 2 + (yy - 20.7) ** 2) / (2 * 1.5 ** 2))
    >>> img = img + np.random.default_rng(0).normal(0, 3, img.shape)
    >>> stars = find_stars(img.astype(np.float32))
    >>> len(stars), round(float(stars.x[0]), 2), round(float(stars.y[0]), 2)
    (1, 30.3, 20.7)
    """
    img = as_image(image)
    m = as_mask(mask, img.shape)
    opts = _check_options(threshold=threshold, min_area=min_area, saturation=saturation,
                          max_stars=max_stars, smooth_sigma=smooth_sigma, min_fwhm=min_fwhm,
                          max_fwhm_factor=max_fwhm_factor, max_sharpness=max_sharpness,
                          min_roundness_ratio=min_roundness_ratio, gain=gain)
    if background is None:
        background = estimate_background(img, mask=m)
    elif not isinstance(background, Background) or background.shape != img.shape:
        raise InputError(None, "background must be a Background of the image's shape "
                               f"{img.shape}, got {getattr(background, 'shape', background)!r}")
    bad = _bad_pixels(img, m)
    return _detect(img, background, bad, deblend=bool(deblend), fit_img=img, fit_bad=bad,
                   chan=np.zeros(4, np.int64), nch=1, offset=0.0, **opts)


def detect_frame(
    image: Any,
    *,
    bayer: str | None = None,
    mask: Any = None,
    box: int = 64,
    **options: Any,
) -> tuple[StarList, Background]:
    """Detect the stars of one frame, mono or one-shot colour, and model its background.

    Parameters
    ----------
    image : array_like, shape (H, W)
        The frame as read (a raw Bayer mosaic when ``bayer`` is given).
    bayer : {None, 'RGGB', 'BGGR', 'GRBG', 'GBRG'}
        CFA pattern of ``image[0:2, 0:2]``. When given, stars are *detected* on
        :func:`cfa_luminance` (no debayering) and *fitted* on the raw mosaic with one
        background and one amplitude per colour channel and a common elliptical Gaussian,
        so centroids are in mosaic pixel coordinates and free of the colour-dependent
        bias a luminance image has for undersampled stars; FWHM is the mosaic's. ``flux``
        and ``peak`` are in mosaic ADU (the channel mean); SNR uses twice the luminance
        noise as the pixel noise; HFR and sharpness are measured on the luminance (HFR
        corrected for its 2x2 box).
    mask : array_like of bool, shape (H, W), optional
        ``True`` marks pixels to exclude.
    box : int
        Background mesh box size in pixels.
    **options
        Keyword options of :func:`find_stars` (``threshold``, ``saturation``, ...).

    Returns
    -------
    (StarList, Background)
        The stars (mosaic coordinates for CFA) and the background of the image detection
        ran on (for CFA: the luminance, whose noise is about half the raw pixel noise).
    """
    if bayer is None:
        img = as_image(image)
        bkg = estimate_background(img, mask=mask, box=box)
        return find_stars(img, background=bkg, mask=mask, **options), bkg
    if bayer not in BAYER_PATTERNS:
        raise ConfigError(f"bayer must be one of {', '.join(BAYER_PATTERNS)} or None, "
                          f"got {bayer!r}")
    unknown = set(options) - _FIND_OPTIONS
    if unknown:
        raise ConfigError(f"unknown detection option(s): {', '.join(sorted(unknown))}")
    mosaic = as_image(image)
    m = as_mask(mask, mosaic.shape)
    lum = cfa_luminance(mosaic)
    lmask = None if m is None else _box2_any(m)
    bkg = estimate_background(lum, mask=lmask, box=box)
    deblend = bool(options.pop("deblend", True))
    opts = _check_options(**{**_FIND_DEFAULTS, **options})
    chan = np.array(["RGB".index(c) for c in bayer], np.int64)
    stars = _detect(lum, bkg, _bad_pixels(lum, lmask), deblend=deblend,
                    fit_img=mosaic, fit_bad=_bad_pixels(mosaic, m),
                    chan=chan, nch=3, offset=0.5, **opts)
    return stars, bkg


# ----------------------------------------------------------------------------------------------
# internals
# ----------------------------------------------------------------------------------------------
_FIND_DEFAULTS: dict[str, Any] = dict(
    threshold=5.0, min_area=3, saturation=None, max_stars=2000, smooth_sigma=1.0,
    min_fwhm=0.9, max_fwhm_factor=3.0, max_sharpness=0.7, min_roundness_ratio=0.6, gain=None,
)
_FIND_OPTIONS = set(_FIND_DEFAULTS) | {"deblend"}


def _check_options(*, threshold, min_area, saturation, max_stars, smooth_sigma, min_fwhm,
                   max_fwhm_factor, max_sharpness, min_roundness_ratio, gain) -> dict[str, Any]:
    opts = dict(
        threshold=positive("threshold", threshold),
        min_area=positive("min_area", min_area, integer=True),
        saturation=None if saturation is None else positive("saturation", saturation),
        max_stars=positive("max_stars", max_stars, integer=True),
        smooth_sigma=positive("smooth_sigma", smooth_sigma),
        min_fwhm=positive("min_fwhm", min_fwhm, allow_zero=True),
        max_fwhm_factor=positive("max_fwhm_factor", max_fwhm_factor),
        max_sharpness=positive("max_sharpness", max_sharpness),
        min_roundness_ratio=in_range("min_roundness_ratio", min_roundness_ratio, 0.0, 1.0),
        gain=None if gain is None else positive("gain", gain),
    )
    if opts["min_area"] > 9:
        raise ConfigError(f"min_area must be between 1 and 9, got {min_area!r}")
    if opts["max_fwhm_factor"] <= 1.0:
        raise ConfigError(f"max_fwhm_factor must be > 1, got {max_fwhm_factor!r}")
    return opts


def _box2_any(m: np.ndarray) -> np.ndarray:
    """``True`` where any pixel of the 2x2 window ``[y:y+2, x:x+2]`` is True (edge-padded)."""
    out = np.zeros_like(m, dtype=bool)
    core = m[:-1, :-1] | m[:-1, 1:] | m[1:, :-1] | m[1:, 1:]
    out[:-1, :-1] = core
    out[-1, :-1] = core[-1]
    out[:, -1] = out[:, -2]
    return out


def _bad_pixels(img: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """uint8 flags, 1 where excluded (mask or non-finite); None when nothing is."""
    if mask is None and all_finite(img):
        return None
    excl = ~np.isfinite(img) if mask is None else (mask | ~np.isfinite(img))
    return excl.astype(np.uint8) if excl.any() else None


def _channel_ratios(mosaic: np.ndarray, lum: np.ndarray, chan: np.ndarray) -> np.ndarray:
    """Sky level of each CFA position over the luminance's (medians of a subsample): the
    four values by ``2 (y % 2) + x % 2``."""
    ref = float(np.median(lum[::8, ::8]))
    out = np.ones(4)
    if not np.isfinite(ref) or ref <= 0:
        return out
    for k in range(4):
        dy, dx = divmod(k, 2)
        v = float(np.median(mosaic[dy::16, dx::16]))
        if np.isfinite(v) and v > 0:
            out[k] = v / ref
    return out


def _nearest_box(n: int, centers: np.ndarray) -> np.ndarray:
    """Index of the mesh box centre nearest to each pixel along one axis."""
    if len(centers) == 1:
        return np.zeros(n, np.int64)
    edges = 0.5 * (centers[1:] + centers[:-1])
    return np.searchsorted(edges, np.arange(n, dtype=np.float64)).astype(np.int64)


def _smooth(img: np.ndarray, bkg: Background, bad: np.ndarray | None, sigma: float
            ) -> tuple[np.ndarray, float]:
    """Gaussian-smoothed image and the factor by which it scales white noise."""
    src = img
    if bad is not None and (bad & 1).any():
        src = img.copy()
        excl = (bad & 1).astype(bool)
        src[excl] = bkg.level()[excl]
    ksize = int(2 * math.ceil(3 * sigma) + 1)
    k1 = cv2.getGaussianKernel(ksize, sigma, cv2.CV_64F).ravel()
    sm = cv2.sepFilter2D(src, cv2.CV_32F, k1, k1, borderType=cv2.BORDER_REFLECT)
    white = float(np.sum(k1 * k1))  # noise factor for uncorrelated pixels
    # measured factor: correlated noise (a CFA luminance, resampled or debayered data)
    # averages down less than white noise under the filter
    measured = _robust_noise(sm) / max(_robust_noise(src), 1e-30)
    factor = float(np.clip(measured, white, 1.0)) if np.isfinite(measured) else white
    return sm, factor


def _robust_noise(a: np.ndarray, lag: int = 16, step: int = 8) -> float:
    """Pixel noise from the MAD of differences of pixels ``lag`` columns apart, on a grid of
    rows and columns ``step`` apart (background gradients and stars hardly matter)."""
    sub = a[::step, :]
    d = (sub[:, lag::step] - sub[:, : sub.shape[1] - lag: step][:, : sub[:, lag::step].shape[1]])
    d = d[np.isfinite(d)]
    if d.size < 16:
        return float("nan")
    return float(1.4826 * median(np.abs(d - median(d))) / math.sqrt(2.0))


def _detect(img: np.ndarray, bkg: Background, bad: np.ndarray | None, *, deblend: bool,
            fit_img: np.ndarray, fit_bad: np.ndarray | None, chan: np.ndarray, nch: int,
            offset: float, threshold: float, min_area: int, saturation: float | None,
            max_stars: int, smooth_sigma: float, min_fwhm: float, max_fwhm_factor: float,
            max_sharpness: float, min_roundness_ratio: float, gain: float | None) -> StarList:
    """Detect on ``img`` (mono, or the CFA luminance) and fit on ``fit_img`` (the same
    image, or the mosaic whose pixel (x, y) sees channel ``chan[2 (y % 2) + x % 2]``);
    ``offset`` converts ``img`` coordinates to ``fit_img`` ones (0.5 for the luminance)."""
    h, w = img.shape
    cfa = nch > 1
    sm, noise_factor = _smooth(img, bkg, bad, smooth_sigma)
    has_bad = bad is not None
    bad_arr = bad if has_bad else np.zeros((1, 1), np.uint8)
    # local maxima (3x3) above a coarse lower bound of the threshold (the lowest threshold
    # of the neighbouring mesh boxes), then the exact test on those few
    step = threshold * noise_factor * bkg.mesh_rms
    floor = minimum_filter(bkg.mesh_level + step, size=3, mode="nearest") - 0.2 * step.min()
    row_box = _nearest_box(h, bkg.y_centers)
    col_box = _nearest_box(w, bkg.x_centers)
    cand = _psf.local_maxima(sm, floor.astype(np.float32), row_box, col_box, 2)
    if len(cand) == 0:
        return StarList.empty()
    py, px = np.divmod(cand, w)
    level = bkg.level_at(px, py)
    rms = np.maximum(bkg.rms_at(px, py), 1e-12)
    keep = _psf.select_peaks(sm, px, py, level, rms, threshold * noise_factor, 2, min_area,
                             bad_arr, has_bad)
    px, py, level = px[keep], py[keep], level[keep]
    # lone hot pixels and cosmic-ray hits: too sharp to be stars (not worth a fit). On a CFA
    # luminance a hot pixel is a 2x2 block, so look at the mosaic, each pixel against its
    # own channel's background (the luminance level times the channel's sky ratio), with a
    # looser limit (a red star's green and blue neighbours are faint)
    if cfa:
        ratio = _channel_ratios(fit_img, img, chan)
        sharp = _psf.mosaic_sharpness(fit_img, px, py, level, ratio)
        keep = ~(sharp > max(max_sharpness, 0.8))
    else:
        sharp = _psf.peak_sharpness(img, px, py, level)
        keep = ~(sharp > max_sharpness)
    px, py, level = px[keep], py[keep], level[keep]
    height = sm[py, px] - level
    if len(px) == 0:
        return StarList.empty()
    order = np.argsort(-height, kind="stable")[: max(2 * max_stars, 100)]
    px, py, height, level = px[order], py[order], height[order], level[order]
    xs, ys = _refine_peak(sm, px, py)
    rms = np.maximum(bkg.rms_at(xs, ys), 1e-12)

    # first look: FWHM of the brightest candidates (on the detection image)
    sat_level = np.inf if saturation is None else float(saturation)
    fwhm0, cov0 = _fwhm_guess(img, bad_arr, has_bad, sat_level if not cfa else np.inf, xs,
                              ys, height, level)
    rad = int(np.clip(math.ceil(1.5 * fwhm0), 3, 25))

    # merge peaks of one star; note close pairs
    keep = _merge_peaks(sm, xs, ys, height, level, rms * noise_factor, fwhm0, deblend)
    xs, ys, height, level, rms = xs[keep], ys[keep], height[keep], level[keep], rms[keep]
    n = len(xs)
    npar = _psf.BG0 + 2 * nch
    a0 = _psf.amp0(nch)
    s0 = fwhm0 / _FWHM_PER_SIGMA
    cxx, cyy, cxy = (s0 ** 2, s0 ** 2, 0.0) if cov0 is None else cov0
    if cfa:  # the guess was measured on the luminance, blurred by its 2x2 box
        cxx, cyy = cxx - _BOX2_VAR, cyy - _BOX2_VAR
    det0 = cxx * cyy - cxy ** 2
    if not (cxx > 0 and cyy > 0 and det0 > 0):
        cxx, cyy, cxy, det0 = s0 ** 2, s0 ** 2, 0.0, s0 ** 4
    params = np.zeros((n, npar))
    params[:, _psf.X] = xs + offset
    params[:, _psf.Y] = ys + offset
    params[:, _psf.A] = cyy / det0
    params[:, _psf.B] = -cxy / det0
    params[:, _psf.C] = cxx / det0
    params[:, _psf.BG0: a0] = level[:, None]
    params[:, a0:] = (np.maximum(height, 1e-6) * (1.0 + smooth_sigma ** 2 / s0 ** 2))[:, None]
    radii = np.full(n, rad, np.int64)
    # faint stars keep the frame's shape (position, background and amplitude fitted): their
    # own shape would be noise, and the fit is ~3x cheaper
    free = height / (rms * noise_factor) >= _FREE_SHAPE_SNR
    status = np.zeros(n, np.int64)
    no_ptr = np.zeros(n + 1, np.int64)
    no_idx = np.zeros(0, np.int64)
    max_shift = max(1.5, 0.75 * fwhm0)
    has_fbad = fit_bad is not None
    fbad = fit_bad if has_fbad else np.zeros((1, 1), np.uint8)
    _psf.fit_pass(fit_img, chan, nch, fbad, has_fbad, sat_level, params, params.copy(), radii,
                  np.arange(n), no_ptr, no_idx, status, 15, max_shift, free)
    # a faint-looking peak that turns out bright (a wide star) gets its own shape after all,
    # so that every star of flux SNR >= _FREE_SHAPE_SNR has a measured shape
    snr0 = _flux_snr(params, a0, chan, nch, rms * (2.0 if cfa else 1.0), gain)
    late = np.flatnonzero(~free & (status == _psf.FIT_OK) & (snr0 >= _FREE_SHAPE_SNR))
    if len(late):
        free[late] = True
        _psf.fit_pass(fit_img, chan, nch, fbad, has_fbad, sat_level, params, params.copy(),
                      radii, late, no_ptr, no_idx, status, 15, max_shift, free)
    good = (status == _psf.FIT_OK) & _shape_ok(params, min_fwhm)
    idx = np.flatnonzero(good)
    params, radii, rms, level, free = params[idx], radii[idx], rms[idx], level[idx], free[idx]
    nbr_ptr, nbr_idx = no_ptr[: len(idx) + 1], no_idx
    if deblend and len(idx) > 1:
        nbr_ptr, nbr_idx = _neighbours(params, rad + 2.0 * fwhm0)
        crowded = np.flatnonzero(np.diff(nbr_ptr) > 0)
        if len(crowded):
            status = np.zeros(len(params), np.int64)
            for _ in range(2):
                prev = params.copy()
                _psf.fit_pass(fit_img, chan, nch, fbad, has_fbad, sat_level, params, prev,
                              radii, crowded, nbr_ptr, nbr_idx, status, 15, max_shift, free)
            ok = (status == _psf.FIT_OK) & _shape_ok(params, min_fwhm)
            if not ok.all():
                sel = np.flatnonzero(ok)
                params, radii, rms, level = params[sel], radii[sel], rms[sel], level[sel]
                free = free[sel]
                nbr_ptr, nbr_idx = _neighbours(params, rad + 2.0 * fwhm0)
    if len(params) == 0:
        return StarList.empty()

    # measures (shapes only where fitted)
    fwhm, fwhm_minor, roundness, theta = _shape(params)
    fwhm_all = fwhm.copy()  # the frame's shape for the fixed ones: aperture sizes
    for a in (fwhm, fwhm_minor, roundness, theta):
        a[~free] = np.nan
    cw = np.bincount(chan, minlength=nch) / 4.0
    amp = params[:, a0:] @ cw  # mean amplitude over the CFA cell (the luminance's)
    # a mosaic pixel is ~2x noisier than a 2x2 mean
    flux, snr = _flux_snr(params, a0, chan, nch, rms * (2.0 if cfa else 1.0), gain,
                          with_flux=True)
    peak, sat = _psf.peak_and_saturation(fit_img, chan, nch, sat_level, params)
    # the tests that need no measurement first: only the stars they keep are measured
    usable = ~sat & np.isfinite(fwhm) & (snr >= threshold)
    if not usable.any():
        usable = np.isfinite(fwhm)
    med_fwhm = float(np.median(fwhm[usable])) if usable.any() else np.inf
    med_round = float(np.median(roundness[usable])) if usable.any() else 0.0
    good = (
        np.isfinite(params).all(axis=1)
        & (snr >= threshold)
        & ~(fwhm_minor < min_fwhm)  # NaN (shape not fitted) passes the shape tests
        & ~(fwhm > max_fwhm_factor * med_fwhm)
        & ~(roundness < min_roundness_ratio * med_round)
        & (params[:, _psf.X] >= -0.5) & (params[:, _psf.X] <= fit_img.shape[1] - 0.5)
        & (params[:, _psf.Y] >= -0.5) & (params[:, _psf.Y] <= fit_img.shape[0] - 0.5)
    )
    # sharpness and HFR on the detection image, neighbours' models adapted to it
    box_var = _BOX2_VAR if cfa else 0.0
    na, nb, nc, namp = _models_on(params[:, _psf.A], params[:, _psf.B], params[:, _psf.C],
                                  amp, box_var)
    hfr_rad = np.clip(3.0 * fwhm_all, 3.0, 30.0)
    mx, my = params[:, _psf.X] - offset, params[:, _psf.Y] - offset
    bg = level if cfa else params[:, _psf.BG0].copy()
    # the wing test (extended objects) matters for bright detections only
    # between 1.5 and 3 FWHM of the star's own (elliptical) profile
    s_major = np.sqrt(np.maximum(_major_var(na, nb, nc), 0.0))
    sharp, hfr, wing = _psf.measure(img, mx, my, bg, nbr_ptr, nbr_idx, namp, na, nb, nc,
                                    hfr_rad, 1.5 * _FWHM_PER_SIGMA, 3.0 * _FWHM_PER_SIGMA,
                                    3.0 * _FWHM_PER_SIGMA * s_major + 1.0, snr > 20.0, good)
    if cfa:
        hfr = np.sqrt(np.maximum(hfr ** 2 - 2.0 * math.log(2.0) * box_var, 1e-6))
    good &= (
        ~(np.abs(wing) > _MAX_WING)
        & ~(sharp > max_sharpness)
        & ~((hfr < 0.3 * fwhm) & (snr > 100.0))  # light in 1-2 pixels: a cosmic ray
    )
    sel = np.flatnonzero(good)
    sel = sel[np.argsort(-flux[sel], kind="stable")][:max_stars]
    p = params[sel]
    return StarList(
        x=p[:, _psf.X], y=p[:, _psf.Y], flux=flux[sel], peak=peak[sel],
        background=p[:, _psf.BG0: a0] @ cw, fwhm=fwhm[sel], hfr=hfr[sel],
        roundness=roundness[sel],
        eccentricity=np.sqrt(np.clip(1.0 - roundness[sel] ** 2, 0.0, 1.0)),
        theta=theta[sel], snr=snr[sel], saturated=sat[sel],
    )


def _flux_snr(params, a0, chan, nch, pix_rms, gain, with_flux=False):
    """Flux (integral of the fitted Gaussian, mean amplitude over the CFA cell) and its SNR:
    the background noise over the effective area 4 pi sigma_x sigma_y of a PSF fit, plus
    the star's photon noise when ``gain`` is known."""
    cw = np.bincount(chan, minlength=nch) / 4.0
    amp = params[:, a0:] @ cw
    det_a = params[:, _psf.A] * params[:, _psf.C] - params[:, _psf.B] ** 2
    sqrt_det_cov = 1.0 / np.sqrt(det_a)
    flux = 2.0 * math.pi * amp * sqrt_det_cov
    var = 4.0 * math.pi * sqrt_det_cov * pix_rms ** 2 + (np.maximum(flux, 0) / gain if gain
                                                          else 0.0)
    snr = flux / np.sqrt(var)
    return (flux, snr) if with_flux else snr


def _major_var(a, b, c):
    """Variance along the major axis of Gaussians of inverse covariance [[a, b], [b, c]]."""
    det = a * c - b * b
    cxx, cyy, cxy = c / det, a / det, -b / det
    return 0.5 * (cxx + cyy) + np.sqrt(0.25 * (cxx - cyy) ** 2 + cxy ** 2)


def _models_on(a, b, c, amp, add_var):
    """Gaussian models of the stars on an image blurred by ``add_var`` (per axis), flux kept."""
    if add_var == 0.0:
        return a, b, c, amp
    det = a * c - b * b
    cxx, cyy, cxy = c / det + add_var, a / det + add_var, -b / det
    det_cov = cxx * cyy - cxy ** 2
    na, nb, nc = cyy / det_cov, -cxy / det_cov, cxx / det_cov
    namp = amp * np.sqrt((1.0 / det) / det_cov)
    return na, nb, nc, namp


def _refine_peak(sm: np.ndarray, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel peak of the smoothed image by a parabola through 3 points per axis."""
    c = sm[py, px].astype(np.float64)
    def off(a, b):
        den = a - 2 * c + b
        with np.errstate(divide="ignore", invalid="ignore"):
            o = np.where(den < 0, 0.5 * (a - b) / den, 0.0)
        return np.clip(o, -0.5, 0.5)
    dx = off(sm[py, px - 1].astype(np.float64), sm[py, px + 1].astype(np.float64))
    dy = off(sm[py - 1, px].astype(np.float64), sm[py + 1, px].astype(np.float64))
    return px + dx, py + dy


def _fwhm_guess(img, bad, has_bad, sat_level, xs, ys, height, level):
    """Median FWHM and covariance ``(cxx, cyy, cxy)`` of Gaussian fits to the brightest
    ~150 candidates (2.5 px and round when none fit): the size of the stamps, and the
    starting shape of every fit, so that trailed frames converge as fast as round ones.

    Fits on a satellite trail are left out (:func:`_on_a_trail`): a bright trail puts dozens
    of peaks along its ridge among the brightest candidates, and they must not set the star
    size; the elongated stars of a trailed frame are kept."""
    fwhm = 2.5
    cov = None
    chan = np.zeros(4, np.int64)
    for _ in range(2):
        n = min(len(xs), 150)
        s0 = fwhm / _FWHM_PER_SIGMA
        rad = int(np.clip(math.ceil(1.5 * fwhm), 4, 25))
        params = np.zeros((n, _psf.BG0 + 2))
        params[:, _psf.X] = xs[:n]
        params[:, _psf.Y] = ys[:n]
        params[:, _psf.A] = 1.0 / s0 ** 2
        params[:, _psf.C] = 1.0 / s0 ** 2
        params[:, _psf.BG0] = level[:n]
        params[:, _psf.BG0 + 1] = np.maximum(height[:n], 1e-6) * 1.5
        status = np.zeros(n, np.int64)
        _psf.fit_pass(img, chan, 1, bad, has_bad, sat_level, params, params.copy(),
                      np.full(n, rad, np.int64), np.arange(n), np.zeros(n + 1, np.int64),
                      np.zeros(0, np.int64), status, 20, 2.0, np.ones(n, np.bool_))
        ok = status == _psf.FIT_OK
        if ok.sum() < 3:
            return fwhm, cov
        f, fmin, rnd, theta = _shape(params[ok])
        good = (fmin > 0.7) & ~_on_a_trail(params[ok], rnd, theta)
        if good.sum() < 3:
            return fwhm, cov
        p = params[ok][good]
        det = p[:, _psf.A] * p[:, _psf.C] - p[:, _psf.B] ** 2
        cov = (float(np.median(p[:, _psf.C] / det)), float(np.median(p[:, _psf.A] / det)),
               float(np.median(-p[:, _psf.B] / det)))
        new = float(np.clip(np.median(f[good]), 1.0, 30.0))
        if abs(new - fwhm) < 0.25 * fwhm:
            return new, cov
        fwhm = new
    return fwhm, cov


def _on_a_trail(params: np.ndarray, roundness: np.ndarray, theta: np.ndarray,
                width: float = 3.0, length: float = 200.0, min_count: int = 4) -> np.ndarray:
    """Elongated fits lined up along their own major axis with ``min_count`` others (within
    ``width`` px of the axis and ``length`` px along it): peaks on a satellite or airplane
    trail. The elongated stars of a trailed frame are scattered, not lined up."""
    el = np.flatnonzero(roundness < 0.6)
    out = np.zeros(len(params), bool)
    if len(el) < min_count + 1:
        return out
    xy = params[el][:, [_psf.X, _psf.Y]]
    d = xy[None, :, :] - xy[:, None, :]  # (i, j, 2): from i to j
    ux, uy = np.cos(theta[el]), np.sin(theta[el])
    along = d[..., 0] * ux[:, None] + d[..., 1] * uy[:, None]
    perp = np.abs(d[..., 1] * ux[:, None] - d[..., 0] * uy[:, None])
    count = ((perp < width) & (np.abs(along) < length)).sum(axis=1) - 1
    out[el[count >= min_count]] = True
    return out


def _merge_peaks(sm, xs, ys, height, level, noise, fwhm, deblend) -> np.ndarray:
    """Indices of the peaks to keep: a fainter peak near a brighter one is kept only when
    the smoothed profile dips significantly between them (and ``deblend`` is on)."""
    n = len(xs)
    keep = np.ones(n, bool)
    if n < 2:
        return np.flatnonzero(keep)
    tree = cKDTree(np.stack([xs, ys], axis=1))
    pairs = tree.query_pairs(max(2.0 * fwhm, 3.0), output_type="ndarray")
    if len(pairs) == 0:
        return np.flatnonzero(keep)
    # candidates are sorted brightest first: pairs[:, 0] < pairs[:, 1] is the brighter one
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    i, j = pairs[:, 0], pairs[:, 1]
    t = np.linspace(0.0, 1.0, 9)[1:-1]
    sx = xs[i][:, None] + t[None, :] * (xs[j] - xs[i])[:, None]
    sy = ys[i][:, None] + t[None, :] * (ys[j] - ys[i])[:, None]
    prof = cv2.remap(sm, sx.astype(np.float32), sy.astype(np.float32), cv2.INTER_LINEAR)
    dip = height[j] - (prof.min(axis=1) - level[j])
    separate = dip > 3.0 * noise[j]
    for a, b, sep_ok in zip(i, j, separate):
        if not keep[a]:
            continue
        if not sep_ok or not deblend:
            keep[b] = False
    return np.flatnonzero(keep)


def _neighbours(params: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists of the stars within ``radius`` of each star."""
    n = len(params)
    tree = cKDTree(params[:, [_psf.X, _psf.Y]])
    pairs = tree.query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int64)
    a = np.concatenate([pairs[:, 0], pairs[:, 1]])
    b = np.concatenate([pairs[:, 1], pairs[:, 0]])
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    ptr = np.zeros(n + 1, np.int64)
    np.add.at(ptr, a + 1, 1)
    return np.cumsum(ptr), b.astype(np.int64)


def _shape(params: np.ndarray):
    """FWHM (geometric mean of the axes), minor-axis FWHM, roundness and major-axis angle of
    the fitted Gaussians, corrected for the pixel (a point-sampled fit of a pixel-integrated
    profile is wider by the pixel's variance 1/12 per axis)."""
    a, b, c = params[:, _psf.A], params[:, _psf.B], params[:, _psf.C]
    det = a * c - b * b
    with np.errstate(divide="ignore", invalid="ignore"):
        cxx, cyy, cxy = c / det - _PIXEL_VAR, a / det - _PIXEL_VAR, -b / det
    tr = 0.5 * (cxx + cyy)
    disc = np.sqrt(np.maximum(0.25 * (cxx - cyy) ** 2 + cxy ** 2, 0.0))
    lmaj = np.maximum(tr + disc, 1e-12)
    lmin = np.maximum(tr - disc, 1e-12)
    smaj, smin = np.sqrt(lmaj), np.sqrt(lmin)
    fwhm = _FWHM_PER_SIGMA * np.sqrt(smaj * smin)
    theta = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
    return fwhm, _FWHM_PER_SIGMA * smin, smin / smaj, theta


def _shape_ok(params: np.ndarray, min_fwhm: float) -> np.ndarray:
    fwhm, fmin, _, _ = _shape(params)
    return np.isfinite(fwhm) & (fmin >= 0.5 * min_fwhm) & (fwhm < 100.0)
