"""The pipeline: discovery, masters, per-frame analysis, registration, integration, and
post-processing, each stage's results cached so a restarted run redoes only what is missing.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepsky.calibrate.plan import CalibrationPlan, plan_calibration
from deepsky.config import Config
from deepsky.errors import InputError, RegistrationError, StackingError
from deepsky.integrate.reject import preload
from deepsky.io.discover import Session, discover, force_bayer, header_pattern
from deepsky.io.sources import FrameSource, open_source
from deepsky.pipeline.backends import Backend, LocalBackend
from deepsky.pipeline.calibration import check_output_folder
from deepsky.pipeline.progress import Reporter
from deepsky.types import FrameMeta

# The later stages' modules (star detection, registration, stacking, and scipy's ndimage
# and spatial they bring: 0.3 s of imports) are imported where they are used, and by the
# background warm-up while the masters are combined: the masters need none of them.
if TYPE_CHECKING:
    from deepsky.pipeline.analysis import FrameAnalysis
    from deepsky.pipeline.registration import LightRecord
    from deepsky.pipeline.stacking import StackGroup


def _analyze_task(args: tuple[Any, ...]) -> FrameAnalysis:
    from deepsky.pipeline.analysis import FrameAnalysis, analyze_frame

    source, calibration, dark_scale, cfg, cache_dir = args
    try:
        return analyze_frame(source, calibration, dark_scale, cfg, cache_dir)
    except InputError as err:  # a light whose pixels cannot be read: rejected, the run goes on
        return FrameAnalysis.unusable(str(source.path), f"unreadable: {err.problem}")


@dataclass
class RegistrationGroup:
    """The lights of one camera geometry, registered to one reference."""

    key: tuple[Any, ...]
    records: list[LightRecord]
    reference: int  # -1: the group could not be registered

    @property
    def ok(self) -> bool:
        return self.reference >= 0

    @property
    def reference_record(self) -> LightRecord:
        return self.records[self.reference]


@dataclass
class Pipeline:
    session_path: Path
    out: Path
    cfg: Config
    reporter: Reporter = field(default_factory=Reporter)
    backend: Backend | None = None
    session: Session | None = None
    plan: CalibrationPlan | None = None
    analyses: dict[str, FrameAnalysis] = field(default_factory=dict)
    groups: list[RegistrationGroup] = field(default_factory=list)
    stacks: list[StackGroup] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    # Set when the masters stage begins: the warm-up's signal for the later stages' imports.
    _masters_begun: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        self.session_path = Path(self.session_path)
        self.out = Path(self.out)
        if self.backend is None:
            self.backend = LocalBackend(self.cfg.run.workers)

    @property
    def cache_dir(self) -> Path:
        return self.out / "cache"

    # ---- stages ------------------------------------------------------------------------
    def discover(self) -> Session:
        t0 = time.perf_counter()
        # numba's compiled kernels load in the background, not when a stage's first frame
        # needs them: the rejection's while the run's set-up finishes, the detection's and
        # the warping's while the masters are combined (numba releases the GIL for most of
        # it). Not while the folder is read: both are Python holding the GIL, and the
        # reading, which lets go of it at each file's system calls, waited up to a switch
        # interval (5 ms) to get it back each time -- 80 headers took 0.38 s instead of 0.09,
        # and the first master began 0.13 s later than with the two one after the other.
        s = force_bayer(discover(self.session_path), self.cfg.calibration.bayer_pattern)
        threading.Thread(target=warm_up, args=(self.cfg, self._masters_begun),
                         name="kernel-preload", daemon=True).start()
        check_output_folder(self.out, s.root)
        if not s.lights:
            self.session = s
            raise no_lights_error(s, self.out)
        self.reporter.start_log(self.out, f"{self.session_path} -> {self.out}")
        self.reporter.detail(f"{len(s.lights)} lights in {s.root}; output in {self.out}")
        for w in s.warnings:
            self.reporter.warn(w)
        if self.cfg.calibration.bayer_pattern == "auto":
            w = mosaic_warning(s.lights)
            if w:
                self.reporter.warn(w)
        self.session = s
        self.timings["discover"] = time.perf_counter() - t0
        return s

    def calibration(self) -> CalibrationPlan:
        s = self.session or self.discover()
        self._masters_begun.set()
        with self.reporter.stage("masters"):
            t0 = time.perf_counter()
            self.plan = plan_calibration(s, self.cfg.calibration, out=self.out / "masters",
                                         memory_mb=self.cfg.run.memory_mb,
                                         progress=self.reporter.detail,
                                         cache_dir=self.cache_dir / "decoded")
            self.timings["masters"] = time.perf_counter() - t0
        for w in self.plan.warnings:
            self.reporter.warn(w)
        self.counts["masters_built"] = sum(1 for m in self.plan.masters
                                           if not m.reused and m.kind != "defects")
        self.counts["masters_reused"] = sum(1 for m in self.plan.masters if m.reused)
        return self.plan

    def sources(self, metas: list[FrameMeta]) -> list[FrameSource]:
        return [open_source(m.path, meta=m, cache_dir=self.cache_dir / "decoded")
                for m in metas]

    def analyze(self) -> dict[str, FrameAnalysis]:
        plan = self.plan or self.calibration()
        lights = self.session.lights
        remote = self.backend.remote
        tasks = []
        for m, src in zip(lights, self.sources(lights)):
            cal, k = plan.for_light(m)
            calibration: Any = cal
            if remote:
                if cal.spec is None and not cal.empty:
                    raise InputError(m.path, "masters are not on disk; cannot send them to "
                                             "the cluster")
                calibration = cal.spec if cal.spec is not None else cal
            tasks.append((src, calibration, k, self.cfg, str(self.cache_dir)))
        done_before = _count_cached(self.cache_dir / "frames")
        t0 = time.perf_counter()
        with self.reporter.stage("analyze", total=len(tasks)) as step:
            for res in self.backend.map(_analyze_task, tasks):
                self.analyses[res.path] = res
                step.advance()
        self.timings["analyze"] = time.perf_counter() - t0
        done_after = _count_cached(self.cache_dir / "frames")
        self.counts["frames_analyzed"] = done_after - done_before
        self.counts["frames_reused"] = len(tasks) - self.counts["frames_analyzed"]
        return self.analyses

    def register(self) -> list[RegistrationGroup]:
        from deepsky.pipeline.registration import LightRecord, register_lights

        if not self.analyses:
            self.analyze()
        by_geom: dict[tuple[Any, ...], list[LightRecord]] = defaultdict(list)
        labels = light_labels(self.session)
        for m, src in zip(self.session.lights, self.sources(self.session.lights)):
            a = self.analyses[str(m.path)]
            by_geom[(m.width, m.height, m.binning, m.channels, m.bayer or m.cfa)].append(
                LightRecord(meta=m, analysis=a, source=src, label=labels[str(m.path)]))
        t0 = time.perf_counter()
        self.groups = []
        n = sum(len(v) for v in by_geom.values())
        with self.reporter.stage("register", total=n) as step:
            for key, recs in by_geom.items():
                # Unreadable, blank or saturated frames take no part in selection statistics.
                good = [r for r in recs if not r.analysis.problem]
                for r in recs:
                    if r.analysis.problem:
                        r.reject(r.analysis.problem)
                        step.advance()
                ref = -1
                try:
                    if good:
                        ref = recs.index(good[register_lights(good, self.cfg,
                                                              progress=step.advance)])
                except RegistrationError as err:
                    for r in good:
                        if r.used:
                            r.reject(str(err))
                    self.reporter.warn(f"{len(good)} lights of {key[0]}x{key[1]}: {err}")
                self.groups.append(RegistrationGroup(key, recs, ref))
        self.timings["register"] = time.perf_counter() - t0
        all_recs = self.records
        used = sum(r.used for r in all_recs)
        self.counts["lights"] = len(all_recs)
        self.counts["used"] = used
        for r in all_recs:
            if not r.used:
                self.reporter.detail(f"rejected {r.name}: {r.reason}")
        if used == 0:
            self.write_frames()
            raise RegistrationError("every light was rejected; see frames.csv for the reasons")
        return self.groups

    @property
    def records(self) -> list[LightRecord]:
        """Every light's record, in session order."""
        by_path = {str(r.meta.path): r for g in self.groups for r in g.records}
        lights = self.session.lights if self.session else []
        return [by_path[str(m.path)] for m in lights if str(m.path) in by_path]

    def stack(self) -> list[StackGroup]:
        """One stack per filter (and camera geometry), all on the reference's grid."""
        from deepsky.detect.quality import reference_score
        from deepsky.pipeline.stacking import StackGroup, _slug, stack_group

        if not self.groups:
            self.register()
        self.stacks = []
        live = [g for g in self.groups if g.ok and any(r.used for r in g.records)]
        multi = len({(r.meta.filter or "").lower() for g in live
                     for r in g.records if r.used}) > 1 or len(live) > 1
        names: set[str] = set()
        t0 = time.perf_counter()
        for g in live:
            # Several camera geometries (sizes, binnings): the geometry is in the name.
            w, h, b = g.key[0], g.key[1], g.key[2]
            geom = "" if len(live) == 1 else f"_{w}x{h}" + (
                f"_bin{b[0]}x{b[1]}" if tuple(b) != (1, 1) else "")
            by_filter: dict[str, list[LightRecord]] = defaultdict(list)
            for r in g.records:
                by_filter[r.meta.filter or ""].append(r)
            for flt, recs in by_filter.items():
                used = [r for r in recs if r.used]
                if not used:
                    self.reporter.warn(f"no usable light for filter {flt or '(none)'}: no stack")
                    continue
                ref_rec = g.reference_record
                if ref_rec in used:
                    norm_ref = used.index(ref_rec)
                else:
                    scores = reference_score([r.analysis.quality for r in used])
                    norm_ref = int(np.argmax(scores))
                sg = StackGroup(name=flt, records=recs, norm_ref=norm_ref)
                stem = "stack" if not multi else f"stack_{_slug(flt or 'nofilter')}{geom}"
                name, n = f"{stem}.fits", 1
                while name in names:  # same filter and geometry, other channels or pattern
                    n += 1
                    name = f"{stem}_{n}.fits"
                names.add(name)
                ref_shape = (ref_rec.meta.height, ref_rec.meta.width)
                stack_group(sg, self.cfg, self.plan, out=self.out, cache_dir=self.cache_dir,
                            backend=self.backend, reporter=self.reporter, ref_shape=ref_shape,
                            filename=name)
                self.stacks.append(sg)
        self.timings["integrate"] = time.perf_counter() - t0
        self.counts["tiles_reused"] = sum(sg.tiles_reused for sg in self.stacks)
        if not self.stacks:
            raise StackingError("no stack could be made: no filter group has a usable light")
        return self.stacks

    def write_frames(self) -> Path:
        from deepsky.pipeline.records import write_frames_csv

        unreadable = self.session.unreadable_lights if self.session else []
        return write_frames_csv(self.out / "frames.csv", self.records, unreadable=unreadable)


