"""Where per-frame and per-tile tasks run: local threads, or a Dask cluster.

``Backend.map(fn, items)`` runs ``fn`` on each item and yields the results in order. The local
backend uses threads (deepsky's kernels release the GIL); the Dask backend submits the same
functions to a ``dask.distributed`` scheduler (``processes``: a local cluster of worker
processes; ``tcp://host:port``: an existing cluster whose workers read the frames from the same
shared path).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence

from deepsky.errors import ConfigError
from deepsky.parallel import resolve_workers


class Backend:
    name = "base"
    workers = 1
    remote = False  # tasks run in other processes: pass specs, not in-memory objects

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LocalBackend(Backend):
    """Threads in this process."""

    name = "threads"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = resolve_workers(workers)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        items = list(items)
        if self.workers <= 1 or len(items) <= 1:
            for it in items:
                yield fn(it)
            return
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            yield from pool.map(fn, items)


class DaskBackend(Backend):
    """A ``dask.distributed`` client: a local process cluster or an existing scheduler."""

    remote = True

    def __init__(self, address: str, workers: int | None = None) -> None:
        from dask.distributed import Client, LocalCluster

        self.workers = resolve_workers(workers)
        self._cluster = None
        if address == "processes":
            self.name = "processes"
            self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                         processes=True, dashboard_address=None)
            self.client = Client(self._cluster)
        else:
            self.name = address
            try:
                self.client = Client(address, timeout="20s")
            except OSError as err:
                raise ConfigError(f"run.scheduler = {address!r}: cannot reach the Dask "
                                  f"scheduler ({err})") from err
            self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        from dask.distributed import as_completed

        items = list(items)
        futures = self.client.map(fn, items, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        done: dict[int, Any] = {}
        nxt = 0
        for fut in as_completed(futures):
            done[index[fut.key]] = fut.result()
            while nxt in done:
                yield done.pop(nxt)
                nxt += 1

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_backend(scheduler: str, workers: int | None = None) -> Backend:
    """``threads`` (default), ``processes`` or ``tcp://HOST:PORT``."""
    if scheduler in ("threads", "", "local"):
        return LocalBackend(workers)
    if scheduler == "processes" or scheduler.startswith(("tcp://", "tls://", "inproc://")):
        return DaskBackend(scheduler, workers)
    raise ConfigError(f"run.scheduler = {scheduler!r}: expected threads, processes or "
                      "tcp://HOST:PORT")


def chunked(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for it in items:
        buf.append(it)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf
