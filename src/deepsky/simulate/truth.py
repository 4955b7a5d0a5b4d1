"""The ground truth of a simulated session, as written to ``truth.json``.

All positions are 0-based pixel coordinates of the *stored* arrays (what
:func:`deepsky.io.fits.read_fits` returns), angles in degrees from +x towards +y of those
arrays, rates in e-/s per pixel of mean sensitivity, levels in ADU where named so.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from deepsky.errors import InputError
from deepsky.simulate.spec import SessionSpec
from deepsky.types import Transform

TRUTH_VERSION = 1


def _tuplify(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuplify(x) for k, x in v.items()}
    return v


@dataclass(frozen=True)
class SatelliteTruth:
    """A satellite or airplane trail: endpoints on the frame border (frame pixels),
    Gaussian FWHM ``width`` (px) and ``peak`` electrons on its centre line (before the
    flat field)."""

    x0: float
    y0: float
    x1: float
    y1: float
    width: float
    peak: float


@dataclass(frozen=True)
class LightTruth:
    """The truth of one light frame.

    ``transform``: 3x3 frame -> reference, row-major ``h00 .. h22``. ``fwhm`` the minor-axis
    Moffat FWHM (px) and ``elongation`` major/minor; ``psf_angle`` the major axis (deg);
    ``trail_length`` (px) / ``trail_angle`` (deg) the tracking trail of trailed frames;
    ``roundness`` minor/major of the PSF core (see :attr:`deepsky.simulate.psf.PSF.roundness`).
    ``background_rate`` the sky at the frame centre (e-/s/px, mean over channels, before the
    flat) and ``background`` that times the exposure (e-). ``cosmic_ray_hits``: first pixel
    x, y, electrons, track length in pixels.
    """

    index: int
    file: str
    filter: str
    exposure: float
    date_obs: str
    transform: tuple[float, ...]
    fwhm: float
    beta: float
    elongation: float
    psf_angle: float
    trail_length: float
    trail_angle: float
    roundness: float
    transparency: float
    background_factor: float
    background_rate: float
    background: float
    ccd_temp: float
    dark_scale: float
    meridian_flipped: bool
    cloudy: bool
    trailed: bool
    satellite: SatelliteTruth | None
    cosmic_rays: int
    cosmic_ray_hits: tuple[tuple[float, float, float, float], ...]
    n_stars_in_frame: int
    n_saturated_stars: int
    bad: bool
    bad_reason: str

    @property
    def transform_obj(self) -> Transform:
        """The transform as a :class:`~deepsky.types.Transform` (frame -> reference)."""
        return Transform.from_list(self.transform)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LightTruth":
        d = _tuplify(dict(d))
        sat = d.get("satellite")
        d["satellite"] = None if sat is None else SatelliteTruth(**sat)
        return cls(**d)


@dataclass(frozen=True)
class CalibrationTruth:
    """A dark, flat, bias or dark-flat frame. ``level`` is a flat's mean illumination in e-
    (before dark current; 0 for other kinds)."""

    kind: str
    index: int
    file: str
    filter: str | None
    exposure: float
    date_obs: str
    ccd_temp: float
    dark_scale: float
    level: float
    cosmic_rays: int


@dataclass(frozen=True)
class SensorTruth:
    """The camera. ``hot_pixels`` rows are ``(x, y, rate e-/s)``; ``dust`` rows ``(x, y,
    radius, depth)``; ``bayer`` is the BAYERPAT written (top-down), ``bayer_stored`` the
    pattern of the stored array's first pixel."""

    egain: float
    read_noise: float
    bias_level: float
    column_pattern_rms: float
    full_well: float
    saturation_adu: float
    saturation_electrons: float
    dark_current: float
    dark_doubling: float
    set_temperature: float
    temperature: float
    amp_glow: dict[str, float]
    hot_pixels: tuple[tuple[float, float, float], ...]
    cold_pixels: tuple[tuple[float, float], ...]
    dust: tuple[tuple[float, float, float, float], ...]
    vignetting: dict[str, float]
    prnu: float
    qe: tuple[float, float, float] | None
    flat_normalization: float
    bayer: str | None
    bayer_stored: str | None
    roworder: str


@dataclass(frozen=True)
class SkyTruth:
    """Sky glow ``level * (1 + gradient u + gradient_quadratic u**2)`` with
    ``u = ((x - cx) cos(angle) + (y - cy) sin(angle)) / scale`` (reference pixels), times
    ``color`` per channel and the filter's transmission: ``rates`` per filter (e-/s/px at
    u = 0, per channel for colour)."""

    level: float
    color: tuple[float, float, float]
    gradient: float
    gradient_quadratic: float
    angle: float
    cx: float
    cy: float
    scale: float
    rates: dict[str, tuple[float, ...]]


