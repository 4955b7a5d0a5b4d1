r"""Stretches: from linear data to an image for the eye.

Everything here works on data normalised to 0..1 (:func:`normalize` divides the linear
stack by its own white level, the brightest value of the image after a 3x3 median, so that
nothing but lone hot pixels exceeds 1 and no star core is clipped by the normalisation).
Stretched values are *display-referred*: they are the values an 8-bit or 16-bit image file
stores, interpreted as sRGB-encoded (no further transfer curve is applied on export).

Black point
    ``c0 = median + shadows_clip * MADN`` (``shadows_clip = -2.8`` as in PixInsight's
    STF and Siril's autostretch), from the luminance for linked stretches, per channel
    otherwise; ``x = clip((data - c0) / (1 - c0), 0, 1)``.

Screen transfer function (:func:`stf_stretch`)
    The midtones transfer function ``MTF(m, x) = (m - 1) x / ((2m - 1) x - m)`` with
    ``m`` chosen so that the background lands on ``target_background``:
    ``m = MTF(target, x_bg)`` where ``x_bg`` is the background after the black point (the
    MTF is its own inverse in this sense: ``MTF(MTF(t, x), x) = t``).

Generalised hyperbolic stretch (:func:`ghs_curve`, as Siril's GHS by Payne and Cranfield)
    Parameters ``D`` (stretch factor, given as Siril shows it, ``ln(1 + D')``), ``b`` (local
    intensity: ``b = 1`` harmonic like the MTF, ``b = 0`` exponential, ``b = -1``
    logarithmic like arcsinh, ``b < -1`` a power law), ``SP`` (symmetry point: where the
    stretch is strongest), ``LP`` (shadow protection: linear below), ``HP`` (highlight
    protection: linear above). With ``D' = e^D - 1`` the base curve ``T(t)``, ``t >= 0``,
    ``T(0) = 0``, ``T'(0) = D'``, is

    .. math::

        T(t) = \begin{cases}
          1 - (1 + b D' t)^{-1/b} & b > 0 \\
          1 - e^{-D' t} & b = 0 \\
          \ln(1 + D' t) & b = -1 \\
          \dfrac{(1 + |b| D' t)^{1 - 1/|b|} - 1}{|b| - 1} & b < 0,\ b \ne -1
        \end{cases}

    and the transformation is ``f(x) = T(x - SP)`` for ``SP <= x <= HP``,
    ``f(x) = -T(SP - x)`` for ``LP <= x < SP``, continued by its tangent line below ``LP``
    and above ``HP``, then normalised: ``y = (f(x) - f(0)) / (f(1) - f(0))``.
    :func:`auto_ghs` solves ``D`` by bisection so that the background lands on the target.

Arcsinh (:func:`asinh_stretch`)
    Colour-preserving (Lupton et al. 2004): ``y_c = x_c * asinh(beta L) / (L asinh(beta))``
    with ``L`` the mean of the channels; ``beta`` is solved for the target background.

Colour handling
    ``color="luminance"`` stretches the luminance ``L`` (mean of the channels) and scales
    the channels by ``f(L) / L``, keeping hue and saturation; a pixel whose brightest channel
    would pass 1 is scaled down as a whole (no hue shift). ``color="channels"`` applies the
    curve to each channel (linked: one curve for all), which desaturates the highlights.

Curves, levels and saturation
    :func:`curves` passes a monotone cubic (PCHIP) through control points; :func:`levels`
    sets black and white points; :func:`saturation` scales the chroma ``c - L`` by an amount,
    faded in above the background so that background colour noise is not boosted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy.interpolate import PchipInterpolator

from deepsky.errors import ConfigError, ProcessingError
from deepsky.postprocess._common import (
    MADN, as_image, as_mask, check_choice, check_number, like, luminance, planes, sample,
    white_level,
)

__all__ = [
    "Stretched",
    "normalize",
    "mtf",
    "stf_stretch",
    "ghs_curve",
    "ghs_stretch",
    "auto_ghs",
    "asinh_stretch",
    "levels",
    "curves",
    "parse_curve",
    "saturation",
    "background_stats",
]

COLOR_MODES = ("luminance", "channels")


@dataclass(frozen=True, eq=False)
class Stretched:
    """A stretched image (0..1) and the parameters that made it (for the recipe)."""

    data: np.ndarray
    params: dict[str, Any]
    history: tuple[str, ...]


# ----------------------------------------------------------------------------------------------
# normalisation and statistics
# ----------------------------------------------------------------------------------------------
def normalize(data: Any, *, white: float | None = None) -> tuple[np.ndarray, float]:
    """Divide the linear image by its white level: ``(data / white, white)``.

    ``white`` defaults to :func:`deepsky.postprocess._common.white_level` (the brightest
    value after a 3x3 median, over all channels: one factor for all, so colours are kept).
    Negative values (below a subtracted background) are kept; the stretch clips them.
    """
    img = as_image(data)
    w = white_level(img) if white is None else check_number("white", white)
    if not w > 0:
        raise ProcessingError(f"the image's white level is {w!r}; an image with no positive "
                              "signal cannot be stretched")
    return (img / np.float32(w)).astype(np.float32), float(w)


def background_stats(data: Any, *, mask: Any = None, linked: bool = True
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Median and MADN of the background, per channel ``(C,)`` (one value repeated for a
    linked colour image: those of the luminance). ``mask`` (``True`` = excluded, e.g.
    stars and the target) restricts them to the sky; without it the whole image is used,
    as PixInsight's STF does."""
    img = as_image(data)
    m = as_mask(mask, img.shape[-2:])
    srcs = [luminance(img)] if (linked or img.ndim == 2) else list(img)
    meds, mads = [], []
    for p in srcs:
        v = sample(p[~m]) if m is not None and (~m).any() else sample(p)
        med = float(np.median(v))
        meds.append(med)
        mads.append(float(MADN * np.median(np.abs(v - med))))
    n = 1 if img.ndim == 2 else 3
    if len(meds) == 1:
        return np.full(n, meds[0]), np.full(n, mads[0])
    return np.array(meds), np.array(mads)


