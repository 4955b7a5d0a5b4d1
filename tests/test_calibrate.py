"""Calibration against the simulator's truth: flat, dust, dark, hot pixels, scaled darks,
the calibration library, and the ``deepsky calibrate`` command."""

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from deepsky.calibrate.apply import CalibrationSet, calibrate_frame, optimize_dark_scale
from deepsky.calibrate.masters import combine_sources
from deepsky.calibrate.plan import plan_calibration
from deepsky.cli import main
from deepsky.config import load_config
from deepsky.io import read
from deepsky.io.discover import discover
from deepsky.io.fits import write_fits
from deepsky.io.sources import open_source
from deepsky.simulate.evaluate import calibration_report

CAL_SESSION = dict(width=384, height=320, n_lights=3, n_darks=10, n_flats=10, n_biases=10,
                   seed=3, exposure=60.0)


def _calibrate_all(sim, cfg=None):
    cfg = cfg or load_config()
    session = discover(sim.path)
    plan = plan_calibration(session, cfg.calibration)
    out = []
    for m in session.lights:
        cal, k = plan.for_light(m)
        out.append(calibrate_frame(read(m.path).data, cal, dark_scale=k))
    return plan, out, cal


@pytest.mark.parametrize("options", [
    dict(bayer=None),
    dict(bayer="RGGB"),
    dict(bayer="GRBG", roworder="BOTTOM-UP"),
    dict(bayer=None, dark_exposure=30.0),  # no dark of the lights' exposure: scaled
], ids=["mono", "rggb", "grbg-bottom-up", "scaled-dark"])
def test_calibrated_lights_match_the_truth(simulated_session, options):
    sim = simulated_session(**{**CAL_SESSION, **options})
    plan, calibrated, cal = _calibrate_all(sim)
    if "dark_exposure" in options:
        assert any("scaled by the exposure ratio" in w for w in plan.warnings)
        assert plan.dark_scales[str(sim.path / sim.truth.frames("light")[0].file)] == \
            pytest.approx(2.0)
    rep = calibration_report(sim.model, sim.truth, calibrated, list(range(len(calibrated))),
                             defects=cal.defects.mask, bayer=sim.truth.sensor.bayer_stored)
    assert rep["flat_residual_pct"] <= 0.5
    assert rep["dust_residual_sigma"] <= 1.0
    assert rep["dark_residual_rn"] <= 0.2
    assert rep["hot_corrected_pct"] >= 99.0
    assert rep["good_touched_pct"] < 0.01


def test_negative_values_are_kept(simulated_session):
    sim = simulated_session(**{**CAL_SESSION, "bayer": None, "sky_level": 0.2})
    _, calibrated, _ = _calibrate_all(sim)
    assert min(float(c.min()) for c in calibrated) < 0


def test_library_reuses_masters(simulated_session, tmp_path):
    sim = simulated_session(**{**CAL_SESSION, "bayer": None})
    session = discover(sim.path)
    cfg = load_config()
    first = plan_calibration(session, cfg.calibration, out=tmp_path / "masters")
    assert {m.kind for m in first.masters if not m.reused} >= {"bias", "dark", "flat"}
    again = plan_calibration(session, cfg.calibration, out=tmp_path / "masters")
    assert all(m.reused for m in again.masters if m.kind != "defects")
    changed = load_config(overrides=["calibration.master_sigma=4"])
    third = plan_calibration(session, changed.calibration, out=tmp_path / "masters")
    assert not any(m.reused for m in third.masters if m.kind != "defects")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names files by /proc")
def test_library_files_are_synced_before_they_appear(simulated_session, tmp_path, monkeypatch):
    """The library outlives the run: every master and defect map reaches the disk before
    its name does (and leaves the page cache: the run holds it in memory)."""
    import os

    import deepsky.io.atomic as atomic

    sim = simulated_session(**{**CAL_SESSION, "bayer": None})
    synced: list[str] = []
    real_sync = atomic.os.fdatasync
    monkeypatch.setattr(atomic.os, "fdatasync", lambda fd: (
        synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_sync(fd)))
    plan = plan_calibration(discover(sim.path), load_config().calibration,
                            out=tmp_path / "masters")
    written = sorted(m.path.name for m in plan.masters)
    assert {m.kind for m in plan.masters} == {"bias", "dark", "flat", "defects"}
    # synced under their temporary names (".<stem>.<random>.tmp.fits"), renamed afterwards
    assert sorted(Path(p).name.split(".")[1] + ".fits" for p in synced) == written
    assert all(".tmp" in Path(p).name for p in synced)


