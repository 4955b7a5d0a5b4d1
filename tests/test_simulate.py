"""The simulator against its own truth: measured numbers must match the model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.optimize import least_squares

from deepsky.errors import ConfigError, InputError
from deepsky.io.fits import read_fits, read_fits_meta
from deepsky.simulate import (
    SessionSpec, Truth, build_model, read_truth_stars, render_noiseless_light,
    simulate_session, spec_from_options, true_flat,
)
from deepsky.simulate.scene import catalogue_radius
from deepsky.types import Transform, bayer_channel_masks, bayer_flip_rows

# ----------------------------------------------------------------------------------------------
# helpers: measuring stars on calibrated frames
# ----------------------------------------------------------------------------------------------


def calibrated_electrons(sess, index: int) -> np.ndarray:
    """Light ``index`` calibrated with the *true* bias, dark and flat, in electrons."""
    spec, lt = sess.spec, sess.truth.lights[index]
    raw = sess.read(lt.file).astype(np.float64)
    e = (raw - sess.model.bias()) * spec.egain
    e -= sess.model.dark_current() * lt.exposure * lt.dark_scale
    return e / sess.model.flat_field()


def _local_background(img: np.ndarray, ix: int, iy: int, r_in: int, r_out: int,
                      mosaic: bool) -> np.ndarray:
    """Background of a stamp around (ix, iy): annulus median (per 2x2 phase for a mosaic)."""
    ys, xs = np.mgrid[iy - r_out:iy + r_out + 1, ix - r_out:ix + r_out + 1]
    rr = np.hypot(xs - ix, ys - iy)
    ring = (rr >= r_in) & (rr <= r_out)
    patch = img[iy - r_out:iy + r_out + 1, ix - r_out:ix + r_out + 1]
    bg = np.full(patch.shape, np.median(patch[ring]))
    if mosaic:
        for py in (0, 1):
            for px in (0, 1):
                sel = ((ys % 2) == py) & ((xs % 2) == px)
                bg[sel] = np.median(patch[ring & sel])
    return bg


def fit_centroid(img: np.ndarray, x: float, y: float, *, mosaic: bool = False,
                 r: int = 5) -> tuple[float, float]:
    """Star centre by a least-squares fit of a round Gaussian to a background-subtracted
    stamp around the predicted position."""
    ix, iy = int(round(x)), int(round(y))
    bg = _local_background(img, ix, iy, 9, 13, mosaic)
    off = 13 - r
    stamp = (img[iy - 13:iy + 14, ix - 13:ix + 14] - bg)[off:off + 2 * r + 1,
                                                         off:off + 2 * r + 1]
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]

    def resid(p: np.ndarray) -> np.ndarray:
        a, x0, y0, s = p
        return (a * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s)) - stamp).ravel()

    res = least_squares(resid, [stamp.max(), x - ix, y - iy, 1.3])
    return ix + float(res.x[1]), iy + float(res.x[2])


def aperture_flux(img: np.ndarray, x: float, y: float, *, r: int = 12) -> float:
    ix, iy = int(round(x)), int(round(y))
    ro = r + 6
    bg = _local_background(img, ix, iy, r + 2, ro, mosaic=False)
    ys, xs = np.mgrid[iy - ro:iy + ro + 1, ix - ro:ix + ro + 1]
    inside = np.hypot(xs - x, ys - y) <= r
    patch = img[iy - ro:iy + ro + 1, ix - ro:ix + ro + 1] - bg
    return float(patch[inside].sum())


def measurable_stars(sess, index: int, *, min_electrons: float = 2e4,
                     neutral_only: bool = False, margin: int = 20) -> np.ndarray:
    """Indices of bright, unsaturated, isolated truth stars well inside light ``index``."""
    stars = read_truth_stars(sess.path)
    lt = sess.truth.lights[index]
    pos = lt.transform_obj.inverse().apply(np.c_[stars["x"], stars["y"]])
    e = stars["flux"] * lt.exposure * lt.transparency
    h, w = sess.spec.height, sess.spec.width
    ok = (e > min_electrons) & ~stars["saturated"]
    ok &= (pos[:, 0] > margin) & (pos[:, 0] < w - 1 - margin)
    ok &= (pos[:, 1] > margin) & (pos[:, 1] < h - 1 - margin)
    if neutral_only:
        ok &= stars["neutral"]
    g = sess.truth.galaxy
    if g is not None:
        ok &= np.hypot(stars["x"] - g.x, stars["y"] - g.y) > g.aperture_radius + 15
    cand = np.flatnonzero(ok)
    keep = []
    for k in cand:
        d = np.hypot(stars["x"] - stars["x"][k], stars["y"] - stars["y"][k])
        rel = stars["flux"] / stars["flux"][k]
        near = (d > 0) & (((d < 9) & (rel > 0.002)) | ((d < 18) & (rel > 0.03)))
        if not near.any():
            keep.append(k)
    return np.array(keep, dtype=np.int64)


def centroid_errors(sess, index: int, *, neutral_only: bool = False) -> np.ndarray:
    stars = read_truth_stars(sess.path)
    lt = sess.truth.lights[index]
    img = calibrated_electrons(sess, index)
    sel = measurable_stars(sess, index, neutral_only=neutral_only)
    pred = lt.transform_obj.inverse().apply(np.c_[stars["x"][sel], stars["y"][sel]])
    meas = np.array([fit_centroid(img, x, y, mosaic=sess.spec.is_color) for x, y in pred])
    return np.hypot(*(meas - pred).T)


# ----------------------------------------------------------------------------------------------
# the spec
# ----------------------------------------------------------------------------------------------


def test_default_spec_is_a_small_colour_session() -> None:
    s = SessionSpec()
    assert (s.width, s.height, s.bayer, s.seed) == (1024, 768, "RGGB", 0)
    assert (s.n_lights, s.n_darks, s.n_flats, s.n_biases, s.n_darkflats) == (8, 10, 10, 10, 0)
    assert s.exposure == 60.0 and s.darks_exposure == 60.0 and s.filters == ("UVIR",)
    assert SessionSpec(bayer=None).filters == ("L",)
    assert SessionSpec.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(("options", "message"), [
    ({"bayer": "RGBG"}, "bayer"),
    ({"width": 101}, "even"),
    ({"cloudy_frames": (9,), "n_lights": 4}, "cloudy_frames"),
    ({"meridian_flip_frames": 9, "n_lights": 4}, "meridian_flip_frames"),
    ({"roworder": "LEFT-RIGHT"}, "roworder"),
    ({"layout": "zip"}, "layout"),
    ({"light_exposures": (60.0, 30.0), "n_lights": 3}, "light_exposures"),
    ({"fwhm": (3.0, 2.0)}, "fwhm"),
    ({"flat_level": 1.5}, "flat_level"),
    ({"filters": ("L", "L")}, "filters"),
])
def test_bad_options_name_the_parameter(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SessionSpec(**options)


def test_spec_from_cli_like_options() -> None:
    s = spec_from_options(size="512x384", frames=6, bayer="none", seed=3, filters="L,R",
                          darks=4, cloudy_frames="1,2", fwhm="2.0,2.5",
                          meridian_flip_frames="2", exposure=None)
    assert (s.width, s.height, s.n_lights, s.bayer, s.seed) == (512, 384, 6, None, 3)
    assert s.filters == ("L", "R") and s.n_darks == 4 and s.exposure == 60.0
    assert s.cloudy_frames == (1, 2) and s.fwhm == (2.0, 2.5)
    assert s.flipped_lights == (10, 11)
    with pytest.raises(ConfigError, match="size"):
        spec_from_options(size="big")
    with pytest.raises(ConfigError, match="frobnicate"):
        spec_from_options(frobnicate=1)


# ----------------------------------------------------------------------------------------------
# files, headers, truth
# ----------------------------------------------------------------------------------------------


def test_files_headers_and_truth_round_trip(small_session) -> None:
    sess = small_session
    truth = sess.truth
    assert Truth.load(sess.path) == truth
    assert Truth.load(sess.path / "truth.json").to_json() == truth.to_json()
    for name in ("truth_sky.fits", "truth_background.fits", "truth_flat.fits",
                 "truth_dark_current.fits", "truth_bias.fits", "truth_stars.csv"):
        assert (sess.path / name).is_file()
    assert [lt.file for lt in truth.lights] == [f"lights/Light_{i:04d}_60s.fits"
                                                 for i in range(1, 5)]
    assert len(truth.frames("dark")) == len(truth.frames("flat")) == 5
    meta = read_fits_meta(sess.path / truth.lights[1].file)
    assert meta.kind == "light" and meta.exposure == 60.0 and meta.egain == 1.0
    assert meta.gain == 100 and meta.bayer == "RGGB" and meta.filter == "UVIR"
    assert meta.set_temperature == -10.0 and abs(meta.temperature + 10.0) < 0.6
    assert meta.header["OFFSET"] == 50 and meta.header["ROWORDER"] == "TOP-DOWN"
    assert meta.header["BZERO"] == 32768 and meta.header["BITPIX"] == 16
    assert meta.header["EXPOSURE"] == 60.0 and meta.header["XBAYROFF"] == 0
    d0 = read_fits_meta(sess.path / truth.lights[0].file).date
    assert (meta.date - d0).total_seconds() == pytest.approx(60.0 + sess.spec.overhead)
    kinds = {read_fits_meta(p).kind for k in ("dark", "flat", "bias") for p in sess.files(k)}
    assert kinds == {"dark", "flat", "bias"}
    flat_date = read_fits_meta(sess.files("flat")[0]).date
    assert flat_date > meta.date
    stars = read_truth_stars(sess.path)
    assert len(stars["x"]) == truth.star_count
    assert {"flux_r", "flux_g", "flux_b", "neutral", "saturated"} <= set(stars)
    assert_allclose(stars["flux_r"][stars["neutral"]], stars["flux"][stars["neutral"]])
    sky = read_fits(sess.path / "truth_sky.fits").data
    assert sky.shape == (3, 256, 256)
    assert truth.lights[0].transform == tuple(np.eye(3).ravel())


def test_catalogue_covers_every_frame(simulated_session) -> None:
    sess = simulated_session(bayer=None, max_shift=30.0, max_rotation=5.0,
                             meridian_flip_frames=1)
    cx, cy = (sess.spec.width - 1) / 2, (sess.spec.height - 1) / 2
    limit = catalogue_radius(sess.spec) - 64
    corners = [[0, 0], [255, 0], [0, 255], [255, 255]]
    for lt in sess.truth.lights:
        ref = lt.transform_obj.apply(corners)
        assert np.all(np.hypot(ref[:, 0] - cx, ref[:, 1] - cy) <= limit)
    stars = read_truth_stars(sess.path)
    # some stars are seen by other frames but lie outside the reference frame
    assert np.any(~stars["in_reference"] & (stars["n_frames"] > 0))


# ----------------------------------------------------------------------------------------------
# calibration frames
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calib_session(simulated_session):
    return simulated_session(bayer=None, dark_current=0.5, dark_exposure=120.0, amp_glow=1.0,
                             cosmic_ray_rate=0.0, n_darks=6, n_biases=8, n_flats=8,
                             hot_pixel_fraction=1e-3)


def test_bias_level_column_pattern_and_read_noise(calib_session) -> None:
    sess = calib_session
    spec = sess.spec
    biases = sess.stack("bias")
    truth_bias = read_fits(sess.path / "truth_bias.fits").data
    master = biases.mean(axis=0)
    assert abs(master.mean() - truth_bias.mean()) < 0.05
    assert abs(truth_bias.mean() - spec.bias_level) < 3 * spec.column_pattern / 16
    # column pattern: per-column means recover the truth's columns
    assert_allclose(master.mean(axis=0), truth_bias.mean(axis=0), atol=0.25)
    assert np.std(truth_bias.mean(axis=0)) == pytest.approx(
        sess.truth.sensor.column_pattern_rms, rel=1e-5)
    # read noise (plus the 1/12 ADU^2 of rounding) from differences of two biases
    rn = np.std(biases[0] - biases[1]) / math.sqrt(2) * spec.egain
    assert rn == pytest.approx(math.sqrt(spec.read_noise ** 2 + spec.egain ** 2 / 12), rel=0.03)


def test_dark_current_and_hot_pixels(calib_session) -> None:
    sess = calib_session
    spec, truth = sess.spec, sess.truth
    darks = truth.frames("dark")
    assert all(d.exposure == 120.0 for d in darks)
    scale = np.mean([d.dark_scale for d in darks])
    assert_allclose([d.dark_scale for d in darks],
                    [2 ** ((d.ccd_temp - spec.set_temperature) / spec.dark_doubling)
                     for d in darks], rtol=1e-12)
    master = sess.stack("dark").mean(axis=0) - sess.model.bias()
    rate = master * spec.egain / (120.0 * scale)
    true_rate = read_fits(sess.path / "truth_dark_current.fits").data
    hot = np.array(truth.sensor.hot_pixels)
    hx, hy = hot[:, 0].astype(int), hot[:, 1].astype(int)
    normal = np.ones(rate.shape, dtype=bool)
    normal[hy, hx] = False
    # the mean dark current (per-pixel noise averages out over the frame)
    assert rate[normal].mean() == pytest.approx(true_rate[normal].mean(), rel=0.01)
    # the shape: amp glow corner against the opposite corner
    glow = truth.sensor.amp_glow
    gx, gy = int(glow["x"]), int(glow["y"])
    sl = (slice(max(gy - 8, 0), gy + 9), slice(max(gx - 8, 0), gx + 9))
    assert rate[sl].mean() == pytest.approx(true_rate[sl].mean(), rel=0.03)
    assert true_rate[sl].mean() > 1.5 * spec.dark_current
    # hot pixels: where the truth says, at the rate it says
    assert len(hot) == round(spec.hot_pixel_fraction * 256 * 256)
    assert_allclose(rate[hy, hx], hot[:, 2], rtol=0.1, atol=0.3)
    assert_allclose(true_rate[hy, hx], hot[:, 2], rtol=1e-6)
    found = set(zip(*np.nonzero(rate > 6.0)))
    strong = {(y, x) for x, y, r in zip(hx, hy, hot[:, 2]) if r > 8.0}
    weakish = {(y, x) for x, y, r in zip(hx, hy, hot[:, 2]) if r > 4.0}
    assert strong <= found <= weakish


def test_flat_levels_and_shape(calib_session) -> None:
    sess = calib_session
    spec, truth = sess.spec, sess.truth
    flats = truth.frames("flat")
    bias = sess.model.bias()
    dark = sess.model.dark_current()
    raw = sess.stack("flat")
    for k, rec in enumerate(flats):
        e = (raw[k] - bias) * spec.egain - dark * rec.exposure * rec.dark_scale
        assert e.mean() == pytest.approx(rec.level, rel=2e-3)
        assert 0.98 * sess.model.flat_electrons() <= rec.level <= 1.02 * \
            sess.model.flat_electrons()
    assert raw.mean() / 65535 == pytest.approx(spec.flat_level, rel=0.03)
    master = np.mean([(raw[k] - bias) * spec.egain - dark * r.exposure * r.dark_scale
                      for k, r in enumerate(flats)], axis=0)
    master /= master.mean()
    tf = read_fits(sess.path / "truth_flat.fits").data
    assert tf.mean() == pytest.approx(1.0, abs=1e-5)
    resid = master - tf
    expected_noise = 1.0 / math.sqrt(len(flats) * np.mean([r.level for r in flats]))
    assert np.std(resid) == pytest.approx(expected_noise, rel=0.1)
    blocks = resid.reshape(32, 8, 32, 8).mean(axis=(1, 3))
    assert np.max(np.abs(blocks)) < 6 * expected_noise / 8
    # the flat has structure: vignetting and dust
    assert tf.max() / tf.min() > 1.1
    ys, xs = np.mgrid[:256, :256]
    for x, y, radius, depth in truth.sensor.dust:
        d = np.hypot(xs - x, ys - y)
        core, ring = d < 0.3 * radius, (d > 1.6 * radius) & (d < 2.0 * radius)
        if core.any() and ring.any():
            assert tf[core].mean() == pytest.approx(tf[ring].mean() * (1 - depth), rel=0.02)


def test_bayer_flat_channels_follow_qe(small_session) -> None:
    sess = small_session
    spec = sess.spec
    rec = sess.truth.frames("flat")[0]
    raw = sess.read(rec.file).astype(np.float64)
    e = (raw - sess.model.bias()) * spec.egain
    masks = bayer_channel_masks("RGGB", e.shape)
    tf = sess.model.flat_field()
    means = np.array([e[m].mean() for m in masks])
    assert_allclose(means / means[1], np.array(spec.qe) / spec.qe[1], rtol=0.02)
    true_means = np.array([tf[m].mean() for m in masks])
    assert_allclose(means / means.mean(), true_means / true_means.mean(), rtol=2e-3)


# ----------------------------------------------------------------------------------------------
# the lights against the model
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("color", [False, True])
def test_raw_lights_are_the_model_plus_noise(simulated_session, color: bool) -> None:
    sess = simulated_session(bayer="RGGB" if color else None, satellite_frames=(1,),
                             cosmic_ray_rate=2.0)
    spec = sess.spec
    for i in (0, 1):
        lt = sess.truth.lights[i]
        raw = sess.read(lt.file).astype(np.float64)
        e = (raw - sess.model.bias()) * spec.egain
        expected = sess.model.expected_light(i)
        ok = expected < 0.8 * spec.saturation_electrons
        for x, y, _, _ in lt.cosmic_ray_hits:
            ok[max(int(y) - 4, 0):int(y) + 5, max(int(x) - 4, 0):int(x) + 5] = False
            assert e[int(y), int(x)] > expected[int(y), int(x)] + 150
        z = (e - expected) / np.sqrt(expected + spec.read_noise ** 2 + spec.egain ** 2 / 12)
        assert abs(z[ok].mean()) < 0.02
        assert z[ok].std() == pytest.approx(1.0, abs=0.03)
    assert sess.truth.lights[1].cosmic_rays > 0


def test_noiseless_light_zero_is_the_truth_sky(small_session, small_mono_session) -> None:
    for sess in (small_session, small_mono_session):
        lt = sess.truth.lights[0]
        sky = read_fits(sess.path / "truth_sky.fits").data.astype(np.float64)
        bg = read_fits(sess.path / "truth_background.fits").data.astype(np.float64)
        model = lt.exposure * (lt.transparency * (sky - bg) + lt.background_factor * bg)
        if sess.spec.is_color:
            masks = bayer_channel_masks(sess.spec.bayer, sky.shape[1:])
            model = np.where(masks[0], model[0], np.where(masks[1], model[1], model[2]))
        noiseless = render_noiseless_light(sess.model, 0)
        assert_allclose(noiseless, model, rtol=2e-4, atol=1e-3)
        assert_allclose(render_noiseless_light(sess.spec, 0), noiseless, rtol=0, atol=0)


def test_galaxy_flux_and_aperture(simulated_session) -> None:
    sess = simulated_session(star_density=0.0, sky_level=0.0, galaxy_position=(120.0, 130.0))
    g = sess.truth.galaxy
    sky = read_fits(sess.path / "truth_sky.fits").data.astype(np.float64)
    ys, xs = np.mgrid[:256, :256]
    inside = np.hypot(xs - g.x, ys - g.y) <= g.aperture_radius
    assert g.aperture_fraction > 0.995
    for c in range(3):
        assert sky[c][inside].sum() == pytest.approx(g.fluxes["UVIR"][c] * g.aperture_fraction,
                                                     rel=1e-4)
    assert np.mean(g.fluxes["UVIR"]) == pytest.approx(g.flux, rel=0.05)
    # in a shifted, rotated light the galaxy keeps its flux (mosaic: 1/4 R, 1/2 G, 1/4 B)
    lt = sess.truth.lights[2]
    (px, py), = lt.transform_obj.inverse().apply([[g.x, g.y]])
    ins = np.hypot(xs - px, ys - py) <= g.aperture_radius
    got = sess.model.render_noiseless_light(2)[ins].sum()
    r, gr, b = g.fluxes["UVIR"]
    want = lt.exposure * lt.transparency * g.aperture_fraction * (r / 4 + gr / 2 + b / 4)
    assert got == pytest.approx(want, rel=2e-3)


# ----------------------------------------------------------------------------------------------
# geometry: transforms against measured star positions
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def geometry_session(simulated_session):
    return simulated_session(bayer=None, width=320, height=320, star_density=1500.0,
                             star_flux=(300.0, 1e5), max_rotation=4.0, meridian_flip_frames=(3,), galaxy=False,
                             fwhm=(2.0, 3.0), cosmic_ray_rate=0.0)


def test_transforms_match_measured_star_positions(geometry_session) -> None:
    sess = geometry_session
    truth = sess.truth
    assert truth.lights[3].meridian_flipped
    assert abs(abs(truth.transform(3).rotation_deg) - 180) < sess.spec.max_rotation + 1e-9
    assert abs(truth.transform(1).rotation_deg) > 0.2
    for i in range(4):
        err = centroid_errors(sess, i)
        assert len(err) >= 8, f"light {i}: only {len(err)} measurable stars"
        assert np.median(err) < 0.02, f"light {i}: median error {np.median(err):.4f} px"


def test_transforms_on_a_colour_session(simulated_session) -> None:
    sess = simulated_session(width=320, height=320, star_density=1500.0,
                             star_flux=(300.0, 1e5), neutral_star_fraction=0.6, galaxy=False, max_rotation=2.0,
                             fwhm=(2.4, 3.0), cosmic_ray_rate=0.0)
    for i in (0, 2):
        err = centroid_errors(sess, i, neutral_only=True)
        assert len(err) >= 6
        assert np.median(err) < 0.02


def test_undersampled_stars_are_still_centred() -> None:
    from deepsky.simulate import PSF, render_stars

    rng = np.random.default_rng(3)
    x, y = rng.uniform(40, 88, 40), rng.uniform(40, 88, 40)
    yy, xx = np.mgrid[:128, :128]
    for fwhm in (1.5, 2.0):
        psf = PSF(fwhm)
        for k in range(len(x)):
            img = render_stars((128, 128), x[k:k + 1], y[k:k + 1], np.array([1e4]), psf,
                               threshold=1e-3)
            assert img.sum() == pytest.approx(1e4, rel=1e-4)
            assert (img * xx).sum() / img.sum() == pytest.approx(x[k], abs=2e-3)
            assert (img * yy).sum() / img.sum() == pytest.approx(y[k], abs=2e-3)


def test_roworder_bottom_up_writes_the_flipped_array(simulated_session) -> None:
    opts = {"width": 128, "height": 96, "n_lights": 2, "n_darks": 1, "n_flats": 1,
            "n_biases": 1, "max_rotation": 3.0}
    td = simulated_session(**opts)
    bu = simulated_session(**opts, roworder="BOTTOM-UP")
    for rec_td, rec_bu in zip(td.truth.lights + td.truth.calibration,
                              bu.truth.lights + bu.truth.calibration):
        assert_allclose(bu.read(rec_bu.file), td.read(rec_td.file)[::-1], rtol=0, atol=0)
    meta = read_fits_meta(bu.path / bu.truth.lights[0].file)
    assert meta.header["ROWORDER"] == "BOTTOM-UP" and meta.header["BAYERPAT"] == "RGGB"
    assert meta.bayer == bayer_flip_rows("RGGB", 96) == bu.truth.sensor.bayer_stored == "GBRG"
    f = Transform(np.array([[1.0, 0, 0], [0, -1.0, 95.0], [0, 0, 1]]))
    assert_allclose(bu.truth.transform(1).matrix, (f @ td.truth.transform(1) @ f).matrix,
                    atol=1e-9)
    assert_allclose(true_flat(bu.spec), true_flat(td.spec)[::-1], rtol=0, atol=0)
    s_td, s_bu = read_truth_stars(td.path), read_truth_stars(bu.path)
    assert_allclose(s_bu["y"], 95.0 - s_td["y"], atol=1e-9)
    for (x1, y1, r1), (x2, y2, r2) in zip(td.truth.sensor.hot_pixels,
                                          bu.truth.sensor.hot_pixels):
        assert (x2, y2, r2) == (x1, 95.0 - y1, r1)


# ----------------------------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------------------------


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_same_seed_same_files_any_workers(tmp_path: Path) -> None:
    spec = SessionSpec(width=96, height=64, n_lights=3, n_darks=2, n_flats=2, n_biases=2,
                       n_darkflats=1, seed=11, satellite_frames=(2,), cosmic_ray_rate=5.0)
    t1 = simulate_session(spec, tmp_path / "a")
    t2 = simulate_session(spec, tmp_path / "b", workers=3)
    assert t1 == t2
    a, b = _bytes(tmp_path / "a"), _bytes(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    simulate_session(spec.replace(seed=12), tmp_path / "c")
    c = _bytes(tmp_path / "c")
    assert c["lights/Light_0001_60s.fits"] != a["lights/Light_0001_60s.fits"]


def test_frames_do_not_change_when_the_session_grows(tmp_path: Path) -> None:
    small = SessionSpec(width=96, height=64, n_lights=2, n_darks=1, n_flats=1, n_biases=1,
                        seed=5)
    big = small.replace(n_lights=4, n_darks=3, n_flats=2, n_biases=2)
    simulate_session(small, tmp_path / "s")
    simulate_session(big, tmp_path / "b")
    s, b = _bytes(tmp_path / "s"), _bytes(tmp_path / "b")
    for name in ("lights/Light_0001_60s.fits", "lights/Light_0002_60s.fits", "truth_sky.fits",
                 "truth_flat.fits", "truth_bias.fits", "truth_dark_current.fits"):
        assert s[name] == b[name], name
    # calibration frames are taken after the lights: same pixels, later DATE-OBS
    for name in ("darks/Dark_0001_60s.fits", "flats/Flat_0001_2s.fits",
                 "biases/Bias_0001_0s.fits"):
        fs, fb = read_fits(tmp_path / "s" / name), read_fits(tmp_path / "b" / name)
        assert np.array_equal(fs.data, fb.data), name
        assert fs.meta.temperature == fb.meta.temperature
        assert fb.meta.date > fs.meta.date


# ----------------------------------------------------------------------------------------------
# special frames
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events_session(simulated_session):
    return simulated_session(bayer=None, width=320, height=320, star_density=1500.0,
                             star_flux=(300.0, 1e5), galaxy=False, n_lights=5, cloudy_frames=(2,), trailed_frames=(3,),
                             satellite_frames=(4,), cosmic_ray_rate=0.0)


def test_satellite_trail_is_bright_along_the_recorded_line(events_session) -> None:
    sess = events_session
    lt = sess.truth.lights[4]
    s = lt.satellite
    assert s is not None and 1.5 <= s.width <= 4.0
    for x, y in ((s.x0, s.y0), (s.x1, s.y1)):  # endpoints on the border
        assert min(abs(x + 0.5), abs(x - 319.5), abs(y + 0.5), abs(y - 319.5)) < 1e-6
    img = calibrated_electrons(sess, 4)
    t = np.linspace(0.1, 0.9, 200)
    length = math.hypot(s.x1 - s.x0, s.y1 - s.y0)
    nx, ny = -(s.y1 - s.y0) / length, (s.x1 - s.x0) / length

    def sample(offset: float) -> np.ndarray:
        xs = np.rint(s.x0 + t * (s.x1 - s.x0) + offset * nx).astype(int)
        ys = np.rint(s.y0 + t * (s.y1 - s.y0) + offset * ny).astype(int)
        return img[np.clip(ys, 0, 319), np.clip(xs, 0, 319)]

    sky = 0.5 * (np.median(sample(4 * s.width + 3)) + np.median(sample(-4 * s.width - 3)))
    on = np.median(sample(0.0)) - sky
    assert 0.6 * s.peak < on < 1.05 * s.peak
    noise = math.sqrt(lt.background + sess.spec.read_noise ** 2)
    assert s.peak > 5 * noise
    assert not sess.truth.lights[4].bad


def test_cloudy_frame_loses_star_flux_with_its_transparency(events_session) -> None:
    sess = events_session
    truth = sess.truth
    cloudy, clear = truth.lights[2], truth.lights[0]
    assert cloudy.bad and cloudy.bad_reason == "cloudy" and not clear.bad
    assert cloudy.transparency < 0.35 and cloudy.background > 1.5 * clear.background
    stars = read_truth_stars(sess.path)
    sel = np.intersect1d(measurable_stars(sess, 2, min_electrons=1e4),
                         measurable_stars(sess, 0, min_electrons=1e4))
    assert len(sel) >= 5
    img_c, img_0 = calibrated_electrons(sess, 2), calibrated_electrons(sess, 0)
    ratios = []
    for k in sel:
        (xc, yc), = cloudy.transform_obj.inverse().apply([[stars["x"][k], stars["y"][k]]])
        (x0, y0), = clear.transform_obj.inverse().apply([[stars["x"][k], stars["y"][k]]])
        ratios.append(aperture_flux(img_c, xc, yc) / aperture_flux(img_0, x0, y0))
    assert np.median(ratios) == pytest.approx(cloudy.transparency / clear.transparency,
                                              rel=0.03)
    # and the absolute flux of the clear frame matches the catalogue
    fl = [aperture_flux(img_0, *clear.transform_obj.inverse().apply(
        [[stars["x"][k], stars["y"][k]]])[0]) for k in sel]
    want = stars["flux"][sel] * clear.exposure * clear.transparency
    assert np.median(np.array(fl) / want) == pytest.approx(0.995, abs=0.01)


def test_trailed_frame_has_elongated_stars(events_session) -> None:
    sess = events_session
    lt = sess.truth.lights[3]
    assert lt.trailed and lt.bad and lt.bad_reason == "trailed"
    assert lt.roundness < 0.6 and 8.0 <= lt.trail_length <= 14.0
    assert sess.truth.lights[0].roundness > 0.9
    stars = read_truth_stars(sess.path)
    img = calibrated_electrons(sess, 3)
    measured = []
    for k in measurable_stars(sess, 3)[:10]:
        (x, y), = lt.transform_obj.inverse().apply([[stars["x"][k], stars["y"][k]]])
        ix, iy = int(round(x)), int(round(y))
        bg = _local_background(img, ix, iy, 11, 15, mosaic=False)
        p = (img[iy - 15:iy + 16, ix - 15:ix + 16] - bg)[5:26, 5:26]
        yy, xx = np.mgrid[-10:11, -10:11]
        wgt = np.clip(p, 0, None) * np.exp(-(xx ** 2 + yy ** 2) / (2 * 6.0 ** 2))
        m = wgt.sum()
        mx, my = (wgt * xx).sum() / m, (wgt * yy).sum() / m
        cov = np.cov(np.vstack([(xx - mx).ravel(), (yy - my).ravel()]), aweights=wgt.ravel())
        lo, hi = np.linalg.eigvalsh(cov)
        measured.append(math.sqrt(lo / hi))
    assert len(measured) >= 3 and np.median(measured) < 0.7


def test_saturated_stars_clip_and_are_flagged(simulated_session) -> None:
    sess = simulated_session(bayer=None, star_flux=(2000.0, 3e5), star_density=600.0,
                             galaxy=False)
    stars = read_truth_stars(sess.path)
    assert sess.truth.n_saturated_stars == int(stars["saturated"].sum()) > 0
    lt = sess.truth.lights[0]
    raw = sess.read(lt.file)
    pos = lt.transform_obj.inverse().apply(np.c_[stars["x"], stars["y"]])
    inside = (pos[:, 0] > 2) & (pos[:, 0] < 253) & (pos[:, 1] > 2) & (pos[:, 1] < 253)
    for k in np.flatnonzero(stars["saturated"] & inside):
        ix, iy = int(round(pos[k, 0])), int(round(pos[k, 1]))
        peak = raw[iy - 1:iy + 2, ix - 1:ix + 2].max()
        assert peak >= sess.truth.sensor.saturation_adu - 5 * sess.spec.read_noise
    assert raw.max() == 65535


# ----------------------------------------------------------------------------------------------
# layouts, filters and exposures
# ----------------------------------------------------------------------------------------------


def test_filters_mixed_exposures_and_flat_layout(tmp_path: Path) -> None:
    spec = SessionSpec(width=64, height=64, bayer=None, filters=("L", "R"), n_lights=2,
                       n_flats=1, n_darks=1, n_biases=1, n_darkflats=1,
                       light_exposures=(30.0, 60.0, 120.0, 0.5), dark_exposure=90.0)
    truth = simulate_session(spec, tmp_path / "nested")
    assert [lt.file for lt in truth.lights] == [
        "lights/L/Light_0001_30s.fits", "lights/L/Light_0002_60s.fits",
        "lights/R/Light_0001_120s.fits", "lights/R/Light_0002_0.5s.fits"]
    assert [c.file for c in truth.calibration if c.kind == "flat"] == [
        "flats/L/Flat_0001_2s.fits", "flats/R/Flat_0001_2s.fits"]
    assert truth.frames("dark")[0].file == "darks/Dark_0001_90s.fits"
    assert truth.frames("darkflat")[0].file == "darkflats/DarkFlat_0001_2s.fits"
    meta = read_fits_meta(tmp_path / "nested" / truth.lights[2].file)
    assert meta.filter == "R" and meta.exposure == 120.0 and meta.bayer is None
    assert "BAYERPAT" not in meta.header
    assert read_fits_meta(tmp_path / "nested/darkflats/DarkFlat_0001_2s.fits").kind == "darkflat"
    stars = read_truth_stars(tmp_path / "nested")
    assert_allclose(stars["flux_L"], stars["flux"])
    assert_allclose(stars["flux_R"], stars["flux"] * stars["color_r"] / 3)
    assert (tmp_path / "nested/truth_sky_R.fits").is_file()
    flat = simulate_session(spec.replace(layout="flat"), tmp_path / "flat")
    names = sorted(p.name for p in (tmp_path / "flat").glob("*_*.fits")
                   if not p.name.startswith("truth"))
    assert names == sorted(["Light_L_0001_30s.fits", "Light_L_0002_60s.fits",
                            "Light_R_0001_120s.fits", "Light_R_0002_0.5s.fits",
                            "Flat_L_0001_2s.fits", "Flat_R_0001_2s.fits",
                            "Dark_0001_90s.fits", "Bias_0001_0s.fits",
                            "DarkFlat_0001_2s.fits"])
    assert flat.lights[1].transform == truth.lights[1].transform


def test_model_functions_accept_a_spec_and_load_errors(tmp_path: Path) -> None:
    spec = SessionSpec(width=64, height=48, bayer=None, n_lights=2)
    model = build_model(spec)
    assert model.render_noiseless_light(1).shape == (48, 64)
    assert model.truth_sky().shape == (48, 64)
    with pytest.raises(IndexError):
        model.render_noiseless_light(2)
    with pytest.raises(ConfigError, match="filter"):
        model.truth_sky("Ha")
    with pytest.raises(InputError, match="truth"):
        Truth.load(tmp_path)