@dataclass(frozen=True)
class GalaxyTruth:
    """The galaxy (reference pixels). ``flux`` is the L total (e-/s), ``fluxes`` per filter
    (per channel for colour). ``aperture_radius`` holds ``aperture_fraction`` of the flux in
    the reference seeing (measured on the truth sky)."""

    x: float
    y: float
    flux: float
    fluxes: dict[str, tuple[float, ...]]
    disk_scale: float
    bulge_radius: float
    bulge_sersic: float
    bulge_fraction: float
    inclination: float
    axis_ratio: float
    bulge_axis_ratio: float
    position_angle: float
    truncation_radius: float
    aperture_radius: float
    aperture_fraction: float


@dataclass(frozen=True)
class NebulaTruth:
    """Emission nebula: blobs ``(x, y, sigma, weight)``, total L flux (e-/s)."""

    flux: float
    halpha_fraction: float
    blobs: tuple[tuple[float, float, float, float], ...]


@dataclass(frozen=True)
class Truth:
    """Everything known about a simulated session. Written as ``truth.json``.

    >>> # truth = simulate_session(spec, "out"); Truth.load("out") == truth
    """

    spec: SessionSpec
    lights: tuple[LightTruth, ...]
    calibration: tuple[CalibrationTruth, ...]
    sensor: SensorTruth
    sky: SkyTruth
    galaxy: GalaxyTruth | None
    nebula: NebulaTruth | None
    star_count: int
    n_saturated_stars: int
    reference_fwhm: float
    files: dict[str, str] = field(default_factory=dict)
    coordinates: str = "stored array (0-based x = column, y = row, as read)"
    version: int = TRUTH_VERSION

    # convenience --------------------------------------------------------------------------
    @property
    def bad_lights(self) -> tuple[int, ...]:
        """Indices of lights a quality selection should reject."""
        return tuple(lt.index for lt in self.lights if lt.bad)

    def transform(self, index: int) -> Transform:
        """Light ``index``'s transform (frame -> reference)."""
        return self.lights[index].transform_obj

    def frames(self, kind: str) -> tuple[Any, ...]:
        """Records of ``kind`` (light/dark/flat/bias/darkflat)."""
        if kind == "light":
            return self.lights
        return tuple(c for c in self.calibration if c.kind == kind)

    # serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return d

    def to_json(self) -> str:
        """JSON text (no NaN/Infinity)."""
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Truth":
        d = dict(d)
        return cls(
            spec=SessionSpec.from_dict(d["spec"]),
            lights=tuple(LightTruth.from_dict(x) for x in d["lights"]),
            calibration=tuple(CalibrationTruth(**_tuplify(x)) for x in d["calibration"]),
            sensor=SensorTruth(**_tuplify(d["sensor"])),
            sky=SkyTruth(**_tuplify(d["sky"])),
            galaxy=None if d.get("galaxy") is None else GalaxyTruth(**_tuplify(d["galaxy"])),
            nebula=None if d.get("nebula") is None else NebulaTruth(**_tuplify(d["nebula"])),
            star_count=int(d["star_count"]),
            n_saturated_stars=int(d["n_saturated_stars"]),
            reference_fwhm=float(d["reference_fwhm"]),
            files=dict(d.get("files", {})),
            coordinates=str(d.get("coordinates", "")),
            version=int(d.get("version", TRUTH_VERSION)),
        )

    @classmethod
    def from_json(cls, text: str) -> "Truth":
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Truth":
        """Read ``truth.json`` (or a session folder holding one)."""
        p = Path(path)
        if p.is_dir():
            p = p / "truth.json"
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError as err:
            raise InputError(p, "truth file not found") from err
        try:
            return cls.from_json(text)
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(p, f"not a deepsky simulator truth file ({err})") from err


def load_truth(path: str | os.PathLike) -> Truth:
    """Same as :meth:`Truth.load`."""
    return Truth.load(path)


# ----------------------------------------------------------------------------------------------
# star table
# ----------------------------------------------------------------------------------------------
def stars_csv(columns: Mapping[str, np.ndarray]) -> str:
    """CSV text of equal-length columns (floats with full precision, bools as 0/1)."""
    names = list(columns)
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(names)
    cols = []
    for n in names:
        a = np.asarray(columns[n])
        if a.dtype == bool:
            cols.append([str(int(v)) for v in a])
        elif np.issubdtype(a.dtype, np.integer):
            cols.append([str(int(v)) for v in a])
        else:
            cols.append([repr(float(v)) for v in a])
    for row in zip(*cols):
        wr.writerow(row)
    return buf.getvalue()


def read_truth_stars(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read ``truth_stars.csv`` (or the one in a session folder) into columns.

    ``id`` and ``n_frames`` are integers, ``neutral``/``saturated``/``in_reference``
    booleans, everything else float64.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "truth_stars.csv"
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise InputError(p, "truth star table not found") from err
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise InputError(p, "empty truth star table")
    head, body = rows[0], rows[1:]
    out: dict[str, np.ndarray] = {}
    for k, name in enumerate(head):
        vals = [r[k] for r in body]
        if name in ("id", "n_frames"):
            out[name] = np.array([int(v) for v in vals], dtype=np.int64)
        elif name in ("neutral", "saturated", "in_reference"):
            out[name] = np.array([v == "1" for v in vals], dtype=bool)
        else:
            out[name] = np.array([float(v) for v in vals], dtype=np.float64)
    return out
