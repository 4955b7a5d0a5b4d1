"""One frozen, typed configuration tree.

Every setting has a type, a default and a one-line description; choices are ``Literal`` types
and numeric ranges are declared with :func:`setting`. A TOML file (``--config``) and ``--set
section.key=value`` overrides use the same dotted keys. Unknown keys and bad values raise a
:class:`~deepsky.errors.ConfigError` that names the key and what is allowed.

>>> cfg = load_config(overrides=["calibration.master_rejection=median"])
>>> cfg.calibration.master_rejection
'median'
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping, get_args, get_origin

from deepsky.errors import ConfigError


def setting(default: Any, doc: str, *, min: float | None = None, max: float | None = None) -> Any:
    """A config field with its description and optional numeric bounds (inclusive)."""
    return field(default=default, metadata={"doc": doc, "min": min, "max": max})


# ----------------------------------------------------------------------------------------------
# The tree
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationConfig:
    master_rejection: Literal["winsorized", "sigma", "median", "mean"] = setting(
        "winsorized", "How calibration frames are combined into masters (median is used "
        "automatically for 2-4 frames)")
    master_sigma: float = setting(3.0, "Rejection threshold in sigma for master combination",
                                  min=1.0, max=10.0)
    dark_temperature_tolerance: float = setting(
        2.0, "Largest sensor temperature difference (deg C) between a light and its dark",
        min=0.0, max=50.0)
    dark_scaling: Literal["auto", "off"] = setting(
        "auto", "auto: scale a bias-subtracted dark by the exposure ratio when no dark has "
        "the light's exposure; off: use only darks of the same exposure")
    dark_optimize: bool = setting(
        False, "Find the dark scale factor that minimises the noise of each calibrated light "
        "(as Siril's -opt); needs a master bias or bias-free darks")
    flat_floor: float = setting(
        0.05, "Flat pixels below this fraction of the flat's level are not divided by "
        "(they are masked as bad)", min=0.0, max=0.9)
    cosmetic: bool = setting(True, "Correct hot and cold pixels and bad columns/rows")
    hot_sigma: float = setting(5.0, "A master-dark pixel this many sigma above its "
                               "neighbourhood is hot", min=2.0, max=100.0)
    cold_sigma: float = setting(5.0, "A flat-field pixel this many sigma below its "
                                "neighbourhood is cold", min=2.0, max=100.0)
    debayer: Literal["rcd", "vng", "bilinear", "superpixel", "none"] = setting(
        "rcd", "Demosaicing of one-shot-colour frames; none keeps the CFA mosaic (for Bayer "
        "drizzle)")
    bayer_pattern: Literal["auto", "none", "RGGB", "BGGR", "GRBG", "GBRG"] = setting(
        "auto", "CFA pattern of the camera: auto reads BAYERPAT from the files; a pattern "
        "(of the pixels as stored) overrides a missing or wrong BAYERPAT; none: a mono "
        "camera whatever the files say")


@dataclass(frozen=True)
class DetectionConfig:
    threshold: float = setting(5.0, "Star detection threshold, in sigma of the background noise",
                               min=2.0, max=100.0)
    max_stars: int = setting(2000, "Keep at most this many stars per frame (the brightest)",
                             min=10, max=100000)
    background_box: int = setting(64, "Background mesh box size, px", min=8, max=1024)


@dataclass(frozen=True)
class SelectionConfig:
    enabled: bool = setting(True, "Reject bad frames (clouds, seeing, trailing, background "
                                  "jumps); false keeps every frame that registers")
    min_stars: int = setting(4, "Fewest stars a frame may have", min=0, max=100000)
    min_star_fraction: float = setting(
        0.5, "Reject a frame with fewer stars than this fraction of the session median "
        "(clouds)", min=0.0, max=1.0)
    max_fwhm_ratio: float = setting(
        1.6, "Reject a frame whose FWHM exceeds the session median by this factor "
        "(seeing, focus)", min=1.0, max=10.0)
    min_roundness: float = setting(0.5, "Reject a frame whose stars are less round than this "
                                        "(minor/major axis: trailing, wind)", min=0.0, max=1.0)
    max_background_jump: float = setting(
        5.0, "Reject a frame whose background is this many robust sigmas above the session's "
        "(clouds, dawn)", min=1.0, max=1000.0)


@dataclass(frozen=True)
class RegistrationConfig:
    reference: str = setting("auto", "Reference frame: auto (the best frame) or a light's "
                                     "file name")
    model: Literal["shift", "similarity", "affine", "homography"] = setting(
        "affine", "Transform model: affine (default: best prediction on real data, see "
        "docs/registration.md), similarity, shift or homography; few matched stars fall back to "
        "simpler models")
    interpolation: Literal["lanczos3", "bicubic", "bilinear", "nearest"] = setting(
        "lanczos3", "Resampling of frames onto the reference grid")
    clamp: bool = setting(True, "Clamp Lanczos resampling so bright stars get no dark rings")
    min_matches: int = setting(4, "Fewest matched stars accepted (when the match is "
                                  "unambiguous)", min=3, max=1000)
    max_rms: float = setting(1.0, "Largest RMS residual of the matched stars, px", min=0.01,
                             max=20.0)
    phase_fallback: bool = setting(True, "Register frames with too few stars by phase "
                                         "correlation")


@dataclass(frozen=True)
class IntegrationConfig:
    normalization: Literal["none", "additive", "multiplicative", "additive_scaling",
                           "photometric"] = setting(
        "photometric", "How frames are put on a common scale before combination")
    weighting: Literal["none", "noise", "quality", "exposure"] = setting(
        "noise", "Frame weights of the mean")
    rejection: Literal["auto", "none", "minmax", "percentile", "sigma", "winsorized", "mad",
                       "linear", "gesd", "median"] = setting(
        "auto", "Pixel rejection (auto: winsorized sigma with 5+ frames, MAD with 3-4, none "
        "below)")
    low: float = setting(4.0, "Low rejection threshold (sigma; counts for minmax; fraction "
                              "for percentile)", min=0.0, max=100.0)
    high: float = setting(3.0, "High rejection threshold", min=0.0, max=100.0)
    trails: bool = setting(True, "Find satellite and airplane trails and mask them")
    trail_threshold: float = setting(8.0, "Trail detection threshold, sigma", min=3.0,
                                     max=1000.0)
    trail_margin: float = setting(3.0, "Pixels masked on each side of a trail beyond its "
                                       "width", min=0.0, max=200.0)
    framing: Literal["reference", "union", "intersection"] = setting(
        "reference", "Output frame: the reference frame, everything any frame covers, or "
        "what all frames cover")
    autocrop: bool = setting(False, "Crop edges covered by fewer than half of the frames")
    drizzle: float = setting(1.0, "Drizzle scale (1 = no drizzle; 1.5, 2, 3 ...)", min=1.0,
                             max=3.0)
    pixfrac: float = setting(0.8, "Drizzle drop size, as a fraction of an input pixel",
                             min=0.1, max=1.0)
    kernel: Literal["square", "point", "turbo", "gaussian", "lanczos3"] = setting(
        "square", "Drizzle kernel")
    bayer_drizzle: bool = setting(
        False, "One-shot colour: build the colour by drizzling each CFA colour's pixels "
        "(no debayering; needs dithered frames). Also on when calibration.debayer = none")


@dataclass(frozen=True)
class RunConfig:
    scheduler: str = setting(
        "threads", "Where per-frame and per-tile work runs: threads (this process), "
        "processes (a local Dask cluster) or tcp://HOST:PORT (an existing Dask scheduler)")
    workers: int = setting(0, "Parallel workers for per-frame work (0 = number of CPU cores)",
                           min=0, max=1024)
    memory_mb: int = setting(
        64, "Memory budget, MiB, of the block of samples integrated at once, per colour "
        "channel (and of the bands combined into masters, at most 64 MiB of those): peak "
        "memory stays near it plus the output images, however many frames",
        min=1, max=1_048_576)


@dataclass(frozen=True)
class GradientConfig:
    enabled: bool = setting(True, "Remove the sky background's gradient (light pollution, "
                            "vignetting) before anything else")
    mode: Literal["subtract", "divide"] = setting(
        "subtract", "subtract: additive light pollution; divide: multiplicative vignetting "
        "left by missing or poor flats")
    method: Literal["poly", "rbf"] = setting(
        "poly", "Background surface: poly (polynomial, robust, for smooth gradients) or rbf "
        "(thin-plate spline through the samples, for complex ones)")
    degree: int = setting(2, "Polynomial degree (poly)", min=1, max=4)
    smoothing: float = setting(1.0, "Smoothing of the rbf surface (0 = through every sample)",
                               min=0.0, max=1000.0)
    grid: int = setting(16, "Background samples along the long side of the image", min=4,
                        max=64)
    tolerance: float = setting(3.0, "Sample rejection threshold in sigma: samples brighter "
                               "than their neighbours or the robust surface by more are "
                               "dropped (lower rejects more)", min=0.5, max=100.0)
    samples_file: str = setting(
        "", "CSV of x,y sample positions to fit instead of the automatic samples (edit the "
        "background_samples.csv an earlier run wrote); empty = automatic")


@dataclass(frozen=True)
class ColorPostConfig:
    neutralize_background: bool = setting(True, "Make the background of the three channels "
                                          "equal (colour images)")
    white_balance: Literal["stars", "g2v", "none", "photometric"] = setting(
        "stars", "stars: the mean colour of unsaturated stars becomes white; g2v: a sun-like "
        "star becomes white, from g2v_red and g2v_blue; none; photometric: catalogue "
        "calibration, not available yet (needs plate solving)")
    g2v_red: float = setting(1.0, "R/G flux ratio a G2V star records with this camera "
                             "(white_balance = g2v)", min=0.001, max=1000.0)
    g2v_blue: float = setting(1.0, "B/G flux ratio a G2V star records with this camera "
                              "(white_balance = g2v)", min=0.001, max=1000.0)
    match_channels: bool = setting(False, "Match R and B linearly to G first (LinearFit; for "
                                   "stacks combined from separate filters)")
    scnr: float = setting(0.0, "Green noise removal (SCNR) amount on the stretched image, "
                          "0 = off (after colour calibration it is not needed, and on a "
                          "neutral noisy background it tints it magenta)", min=0.0, max=1.0)
    scnr_method: Literal["average", "maximum"] = setting(
        "average", "SCNR protection: average neutral (G <= (R+B)/2) or maximum neutral "
        "(G <= max(R, B))")


@dataclass(frozen=True)
class DeconvolutionConfig:
    enabled: bool = setting(True, "Sharpen stars and detail by Richardson-Lucy deconvolution "
                            "with the image's own PSF (deringed, background protected)")
    iterations: int = setting(15, "Richardson-Lucy iterations", min=1, max=200)
    psf_fwhm: float = setting(0.0, "PSF FWHM in px; 0 = measure it on the image's stars",
                              min=0.0, max=50.0)
    psf_beta: float = setting(3.0, "Moffat beta of a PSF given by psf_fwhm", min=1.1,
                              max=20.0)
    dering: bool = setting(True, "Forbid dark rings: no pixel ends darker than both its "
                           "original value and the local background")


@dataclass(frozen=True)
class DenoiseConfig:
    enabled: bool = setting(True, "Wavelet (starlet) noise reduction of the linear image")
    luminance: float = setting(0.5, "Luminance noise reduction amount (0 = none, 1 = full)",
                               min=0.0, max=1.0)
    chrominance: float = setting(1.0, "Colour noise reduction amount", min=0.0, max=1.0)
    threshold: float = setting(3.0, "Luminance threshold in sigma of each wavelet layer's "
                               "noise", min=0.0, max=20.0)
    chrominance_threshold: float = setting(4.0, "Colour threshold in sigma", min=0.0,
                                           max=20.0)
    scales: int = setting(4, "Wavelet layers treated (each twice as coarse as the last)",
                          min=1, max=8)


@dataclass(frozen=True)
class GHSConfig:
    d: float = setting(5.0, "Stretch factor D as Siril shows it, ln(1 + D') (method = ghs; "
                       "method = auto solves it for the target background)", min=0.0, max=20.0)
    b: float = setting(3.0, "Local intensity b: 1 harmonic (like STF), 0 exponential, -1 "
                       "logarithmic; larger values keep galaxy cores from burning", min=-5.0,
                       max=15.0)
    sp: float | None = setting(None, "Symmetry point SP (0..1, after the black point), where "
                               "contrast is highest; empty = at the background", min=0.0,
                               max=1.0)
    lp: float = setting(0.0, "Shadow protection LP: linear below (0..SP)", min=0.0, max=1.0)
    hp: float = setting(1.0, "Highlight protection HP: linear above (SP..1)", min=0.0, max=1.0)


@dataclass(frozen=True)
class StretchConfig:
    method: Literal["auto", "ghs", "stf", "asinh", "none"] = setting(
        "auto", "auto: GHS with D solved for the target background; ghs: GHS as given; stf: "
        "PixInsight screen transfer function; asinh: colour-preserving arcsinh; none: "
        "linear")
    target_background: float = setting(0.15, "Where the sky background lands, 0..1 of the "
                                        "display range", min=0.01, max=0.6)
    shadows_clip: float = setting(-2.8, "Black point in noise sigma (MADN) from the "
                                  "background", min=-10.0, max=0.0)
    linked: bool = setting(True, "stf: one curve for all channels (false: per channel)")
    color: Literal["luminance", "channels"] = setting(
        "luminance", "luminance: stretch the luminance and keep each pixel's colour; "
        "channels: stretch each channel (desaturates bright areas)")
    ghs: GHSConfig = field(default_factory=GHSConfig)
    black_point: float = setting(0.0, "Extra black point after the stretch (0..1)", min=0.0,
                                 max=0.9)
    white_point: float = setting(1.0, "White point after the stretch (0..1)", min=0.1,
                                 max=1.0)
    curve: str = setting("", "Tone curve points x:y after the stretch, e.g. "
                         "'0.25:0.22, 0.75:0.8' (monotone spline; empty = none)")
    saturation: float = setting(1.0, "Colour saturation (1 = unchanged), faded in above "
                                "the background", min=0.0, max=4.0)


@dataclass(frozen=True)
class StarsConfig:
    reduction: float = setting(0.0, "Star reduction amount (0 = off, 1 = full erosion "
                               "inside the star mask)", min=0.0, max=1.0)
    radius: int = setting(1, "Star reduction erosion radius, px", min=1, max=10)


@dataclass(frozen=True)
class ExportConfig:
    tiff: bool = setting(True, "Write final.tif (16-bit, the stretched image)")
    jpeg: bool = setting(True, "Write final.jpg (8-bit sRGB)")
    jpeg_quality: int = setting(92, "JPEG quality", min=50, max=100)
    background_model: bool = setting(True, "Write background_model.fits and "
                                     "background_samples.csv")


@dataclass(frozen=True)
class PostprocessConfig:
    gradient: GradientConfig = field(default_factory=GradientConfig)
    color: ColorPostConfig = field(default_factory=ColorPostConfig)
    deconvolution: DeconvolutionConfig = field(default_factory=DeconvolutionConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    stretch: StretchConfig = field(default_factory=StretchConfig)
    stars: StarsConfig = field(default_factory=StarsConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


@dataclass(frozen=True)
class Config:
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    integration: IntegrationConfig = field(default_factory=IntegrationConfig)
    run: RunConfig = field(default_factory=RunConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)


# ----------------------------------------------------------------------------------------------
# Loading and validation
# ----------------------------------------------------------------------------------------------
def _section_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a text"
    if _is_optional(tp):
        return _describe(_inner(tp)) + " (or empty)"
    return str(tp)


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) in (typing.Union, types.UnionType) and type(None) in get_args(tp)


def _inner(tp: Any) -> Any:
    return next(a for a in get_args(tp) if a is not type(None))


def _coerce(key: str, tp: Any, value: Any, meta: Mapping[str, Any]) -> Any:
    """Check and convert one value; raise ConfigError naming the key and what is allowed."""
    def bad() -> ConfigError:
        return ConfigError(f"setting {key} = {value!r} is not allowed: expected {_describe(tp)}"
                           + _range_text(meta))

    if _is_optional(tp):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return _coerce(key, _inner(tp), value, meta)
    if get_origin(tp) is Literal:
        allowed = get_args(tp)
        if isinstance(value, str):
            for a in allowed:
                if isinstance(a, str) and a.lower() == value.strip().lower():
                    return a
        if value in allowed:
            return value
        raise bad()
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
            return False
        raise bad()
    if tp is int:
        if isinstance(value, bool):
            raise bad()
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise bad() from None
        if not f.is_integer():
            raise bad()
        out: Any = int(f)
    elif tp is float:
        if isinstance(value, bool):
            raise bad()
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise bad() from None
        if not math.isfinite(out):
            raise bad()
    elif tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad()
        out = str(value)
    else:  # pragma: no cover - only the types above are used
        raise ConfigError(f"setting {key}: unsupported type {tp}")
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        raise ConfigError(f"setting {key} = {value!r} is out of range" + _range_text(meta))
    return out


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _range_text(meta: Mapping[str, Any]) -> str:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" (minimum {_num(lo)})"
    if lo is None:
        return f" (maximum {_num(hi)})"
    return f" (allowed {_num(lo)} to {_num(hi)})"


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = _section_types(cls)
    by_name = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(by_name))
    if unknown:
        where = f"section [{prefix}]" if prefix else "the top level"
        raise ConfigError(f"unknown setting {_join(prefix, unknown[0])} in {where}; known: "
                          + ", ".join(sorted(by_name)))
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = by_name[name]
        tp = hints[name]
        key = _join(prefix, name)
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"setting {key} must be a section (a table), got {value!r}")
            kwargs[name] = _build(tp, value, key)
        else:
            kwargs[name] = _coerce(key, tp, value, f.metadata)
    return cls(**kwargs)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"a.b=3"`` -> ``{"a": {"b": "3"}}`` (values are strings, converted on validation)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, value = text.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    out: dict[str, Any] = {parts[-1]: value.strip()}
    for p in reversed(parts[:-1]):
        out = {p: out}
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then ``--set`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError as err:
            raise ConfigError(f"{p}: config file not found") from err
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{p}: cannot read the config file ({err})") from err
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{p}: not valid TOML ({err})") from err
    for ov in overrides:
        data = _merge(data, parse_override(ov))
    return config_from_dict(data)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    return _build(Config, data, "")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if v is None:
        return '""'
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def to_toml(cfg: Any, *, comments: bool = True) -> str:
    """The config as TOML text, each setting preceded by its description and allowed values.
    Sections may nest (``[postprocess.stretch]``)."""
    lines: list[str] = []

    def section(obj: Any, name: str) -> None:
        hints = _section_types(type(obj))
        scalars = [f for f in fields(obj) if not dataclasses.is_dataclass(getattr(obj, f.name))]
        subs = [f for f in fields(obj) if dataclasses.is_dataclass(getattr(obj, f.name))]
        if scalars:
            if lines:
                lines.append("")
            lines.append(f"[{name}]")
            for sf in scalars:
                if comments:
                    lines.append(f"# {sf.metadata.get('doc', '')}")
                    lines.append(f"# {_describe(hints[sf.name])}{_range_text(sf.metadata)}")
                lines.append(f"{sf.name} = {_toml_value(getattr(obj, sf.name))}")
        for sf in subs:
            section(getattr(obj, sf.name), f"{name}.{sf.name}")

    for f in fields(cfg):
        sec = getattr(cfg, f.name)
        if dataclasses.is_dataclass(sec):
            section(sec, f.name)
    return "\n".join(lines) + "\n"