def test_dark_optimisation_recovers_the_scale():
    rng = np.random.default_rng(4)
    h, w = 200, 200
    bias = np.full((h, w), 500.0, np.float32)
    current = rng.exponential(2.0, (h, w)).astype(np.float32)
    hot = rng.integers(0, h * w, 400)
    current.flat[hot] += rng.uniform(50, 500, 400)
    light = bias + 1.7 * current + rng.normal(300, 5, (h, w)).astype(np.float32)
    cal = CalibrationSet(bias=bias, dark=bias + current, dark_exposure=60.0)
    assert optimize_dark_scale(light, cal) == pytest.approx(1.7, rel=0.03)


def test_masters_stay_within_the_memory_budget(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(24):
        p = tmp_path / f"bias_{i:02d}.fits"
        write_fits(p, rng.normal(1000, 10, (600, 800)), dtype=np.uint16)
        paths.append(p)
    sources = [open_source(p) for p in paths]
    tracemalloc.start()
    master = combine_sources(sources, kind="bias", memory_mb=8)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # All frames at once would be 24 x 1.9 MB = 46 MB; the budget keeps the peak near
    # 8 MB of block plus the 1.9 MB master and per-band temporaries.
    assert peak < 24 * 1024 * 1024
    assert abs(float(np.median(master.data)) - 1000) < 1


def test_calibrate_command(simulated_session, tmp_path, capsys):
    sim = simulated_session(**{**CAL_SESSION, "bayer": "RGGB"})
    out = tmp_path / "out"
    assert main(["calibrate", str(sim.path), "-o", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "masters: 3 built, 0 reused" in text
    files = sorted((out / "calibrated").glob("*.fits"))
    assert len(files) == 3
    frame = read(files[0])
    assert frame.data.shape == (3, 320, 384)  # debayered (RCD) by default
    hist = " ".join(frame.history)
    assert "dark subtracted" in hist and "divided by flat" in hist  # the dark carries the bias
    assert "debayer" in hist and frame.meta.header["EXPTIME"] == 60.0
    assert main(["calibrate", str(sim.path), "-o", str(out), "-q",
                 "--set", "calibration.debayer=none"]) == 0
    assert "masters: 0 built, 3 reused" in capsys.readouterr().out
    assert read(files[0]).data.shape == (320, 384)


@pytest.mark.parametrize(("options", "searched"), [
    (dict(), False),  # darks of the lights' exposure: hot pixels come from the master dark
    (dict(dark_exposure=30.0), True),  # only darks of another exposure: the lights too
    (dict(n_darks=0, n_lights=6), True),  # no darks: the lights are all there is
], ids=["matching-darks", "scaled-darks", "no-darks"])
def test_lights_searched_for_hot_pixels_only_without_a_matching_dark(
        simulated_session, monkeypatch, options, searched):
    import deepsky.calibrate.plan as plan_module

    calls = []
    real = plan_module._light_defects

    def spy(*args, **kwargs):
        found = real(*args, **kwargs)
        calls.append(int(found.sum()))
        return found

    monkeypatch.setattr(plan_module, "_light_defects", spy)
    sim = simulated_session(**{**CAL_SESSION, "bayer": None, **options})
    session = discover(sim.path)
    plan = plan_calibration(session, load_config().calibration)
    assert bool(calls) == searched
    if options.get("n_darks") == 0:
        # Without darks, the injected hot pixels are found in the lights alone.
        cal, _ = plan.for_light(session.lights[0])
        hp = np.asarray(sim.truth.sensor.hot_pixels, float)
        found = cal.defects.mask[np.round(hp[:, 1]).astype(int), np.round(hp[:, 0]).astype(int)]
        # A hot pixel 12 sigma above the sky's noise in every light spikes in all of them
        # (the search's threshold is 8 sigma): those are all found.
        spec = sim.spec
        noise = np.sqrt(spec.sky_level * spec.exposure + spec.read_noise ** 2)
        bright = hp[:, 2] * spec.exposure >= 12 * noise  # electrons
        assert calls[0] > 0 and bright.sum() >= 10
        assert found[bright].all()
