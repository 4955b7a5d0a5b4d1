"""Integration against the simulator's truth: noise, trails, photometry, framing, memory and
the stack file."""

from __future__ import annotations

import csv
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from deepsky.config import load_config
from deepsky.integrate.stack import frame_window, stack_tile, tile_grid, StackPlan
from deepsky.io import read
from deepsky.pipeline.progress import Reporter
from deepsky.pipeline.run import run_pipeline
from deepsky.pipeline.runner import Pipeline
from deepsky.pipeline.stacking import StackGroup, prepare_group
from deepsky.simulate.evaluate import background_noise, trail_pixels

QUIET = Reporter(quiet=True)


def _objects(sim, grow=3):
    sky = sim.read("truth_sky.fits")
    if sky.ndim == 3:
        sky = sky.sum(axis=0)
    return ndimage.binary_dilation(sky > np.median(sky) * 1.01, iterations=grow)


def _pipeline(sim, out, overrides=()):
    cfg = load_config(overrides=list(overrides))
    p = Pipeline(sim.path, out, cfg, reporter=QUIET)
    p.discover()
    p.calibration()
    p.analyze()
    p.register()
    return p, cfg


@pytest.mark.parametrize("n", [10, 50])
def test_stack_noise_follows_sqrt_n(simulated_session, tmp_path, n):
    size = 256 if n == 50 else 320
    sim = simulated_session(width=size, height=size, bayer=None, n_lights=n, n_darks=8,
                            n_flats=8, n_biases=8, seed=21, cosmic_ray_rate=0.0)
    p, cfg = _pipeline(sim, tmp_path, ["integration.trails=false", "selection.enabled=false"])
    g = p.groups[0]
    used = [r for r in g.records if r.used]
    assert len(used) == n
    sg = StackGroup(name="", records=g.records, norm_ref=used.index(g.reference_record))
    inputs, plan = prepare_group(sg, cfg, p.plan, remote=False, ref_shape=(size, size))
    assert plan.method == "winsorized"  # rejection on
    tile = (0, size, 0, size)
    objs = _objects(sim)
    sig = []
    for fi in inputs:
        w = frame_window(fi, tile, plan)[0]  # the frame as it enters the stack
        sig.append(background_noise(w, objs | ~np.isfinite(w)))
    sig = np.array(sig)
    wt = np.array([fi.weight for fi in inputs])
    expected = np.sqrt(np.sum(wt ** 2 * sig ** 2)) / wt.sum()
    res = stack_tile(inputs, tile, plan)
    measured = background_noise(res.data[0], objs | (res.used < n))
    assert measured / expected < 1.05
    # and against the plain sigma_single / sqrt(N) of the issue
    assert measured / (np.median(sig) / np.sqrt(n)) < 1.05


@pytest.mark.parametrize(("n", "k"), [(5, 2), (10, 3)])
def test_trails_leave_no_trace(simulated_session, tmp_path, n, k):
    frames = tuple(int(i) for i in np.linspace(0, n - 1, k).round())
    common = dict(width=384, height=384, bayer=None, n_lights=n, n_darks=5, n_flats=5,
                  n_biases=5, seed=11)
    with_trails = simulated_session(**common, satellite_frames=frames)
    clean = simulated_session(**common)
    ref = "Light_0002_60s.fits"  # same grid for both runs (frame 1 has no trail)
    cfg = load_config(overrides=[f"registration.reference={ref}"])
    r1 = run_pipeline(with_trails.path, tmp_path / "t", cfg, reporter=QUIET)
    run_pipeline(clean.path, tmp_path / "c", cfg, reporter=QUIET)
    found = r1.record["stacks"][0]["trails"]
    names = [f"Light_{i + 1:04d}_60s.fits" for i in frames]
    assert sorted(found) == sorted(names)  # every trail found, nothing else
    stack = read(tmp_path / "t" / "stack.fits").data
    ref_stack = read(tmp_path / "c" / "stack.fits").data
    mask = trail_pixels(with_trails.truth, 1, stack.shape)
    objs = _objects(with_trails)
    sigma = background_noise(stack, mask | objs)
    sigma_clean = background_noise(ref_stack, mask | objs)
    diff = (stack - ref_stack)[mask & ~objs]
    assert abs(float(np.mean(diff))) <= sigma  # no trace of the trails on average
    assert float(np.percentile(np.abs(diff), 99)) <= 3 * sigma  # nor anywhere
    assert abs(sigma / sigma_clean - 1) <= 0.03  # the masks cost no noise elsewhere
    rows = list(csv.DictReader((tmp_path / "t" / "frames.csv").read_text().splitlines()))
    assert {r["file"] for r in rows if r["n_trails"] != "0"} == set(names)


