"""Per-frame conditions of the lights: pose, seeing, transparency, trails, satellites.

Each light draws its numbers from its own generator (seeded from the session seed, the
filter and the frame's index within that filter), always the same numbers in the same
order whatever the frame's flags, so flagging a frame as cloudy changes only what the flag
changes, and adding lights never changes earlier ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deepsky.simulate.psf import PSF
from deepsky.simulate.sensor import dark_scale
from deepsky.simulate.spec import SessionSpec
from deepsky.types import Transform

# Streams of random numbers; a frame's generator is seeded by (seed, stream, ...).
STREAM_STARS = 1
STREAM_GALAXY = 2
STREAM_NEBULA = 3
STREAM_BIAS_PATTERN = 4
STREAM_DARK_MAP = 5
STREAM_FLAT_MAP = 6
STREAM_LIGHT = 10
STREAM_NOISE = 11
STREAM_COSMIC = 12
STREAM_CALIB = 13

KIND_CODES = {"light": 0, "dark": 1, "flat": 2, "bias": 3, "darkflat": 4}


def stream(seed: int, *key: int) -> np.random.Generator:
    """The generator of one stream of the session: ``SeedSequence([seed, *key])``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(k) for k in key)]))


@dataclass(frozen=True)
class SatelliteTrail:
    """A straight trail across a frame (top-down frame pixels): endpoints on the image
    border, Gaussian cross-profile of FWHM ``width`` px and ``peak`` e- at its centre line."""

    x0: float
    y0: float
    x1: float
    y1: float
    width: float
    peak: float

    def render(self, shape: tuple[int, int], *, supersampling: int = 3) -> np.ndarray:
        """The trail's electrons on a ``shape`` grid, pixel-integrated by supersampling."""
        h, w = shape
        dx, dy = self.x1 - self.x0, self.y1 - self.y0
        length = math.hypot(dx, dy)
        out = np.zeros((h, w), dtype=np.float32)
        if length == 0 or self.peak <= 0:
            return out
        nx, ny = -dy / length, dx / length
        sigma = self.width / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        reach = 5.0 * sigma + 1.0
        dist = (np.arange(w, dtype=np.float32)[None, :] - np.float32(self.x0)) * np.float32(nx) \
            + (np.arange(h, dtype=np.float32)[:, None] - np.float32(self.y0)) * np.float32(ny)
        jj, ii = np.nonzero(np.abs(dist) < reach)
        ss = supersampling
        sub = (np.arange(ss) + 0.5) / ss - 0.5
        offs = (sub[:, None] * nx + sub[None, :] * ny).ravel()  # (ss*ss,)
        d = dist[jj, ii].astype(np.float64)[:, None] + offs[None, :]
        val = np.exp(-0.5 * (d / sigma) ** 2).mean(axis=1)
        out[jj, ii] = (self.peak * val).astype(np.float32)
        return out


@dataclass(frozen=True)
class LightParams:
    """Everything that varies from light to light (top-down geometry)."""

    index: int
    filter_index: int
    filter_name: str
    local_index: int
    exposure: float
    transform: Transform  # frame -> reference
    psf: PSF
    transparency: float
    background_factor: float
    ccd_temp: float
    dark_scale: float
    meridian_flipped: bool
    cloudy: bool
    trailed: bool
    satellite: SatelliteTrail | None
    pose_shift: tuple[float, float]
    pose_rotation: float

    @property
    def bad_reason(self) -> str:
        return ",".join(r for r, f in (("cloudy", self.cloudy), ("trailed", self.trailed)) if f)


def _pose(spec: SessionSpec, shift: tuple[float, float], rotation: float) -> Transform:
    cx, cy = (spec.width - 1) / 2.0, (spec.height - 1) / 2.0
    return Transform.translation(*shift) @ Transform.rotation_about(rotation, cx, cy)


def _raw_pose(spec: SessionSpec, index: int, u: np.ndarray) -> tuple[tuple[float, float], float,
                                                                     bool]:
    flipped = index in spec.flipped_lights
    if index == 0:
        dx = dy = rot = 0.0
    else:
        dx = (2 * u[0] - 1) * spec.max_shift
        dy = (2 * u[1] - 1) * spec.max_shift
        rot = (2 * u[2] - 1) * spec.max_rotation
    rot += index * spec.field_rotation_rate
    if flipped:
        rot += 180.0
        dx += (2 * u[10] - 1) * spec.meridian_flip_offset
        dy += (2 * u[11] - 1) * spec.meridian_flip_offset
    return (float(dx), float(dy)), float(rot), flipped


