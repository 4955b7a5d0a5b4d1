"""The sky: star catalogue, galaxy, nebula and sky background, in reference coordinates.

Model-building functions take the spec and a ``numpy.random.Generator`` and return
immutable models; rendering functions take a model, the frame's transform (frame pixels ->
reference pixels) and its PSF, and return arrays. Rates are electrons per second per pixel
of mean sensitivity (flat field = 1), per colour channel R, G, B for a Bayer sensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from deepsky.simulate.psf import PSF
from deepsky.simulate.spec import SessionSpec, filter_band
from deepsky.types import Transform

# Effective wavelengths (m) of the R, G, B channels, for black-body star colours.
_LAMBDA = np.array([610e-9, 535e-9, 465e-9])
_HC_K = 1.438777e-2  # h c / k in m K
# Channel vectors of the two emission lines, mean 1 over R, G, B.
_HALPHA_RGB = np.array([3.0, 0.0, 0.0])
_OIII_RGB = np.array([0.0, 1.5, 1.5])
_SERSIC4_B = 7.669249


def blackbody_color(temperature: np.ndarray | float) -> np.ndarray:
    """Relative R, G, B flux of black bodies at ``temperature`` (K), mean 1 per star."""
    t = np.atleast_1d(np.asarray(temperature, dtype=np.float64))
    x = _HC_K / (_LAMBDA[None, :] * t[:, None])
    b = _LAMBDA[None, :] ** -5 / np.expm1(np.minimum(x, 700.0))
    return b / b.mean(axis=1, keepdims=True)


def channel_rates(color: np.ndarray, filter_name: str, *, is_color: bool) -> np.ndarray:
    """Rates seen through ``filter_name`` for sources with per-channel ``color`` ``(n, 3)``
    (continuum light): ``(n, 3)`` for a Bayer sensor, ``(n, 1)`` (the channel mean) for mono."""
    cont, _ = filter_band(filter_name)
    r = np.asarray(color, dtype=np.float64).reshape(-1, 3) * np.asarray(cont)[None, :]
    return r if is_color else r.mean(axis=1, keepdims=True)


def line_rates(filter_name: str, *, is_color: bool, halpha: float = 0.7) -> np.ndarray:
    """Per-channel rate factors of an emission nebula (H-alpha share ``halpha``, the rest
    [OIII]) through ``filter_name``: ``(3,)`` or ``(1,)``; 1.0 in L for mono."""
    _, (t_ha, t_o3) = filter_band(filter_name)
    r = halpha * t_ha * _HALPHA_RGB + (1.0 - halpha) * t_o3 * _OIII_RGB
    return r if is_color else np.array([r.mean()])


# ----------------------------------------------------------------------------------------------
# stars
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class StarCatalogue:
    """Stars of the sky, in reference pixel coordinates.

    ``flux`` is the L flux (e-/s); ``color`` the relative R, G, B flux (mean 1 per star;
    exactly (1, 1, 1) for ``neutral`` stars); ``temperature`` the colour temperature (K,
    NaN for neutral stars).
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    color: np.ndarray
    temperature: np.ndarray
    neutral: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def rates(self, filter_name: str, *, is_color: bool) -> np.ndarray:
        """``(n, 3)`` (Bayer) or ``(n, 1)`` (mono) e-/s through ``filter_name``."""
        return self.flux[:, None] * channel_rates(self.color, filter_name, is_color=is_color)


def catalogue_radius(spec: SessionSpec) -> float:
    """Radius (px) around the image centre that holds every light's footprint, plus a
    margin for the wings of bright stars just outside.

    Frames are rotations about the centre plus shifts (dither and meridian-flip offsets of
    the frame and of the reference), so this bound depends on the spec only, never on the
    number of lights: adding lights does not change the catalogue.
    """
    half_diag = 0.5 * math.hypot(spec.width, spec.height)
    return half_diag + 2.0 * math.sqrt(2.0) * (spec.max_shift + spec.meridian_flip_offset) \
        + 64.0


