"""Thread-level parallelism for deepsky's kernels.

numba kernels in deepsky are compiled serial and ``nogil``: the parallelism comes from Python
threads running them on separate row bands (or separate frames). This works with every numba
threading layer (numba's own parallel layer can abort when parallel kernels are launched from
several threads at once without OpenMP or TBB) and lets the per-frame pool and the band
split share the same cores without oversubscription.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep the memory the process frees for its next allocations.

    By default glibc hands every large block (frames, tile blocks: tens to hundreds of MB)
    back to the kernel when it is freed and maps fresh pages for the next one, which the
    kernel must zero: one calibrated frame after another, that is gigabytes zeroed per run,
    and in a virtual machine whose host reclaims freed guest memory each fresh gigabyte cost
    3-8 s of system time (docs/benchmarks.md). With large blocks served from the heap and
    the heap not trimmed, the process reuses the pages it has; its peak memory stays within a
    few percent (what is freed is reused; a fragmented heap grows a little). One arena
    (threads share the heap): glibc's other arenas are limited to 64 MB heaps and would map
    frames afresh. Called by the command line only, never on import; a no-op (False) where
    the C library is not glibc."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    ok = mallopt(m_arena_max, 1) == 1
    ok &= mallopt(m_mmap_threshold, 1 << 30) == 1
    ok &= mallopt(m_trim_threshold, 2**31 - 1) == 1
    return bool(ok)


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """0 or None means one worker per available CPU core."""
    return cpu_count() if not workers else max(1, int(workers))


def bands(height: int, parts: int, *, min_rows: int = 32) -> list[tuple[int, int]]:
    """Split ``range(height)`` into up to ``parts`` contiguous row ranges."""
    parts = max(1, min(parts, height // max(1, min_rows) or 1))
    edges = [round(i * height / parts) for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts) if edges[i + 1] > edges[i]]


def for_bands(fn: Callable[[int, int], None], height: int, *, workers: int | None = None,
              min_rows: int = 32) -> None:
    """Call ``fn(y0, y1)`` on row bands covering ``height`` rows, on up to ``workers`` threads."""
    n = resolve_workers(workers)
    parts = bands(height, n, min_rows=min_rows)
    if len(parts) == 1:
        fn(*parts[0])
        return
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        for f in [pool.submit(fn, y0, y1) for y0, y1 in parts]:
            f.result()


def map_threads(fn: Callable[[T], R], items: Iterable[T], *, workers: int | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on up to ``workers`` threads (for work that releases the
    GIL: reading files, numpy, OpenCV, deepsky's numba kernels), in order."""
    items = list(items)
    n = min(resolve_workers(workers), len(items))
    if n <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, items))


class BackgroundWriter:
    """One thread that writes results to disk, in order, while the caller computes the next.

    :meth:`submit` queues a call (and raises the error of an earlier one that failed: a full
    disk stops the work at the next result, not at the end); :meth:`finish` waits for all
    (raising the first failure unless ``quietly``, for a caller already failing)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[object]] = []

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        for f in [f for f in self._pending if f.done()]:
            self._pending.remove(f)
            f.result()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self._pending.append(self._pool.submit(fn, *args))

    def finish(self, *, quietly: bool = False) -> None:
        if self._pool is None:
            return
        try:
            for f in self._pending:
                if quietly:
                    f.exception()
                else:
                    f.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._pending = None, []
