"""Which masters each light needs: matching, building (or reusing) and checking them.

Matching rules (every mismatch is a warning that names the frames):

* **bias**: same size and binning; the same gain when the files say (else any, warned).
* **dark**: same size and binning and gain, sensor temperature within the tolerance; the same
  exposure when there is one, else the nearest exposure scaled by the exposure ratio (the dark
  current is linear in time; scaling needs a master bias to separate the bias from the dark
  current). Without biases, darks carry the bias and are used as they are.
* **flat**: same size, binning and Bayer pattern, the same filter (case-insensitive).
  Flats are calibrated by dark-flats of their exposure, else by the master bias, else by a
  dark of their exposure; normalised per CFA channel on colour sensors.
* **defects**: hot pixels from the master dark, cold pixels from the master flat, bad
  columns/rows from the master dark (or bias), and pixels that spike in most lights.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from deepsky.calibrate import cosmetic
from deepsky.calibrate.apply import CalibrationSet, CalibrationSpec
from deepsky.calibrate.library import Library, master_key, write_defect_map
from deepsky.calibrate.masters import Master, combine_sources, frame_level, normalize_per_channel
from deepsky.config import CalibrationConfig
from deepsky.errors import CalibrationError
from deepsky.io.discover import Session, same_filter
from deepsky.io.sources import FrameSource, open_source
from deepsky.parallel import BackgroundWriter, map_threads
from deepsky.types import FrameMeta

Progress = Callable[[str], None]


def _geom(m: FrameMeta) -> tuple[Any, ...]:
    return (m.width, m.height, m.binning, m.channels)


def _name(m: FrameMeta) -> str:
    return m.path.name if m.path else "?"


def _names(metas: Sequence[FrameMeta], n: int = 3) -> str:
    s = ", ".join(_name(m) for m in metas[:n])
    return s + (f" and {len(metas) - n} more" if len(metas) > n else "")


def _slug(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(text)).strip("_") or "x"


def _cluster_temperatures(metas: list[FrameMeta], tol: float) -> list[list[FrameMeta]]:
    """Split frames into groups whose temperatures lie within ``tol`` of the group's first."""
    known = sorted((m for m in metas if m.temperature is not None), key=lambda m: m.temperature)
    groups: list[list[FrameMeta]] = []
    for m in known:
        if groups and m.temperature - groups[-1][0].temperature <= tol:
            groups[-1].append(m)
        else:
            groups.append([m])
    unknown = [m for m in metas if m.temperature is None]
    if unknown:
        groups.append(unknown)
    return groups


def _median_temp(metas: Sequence[FrameMeta]) -> float | None:
    t = [m.temperature for m in metas if m.temperature is not None]
    return float(np.median(t)) if t else None


@dataclass
class MasterRecord:
    """A master in use, as reported in the run's records."""

    kind: str
    name: str
    path: Path | None
    n_frames: int
    method: str
    reused: bool
    exposure: float | None = None
    temperature: float | None = None
    filter: str | None = None


@dataclass
class CalibrationPlan:
    """Calibration of every light of a session."""

    sets: dict[str, CalibrationSet] = field(default_factory=dict)  # light path -> set
    dark_scales: dict[str, float] = field(default_factory=dict)
    masters: list[MasterRecord] = field(default_factory=list)
    defect_maps: dict[str, Path] = field(default_factory=dict)
    defect_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def for_light(self, meta: FrameMeta) -> tuple[CalibrationSet, float]:
        key = str(meta.path)
        return self.sets.get(key, CalibrationSet(bayer=meta.bayer)), self.dark_scales.get(key, 1.0)