def make_star_catalogue(spec: SessionSpec, rng: np.random.Generator) -> StarCatalogue:
    """Stars uniform over the disc of :func:`catalogue_radius`, with a power-law flux
    distribution ``N(>F) ~ F**-slope`` between ``star_flux`` limits and black-body colours."""
    cx, cy = (spec.width - 1) / 2.0, (spec.height - 1) / 2.0
    radius = catalogue_radius(spec)
    n = int(rng.poisson(spec.star_density * math.pi * radius ** 2 / 1e6))
    u = rng.random((n, 5))
    r = radius * np.sqrt(u[:, 0])
    phi = 2.0 * math.pi * u[:, 1]
    x = cx + r * np.cos(phi)
    y = cy + r * np.sin(phi)
    fmin, fmax = spec.star_flux
    a = spec.star_flux_slope
    flux = fmin * (1.0 - u[:, 2] * (1.0 - (fmin / fmax) ** a)) ** (-1.0 / a)
    t_med, t_sig = spec.star_temperature
    temp = np.clip(t_med * np.exp(t_sig * rng.standard_normal(n)), 2400.0, 30000.0)
    neutral = u[:, 3] < spec.neutral_star_fraction
    color = blackbody_color(temp) if n else np.zeros((0, 3))
    color[neutral] = 1.0
    temp = np.where(neutral, np.nan, temp)
    return StarCatalogue(x=x, y=y, flux=flux, color=color, temperature=temp, neutral=neutral)


# ----------------------------------------------------------------------------------------------
# galaxy
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GalaxyModel:
    """An inclined exponential disk plus a de Vaucouleurs bulge, truncated at
    ``truncation`` (elliptical radius along the major axis, px).

    ``position_angle`` (deg) is the major axis direction from +x towards +y.
    """

    x: float
    y: float
    flux: float
    disk_scale: float
    bulge_radius: float
    bulge_fraction: float
    inclination: float
    axis_ratio: float
    bulge_axis_ratio: float
    position_angle: float
    truncation: float
    disk_color: tuple[float, float, float]
    bulge_color: tuple[float, float, float]

    def component_rates(self, filter_name: str, *, is_color: bool) -> tuple[np.ndarray, np.ndarray]:
        """Total (disk, bulge) rates (e-/s) per channel through ``filter_name``."""
        cols = channel_rates(np.array([self.disk_color, self.bulge_color]), filter_name,
                             is_color=is_color)
        return (self.flux * (1 - self.bulge_fraction) * cols[0],
                self.flux * self.bulge_fraction * cols[1])

    def profiles(self, xr: np.ndarray, yr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unnormalised disk and bulge surface brightness at reference coordinates."""
        pa = math.radians(self.position_angle)
        dx, dy = xr - self.x, yr - self.y
        along = dx * math.cos(pa) + dy * math.sin(pa)
        across = -dx * math.sin(pa) + dy * math.cos(pa)
        rd = np.sqrt(along * along + (across / self.axis_ratio) ** 2)
        rb = np.sqrt(along * along + (across / self.bulge_axis_ratio) ** 2)
        disk = np.where(rd <= self.truncation, np.exp(-rd / self.disk_scale), 0.0)
        bulge = np.where(
            rb <= self.truncation,
            np.exp(-_SERSIC4_B * (np.sqrt(np.sqrt(rb / self.bulge_radius)) - 1.0)), 0.0)
        return disk.astype(np.float32), bulge.astype(np.float32)


def make_galaxy(spec: SessionSpec, rng: np.random.Generator) -> GalaxyModel:
    u = rng.random(3)
    if spec.galaxy_position is None:
        gx = (spec.width - 1) / 2.0 + (u[0] - 0.5) * 0.3 * spec.width
        gy = (spec.height - 1) / 2.0 + (u[1] - 0.5) * 0.3 * spec.height
    else:
        gx, gy = (float(v) for v in spec.galaxy_position)
    pa = 180.0 * u[2] if spec.galaxy_position_angle is None else spec.galaxy_position_angle
    ci = math.cos(math.radians(spec.galaxy_inclination))
    q = math.sqrt(ci * ci * (1 - 0.15 ** 2) + 0.15 ** 2)
    qb = math.sqrt(ci * ci * (1 - 0.6 ** 2) + 0.6 ** 2)
    trunc = max(6.0 * spec.galaxy_disk_scale, 8.0 * spec.galaxy_bulge_radius)
    disk_col = tuple(float(v) for v in blackbody_color(7500.0)[0])
    bulge_col = tuple(float(v) for v in blackbody_color(4300.0)[0])
    return GalaxyModel(
        x=float(gx), y=float(gy), flux=float(spec.galaxy_flux),
        disk_scale=float(spec.galaxy_disk_scale), bulge_radius=float(spec.galaxy_bulge_radius),
        bulge_fraction=float(spec.galaxy_bulge_fraction),
        inclination=float(spec.galaxy_inclination), axis_ratio=q, bulge_axis_ratio=qb,
        position_angle=float(pa), truncation=float(trunc),
        disk_color=disk_col, bulge_color=bulge_col,  # type: ignore[arg-type]
    )


def render_galaxy(
    gal: GalaxyModel,
    transform: Transform,
    shape: tuple[int, int],
    psf: PSF,
    disk_rate: np.ndarray,
    bulge_rate: np.ndarray,
    *,
    cfa: np.ndarray | None = None,
    supersampling: int = 4,
) -> tuple[int, int, np.ndarray] | None:
    """The galaxy seen in a frame: ``(y0, x0, patch)`` to add at ``[y0:, x0:]``, or None.

    The profile is sampled on the frame's supersampled grid through ``transform`` (frame ->
    reference), each component normalised to its exact total (``disk_rate``/``bulge_rate``
    per channel), then convolved with the frame's pixel-integrated PSF (FFT). ``patch`` is
    ``(C, h, w)``, or a mosaic ``(h, w)`` when ``cfa`` is given.
    """
    inv = transform.inverse()
    (px, py), = inv.apply([[gal.x, gal.y]])
    kern = psf.kernel()
    rk = kern.shape[0] // 2
    hb = int(math.ceil(gal.truncation + 1.5))
    x0, y0 = int(round(px)) - hb, int(round(py)) - hb
    side = 2 * hb + 1
    if x0 + side + rk <= 0 or y0 + side + rk <= 0 or x0 - rk >= shape[1] or \
            y0 - rk >= shape[0]:
        return None
    ss = supersampling
    sub = (np.arange(side * ss) + 0.5) / ss - 0.5
    xs, ys = x0 + sub, y0 + sub
    m = transform.matrix
    xr = m[0, 0] * xs[None, :] + m[0, 1] * ys[:, None] + m[0, 2]
    yr = m[1, 0] * xs[None, :] + m[1, 1] * ys[:, None] + m[1, 2]
    disk, bulge = gal.profiles(xr, yr)
    comps = []
    for prof, rates in ((disk, disk_rate), (bulge, bulge_rate)):
        pix = prof.reshape(side, ss, side, ss).sum(axis=(1, 3), dtype=np.float64)
        total = pix.sum()
        if total <= 0 or not np.any(np.asarray(rates) > 0):
            comps.append(None)
            continue
        conv = fftconvolve(pix / total, kern.astype(np.float64), mode="full")
        comps.append(np.maximum(conv, 0.0))
    rates = np.array([np.asarray(disk_rate, float), np.asarray(bulge_rate, float)])
    nch = rates.shape[1]
    size = side + 2 * rk
    planes = np.zeros((nch, size, size), dtype=np.float64)
    for k, comp in enumerate(comps):
        if comp is not None:
            planes += rates[k][:, None, None] * comp[None]
    py0, px0 = y0 - rk, x0 - rk
    if cfa is not None:
        yy = (py0 + np.arange(size)) % 2
        xx = (px0 + np.arange(size)) % 2
        ch = np.asarray(cfa)[yy[:, None], xx[None, :]]
        patch = np.take_along_axis(planes, ch[None], axis=0)[0]
        return py0, px0, patch.astype(np.float32)
    return py0, px0, planes.astype(np.float32)


def galaxy_aperture(gal: GalaxyModel, psf: PSF) -> float:
    """Radius (px) of a circle around the galaxy centre holding the truncated model and
    the PSF's core: ``truncation + 3 * fwhm_major``."""
    return float(gal.truncation + 3.0 * psf.fwhm_major)


