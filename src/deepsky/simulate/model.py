"""A prepared session model and the truth arrays the tests of other stages compare with.

:class:`SessionModel` holds the sky (stars, galaxy, nebula, background), the sensor's fixed
patterns and every light's conditions, drawn once from the spec's seed. Rendering is pure:
each call returns new arrays and depends only on the spec and the frame index.

Every array and coordinate this module returns is in the geometry of the *stored* array
(the data as :func:`deepsky.io.fits.read_fits` returns it): for ``roworder="BOTTOM-UP"``
the model's top-down image is flipped by rows, and so are all truth positions.

The relation between the truth arrays, for light ``i`` of exposure ``t``::

    expected_light(i) = render_noiseless_light(i) * true_flat() + true_dark_current() * t * k_i

in electrons, with ``k_i = light_truth.dark_scale`` (the frame's temperature factor), and the
raw frame is ``expected_light`` with shot and read noise, cosmic rays and saturation,
divided by ``egain`` plus ``true_bias()`` (ADU). Calibrating with a master flat normalised
to mean 1 gives back ``render_noiseless_light(i)`` (for Bayer sensors too: the per-channel
QE is part of the flat field, so sky rates and star fluxes are per pixel of mean
sensitivity).
"""

from __future__ import annotations

import numpy as np

from deepsky.simulate.frames import (
    KIND_CODES, STREAM_BIAS_PATTERN, STREAM_COSMIC, STREAM_DARK_MAP, STREAM_FLAT_MAP,
    STREAM_GALAXY, STREAM_NEBULA, STREAM_NOISE, STREAM_STARS, LightParams,
    calibration_conditions, draw_light_params, stream,
)
from deepsky.simulate.psf import PSF, render_stars
from deepsky.simulate.scene import (
    BackgroundModel, GalaxyModel, NebulaModel, StarCatalogue, line_rates, make_background,
    make_galaxy, make_nebula, make_star_catalogue, render_galaxy, render_nebula,
)
from deepsky.simulate.sensor import (
    CosmicRays, SensorModel, dark_scale, draw_cosmic_rays, expose, make_sensor,
)
from deepsky.simulate.spec import SessionSpec
from deepsky.types import Transform

# Stamps of stars end where the profile drops below this many electrons per pixel.
STAR_THRESHOLD_E = 0.05