def warm_up(cfg: Config, masters_begun: threading.Event | None = None) -> None:
    """Load the numba kernels a run will call (from numba's on-disk cache), with the
    argument types the run gives them: the rejection's at once (the first master needs
    them), then -- once the masters stage has begun, ``masters_begun`` -- the later stages'
    modules and star detection's (on a small synthetic frame), the registration's and the
    warping's kernels.

    The wait matters on few cores: importing those modules (scipy's ndimage and spatial,
    ~0.5 s) holds the GIL, and done while the folder is read it took turns with the
    discovery, which is Python too, one core doing both; during the masters it runs beside
    the combination's kernels, which release the GIL. Failures are left for the real calls
    to meet."""
    try:
        preload([cfg.calibration.master_rejection,
                 cfg.integration.rejection.replace("auto", "winsorized")])
        if masters_begun is not None:
            masters_begun.wait()
        _warm(cfg)
    except Exception:  # noqa: BLE001 - a warm-up only
        pass


def _warm(cfg: Config) -> tuple[int, float, int, int]:
    """The later stages' part of :func:`warm_up`; returns the synthetic frame's star count,
    the warped window's mean, the synthetic star lists' matches and the trails found on a
    synthetic line (for the test that it does what a run does)."""
    import deepsky.pipeline.analysis  # noqa: F401
    import deepsky.pipeline.registration  # noqa: F401
    import deepsky.pipeline.stacking  # noqa: F401
    from deepsky.calibrate import cosmetic
    from deepsky.detect.quality import frame_quality
    from deepsky.detect.stars import detect_frame
    from deepsky.integrate.trails import find_trails
    from deepsky.medians import median
    from deepsky.register.match import match_stars
    from deepsky.register.warp import warp_window
    from deepsky.types import Transform

    rng = np.random.default_rng(0)
    img = rng.normal(100.0, 3.0, (128, 128)).astype(np.float32)
    yy, xx = np.mgrid[0:128, 0:128]
    for x, y in ((30.3, 40.6), (90.1, 70.4), (60.7, 100.2), (100.5, 20.8)):
        img += (200.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.5)).astype(np.float32)
    stars, bkg = detect_frame(img, box=min(cfg.detection.background_box, 32),
                              threshold=cfg.detection.threshold,
                              max_stars=cfg.detection.max_stars, saturation=60000.0)
    frame_quality(stars, bkg)
    bkg.level()
    for dtype in (np.float32, np.float64):  # the frames' statistics (image_stats)
        median(rng.normal(0.0, 1.0, 65_536).astype(dtype))
    mask = np.zeros(img.shape, bool)
    mask[64, 64] = True
    cosmetic.DefectMap(mask, None).apply(img)
    xy = rng.uniform(0.0, 128.0, (12, 2))  # the registration's search and refinement
    matched = match_stars(xy + 0.3, xy, model=cfg.registration.model)
    line = np.zeros((32, 32), np.float32)
    line[16, :] = 5.0  # the trail search (its Hough transform and refinement): the row y = 16
    trails = find_trails(line, min_length=8.0)
    out = np.empty((1, 32, 32), np.float32)
    warp_window(img, (0, 0), Transform.similarity(scale=1.0, angle_deg=0.3, dx=2.5, dy=1.5),
                (40, 40), (32, 32), src_shape=img.shape,
                method=cfg.registration.interpolation, clamp=cfg.registration.clamp,
                fill=np.nan, parallel=False, out=out[0], footprint=False,
                gain=np.ones(1, np.float32), offset=np.zeros(1, np.float32))
    return len(stars), float(np.nanmean(out)), matched.n_matches, len(trails)