class _Builder:
    def __init__(self, session: Session, cfg: CalibrationConfig, out: Path | None,
                 memory_mb: float, progress: Progress | None, cache_dir: Path | None) -> None:
        self.session = session
        self.cfg = cfg
        self.library = Library(out) if out is not None else None
        self.memory_mb = memory_mb
        self.progress = progress or (lambda _msg: None)
        self.cache_dir = cache_dir
        self.records: list[MasterRecord] = []
        self.warnings: list[str] = []
        self._built: dict[str, Master] = {}
        self._defects: dict[str, cosmetic.DefectMap] = {}
        self._defect_paths: dict[int, str] = {}
        # Masters are written to the library by one background thread while the next one
        # is combined (a 2048 x 2048 master took 0.13-0.2 s to write, the cores idle).
        self._writer = BackgroundWriter("master-writer")
        self._paths: dict[str, Path] = {}

    def sources(self, metas: Sequence[FrameMeta]) -> list[FrameSource]:
        return [open_source(m.path, meta=m, cache_dir=self.cache_dir) for m in metas]

    def path(self, key: str) -> str | None:
        p = self._paths.get(key) or (self.library.path_of(key) if self.library is not None
                                     else None)
        return None if p is None else str(p)

    def _store(self, key: str, name: str, master: Master, inputs: list[Path], n: int) -> None:
        assert self.library is not None
        self.library.store(key, name, master, inputs=inputs)
        from deepsky.pipeline.progress import fault_point

        fault_point("masters", n)

    def finish(self, *, quietly: bool = False) -> None:
        """Wait for the masters still being written (the first failure is raised unless
        ``quietly``: the build already failed)."""
        self._writer.finish(quietly=quietly)

    def defect_path(self, dm: cosmetic.DefectMap) -> str | None:
        return self._defect_paths.get(id(dm))

    def warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)

    def defect_map(self, mask: np.ndarray, bayer: str | None, tag: str,
                   lname: str) -> cosmetic.DefectMap:
        """One DefectMap (and one file) per distinct mask."""
        import hashlib

        key = hashlib.sha1(np.packbits(mask).tobytes() + str(bayer).encode()).hexdigest()[:12]
        if key in self._defects:
            return self._defects[key]
        dm = cosmetic.DefectMap(mask, bayer)
        self._defects[key] = dm
        if self.library is not None:
            n = sum(1 for r in self.records if r.kind == "defects" and r.filter == tag)
            name = f"defects_{_slug(tag)}{'' if n == 0 else f'_{n + 1}'}.fits"
            path = write_defect_map(self.library.folder / name, mask,
                                    history=[f"defect map for {lname}"])
            self._defect_paths[id(dm)] = str(path)
            self.records.append(MasterRecord("defects", name, path, dm.count, "k-sigma",
                                             False, None, None, tag))
        return dm

    def master(self, kind: str, metas: list[FrameMeta], name: str, *,
               extra: dict[str, Any] | None = None,
               prepare_factory: Callable[[list[FrameSource]], Callable[..., np.ndarray] | None]
               | None = None, depends: str = "") -> tuple[Master, str]:
        settings = {"method": self.cfg.master_rejection, "sigma": self.cfg.master_sigma,
                    "depends": depends, **(extra or {})}
        key = master_key(kind, [m.path for m in metas], settings)
        if key in self._built:
            return self._built[key], key
        cached = self.library.load(key) if self.library is not None else None
        reused = cached is not None
        if cached is None:
            self.progress(f"building master {kind} from {len(metas)} frames")
            srcs = self.sources(metas)
            prepare = prepare_factory(srcs) if prepare_factory else None
            master = combine_sources(srcs, kind=kind, method=self.cfg.master_rejection,
                                     sigma=self.cfg.master_sigma, memory_mb=self.memory_mb,
                                     prepare=prepare)
            path = None
            if self.library is not None:
                path = self._paths[key] = self.library.folder / name
                n = sum(1 for r in self.records if not r.reused) + 1
                self._writer.submit(self._store, key, name, master, [m.path for m in metas], n)
        else:
            master = cached
            path = self.library.path_of(key) if self.library is not None else None
        self._built[key] = master
        self.records.append(MasterRecord(kind, name, path, master.n_frames, master.method, reused,
                                         master.exposure, master.temperature, master.filter))
        return master, key


