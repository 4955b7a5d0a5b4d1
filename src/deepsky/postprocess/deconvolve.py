"""Deconvolution: Richardson-Lucy with the image's own PSF, deringed and masked.

PSF
    :func:`measure_psf` detects stars on the luminance, keeps isolated, unsaturated ones of
    typical width with a good signal, fits each with an elliptical Moffat profile plus a
    constant (``(1 + q(dx, dy)) ** -beta``, ``q`` a positive quadratic form: widths, angle),
    and takes the median of the shape parameters over the stars. :func:`moffat_kernel`
    renders that profile at the pixel centres (as it was fitted) as a normalised kernel.

Richardson-Lucy
    With the sky as a known background ``b`` (:func:`richardson_lucy`):
    ``u <- u * K^T (d / (K u + b))``, ``u`` the light above the sky, FFT convolutions on the
    image padded by reflection. Keeping the sky out of ``u`` is what stops the classic dark
    rings around bright stars on a sky background.

Protections (:func:`deconvolve`)
    * Deconvolution only acts where there is signal: the result is blended with the
      original by a weight rising from 0 where the (slightly smoothed) image is 3 sigma
      above the sky to 1 at 20 sigma, spread over three FWHM around it (so that a star is
      deconvolved whole, wings included) and feathered; the background noise is not
      amplified. Saturated
      regions (and a margin around them) keep the original, since their flat tops are not
      the PSF and would ring.
    * The known background is the sky less 2 sigma (so the sky's noise, which cannot be
      negative light, is not rectified into a raised sky round the stars), and the light
      above the sky is rescaled afterwards so that, smoothed over 3 FWHM, it equals the
      original's: deconvolution moves light, it does not make it.
    * Deringing: no pixel may end darker than both its original value and the local
      background (:func:`local_floor`: the sky model, or a galaxy's light under a star); a
      dark ring around a bright star, which is what Richardson-Lucy produces when the PSF
      or the noise does not fit, is lifted back to the background.
    * Colour images: the luminance is deconvolved and each channel receives the change of
      the luminance in proportion to its share of the signal above the sky, so star colours
      are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import fft as sfft
from scipy.optimize import least_squares

from deepsky.errors import ProcessingError
from deepsky.parallel import cpu_count
from deepsky.postprocess._common import (
    as_image, check_number, clipped_stats, dilate, disk, gaussian, luminance, sample,
    sky_model, step, white_level,
)

__all__ = ["PSFModel", "moffat_kernel", "measure_psf", "richardson_lucy", "deconvolve",
           "DeconvolutionResult"]


@dataclass(frozen=True, eq=False)
class PSFModel:
    """An elliptical Moffat PSF: FWHM along the major and minor axes (px), ``beta``, the
    major-axis angle (radians from +x towards +y), the number of stars it was measured on,
    and its normalised ``kernel``."""

    fwhm_major: float
    fwhm_minor: float
    beta: float
    angle: float
    n_stars: int
    kernel: np.ndarray

    @property
    def fwhm(self) -> float:
        """Geometric mean FWHM (px)."""
        return math.sqrt(self.fwhm_major * self.fwhm_minor)


@dataclass(frozen=True, eq=False)
class DeconvolutionResult:
    """The deconvolved image, the PSF used and the blend weight (0..1, 1 = deconvolved)."""

    data: np.ndarray
    psf: PSFModel
    weight: np.ndarray
    history: tuple[str, ...]


def _alpha(fwhm: float, beta: float) -> float:
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_kernel(fwhm: float, *, beta: float = 3.0, elongation: float = 1.0,
                  angle: float = 0.0, radius: int | None = None, oversample: int = 1
                  ) -> np.ndarray:
    """A normalised elliptical Moffat kernel ``(2r+1, 2r+1)``.

    ``fwhm`` is the minor-axis FWHM (px), ``elongation`` major/minor, ``angle`` the major
    axis (radians); ``radius`` defaults to where the profile falls below 1e-4 of its peak
    (at most 8 FWHM). ``oversample = 1`` samples the profile at pixel centres, which is
    right for a FWHM measured on the image (it already includes the pixel's width); larger
    values integrate it over the pixel area.
    """
    fwhm = check_number("fwhm", fwhm, 0.3, 100.0)
    beta = check_number("beta", beta, 1.01, 20.0)
    elongation = check_number("elongation", elongation, 1.0, 5.0)
    a_min = _alpha(fwhm, beta)
    a_maj = a_min * elongation
    if radius is None:
        r_tail = a_maj * math.sqrt(1e-4 ** (-1.0 / beta) - 1.0)
        radius = int(math.ceil(min(r_tail, 8.0 * fwhm * elongation))) + 1
    n = 2 * radius + 1
    s = oversample
    off = (np.arange(n * s) - (n * s - 1) / 2.0) / s
    yy, xx = np.meshgrid(off, off, indexing="ij")
    c, si = math.cos(angle), math.sin(angle)
    u = xx * c + yy * si
    v = -xx * si + yy * c
    prof = (1.0 + (u / a_maj) ** 2 + (v / a_min) ** 2) ** (-beta)
    k = prof.reshape(n, s, n, s).mean(axis=(1, 3))
    return (k / k.sum()).astype(np.float32)


def _moffat_residual(p: np.ndarray, xx: np.ndarray, yy: np.ndarray, d: np.ndarray
                     ) -> np.ndarray:
    amp, x0, y0, bg, lax, lay, th, lbeta = p
    ax, ay = math.exp(lax), math.exp(lay)
    beta = 1.0 + math.exp(lbeta)
    c, s = math.cos(th), math.sin(th)
    dx, dy = xx - x0, yy - y0
    u = dx * c + dy * s
    v = -dx * s + dy * c
    return (amp * (1.0 + (u / ax) ** 2 + (v / ay) ** 2) ** (-beta) + bg - d).ravel()


def measure_psf(data: Any, *, max_stars: int = 40, threshold: float = 20.0) -> PSFModel:
    """Measure the PSF on the image's own stars (see the module notes).

    Raises :class:`ProcessingError` when fewer than 3 suitable stars are found.
    """
    from deepsky.detect.stars import find_stars

    img = as_image(data)
    max_stars = check_number("max_stars", max_stars, 3, 1000, integer=True)
    lum = luminance(img)
    top = white_level(lum)
    stars = find_stars(lum, threshold=threshold, saturation=0.8 * top, max_stars=2000)
    if len(stars) < 3:
        raise ProcessingError(f"only {len(stars)} stars were detected; the PSF cannot be "
                              "measured (give deconvolution.psf_fwhm instead)")
    fw = stars.fwhm
    med = float(np.nanmedian(fw))
    r = int(math.ceil(max(4.0, 3.0 * med)))
    h, w = lum.shape
    ok = (~stars.saturated & np.isfinite(fw) & (fw > 0.7 * med) & (fw < 1.4 * med)
          & (stars.x > r + 1) & (stars.x < w - r - 2) & (stars.y > r + 1)
          & (stars.y < h - r - 2) & (stars.peak + stars.background < 0.8 * top))
    # Isolated: no other detection brighter than a tenth of it within 2.5 r.
    xy = stars.xy
    for i in np.flatnonzero(ok):
        d = np.hypot(xy[:, 0] - xy[i, 0], xy[:, 1] - xy[i, 1])
        near = (d > 0) & (d < 2.5 * r) & (stars.flux > 0.1 * stars.flux[i])
        if near.any():
            ok[i] = False
    cand = np.flatnonzero(ok)
    cand = cand[np.argsort(-stars.flux[cand])][:max_stars]
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    fits = []
    for i in cand:
        ix, iy = int(round(stars.x[i])), int(round(stars.y[i]))
        cut = lum[iy - r:iy + r + 1, ix - r:ix + r + 1].astype(np.float64)
        bg0 = float(np.median(np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]])))
        amp0 = float(cut[r, r] - bg0)
        if not amp0 > 0:
            continue
        a0 = math.log(_alpha(max(med, 1.0), 3.0))
        p0 = np.array([amp0, stars.x[i] - ix, stars.y[i] - iy, bg0, a0, a0, 0.0,
                       math.log(2.0)])
        try:
            res = least_squares(_moffat_residual, p0, args=(xx, yy, cut), method="lm",
                                max_nfev=400)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if not res.success:
            continue
        amp, x0, y0, bg, lax, lay, th, lbeta = res.x
        ax, ay = math.exp(lax), math.exp(lay)
        if not (amp > 0 and abs(x0) < 2 and abs(y0) < 2 and 0.2 < ax < 5 * r
                and 0.2 < ay < 5 * r):
            continue
        beta = 1.0 + math.exp(lbeta)
        if not 1.1 < beta < 20:
            continue
        if ay > ax:
            ax, ay, th = ay, ax, th + math.pi / 2
        th = math.atan2(math.sin(2 * th), math.cos(2 * th)) / 2.0
        fits.append((ax, ay, th, beta))
    if len(fits) < 3:
        raise ProcessingError(f"only {len(fits)} isolated, unsaturated stars could be fitted; "
                              "the PSF cannot be measured (give deconvolution.psf_fwhm "
                              "instead)")
    f = np.array(fits)
    beta = float(np.median(f[:, 3]))
    ax, ay = float(np.median(f[:, 0])), float(np.median(f[:, 1]))
    # Circular mean of the doubled angle (axes have no direction).
    th = 0.5 * math.atan2(float(np.median(np.sin(2 * f[:, 2]))),
                          float(np.median(np.cos(2 * f[:, 2]))))
    k = math.sqrt(2.0 ** (1.0 / beta) - 1.0) * 2.0
    fmaj, fmin = ax * k, ay * k
    kernel = moffat_kernel(fmin, beta=beta, elongation=max(fmaj / fmin, 1.0), angle=th)
    return PSFModel(fwhm_major=fmaj, fwhm_minor=fmin, beta=beta, angle=th,
                    n_stars=len(fits), kernel=kernel)


def richardson_lucy(image: Any, psf: Any, *, iterations: int = 20, background: Any = None
                    ) -> np.ndarray:
    """Richardson-Lucy deconvolution of a 2-D image by a normalised kernel.

    With ``background`` (a level or a map, the sky under the objects) the iteration is the
    Poisson EM algorithm with a known background, ``u <- u * K^T (d / (K u + b))``, ``u`` the
    light above the sky, and the result is ``u + b``: the sky is not part of what is
    deconvolved, which keeps Richardson-Lucy from digging dark rings into it around bright
    stars. Without it, plain RL on the image. The data are offset to stay positive and
    padded by reflection (by the kernel radius) for the FFT convolutions. float32.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ProcessingError(f"richardson_lucy needs a 2-D image, got shape {img.shape}")
    k = np.asarray(psf, dtype=np.float32)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0 or not k.sum() > 0:
        raise ProcessingError(f"the PSF must be a 2-D kernel of odd size with a positive "
                              f"sum, got shape {k.shape}")
    iterations = check_number("iterations", iterations, 1, 500, integer=True)
    k = k / k.sum()
    ry, rx = k.shape[0] // 2, k.shape[1] // 2
    bg = np.zeros_like(img) if background is None else np.broadcast_to(
        np.asarray(background, dtype=np.float32), img.shape)
    scale = float(np.median(np.abs(img))) or 1.0
    lo = min(float(img.min()), float(bg.min()) if background is not None else float(img.min()))
    offset = (1e-3 * scale - lo) if lo <= 1e-3 * scale else 0.0
    pad = ((ry, ry), (rx, rx))
    d0 = np.pad(img + np.float32(offset), pad, mode="reflect")
    b0 = np.pad(bg + np.float32(offset), pad, mode="reflect") if background is not None \
        else np.zeros_like(d0)
    shape = (sfft.next_fast_len(d0.shape[0], real=True),
             sfft.next_fast_len(d0.shape[1], real=True))
    kpad = np.zeros(shape, dtype=np.float32)
    kpad[:k.shape[0], :k.shape[1]] = k
    kpad = np.roll(kpad, (-ry, -rx), axis=(0, 1))
    workers = cpu_count()  # pocketfft splits the 1-D transforms: the same numbers
    otf = sfft.rfft2(kpad, workers=workers)
    del kpad
    otf_c = np.conj(otf)
    hv, wv = d0.shape  # the data; beyond it (the FFT's padding) the ratio is 1, u is 0
    d = np.zeros(shape, dtype=np.float32)
    d[:hv, :wv] = d0
    del d0
    bgp = np.zeros(shape, dtype=np.float32)
    bgp[:hv, :wv] = b0
    del b0
    tiny = np.float32(1e-6 * scale)
    u = np.zeros(shape, dtype=np.float32)
    np.maximum(d[:hv, :wv] - bgp[:hv, :wv], 0.0, out=u[:hv, :wv])
    for _ in range(iterations):
        # K u + b, then d / max(K u + b, tiny) in the same buffer (one working image)
        f = sfft.rfft2(u, workers=workers)
        f *= otf
        conv = sfft.irfft2(f, s=shape, workers=workers)
        conv += bgp
        np.maximum(conv, tiny, out=conv)
        np.divide(d, conv, out=conv)
        conv[hv:] = 1.0
        conv[:hv, wv:] = 1.0
        f = sfft.rfft2(conv, workers=workers)
        f *= otf_c
        u *= sfft.irfft2(f, s=shape, workers=workers)
        np.maximum(u, 0.0, out=u)
        u[hv:] = 0.0
        u[:hv, wv:] = 0.0
    out = (u + bgp)[ry:ry + img.shape[0], rx:rx + img.shape[1]] - np.float32(offset)
    return out.astype(np.float32)


def local_floor(lum: np.ndarray, level: np.ndarray, extended: np.ndarray, fwhm: float
                ) -> np.ndarray:
    """The local background under the stars: the sky model, and inside extended objects
    (a galaxy under a star) the image opened (eroded then dilated) by a disc of three FWHM,
    which removes stars and keeps wider structure, smoothed over one FWHM."""
    if not extended.any():
        return level
    k = disk(max(2.0, 3.0 * fwhm)).astype(np.uint8)
    opened = cv2.dilate(cv2.erode(lum, k, borderType=cv2.BORDER_REFLECT), k,
                        borderType=cv2.BORDER_REFLECT)
    inside = gaussian(extended.astype(np.float32), max(1.0, fwhm))
    lifted = np.maximum(level, gaussian(opened, max(1.0, fwhm)))
    return (level + inside * (lifted - level)).astype(np.float32)


def deconvolve(
    data: Any,
    *,
    psf: PSFModel | Any = None,
    iterations: int = 20,
    dering: bool = True,
    low: float = 3.0,
    high: float = 20.0,
) -> DeconvolutionResult:
    """Deconvolve a linear image with protections (see the module notes).

    Parameters
    ----------
    psf : PSFModel, 2-D kernel or None
        ``None`` measures it with :func:`measure_psf`.
    iterations : int
        Richardson-Lucy iterations.
    dering : bool
        Forbid pixels darker than both their original value and the local sky.
    low, high : float
        Signal-to-noise (of the image smoothed by a 1 px Gaussian) where the blend weight
        starts (0) and ends (1).
    """
    img = as_image(data)
    iterations = check_number("iterations", iterations, 1, 500, integer=True)
    low = check_number("low", low, 0.0, 1000.0)
    high = check_number("high", high, low + 1e-6, 1e4)
    lum = luminance(img)
    if psf is None:
        model = measure_psf(img)
    elif isinstance(psf, PSFModel):
        model = psf
    else:
        k = np.asarray(psf, dtype=np.float32)
        model = PSFModel(float("nan"), float("nan"), float("nan"), 0.0, 0, k)
    sky = sky_model(lum)
    fw = model.fwhm if math.isfinite(model.fwhm) else 3.0
    floor = local_floor(lum, sky.level, sky.extended, fw)
    # The known background is set 2 sigma below the sky, so that the sky's noise can be
    # modelled: with the background at the sky itself, the positivity of u rectifies the
    # noise and lifts the sky round every star by 0.4 sigma.
    dl = richardson_lucy(lum, model.kernel, iterations=iterations,
                         background=floor - np.float32(2.0 * sky.noise))
    # Deconvolution moves light, it does not make it: the light above the sky is rescaled
    # so that, smoothed over 3 FWHM, it equals the original's (the EM iteration returns the
    # light of the far wings only slowly, about +10 % in 15 iterations otherwise).
    before = gaussian(lum - floor, 3.0 * fw)
    after = gaussian(dl - floor, 3.0 * fw)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(after > 0.3 * sky.noise, before / after, 1.0)
    dl = floor + (dl - floor) * np.clip(ratio, 0.5, 1.5).astype(np.float32)
    if dering:
        dl = np.maximum(dl, np.minimum(lum, floor))
    sm = gaussian(lum - sky.level, 1.0)
    sky_px = ~sky.sources
    _, noise_sm = clipped_stats(sample(sm[sky_px] if sky_px.any() else sm))
    snr = sm / max(noise_sm, 1e-30)
    t = np.clip((snr - low) / (high - low), 0.0, 1.0)
    wgt = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    top = white_level(lum)
    sat = lum >= 0.8 * top
    # Each object is deconvolved whole: the weight is spread over three FWHM around
    # significant signal (a star whose core is sharpened but whose wings are not would show
    # a dark moat between them), then feathered.
    kd = disk(max(2.0, 3.0 * fw)).astype(np.uint8)
    wgt = cv2.dilate(wgt, kd, borderType=cv2.BORDER_REFLECT)
    if sat.any():
        wgt[dilate(sat, 2.0 * fw)] = 0.0
    wgt = np.clip(gaussian(wgt, max(1.0, fw)), 0.0, 1.0)
    new_l = lum + wgt * (dl - lum)
    delta = new_l - lum
    if img.ndim == 2:
        out = new_l
    else:
        sig_l = lum - sky.level
        strong = sig_l > 3.0 * sky.noise
        out = np.empty_like(img)
        lmed = float(np.median(sky.level))
        for c in range(3):
            lvl_c = sky.level + np.float32(float(np.median(img[c][~sky.sources])) - lmed) \
                if (~sky.sources).any() else sky.level
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(strong, np.clip((img[c] - lvl_c) / sig_l, 0.0, 3.0), 1.0)
            out[c] = img[c] + delta * share.astype(np.float32)
    line = step("deconvolve", f"Richardson-Lucy {iterations} iterations, PSF Moffat FWHM "
                              f"{model.fwhm_major:.3g} x {model.fwhm_minor:.3g} px beta "
                              f"{model.beta:.3g} ({model.n_stars} stars), "
                              f"{'deringing, ' if dering else ''}signal weight "
                              f"{low:g}-{high:g} sigma")
    return DeconvolutionResult(out.astype(np.float32), model, wgt, (line,))