class SessionModel:
    """The prepared model of a :class:`SessionSpec` (build once, render many frames).

    >>> from deepsky.simulate import SessionSpec
    >>> m = SessionModel(SessionSpec(width=128, height=96, n_lights=2, bayer=None))
    >>> m.render_noiseless_light(0).shape
    (96, 128)
    """

    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        s = spec.seed
        self._stars = make_star_catalogue(spec, stream(s, STREAM_STARS))
        self._galaxy: GalaxyModel | None = (
            make_galaxy(spec, stream(s, STREAM_GALAXY))
            if spec.galaxy and spec.galaxy_flux > 0 else None)
        self._nebula: NebulaModel | None = (
            make_nebula(spec, stream(s, STREAM_NEBULA)) if spec.nebula_flux > 0 else None)
        self._background: BackgroundModel = make_background(spec)
        self._sensor: SensorModel = make_sensor(
            spec, stream(s, STREAM_BIAS_PATTERN), stream(s, STREAM_DARK_MAP),
            stream(s, STREAM_FLAT_MAP))
        lights = []
        for i in range(spec.total_lights):
            fi, _ = spec.light_filter(i)
            sky = float(self._background.rates(spec.filters[fi],  # type: ignore[index]
                                               is_color=spec.is_color).mean())
            lights.append(draw_light_params(spec, i, sky_electrons=sky * spec.light_exposure(i)))
        self._lights: tuple[LightParams, ...] = tuple(lights)
        self._flip = spec.roworder == "BOTTOM-UP"
        self._chan_map: np.ndarray | None = None
        if self._sensor.cfa is not None:
            self._chan_map = np.tile(self._sensor.cfa.astype(np.int8),
                                     (spec.height // 2, spec.width // 2))

    # ------------------------------------------------------------------------------------
    # orientation: the model is top-down; everything public is in stored-array geometry
    # ------------------------------------------------------------------------------------
    def _arr(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a[..., ::-1, :]) if self._flip else a

    def _y(self, y: np.ndarray | float) -> np.ndarray | float:
        return (self.spec.height - 1) - y if self._flip else y

    def _angle(self, deg: float) -> float:
        return -deg if self._flip else deg

    def _transform(self, t: Transform) -> Transform:
        if not self._flip:
            return t
        f = Transform(np.array([[1.0, 0, 0], [0, -1.0, self.spec.height - 1.0], [0, 0, 1.0]]))
        return f @ t @ f

    # ------------------------------------------------------------------------------------
    # public truth
    # ------------------------------------------------------------------------------------
    @property
    def n_lights(self) -> int:
        """Number of lights over all filters."""
        return len(self._lights)

    @property
    def reference_psf(self) -> PSF:
        """The seeing of the truth sky: light 0's PSF without any trail."""
        return self._lights[0].psf.without_trail()

    def transform(self, index: int) -> Transform:
        """Light ``index``'s transform, frame pixels -> reference pixels."""
        return self._transform(self._light(index).transform)

    def stars(self) -> StarCatalogue:
        """The star catalogue in reference coordinates of the stored array."""
        c = self._stars
        return StarCatalogue(x=c.x.copy(), y=np.asarray(self._y(c.y)), flux=c.flux.copy(),
                             color=c.color.copy(), temperature=c.temperature.copy(),
                             neutral=c.neutral.copy())

    def star_rates(self, filter_name: str | None = None) -> np.ndarray:
        """Per-star rates ``(n, 3)`` (Bayer) or ``(n,)`` (mono), e-/s through a filter
        (default: the first)."""
        f = self._filter(filter_name)
        r = self._stars.rates(f, is_color=self.spec.is_color)
        return r if self.spec.is_color else r[:, 0]

    def render_noiseless_light(self, index: int) -> np.ndarray:
        """Expected electrons of light ``index`` before the flat field, dark and noise.

        Stars, galaxy and nebula (times exposure and transparency) plus sky background
        (times exposure and the frame's background factor) plus any satellite trail, all as
        the frame sees them (its transform and PSF); for a Bayer sensor the mosaic, each
        pixel its channel's rate. ``(H, W)`` float32, e-.
        """
        return self._arr(self._noiseless_td(index))

    def expected_light(self, index: int) -> np.ndarray:
        """Expected electrons of the raw light: noiseless light x flat + dark current."""
        return self._arr(self._expected_td(index))

    def flat_field(self) -> np.ndarray:
        """The true flat field (mean 1): vignetting x dust x PRNU x per-channel QE."""
        return self._arr(self._sensor.flat).copy()

    def qe_map(self) -> np.ndarray:
        """Relative QE of each pixel's channel (ones for mono; not normalised)."""
        return self._arr(self._sensor.qe_map).copy()

    def dark_current(self) -> np.ndarray:
        """Dark current (e-/s) at the set temperature, with hot pixels and amp glow."""
        return self._arr(self._sensor.dark).copy()

    def bias(self) -> np.ndarray:
        """The bias pattern (ADU): bias level plus the fixed column offsets."""
        return self._arr(self._sensor.bias).copy()

    def truth_sky(self, filter_name: str | None = None, *, background: bool = True) \
            -> np.ndarray:
        """The noiseless sky (e-/s) in the reference geometry, with the reference seeing
        (light 0's PSF), flat = 1, transparency 1: ``(H, W)`` mono, ``(3, H, W)`` colour.
        ``background=False`` leaves out the sky glow (objects only)."""
        f = self._filter(filter_name)
        lp = self._lights[0]
        scale = lp.exposure * lp.transparency
        img = self._scene_td(Transform.identity(), self.reference_psf, f, 1.0,
                             1.0 if background else 0.0, mosaic=False,
                             threshold=STAR_THRESHOLD_E / scale)
        return self._arr(img)

    def truth_background(self, filter_name: str | None = None) -> np.ndarray:
        """The sky glow alone (level and gradient, e-/s) in the reference geometry."""
        f = self._filter(filter_name)
        rates = self._background.rates(f, is_color=self.spec.is_color)
        img = self._background.render(Transform.identity(), self._shape, rates)
        return self._arr(img if self.spec.is_color else img[0])

    def raw_frame(self, kind: str, index: int, *, filter_index: int = 0) -> np.ndarray:
        """The raw uint16 frame as it is written (stored geometry), without writing it.

        ``kind`` is light/dark/flat/bias/darkflat; for lights ``index`` is the light index
        over all filters, for flats the index within ``filter_index``.
        """
        if kind == "light":
            adu, _, _ = self._light_frame_td(index)
        else:
            adu, _ = self._calibration_frame_td(kind, filter_index, index)
        return self._arr(adu)

    # ------------------------------------------------------------------------------------
    # internals (top-down)
    # ------------------------------------------------------------------------------------
    @property
    def _shape(self) -> tuple[int, int]:
        return (self.spec.height, self.spec.width)

    def _filter(self, name: str | None) -> str:
        filters = self.spec.filters or ()
        if name is None:
            return filters[0]
        if name not in filters:
            from deepsky.errors import ConfigError
            raise ConfigError(f"filter {name!r} is not in the session's filters {filters}")
        return name

    def _light(self, index: int) -> LightParams:
        if not 0 <= index < len(self._lights):
            raise IndexError(f"light index {index} outside 0..{len(self._lights) - 1}")
        return self._lights[index]

    def _to_mosaic(self, planes: np.ndarray) -> np.ndarray:
        assert self._chan_map is not None
        return np.take_along_axis(planes, self._chan_map[None].astype(np.intp), axis=0)[0]

    def _scene_td(self, transform: Transform, psf: PSF, filter_name: str, star_scale: float,
                  bg_scale: float, *, mosaic: bool, threshold: float) -> np.ndarray:
        """Sky and objects on a frame's grid: a mosaic (H, W) or planes (C, H, W)."""
        spec = self.spec
        h, w = self._shape
        color = spec.is_color
        cfa = self._sensor.cfa if (mosaic and color) else None
        nch = 3 if color else 1
        as_mosaic = mosaic or not color
        out = np.zeros((h, w) if as_mosaic else (nch, h, w), dtype=np.float32)
        if star_scale > 0:
            inv = transform.inverse()
            pos = inv.apply(np.stack([self._stars.x, self._stars.y], axis=1))
            rates = self._stars.rates(filter_name, is_color=color) * star_scale
            out += render_stars(self._shape, pos[:, 0], pos[:, 1],
                                rates if color else rates[:, 0], psf, cfa=cfa,
                                threshold=threshold)
            if self._galaxy is not None:
                d, b = self._galaxy.component_rates(filter_name, is_color=color)
                res = render_galaxy(self._galaxy, transform, self._shape, psf,
                                    d * star_scale, b * star_scale, cfa=cfa)
                if res is not None:
                    y0, x0, patch = res
                    if as_mosaic and patch.ndim == 3:
                        patch = patch[0]
                    _add_patch(out, y0, x0, patch)
            if self._nebula is not None:
                lr = line_rates(filter_name, is_color=color, halpha=self._nebula.halpha)
                neb = render_nebula(self._nebula, transform, self._shape, lr * star_scale)
                if mosaic and color:
                    out += self._to_mosaic(neb)
                else:
                    out += neb[0] if as_mosaic else neb
        if bg_scale > 0:
            rates = self._background.rates(filter_name, is_color=color) * bg_scale
            bg = self._background.render(transform, self._shape, rates, cfa=cfa)
            out += bg[0] if (as_mosaic and bg.ndim == 3) else bg
        return out

    def _noiseless_td(self, index: int) -> np.ndarray:
        lp = self._light(index)
        t = lp.exposure
        img = self._scene_td(lp.transform, lp.psf, lp.filter_name, t * lp.transparency,
                             t * lp.background_factor, mosaic=True,
                             threshold=STAR_THRESHOLD_E)
        if lp.satellite is not None:
            img += lp.satellite.render(self._shape)
        return img

    def _expected_td(self, index: int) -> np.ndarray:
        lp = self._light(index)
        e = self._noiseless_td(index) * self._sensor.flat
        e += self._sensor.dark * np.float32(lp.exposure * lp.dark_scale)
        return e

    def _star_frame_positions(self, index: int) -> np.ndarray:
        inv = self._light(index).transform.inverse()
        return inv.apply(np.stack([self._stars.x, self._stars.y], axis=1))

    def _in_frame(self, index: int) -> np.ndarray:
        pos = self._star_frame_positions(index)
        h, w = self._shape
        return (pos[:, 0] >= -0.5) & (pos[:, 0] < w - 0.5) & (pos[:, 1] >= -0.5) & \
            (pos[:, 1] < h - 0.5)

    def _saturated_stars(self, index: int, expected: np.ndarray) -> np.ndarray:
        """Stars whose expected peak (3x3 around the centre) reaches saturation."""
        pos = self._star_frame_positions(index)
        h, w = self._shape
        inside = self._in_frame(index)
        ix = np.clip(np.rint(pos[:, 0]), 0, w - 1).astype(np.int64)
        iy = np.clip(np.rint(pos[:, 1]), 0, h - 1).astype(np.int64)
        peak = np.zeros(len(pos), dtype=np.float32)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                v = expected[np.clip(iy + dy, 0, h - 1), np.clip(ix + dx, 0, w - 1)]
                np.maximum(peak, v, out=peak)
        return inside & (peak >= self.spec.saturation_electrons)

    def _cosmic(self, kind: str, filter_index: int, index: int, exposure: float) -> CosmicRays:
        rng = stream(self.spec.seed, STREAM_COSMIC, KIND_CODES[kind], filter_index, index)
        return draw_cosmic_rays(self.spec, exposure, rng)

    def _light_frame_td(self, index: int) -> tuple[np.ndarray, np.ndarray, CosmicRays]:
        """(uint16 frame, saturated-star flags, cosmic rays) of light ``index``."""
        lp = self._light(index)
        expected = self._expected_td(index)
        sat = self._saturated_stars(index, expected)
        cosmic = self._cosmic("light", lp.filter_index, lp.local_index, lp.exposure)
        rng = stream(self.spec.seed, STREAM_NOISE, KIND_CODES["light"], lp.filter_index,
                     lp.local_index)
        adu = expose(expected, self._sensor, self.spec, rng, cosmic=cosmic)
        return adu, sat, cosmic

    def calibration_exposure(self, kind: str) -> float:
        """Exposure (s) of calibration frames of ``kind``."""
        spec = self.spec
        return {"bias": 0.0, "dark": spec.darks_exposure, "flat": spec.flat_exposure,
                "darkflat": spec.flat_exposure}[kind]

    def flat_electrons(self, level_factor: float = 1.0) -> float:
        """Mean illumination (e-) of a raw flat before dark current."""
        spec = self.spec
        return (spec.flat_level * 65535.0 - spec.bias_level) * spec.egain * level_factor

    def _calibration_frame_td(self, kind: str, filter_index: int, index: int) \
            -> tuple[np.ndarray, dict[str, float]]:
        spec = self.spec
        temp, level = calibration_conditions(spec, kind, filter_index, index)
        k = dark_scale(spec, temp)
        t = self.calibration_exposure(kind)
        expected: np.ndarray | None = None
        level_e = 0.0
        if kind in ("dark", "darkflat"):
            expected = self._sensor.dark * np.float32(t * k)
        elif kind == "flat":
            level_e = self.flat_electrons(level)
            expected = self._sensor.flat * np.float32(level_e) \
                + self._sensor.dark * np.float32(t * k)
        cosmic = self._cosmic(kind, filter_index, index, t)
        rng = stream(spec.seed, STREAM_NOISE, KIND_CODES[kind], filter_index, index)
        adu = expose(expected, self._sensor, spec, rng, cosmic=cosmic)
        info = {"ccd_temp": temp, "dark_scale": k, "exposure": t, "level": level_e,
                "cosmic_rays": float(len(cosmic))}
        return adu, info


def galaxy_aperture_fraction(model: SessionModel, radius: float) -> float:
    """Fraction of the galaxy's flux inside a circle of ``radius`` around its centre, in the
    reference seeing (computed on an unbounded grid; 0 when there is no galaxy)."""
    g = model._galaxy
    if g is None:
        return 0.0
    big = 1 << 30
    res = render_galaxy(g, Transform.identity(), (big, big), model.reference_psf,
                        np.array([1.0 - g.bulge_fraction]), np.array([g.bulge_fraction]))
    if res is None:
        return 0.0
    y0, x0, patch = res
    img = patch[0].astype(np.float64)
    ys = y0 + np.arange(img.shape[0])[:, None] - g.y
    xs = x0 + np.arange(img.shape[1])[None, :] - g.x
    inside = xs * xs + ys * ys <= radius * radius
    return float(img[inside].sum() / img.sum())


def _add_patch(out: np.ndarray, y0: int, x0: int, patch: np.ndarray) -> None:
    """Add ``patch`` (..., h, w) into ``out`` (..., H, W) at (y0, x0), clipped to bounds."""
    big_h, big_w = out.shape[-2:]
    ph, pw = patch.shape[-2:]
    ya, yb = max(0, y0), min(big_h, y0 + ph)
    xa, xb = max(0, x0), min(big_w, x0 + pw)
    if ya >= yb or xa >= xb:
        return
    out[..., ya:yb, xa:xb] += patch[..., ya - y0:yb - y0, xa - x0:xb - x0]


# ----------------------------------------------------------------------------------------------
# functional front doors (accept a spec or a prepared model)
# ----------------------------------------------------------------------------------------------
def build_model(spec: SessionSpec) -> SessionModel:
    """Prepare the model of ``spec`` (the sky, the sensor and every light's conditions)."""
    return SessionModel(spec)


def _model(obj: SessionSpec | SessionModel) -> SessionModel:
    return obj if isinstance(obj, SessionModel) else SessionModel(obj)


def render_noiseless_light(model: SessionSpec | SessionModel, index: int) -> np.ndarray:
    """Expected electrons of light ``index`` before flat, dark, bias and noise (stored
    geometry; Bayer: the mosaic). See :meth:`SessionModel.render_noiseless_light`.

    Pass a :class:`SessionModel` (from :func:`build_model`) when rendering several frames:
    a spec is turned into a model on every call.
    """
    return _model(model).render_noiseless_light(index)


def expected_light(model: SessionSpec | SessionModel, index: int) -> np.ndarray:
    """Expected electrons of raw light ``index``: noiseless x flat + dark current x t."""
    return _model(model).expected_light(index)


def light_transform(model: SessionSpec | SessionModel, index: int) -> Transform:
    """Transform of light ``index`` (frame pixels -> reference pixels)."""
    return _model(model).transform(index)


def true_flat(model: SessionSpec | SessionModel) -> np.ndarray:
    """The true normalised flat field (mean 1), float32 (H, W)."""
    return _model(model).flat_field()


def true_dark_current(model: SessionSpec | SessionModel) -> np.ndarray:
    """The true dark current (e-/s at the set temperature), float32 (H, W)."""
    return _model(model).dark_current()


def true_bias(model: SessionSpec | SessionModel) -> np.ndarray:
    """The true bias pattern (ADU), float32 (H, W)."""
    return _model(model).bias()


def render_truth_sky(model: SessionSpec | SessionModel, *, filter_name: str | None = None,
                     background: bool = True) -> np.ndarray:
    """The noiseless reference sky (e-/s); see :meth:`SessionModel.truth_sky`."""
    return _model(model).truth_sky(filter_name, background=background)


def render_truth_background(model: SessionSpec | SessionModel, *,
                            filter_name: str | None = None) -> np.ndarray:
    """The sky glow alone (e-/s) in the reference geometry."""
    return _model(model).truth_background(filter_name)
