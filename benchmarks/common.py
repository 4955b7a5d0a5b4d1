"""Shared helpers of the benchmarks: simulated sessions, timed runs of deepsky and of the
Siril peer (``../shared/tools/siril-peer.sh``), tables.

Benchmarks are not tests: they time whole commands in fresh processes (import and JIT-cache
loading included, as a user sees them), record peak memory with ``/usr/bin/time -v`` and
print medians and ratios.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = ROOT / "benchmarks" / "sessions"
RESULTS = ROOT / "benchmarks" / "results"
PEER = ROOT.parent / "shared" / "tools" / "siril-peer.sh"
DEEPSKY = [sys.executable, "-m", "deepsky.cli"]


def _byte_compile() -> None:
    """Byte-compile deepsky's modules, as pip does when it installs a package. An editable
    install leaves that to the first import, which does not happen where
    PYTHONDONTWRITEBYTECODE is set (this project's VM sets it): every timed command then
    compiled deepsky's ~70 modules from source again, ~0.2 s of its start-up."""
    import compileall

    import deepsky

    compileall.compile_dir(Path(deepsky.__file__).parent, quiet=1)


_byte_compile()


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.node()}: {os.cpu_count()} cores {cpu}, {mem}, Python {platform.python_version()}"


def session(name: str, **spec: Any) -> Path:
    """A simulated session under benchmarks/sessions (re-used when its spec is the same)."""
    from deepsky.simulate import SessionSpec, simulate_session

    path = SESSIONS / name
    marker = path / "spec.json"
    want = json.dumps(spec, sort_keys=True, default=str)
    if marker.exists() and marker.read_text() == want and (path / "truth.json").exists():
        return path
    if path.exists():
        shutil.rmtree(path)
    t0 = time.perf_counter()
    simulate_session(SessionSpec(**spec), path, workers=os.cpu_count() or 1)
    marker.write_text(want)
    print(f"simulated {name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


@dataclass
class Timed:
    wall_s: float
    peak_mb: float
    rc: int
    output: str


def timed(cmd: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
          ) -> Timed:
    """Run a command under /usr/bin/time -v: wall time and peak resident memory."""
    tfile = RESULTS / ".time.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    full = ["/usr/bin/time", "-v", "-o", str(tfile), *cmd]
    t0 = time.perf_counter()
    p = subprocess.run(full, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    text = tfile.read_text() if tfile.exists() else ""
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    peak = int(m.group(1)) / 1024 if m else float("nan")
    return Timed(wall, peak, p.returncode, p.stdout + p.stderr)


def deepsky(*args: str) -> Timed:
    r = timed([*DEEPSKY, *args])
    if r.rc != 0:
        raise RuntimeError(f"deepsky {' '.join(args)} failed:\n{r.output[-2000:]}")
    return r


def siril_available() -> bool:
    return shutil.which("siril-cli") is not None and PEER.exists()


@dataclass
class SirilRun:
    wall_s: float
    peak_mb: float
    steps_s: list[float]  # "Execution time" of each timed command, in script order
    log: Path

    @property
    def calibration_s(self) -> float:
        """Master bias, master dark, flat calibration, master flat, light calibration: the
        first five timed commands of the peer script (file conversion is not timed by
        Siril)."""
        return sum(self.steps_s[:5])

    @property
    def registration_s(self) -> float:
        return self.steps_s[5] if len(self.steps_s) > 5 else float("nan")

    @property
    def stacking_s(self) -> float:
        return self.steps_s[6] if len(self.steps_s) > 6 else float("nan")


def siril(folder: Path, *, cfa: bool = False) -> SirilRun:
    """Run the Siril peer on a session folder (it writes folder/siril_out)."""
    args = ["bash", str(PEER), str(folder)] + (["--cfa"] if cfa else [])
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"siril peer failed:\n{p.stdout}\n{p.stderr}")
    out = folder / "siril_out"
    text = (out / "time.txt").read_text()
    wall_txt = re.search(r"Elapsed \(wall clock\) time .*: (\S+)", text).group(1)
    parts = [float(x) for x in wall_txt.split(":")]
    wall = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024
    log = (out / "siril.log").read_text()
    steps = []
    for m in re.finditer(r"Execution time: ([\d.]+) (ms|s)\.", log):
        v = float(m.group(1))
        steps.append(v / 1000 if m.group(2) == "ms" else v)
    return SirilRun(wall, peak, steps, out / "siril.log")


def stage_times(text: str) -> dict[str, float]:
    """Seconds per stage from deepsky's "<stage> done in X s" lines, as printed (not with -q)
    or in deepsky.log (each line after its UTC time)."""
    out: dict[str, float] = {}
    for name, secs in re.findall(r"^(?:\S+T\S+ )?(\w+)(?: \S+)? done in ([\d.]+) s", text,
                                 re.M):
        out[name] = out.get(name, 0.0) + float(secs)
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(rows: list[list[Any]], header: list[str]) -> str:
    """A Markdown table."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(v) for v in r) + " |")
    return "\n".join(lines)


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), **data}
    path.write_text(json.dumps(data, indent=1, default=str))
    return path
