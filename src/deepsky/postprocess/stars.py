"""Star mask and star reduction.

:func:`star_weight` is a *weight map* (float32 0..1, **1 on stars**), not an exclusion mask:
it is what is blended by. Stars are detected on the linear luminance
(:func:`deepsky.detect.stars.find_stars`, which leaves galaxies and nebulae out as too broad);
each gets a disc whose radius grows with its brightness, out to where its profile falls to
about the noise (``scale * FWHM / 2.355 * sqrt(2 ln(peak / 2 sigma))``, at least one FWHM),
and the map is feathered by a Gaussian of half a FWHM.

:func:`reduce_stars` shrinks stars by morphological erosion (a grey-level minimum over a
disc of ``radius`` px) blended in through the star weight:
``out = img + amount * weight * (eroded - img)``. It works on display (stretched) data,
where star sizes are judged, and leaves everything outside the star discs untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from deepsky.postprocess._common import (
    as_image, check_number, disk, gaussian, luminance, planes, like, sky_model, step,
    white_level,
)
from deepsky.types import StarList

__all__ = ["star_weight", "reduce_stars", "StarMask"]


@dataclass(frozen=True, eq=False)
class StarMask:
    """Stars found and their weight map (1 on stars)."""

    weight: np.ndarray
    stars: StarList
    fwhm: float


def star_weight(data: Any, *, scale: float = 1.5, threshold: float = 5.0) -> StarMask:
    """Star weight map of a linear image (see the module notes).

    ``scale`` multiplies the disc radii; ``threshold`` is the detection threshold in sigma.
    An image without stars gives an all-zero map.
    """
    from deepsky.detect.stars import find_stars

    img = as_image(data)
    scale = check_number("scale", scale, 0.2, 10.0)
    threshold = check_number("threshold", threshold, 2.0, 1000.0)
    lum = luminance(img)
    sky = sky_model(lum)
    stars = find_stars(lum, threshold=threshold, saturation=0.95 * white_level(lum))
    h, w = lum.shape
    out = np.zeros((h, w), dtype=np.float32)
    if len(stars) == 0:
        return StarMask(out, stars, float("nan"))
    fw = np.where(np.isfinite(stars.fwhm), stars.fwhm, np.nanmedian(stars.fwhm))
    med = float(np.nanmedian(fw)) if np.isfinite(fw).any() else 3.0
    fw = np.where(np.isfinite(fw), fw, med)
    peak = np.maximum(stars.peak, 2.0 * sky.noise * 1.0001)
    sig = fw / 2.3548
    radius = np.maximum(fw, scale * sig * np.sqrt(2.0 * np.log(peak / (2.0 * sky.noise))))
    radius = np.minimum(radius, 0.1 * max(h, w) + fw)
    canvas = np.zeros((h, w), dtype=np.uint8)
    for x, y, r in zip(stars.x, stars.y, radius):
        cv2.circle(canvas, (int(round(x)), int(round(y))), int(math.ceil(r)), 1, -1)
    out = gaussian(canvas.astype(np.float32), max(0.5, 0.5 * med))
    return StarMask(np.clip(out, 0.0, 1.0), stars, med)


def reduce_stars(data: Any, *, amount: float = 0.5, radius: int = 1,
                 weight: Any = None, linear: Any = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Shrink stars: ``(image, history)``.

    Parameters
    ----------
    data : array_like
        Display data (0..1, after the stretch).
    amount : float
        0 = no change, 1 = the full erosion inside the star discs.
    radius : int
        Erosion radius in pixels (1 suits stars of FWHM 2-4 px).
    weight : array_like, (H, W), optional
        Star weight map (1 on stars); by default :func:`star_weight` of ``linear``.
    linear : array_like, optional
        The linear image the weight map is computed from (default ``data`` itself).
    """
    img = as_image(data)
    amount = check_number("amount", amount, 0.0, 1.0)
    radius = check_number("radius", radius, 1, 20, integer=True)
    if weight is None:
        weight = star_weight(img if linear is None else linear).weight
    wgt = np.asarray(weight, dtype=np.float32)
    if wgt.shape != img.shape[-2:]:
        from deepsky.errors import ProcessingError
        raise ProcessingError(f"star weight has shape {wgt.shape}, the image has "
                              f"{img.shape[-2:]}")
    k = disk(float(radius)).astype(np.uint8)
    out = np.empty_like(planes(img))
    for c, p in enumerate(planes(img)):
        eroded = cv2.erode(np.ascontiguousarray(p), k, borderType=cv2.BORDER_REFLECT)
        out[c] = p + np.float32(amount) * wgt * (eroded - p)
    line = step("stars", f"star reduction: erosion radius {radius} px, amount {amount:g}")
    return like(img, out), (line,)
