"""End to end against Siril 1.0.6 on the same folders, in one run.

For each frame count (default 20, 50, 100 lights of 2048 x 2048, mono, with 20 biases, 20
darks and 20 flats and one satellite trail), times in fresh processes:

* ``deepsky stack``  (masters, calibration, detection, registration, trails, integration:
  what Siril's peer script does) -- the like-for-like comparison;
* ``deepsky run``    (the same plus post-processing and the HTML report);
* ``siril-peer.sh``  (Siril 1.0.6: conversion, masters, calibration, registration with
  bilinear warping, sigma-clipped stack),

with wall time and peak resident memory, repeated ``--repeat`` times (medians), and prints
the ratios. Before the timed runs every frame of a session is read once (so that no repeat
meets a cold page cache) and one untimed ``deepsky stack`` loads numba's compiled kernels.
Results go to benchmarks/results/pipeline_*.json; copy the table into docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_pipeline.py [--frames 20,50,100] [--repeat 3] [--bayer RGGB]
    .venv/bin/python benchmarks/bench_pipeline.py --memory 20,100,200   # stack memory only
    .venv/bin/python benchmarks/bench_pipeline.py --frames 20 --no-run \
        --set calibration.master_rejection=sigma --set integration.rejection=sigma --tag sigma

``--set`` passes settings to both deepsky commands (here Siril's rejection, sigma clipping,
instead of deepsky's default winsorized sigma); ``--no-run`` leaves out ``deepsky run``.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from common import (RESULTS, deepsky, machine, median, save, session, siril, siril_available,
                    stage_times, table)


def make(n: int, bayer: str | None) -> object:
    tag = (bayer or "mono").lower()
    return session(f"run_{n}x2048_{tag}", width=2048, height=2048, bayer=bayer, n_lights=n,
                   n_darks=20, n_flats=20, n_biases=20, seed=7, satellite_frames=(3,))


def warm_cache(folder) -> None:
    """Read every frame once before the timed runs: the first repeat would otherwise read a
    cold session from disk and the Siril run after it a warm one."""
    for f in sorted(folder.rglob("*.fit*")):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", default="20,50,100")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bayer", default="none")
    ap.add_argument("--memory", default="", help="only measure deepsky stack memory at these "
                                                   "frame counts")
    ap.add_argument("--no-siril", action="store_true")
    ap.add_argument("--no-run", action="store_true", help="leave out deepsky run")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a deepsky setting for both commands (repeatable)")
    ap.add_argument("--tag", default="", help="added to the results file name")
    args = ap.parse_args()
    sets = [a for kv in args.set for a in ("--set", kv)]
    if sets:
        print("settings: " + " ".join(args.set))
    bayer = None if args.bayer.lower() == "none" else args.bayer.upper()
    out = RESULTS / "pipeline_out"
    print(machine())
    if args.memory:
        rows = []
        for n in (int(v) for v in args.memory.split(",")):
            folder = make(n, bayer)
            shutil.rmtree(out, ignore_errors=True)
            r = deepsky("stack", str(folder), "-o", str(out), "-q")
            rows.append([n, r.wall_s, r.peak_mb])
            print(f"{n} frames: {r.wall_s:.1f} s, {r.peak_mb:.0f} MB", flush=True)
        print(table(rows, ["frames", "deepsky stack wall s", "peak MB"]))
        save(f"memory_{args.bayer.lower()}", {"rows": rows})
        shutil.rmtree(out, ignore_errors=True)
        return 0
    rows = []
    data = {}
    warmed = False
    for n in (int(v) for v in args.frames.split(",")):
        folder = make(n, bayer)
        warm_cache(folder)
        if not warmed:  # untimed: numba compiles its kernels on a fresh checkout
            shutil.rmtree(out, ignore_errors=True)
            deepsky("stack", str(folder), "-o", str(out), "-q", *sets)
            warmed = True
        st, rn, sr = [], [], []
        for _ in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)
            st.append(deepsky("stack", str(folder), "-o", str(out), *sets))
            shutil.rmtree(out, ignore_errors=True)
            if not args.no_run:
                rn.append(deepsky("run", str(folder), "-o", str(out), "-q", *sets))
            if siril_available() and not args.no_siril:
                sr.append(siril(folder, cfa=bayer is not None))
                shutil.rmtree(folder / "siril_out", ignore_errors=True)
        st_w, st_m = median([r.wall_s for r in st]), max(r.peak_mb for r in st)
        rn_w = median([r.wall_s for r in rn]) if rn else float("nan")
        rn_m = max(r.peak_mb for r in rn) if rn else float("nan")
        row = [n, st_w, st_m, rn_w, rn_m]
        stages = [stage_times(r.output) for r in st]
        entry = {"stack_stages_s": stages,
                 "stack_wall_s": [r.wall_s for r in st], "stack_peak_mb": [r.peak_mb for r in st],
                 "run_wall_s": [r.wall_s for r in rn], "run_peak_mb": [r.peak_mb for r in rn]}
        if sr:
            s_w = median([r.wall_s for r in sr])
            s_m = max(r.peak_mb for r in sr)
            row += [s_w, s_m, st_w / s_w]
            pairs = [a.wall_s / b.wall_s for a, b in zip(st, sr)]
            entry.update({"siril_wall_s": [r.wall_s for r in sr],
                          "siril_peak_mb": [r.peak_mb for r in sr],
                          "siril_steps_s": [r.steps_s for r in sr], "pairs": pairs})
            print(f"{n} frames, each deepsky stack / the Siril run of its repeat: "
                  + " ".join(f"{q:.2f}" for q in pairs), flush=True)
        rows.append(row)
        data[str(n)] = entry
        print(f"{n} frames done", flush=True)
    header = ["frames", "deepsky stack s", "MB", "deepsky run s", "MB"]
    if any(len(r) > 5 for r in rows):
        header += ["Siril 1.0.6 s", "MB", "stack/Siril"]
    print(table(rows, header))
    # Stage by stage (medians): deepsky's stages against the Siril commands doing the same.
    srows = []
    for n, entry in data.items():
        st = entry["stack_stages_s"]

        def med(*names: str) -> float:
            return median([sum(s.get(k, 0.0) for k in names) for s in st])

        row = [n, med("masters"), med("analyze", "register"), med("trails", "integrate")]
        if "siril_steps_s" in entry:
            steps = entry["siril_steps_s"]
            row += [median([sum(x[:5]) for x in steps]), median([x[5] for x in steps]),
                    median([x[6] for x in steps])]
        srows.append(row)
    print(table(srows, ["frames", "deepsky masters", "analyze+register", "trails+integrate",
                        "Siril masters+calibration", "registration", "stacking"]))
    name = "pipeline_" + args.bayer.lower() + (f"_{args.tag}" if args.tag else "")
    print(f"results: {save(name, {'settings': args.set, **data})}")
    shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
