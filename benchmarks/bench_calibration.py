"""Calibration speed against Siril 1.0.6 on the same folder, in one run.

Masters from 20 biases, 20 darks and 20 flats, then calibration of 100 lights of 2048 x 2048
(mono, 16-bit FITS), calibrated lights written as 32-bit float FITS as Siril does.

    .venv/bin/python benchmarks/bench_calibration.py [--frames 100] [--size 2048] [--repeat 3]

deepsky: ``deepsky calibrate SESSION -o OUT`` in a fresh process with an empty output folder
(masters built, not reused). Siril: the peer script; its calibration part is the sum of the
execution times Siril logs for the master bias, master dark, flat calibration, master flat and
light calibration (its file conversion is not timed by Siril and not counted).
"""

from __future__ import annotations

import argparse
import shutil
import sys

from common import (RESULTS, deepsky, median, save, session, siril, siril_available,
                    stage_times, table)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bayer", default="none")
    args = ap.parse_args()
    bayer = None if args.bayer.lower() == "none" else args.bayer.upper()
    name = f"cal_{args.frames}x{args.size}_{args.bayer.lower()}"
    folder = session(name, width=args.size, height=args.size, bayer=bayer,
                     n_lights=args.frames, n_darks=20, n_flats=20, n_biases=20, seed=5)
    out = RESULTS / "cal_out"
    ours = []
    stages: list[float] = []
    for _ in range(args.repeat):
        shutil.rmtree(out, ignore_errors=True)
        r = deepsky("calibrate", str(folder), "-o", str(out), "-q",
                    "--set", "calibration.debayer=none")
        ours.append((r.wall_s, r.peak_mb))
        times = stage_times((out / "deepsky.log").read_text())
        stages.append(times.get("masters", 0.0) + times.get("calibrate", 0.0))
    shutil.rmtree(out, ignore_errors=True)
    rows = [["deepsky calibrate (whole command)", median([w for w, _ in ours]),
             max(m for _, m in ours)]]
    rows.append(["deepsky masters + calibrate stages (its log)", median(stages), ""])
    data = {"deepsky_wall_s": [w for w, _ in ours], "deepsky_peak_mb": [m for _, m in ours],
            "deepsky_stages_s": stages}
    if siril_available():
        runs = [siril(folder, cfa=bayer is not None) for _ in range(args.repeat)]
        cal = median([r.calibration_s for r in runs])
        rows.append(["Siril 1.0.6 calibration commands", cal, max(r.peak_mb for r in runs)])
        rows.append(["Siril 1.0.6 whole peer script", median([r.wall_s for r in runs]),
                     max(r.peak_mb for r in runs)])
        data.update({"siril_calibration_s": [r.calibration_s for r in runs],
                     "siril_wall_s": [r.wall_s for r in runs],
                     "siril_peak_mb": [r.peak_mb for r in runs]})
        ratio = median([w for w, _ in ours]) / cal
        data["ratio_deepsky_over_siril"] = ratio
        data["ratio_stages_over_siril"] = median(stages) / cal
        shutil.rmtree(folder / "siril_out", ignore_errors=True)
    print(table(rows, ["what", "median wall s", "peak MB"]))
    if "ratio_deepsky_over_siril" in data:
        print(f"deepsky / Siril calibration time: {data['ratio_deepsky_over_siril']:.2f} "
              f"(whole command), {data['ratio_stages_over_siril']:.2f} (stages, as Siril's "
              "figure: its commands' own times)")
    print(f"results: {save(name, data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
