"""``deepsky demo``: simulate a small colour session and run the whole pipeline on it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from deepsky.config import load_config
from deepsky.errors import DeepskyError
from deepsky.pipeline.progress import Reporter

# A small one-shot-colour night: a galaxy, drift and a little field rotation, a satellite
# trail, one cloudy frame, 10 each of darks, flats and biases.
DEMO_SESSION = dict(width=1024, height=768, bayer="RGGB", n_lights=10, n_darks=10,
                    n_flats=10, n_biases=10, seed=2024, satellite_frames=(3,),
                    cloudy_frames=(7,), max_shift=25.0, max_rotation=1.0)


def run_demo(out: Path, *, workers: int = 0, force: bool = False,
             reporter: Reporter | None = None) -> int:
    from deepsky.simulate import SessionSpec, simulate_session
    from deepsky.pipeline.run import run_pipeline

    rep = reporter or Reporter()
    out = Path(out)
    session = out / "session"
    results = out / "results"
    if out.exists() and any(out.iterdir()):
        if not force and not (session / "truth.json").exists():
            raise DeepskyError(f"{out}: folder exists and is not a deepsky demo (use --out "
                               "elsewhere, or --force to replace it)")
        if force:
            shutil.rmtree(out)
    t0 = time.perf_counter()
    if not (session / "truth.json").exists():
        rep.info(f"simulating a colour session in {session} ...")
        simulate_session(SessionSpec(**DEMO_SESSION), session, workers=max(1, workers or 2))
    cfg = load_config(overrides=[f"run.workers={workers}"] if workers else ())
    result = run_pipeline(session, results, cfg, reporter=rep)
    dt = time.perf_counter() - t0
    print(f"demo done in {dt:.0f} s; results in {results}:")
    for p in result.outputs:
        print(f"  {p}")
    return 0