def mosaic_warning(lights: list[FrameMeta]) -> str:
    """A warning when the first mono light looks like a colour sensor's raw mosaic (its
    file gives no Bayer pattern), else ""."""
    from deepsky.calibrate.debayer import mosaic_spread

    m = next((m for m in lights if m.channels == 1 and m.cfa is None
              and header_pattern(m) is None), None)
    if m is None:
        return ""
    try:  # (memory-mapped for an uncompressed FITS: ~5 ms instead of astropy's ~300 ms)
        spread = mosaic_spread(open_source(m.path, meta=m).read())
    except InputError:
        return ""  # the analysis rejects it with the reason
    if not spread > 0.5:
        return ""
    return (f"{m.path.name}: no Bayer pattern in the file, but its 2x2 pixel levels differ by "
            f"{spread:.1f} sigma, like a colour sensor's raw mosaic; it is processed as mono. "
            "Set calibration.bayer_pattern (e.g. RGGB) if the camera is a colour one, or none "
            "to silence this")


def no_lights_error(s: Session, out: Path) -> InputError:
    """The error for a session without a usable light; lights that exist but cannot be read
    are listed in ``out/frames.csv``."""
    from deepsky.pipeline.records import write_frames_csv

    bad = s.unreadable_lights
    if bad:
        write_frames_csv(out / "frames.csv", [], unreadable=bad)
        return InputError(s.root, f"none of the {len(bad)} light frame(s) can be read "
                                  f"({bad[0].path.name}: {bad[0].reason}); see frames.csv")
    found = ", ".join(f"{len(v)} {k}(s)" for k, v in s.frames.items() if v)
    if not found and not s.unreadable and not s.unclassified:
        return InputError(s.root, "no image files in the folder (supported: FITS, RAW, TIFF, "
                                  "XISF, PNG, JPEG)")
    return InputError(s.root, "no light frames found (expected lights/ or files named "
                              "Light_* or with IMAGETYP = Light)"
                      + (f"; found only {found}" if found else ""))


def light_labels(session: Session) -> dict[str, str]:
    """A name for each light: its file name, or its path inside the session (without the
    lights/ folder) when file names repeat (lights/R/Light_001.fits, lights/G/Light_001.fits)."""
    names = [m.path.name for m in session.lights]
    dup = {n for n in names if names.count(n) > 1}
    out = {}
    for m in session.lights:
        label = m.path.name
        if label in dup:
            try:
                parts = m.path.relative_to(session.root).parts
            except ValueError:
                parts = m.path.parts[-2:]
            if len(parts) > 1 and parts[0].lower() in ("light", "lights"):
                parts = parts[1:]
            label = "/".join(parts)
        out[str(m.path)] = label
    return out


def _count_cached(folder: Path) -> int:
    return len(list(folder.glob("*.json"))) if folder.exists() else 0