def plan_calibration(
    session: Session,
    cfg: CalibrationConfig,
    *,
    out: str | Path | None = None,
    memory_mb: float = 1024,
    lights: Sequence[FrameMeta] | None = None,
    progress: Progress | None = None,
    cache_dir: str | Path | None = None,
) -> CalibrationPlan:
    """Build or reuse the masters the lights need and say which light gets which.

    ``out`` is the masters folder (the calibration library); None keeps masters in memory.
    """
    outp = Path(out) if out is not None else None
    b = _Builder(session, cfg, outp, memory_mb, progress,
                 Path(cache_dir) if cache_dir is not None else None)
    plan = CalibrationPlan()
    todo = list(lights if lights is not None else session.lights)
    if not todo:
        return plan

    # Group the lights by what decides their masters.
    groups: dict[tuple[Any, ...], list[FrameMeta]] = defaultdict(list)
    for m in todo:
        groups[(_geom(m), m.bayer, (m.filter or "").lower(), m.exposure, m.gain_or_iso)].append(m)

    try:
        for (geom, bayer, _flt, exposure, gain), metas in groups.items():
            temp_groups = _cluster_temperatures(metas, cfg.dark_temperature_tolerance)
            for tg in temp_groups:
                cal, scale_for = _calibration_for(b, tg, geom, bayer, exposure, gain)
                for m in tg:
                    plan.sets[str(m.path)] = cal
                    plan.dark_scales[str(m.path)] = scale_for(m)
    except BaseException:
        b.finish(quietly=True)
        raise
    b.finish()
    plan.masters = b.records
    plan.warnings = b.warnings
    return plan


