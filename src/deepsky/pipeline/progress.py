"""Progress and messages: a bar per stage on a terminal, plain lines otherwise.

``Reporter(quiet=..., verbose=...)`` is passed down the pipeline; stages call
``with reporter.stage("calibrate", total=n) as step: ... step.advance()``. Warnings are kept
so that the run's records can list them. With ``open_log(path)`` every line, details
included, also goes to a log file (``OUT/deepsky.log``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, TextIO


LOG_NAME = "deepsky.log"


def fault_point(name: str, count: int) -> None:
    """Fault injection for the resume tests: with ``DEEPSKY_FAULT=name:count`` in the
    environment, the process kills itself (SIGKILL, no clean-up) when ``name`` reaches
    ``count``; ``name:count:INT`` sends SIGINT instead (Ctrl-C). Without the variable this
    does nothing."""
    spec = os.environ.get("DEEPSKY_FAULT")
    if not spec:
        return
    want, _, rest = spec.partition(":")
    n, _, sig = rest.partition(":")
    if want == name and str(count) == n:
        os.kill(os.getpid(), getattr(signal, f"SIG{sig or 'KILL'}"))


def _cpu() -> tuple[float, float, float, float]:
    """This process's and its finished children's user and system seconds and page faults,
    and the process's peak resident memory in MB (system time is mostly fresh memory being
    zeroed by the kernel: see docs/benchmarks.md)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return (0.0, 0.0, 0.0, 0.0)
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_utime + kids.ru_utime, me.ru_stime + kids.ru_stime,
            me.ru_minflt + kids.ru_minflt + me.ru_majflt + kids.ru_majflt,
            me.ru_maxrss / 1024.0)  # kB on Linux


@dataclass
class Step:
    name: str
    total: int
    _advance: "object" = None
    done: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` items done (from any thread)."""
        with self._lock:
            self.done += n
            done = self.done
        if self._advance is not None:
            self._advance(n)  # type: ignore[operator]
        fault_point(self.name.split()[0], done)


@dataclass
class Reporter:
    """Where the pipeline says what it is doing."""

    quiet: bool = False
    verbose: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    command_line: str = ""  # what the log's header says was run
    _log: Path | None = field(default=None, repr=False)

    @property
    def interactive(self) -> bool:
        return not self.quiet and hasattr(self.stream, "isatty") and self.stream.isatty()

    # ---- the log file ----------------------------------------------------------------------
    def start_log(self, out: str | os.PathLike, what: str) -> None:
        """Open ``out/deepsky.log`` (making ``out``) once a command knows its output folder
        is a valid one; ``what`` says what runs when there is no command line."""
        from deepsky import __version__

        try:
            Path(out).mkdir(parents=True, exist_ok=True)
        except OSError:
            return  # the first output written will report the folder's problem
        self.open_log(Path(out) / LOG_NAME,
                      f"deepsky {__version__} started: {self.command_line or what}")

    def open_log(self, path: str | os.PathLike, header: str) -> None:
        """Also write every line (details included, whatever ``quiet`` and ``verbose`` say)
        to ``path``, each with its UTC time. The file is appended to, so a resumed run's log
        follows the interrupted one's; ``header`` opens this run's part. Each line is
        appended and the file closed again (no handle to leak, and a killed run's log is
        complete up to its last line). A log that cannot be written is not an error (the
        outputs are what matter): it is simply not kept."""
        self._log = Path(path)
        with self._lock:
            self._to_log(header)

    def close_log(self, last: str | None = None) -> None:
        with self._lock:
            if last:
                self._to_log(last)
            self._log = None

    def _to_log(self, line: str) -> None:
        path = self._log
        if path is None:
            return
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f"{stamp} {line}\n")
        except OSError:  # a full disk or a folder gone: the run's own error says so
            self._log = None

    # ---- lines ------------------------------------------------------------------------------
    def info(self, msg: str) -> None:
        with self._lock:
            self._to_log(msg)
            if not self.quiet:
                print(msg, file=self.stream, flush=True)

    def detail(self, msg: str) -> None:
        with self._lock:
            self._to_log(f"  {msg}")
            if self.verbose and not self.quiet:
                print(f"  {msg}", file=self.stream, flush=True)

    def warn(self, msg: str) -> None:
        with self._lock:
            self.warnings.append(msg)
            self._to_log(f"warning: {msg}")
            if not self.quiet:
                print(f"warning: {msg}", file=self.stream, flush=True)

    @contextmanager
    def stage(self, name: str, total: int = 0) -> Iterator[Step]:
        """Time a stage and show its progress."""
        t0 = time.perf_counter()
        cpu0 = _cpu()
        if self.interactive and total > 1:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            progress = Progress(TextColumn("{task.description:<12}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                                TimeRemainingColumn(), console=Console(file=self.stream),
                                transient=False)
            with self._lock:
                self._to_log(f"{name}... ({total} items)")
            task = progress.add_task(name, total=total)
            lock = threading.Lock()

            def adv(n: int) -> None:
                with lock:
                    progress.advance(task, n)

            with progress:
                step = Step(name, total, adv)
                yield step
        else:
            self.info(f"{name}..." + (f" ({total} items)" if total else ""))
            step = Step(name, total)
            last = [time.perf_counter()]

            def adv_plain(n: int) -> None:
                now = time.perf_counter()
                if self.verbose or now - last[0] > 10:
                    last[0] = now
                    self.detail(f"{name}: {step.done}/{total}")

            step._advance = adv_plain
            yield step
        dt = time.perf_counter() - t0
        self.timings[name] = self.timings.get(name, 0.0) + dt
        self.info(f"{name} done in {dt:.1f} s")
        now = _cpu()
        user, system, faults = (b - a for a, b in zip(cpu0[:3], now[:3]))
        self.detail(f"{name} cpu: {user:.1f} s user, {system:.1f} s system, "
                    f"{faults:.0f} page faults; peak memory so far {now[3]:.0f} MB")