def test_photometry_and_star_cores(simulated_session, tmp_path):
    # Bright, unsaturated stars (SNR > 100 in the stack): the photometric noise stays well
    # under the 1 % asked of the stack.
    sim = simulated_session(width=384, height=384, bayer=None, n_lights=8, n_darks=5,
                            n_flats=5, n_biases=5, seed=13, cosmic_ray_rate=0.0,
                            star_density=800.0, star_flux=(200.0, 5000.0))
    ref = "Light_0001_60s.fits"  # the truth's reference: catalogue coordinates apply as is
    base = [f"registration.reference={ref}", "integration.trails=false"]
    run_pipeline(sim.path, tmp_path / "rej", load_config(overrides=base), reporter=QUIET)
    run_pipeline(sim.path, tmp_path / "none",
                 load_config(overrides=base + ["integration.rejection=none"]), reporter=QUIET)
    stack = read(tmp_path / "rej" / "stack.fits").data
    plain = read(tmp_path / "none" / "stack.fits").data
    from deepsky.simulate import read_truth_stars

    cat = read_truth_stars(sim.path / "truth_stars.csv")
    x, y, flux = cat["x"], cat["y"], cat["flux"]
    r_ap = 8.0
    # Isolated, unsaturated stars well inside the frame (neighbours spoil apertures and
    # annuli; that is the photometry's limit, not the stack's).
    from scipy.spatial import cKDTree

    tree = cKDTree(np.stack([x, y], axis=1))
    isolated = np.array([all(flux[j] < 0.005 * flux[i] for j in tree.query_ball_point(
        (x[i], y[i]), 20.0) if j != i) for i in range(len(x))])
    inside = ((x > 20) & (x < 364) & (y > 20) & (y < 364) & isolated
              & (cat["saturated"] == 0))
    yy, xx = np.mgrid[0:384, 0:384]
    measured, measured_plain, truth = [], [], []
    sky = np.median(stack)
    for xi, yi, fi in zip(x[inside], y[inside], flux[inside]):
        ap = np.hypot(xx - xi, yy - yi) <= r_ap
        ann = (np.hypot(xx - xi, yy - yi) > 12) & (np.hypot(xx - xi, yy - yi) <= 18)
        measured.append(float(np.sum(stack[ap] - np.median(stack[ann]))))
        measured_plain.append(float(np.sum(plain[ap] - np.median(plain[ann]))))
        truth.append(fi)
    m, mp, t = np.array(measured), np.array(measured_plain), np.array(truth)
    bright = mp > 0
    assert bright.sum() >= 15
    # After normalisation the stack is on the reference frame's scale: one factor (exposure
    # x gain x transparency of the reference x aperture fraction) relates the two.
    ratio = m[bright] / t[bright]
    k = np.median(ratio)
    assert np.median(np.abs(ratio / k - 1)) < 0.01
    # Rejection does not eat star cores: the same fluxes as without rejection.
    assert abs(np.median(m[bright] / mp[bright]) - 1) < 0.005
    del sky


@pytest.mark.parametrize("framing", ["union", "intersection"])
def test_framing(simulated_session, tmp_path, framing):
    sim = simulated_session(width=256, height=256, bayer=None, n_lights=5, n_darks=3,
                            n_flats=3, n_biases=3, seed=17, max_shift=30.0)
    res = run_pipeline(sim.path, tmp_path, load_config(overrides=[
        f"integration.framing={framing}", "integration.trails=false"]), reporter=QUIET)
    h, w = res.record["stacks"][0]["shape"]
    stack = read(tmp_path / "stack.fits")
    cov = read(tmp_path / "stack.fits").meta.header  # primary header
    assert stack.data.shape == (h, w)
    if framing == "union":
        assert h > 256 and w > 256
        assert np.isnan(stack.data).any()  # corners nobody covered
    else:
        assert h < 256 and w < 256
        assert np.isfinite(stack.data).all()
    del cov


def test_colour_stack_file(small_session, tmp_path):
    res = run_pipeline(small_session.path, tmp_path, load_config(), reporter=QUIET)
    f = read(tmp_path / "stack.fits")
    assert f.data.shape == (3, 256, 256) and f.data.dtype == np.float32
    h = f.meta.header
    n_used = res.record["frames"]["used"]
    assert h["NCOMBINE"] == n_used and h["EXPTIME"] == pytest.approx(60.0 * n_used)
    assert "BAYERPAT" not in h and any("rejection" in line for line in f.history)
    from astropy.io import fits

    with fits.open(tmp_path / "stack.fits") as hdul:
        names = [x.name for x in hdul]
        assert names[1:] == ["WEIGHT", "COVERAGE", "REJ_LOW", "REJ_HIGH"]
        assert hdul["REJ_LOW"].data.shape == (3, 256, 256)
        assert int(hdul["COVERAGE"].data.max()) == n_used
    rows = list(csv.DictReader((tmp_path / "frames.csv").read_text().splitlines()))
    assert all(float(r["weight"]) > 0 for r in rows if r["status"] == "used")


