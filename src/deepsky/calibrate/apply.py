"""Apply masters to a light: bias, (scaled) dark, flat, cosmetic correction.

``calibrate_band`` works on any band of rows of a frame, so the stacking code can calibrate
exactly the rows it needs; ``calibrate_frame`` is the whole-frame case. Values stay float:
negative results after subtraction are kept, never clipped to zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deepsky.calibrate.cosmetic import DefectMap

STEP_VERSION = "calibrate v1"


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """The masters one group of lights is calibrated with (full-frame arrays).

    ``dark`` is the master dark as combined (it carries the bias); with a master bias it can be
    scaled: ``light - bias - k * (dark - bias)``. ``flat`` is normalised (1 at the level of the
    centre of the field, per CFA channel on a mosaic).
    """

    bias: np.ndarray | None = None
    dark: np.ndarray | None = None
    dark_exposure: float | None = None
    flat: np.ndarray | None = None
    defects: DefectMap | None = None
    bayer: str | None = None
    names: dict[str, str] = field(default_factory=dict)
    dark_scaling: bool = True
    notes: tuple[str, ...] = ()
    spec: "CalibrationSpec | None" = None

    @property
    def empty(self) -> bool:
        return self.bias is None and self.dark is None and self.flat is None and (
            self.defects is None or self.defects.count == 0)

    def dark_scale_for(self, exposure: float | None) -> float:
        """The exposure ratio a dark is scaled by for a light of ``exposure`` seconds (1 when
        scaling is impossible or not wanted)."""
        if (self.dark is None or self.bias is None or not self.dark_scaling
                or exposure is None or not self.dark_exposure):
            return 1.0
        return float(exposure) / float(self.dark_exposure)

    def history(self, dark_scale: float = 1.0) -> list[str]:
        """One line per step, for the calibrated frame's HISTORY."""
        out = []
        if self.bias is not None and not (self.dark is not None and dark_scale == 1.0):
            out.append(f"{STEP_VERSION}: bias subtracted ({self.names.get('bias', 'master bias')})")
        if self.dark is not None:
            how = "subtracted" if dark_scale == 1.0 else f"scaled by {dark_scale:.4f} and subtracted"
            out.append(f"{STEP_VERSION}: dark {how} ({self.names.get('dark', 'master dark')})")
        if self.flat is not None:
            out.append(f"{STEP_VERSION}: divided by flat ({self.names.get('flat', 'master flat')})")
        if self.defects is not None and self.defects.count:
            out.append(f"{STEP_VERSION}: cosmetic correction of {self.defects.count} defective "
                       "pixels")
        return out


def calibrate_band(band: np.ndarray, cal: CalibrationSet, *, y0: int = 0, x0: int = 0,
                   dark_scale: float = 1.0, cosmetic: bool = True,
                   overwrite: bool = False) -> np.ndarray:
    """Calibrate the region of a raw light whose top-left pixel is ``(x0, y0)`` (a new
    float32 array; with ``overwrite``, ``band`` itself when it is a writable float32 array
    the caller has no further use for: a frame's worth of memory traffic less).

    Parameters
    ----------
    band : array (rows, W) or (3, rows, W)
        Raw pixel values in ADU.
    cal : CalibrationSet
        The masters (full-frame arrays; the matching rows are used).
    dark_scale : float
        ``k`` in ``light - bias - k (dark - bias)``; 1 uses the dark as it is.
    """
    if (overwrite and isinstance(band, np.ndarray) and band.dtype == np.float32
            and band.flags.writeable):
        out = band
    else:
        out = np.array(band, dtype=np.float32, copy=True)
    rows = slice(y0, y0 + out.shape[-2])
    cols = slice(x0, x0 + out.shape[-1])
    if cal.dark is not None:
        dark = cal.dark[..., rows, cols]
        if dark_scale == 1.0 or cal.bias is None:
            out -= dark
        else:
            bias = cal.bias[..., rows, cols]
            out -= bias
            out -= np.float32(dark_scale) * (dark - bias)
    elif cal.bias is not None:
        out -= cal.bias[..., rows, cols]
    if cal.flat is not None:
        out /= cal.flat[..., rows, cols]
    if cosmetic and cal.defects is not None:
        cal.defects.apply(out, y0=y0, x0=x0)
    return out


