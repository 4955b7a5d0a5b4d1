"""Single-kernel timings: pixel rejection (``integrate.reject.combine``) and warping
(``register.warp.warp_window``) on random data, the figures docs/benchmarks.md quotes.

Not a test. Each figure is the best of ``--repeat`` timings after a warm-up call (numba
compiles or loads its cache on the first one).

    .venv/bin/python benchmarks/bench_kernels.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from deepsky.integrate.reject import combine
from deepsky.register.warp import warp_window
from deepsky.types import Transform


def best(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print("| rejection (2 threads), ns per sample | 20 frames | 100 frames |")
    print("|---|---|---|")
    blocks = {n: rng.normal(1000, 10, (n, 256, 2048)).astype(np.float32) for n in (20, 100)}
    for method in ("winsorized", "sigma", "mad"):
        cells = []
        for n, b in blocks.items():
            dt = best(lambda: combine(b, method=method, low=4, high=3, workers=2), args.repeat)
            cells.append(f"{dt / b.size * 1e9:.1f}")
        print(f"| {method} | " + " | ".join(cells) + " |")
    src = rng.normal(1000, 10, (640, 2048)).astype(np.float32)
    a = 0.01
    t = Transform(np.array([[np.cos(a), -np.sin(a), 3.3], [np.sin(a), np.cos(a), -2.7],
                            [0, 0, 1]]))
    print("\n| warp of a 600 x 2048 window (one thread) | ns per output pixel |")
    print("|---|---|")
    for method in ("lanczos3", "bilinear"):
        dt = best(lambda: warp_window(src, (0, 0), t, (0, 0), (600, 2048),
                                      src_shape=(2048, 2048), method=method, clamp=True,
                                      fill=np.nan, parallel=False), args.repeat)
        print(f"| {method} | {dt / (600 * 2048) * 1e9:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