# ----------------------------------------------------------------------------------------------
# nebula
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NebulaModel:
    """An emission nebula: a sum of round Gaussian blobs ``(x, y, sigma, weight)``
    (weights sum to 1), total L flux ``flux`` e-/s, 70 % H-alpha and 30 % [OIII]."""

    flux: float
    blobs: tuple[tuple[float, float, float, float], ...]
    halpha: float = 0.7


def make_nebula(spec: SessionSpec, rng: np.random.Generator) -> NebulaModel:
    u = rng.random((5, 4))
    if spec.nebula_position is None:
        nx = (spec.width - 1) / 2.0 + (u[0, 0] - 0.5) * 0.5 * spec.width
        ny = (spec.height - 1) / 2.0 + (u[0, 1] - 0.5) * 0.5 * spec.height
    else:
        nx, ny = (float(v) for v in spec.nebula_position)
    s = spec.nebula_size
    w = u[1:, 3] + 0.3
    w = w / w.sum()
    blobs = tuple(
        (float(nx + (u[k, 0] - 0.5) * 1.5 * s), float(ny + (u[k, 1] - 0.5) * 1.5 * s),
         float(s * (0.5 + 0.7 * u[k, 2])), float(w[k - 1]))
        for k in range(1, 5)
    )
    return NebulaModel(flux=float(spec.nebula_flux), blobs=blobs)


