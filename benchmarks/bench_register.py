"""Detection, registration and Lanczos-3 warping: speed and accuracy on simulated sessions.

Not a test. Simulates the acceptance session (50 lights of 2048 x 2048 by default: dithers
up to 100 px, rotations up to 5 degrees, 3 meridian-flipped frames, seeing 1.5-4 px FWHM,
one cloudy and one trailed frame, raw and uncalibrated), then

* times detection, registration and Lanczos-3 warping per frame (medians, one thread; wall
  and CPU time of the thread, which a busy shared machine inflates less);
* times detection + registration of 100 frames (the session twice) on a pool of 2 threads
  (wall time, and the process's CPU time over 2 = the wall time on 2 idle cores);
* measures each frame's transform error against the truth on a 16 x 16 grid over the frame
  (every frame registered onto light 0, the truth's reference) and the frame selection.

    .venv/bin/python benchmarks/bench_register.py                 # mono, 50 x 2048^2
    .venv/bin/python benchmarks/bench_register.py --bayer RGGB    # one-shot colour
    .venv/bin/python benchmarks/bench_register.py --size 1024 --frames 12

Frames are read into memory first: file reading is not timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from deepsky.detect import choose_reference, detect_frame, frame_quality, select_frames
from deepsky.io import read
from deepsky.register import register_frame, warp_image
from deepsky.simulate import SessionSpec, simulate_session
from deepsky.types import Transform


def grid_error(a: Transform, b: Transform, shape: tuple[int, int], n: int = 16) -> np.ndarray:
    h, w = shape
    gx, gy = np.meshgrid(np.linspace(0, w - 1, n), np.linspace(0, h - 1, n))
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    return np.hypot(*(a.apply(pts) - b.apply(pts)).T)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--bayer", default=None, help="CFA pattern (e.g. RGGB); mono if omitted")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="keep the session in this folder")
    args = ap.parse_args(argv)

    n = args.frames
    spec = SessionSpec(
        width=args.size, height=args.size, bayer=args.bayer, n_lights=n, n_darks=0,
        n_flats=0, n_biases=0, seed=args.seed, max_shift=100, max_rotation=5.0,
        meridian_flip_frames=3, fwhm=(1.5, 4.0), cloudy_frames=(n // 3,),
        trailed_frames=(2 * n // 3,),
    )
    tmp = None
    out = args.out
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_register_")
        out = Path(tmp.name)
    t0 = time.perf_counter()
    truth = simulate_session(spec, out, workers=args.threads)
    print(f"simulated {n} lights of {args.size}x{args.size} "
          f"({'mono' if args.bayer is None else args.bayer}) in {time.perf_counter() - t0:.1f} s")
    frames = [read(out / light.file) for light in truth.lights]
    bayer = frames[0].meta.bayer
    sat = truth.sensor.saturation_adu
    shape = frames[0].data.shape

    # warm up the numba kernels (compiled once, then cached on disk)
    small = frames[0].data[:256, :256]
    ws, _ = detect_frame(small, bayer=bayer, saturation=sat)
    register_frame(ws, ws)
    warp_image(small, Transform.translation(0.5, 0.5), small.shape, parallel=False)
    warp_image(small, Transform.translation(0.5, 0.5), small.shape, parallel=True)

    load = os.getloadavg()[0]

    def timed(fn, *a, **k):
        w, c = time.perf_counter(), time.thread_time()
        out = fn(*a, **k)
        return out, (time.perf_counter() - w, time.thread_time() - c)

    # --- per frame, one thread
    t_det, t_reg, t_warp, det = [], [], [], []
    for f in frames:
        d, tt = timed(detect_frame, f.data, bayer=bayer, saturation=sat)
        det.append(d)
        t_det.append(tt)
    ref_stars = det[0][0]
    regs = []
    for stars, _ in det:
        r, tt = timed(register_frame, stars, ref_stars)
        regs.append(r)
        t_reg.append(tt)
    for f, reg in list(zip(frames, regs))[:10]:
        t_warp.append(timed(warp_image, f.data, reg.transform, shape, parallel=False)[1])
    t_warp_par = [timed(warp_image, f.data, reg.transform, shape, parallel=True)[1]
                  for f, reg in list(zip(frames, regs))[:3]]

    # --- 100 frames on a thread pool
    def one(f):
        stars, _ = detect_frame(f.data, bayer=bayer, saturation=sat)
        return register_frame(stars, ref_stars)

    jobs = (frames * (100 // n + 1))[:100]
    t, c = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(one, jobs))
    t_pool, c_pool = time.perf_counter() - t, time.process_time() - c

    # --- accuracy and selection
    qualities = [frame_quality(s, b) for s, b in det]
    verdict = select_frames(qualities)
    ref = choose_reference(qualities, verdict)
    errors, worst = [], []
    for i, (light, reg) in enumerate(zip(truth.lights, regs)):
        if i == 0:
            continue
        err = grid_error(reg.transform, Transform.from_list(light.transform), shape)
        if not light.bad:
            errors.append(err)
            worst.append((float(err.max()), i))
        if not reg.ok:
            print(f"  light {i}: NOT registered: {reg.reason}")
    all_err = np.concatenate(errors)
    n_stars = [len(s) for s, _ in det]

    print(f"stars per frame: median {statistics.median(n_stars):.0f} "
          f"(min {min(n_stars)}, max {max(n_stars)})")
    def med(ts, k):
        return statistics.median(t[k] for t in ts) * 1e3

    print(f"machine load average at start: {load:.2f} ({os.cpu_count()} cpus)")
    print(f"detection      per frame: median {med(t_det, 0):.0f} ms wall, "
          f"{med(t_det, 1):.0f} ms cpu")
    print(f"registration   per frame: median {med(t_reg, 0):.0f} ms wall, "
          f"{med(t_reg, 1):.0f} ms cpu")
    print(f"Lanczos-3 warp per frame: median {med(t_warp, 0):.0f} ms wall, "
          f"{med(t_warp, 1):.0f} ms cpu (1 thread); numba parallel "
          f"{med(t_warp_par, 0):.0f} ms wall")
    print(f"100 frames detection + registration, {args.threads} threads: {t_pool:.2f} s wall, "
          f"{c_pool:.2f} s cpu ({c_pool / args.threads:.2f} s on {args.threads} idle cores)")
    ok = sum(r.ok for r in regs[1:])
    print(f"registered {ok} of {len(regs) - 1} frames; models: "
          f"{sorted({r.model for r in regs[1:]})}; rms: median "
          f"{statistics.median([r.rms_px for r in regs[1:]]):.3f} px")
    print(f"transform error vs truth, good frames, 16x16 grid: median {np.median(all_err):.4f} px,"
          f" worst {all_err.max():.4f} px (light {max(worst)[1]}); per-frame medians: "
          f"median {np.median([np.median(e) for e in errors]):.4f}, "
          f"max {max(np.median(e) for e in errors):.4f}")
    print(f"reference chosen: light {ref}")
    for i, (light, (ok_i, reason)) in enumerate(zip(truth.lights, verdict)):
        if light.bad or not ok_i:
            print(f"  light {i} truth={light.bad_reason or 'good'}: "
                  f"{'kept' if ok_i else 'rejected: ' + reason}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
