"""``deepsky run``: raw frames to finished images, with the run's records."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deepsky import __version__
from deepsky.config import Config, config_to_dict
from deepsky.errors import DeepskyError
from deepsky.io.atomic import write_text
from deepsky.pipeline.backends import Backend, make_backend
from deepsky.pipeline.progress import LOG_NAME, Reporter
from deepsky.pipeline.runner import Pipeline


@dataclass
class RunResult:
    pipeline: Pipeline
    outputs: list[Path] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    processed: dict[str, Any] = field(default_factory=dict)  # stack name -> ProcessFileResult


def combine_rgb(pipe: Pipeline) -> Path | None:
    """An RGB (or LRGB) stack from the R, G, B (and L) filter stacks, when they exist and share
    the output grid (they are registered to one reference)."""
    import numpy as np

    from deepsky import io
    from deepsky.io.fits import write_fits

    by = {sg.name.strip().lower(): sg for sg in pipe.stacks if sg.path is not None
          and sg.channels == 1}
    names = {"r": ("r", "red"), "g": ("g", "green"), "b": ("b", "blue"), "l": ("l", "lum",
                                                                           "luminance")}
    found = {}
    for key, aliases in names.items():
        for a in aliases:
            if a in by:
                found[key] = by[a]
                break
    if not all(k in found for k in "rgb"):
        return None
    planes = [io.read(found[k].path).data for k in "rgb"]
    if len({p.shape for p in planes}) != 1:
        return None
    rgb = np.stack(planes).astype(np.float32)
    hist = ["combine v1: R, G, B stacks " + ", ".join(found[k].path.name for k in "rgb")]
    if "l" in found:
        lum = io.read(found["l"].path).data
        if lum.shape == planes[0].shape:
            # LRGB in linear light: keep the RGB colour ratios, take the luminance from L.
            bg = np.nanmedian(rgb, axis=(1, 2))[:, None, None]
            sig = rgb - bg
            y = np.nanmean(sig, axis=0)
            lsig = lum - np.nanmedian(lum)
            with np.errstate(invalid="ignore", divide="ignore"):
                gain = np.where(y > 0, lsig / np.where(y > 0, y, 1.0), 1.0)
            gain = np.clip(np.nan_to_num(gain, nan=1.0), 0.0, 50.0)
            rgb = (sig * gain + bg).astype(np.float32)
            hist.append(f"combine v1: luminance from {found['l'].path.name} (LRGB)")
    exp = sum(found[k].exposure for k in found)
    path = pipe.out / "stack_RGB.fits"
    write_fits(path, rgb, cards={"IMAGETYP": "Master Light", "EXPTIME": exp,
                                 "FILTER": "LRGB" if "l" in found else "RGB"}, history=hist)
    return path


def postprocess_stacks(pipe: Pipeline) -> dict[str, Any]:
    """Post-process the stacks: the main one (the only stack, the RGB combination, or the
    deepest single-filter stack) into the output folder itself, every filter's stack into a
    subfolder of its own when there are several."""
    from deepsky.postprocess.process import process_file

    done: dict[str, Any] = {}
    stacks = [sg for sg in pipe.stacks if sg.path is not None]
    if not stacks:
        return done
    main = combine_rgb(pipe) if len(stacks) > 1 else None
    if main is None:
        main = max(stacks, key=lambda sg: (sg.exposure, len(sg.used))).path
    jobs = [("main", main, pipe.out)]
    if len(stacks) > 1:
        jobs += [(sg.path.name, sg.path, pipe.out / f"processed_{sg.path.stem.removeprefix('stack_')}")
                 for sg in stacks]
    for name, stack, folder in jobs:
        key = _pp_key(stack, pipe.cfg)
        reused = _reuse_processed(folder, key, pipe.cfg)
        if reused is not None:
            pipe.reporter.info(f"post-processing of {stack.name} is up to date: reused")
            done[name] = reused
            continue
        done[name] = process_file(stack, folder, pipe.cfg, reporter=pipe.reporter, key=key)
    return done


def _pp_key(stack: Path, cfg: Config) -> str:
    import hashlib

    from deepsky.calibrate.library import file_fingerprint

    h = hashlib.sha1()
    h.update(file_fingerprint(stack).encode())
    h.update(json.dumps(config_to_dict(cfg)["postprocess"], sort_keys=True,
                        default=str).encode())
    return h.hexdigest()[:20]


def _reuse_processed(folder: Path, key: str, cfg: Config) -> Any:
    """The earlier ProcessFileResult when final_linear.fits carries this key and every other
    output the settings ask for exists, else None."""
    from deepsky.postprocess.process import OUTPUT_NAMES, ProcessFileResult

    lin = folder / OUTPUT_NAMES["linear"]
    ex = cfg.postprocess.export
    wanted = [lin] + [folder / OUTPUT_NAMES[k] for k, on in (("tiff", ex.tiff), ("jpeg", ex.jpeg))
                      if on]
    if not all(p.exists() for p in wanted):
        return None
    try:
        from astropy.io import fits

        if fits.getval(lin, "DSKYPPK") != key:
            return None
    except (OSError, KeyError, ValueError):
        return None
    paths = {k: folder / v for k, v in OUTPUT_NAMES.items() if (folder / v).exists()}
    return ProcessFileResult(paths=paths, recipe=("reused",), info={"reused": True})


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"deepsky": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "astropy", "numba", "opencv-python-headless", "sep",
                "rawpy", "drizzle", "dask"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def run_record(pipe: Pipeline, started: datetime, wall: float) -> dict[str, Any]:
    recs = pipe.records
    unreadable = pipe.session.unreadable_lights if pipe.session else []
    stacks = []
    for sg in pipe.stacks:
        stacks.append({
            "filter": sg.name, "path": str(sg.path) if sg.path else None,
            "frames": len(sg.used), "exposure_s": sg.exposure, "rejection": sg.method,
            "shape": list(sg.shape), "origin": list(sg.origin), "channels": sg.channels,
            "trails": {k: [t.to_json() for t in v] for k, v in sg.trails.items()},
        })
    return {
        "deepsky": __version__,
        "started": started.isoformat(timespec="seconds"),
        "wall_s": round(wall, 3),
        "session": str(pipe.session_path),
        "output": str(pipe.out),
        "backend": pipe.backend.name if pipe.backend else "threads",
        "versions": versions(),
        "machine": {"platform": platform.platform(), "cpus": pipe.backend.workers
                    if pipe.backend else 1},
        "timings_s": {k: round(v, 3) for k, v in pipe.reporter.timings.items()},
        "stage_timings_s": {k: round(v, 3) for k, v in pipe.timings.items()},
        "counts": dict(pipe.counts),
        "warnings": list(pipe.reporter.warnings),
        "masters": [{**asdict(m), "path": str(m.path) if m.path else None}
                    for m in (pipe.plan.masters if pipe.plan else [])],
        "frames": {"total": len(recs) + len(unreadable), "used": sum(r.used for r in recs),
                   "rejected": {**{r.name: r.reason for r in recs if not r.used},
                                **{u.path.name: f"unreadable: {u.reason}" for u in unreadable}}},
        "stacks": stacks,
        "settings": config_to_dict(pipe.cfg),
    }


def _write_records(pipe: Pipeline, result: RunResult, started: datetime, wall: float,
                   error: BaseException | None) -> None:
    """frames.csv, run.json and the report, for a finished or a failed run; nothing when the
    run never got past the session and output checks (the output may be the input)."""
    if pipe.groups:
        result.outputs.append(pipe.write_frames())
    record = run_record(pipe, started, wall)
    result.record = record
    if pipe.out.exists() and pipe.session is not None:
        log = pipe.out / LOG_NAME
        if log.exists():
            result.outputs.append(log)
        path = pipe.out / "run.json"
        write_text(path, json.dumps(record, indent=1, default=str))
        result.outputs.append(path)
        # The report needs the registered lights; not written when the user interrupts.
        if pipe.groups and not isinstance(error, KeyboardInterrupt):
            from deepsky.pipeline.report import REPORT_NAME, write_report

            result.outputs.append(write_report(pipe, result, pipe.out / REPORT_NAME,
                                               error=error))


def run_pipeline(session: str | Path, out: str | Path, cfg: Config, *,
                 reporter: Reporter | None = None, backend: Backend | None = None) -> RunResult:
    rep = reporter or Reporter()
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    own_backend = backend is None
    be = backend or make_backend(cfg.run.scheduler, cfg.run.workers)
    pipe = Pipeline(Path(session), Path(out), cfg, reporter=rep, backend=be)
    result = RunResult(pipe)
    error: BaseException | None = None
    try:
        pipe.discover()
        pipe.calibration()
        pipe.analyze()
        pipe.register()
        pipe.stack()
        result.processed = postprocess_stacks(pipe)
        result.outputs += [p for r in result.processed.values() for p in r.paths.values()]
    except BaseException as err:  # noted for the report, then re-raised
        error = err
        raise
    finally:
        if own_backend:
            be.close()
        try:
            _write_records(pipe, result, started, time.perf_counter() - t0, error)
        except DeepskyError:
            if error is None:
                raise
            # The run failed already (a full disk, a read-only folder): its error is the one
            # to report, not this follow-up one.
    result.outputs[:0] = [sg.path for sg in pipe.stacks if sg.path is not None]
    return result