def test_tile_memory_stays_flat(simulated_session):
    """The block of samples, hence peak memory, does not grow with the frame count."""
    def peak_for(n_frames: int) -> int:
        plan = StackPlan(out_shape=(2048, 2048), memory_mb=64)
        tiles = tile_grid(plan, n_frames)
        th = tiles[0][1] - tiles[0][0]
        tw = tiles[0][3] - tiles[0][2]
        return n_frames * th * tw * 4

    for n in (20, 100, 200):
        assert peak_for(n) <= 64 * 1024 * 1024
    assert peak_for(200) > 0.8 * peak_for(20)

    sim = simulated_session(width=256, height=256, bayer=None, n_lights=12, n_darks=3,
                            n_flats=3, n_biases=3, seed=19)
    p, cfg = _pipeline(sim, Path(sim.path).parent / "memtest",
                       ["run.memory_mb=32", "integration.trails=false"])
    g = p.groups[0]
    used = [r for r in g.records if r.used]
    sg = StackGroup(name="", records=g.records, norm_ref=used.index(g.reference_record))
    inputs, plan = prepare_group(sg, cfg, p.plan, remote=False, ref_shape=(256, 256))
    tile = tile_grid(plan, len(inputs))[0]
    tracemalloc.start()
    stack_tile(inputs, tile, plan)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2.5 * 32 * 1024 * 1024


def test_checkpoint_writes_bands_of_tiles(tmp_path):
    """Finished tiles reach the stack file (and done.txt) when their band of tiles is
    complete, as whole rows; a failing integration still writes the tiles it finished."""
    from deepsky.integrate.stack import STACK_HDUS, Integration, TileCheckpoint, TileResult
    from deepsky.integrate.stack import stack_layout
    from deepsky.io.fits import TiledFits

    plan = StackPlan(out_shape=(40, 60))
    tiles = [(y0, min(40, y0 + 16), x0, min(60, x0 + 25)) for y0 in (0, 16, 32)
             for x0 in (0, 25, 50)]
    rng = np.random.default_rng(3)

    def result(t):
        y0, y1, x0, x1 = t
        shape = (1, y1 - y0, x1 - x0)
        return TileResult(y0, y1, x0, x1, rng.normal(size=shape).astype(np.float32),
                          rng.integers(0, 9, shape).astype(np.uint16),
                          rng.integers(0, 9, shape).astype(np.uint16),
                          rng.integers(0, 9, shape[1:]).astype(np.uint16),
                          rng.random(shape[1:]).astype(np.float32))

    def done_tiles(cp):
        return sorted(int(line.split()[0]) for line in cp.done_path.read_text().splitlines())

    path = tmp_path / "stack.fits"
    cp = TileCheckpoint(TiledFits(path, stack_layout(plan, {}, [])))
    out = Integration.empty(plan)
    assert cp.start(tiles, out) == list(range(9))
    ticks = []
    for i in (0, 2):  # two of the first band's three tiles: nothing written yet
        out.put(result(tiles[i]))
        cp.save(i, tiles[i], lambda: ticks.append(1))
    cp._writer.finish()
    assert not cp.done_path.exists() and not ticks
    out.put(result(tiles[1]))
    cp.save(1, tiles[1], lambda: ticks.append(1))
    out.put(result(tiles[3]))  # the second band's first tile, then a failure
    cp.save(3, tiles[3], lambda: ticks.append(1))
    cp.finish(quietly=True)
    assert done_tiles(cp) == [0, 1, 2, 3] and len(ticks) == 4
    # What is in the file is what was computed: read back by a restarted integration.
    again = TileCheckpoint(TiledFits(path, stack_layout(plan, {}, [])))
    back = Integration.empty(plan)
    assert again.start(tiles, back) == [4, 5, 6, 7, 8] and again.reused == 4
    for _name, attr, _comment in STACK_HDUS:
        a, b = getattr(out, attr), getattr(back, attr)
        np.testing.assert_array_equal(a[..., :16, :], b[..., :16, :])
        np.testing.assert_array_equal(a[..., 16:32, :25], b[..., 16:32, :25])


def test_kernel_warm_up_runs_the_stages_kernels():
    """The background warm-up really detects, matches and warps (it swallows its failures
    in a run, so a change that broke it would otherwise go unseen): the 4 synthetic stars
    found, the 12 synthetic star positions matched, the warped window at the synthetic sky
    level, the synthetic line found as a trail."""
    from deepsky.pipeline.runner import _warm

    n_stars, level, n_matched, n_trails = _warm(load_config())
    assert n_stars == 4
    assert abs(level - 100.0) < 2.0
    assert n_matched == 12
    assert n_trails == 1