def _calibration_for(b: _Builder, lights: list[FrameMeta], geom: tuple[Any, ...],
                     bayer: str | None, exposure: float | None, gain: float | None
                     ) -> tuple[CalibrationSet, Callable[[FrameMeta], float]]:
    s, cfg = b.session, b.cfg
    example = lights[0]
    lname = f"lights {_names(lights)}"
    names: dict[str, str] = {}
    paths: dict[str, str | None] = {}

    # ---- bias
    bias_master = None
    bias_key = ""
    biases = [m for m in s.biases if _geom(m) == geom]
    if s.biases and not biases:
        b.warn(f"no bias matches the size/binning of {lname}; biases not used")
    if biases:
        same_gain = [m for m in biases if gain is None or m.gain_or_iso in (None, gain)]
        if not same_gain:
            b.warn(f"biases ({_names(biases)}) were taken at gain "
                              f"{biases[0].gain_or_iso:g}, {lname} at {gain:g}: used anyway")
            same_gain = biases
        bias_master, bias_key = b.master("bias", same_gain, "master_bias"
                                         + _gain_suffix(same_gain[0]) + ".fits")
        paths["bias"] = b.path(bias_key)
        names["bias"] = "master bias"

    # ---- dark
    dark_master = None
    dark_key = ""
    dark_matches = False  # a dark of the lights' exposure and temperature
    candidates = [m for m in s.darks if _geom(m) == geom]
    if s.darks and not candidates:
        b.warn(f"no dark matches the size/binning of {lname}; darks not used")
    if candidates:
        same_gain = [m for m in candidates if gain is None or m.gain_or_iso in (None, gain)]
        gain_ok = bool(same_gain)
        if not same_gain:
            b.warn(f"darks ({_names(candidates)}) were taken at gain "
                              f"{candidates[0].gain_or_iso:g}, {lname} at {gain:g}: used anyway")
            same_gain = candidates
        t_light = _median_temp(lights)
        clusters = [c for c in _cluster_temperatures(same_gain, cfg.dark_temperature_tolerance)]
        # Exposure groups within the best temperature cluster.
        def temp_gap(c: list[FrameMeta]) -> float:
            t = _median_temp(c)
            return 0.0 if t is None or t_light is None else abs(t - t_light)

        best = min(clusters, key=temp_gap)
        gap = temp_gap(best)
        if gap > cfg.dark_temperature_tolerance:
            b.warn(f"darks closest in temperature ({_names(best)}, "
                              f"{_median_temp(best):.1f} C) differ by {gap:.1f} C from {lname} "
                              f"({t_light:.1f} C), more than the {cfg.dark_temperature_tolerance:g} C "
                              "tolerance: used anyway, expect residual dark current")
        by_exp: dict[float | None, list[FrameMeta]] = defaultdict(list)
        for m in best:
            by_exp[None if m.exposure is None else round(m.exposure, 3)].append(m)
        exact = by_exp.get(None if exposure is None else round(exposure, 3))
        if exact:
            chosen = exact
            dark_matches = gain_ok and gap <= cfg.dark_temperature_tolerance
        else:
            known = [e for e in by_exp if e is not None]
            if exposure is not None and known:
                chosen = by_exp[min(known, key=lambda e: abs(e - exposure))]
            else:
                chosen = max(by_exp.values(), key=len)
            if bias_master is None or cfg.dark_scaling == "off":
                why = ("no biases to separate the bias from the dark current"
                       if bias_master is None else "dark scaling is off")
                b.warn(f"no dark has the exposure of {lname} "
                                  f"({_fmt(exposure)}); darks of {_fmt(chosen[0].exposure)} "
                                  f"used unscaled ({why})")
            else:
                b.warn(f"no dark has the exposure of {lname} ({_fmt(exposure)}); "
                                  f"the bias-subtracted dark of {_fmt(chosen[0].exposure)} is "
                                  "scaled by the exposure ratio")
        t = _median_temp(chosen)
        dark_master, dark_key = b.master(
            "dark", chosen,
            f"master_dark_{_slug(_fmt(chosen[0].exposure))}{_gain_suffix(chosen[0])}"
            + (f"_{_slug(f'{t:.0f}C')}" if t is not None else "") + ".fits")
        paths["dark"] = b.path(dark_key)
        names["dark"] = f"master dark {_fmt(chosen[0].exposure)}"

    # ---- flat
    flat_norm = None
    flat_low = None
    flats = [m for m in s.flats if _geom(m) == geom and m.bayer == bayer
             and same_filter(m.filter, example.filter)]
    if s.flats and not flats:
        b.warn(f"no flat matches {lname} (filter {example.filter or 'none'}, "
                          f"{example.width}x{example.height}): not flat-fielded")
    if flats:
        flat_master, flat_norm, flat_low, flat_key = _master_flat(b, flats, bias_master, bias_key)
        paths["flat"] = b.path(flat_key)
        names["flat"] = f"master flat {example.filter or ''}".strip()

    # ---- defects
    defects = None
    notes: list[str] = []
    if cfg.cosmetic:
        mask = np.zeros((example.height, example.width), bool)
        if example.channels == 1:
            lines: list[Callable[[], np.ndarray]] = []
            pixels: list[Callable[[], np.ndarray]] = []
            if dark_master is not None:
                current = dark_master.data - (bias_master.data if bias_master is not None else 0)
                lines.append(lambda: cosmetic.find_bad_lines(current, bayer, sigma=cfg.hot_sigma))
                pixels.append(
                    lambda: cosmetic.find_hot_pixels(current, bayer, sigma=cfg.hot_sigma))
            if flat_norm is not None:
                lines.append(lambda: cosmetic.find_bad_lines(flat_norm, bayer,
                                                             sigma=cfg.cold_sigma, min_level=0.02))
                pixels.append(
                    lambda: cosmetic.find_cold_pixels(flat_norm, bayer, sigma=cfg.cold_sigma))
                mask |= flat_low
            # independent searches (OpenCV and numpy release the GIL): side by side, the line
            # searches (their medians of every row and column: the longest) first, so that
            # the pixel searches fill in behind them instead of one core waiting at the end
            for found in map_threads(lambda search: search(), lines + pixels):
                mask |= found
            if not dark_matches:
                # Hot pixels show in the master dark when there is one of the lights'
                # exposure and temperature; without (no darks, or darks that differ and
                # leave warm pixels under the threshold), in the lights themselves.
                mask |= _light_defects(b, lights, bayer, bias_master, dark_master)
            defects = b.defect_map(mask, bayer, f"{example.filter or 'nofilter'}", lname)
            notes.append(f"{defects.count} defective pixels")
    spec = None
    if b.library is not None and all(v is not None for v in paths.values()) and (
            defects is None or b.defect_path(defects) is not None):
        spec = CalibrationSpec(
            bias=paths.get("bias"), dark=paths.get("dark"),
            dark_exposure=None if dark_master is None else dark_master.exposure,
            flat=paths.get("flat"), flat_floor=cfg.flat_floor,
            defects=None if defects is None else b.defect_path(defects), bayer=bayer,
            dark_scaling=cfg.dark_scaling != "off")
    cal = CalibrationSet(
        spec=spec,
        bias=None if bias_master is None else bias_master.data,
        dark=None if dark_master is None else dark_master.data,
        dark_exposure=None if dark_master is None else dark_master.exposure,
        flat=flat_norm, defects=defects, bayer=bayer, names=names,
        dark_scaling=cfg.dark_scaling != "off", notes=tuple(notes),
    )
    if dark_master is not None and cfg.dark_optimize and bias_master is None:
        b.warn(f"dark optimisation needs biases; {lname} use the dark unscaled")

    def scale_for(m: FrameMeta) -> float:
        return cal.dark_scale_for(m.exposure)

    return cal, scale_for


