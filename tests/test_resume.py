"""Killed runs resume: SIGKILL in each stage, restart, same result, finished work not redone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deepsky.io import read

SPEC = dict(width=256, height=256, bayer="RGGB", n_lights=6, n_darks=4, n_flats=4,
            n_biases=4, seed=41, satellite_frames=(2,))
# Small tiles so the integration has several to checkpoint.
SETTINGS = ["--set", "run.memory_mb=2", "--set", "run.workers=1"]


def _run(session, out, fault=None, extra=(), command="run"):
    env = dict(os.environ)
    env.pop("DEEPSKY_FAULT", None)
    if fault:
        env["DEEPSKY_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "deepsky.cli", command, str(session), "-o",
                           str(out), "-q", *SETTINGS, *extra], capture_output=True, text=True,
                          env=env)


@pytest.fixture(scope="module")
def reference(simulated_session, tmp_path_factory):
    sim = simulated_session(**SPEC)
    out = tmp_path_factory.mktemp("uninterrupted")
    r = _run(sim.path, out)
    assert r.returncode == 0, r.stderr
    return sim, out


@pytest.mark.parametrize(("fault", "stage"), [
    ("masters:2", "masters"),
    ("analyze:3", "analyze"),
    ("integrate:2", "integrate"),
    ("postprocess:1", "postprocess"),
])
def test_killed_run_resumes_to_the_same_result(reference, tmp_path, fault, stage):
    sim, ref_out = reference
    out = tmp_path / "out"
    killed = _run(sim.path, out, fault)
    assert killed.returncode == -9  # SIGKILL: no clean-up ran
    # Nothing half-written: every file in the output is complete (no temporary names left
    # visible as outputs, and what exists reads).
    for p in out.rglob("*.fits"):
        read(p)
    again = _run(sim.path, out)
    assert again.returncode == 0, again.stderr
    np.testing.assert_array_equal(read(out / "stack.fits").data, read(ref_out / "stack.fits").data)
    np.testing.assert_allclose(read(out / "final_linear.fits").data,
                               read(ref_out / "final_linear.fits").data, rtol=1e-6)
    rec = json.loads((out / "run.json").read_text())
    if stage == "analyze":
        # The 3 frames analysed before the kill are not analysed again.
        assert rec["counts"]["frames_reused"] == 3
        assert rec["counts"]["frames_analyzed"] == SPEC["n_lights"] - 3
    if stage in ("integrate", "postprocess"):
        assert rec["counts"]["frames_analyzed"] == 0
        assert rec["counts"]["frames_reused"] == SPEC["n_lights"]
    if stage == "integrate":
        # The 2 tiles written into the stack file before the kill are read back, not redone.
        assert rec["counts"]["tiles_reused"] == 2
    if stage == "masters":
        assert rec["counts"]["masters_reused"] >= 2


def test_changing_a_postprocess_setting_reruns_only_postprocessing(reference, tmp_path):
    sim, ref_out = reference
    out = tmp_path / "out"
    assert _run(sim.path, out).returncode == 0
    stack_mtime = (out / "stack.fits").stat().st_mtime_ns
    jpg_mtime = (out / "final.jpg").stat().st_mtime_ns
    r = subprocess.run([sys.executable, "-m", "deepsky.cli", "run", str(sim.path), "-o",
                        str(out), *SETTINGS, "--set", "postprocess.stretch.target_background=0.25"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "stack.fits is up to date" in r.stderr
    assert (out / "stack.fits").stat().st_mtime_ns == stack_mtime
    assert (out / "final.jpg").stat().st_mtime_ns != jpg_mtime
    rec = json.loads((out / "run.json").read_text())
    assert rec["counts"]["frames_analyzed"] == 0


def test_killed_while_drizzling_reads_the_plain_stack_back(simulated_session, tmp_path):
    """The plain stack is complete before the drizzle starts: a run killed while drizzling
    reads it back instead of integrating again, and ends with the same stacks."""
    sim = simulated_session(**SPEC)
    drizzle = ["--set", "integration.drizzle=2"]
    ref = tmp_path / "ref"
    assert _run(sim.path, ref, extra=drizzle, command="stack").returncode == 0
    out = tmp_path / "out"
    killed = _run(sim.path, out, "drizzle:2", extra=drizzle, command="stack")
    assert killed.returncode == -9
    assert (out / "stack_nodrizzle.fits").exists() and not (out / "stack.fits").exists()
    again = _run(sim.path, out, extra=drizzle)
    assert again.returncode == 0, again.stderr
    for name in ("stack.fits", "stack_nodrizzle.fits"):
        np.testing.assert_array_equal(read(out / name).data, read(ref / name).data)
    rec = json.loads((out / "run.json").read_text())
    assert rec["counts"]["tiles_reused"] > 1  # all of them: none integrated again