def calibrate_frame(data: np.ndarray, cal: CalibrationSet, *, dark_scale: float = 1.0,
                    cosmetic: bool = True, overwrite: bool = False) -> np.ndarray:
    """Calibrate a whole raw light (see :func:`calibrate_band`)."""
    return calibrate_band(data, cal, y0=0, dark_scale=dark_scale, cosmetic=cosmetic,
                          overwrite=overwrite)


def optimize_dark_scale(light: np.ndarray, cal: CalibrationSet, *, default: float = 1.0,
                        min_pixels: int = 50) -> float:
    """The dark scale ``k`` that best removes the dark signal from this light.

    Looks only at pixels where the dark current stands out from its neighbourhood (warm and
    hot pixels carry the information; the sky and stars are removed by the high-pass filter),
    and takes the median ratio of light to dark excess there: robust to stars and cosmic rays.
    This minimises the residual dark pattern, hence the noise, of the calibrated light, as
    Siril's ``-opt`` and DeepSkyStacker's dark optimisation aim to. Needs a master bias;
    returns ``default`` when there is too little dark signal to measure.
    """
    from deepsky.calibrate.cosmetic import local_residual, robust_sigma

    if cal.dark is None or cal.bias is None or light.ndim != 2:
        return default
    current = cal.dark - cal.bias
    rd = local_residual(current, cal.bayer, size=5)
    s = robust_sigma(rd)
    sel = rd > 10 * max(s, 1e-6)
    if int(sel.sum()) < min_pixels:
        return default
    rl = local_residual(light - cal.bias, cal.bayer, size=5)
    ratio = rl[sel] / rd[sel]
    ratio = ratio[np.isfinite(ratio)]
    if ratio.size < min_pixels:
        return default
    k = float(np.median(ratio))
    return k if np.isfinite(k) and k > 0 else default


@dataclass(frozen=True)
class CalibrationSpec:
    """Where a :class:`CalibrationSet`'s masters live on disk: small and picklable, so that
    worker processes (local or on a Dask cluster reading the same shared path) rebuild the
    set themselves instead of receiving the arrays with every task."""

    bias: str | None = None
    dark: str | None = None
    dark_exposure: float | None = None
    flat: str | None = None
    flat_floor: float = 0.05
    defects: str | None = None
    bayer: str | None = None
    dark_scaling: bool = True

    def load(self) -> CalibrationSet:
        """The set, read once per process (later calls return the cached one)."""
        return _load_spec(self)


_SPEC_CACHE: dict[CalibrationSpec, CalibrationSet] = {}


def _load_spec(spec: CalibrationSpec) -> CalibrationSet:
    cached = _SPEC_CACHE.get(spec)
    if cached is not None:
        return cached
    from deepsky import io
    from deepsky.calibrate.masters import normalize_per_channel

    def arr(path: str | None) -> np.ndarray | None:
        return None if path is None else io.read(path).data

    flat = arr(spec.flat)
    if flat is not None:
        flat, _ = normalize_per_channel(flat, spec.bayer, floor=spec.flat_floor)
    defects = None
    if spec.defects is not None:
        defects = DefectMap(io.read(spec.defects).data > 0, spec.bayer)
    cal = CalibrationSet(bias=arr(spec.bias), dark=arr(spec.dark),
                         dark_exposure=spec.dark_exposure, flat=flat, defects=defects,
                         bayer=spec.bayer, dark_scaling=spec.dark_scaling, spec=spec)
    if len(_SPEC_CACHE) > 16:  # a process serves one session at a time
        _SPEC_CACHE.clear()
    _SPEC_CACHE[spec] = cal
    return cal