def _master_flat(b: _Builder, flats: list[FrameMeta], bias_master: Master | None,
                 bias_key: str) -> tuple[Master, np.ndarray, np.ndarray]:
    s, cfg = b.session, b.cfg
    example = flats[0]
    fexp = example.exposure
    sub = None
    sub_key = ""
    how = "nothing (no dark-flats, biases or matching darks: the flat keeps its offset!)"
    dflats = [m for m in s.darkflats if _geom(m) == _geom(example)]
    if dflats:
        by_exp: dict[float | None, list[FrameMeta]] = defaultdict(list)
        for m in dflats:
            by_exp[None if m.exposure is None else round(m.exposure, 3)].append(m)
        known = [e for e in by_exp if e is not None]
        pick = by_exp.get(None if fexp is None else round(fexp, 3))
        if pick is None:
            e = min(known, key=lambda e: abs(e - (fexp or 0))) if known else None
            pick = by_exp[e]
            b.warn(f"no dark-flat has the exposure of flats {_names(flats)} "
                              f"({_fmt(fexp)}); dark-flats of {_fmt(pick[0].exposure)} used")
        m, sub_key = b.master("darkflat", pick, f"master_darkflat_{_slug(_fmt(pick[0].exposure))}.fits")
        sub = m.data
        how = "master dark-flat"
    elif bias_master is not None:
        sub, sub_key = bias_master.data, bias_key
        how = "master bias"
    else:
        same = [m for m in s.darks if _geom(m) == _geom(example) and m.exposure is not None
                and fexp is not None and abs(m.exposure - fexp) < 1e-3]
        if same:
            m, sub_key = b.master("dark", same, f"master_dark_{_slug(_fmt(fexp))}.fits")
            sub = m.data
            how = "master dark of the flats' exposure"
        else:
            b.warn(f"flats {_names(flats)} have no dark-flats, biases or darks of "
                              "their exposure: their offset stays in the flat and the "
                              "flat-field correction will be wrong by it")

    def prepare_factory(srcs: list[FrameSource]) -> Callable[..., np.ndarray]:
        levels = map_threads(lambda src: frame_level(src, subtract=sub), srcs)
        for src, level in zip(srcs, levels):
            if not level > 0:
                raise CalibrationError(f"{src.path}: flat has no signal after subtracting the "
                                       f"{how} (level {level:g})")
        ref = float(np.median(levels))

        def prepare(band: np.ndarray, i: int, y0: int, y1: int) -> np.ndarray:
            if sub is not None:
                band -= sub[..., y0:y1, :]
            band *= np.float32(ref / levels[i])
            return band

        return prepare

    flt = example.filter or "nofilter"
    master, key = b.master("flat", flats, f"master_flat_{_slug(flt)}.fits",
                           extra={"floor": cfg.flat_floor}, prepare_factory=prepare_factory,
                           depends=sub_key)
    norm, low = normalize_per_channel(master.data, example.bayer, floor=cfg.flat_floor)
    return master, norm, low, key


def _light_defects(b: _Builder, lights: list[FrameMeta], bayer: str | None,
                   bias: Master | None, dark: Master | None, max_frames: int = 15) -> np.ndarray:
    """Pixels that spike in most of (up to ``max_frames``) lights."""
    h, w = lights[0].height, lights[0].width
    if len(lights) < 3:
        return np.zeros((h, w), bool)
    pick = [lights[int(i)] for i in np.linspace(0, len(lights) - 1, min(max_frames, len(lights)))]
    counts = np.zeros((h, w), np.uint16)
    lock = threading.Lock()

    def count(src: FrameSource) -> None:
        data = src.read()
        if dark is not None:
            data -= dark.data
        elif bias is not None:
            data -= bias.data
        spikes = cosmetic.find_spikes(data, bayer)
        with lock:
            counts[spikes] += 1

    map_threads(count, b.sources(pick))
    return counts >= max(3, int(np.ceil(0.6 * len(pick))))


def _fmt(e: float | None) -> str:
    return "unknown exposure" if e is None else f"{e:g}s"


def _gain_suffix(m: FrameMeta) -> str:
    g = m.gain_or_iso
    return "" if g is None else f"_g{g:g}"