def _black_points(med: np.ndarray, madn: np.ndarray, shadows_clip: float) -> np.ndarray:
    return np.clip(med + shadows_clip * madn, 0.0, 0.99)


def _rescale(p: np.ndarray, c0: float) -> np.ndarray:
    return np.clip((p - np.float32(c0)) / np.float32(1.0 - c0), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# curves
# ----------------------------------------------------------------------------------------------
def mtf(m: float, x: Any) -> np.ndarray:
    """Midtones transfer function: 0 -> 0, ``m`` -> 0.5, 1 -> 1."""
    x = np.asarray(x, dtype=np.float32)
    m32 = np.float32(m)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = (m32 - 1) * x / ((2 * m32 - 1) * x - m32)
    return np.where(x <= 0, np.float32(0), np.where(x >= 1, np.float32(1), y)).astype(np.float32)


def _ghs_base(t: np.ndarray, d: float, b: float) -> np.ndarray:
    """``T(t)`` of the module notes (``d`` is D' = e^D - 1), float64."""
    if b > 1e-9:
        return 1.0 - np.power(1.0 + b * d * t, -1.0 / b)
    if b > -1e-9:
        return -np.expm1(-d * t)
    if abs(b + 1.0) < 1e-9:
        return np.log1p(d * t)
    bb = -b
    return (np.power(1.0 + bb * d * t, 1.0 - 1.0 / bb) - 1.0) / (bb - 1.0)


def _ghs_slope(t: float, d: float, b: float) -> float:
    """``T'(t)``."""
    if b > 1e-9:
        return d * (1.0 + b * d * t) ** (-(1.0 + b) / b)
    if b > -1e-9:
        return d * math.exp(-d * t)
    return d * (1.0 + (-b) * d * t) ** (-1.0 / (-b))


def ghs_curve(x: Any, *, D: float, b: float = 0.0, SP: float = 0.0, LP: float = 0.0,
              HP: float = 1.0) -> np.ndarray:
    """The generalised hyperbolic transformation of ``x`` in 0..1 (see the module notes).

    ``D`` is the stretch factor as Siril shows it (0 = identity, typically 0-10); ``b``
    the local intensity (-5..15); ``0 <= LP <= SP <= HP <= 1``.

    >>> float(ghs_curve(0.0, D=3.0)), float(ghs_curve(1.0, D=3.0))
    (0.0, 1.0)
    """
    D = check_number("D", D, 0.0, 20.0)
    b = check_number("b", b, -5.0, 15.0)
    SP = check_number("SP", SP, 0.0, 1.0)
    LP = check_number("LP", LP, 0.0, SP)
    HP = check_number("HP", HP, SP, 1.0)
    xa = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    if D == 0:
        return xa.astype(np.float32)
    return _ghs(xa, math.expm1(D), b, SP, LP, HP).astype(np.float32)


def _ghs_function(d: float, b: float, SP: float, LP: float, HP: float
                  ) -> Callable[[np.ndarray], np.ndarray]:
    """The normalised GHS transformation as a function of float64 ``x`` in 0..1."""
    def f(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        out = np.empty_like(x)
        hi = x >= SP
        out[hi] = _ghs_base(np.minimum(x[hi], HP) - SP, d, b)
        out[~hi] = -_ghs_base(SP - np.maximum(x[~hi], LP), d, b)
        above = x > HP
        if above.any():
            out[above] += _ghs_slope(HP - SP, d, b) * (x[above] - HP)
        below = x < LP
        if below.any():
            out[below] -= _ghs_slope(SP - LP, d, b) * (LP - x[below])
        return out

    ends = f(np.array([0.0, 1.0]))
    span = ends[1] - ends[0]
    if not span > 0:
        raise ProcessingError(f"GHS with D={math.log1p(d):g}, b={b:g} is degenerate")
    return lambda x: (f(x) - ends[0]) / span


def _ghs(x: np.ndarray, d: float, b: float, SP: float, LP: float, HP: float) -> np.ndarray:
    return _ghs_function(d, b, SP, LP, HP)(x)


# ----------------------------------------------------------------------------------------------
# applying a curve to an image
# ----------------------------------------------------------------------------------------------
def _apply(img: np.ndarray, c0: np.ndarray, curve: Callable[[np.ndarray], np.ndarray],
           color: str, linked: bool) -> np.ndarray:
    """Black point then ``curve`` (float64 0..1 -> 0..1), per channel or on the luminance."""
    if img.ndim == 2 or color == "channels":
        out = np.empty_like(planes(img))
        for c, p in enumerate(planes(img)):
            x = _rescale(p, float(c0[c])).astype(np.float64)
            out[c] = curve(x).astype(np.float32)
        return like(img, out)
    # Colour-preserving: stretch the luminance, scale the channels by the same factor.
    x = np.stack([(p - np.float32(c0[c])) / np.float32(1.0 - c0[c]) for c, p in
                  enumerate(img)]).astype(np.float32)
    lum = np.clip(luminance(x), 0.0, None)
    fl = curve(np.minimum(lum, 1.0).astype(np.float64)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(lum > 1e-12, fl / lum, np.float32(0.0)).astype(np.float32)
    out = np.clip(x, 0.0, None) * k[None]
    peak = out.max(axis=0)
    over = peak > 1.0
    if over.any():
        out[:, over] /= peak[over]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _targets(img: np.ndarray, mask: Any, linked: bool, shadows_clip: float,
             reference: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Black points ``c0`` and background positions after them ``x_bg`` per channel, from
    the statistics of ``reference`` (default: the image itself)."""
    ref = img if reference is None else as_image(reference, "reference")
    if ref.shape != img.shape:
        raise ProcessingError(f"reference has shape {ref.shape}, the image has {img.shape}")
    med, madn = background_stats(ref, mask=mask, linked=linked)
    c0 = _black_points(med, madn, shadows_clip)
    xbg = np.clip((med - c0) / (1.0 - c0), 1e-7, 0.999)
    return c0, xbg


def _check_common(target_background: float, shadows_clip: float, color: str) -> None:
    check_number("target_background", target_background, 0.01, 0.6)
    check_number("shadows_clip", shadows_clip, -10.0, 0.0)
    check_choice("color", color, COLOR_MODES)


# ----------------------------------------------------------------------------------------------
# stretches
# ----------------------------------------------------------------------------------------------
def stf_stretch(data: Any, *, target_background: float = 0.25, shadows_clip: float = -2.8,
                linked: bool = True, color: str = "channels", mask: Any = None,
                reference: Any = None) -> Stretched:
    """Automatic screen-transfer stretch (PixInsight STF / Siril autostretch).

    ``data`` normalised to 0..1 (:func:`normalize`). Linked: one black point and midtone
    from the luminance statistics for all channels; unlinked: per channel (each channel's
    background lands on the target, which also neutralises it). ``mask`` (``True`` =
    excluded) limits the statistics to the sky; ``reference`` (same shape) is the image
    whose statistics set the black point and background (default ``data``; pass the image
    before noise reduction so that denoising does not deepen the stretch).
    """
    img = as_image(data)
    _check_common(target_background, shadows_clip, color)
    c0, xbg = _targets(img, mask, linked, shadows_clip, reference)
    ms = np.array([float(mtf(target_background, v)) for v in xbg])
    if img.ndim == 2 or color == "channels":
        out = np.empty_like(planes(img))
        for c, p in enumerate(planes(img)):
            out[c] = mtf(ms[c], _rescale(p, float(c0[c])))
        res = like(img, out)
    else:
        res = _apply(img, c0, lambda x: mtf(float(ms[0]), x).astype(np.float64), color,
                     linked)
    params = {"method": "stf", "black": c0.tolist(), "midtones": ms.tolist(),
              "target_background": target_background, "linked": linked}
    line = (f"postprocess.stretch v1: stf target {target_background:g}, shadows "
            f"{shadows_clip:g} MADN, {'linked' if linked else 'per channel'}, midtones "
            + ", ".join(f"{m:.5g}" for m in ms))
    return Stretched(res, params, (line,))


def ghs_stretch(data: Any, *, D: float, b: float = 0.0, SP: float = 0.0, LP: float = 0.0,
                HP: float = 1.0, black: float = 0.0, color: str = "luminance") -> Stretched:
    """Generalised hyperbolic stretch with given parameters (see :func:`ghs_curve`), after a
    black point ``black`` (0..1, on the normalised data)."""
    img = as_image(data)
    check_choice("color", color, COLOR_MODES)
    black = check_number("black", black, 0.0, 0.99)
    ghs_curve(0.5, D=D, b=b, SP=SP, LP=LP, HP=HP)  # validates the parameters
    fn = (lambda x: x) if D == 0 else _ghs_function(math.expm1(D), b, SP, LP, HP)
    c0 = np.full(1 if img.ndim == 2 else 3, black)
    res = _apply(img, c0, fn, color, True)
    params = {"method": "ghs", "D": D, "b": b, "SP": SP, "LP": LP, "HP": HP, "black": black}
    line = (f"postprocess.stretch v1: ghs D={D:.4g} b={b:g} SP={SP:.4g} LP={LP:g} HP={HP:g} "
            f"black {black:.5g}, {color}")
    return Stretched(res, params, (line,))


def _solve(fn: Callable[[float], float], target: float, lo: float, hi: float) -> float:
    """Bisection on an increasing ``fn`` over ``[lo, hi]`` (log-spaced values)."""
    flo, fhi = fn(lo), fn(hi)
    if target <= flo:
        return lo
    if target >= fhi:
        return hi
    a, b = math.log(lo), math.log(hi)
    for _ in range(80):
        mid = 0.5 * (a + b)
        if fn(math.exp(mid)) < target:
            a = mid
        else:
            b = mid
    return math.exp(0.5 * (a + b))


def auto_ghs(data: Any, *, target_background: float = 0.15, b: float = -1.0,
             shadows_clip: float = -2.8, SP: float | None = 0.0, LP: float = 0.0,
             HP: float = 1.0, color: str = "luminance", mask: Any = None,
             reference: Any = None) -> Stretched:
    """GHS with ``D`` solved so that the background lands on ``target_background``.

    The black point comes from the background statistics (``median + shadows_clip *
    MADN`` of the luminance); ``SP`` is relative to the data after the black point (``None``:
    at the background). Reachable targets depend on ``b`` (with ``SP`` at the background,
    up to about 0.5 for ``b >= -1``); an unreachable one gives the strongest stretch.
    ``mask`` and ``reference`` as in :func:`stf_stretch`.
    """
    img = as_image(data)
    _check_common(target_background, shadows_clip, color)
    b = check_number("b", b, -5.0, 15.0)
    c0, xbg = _targets(img, mask, True, shadows_clip, reference)
    x0 = float(xbg[0])
    sp = min(x0, 0.5) if SP is None else check_number("SP", SP, 0.0, 1.0)
    lp = min(check_number("LP", LP, 0.0, 1.0), sp)
    hp = max(check_number("HP", HP, 0.0, 1.0), sp)

    def at_bg(d: float) -> float:
        return float(_ghs_function(d, b, sp, lp, hp)(np.array([x0]))[0])

    d = _solve(at_bg, target_background, 1e-3, 1e12)
    fn = _ghs_function(d, b, sp, lp, hp)
    res = _apply(img, c0, fn, color, True)
    D = math.log1p(d)
    params = {"method": "ghs", "D": D, "b": b, "SP": sp, "LP": lp, "HP": hp,
              "black": float(c0[0]), "target_background": target_background}
    line = (f"postprocess.stretch v1: auto ghs target {target_background:g}: D={D:.4g} "
            f"b={b:g} SP={sp:.4g} LP={lp:g} HP={hp:g}, black {c0[0]:.5g} (shadows "
            f"{shadows_clip:g} MADN), {color}")
    return Stretched(res, params, (line,))


def asinh_stretch(data: Any, *, stretch: float | None = None, target_background: float = 0.15,
                  shadows_clip: float = -2.8, black: float | None = None, mask: Any = None,
                  reference: Any = None) -> Stretched:
    """Colour-preserving arcsinh stretch ``y = x asinh(beta L) / (L asinh(beta))``.

    ``stretch`` is ``beta``; ``None`` solves it for ``target_background``. ``black``
    (normalised units) defaults to the automatic black point; ``mask`` and ``reference`` as
    in :func:`stf_stretch`.
    """
    img = as_image(data)
    _check_common(target_background, shadows_clip, "luminance")
    c0, xbg = _targets(img, mask, True, shadows_clip, reference)
    if black is not None:
        bk = check_number("black", black, 0.0, 0.99)
        med, _ = background_stats(img if reference is None else reference, mask=mask)
        c0 = np.full_like(c0, bk)
        xbg = np.clip((med - c0) / (1.0 - c0), 1e-7, 0.999)
    x0 = float(xbg[0])

    def curve_for(beta: float) -> Callable[[np.ndarray], np.ndarray]:
        s = math.asinh(beta)
        return lambda x: np.arcsinh(beta * x) / s

    if stretch is None:
        beta = _solve(lambda v: float(curve_for(v)(np.array([x0]))[0]), target_background,
                      1e-3, 1e12)
    else:
        beta = check_number("stretch", stretch, 1e-6, 1e12)
    res = _apply(img, c0, curve_for(beta), "luminance", True)
    params = {"method": "asinh", "stretch": beta, "black": float(c0[0])}
    line = f"postprocess.stretch v1: asinh beta={beta:.5g}, black {c0[0]:.5g}"
    return Stretched(res, params, (line,))


# ----------------------------------------------------------------------------------------------
# levels, curves, saturation
# ----------------------------------------------------------------------------------------------
def levels(data: Any, *, black: float = 0.0, white: float = 1.0) -> np.ndarray:
    """``clip((data - black) / (white - black), 0, 1)`` on display data."""
    img = as_image(data)
    black = check_number("black", black, 0.0, 1.0)
    white = check_number("white", white, 0.0, 1.0)
    if white <= black:
        raise ConfigError(f"white point ({white:g}) must be above the black point ({black:g})")
    return np.clip((img - np.float32(black)) / np.float32(white - black), 0, 1).astype(
        np.float32)


def parse_curve(text: str) -> list[tuple[float, float]]:
    """``"0.25:0.2, 0.75:0.85"`` -> control points (0,0) and (1,1) are implied."""
    pts: list[tuple[float, float]] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            xs, ys = part.split(":")
            pts.append((float(xs), float(ys)))
        except ValueError:
            raise ConfigError(f"curve point {part!r} must be x:y with numbers in 0..1 "
                              f"(in {text!r})") from None
    return pts


def curves(data: Any, points: Any) -> np.ndarray:
    """Apply a monotone curve through ``points`` ``[(x, y), ...]`` (0..1; the ends (0, 0)
    and (1, 1) are added unless given) with a PCHIP spline, which never overshoots, so an
    increasing set of points gives an increasing curve."""
    img = as_image(data)
    pts = sorted({(float(x), float(y)) for x, y in points} | {(0.0, 0.0), (1.0, 1.0)})
    xs = np.array([p[0] for p in pts])
    ys = np.array([p[1] for p in pts])
    if np.any(np.diff(xs) <= 0) or xs[0] < 0 or xs[-1] > 1 or ys.min() < 0 or ys.max() > 1:
        raise ConfigError(f"curve points must have distinct x in 0..1 and y in 0..1, got "
                          f"{points!r}")
    if np.any(np.diff(ys) < 0):
        raise ConfigError(f"curve points must not decrease (a curve that inverts tones), got "
                          f"{points!r}")
    spline = PchipInterpolator(xs, ys)
    lut_x = np.linspace(0.0, 1.0, 4097)
    lut = np.clip(spline(lut_x), 0, 1).astype(np.float32)
    return np.interp(np.clip(img, 0, 1), lut_x, lut).astype(np.float32)


def saturation(data: Any, amount: float = 1.0, *, background: float | None = None
               ) -> np.ndarray:
    """Scale the chroma of display data: ``L + k (c - L)`` with ``k = 1 + (amount - 1) w``,
    ``w`` rising smoothly from 0 at the background to 1 at ``background + 0.25`` (so the
    background's colour noise keeps its level). ``amount`` 1 changes nothing; a pixel pushed
    past 1 is scaled down as a whole."""
    img = as_image(data)
    amount = check_number("amount", amount, 0.0, 4.0)
    if img.ndim == 2 or amount == 1.0:
        return img.copy()
    lum = luminance(img)
    bg = float(np.median(sample(lum))) if background is None else float(background)
    t = np.clip((lum - bg) / 0.25, 0.0, 1.0)
    w = t * t * (3 - 2 * t)
    k = (1.0 + (amount - 1.0) * w).astype(np.float32)
    out = lum[None] + k[None] * (img - lum[None])
    out = np.clip(out, 0.0, None)
    peak = out.max(axis=0)
    over = peak > 1.0
    if over.any():
        out[:, over] /= peak[over]
    return out.astype(np.float32)
