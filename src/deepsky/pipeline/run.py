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
from deepsky.io.atomic import write_text
from deepsky.pipeline.backends import Backend, make_backend
from deepsky.pipeline.progress import Reporter
from deepsky.pipeline.runner import Pipeline


@dataclass
class RunResult:
    pipeline: Pipeline
    outputs: list[Path] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


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
        "frames": {"total": len(recs), "used": sum(r.used for r in recs),
                   "rejected": {r.name: r.reason for r in recs if not r.used}},
        "stacks": stacks,
        "settings": config_to_dict(pipe.cfg),
    }


def run_pipeline(session: str | Path, out: str | Path, cfg: Config, *,
                 reporter: Reporter | None = None, backend: Backend | None = None) -> RunResult:
    rep = reporter or Reporter()
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    own_backend = backend is None
    be = backend or make_backend(cfg.run.scheduler, cfg.run.workers)
    pipe = Pipeline(Path(session), Path(out), cfg, reporter=rep, backend=be)
    result = RunResult(pipe)
    try:
        pipe.discover()
        pipe.calibration()
        pipe.analyze()
        pipe.register()
        pipe.stack()
    finally:
        if pipe.groups:
            result.outputs.append(pipe.write_frames())
        if own_backend:
            be.close()
        record = run_record(pipe, started, time.perf_counter() - t0)
        result.record = record
        if pipe.out.exists():
            path = pipe.out / "run.json"
            write_text(path, json.dumps(record, indent=1, default=str))
            result.outputs.append(path)
    result.outputs[:0] = [sg.path for sg in pipe.stacks if sg.path is not None]
    return result
