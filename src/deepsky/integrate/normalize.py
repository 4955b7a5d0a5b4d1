"""Normalisation: make every frame's pixel values comparable before rejection and averaging.

Each frame (and each colour channel) gets ``normalised = mul * value + add``:

``none``               mul = 1, add = 0
``additive``           the background levels are matched: add = loc_ref - loc_i
``multiplicative``     the levels are matched by a factor: mul = loc_ref / loc_i
``additive_scaling``   location and scale matched (robust location and scale of the frame,
                       as PixInsight's IKSS and Siril's addscale): mul = s_ref / s_i,
                       add = loc_ref - mul * loc_i
``photometric``        the signal is matched by the stars: mul = median flux ratio of the
                       stars matched to the reference, add = loc_ref - mul * loc_i. This is
                       what mixed exposures and passing haze need: scaling by the
                       background spread matches the *noise*, not the signal, so a 3 s frame
                       would be blown up to look like a 60 s one.

Location and scale are robust (``plane_stats``): the location is the median of a clipped
sample of the frame's pixels; the scale is the pixel-to-pixel noise, from the differences of
neighbouring pixels (``1.4826 MAD / sqrt 2``), so that a gradient or vignetting across the
field does not pass for noise (the spread of the pixel values themselves would).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepsky.medians import all_finite, median

METHODS = ("none", "additive", "multiplicative", "additive_scaling", "photometric")


@dataclass(frozen=True)
class ChannelStats:
    """Robust location and scale of one frame (per channel: arrays of length C)."""

    location: np.ndarray
    scale: np.ndarray

    def to_json(self) -> dict[str, list[float]]:
        return {"location": [float(v) for v in self.location],
                "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_json(cls, d: dict[str, list[float]]) -> "ChannelStats":
        return cls(np.asarray(d["location"], float), np.asarray(d["scale"], float))


def robust_stats(values: np.ndarray, *, max_samples: int = 100_000, clip: float = 4.0,
                 iterations: int = 3, finite: bool | None = None) -> tuple[float, float]:
    """Location (median) and scale (sqrt of the biweight midvariance) of the pixel values,
    after iterative ``clip``-sigma clipping (stars and hot pixels do not count).
    ``finite``: whether every value is finite, when the caller knows (else tested)."""
    arr = np.asarray(values)
    if arr.size > max_samples and (all_finite(arr) if finite is None else finite):
        # The same samples as below, without copying the whole image first.
        v = arr.reshape(-1)[::arr.size // max_samples + 1].astype(np.float64)
    else:
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size > max_samples:
            step = v.size // max_samples + 1
            v = v[::step]
    if v.size == 0:
        return float("nan"), float("nan")
    loc = float(median(v))
    scale = 1.4826 * float(median(np.abs(v - loc)))
    last = None
    for _ in range(iterations):
        if scale <= 0:
            break
        keep = np.abs(v - loc) < clip * scale
        if last is not None and np.array_equal(keep, last):
            break  # the same samples as the last round: it would give the same loc and scale
        w = v[keep]
        if w.size < 10:
            break
        loc = float(median(w))
        scale = _biweight_scale(w, loc)
        last = keep
    return loc, scale


def _biweight_scale(v: np.ndarray, loc: float, c: float = 9.0) -> float:
    mad = float(median(np.abs(v - loc)))
    if mad <= 0:
        return 0.0
    u = (v - loc) / (c * mad)
    m = np.abs(u) < 1
    d = v[m] - loc
    um = u[m]
    num = np.sqrt(len(v) * np.sum(d * d * (1 - um * um) ** 4))
    den = np.abs(np.sum((1 - um * um) * (1 - 5 * um * um)))
    return float(num / den) if den > 0 else 0.0


def pixel_noise(plane: np.ndarray, *, max_samples: int = 200_000,
                finite: bool | None = None) -> float:
    """Pixel-to-pixel noise of an image plane: 1.4826 MAD of horizontal neighbour differences
    divided by sqrt 2 (insensitive to gradients; stars touch few pairs). ``finite`` as for
    :func:`robust_stats`."""
    h, w = plane.shape
    n = h * (w - 1)
    if n > max_samples and (all_finite(plane) if finite is None else finite):
        # The same differences as below, only those sampled are computed.
        f = np.arange(0, n, n // max_samples + 1)
        i = f + f // (w - 1)  # flat index of pair f's left pixel (row r = f // (w - 1))
        flat = plane.reshape(-1) if plane.flags.c_contiguous else np.ravel(plane)
        d = flat[i + 1] - flat[i]
    else:
        d = (plane[:, 1:] - plane[:, :-1]).ravel()
        d = d[np.isfinite(d)]
        if d.size > max_samples:
            d = d[:: d.size // max_samples + 1]
    if d.size == 0:
        return float("nan")
    return float(1.4826 * median(np.abs(d - median(d))) / np.sqrt(2.0))


def plane_stats(plane: np.ndarray, *, finite: bool | None = None) -> tuple[float, float]:
    """(location, noise) of one plane: clipped median and pixel-to-pixel noise. ``finite``
    as for :func:`robust_stats`."""
    if finite is None:
        finite = all_finite(plane)  # (once for both)
    loc, _ = robust_stats(plane, finite=finite)
    return loc, pixel_noise(plane, finite=finite)


def cfa_channel_stats(mosaic: np.ndarray, pattern: str) -> ChannelStats:
    """R, G, B location and noise straight from a CFA mosaic (no debayering; each 2x2 phase a
    plane of its own, the two greens averaged)."""
    locs, scales = [], []
    for colour in "RGB":
        planes = [mosaic[k // 2::2, k % 2::2] for k, c in enumerate(pattern) if c == colour]
        loc, _ = robust_stats(np.concatenate([p.ravel() for p in planes]))
        noise = float(np.mean([pixel_noise(p) for p in planes]))
        locs.append(loc)
        scales.append(noise)
    return ChannelStats(np.array(locs), np.array(scales))


def image_stats(image: np.ndarray, *, finite: bool | None = None) -> ChannelStats:
    """Location and noise per channel of a mono ``(H, W)`` or colour ``(3, H, W)`` image.
    ``finite``: True when the caller knows every pixel is finite (else each plane is
    tested)."""
    planes = image[None] if image.ndim == 2 else image
    pairs = [plane_stats(p, finite=True if finite else None) for p in planes]
    return ChannelStats(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))


def coefficients(stats: list[ChannelStats], ref: int, *, method: str = "photometric",
                 flux_ratios: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(mul, add)`` arrays of shape ``(N, C)`` so that ``mul * value + add`` puts every
    frame on the reference frame's scale.

    ``flux_ratios[i]`` is frame i's star flux divided by the reference's (``photometric``);
    a missing (NaN) ratio falls back to the ratio of scales.
    """
    if method not in METHODS:
        raise ValueError(f"unknown normalisation {method!r}; one of {', '.join(METHODS)}")
    loc = np.array([s.location for s in stats], float)
    sc = np.array([s.scale for s in stats], float)
    n, c = loc.shape
    mul = np.ones((n, c))
    add = np.zeros((n, c))
    if method == "none":
        return mul, add
    if method == "additive":
        add = loc[ref] - loc
        return mul, add
    if method == "multiplicative":
        with np.errstate(divide="ignore", invalid="ignore"):
            mul = np.where(loc != 0, loc[ref] / loc, 1.0)
        return mul, add
    with np.errstate(divide="ignore", invalid="ignore"):
        scale_ratio = np.where(sc > 0, sc[ref] / sc, 1.0)
    if method == "additive_scaling":
        mul = scale_ratio
    else:  # photometric
        fr = np.full(n, np.nan) if flux_ratios is None else np.asarray(flux_ratios, float)
        for i in range(n):
            if np.isfinite(fr[i]) and fr[i] > 0:
                mul[i, :] = 1.0 / fr[i]
            else:
                mul[i, :] = scale_ratio[i]
    mul = np.where(np.isfinite(mul) & (mul > 0), mul, 1.0)
    add = loc[ref] - mul * loc
    return mul, add
