"""Star detection: centroids against known positions, shapes, rejection of junk, CFA."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.spatial import cKDTree

from deepsky.detect import cfa_luminance, detect_frame, find_stars
from deepsky.errors import ConfigError, InputError
from deepsky.types import StarList, bayer_channel_masks
from test_detect_synthetic import random_field, render_stars


def _pair(stars: StarList, xy: np.ndarray, tol: float = 1.0):
    """Indices (found, truth) of detections within ``tol`` of a true star."""
    d, j = cKDTree(xy).query(stars.xy)
    ok = d < tol
    return np.flatnonzero(ok), j[ok]


@pytest.mark.parametrize("fwhm, beta", [(1.6, None), (2.5, 3.0), (4.0, 3.0)])
def test_centroids_fwhm_and_flux(fwhm, beta):
    rng = np.random.default_rng(10)
    shape = (512, 512)
    xy, flux = random_field(rng, 150, shape, margin=20, flux=(3.3, 5.0))
    img = render_stars(shape, xy, flux, fwhm, beta=beta, sky=200.0, rng=rng, poisson=True)
    stars = find_stars(img)
    i, j = _pair(stars, xy)
    assert len(i) >= 0.9 * len(xy)
    assert len(stars) - len(i) <= 2  # no junk
    bright = flux[j] > 10 ** 4.3
    err = np.hypot(*(stars.xy[i] - xy[j]).T)
    assert np.median(err[bright]) < 0.02
    assert np.median(err) < 0.06
    assert_allclose(np.nanmedian(stars.fwhm), fwhm, rtol=0.12 if beta else 0.05)
    assert np.nanmedian(stars.roundness) > 0.9
    if beta is None:  # a Gaussian fit measures a Gaussian's flux exactly
        assert_allclose(np.median(stars.flux[i] / flux[j]), 1.0, atol=0.02)
    # brightest first
    assert np.all(np.diff(stars.flux) <= 0)
    assert np.all(np.isfinite(stars.hfr)) and np.all(stars.snr >= 5.0)


def test_hot_pixels_and_cosmic_rays_are_rejected():
    rng = np.random.default_rng(11)
    shape = (256, 256)
    xy, flux = random_field(rng, 40, shape, margin=20, flux=(3.5, 4.5))
    img = render_stars(shape, xy, flux, 2.5, sky=300.0, noise=10.0, rng=rng)
    rng = np.random.default_rng(99)
    junk = rng.uniform(10, 246, (60, 2)).astype(int)
    for k, (x, y) in enumerate(junk):
        if k < 40:
            img[y, x] += rng.uniform(300, 20000)  # hot pixel
        else:  # cosmic-ray track of 3 pixels
            img[y, x:x + 3] += rng.uniform(500, 5000)
    clean = find_stars(render_stars(shape, xy, flux, 2.5, sky=300.0, noise=10.0,
                                    rng=np.random.default_rng(11)))
    stars = find_stars(img)
    i, _ = _pair(stars, xy)
    assert len(i) >= len(clean) - 3  # a junk pixel on or next to a star may cost it
    assert len(stars) - len(i) == 0  # not one hot pixel or cosmic ray kept


def test_close_pair_is_deblended():
    rng = np.random.default_rng(12)
    xy = np.array([[60.3, 60.6], [65.1, 61.4], [120.0, 110.0]])  # 4.9 px apart, FWHM 2.5
    img = render_stars((180, 180), xy, [2e5, 8e4, 1e5], 2.5, sky=100.0, noise=3.0, rng=rng)
    stars = find_stars(img)
    i, j = _pair(stars, xy, tol=0.5)
    assert sorted(j.tolist()) == [0, 1, 2]
    assert np.max(np.hypot(*(stars.xy[i] - xy[j]).T)) < 0.03


def test_saturated_stars_flagged_and_centred():
    rng = np.random.default_rng(13)
    xy = np.array([[50.4, 40.7], [100.2, 90.9]])
    img = render_stars((150, 150), xy, [3e6, 2e4], 3.0, sky=100.0, noise=3.0, rng=rng)
    img = np.minimum(img, 30000.0)
    stars = find_stars(img, saturation=30000.0)
    i, j = _pair(stars, xy)
    sat = dict(zip(j.tolist(), stars.saturated[i].tolist()))
    assert sat == {0: True, 1: False}
    k = i[j == 0][0]
    assert np.hypot(stars.x[k] - 50.4, stars.y[k] - 40.7) < 0.05


def test_extended_object_rejected():
    rng = np.random.default_rng(14)
    xy, flux = random_field(rng, 30, (256, 256), margin=20, flux=(3.5, 4.5))
    img = render_stars((256, 256), xy, flux, 2.5, sky=100.0, noise=3.0, rng=rng)
    yy, xx = np.mgrid[0:256, 0:256]
    img += (3000.0 * np.exp(-((xx - 128.3) ** 2 + (yy - 131.1) ** 2) / (2 * 9.0 ** 2))
            ).astype(np.float32)  # a galaxy core, FWHM 21 px
    stars = find_stars(img)
    assert np.min(np.hypot(stars.x - 128.3, stars.y - 131.1)) > 5.0


def test_empty_and_flat_images_give_empty_starlists():
    rng = np.random.default_rng(15)
    noise = (100 + 5 * rng.standard_normal((128, 128))).astype(np.float32)
    assert len(find_stars(noise)) == 0
    assert len(find_stars(np.zeros((64, 64), np.float32))) == 0
    assert isinstance(find_stars(noise), StarList)


def test_mask_excludes_a_region():
    rng = np.random.default_rng(16)
    xy = np.array([[40.0, 40.0], [100.0, 100.0]])
    img = render_stars((140, 140), xy, [5e4, 5e4], 2.5, sky=100.0, noise=3.0, rng=rng)
    mask = np.zeros(img.shape, bool)
    mask[80:120, 80:120] = True
    stars = find_stars(img, mask=mask)
    assert len(stars) == 1 and abs(stars.x[0] - 40.0) < 0.05


def test_elongated_stars_roundness_and_angle():
    rng = np.random.default_rng(17)
    xy, flux = random_field(rng, 40, (256, 256), margin=20, flux=(4.0, 4.8))
    img = render_stars((256, 256), xy, flux, 3.0, sky=100.0, noise=3.0, rng=rng,
                       ellipticity=0.4, angle=math.radians(30))
    stars = find_stars(img)
    assert_allclose(np.nanmedian(stars.roundness), 0.6, atol=0.05)
    assert_allclose(np.nanmedian(stars.theta), math.radians(30), atol=0.05)
    assert_allclose(np.nanmedian(stars.eccentricity), math.sqrt(1 - 0.6 ** 2), atol=0.05)


def _mosaic(rng, shape, xy, flux, fwhm, pattern, colours):
    """A Bayer mosaic of stars whose R, G, B fluxes are ``flux * colours[k]``."""
    planes = [render_stars(shape, xy, flux * colours[:, c], fwhm, sky=sky, noise=0)
              for c, sky in enumerate((120.0, 200.0, 90.0))]
    masks = bayer_channel_masks(pattern, shape)
    mosaic = np.zeros(shape, np.float64)
    for c in range(3):
        mosaic[masks[c]] = planes[c][masks[c]]
    return rng.poisson(mosaic).astype(np.float32)


def test_cfa_detection_is_colour_independent():
    rng = np.random.default_rng(18)
    shape = (384, 384)
    xy, flux = random_field(rng, 120, shape, margin=20, flux=(3.5, 5.0))
    colours = rng.choice([[2.2, 0.6, 0.2], [0.4, 0.9, 1.7], [1.0, 1.0, 1.0]], size=len(xy))
    mosaic = _mosaic(rng, shape, xy, flux, 1.8, "GRBG", np.asarray(colours))
    stars, bkg = detect_frame(mosaic, bayer="GRBG")
    i, j = _pair(stars, xy)
    assert len(i) >= 0.9 * len(xy)
    bright = flux[j] > 10 ** 4.3
    err = np.hypot(*(stars.xy[i] - xy[j]).T)
    assert np.median(err[bright]) < 0.03  # a luminance centroid is off by ~0.1 px here
    assert_allclose(np.nanmedian(stars.fwhm), 1.8, rtol=0.1)
    assert bkg.shape == shape


def test_cfa_luminance_is_a_2x2_mean_at_the_window_centre():
    m = np.arange(36, dtype=np.float32).reshape(6, 6)
    lum = cfa_luminance(m)
    assert lum.shape == m.shape
    assert_allclose(lum[2, 3], m[2:4, 3:5].mean())
    assert_allclose(lum[-1, -1], lum[-2, -2])


def test_options_and_inputs_are_validated():
    img = np.zeros((64, 64), np.float32)
    with pytest.raises(ConfigError, match="threshold"):
        find_stars(img, threshold=-1)
    with pytest.raises(ConfigError, match="min_area"):
        find_stars(img, min_area=12)
    with pytest.raises(ConfigError, match="bayer"):
        detect_frame(img, bayer="RGBX")
    with pytest.raises(ConfigError, match="unknown detection option"):
        detect_frame(img, bayer="RGGB", thresold=3)
    with pytest.raises(InputError, match="2-D"):
        find_stars(np.zeros(10))


def test_a_satellite_trail_does_not_hide_the_stars():
    rng = np.random.default_rng(19)
    shape = (384, 384)
    xy, flux = random_field(rng, 40, shape, margin=20, flux=(3.5, 4.5))
    img = render_stars(shape, xy, flux, 3.0, sky=200.0, noise=8.0, rng=rng)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    dist = np.abs((xx - 20) * np.sin(0.3) - (yy - 300) * np.cos(0.3))  # a line at 17 deg
    img += (3000.0 * np.exp(-dist ** 2 / (2 * 1.3 ** 2))).astype(np.float32)
    stars = find_stars(img)
    i, _ = _pair(stars, xy)
    assert len(i) >= 0.85 * len(xy)
    assert_allclose(np.nanmedian(stars.fwhm), 3.0, rtol=0.1)


def test_trailed_frame_keeps_its_elongated_stars():
    rng = np.random.default_rng(20)
    shape = (384, 384)
    xy, flux = random_field(rng, 60, shape, margin=20, flux=(3.6, 4.6))
    # 5 px along the trail, 2 px across (the renderer squeezes the minor axis)
    img = render_stars(shape, xy, flux, 5.0, sky=200.0, noise=8.0, rng=rng,
                       ellipticity=0.6, angle=0.4)
    stars = find_stars(img)
    i, _ = _pair(stars, xy)
    assert len(i) >= 0.85 * len(xy)
    assert_allclose(np.nanmedian(stars.roundness), 0.4, atol=0.05)


def test_fits_rejected_on_shape_are_not_measured():
    """A satellite trail fitted as a Gaussian thousands of pixels long is rejected on its
    shape before the measurements: its wing annulus (3 FWHM of its major axis) once set the
    size of the working buffers -- here (2 x 3e6 px)^2 doubles, far beyond any memory -- and
    was searched over the whole frame."""
    from deepsky.detect import _psf

    img = render_stars((64, 64), np.array([[32.0, 32.0]]), np.array([5000.0]), 3.0,
                       sky=100.0, noise=1.0, rng=np.random.default_rng(3))
    s2 = (3.0 / 2.3548) ** -2
    one = np.ones(2)
    args = (img.astype(np.float64), np.array([32.0, 10.0]), np.array([32.0, 10.0]),
            np.array([100.0, 100.0]), np.zeros(3, np.int64), np.zeros(0, np.int64),
            np.array([300.0, 300.0]), s2 * one, 0.0 * one, np.array([s2, 1e-12]),
            np.array([9.0, 30.0]), 1.5 * 2.3548, 3.0 * 2.3548, np.array([13.0, 3e6]),
            np.array([True, True]))
    sharp, hfr, wing = _psf.measure(*args, np.array([True, False]))
    # and the buffers never exceed the image, whatever an active fit says
    assert_allclose(_psf.measure(*args, np.array([True, True]))[1][0], hfr[0])
    assert np.isnan(sharp[1]) and np.isnan(hfr[1]) and np.isnan(wing[1])
    assert_allclose(hfr[0], 1.5, rtol=0.1)  # a Gaussian's HFR is its FWHM / 2
    assert abs(wing[0]) < 0.05 and 0.0 < sharp[0] < 0.7
