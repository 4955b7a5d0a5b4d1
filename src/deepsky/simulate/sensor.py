"""The camera: bias pattern, dark current, flat field, and turning electrons into ADU.

All maps are in the top-down geometry of the sensor (row 0 is the top row).

Signal chain of one exposure of ``t`` seconds::

    e_expected = S * flat + D * t * k(T)           (S: sky and objects, e- before the flat)
    e = Poisson(e_expected) + cosmic rays          (shot noise)
    e = min(e, full_well) + Normal(0, read_noise)  (saturation, read noise)
    ADU = clip(rint(e / egain + bias), 0, 65535)   (bias includes the column pattern)

with ``k(T) = 2 ** ((T - T_set) / doubling)`` for the frame's sensor temperature ``T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deepsky.simulate.spec import SessionSpec


def cfa_indices(pattern: str) -> np.ndarray:
    """``(2, 2)`` channel indices (0 R, 1 G, 2 B) of a Bayer pattern: ``cfa[y % 2, x % 2]``."""
    return np.array([["RGB".index(pattern[2 * dy + dx]) for dx in (0, 1)] for dy in (0, 1)])


@dataclass(frozen=True, eq=False)
class SensorModel:
    """Fixed properties of the sensor (top-down geometry).

    ``bias`` ADU; ``dark`` e-/s at the set temperature (including hot pixels and amp glow);
    ``flat`` the normalised flat field (mean 1; vignetting x dust x PRNU x per-channel QE);
    ``qe_map`` the per-pixel channel QE (ones for mono); ``cfa`` the channel indices of the
    top-down pattern or None.
    """

    bias: np.ndarray
    column_offsets: np.ndarray
    dark: np.ndarray
    hot_pixels: np.ndarray  # (n, 3): x, y, rate e-/s
    cold_pixels: np.ndarray  # (n, 2): x, y
    amp_glow_xy: tuple[float, float]
    amp_glow_scale_px: float
    flat: np.ndarray
    qe_map: np.ndarray
    flat_norm: float
    dust: np.ndarray  # (n, 4): x, y, radius, depth
    vignetting_center: tuple[float, float]
    vignetting_radius: float
    cfa: np.ndarray | None


def make_sensor(spec: SessionSpec, rng_bias: np.random.Generator,
                rng_dark: np.random.Generator, rng_flat: np.random.Generator) -> SensorModel:
    """Draw the sensor's fixed patterns (each from its own generator)."""
    h, w = spec.height, spec.width
    # bias: level plus fixed per-column offsets
    cols = (spec.column_pattern * rng_bias.standard_normal(w)).astype(np.float32)
    bias = np.float32(spec.bias_level) + np.broadcast_to(cols[None, :], (h, w))
    bias = np.ascontiguousarray(bias, dtype=np.float32)

    # dark current: gamma-distributed per pixel (mean 1), amp glow, hot pixels
    if spec.dark_nonuniformity > 0:
        k = 1.0 / spec.dark_nonuniformity ** 2
        base = rng_dark.gamma(k, 1.0 / k, size=(h, w)).astype(np.float32)
    else:
        base = np.ones((h, w), dtype=np.float32)
    dark = base * np.float32(spec.dark_current)
    corner = {"top-left": (0.0, 0.0), "top-right": (w - 1.0, 0.0),
              "bottom-left": (0.0, h - 1.0), "bottom-right": (w - 1.0, h - 1.0)}[
        spec.amp_glow_corner]
    glow_scale = spec.amp_glow_scale * math.hypot(w, h)
    if spec.amp_glow > 0:
        xx = (np.arange(w, dtype=np.float32) - np.float32(corner[0]))[None, :]
        yy = (np.arange(h, dtype=np.float32) - np.float32(corner[1]))[:, None]
        dist = np.sqrt(xx * xx + yy * yy)
        dark += np.float32(spec.amp_glow) * np.exp(-dist / np.float32(glow_scale))
    n_hot = int(round(spec.hot_pixel_fraction * h * w))
    hot_idx = np.sort(rng_dark.choice(h * w, size=n_hot, replace=False)) if n_hot else \
        np.zeros(0, dtype=np.int64)
    lo, hi = spec.hot_pixel_rate
    hot_rate = np.exp(rng_dark.uniform(math.log(lo), math.log(hi), size=n_hot))
    hy, hx = np.divmod(hot_idx, w)
    dark[hy, hx] = hot_rate.astype(np.float32)
    hot = np.stack([hx, hy, dark[hy, hx].astype(np.float64)], axis=1) if n_hot else \
        np.zeros((0, 3))

    # flat field: vignetting x dust x PRNU (x cold pixels) x QE
    cx = (w - 1) / 2.0 + spec.vignetting_offset[0] * w
    cy = (h - 1) / 2.0 + spec.vignetting_offset[1] * h
    vr = 0.5 * math.hypot(w, h)
    xx = ((np.arange(w, dtype=np.float32) - np.float32(cx)) / np.float32(vr))[None, :]
    yy = ((np.arange(h, dtype=np.float32) - np.float32(cy)) / np.float32(vr))[:, None]
    rho2 = xx * xx + yy * yy
    if spec.vignetting > 0:
        illum = np.exp(rho2 * np.float32(math.log(1.0 - spec.vignetting)))
    else:
        illum = np.ones((h, w), dtype=np.float32)
    u = rng_flat.random((spec.dust_count, 4))
    dust = np.zeros((spec.dust_count, 4))
    for k in range(spec.dust_count):
        r0 = spec.dust_radius[0] + u[k, 2] * (spec.dust_radius[1] - spec.dust_radius[0])
        depth = spec.dust_depth[0] + u[k, 3] * (spec.dust_depth[1] - spec.dust_depth[0])
        dx, dy = u[k, 0] * (w - 1), u[k, 1] * (h - 1)
        dust[k] = (dx, dy, r0, depth)
        reach = r0 * 2.0
        xa, xb = max(0, int(dx - reach)), min(w, int(dx + reach) + 2)
        ya, yb = max(0, int(dy - reach)), min(h, int(dy + reach) + 2)
        gx = np.arange(xa, xb, dtype=np.float32)[None, :] - np.float32(dx)
        gy = np.arange(ya, yb, dtype=np.float32)[:, None] - np.float32(dy)
        rr = np.sqrt(gx * gx + gy * gy)
        shadow = 1.0 / (1.0 + np.exp((rr - np.float32(r0)) / np.float32(0.12 * r0)))
        illum[ya:yb, xa:xb] *= (np.float32(1.0) - np.float32(depth) * shadow)
    if spec.prnu > 0:
        illum = illum * (np.float32(1.0)
                         + np.float32(spec.prnu) * rng_flat.standard_normal((h, w),
                                                                           dtype=np.float32))
    n_cold = int(round(spec.cold_pixel_fraction * h * w))
    cold_idx = np.sort(rng_flat.choice(h * w, size=n_cold, replace=False)) if n_cold else \
        np.zeros(0, dtype=np.int64)
    cy_, cx_ = np.divmod(cold_idx, w)
    illum[cy_, cx_] *= np.float32(0.1)
    cold = np.stack([cx_, cy_], axis=1).astype(np.float64) if n_cold else np.zeros((0, 2))
    if spec.bayer is not None:
        cfa = cfa_indices(spec.bayer)
        qe = np.asarray(spec.qe, dtype=np.float32)[cfa]
        qe_map = np.tile(qe, (h // 2, w // 2))
    else:
        cfa = None
        qe_map = np.ones((h, w), dtype=np.float32)
    raw = illum * qe_map
    norm = float(raw.mean(dtype=np.float64))
    flat = (raw / np.float32(norm)).astype(np.float32)
    return SensorModel(
        bias=bias, column_offsets=cols, dark=dark.astype(np.float32), hot_pixels=hot,
        cold_pixels=cold, amp_glow_xy=corner, amp_glow_scale_px=float(glow_scale), flat=flat,
        qe_map=qe_map.astype(np.float32), flat_norm=norm, dust=dust,
        vignetting_center=(float(cx), float(cy)), vignetting_radius=float(vr), cfa=cfa,
    )


def dark_scale(spec: SessionSpec, temperature: float) -> float:
    """Factor on the dark current at sensor ``temperature`` (1 at the set point)."""
    return float(2.0 ** ((temperature - spec.set_temperature) / spec.dark_doubling))


# ----------------------------------------------------------------------------------------------
# cosmic rays
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CosmicRays:
    """Hits of one exposure: ``hits`` ``(n, 4)`` = first pixel x, y, total e-, length (px);
    ``x, y, e`` the affected pixels and the electrons each receives (top-down)."""

    hits: np.ndarray
    x: np.ndarray
    y: np.ndarray
    e: np.ndarray

    def __len__(self) -> int:
        return len(self.hits)


_NEIGHBOURS = np.array([(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)])


def draw_cosmic_rays(spec: SessionSpec, exposure: float, rng: np.random.Generator) -> CosmicRays:
    """Sharp hits, ``cosmic_ray_rate`` per megapixel per second: mostly single pixels, some
    short straight tracks of 2-4 pixels, 800-15000 e- each (log-uniform)."""
    h, w = spec.height, spec.width
    n = int(rng.poisson(spec.cosmic_ray_rate * h * w / 1e6 * exposure)) if exposure > 0 else 0
    u = rng.random((n, 5))
    x0 = np.minimum((u[:, 0] * w).astype(np.int64), w - 1)
    y0 = np.minimum((u[:, 1] * h).astype(np.int64), h - 1)
    energy = np.exp(math.log(800.0) + u[:, 2] * math.log(15000.0 / 800.0))
    length = np.searchsorted(np.array([0.55, 0.8, 0.92]), u[:, 3], side="right") + 1
    direction = _NEIGHBOURS[np.minimum((u[:, 4] * 8).astype(np.int64), 7)]
    xs, ys, es = [], [], []
    for k in range(n):
        steps = np.arange(length[k])
        px = np.clip(x0[k] + steps * direction[k, 0], 0, w - 1)
        py = np.clip(y0[k] + steps * direction[k, 1], 0, h - 1)
        share = np.full(length[k], 1.0 / length[k])
        xs.append(px)
        ys.append(py)
        es.append(energy[k] * share)
    if n:
        return CosmicRays(hits=np.stack([x0, y0, energy, length], axis=1).astype(np.float64),
                          x=np.concatenate(xs), y=np.concatenate(ys), e=np.concatenate(es))
    z = np.zeros(0)
    return CosmicRays(hits=np.zeros((0, 4)), x=z.astype(np.int64), y=z.astype(np.int64), e=z)


# ----------------------------------------------------------------------------------------------
# electrons -> ADU
# ----------------------------------------------------------------------------------------------
def expose(expected: np.ndarray | None, sensor: SensorModel, spec: SessionSpec,
           rng: np.random.Generator, *, cosmic: CosmicRays | None = None) -> np.ndarray:
    """Turn expected electrons ``(H, W)`` (None for a bias) into a uint16 raw frame.

    Shot noise (Poisson), cosmic-ray charge, full-well clipping, Gaussian read noise,
    conversion by ``egain`` plus the bias pattern, rounding and 16-bit clipping.
    """
    h, w = spec.height, spec.width
    if expected is None:
        e = np.zeros((h, w), dtype=np.float32)
    else:
        e = rng.poisson(np.maximum(expected, 0.0)).astype(np.float32)
    if cosmic is not None and len(cosmic):
        np.add.at(e, (cosmic.y, cosmic.x), cosmic.e.astype(np.float32))
    np.minimum(e, np.float32(spec.full_well), out=e)
    if spec.read_noise > 0:
        e += rng.standard_normal((h, w), dtype=np.float32) * np.float32(spec.read_noise)
    adu = e * np.float32(1.0 / spec.egain) + sensor.bias
    np.rint(adu, out=adu)
    np.clip(adu, 0, 65535, out=adu)
    return adu.astype(np.uint16)
