"""Colour calibration of a linear colour stack.

Steps (each a pure function; :func:`calibrate_color` chains them):

* **Background neutralisation** (:func:`background_levels`, :func:`neutralize_background`):
  the background level of each channel is the sigma-clipped mean of the pixels outside the
  source mask; each channel is shifted so that all equal their mean.
* **White balance** (:func:`star_white_balance`, :func:`g2v_white_balance`,
  :func:`apply_white_balance`): multiplicative gains applied *about the background*,
  ``out_c = (data_c - bg_c) * g_c + bg``, so the neutral background stays neutral. From the
  stars: unsaturated stars are measured by aperture photometry on every channel (local
  annulus background); the flux-error-weighted, sigma-clipped mean of ``log(R/G)`` and
  ``log(B/G)`` over the stars is the mean star colour, which the gains make neutral. From a
  G2V reference: the user gives the ``R/G`` and ``B/G`` ratios a sun-like star records with
  the camera (from its spectral response), and the gains make such a star neutral. Gains
  are normalised so that the luminance of the mean star colour is unchanged.
* **Photometric colour calibration** (:func:`photometric_color_calibration`) needs a plate
  solution and a catalogue: the signature is here, it raises "not available yet".
* **SCNR** (:func:`scnr`, green-noise removal, "average neutral" as in PixInsight):
  ``G' = min(G, (R + B) / 2)``, blended with ``amount``.
* **Per-channel linear matching** (:func:`linear_fit`, as PixInsight's LinearFit): each
  channel is fitted to a reference channel, ``ref ~ a * ch + b``, over the pixels below a
  high limit, and replaced by ``a * ch + b`` (for stacks of separately filtered channels).

Mono images pass through unchanged (``calibrate_color`` returns them as they are).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepsky.errors import ProcessingError
from deepsky.postprocess._common import (
    MADN, as_image, as_mask, check_choice, check_number, clipped_stats, luminance, sample,
    sky_model, step, white_level,
)

__all__ = [
    "ColorResult",
    "StarColors",
    "background_levels",
    "neutralize_background",
    "measure_star_colors",
    "star_white_balance",
    "g2v_white_balance",
    "object_white_balance",
    "apply_white_balance",
    "photometric_color_calibration",
    "scnr",
    "linear_fit",
    "calibrate_color",
]

WHITE_BALANCE = ("stars", "g2v", "none", "photometric")


@dataclass(frozen=True, eq=False)
class StarColors:
    """Aperture photometry of stars on every channel.

    ``x, y`` centroids; ``flux`` ``(3, n)`` background-subtracted fluxes; ``error`` their
    1-sigma errors; ``saturated`` stars with a channel near its white level (left out of
    the white balance); ``radius`` the aperture radius in pixels.
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    saturated: np.ndarray
    radius: float

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True, eq=False)
class ColorResult:
    """The calibrated image and the numbers that made it.

    ``background`` the per-channel background levels measured before calibration;
    ``offsets`` what neutralisation added per channel; ``gains`` the white-balance gains;
    ``reference`` the common background level after calibration; ``n_stars`` the stars the
    white balance used (0 for other methods).
    """

    data: np.ndarray
    background: np.ndarray
    offsets: np.ndarray
    gains: np.ndarray
    reference: float
    n_stars: int
    history: tuple[str, ...]


def _colour(img: np.ndarray, name: str = "data") -> np.ndarray:
    if img.ndim != 3:
        raise ProcessingError(f"{name} must be a colour image (3, H, W) for this step, got "
                              f"shape {img.shape}")
    return img


