"""No data lost: inputs are never changed; a full disk or Ctrl-C ends the run with one clear
line and leaves no partial or temporary file; the restarted run completes. And the limits: a
frame larger than the memory budget, and more frames than the open-file limit, still run.

Disk full is a file-size limit (``ulimit -f``: the CLI ignores SIGXFSZ, so writes fail with
EFBIG) and, where the tests may mount one (root), a tiny tmpfs (ENOSPC). These need a
subprocess, as do the signal and open-file cases; the rest runs in-process.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from deepsky.calibrate.debayer import rcd
from deepsky.cli import main
from deepsky.io import read

SPEC = dict(width=256, height=256, bayer="RGGB", n_lights=4, n_darks=3, n_flats=3,
            n_biases=3, seed=31)
FAST = ["--set", "postprocess.deconvolution.enabled=false",
        "--set", "postprocess.denoise.enabled=false", "--set", "run.workers=1"]
CLI = [sys.executable, "-m", "deepsky.cli"]
TEMPORARY = re.compile(r"^\..+\.tmp|^provisional_.*\.npy$")


def run_cli(session: Path, out: Path, *extra: str, shell_prefix: str = "",
            env: dict | None = None) -> subprocess.CompletedProcess:
    """``deepsky run -q`` in a subprocess, after ``shell_prefix`` (e.g. ``ulimit -f 64;``)."""
    cmd = " ".join(shlex.quote(a) for a in [*CLI, "run", str(session), "-o", str(out), "-q",
                                             *FAST, *extra])
    full_env = {k: v for k, v in os.environ.items() if k != "DEEPSKY_FAULT"}
    full_env.update(env or {})
    return subprocess.run(["bash", "-c", f"{shell_prefix} exec {cmd}"], capture_output=True,
                          text=True, env=full_env)


def assert_nothing_half_written(out: Path) -> None:
    """No temporary file anywhere, and every FITS file complete."""
    left = [str(p.relative_to(out)) for p in out.rglob("*") if TEMPORARY.match(p.name)]
    assert left == [], left
    for p in out.rglob("*.fits"):
        read(p)


@pytest.fixture(scope="module")
def sim(simulated_session):
    return simulated_session(**SPEC)


@pytest.fixture(scope="module")
def reference(sim, tmp_path_factory):
    """The uninterrupted run's stack (in-process: the same numbers as a subprocess)."""
    out = tmp_path_factory.mktemp("reference")
    assert main(["run", str(sim.path), "-o", str(out), "-q", *FAST]) == 0
    return read(out / "stack.fits").data


def _snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha1(p.read_bytes()).hexdigest(),
                                         p.stat().st_mtime_ns, p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_inputs_are_never_changed(sim, tmp_path, capsys):
    session = tmp_path / "session"
    shutil.copytree(sim.path, session)
    past = 1_600_000_000_000_000_000
    for p in session.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(past, past))
            p.chmod(0o444)
    before = _snapshot(session)
    assert main(["run", str(session), "-o", str(tmp_path / "out"), "-q", *FAST]) == 0
    assert _snapshot(session) == before  # bytes, modification times, modes; no new file
    assert_nothing_half_written(tmp_path / "out")


# ----------------------------------------------------------------------------------------------
# Disk full
# ----------------------------------------------------------------------------------------------
FULL = r"deepsky: error: {out}/(\S+): cannot write, the disk is full \(or a file-size limit " \
       r"was hit\)"


@pytest.mark.parametrize(("limit_kb", "failing"), [
    (128, r"masters/master_bias_g100\.fits"),  # the first master
    (900, r"cache/provisional_\w+\.npy"),  # the largest scratch file, in the integration
])
def test_file_size_limit(sim, reference, tmp_path, limit_kb, failing):
    out = tmp_path / "out"
    r = run_cli(sim.path, out, shell_prefix=f"ulimit -f {limit_kb};")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    m = re.fullmatch(FULL.format(out=re.escape(str(out))), lines[0])
    assert m and re.fullmatch(failing, m.group(1)), lines[0]
    assert_nothing_half_written(out)
    # Space freed: the same command completes, with the result of an uninterrupted run.
    again = run_cli(sim.path, out)
    assert again.returncode == 0, again.stderr
    np.testing.assert_array_equal(read(out / "stack.fits").data, reference)
    assert_nothing_half_written(out)


def _can_mount_tmpfs(where: Path) -> str:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "mounting a tmpfs needs root"
    where.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot mount a tmpfs here: {r.stderr.strip()}"
    subprocess.run(["umount", str(where)], check=True)
    return ""


@pytest.mark.parametrize("size_kb", [2600])
def test_full_disk(sim, reference, tmp_path, size_kb):
    """A real ENOSPC, on a tmpfs of ``size_kb``; then the disk grows and the run resumes."""
    disk = tmp_path / "disk"
    why = _can_mount_tmpfs(disk)
    if why:
        pytest.skip(why)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(disk)],
                   check=True)
    try:
        out = disk / "out"
        r = run_cli(sim.path, out)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and re.fullmatch(FULL.format(out=re.escape(str(out))),
                                                lines[0]), lines
        assert_nothing_half_written(out)
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = run_cli(sim.path, out)
        assert again.returncode == 0, again.stderr
        np.testing.assert_array_equal(read(out / "stack.fits").data, reference)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# ----------------------------------------------------------------------------------------------
