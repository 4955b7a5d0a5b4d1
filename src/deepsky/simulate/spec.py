"""What a simulated session looks like: :class:`SessionSpec` and its validation.

Every number of the simulator lives in one frozen dataclass, with a documented default and
unit. Validation happens once, here, at the public boundary; the model code trusts the spec.

Units: pixel coordinates and lengths in pixels of the sensor; fluxes and rates in electrons
per second (``e-/s``) as recorded by a pixel of mean sensitivity (flat field = 1); camera
levels in ADU; temperatures in degrees Celsius; angles in degrees.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Mapping

from deepsky.errors import ConfigError
from deepsky.types import BAYER_PATTERNS

LAYOUTS = ("folders", "flat")
ROWORDERS = ("TOP-DOWN", "BOTTOM-UP")
AMP_GLOW_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")

# Continuum transmission (R, G, B) and emission-line transmission (H-alpha, [OIII]) of the
# filters the simulator knows. Any other name is a broadband clear filter like "L".
_CLEAR = ((1.0, 1.0, 1.0), (1.0, 1.0))
FILTER_BANDS: dict[str, tuple[tuple[float, float, float], tuple[float, float]]] = {
    "L": _CLEAR,
    "R": ((1.0, 0.0, 0.0), (1.0, 0.0)),
    "G": ((0.0, 1.0, 0.0), (0.0, 0.5)),
    "B": ((0.0, 0.0, 1.0), (0.0, 0.5)),
    "HA": ((0.06, 0.0, 0.0), (1.0, 0.0)),
    "SII": ((0.06, 0.0, 0.0), (0.0, 0.0)),
    "OIII": ((0.0, 0.06, 0.06), (0.0, 1.0)),
    # Dual-band filters for one-shot-colour cameras.
    "L-EXTREME": ((0.04, 0.04, 0.04), (1.0, 1.0)),
    "L-ENHANCE": ((0.06, 0.06, 0.06), (1.0, 1.0)),
}


def filter_band(name: str) -> tuple[tuple[float, float, float], tuple[float, float]]:
    """``((tR, tG, tB), (tHalpha, tOIII))`` of a filter; unknown names are clear (like L)."""
    return FILTER_BANDS.get(name.strip().upper(), _CLEAR)


@dataclass(frozen=True)
class SessionSpec:
    """Everything that defines a simulated session. Frozen; build a changed copy with
    :meth:`replace`. All options have realistic defaults (a small colour session).

    Geometry and counts
        ``width``, ``height`` (px, default 1024 x 768); ``bayer``: ``"RGGB"`` (default),
        ``"GRBG"``, ``"GBRG"``, ``"BGGR"`` or ``None`` for a mono sensor, the pattern of the
        top-left pixel of the top-down image; ``seed`` (0); ``n_lights`` (8, *per filter*),
        ``n_darks`` (10), ``n_flats`` (10, per filter), ``n_biases`` (10), ``n_darkflats`` (0).
    Exposures (s)
        ``exposure`` (60, lights); ``light_exposures`` (``None`` or one value per light, all
        filters in order, for mixed-exposure sessions); ``dark_exposure`` (``None`` = the
        light exposure); ``flat_exposure`` (2, also the dark-flats').
    Filters
        ``filters``: ``None`` means ``("L",)`` for mono and ``("UVIR",)`` for colour. Several
        filters give lights and flats per filter, in ``lights/<F>/`` and ``flats/<F>/``.
    Camera
        ``gain_setting`` (100, the GAIN card), ``offset`` (50, the OFFSET card), ``egain``
        (1.0 e-/ADU), ``read_noise`` (3.0 e- rms), ``bias_level`` (500 ADU),
        ``column_pattern`` (1.0 ADU rms of the fixed per-column bias offsets),
        ``full_well`` (70000 e-; the ADC also clips at 65535 ADU).
    Temperature and dark current
        ``set_temperature`` (-10 C), ``temperature`` (``None`` = the set point; the mean
        sensor temperature, for a cooler that cannot reach it), ``temperature_jitter``
        (0.1 C rms per frame), ``dark_current`` (0.02 e-/s/px at the set temperature),
        ``dark_doubling`` (6.0 C per doubling), ``dark_nonuniformity`` (0.15, relative rms
        of the per-pixel dark current), ``hot_pixel_fraction`` (2e-4), ``hot_pixel_rate``
        ((0.5, 50) e-/s, log-uniform), ``amp_glow`` (0.2 e-/s at the corner pixel; 0 = none),
        ``amp_glow_corner`` ("top-right" of the top-down image), ``amp_glow_scale`` (0.08,
        e-folding distance as a fraction of the image diagonal).
    Flat field
        ``prnu`` (0.006, relative rms pixel response non-uniformity), ``cold_pixel_fraction``
        (0, pixels at 10 % response), ``qe`` ((0.80, 1.0, 0.72), relative R, G, B quantum
        efficiency of a Bayer sensor), ``vignetting`` (0.25: the response drops by this
        fraction from the optical centre to the image corner, quadratically),
        ``vignetting_offset`` ((0.03, -0.02), optical centre offset as fractions of width
        and height), ``dust_count`` (3), ``dust_radius`` ((8, 30) px), ``dust_depth``
        ((0.03, 0.12), fractional depth of the shadow), ``flat_level`` (0.45, mean level of
        the raw flats as a fraction of 65535 ADU).
    Sky
        ``sky_level`` (3.0 e-/s/px at the image centre, L filter), ``sky_color`` ((1.15, 1.0,
        0.8), relative R, G, B; normalised to mean 1), ``gradient`` (0.15: linear
        light-pollution gradient, fractional change of the sky from the centre to the image
        half-diagonal along ``gradient_angle``), ``gradient_quadratic`` (0.05, same units,
        quadratic term), ``gradient_angle`` (30 deg, direction in which the sky brightens,
        from +x towards +y of the reference frame).
    Stars
        ``star_density`` (500 stars per megapixel of sky), ``star_flux`` ((5, 2e5) e-/s,
        L flux range), ``star_flux_slope`` (0.65: N(>F) ~ F**-slope), ``star_temperature``
        ((5500, 0.25): median K and log-normal spread of the colour temperatures),
        ``neutral_star_fraction`` (0.1, stars with exactly equal R, G, B flux).
    Galaxy and nebula
        ``galaxy`` (True), ``galaxy_position`` (``None`` = random near the centre, reference
        px), ``galaxy_flux`` (8000 e-/s), ``galaxy_disk_scale`` (12 px), ``galaxy_bulge_radius``
        (4 px effective radius, de Vaucouleurs), ``galaxy_bulge_fraction`` (0.3),
        ``galaxy_inclination`` (55 deg), ``galaxy_position_angle`` (``None`` = random, deg);
        ``nebula_flux`` (0 = none, e-/s in L), ``nebula_size`` (60 px, Gaussian sigma of the
        blobs), ``nebula_position`` (``None`` = random).
    Per-frame conditions
        ``fwhm`` ((2.6, 3.4) px, Moffat seeing range), ``moffat_beta`` (3.0), ``elongation``
        ((1.0, 1.08), major/minor FWHM from small tracking errors), ``transparency`` ((0.9,
        1.0)), ``background_variation`` ((0.97, 1.03), factor on the sky per frame),
        ``cloudy_frames`` (() light indices), ``cloudy_transparency`` (0.3, factor),
        ``cloudy_background`` (1.8, factor), ``trailed_frames`` (()), ``trail_length``
        ((8, 14) px), ``satellite_frames`` (()), ``satellite_width`` ((1.5, 4) px FWHM),
        ``satellite_brightness`` ((10, 3000), log-uniform: peak in units of the frame's
        sky noise; the bright end saturates),
        ``cosmic_ray_rate`` (0.1 hits per megapixel per second of exposure).
    Motion
        ``max_shift`` (12 px, uniform dither per axis), ``max_rotation`` (0.3 deg),
        ``field_rotation_rate`` (0 deg per frame, as an alt-az mount), ``meridian_flip_frames``
        (0: a count flips the last lights, a tuple names light indices), ``meridian_flip_offset``
        (15 px, largest extra offset of a flipped frame per axis).
    Files and headers
        ``roworder`` ("TOP-DOWN" or "BOTTOM-UP": the stored array is flipped and BAYERPAT keeps
        describing the top-down pattern), ``layout`` ("folders" or "flat": one folder with
        N.I.N.A.-style prefixes), ``start_time`` (ISO 8601 UTC of the first light),
        ``overhead`` (4 s between exposures), ``instrument``, ``telescope``, ``focal_length``
        (550 mm), ``pixel_size`` (3.76 um), ``object_name``.

    Light frames are indexed 0..``total_lights``-1, all filters in the order of ``filters``;
    frame 0 is the reference (its transform is the identity).
    """

    # geometry and counts
    width: int = 1024
    height: int = 768
    bayer: str | None = "RGGB"
    seed: int = 0
    n_lights: int = 8
    n_darks: int = 10
    n_flats: int = 10
    n_biases: int = 10
    n_darkflats: int = 0
    # exposures
    exposure: float = 60.0
    light_exposures: tuple[float, ...] | None = None
    dark_exposure: float | None = None
    flat_exposure: float = 2.0
    filters: tuple[str, ...] | None = None
    # camera
    gain_setting: int = 100
    offset: int = 50
    egain: float = 1.0
    read_noise: float = 3.0
    bias_level: float = 500.0
    column_pattern: float = 1.0
    full_well: float = 70000.0
    # temperature and dark current
    set_temperature: float = -10.0
    temperature: float | None = None
    temperature_jitter: float = 0.1
    dark_current: float = 0.02
    dark_doubling: float = 6.0
    dark_nonuniformity: float = 0.15
    hot_pixel_fraction: float = 2e-4
    hot_pixel_rate: tuple[float, float] = (0.5, 50.0)
    amp_glow: float = 0.2
    amp_glow_corner: str = "top-right"
    amp_glow_scale: float = 0.08
    # flat field
    prnu: float = 0.006
    cold_pixel_fraction: float = 0.0
    qe: tuple[float, float, float] = (0.80, 1.0, 0.72)
    vignetting: float = 0.25
    vignetting_offset: tuple[float, float] = (0.03, -0.02)
    dust_count: int = 3
    dust_radius: tuple[float, float] = (8.0, 30.0)
    dust_depth: tuple[float, float] = (0.03, 0.12)
    flat_level: float = 0.45
    # sky
    sky_level: float = 3.0
    sky_color: tuple[float, float, float] = (1.15, 1.0, 0.8)
    gradient: float = 0.15
    gradient_quadratic: float = 0.05
    gradient_angle: float = 30.0
    # stars
    star_density: float = 500.0
    star_flux: tuple[float, float] = (5.0, 2e5)
    star_flux_slope: float = 0.65
    star_temperature: tuple[float, float] = (5500.0, 0.25)
    neutral_star_fraction: float = 0.1
    # galaxy and nebula
    galaxy: bool = True
    galaxy_position: tuple[float, float] | None = None
    galaxy_flux: float = 8000.0
    galaxy_disk_scale: float = 12.0
    galaxy_bulge_radius: float = 4.0
    galaxy_bulge_fraction: float = 0.3
    galaxy_inclination: float = 55.0
    galaxy_position_angle: float | None = None
    nebula_flux: float = 0.0
    nebula_size: float = 60.0
    nebula_position: tuple[float, float] | None = None
    # per-frame conditions
    fwhm: tuple[float, float] = (2.6, 3.4)
    moffat_beta: float = 3.0
    elongation: tuple[float, float] = (1.0, 1.08)
    transparency: tuple[float, float] = (0.9, 1.0)
    background_variation: tuple[float, float] = (0.97, 1.03)
    cloudy_frames: tuple[int, ...] = ()
    cloudy_transparency: float = 0.3
    cloudy_background: float = 1.8
    trailed_frames: tuple[int, ...] = ()
    trail_length: tuple[float, float] = (8.0, 14.0)
    satellite_frames: tuple[int, ...] = ()
    satellite_width: tuple[float, float] = (1.5, 4.0)
    satellite_brightness: tuple[float, float] = (10.0, 3000.0)
    cosmic_ray_rate: float = 0.1
    # motion
    max_shift: float = 12.0
    max_rotation: float = 0.3
    field_rotation_rate: float = 0.0
    meridian_flip_frames: int | tuple[int, ...] = 0
    meridian_flip_offset: float = 15.0
    # files and headers
    roworder: str = "TOP-DOWN"
    layout: str = "folders"
    start_time: str = "2024-03-15T20:30:00"
    overhead: float = 4.0
    instrument: str | None = None
    telescope: str = "Esprit 100ED"
    focal_length: float = 550.0
    pixel_size: float = 3.76
    object_name: str = "Simulated Field"

    def __post_init__(self) -> None:
        _normalise(self)
        _validate(self)

    # ------------------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "SessionSpec":
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"SessionSpec has no option {sorted(unknown)[0]!r}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples become lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SessionSpec":
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"SessionSpec has no option {sorted(unknown)[0]!r}")
        return cls(**dict(data))

    # derived values ------------------------------------------------------------------------
    @property
    def is_color(self) -> bool:
        return self.bayer is not None

    @property
    def n_filters(self) -> int:
        return len(self.filters or ())

    @property
    def total_lights(self) -> int:
        """Number of light frames over all filters."""
        return self.n_lights * self.n_filters

    @property
    def channels(self) -> int:
        """Colour channels of the sky model: 3 for a Bayer sensor, 1 for mono."""
        return 3 if self.is_color else 1

    @property
    def mean_temperature(self) -> float:
        return self.set_temperature if self.temperature is None else self.temperature

    @property
    def darks_exposure(self) -> float:
        return self.exposure if self.dark_exposure is None else self.dark_exposure

    def light_exposure(self, index: int) -> float:
        """Exposure of light ``index`` in seconds."""
        if self.light_exposures is not None:
            return float(self.light_exposures[index])
        return float(self.exposure)

    def light_filter(self, index: int) -> tuple[int, int]:
        """``(filter index, index within that filter)`` of light ``index``."""
        return divmod(int(index), self.n_lights)

    @property
    def flipped_lights(self) -> tuple[int, ...]:
        """Indices of the meridian-flipped lights."""
        m = self.meridian_flip_frames
        if isinstance(m, int):
            return tuple(range(self.total_lights - m, self.total_lights)) if m > 0 else ()
        return tuple(sorted(set(m)))

    @property
    def saturation_electrons(self) -> float:
        """Electrons at which a pixel stops responding (full well or the ADC top)."""
        adc = (65535.0 - self.bias_level) * self.egain
        return float(min(self.full_well, adc))

    @property
    def instrument_name(self) -> str:
        if self.instrument:
            return self.instrument
        return "ZWO ASI2600MC Pro" if self.is_color else "ZWO ASI2600MM Pro"


# ----------------------------------------------------------------------------------------------
# normalisation and validation
# ----------------------------------------------------------------------------------------------
_TUPLE_FIELDS = (
    "light_exposures", "filters", "hot_pixel_rate", "qe", "vignetting_offset", "dust_radius",
    "dust_depth", "sky_color", "star_flux", "star_temperature", "galaxy_position",
    "nebula_position", "fwhm", "elongation", "transparency", "background_variation",
    "cloudy_frames", "trailed_frames", "trail_length", "satellite_frames", "satellite_width",
    "satellite_brightness",
)


def _set(spec: SessionSpec, name: str, value: Any) -> None:
    object.__setattr__(spec, name, value)


def _normalise(spec: SessionSpec) -> None:
    for name in _TUPLE_FIELDS:
        v = getattr(spec, name)
        if v is not None and not isinstance(v, tuple):
            if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
                raise ConfigError(f"{name} must be a sequence, got {v!r}")
            _set(spec, name, tuple(v))
    m = spec.meridian_flip_frames
    if not isinstance(m, (int, tuple)) and hasattr(m, "__iter__") and not isinstance(m, str):
        _set(spec, "meridian_flip_frames", tuple(int(i) for i in m))
    if isinstance(spec.bayer, str):
        b = spec.bayer.strip().upper()
        _set(spec, "bayer", None if b in ("", "NONE", "MONO") else b)
    if spec.filters is None:
        _set(spec, "filters", ("UVIR",) if spec.bayer else ("L",))
    else:
        _set(spec, "filters", tuple(str(f).strip() for f in spec.filters))
    for name in ("cloudy_frames", "trailed_frames", "satellite_frames"):
        _set(spec, name, tuple(sorted({_as_index(name, i) for i in getattr(spec, name)})))
    if isinstance(spec.meridian_flip_frames, tuple):
        _set(spec, "meridian_flip_frames",
             tuple(sorted({_as_index("meridian_flip_frames", i)
                           for i in spec.meridian_flip_frames})))
    if isinstance(spec.roworder, str):
        _set(spec, "roworder", spec.roworder.strip().upper())
    if isinstance(spec.layout, str):
        _set(spec, "layout", spec.layout.strip().lower())
    if isinstance(spec.amp_glow_corner, str):
        _set(spec, "amp_glow_corner", spec.amp_glow_corner.strip().lower())


def _as_index(name: str, value: Any) -> int:
    try:
        ok = not isinstance(value, bool) and float(value).is_integer()
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"simulator option {name}: light indices must be integers, "
                          f"got {value!r}")
    return int(value)


def _bad(name: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"simulator option {name} = {value!r}: {why}")


def _validate(s: SessionSpec) -> None:
    def positive(name: str, allow_zero: bool = False) -> None:
        v = getattr(s, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                or v < 0 or (v == 0 and not allow_zero):
            raise _bad(name, v, "must be a " + ("non-negative" if allow_zero else "positive")
                       + " number")

    def count(name: str, minimum: int = 0) -> None:
        v = getattr(s, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise _bad(name, v, f"must be an integer >= {minimum}")

    def span(name: str, lo: float = 0.0, allow_equal_lo: bool = False, hi: float = math.inf) \
            -> None:
        v = getattr(s, name)
        if len(v) != 2 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
            raise _bad(name, v, "must be a (low, high) pair of numbers")
        a, b = v
        if a > b or b > hi or (a < lo or (a == lo and not allow_equal_lo)):
            raise _bad(name, v, f"needs {lo} {'<=' if allow_equal_lo else '<'} low <= high"
                       + (f" <= {hi}" if hi < math.inf else ""))

    count("width", 32)
    count("height", 32)
    if s.bayer is not None and s.bayer not in BAYER_PATTERNS:
        raise _bad("bayer", s.bayer, f"must be one of {', '.join(BAYER_PATTERNS)} or None")
    if s.bayer is not None and (s.width % 2 or s.height % 2):
        raise _bad("width/height", (s.width, s.height), "a Bayer sensor needs even sizes")
    if not isinstance(s.seed, int) or isinstance(s.seed, bool) or s.seed < 0:
        raise _bad("seed", s.seed, "must be a non-negative integer")
    count("n_lights", 1)
    for name in ("n_darks", "n_flats", "n_biases", "n_darkflats", "dust_count"):
        count(name)
    for name in ("exposure", "flat_exposure", "egain", "full_well", "dark_doubling",
                 "moffat_beta", "focal_length", "pixel_size"):
        positive(name)
    for name in ("read_noise", "bias_level", "column_pattern", "temperature_jitter",
                 "dark_current", "dark_nonuniformity", "amp_glow", "amp_glow_scale", "prnu",
                 "sky_level", "gradient_quadratic", "star_density", "neutral_star_fraction",
                 "galaxy_flux", "nebula_flux", "cosmic_ray_rate", "max_shift", "max_rotation",
                 "meridian_flip_offset", "overhead", "hot_pixel_fraction",
                 "cold_pixel_fraction", "cloudy_transparency", "cloudy_background",
                 "vignetting"):
        positive(name, allow_zero=True)
    if s.dark_exposure is not None:
        positive("dark_exposure")
    if s.moffat_beta <= 1.5:
        raise _bad("moffat_beta", s.moffat_beta, "must be > 1.5")
    if s.vignetting >= 1:
        raise _bad("vignetting", s.vignetting, "must be < 1 (fractional drop at the corner)")
    for name in ("neutral_star_fraction", "hot_pixel_fraction", "cold_pixel_fraction"):
        if getattr(s, name) > 1:
            raise _bad(name, getattr(s, name), "must be a fraction between 0 and 1")
    if s.bias_level >= 65535:
        raise _bad("bias_level", s.bias_level, "must be below 65535 ADU")
    if not 0 < s.flat_level < 1:
        raise _bad("flat_level", s.flat_level, "must be a fraction of full scale in (0, 1)")
    flat_e = (s.flat_level * 65535 - s.bias_level) * s.egain
    if flat_e <= 0:
        raise _bad("flat_level", s.flat_level, f"is below the bias level {s.bias_level} ADU")
    span("hot_pixel_rate")
    span("dust_radius")
    span("dust_depth", allow_equal_lo=True, hi=1.0)
    span("star_flux")
    span("fwhm", lo=0.5, allow_equal_lo=True)
    span("elongation", lo=1.0, allow_equal_lo=True)
    span("transparency", hi=1.0)
    span("background_variation")
    span("trail_length", allow_equal_lo=True)
    span("satellite_width", lo=0.5, allow_equal_lo=True)
    span("satellite_brightness")
    if len(s.star_temperature) != 2 or s.star_temperature[0] <= 0 or s.star_temperature[1] < 0:
        raise _bad("star_temperature", s.star_temperature,
                   "must be (median K > 0, log-normal spread >= 0)")
    if s.star_flux_slope <= 0:
        raise _bad("star_flux_slope", s.star_flux_slope, "must be positive")
    for name in ("qe", "sky_color"):
        v = getattr(s, name)
        if len(v) != 3 or not all(isinstance(x, (int, float)) and x > 0 for x in v):
            raise _bad(name, v, "must be three positive numbers (R, G, B)")
    if len(s.vignetting_offset) != 2:
        raise _bad("vignetting_offset", s.vignetting_offset, "must be (fx, fy)")
    for name in ("galaxy_position", "nebula_position"):
        v = getattr(s, name)
        if v is not None and len(v) != 2:
            raise _bad(name, v, "must be (x, y) in reference pixels or None")
    for name in ("galaxy_disk_scale", "galaxy_bulge_radius", "nebula_size"):
        positive(name)
    if not 0 <= s.galaxy_bulge_fraction <= 1:
        raise _bad("galaxy_bulge_fraction", s.galaxy_bulge_fraction, "must be in [0, 1]")
    if not 0 <= s.galaxy_inclination <= 90:
        raise _bad("galaxy_inclination", s.galaxy_inclination, "must be in [0, 90] degrees")
    if not s.filters or any(not f for f in s.filters) or len(set(s.filters)) != len(s.filters):
        raise _bad("filters", s.filters, "must be distinct, non-empty filter names")
    for f in s.filters:
        if any(c in f for c in "/\\:*?\"<>| "):
            raise _bad("filters", f, "a filter name is used in file names; no spaces or / \\ :")
    if s.light_exposures is not None:
        if len(s.light_exposures) != s.total_lights:
            raise _bad("light_exposures", s.light_exposures,
                       f"needs one exposure per light ({s.total_lights})")
        if not all(isinstance(t, (int, float)) and t > 0 for t in s.light_exposures):
            raise _bad("light_exposures", s.light_exposures, "exposures must be positive")
    n = s.total_lights
    for name in ("cloudy_frames", "trailed_frames", "satellite_frames"):
        bad = [i for i in getattr(s, name) if not 0 <= i < n]
        if bad:
            raise _bad(name, bad[0], f"is not a light index (0..{n - 1})")
    m = s.meridian_flip_frames
    if isinstance(m, bool) or not isinstance(m, (int, tuple)):
        raise _bad("meridian_flip_frames", m, "must be a count or a tuple of light indices")
    if isinstance(m, int) and not 0 <= m <= n:
        raise _bad("meridian_flip_frames", m, f"count must be in 0..{n}")
    if isinstance(m, tuple):
        bad = [i for i in m if not 0 <= i < n]
        if bad:
            raise _bad("meridian_flip_frames", bad[0], f"is not a light index (0..{n - 1})")
    if s.roworder not in ROWORDERS:
        raise _bad("roworder", s.roworder, f"must be one of {', '.join(ROWORDERS)}")
    if s.layout not in LAYOUTS:
        raise _bad("layout", s.layout, f"must be one of {', '.join(LAYOUTS)}")
    if s.amp_glow_corner not in AMP_GLOW_CORNERS:
        raise _bad("amp_glow_corner", s.amp_glow_corner,
                   f"must be one of {', '.join(AMP_GLOW_CORNERS)}")
    try:
        datetime.fromisoformat(s.start_time.rstrip("Z"))
    except (ValueError, AttributeError) as err:
        raise _bad("start_time", s.start_time, "must be an ISO 8601 date and time") from err


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


# ----------------------------------------------------------------------------------------------
# building a spec from command-line style options
# ----------------------------------------------------------------------------------------------
_OPTION_ALIASES = {
    "frames": "n_lights", "lights": "n_lights", "darks": "n_darks", "flats": "n_flats",
    "biases": "n_biases", "bias": "n_biases", "darkflats": "n_darkflats",
    "dark_flats": "n_darkflats", "exptime": "exposure", "filter": "filters",
}


def spec_from_options(**options: Any) -> SessionSpec:
    """Build a :class:`SessionSpec` from command-line style options.

    Accepts every :class:`SessionSpec` field plus these conveniences (``None`` values are
    ignored, so an argparse namespace can be passed as ``**vars(ns)`` after removing
    unrelated keys):

    ``size`` ("WxH" or ``(w, h)``) -> ``width``, ``height``; ``frames``/``lights`` ->
    ``n_lights``; ``darks``, ``flats``, ``biases``, ``darkflats`` -> ``n_*``; ``bayer``
    ("RGGB", ..., or "none"/"mono"); ``mono=True`` -> ``bayer=None``; ``filters`` or
    ``filter`` ("L,R,G,B" or a sequence); frame-index lists ("2,5" or a sequence) for
    ``cloudy_frames``, ``trailed_frames``, ``satellite_frames``; ``meridian_flip_frames``
    as a count ("3") or indices ("4,5"); ranges such as ``fwhm`` as "2.5,3.5".

    >>> spec_from_options(size="512x384", frames=4, bayer="none", seed=3).width
    512
    """
    opts = {k.replace("-", "_"): v for k, v in options.items() if v is not None}
    out: dict[str, Any] = {}
    if "size" in opts:
        size = opts.pop("size")
        try:
            if isinstance(size, str):
                w_text, h_text = size.lower().replace(" ", "").split("x")
                w, h = int(w_text), int(h_text)
            else:
                w, h = (int(v) for v in size)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"simulator option size = {size!r}: expected WxH, "
                              "e.g. 1024x768") from err
        out["width"], out["height"] = w, h
    if opts.pop("mono", False):
        out["bayer"] = None
    for key, value in opts.items():
        name = _OPTION_ALIASES.get(key, key)
        out[name] = value
    names = {f.name: f for f in fields(SessionSpec)}
    unknown = set(out) - set(names)
    if unknown:
        raise ConfigError(f"unknown simulator option {sorted(unknown)[0]!r}")
    for name, value in list(out.items()):
        if isinstance(value, str) and name in _TUPLE_FIELDS:
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if name == "filters":
                out[name] = tuple(parts)
            elif name.endswith("_frames"):
                out[name] = tuple(int(p) for p in parts)
            else:
                out[name] = tuple(float(p) for p in parts)
        elif name == "meridian_flip_frames" and isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            out[name] = int(parts[0]) if len(parts) == 1 and "," not in value \
                else tuple(int(p) for p in parts)
        elif name == "bayer" and isinstance(value, str) and value.strip().lower() in (
                "none", "mono", ""):
            out[name] = None
    try:
        return SessionSpec(**out)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid simulator options: {err}") from err


__all__ = ["SessionSpec", "spec_from_options", "filter_band", "FILTER_BANDS", "LAYOUTS",
           "ROWORDERS"]