# ----------------------------------------------------------------------------------------------
# background
# ----------------------------------------------------------------------------------------------
def background_levels(data: Any, *, mask: Any = None) -> np.ndarray:
    """Background level of each channel: the sigma-clipped (3 sigma) mean of the pixels
    outside the automatic source mask (and outside ``mask``, ``True`` = excluded).

    Returns ``(C,)`` float64 (one value for mono).
    """
    img = as_image(data)
    user = as_mask(mask, img.shape[-2:])
    src = sky_model(luminance(img), mask=user).sources
    excl = src if user is None else (src | user)
    planes_ = img[None] if img.ndim == 2 else img
    out = []
    for p in planes_:
        vals = sample(p[~excl]) if (~excl).any() else sample(p)
        med, sig = clipped_stats(vals)
        v = vals[np.abs(vals - med) <= 3.0 * sig] if sig > 0 else vals
        out.append(float(np.mean(v)) if v.size else med)
    return np.array(out)


def neutralize_background(data: Any, *, mask: Any = None, levels: Any = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Make the background of every channel equal: ``(out, offsets)``.

    ``out_c = data_c + offsets_c`` with ``offsets_c = mean(levels) - levels_c``; ``levels``
    default to :func:`background_levels`.
    """
    img = _colour(as_image(data))
    lv = background_levels(img, mask=mask) if levels is None else np.asarray(levels, float)
    if lv.shape != (3,):
        raise ProcessingError(f"levels must hold 3 values (R, G, B), got {lv!r}")
    off = float(lv.mean()) - lv
    out = img + off.astype(np.float32)[:, None, None]
    return out.astype(np.float32), off


# ----------------------------------------------------------------------------------------------
# white balance
# ----------------------------------------------------------------------------------------------
def measure_star_colors(data: Any, *, max_stars: int = 300, threshold: float = 10.0,
                        mask: Any = None) -> StarColors:
    """Detect stars on the luminance and measure their flux on every channel.

    Apertures have a radius of 2.5 x the median FWHM (at least 3 px) with a local
    background annulus from 4 to 6 x FWHM (sigma-clipped). A star is ``saturated`` when any
    channel's peak (3x3 around the centroid) reaches 90 % of that channel's white level
    (:func:`deepsky.postprocess._common.white_level`) or the detector flagged it.
    """
    import sep

    from deepsky.detect.stars import find_stars

    img = _colour(as_image(data))
    max_stars = check_number("max_stars", max_stars, 1, 100000, integer=True)
    threshold = check_number("threshold", threshold, 1.0, 1000.0)
    lum = luminance(img)
    user = as_mask(mask, lum.shape)
    stars = find_stars(lum, threshold=threshold, max_stars=max_stars, mask=user)
    empty = np.zeros(0)
    if len(stars) == 0:
        return StarColors(empty, empty, np.zeros((3, 0)), np.zeros((3, 0)),
                          np.zeros(0, dtype=bool), 0.0)
    fwhm = float(np.nanmedian(stars.fwhm)) if np.isfinite(stars.fwhm).any() else 3.0
    r = max(3.0, 2.5 * fwhm)
    ann = (max(r + 2.0, 4.0 * fwhm), max(r + 5.0, 6.0 * fwhm))
    h, w = lum.shape
    inside = (stars.x > ann[1]) & (stars.x < w - 1 - ann[1]) & (stars.y > ann[1]) & \
        (stars.y < h - 1 - ann[1])
    stars = stars.select(inside)
    x, y = stars.x, stars.y
    flux = np.zeros((3, len(x)))
    err = np.zeros((3, len(x)))
    sat = stars.saturated.copy()
    ix = np.clip(np.rint(x).astype(int), 1, w - 2)
    iy = np.clip(np.rint(y).astype(int), 1, h - 2)
    for c in range(3):
        p = np.ascontiguousarray(img[c], dtype=np.float64)
        _, noise = clipped_stats(sample(p))
        f, e, _ = sep.sum_circle(p, x, y, r, err=max(noise, 1e-30), bkgann=ann)
        flux[c], err[c] = f, e
        top = max(white_level(img[c]), 1e-30)
        peak = np.max([p[iy + dy, ix + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        sat |= peak >= 0.9 * top
    return StarColors(x=x, y=y, flux=flux, error=err, saturated=sat, radius=r)


def star_white_balance(data: Any, *, stars: StarColors | None = None, min_stars: int = 5,
                       mask: Any = None) -> tuple[np.ndarray, int]:
    """Gains ``(3,)`` that make the mean colour of the unsaturated stars neutral, and the
    number of stars used.

    The mean colour is the weighted, sigma-clipped mean of ``log(R/G)`` and ``log(B/G)``
    (weights ``1 / (measurement variance + intrinsic scatter**2)``). Raises
    :class:`ProcessingError` when fewer than ``min_stars`` stars are usable.
    """
    img = _colour(as_image(data))
    sc = measure_star_colors(img, mask=mask) if stars is None else stars
    f, e = sc.flux, sc.error
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = f / e
        good = ~sc.saturated & np.all(f > 0, axis=0) & np.all(snr > 20, axis=0)
        lr = np.log(f[0] / f[1])
        lb = np.log(f[2] / f[1])
        var_r = (e[0] / f[0]) ** 2 + (e[1] / f[1]) ** 2
        var_b = (e[2] / f[2]) ** 2 + (e[1] / f[1]) ** 2
    if good.sum() < min_stars:
        raise ProcessingError(f"only {int(good.sum())} unsaturated stars with a good signal "
                              f"were found for the star white balance (need {min_stars}); "
                              "use white_balance='g2v' or 'none'")
    mr, nr = _robust_mean(lr[good], var_r[good])
    mb, nb = _robust_mean(lb[good], var_b[good])
    colour = np.array([math.exp(mr), 1.0, math.exp(mb)])
    return _gains_for(colour), int(min(nr, nb))


def _robust_mean(v: np.ndarray, var: np.ndarray) -> tuple[float, int]:
    keep = np.isfinite(v) & np.isfinite(var)
    mean = float(np.median(v[keep]))
    for _ in range(10):
        d = v[keep] - mean
        scatter = MADN * float(np.median(np.abs(v[keep] - np.median(v[keep]))))
        intrinsic2 = max(scatter ** 2 - float(np.median(var[keep])), 0.0)
        wts = 1.0 / (var + intrinsic2 + 1e-12)
        lim = 3.0 * np.sqrt(var + intrinsic2 + 1e-12)
        new_keep = np.isfinite(v) & np.isfinite(var) & (np.abs(v - mean) <= lim)
        if new_keep.sum() < 3:
            break
        new_mean = float(np.sum(wts[new_keep] * v[new_keep]) / np.sum(wts[new_keep]))
        done = np.array_equal(new_keep, keep) and abs(new_mean - mean) < 1e-9
        keep, mean = new_keep, new_mean
        if done or d.size == 0:
            break
    return mean, int(keep.sum())


def _gains_for(colour: np.ndarray) -> np.ndarray:
    """Gains that make ``colour`` (R, G, B) neutral, keeping its mean (its luminance)."""
    g = 1.0 / colour
    return g * (colour.mean() / (g * colour).mean())


def object_white_balance(data: Any, *, background: Any = None, mask: Any = None
                         ) -> np.ndarray:
    """Gains ``(3,)`` that make the summed light of everything above the sky neutral (all
    source pixels, background subtracted, the brightest 0.1 % left out as possibly
    saturated): the fallback of the star white balance when an image has too few stars."""
    img = _colour(as_image(data))
    user = as_mask(mask, img.shape[-2:])
    src = sky_model(luminance(img), mask=user).sources
    if user is not None:
        src &= ~user
    bg = background_levels(img, mask=mask) if background is None else np.asarray(background)
    if not src.any():
        return np.ones(3)
    sig = img[:, src] - np.asarray(bg, dtype=np.float32)[:, None]
    lum = sig.mean(axis=0)
    keep = lum < np.percentile(lum, 99.9)
    tot = sig[:, keep].sum(axis=1)
    if not np.all(tot > 0):
        return np.ones(3)
    return _gains_for(tot / tot.mean())


def g2v_white_balance(red: float = 1.0, blue: float = 1.0) -> np.ndarray:
    """Gains ``(3,)`` that make a G2V (sun-like) star neutral, given the ``R/G`` (``red``)
    and ``B/G`` (``blue``) flux ratios such a star records with the camera."""
    red = check_number("g2v red ratio", red, 1e-3, 1e3)
    blue = check_number("g2v blue ratio", blue, 1e-3, 1e3)
    return _gains_for(np.array([red, 1.0, blue]))


def apply_white_balance(data: Any, gains: Any, *, background: Any = None) -> np.ndarray:
    """Multiply each channel by its gain about the background:
    ``out_c = (data_c - bg_c) * g_c + mean(bg)``; ``background`` (3 levels) defaults to
    :func:`background_levels`. A neutral background stays neutral."""
    img = _colour(as_image(data))
    g = np.asarray(gains, dtype=np.float64).reshape(-1)
    if g.shape != (3,) or not np.all(np.isfinite(g)) or not np.all(g > 0):
        raise ProcessingError(f"gains must be 3 positive numbers, got {gains!r}")
    bg = background_levels(img) if background is None else np.asarray(background, float)
    ref = float(np.mean(bg))
    out = np.empty_like(img)
    for c in range(3):
        out[c] = (img[c] - np.float32(bg[c])) * np.float32(g[c]) + np.float32(ref)
    return out


def photometric_color_calibration(data: Any, *, wcs: Any = None, catalogue: Any = None
                                  ) -> np.ndarray:
    """Photometric colour calibration against a star catalogue (as Siril's PCC/SPCC).

    **Not available yet.** It needs the image's plate solution (``wcs``) and catalogue
    colours of its stars (``catalogue``); deepsky does not plate-solve yet. The plan: match
    the stars of :func:`measure_star_colors` to the catalogue through the WCS, fit the
    gains that bring the measured colours onto the catalogue's expected camera colours, and
    return :func:`apply_white_balance` with those gains. Use ``white_balance="stars"`` or
    ``"g2v"`` meanwhile.
    """
    raise ProcessingError("photometric colour calibration is not available yet (it needs "
                          "plate solving); use color.white_balance = 'stars' or 'g2v'")


# ----------------------------------------------------------------------------------------------
# green noise and channel matching
# ----------------------------------------------------------------------------------------------
def scnr(data: Any, *, amount: float = 1.0, method: str = "average") -> np.ndarray:
    """Subtractive chromatic noise reduction of green.

    ``method="average"`` (average neutral): ``G' = min(G, (R + B) / 2)``; ``"maximum"``
    (maximum neutral): ``G' = min(G, max(R, B))``. The result is
    ``(1 - amount) * G + amount * G'``; R and B are unchanged. Works on linear or stretched
    data.
    """
    img = _colour(as_image(data))
    amount = check_number("amount", amount, 0.0, 1.0)
    method = check_choice("method", method, ("average", "maximum"))
    r, g, b = img
    neutral = 0.5 * (r + b) if method == "average" else np.maximum(r, b)
    out = img.copy()
    out[1] = g + np.float32(amount) * (np.minimum(g, neutral) - g)
    return out


def linear_fit(data: Any, *, reference: int = 1, high: float = 0.92) -> np.ndarray:
    """Match each channel linearly to ``reference`` (0 = R, 1 = G, 2 = B).

    For each other channel, ``a`` and ``b`` of ``ref ~ a * ch + b`` are fitted over pixels
    below ``high`` times both channels' white levels (stars' cores left out), with
    iterative 3-sigma clipping of the residuals; the channel becomes ``a * ch + b``.
    """
    img = _colour(as_image(data))
    reference = check_number("reference", reference, 0, 2, integer=True)
    high = check_number("high", high, 0.05, 1.0)
    ref = img[reference]
    out = img.copy()
    rv = sample(ref, 200_000).astype(np.float64)
    for c in range(3):
        if c == reference:
            continue
        cv = sample(img[c], 200_000).astype(np.float64)
        keep = (rv < high * white_level(ref)) & (cv < high * white_level(img[c]))
        a, b = 1.0, 0.0
        for _ in range(8):
            if keep.sum() < 10:
                raise ProcessingError(f"linear_fit: too few usable pixels in channel {c}")
            a, b = np.polyfit(cv[keep], rv[keep], 1)
            res = rv - (a * cv + b)
            sig = MADN * float(np.median(np.abs(res[keep])))
            new = keep & (np.abs(res) <= 3.0 * max(sig, 1e-30))
            if np.array_equal(new, keep):
                break
            keep = new
        out[c] = img[c] * np.float32(a) + np.float32(b)
    return out


# ----------------------------------------------------------------------------------------------
# all together
# ----------------------------------------------------------------------------------------------
def calibrate_color(
    data: Any,
    *,
    neutralize: bool = True,
    white_balance: str = "stars",
    g2v_ratios: tuple[float, float] = (1.0, 1.0),
    match_channels: bool = False,
    mask: Any = None,
) -> ColorResult:
    """Linear colour calibration: optional channel matching, then background neutralisation
    and white balance in one step, ``out_c = (data_c - bg_c) * g_c + mean(bg)``.

    Parameters
    ----------
    white_balance : {"stars", "g2v", "none", "photometric"}
        ``"stars"``: mean colour of unsaturated stars made neutral (falls back to
        :func:`object_white_balance`, with a note in the history, when fewer than 5 stars
        are usable); ``"g2v"``: gains
        from ``g2v_ratios`` (the ``R/G``, ``B/G`` a G2V star records); ``"photometric"``
        raises "not available yet".
    neutralize : bool
        Make the channel backgrounds equal (otherwise each keeps its own level).
    match_channels : bool
        Run :func:`linear_fit` to green first.
    mask : array_like of bool, (H, W), optional
        ``True`` marks pixels left out of the background statistics and star detection.
    """
    img = as_image(data)
    white_balance = check_choice("white_balance", white_balance, WHITE_BALANCE)
    if img.ndim == 2:
        return ColorResult(img, np.zeros(1), np.zeros(1), np.ones(1), 0.0, 0,
                           (step("color", "mono image, unchanged"),))
    notes = []
    if match_channels:
        img = linear_fit(img)
        notes.append("channels linearly matched to G")
    bg = background_levels(img, mask=mask)
    n_stars = 0
    if white_balance == "photometric":
        photometric_color_calibration(img)
    if white_balance == "stars":
        try:
            gains, n_stars = star_white_balance(img, mask=mask)
            notes.append(f"white balance from {n_stars} stars")
        except ProcessingError:
            gains = object_white_balance(img, background=bg, mask=mask)
            notes.append("too few stars: white balance from the mean colour of all objects")
    elif white_balance == "g2v":
        gains = g2v_white_balance(*g2v_ratios)
        notes.append(f"white balance G2V R/G={g2v_ratios[0]:g} B/G={g2v_ratios[1]:g}")
    else:
        gains = np.ones(3)
    ref = float(bg.mean())
    if neutralize:
        out = apply_white_balance(img, gains, background=bg)
        offsets = ref - bg
        notes.append("background neutralised")
    else:
        out = img * gains.astype(np.float32)[:, None, None]
        offsets = np.zeros(3)
    line = step("color", "; ".join(notes) + f"; gains {', '.join(f'{g:.4f}' for g in gains)}"
                + f"; background {', '.join(f'{b:.6g}' for b in bg)}")
    return ColorResult(data=out.astype(np.float32), background=bg, offsets=offsets,
                       gains=gains, reference=ref, n_stars=n_stars, history=(line,))