def _uniforms(spec: SessionSpec, index: int) -> tuple[np.ndarray, float]:
    fi, li = spec.light_filter(index)
    rng = stream(spec.seed, STREAM_LIGHT, fi, li)
    return rng.random(17), float(rng.standard_normal())


def draw_light_params(spec: SessionSpec, index: int, *, sky_electrons: float) -> LightParams:
    """Conditions of light ``index``. ``sky_electrons`` is the nominal sky per pixel of the
    frame (e-), used to scale a satellite trail to the frame's sky noise."""
    u, z = _uniforms(spec, index)
    fi, li = spec.light_filter(index)
    shift, rot, flipped = _raw_pose(spec, index, u)
    pose = _pose(spec, shift, rot)
    u0, _ = _uniforms(spec, 0)
    shift0, rot0, _ = _raw_pose(spec, 0, u0)
    transform = _pose(spec, shift0, rot0).inverse() @ pose
    lo, hi = spec.fwhm
    fwhm = lo + u[3] * (hi - lo)
    elong = spec.elongation[0] + u[4] * (spec.elongation[1] - spec.elongation[0])
    angle = math.pi * u[5]
    trailed = index in spec.trailed_frames
    trail = spec.trail_length[0] + u[8] * (spec.trail_length[1] - spec.trail_length[0]) \
        if trailed else 0.0
    psf = PSF(fwhm=float(fwhm), beta=float(spec.moffat_beta), elongation=float(elong),
              angle=float(angle), trail_length=float(trail),
              trail_angle=float(math.pi * u[9]) if trailed else 0.0)
    cloudy = index in spec.cloudy_frames
    tr = spec.transparency[0] + u[6] * (spec.transparency[1] - spec.transparency[0])
    bg = spec.background_variation[0] + u[7] * (spec.background_variation[1]
                                                 - spec.background_variation[0])
    if cloudy:
        tr *= spec.cloudy_transparency
        bg *= spec.cloudy_background
    temp = round(spec.mean_temperature + spec.temperature_jitter * z, 1)
    sat = None
    if index in spec.satellite_frames:
        sat = _satellite(spec, u, sky_electrons * bg)
    return LightParams(
        index=int(index), filter_index=fi, filter_name=spec.filters[fi],  # type: ignore[index]
        local_index=li, exposure=spec.light_exposure(index), transform=transform, psf=psf,
        transparency=float(tr), background_factor=float(bg), ccd_temp=float(temp),
        dark_scale=dark_scale(spec, temp), meridian_flipped=flipped, cloudy=cloudy,
        trailed=trailed, satellite=sat, pose_shift=shift, pose_rotation=rot,
    )


def _satellite(spec: SessionSpec, u: np.ndarray, sky_e: float) -> SatelliteTrail:
    w, h = spec.width, spec.height
    px, py = w * (0.2 + 0.6 * u[12]), h * (0.2 + 0.6 * u[13])
    phi = math.pi * u[14]
    dx, dy = math.cos(phi), math.sin(phi)
    tmin, tmax = -math.inf, math.inf
    for p, d, lo, hi in ((px, dx, -0.5, w - 0.5), (py, dy, -0.5, h - 0.5)):
        if abs(d) < 1e-12:
            continue
        t1, t2 = (lo - p) / d, (hi - p) / d
        tmin, tmax = max(tmin, min(t1, t2)), min(tmax, max(t1, t2))
    width = spec.satellite_width[0] + u[15] * (spec.satellite_width[1] - spec.satellite_width[0])
    blo, bhi = spec.satellite_brightness
    snr = math.exp(math.log(blo) + u[16] * (math.log(bhi) - math.log(blo)))
    noise = math.sqrt(max(sky_e, 0.0) + spec.read_noise ** 2)
    return SatelliteTrail(x0=px + tmin * dx, y0=py + tmin * dy, x1=px + tmax * dx,
                          y1=py + tmax * dy, width=float(width), peak=float(snr * noise))


def calibration_conditions(spec: SessionSpec, kind: str, filter_index: int,
                           index: int) -> tuple[float, float]:
    """``(sensor temperature, level factor)`` of calibration frame ``index`` of ``kind``.

    The temperature is rounded to 0.1 C as a capture program writes it; the level factor
    (flats only, else 1) is the flat panel's drift, uniform in [0.98, 1.02].
    """
    rng = stream(spec.seed, STREAM_CALIB, KIND_CODES[kind], filter_index, index)
    z, u = float(rng.standard_normal()), float(rng.random())
    temp = round(spec.mean_temperature + spec.temperature_jitter * z, 1)
    return temp, (0.98 + 0.04 * u) if kind == "flat" else 1.0
