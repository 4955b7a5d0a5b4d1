"""Noise reduction of a linear image, luminance and chrominance separately.

The image is split into a luminance ``L`` (the mean of the channels) and two chrominance
planes ``R - L`` and ``B - L`` (``G - L`` follows from them). Each plane is decomposed by
the starlet (isotropic undecimated "a trous" wavelet transform with the B3-spline kernel
``[1, 4, 6, 4, 1] / 16``) into ``scales`` detail layers and a smooth residual; the plane is
exactly the sum of its layers. In every layer, coefficients are shrunk with the
non-negative garrote ``w' = w * max(0, 1 - (k sigma_j / w)**2)``: coefficients far above the
noise (stars, sharp structure) are kept almost unchanged, those at the noise level removed.
``sigma_j``, the noise of layer ``j``: for the luminance, the first layer's is measured
(MAD of its coefficients over the sky, outside the source mask) and coarser layers follow
through the white-noise ratios of the starlet (0.225, 0.097, 0.046, ...), scaled up by the
correlation the second layer shows (registered stacks have correlated noise), because the
luminance's sky holds faint real structure a MAD would take for noise; for the
chrominance, whose sky holds no structure but often strongly correlated (demosaicing)
noise, every layer's noise is measured on the layer itself. ``k`` is ``threshold`` for the
first layer and falls to 0.75 of it on the coarsest (faint, extended signal lives there).
Around a significant structure of a layer (a star's core), the layer's small coefficients
are kept whole (multiresolution support): they are the star's own negative ring in that
layer, and removing them would add light to the star. The result is blended with the
original by ``amount`` (0 = no change, 1 = full) for the luminance and the chrominance
separately: colour noise can be removed much more strongly than luminance detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from deepsky.postprocess._common import (
    MADN, as_image, as_mask, check_number, dilate, luminance, sample, sky_model, step,
)

__all__ = ["starlet", "denoise_plane", "denoise", "DenoiseResult"]

_B3 = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
# Noise of starlet layers 1, 2, ... for white noise, relative to layer 1.
_WHITE = (1.0, 0.2249, 0.0967, 0.0461, 0.0225, 0.0112, 0.0056, 0.0028, 0.0014, 0.0007)


@dataclass(frozen=True, eq=False)
class DenoiseResult:
    """The denoised image and the noise it measured (per plane: L, then chrominance)."""

    data: np.ndarray
    noise: np.ndarray
    history: tuple[str, ...]


def starlet(plane: Any, scales: int = 4) -> list[np.ndarray]:
    """Starlet decomposition: ``scales`` detail layers (finest first) and the smooth
    residual as the last element; their sum is ``plane`` (float32, to rounding)."""
    c = np.asarray(plane, dtype=np.float32)
    scales = check_number("scales", scales, 1, 10, integer=True)
    out: list[np.ndarray] = []
    for j in range(scales):
        step_ = 2 ** j
        kern = np.zeros(4 * step_ + 1, dtype=np.float32)
        kern[::step_] = _B3
        smooth = ndimage.convolve1d(c, kern, axis=0, mode="mirror")
        smooth = ndimage.convolve1d(smooth, kern, axis=1, mode="mirror")
        out.append(c - smooth)
        c = smooth
    out.append(c)
    return out


def _support(w: np.ndarray, level: float, j: int) -> np.ndarray | None:
    """Pixels within ``2**(j+1)`` px of a positive structure of layer ``j`` above
    ``level`` that covers at least 3 pixels (single noise spikes do not count)."""
    sig = (w > level).astype(np.uint8)
    if not sig.any():
        return None
    n, labels, stats, _ = cv2.connectedComponentsWithStats(sig, connectivity=8)
    big = stats[:, cv2.CC_STAT_AREA] >= 3
    big[0] = False
    if not big[1:].any():
        return None
    keep = big[labels]
    return dilate(keep, float(2 ** (j + 1) + 2))


def denoise_plane(plane: Any, *, threshold: float = 3.0, scales: int = 4,
                  mask: Any = None, measured: bool = False) -> tuple[np.ndarray, float]:
    """Garrote-shrink the starlet layers of one plane: ``(denoised, noise of layer 1)``.

    ``mask`` (``True`` = excluded) marks sources left out of the noise measurement.
    ``measured``: take every layer's noise from its own MAD over the sky (right for
    chrominance planes, whose sky holds no structure but often strongly correlated noise
    from demosaicing); otherwise the coarse layers follow the first through the white-noise
    ratios (right for a luminance whose sky holds faint real structure).
    """
    p = np.asarray(plane, dtype=np.float32)
    threshold = check_number("threshold", threshold, 0.0, 20.0)
    m = as_mask(mask, p.shape)
    layers = starlet(p, scales)
    out = layers[-1].copy()
    measured_ = []
    for w in layers[:-1]:
        vals = sample(w[~m]) if m is not None and (~m).any() else sample(w)
        measured_.append(float(MADN * np.median(np.abs(vals - np.median(vals)))))
    noise1 = measured_[0]
    # Coarse layers hold real structure (halos, star wings) that a MAD cannot tell from
    # noise: their noise follows from the first layer's through the white-noise ratios,
    # corrected for the pixel-to-pixel correlation of a registered stack as the second
    # layer shows it, and is never taken above what the layer itself shows.
    corr = 1.0
    if len(measured_) > 1 and noise1 > 0:
        corr = float(np.clip(measured_[1] / noise1 / _WHITE[1], 1.0, 3.0))
    for j, w in enumerate(layers[:-1]):
        model = noise1 * _WHITE[min(j, len(_WHITE) - 1)] * (corr if j else 1.0)
        sig = measured_[j] if measured else (min(measured_[j], model) if j else noise1)
        k = threshold * (1.0 - 0.25 * j / max(scales - 1, 1))
        t2 = np.float32((k * sig) ** 2)
        if t2 <= 0:
            out += w
            continue
        w2 = w * w
        with np.errstate(divide="ignore", invalid="ignore"):
            shrink = np.where(w2 > t2, 1.0 - t2 / w2, 0.0).astype(np.float32)
        # Multiresolution support: around a significant structure of this layer (a star's
        # core) its small coefficients (the star's negative ring in the layer) are kept
        # whole, or removing them would add light to the star.
        sup = _support(w, float(k * sig), j)
        if sup is not None:
            shrink[sup] = 1.0
        out += w * shrink
    return out, noise1


def denoise(
    data: Any,
    *,
    luminance_amount: float = 0.8,
    chrominance_amount: float = 1.0,
    threshold: float = 3.0,
    chrominance_threshold: float = 4.0,
    scales: int = 4,
    chrominance_scales: int = 5,
    mask: Any = None,
) -> DenoiseResult:
    """Denoise a linear mono or colour image (see the module notes).

    Parameters
    ----------
    luminance_amount, chrominance_amount : float
        Blend of the denoised planes with the originals (0..1).
    threshold, chrominance_threshold : float
        Garrote threshold in units of each layer's noise (first layer).
    scales, chrominance_scales : int
        Starlet layers treated (the coarser residual is kept as it is).
    mask : array_like of bool, (H, W), optional
        ``True`` marks pixels left out of the noise measurement (default: the automatic
        source mask).

    Examples
    --------
    >>> res = denoise(stack, luminance_amount=0.8)   # doctest: +SKIP
    """
    img = as_image(data)
    la = check_number("luminance_amount", luminance_amount, 0.0, 1.0)
    ca = check_number("chrominance_amount", chrominance_amount, 0.0, 1.0)
    check_number("chrominance_threshold", chrominance_threshold, 0.0, 20.0)
    lum = luminance(img)
    user = as_mask(mask, lum.shape)
    src = sky_model(lum).sources if user is None else user
    noises = []
    if la > 0:
        dl, n = denoise_plane(lum, threshold=threshold, scales=scales, mask=src)
        new_l = lum + np.float32(la) * (dl - lum)
    else:
        new_l, n = lum, 0.0
    noises.append(n)
    if img.ndim == 2:
        out = new_l.astype(np.float32)
    else:
        chroma = [img[0] - lum, img[2] - lum]
        new_c = []
        for c in chroma:
            if ca > 0:
                dc, n = denoise_plane(c, threshold=chrominance_threshold,
                                      scales=chrominance_scales, mask=src, measured=True)
                new_c.append(c + np.float32(ca) * (dc - c))
            else:
                new_c.append(c)
                n = 0.0
            noises.append(n)
        r = new_l + new_c[0]
        b = new_l + new_c[1]
        g = 3.0 * new_l - r - b
        out = np.stack([r, g, b]).astype(np.float32)
    line = step("denoise", f"starlet garrote, luminance {la:g} (k={threshold:g}, {scales} "
                           f"scales), chrominance {ca:g} (k={chrominance_threshold:g}, "
                           f"{chrominance_scales} scales)" if img.ndim == 3 else
                f"starlet garrote, amount {la:g} (k={threshold:g}, {scales} scales)")
    return DenoiseResult(out, np.array(noises), (line,))