# Ctrl-C
# ----------------------------------------------------------------------------------------------
INTERRUPTED = "deepsky: interrupted (finished steps are kept: the same command resumes)"


@pytest.mark.parametrize("fault", ["integrate:2:INT", "postprocess:1:INT"])
def test_ctrl_c_then_resume(sim, reference, tmp_path, fault):
    """SIGINT at a known point (fault injection): exit code 130, one line, nothing half
    written; the restart completes with the same stack."""
    out = tmp_path / "out"
    r = run_cli(sim.path, out, "--set", "run.memory_mb=1", env={"DEEPSKY_FAULT": fault})
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines() == [INTERRUPTED]
    assert_nothing_half_written(out)
    assert not (out / "report.html").exists()
    again = run_cli(sim.path, out, "--set", "run.memory_mb=1")
    assert again.returncode == 0, again.stderr
    np.testing.assert_array_equal(read(out / "stack.fits").data, reference)
    # The log: both runs, each from its command line to its outcome, details included
    # although the runs were quiet.
    log = [line.split(" ", 1)[1] for line in
           (out / "deepsky.log").read_text(encoding="utf-8").splitlines()]
    starts = [i for i, line in enumerate(log) if line.startswith("deepsky ")]
    assert len(starts) == 2 and starts[0] == 0, log
    assert log[starts[0]].endswith(f"run {sim.path} -o {out} -q " + " ".join(FAST)
                                   + " --set run.memory_mb=1")
    assert log[starts[1] - 1] == "interrupted"
    assert log[-1] == "finished (exit code 0)"
    assert any(line.startswith("  4 lights in ") for line in log)
    assert any(line.startswith("integrate") and " done in " in line for line in log)


def test_ctrl_c_from_outside(sim, tmp_path):
    """A real Ctrl-C: SIGINT sent once the analysis has started."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "DEEPSKY_FAULT"}
    lines = []
    with subprocess.Popen([*CLI, "run", str(sim.path), "-o", str(out), *FAST],
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                          env=env) as proc:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith("analyze"):
                proc.send_signal(signal.SIGINT)
                break
        lines += proc.stderr.read().splitlines()
        assert proc.wait(timeout=120) == 130, lines
    assert lines[-1] == INTERRUPTED
    assert not any("Traceback" in line for line in lines)
    assert_nothing_half_written(out)


# ----------------------------------------------------------------------------------------------
# Limits
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bayer", ["RGGB", None])
def test_frame_larger_than_the_memory_budget(simulated_session, tmp_path, capsys, monkeypatch,
                                             bayer):
    """A 384 x 384 colour frame is 1.7 MiB debayered: a 1 MiB budget (per channel) cuts
    the stack of 5 frames into many small tiles, and the stack is the very one a large
    budget makes (it was not: RCD normalised each window by its own range and overlapped
    bands by too few rows). The same for mono frames, whose tile windows have a narrower
    margin (the cosmetic correction's, not RCD's): hot pixels at the tiles' edges are
    replaced as in one window."""
    from deepsky.integrate.stack import StackPlan, tile_grid

    monkeypatch.setattr("deepsky.pipeline.report.write_report",
                        lambda pipe, result, path, error=None: path)
    s = simulated_session(**{**SPEC, "width": 384, "height": 384, "n_lights": 5,
                             "bayer": bayer, "hot_pixel_fraction": 0.02})
    stacks = {}
    for mb in (1, 512):
        out = tmp_path / f"mb{mb}"
        assert main(["run", str(s.path), "-o", str(out), "-q", *FAST,
                     "--set", "integration.trails=false", "--set", f"run.memory_mb={mb}"]) == 0
        stacks[mb] = read(out / "stack.fits").data
    assert len(tile_grid(StackPlan(out_shape=(384, 384), channels=3, memory_mb=1), 5)) >= 9
    np.testing.assert_array_equal(stacks[1], stacks[512])


def test_rcd_does_not_depend_on_threads_or_windows():
    rng = np.random.default_rng(3)
    m = (rng.random((300, 200)) * 1000).astype(np.float32)
    one = rcd(m, "RGGB", workers=1)
    np.testing.assert_array_equal(rcd(m, "RGGB", workers=4), one)
    rng_ = (float(m.min()), float(m.max()))
    top = rcd(m[:150 + 16], "RGGB", workers=1, value_range=rng_)[:, :150]
    bottom = rcd(m[150 - 16:], "RGGB", workers=1, value_range=rng_)[:, 16:]
    np.testing.assert_array_equal(np.concatenate([top, bottom], axis=1), one)


def test_more_frames_than_open_files(simulated_session, tmp_path):
    """100 frames with at most 64 open files: no handle stays open per frame."""
    s = simulated_session(width=128, height=128, bayer=None, n_lights=100, n_darks=3,
                          n_flats=3, n_biases=3, seed=5, star_density=4000.0, galaxy=False)
    out = tmp_path / "out"
    r = run_cli(s.path, out, "--set", "run.workers=2", shell_prefix="ulimit -n 64;")
    assert r.returncode == 0, r.stderr
    assert int(fits.getval(out / "stack.fits", "NCOMBINE")) == 100