def render_nebula(neb: NebulaModel, transform: Transform, shape: tuple[int, int],
                  rates: np.ndarray) -> np.ndarray:
    """The nebula on a frame's grid, ``(C, H, W)`` e-/s times ``rates`` per channel.

    The blobs are broad (sigma of tens of pixels), so they are sampled at pixel centres
    and not convolved with the PSF (the change would be well below 1 %).
    """
    h, w = shape
    nch = len(rates)
    out = np.zeros((nch, h, w), dtype=np.float32)
    inv = transform.inverse()
    m = transform.matrix
    for bx, by, sig, wt in neb.blobs:
        (fx, fy), = inv.apply([[bx, by]])
        r = 5.0 * sig
        xa, xb = max(0, int(fx - r)), min(w, int(fx + r) + 2)
        ya, yb = max(0, int(fy - r)), min(h, int(fy + r) + 2)
        if xa >= xb or ya >= yb:
            continue
        xs = np.arange(xa, xb, dtype=np.float64)
        ys = np.arange(ya, yb, dtype=np.float64)
        xr = m[0, 0] * xs[None, :] + m[0, 1] * ys[:, None] + m[0, 2] - bx
        yr = m[1, 0] * xs[None, :] + m[1, 1] * ys[:, None] + m[1, 2] - by
        g = (wt * neb.flux / (2 * math.pi * sig * sig)) * np.exp(-(xr * xr + yr * yr)
                                                              / (2 * sig * sig))
        for c in range(nch):
            out[c, ya:yb, xa:xb] += (rates[c] * g).astype(np.float32)
    return out


# ----------------------------------------------------------------------------------------------
# sky background
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackgroundModel:
    """Sky glow with a light-pollution gradient, fixed on the sky (reference coordinates):

    ``B(x, y) = level * (1 + g1 * u + g2 * u**2)``, ``u = ((x - cx) cos a + (y - cy) sin a)
    / scale``, with ``scale`` the image half-diagonal. Per channel times ``color`` and the
    filter's transmission.
    """

    level: float
    color: tuple[float, float, float]
    gradient: float
    gradient_quadratic: float
    angle: float
    cx: float
    cy: float
    scale: float

    def rates(self, filter_name: str, *, is_color: bool) -> np.ndarray:
        return self.level * channel_rates(np.array([self.color]), filter_name,
                                          is_color=is_color)[0]

    def shape_at(self, xr: np.ndarray, yr: np.ndarray) -> np.ndarray:
        a = math.radians(self.angle)
        u = ((xr - self.cx) * math.cos(a) + (yr - self.cy) * math.sin(a)) / self.scale
        return 1.0 + self.gradient * u + self.gradient_quadratic * u * u

    def render(self, transform: Transform, shape: tuple[int, int], rates: np.ndarray,
               *, cfa: np.ndarray | None = None) -> np.ndarray:
        """``(C, H, W)`` rates on a frame's grid, or a mosaic ``(H, W)`` with ``cfa``."""
        h, w = shape
        m = transform.matrix
        a = math.radians(self.angle)
        ca, sa = math.cos(a) / self.scale, math.sin(a) / self.scale
        # u is affine in frame pixels: u = A x + B y + C.
        ua = m[0, 0] * ca + m[1, 0] * sa
        ub = m[0, 1] * ca + m[1, 1] * sa
        uc = (m[0, 2] - self.cx) * ca + (m[1, 2] - self.cy) * sa
        u = (np.float32(ua) * np.arange(w, dtype=np.float32)[None, :]
             + np.float32(ub) * np.arange(h, dtype=np.float32)[:, None] + np.float32(uc))
        shp = np.float32(1.0) + np.float32(self.gradient) * u \
            + np.float32(self.gradient_quadratic) * (u * u)
        rates = np.asarray(rates, dtype=np.float64)
        if cfa is not None:
            lut = rates[np.asarray(cfa)].astype(np.float32)  # (2, 2)
            tile = np.tile(lut, (h // 2 + 1, w // 2 + 1))[:h, :w]
            return shp * tile
        return np.stack([shp * np.float32(r) for r in rates])


def make_background(spec: SessionSpec) -> BackgroundModel:
    col = np.asarray(spec.sky_color, dtype=np.float64)
    col = col / col.mean()
    return BackgroundModel(
        level=float(spec.sky_level), color=tuple(float(c) for c in col),  # type: ignore[arg-type]
        gradient=float(spec.gradient), gradient_quadratic=float(spec.gradient_quadratic),
        angle=float(spec.gradient_angle), cx=(spec.width - 1) / 2.0,
        cy=(spec.height - 1) / 2.0, scale=0.5 * math.hypot(spec.width, spec.height),
    )
