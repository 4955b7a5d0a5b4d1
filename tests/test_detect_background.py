"""Background mesh: level and noise against known skies, masks, and sep as a peer."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from deepsky.detect import Background, estimate_background
from deepsky.errors import ConfigError, InputError
from test_detect_synthetic import random_field, render_stars


def test_flat_sky_level_and_noise():
    rng = np.random.default_rng(0)
    img = (1000.0 + 10.0 * rng.standard_normal((512, 512))).astype(np.float32)
    bkg = estimate_background(img)
    assert isinstance(bkg, Background)
    assert abs(bkg.global_level - 1000.0) < 0.3
    assert abs(bkg.global_rms - 10.0) < 0.2
    assert bkg.level().shape == img.shape and bkg.level().dtype == np.float32
    assert_allclose(bkg.rms(), 10.0, atol=0.6)


def test_gradient_and_stars_follow_the_sky_not_the_stars():
    rng = np.random.default_rng(1)
    shape = (512, 768)
    xy, flux = random_field(rng, 400, shape, flux=(3.0, 5.5))
    img = render_stars(shape, xy, flux, 3.0, beta=3.0, sky=500.0, noise=8.0, rng=rng,
                       gradient=(0.1, -0.05))
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    sky = 500.0 + 0.1 * (xx - shape[1] / 2) - 0.05 * (yy - shape[0] / 2)
    bkg = estimate_background(img, box=64)
    err = np.abs(bkg.level() - sky)
    # noise 8 ADU; the stars' faint wings do add ~0.5 ADU of real light (sep: 0.6 / 2.2)
    assert np.median(err) < 0.8 and err.max() < 3.5
    assert abs(bkg.global_rms - 8.0) < 1.0  # the gradient within a box adds a little
    # point evaluation agrees with the map
    px, py = np.array([10.3, 400.0, 700.9]), np.array([5.0, 250.2, 500.0])
    assert_allclose(bkg.level_at(px, py),
                    [bkg.level()[int(round(y)), int(round(x))] for x, y in zip(px, py)],
                    atol=0.2)


def test_agrees_with_sep():
    sep = pytest.importorskip("sep")
    rng = np.random.default_rng(2)
    shape = (384, 384)
    xy, flux = random_field(rng, 300, shape)
    img = render_stars(shape, xy, flux, 2.5, sky=300.0, noise=6.0, rng=rng)
    ours = estimate_background(img, box=64, filter_size=3)
    theirs = sep.Background(img, bw=64, bh=64, fw=3, fh=3)
    assert np.median(np.abs(ours.level() - theirs.back())) < 0.1 * theirs.globalrms
    assert abs(ours.global_rms - theirs.globalrms) < 0.03 * theirs.globalrms


def test_mask_and_nan_are_ignored():
    rng = np.random.default_rng(3)
    img = (200.0 + 5.0 * rng.standard_normal((256, 256))).astype(np.float32)
    img[:, :40] = 60000.0  # a saturated band, masked
    img[100:110, 100:110] = np.nan
    mask = np.zeros(img.shape, bool)
    mask[:, :40] = True
    bkg = estimate_background(img, mask=mask)
    assert_allclose(bkg.level(), 200.0, atol=1.5)
    assert np.isfinite(bkg.level()).all()


def test_input_errors_name_the_problem():
    with pytest.raises(InputError, match="2-D"):
        estimate_background(np.zeros((3, 64, 64)))
    with pytest.raises(ConfigError, match="box"):
        estimate_background(np.zeros((64, 64)), box=0)
    with pytest.raises(InputError, match="mask has shape"):
        estimate_background(np.zeros((64, 64)), mask=np.zeros((32, 32), bool))
