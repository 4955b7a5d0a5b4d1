"""Defect detection and replacement on synthetic frames with known defects."""

import numpy as np
import pytest

from deepsky.calibrate import cosmetic


@pytest.mark.parametrize("bayer", [None, "RGGB"])
def test_hot_pixels_found_and_replaced_from_same_colour(bayer):
    rng = np.random.default_rng(0)
    h, w = 200, 240
    dark = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    ys, xs = rng.integers(5, h - 5, 150), rng.integers(5, w - 5, 150)
    dark[ys, xs] += rng.uniform(30, 300, 150)
    mask = cosmetic.find_hot_pixels(dark, bayer, sigma=5.0)
    assert mask[ys, xs].mean() >= 0.99
    assert (mask.sum() - len(set(zip(ys, xs)))) <= 2  # essentially no good pixel flagged
    # Replace on an image whose CFA colours differ: the result keeps each colour's level.
    img = np.full((h, w), 100.0, np.float32)
    if bayer:
        img[0::2, 0::2] = 300.0  # R
    img[ys, xs] = 60000.0
    fixed = cosmetic.DefectMap(mask, bayer).apply(img.copy())
    expected = np.full((h, w), 100.0, np.float32)
    if bayer:
        expected[0::2, 0::2] = 300.0
    np.testing.assert_allclose(fixed[ys, xs], expected[ys, xs])


def test_band_application_matches_whole_frame():
    rng = np.random.default_rng(1)
    img = rng.normal(100, 3, (64, 64)).astype(np.float32)
    mask = np.zeros_like(img, bool)
    mask[rng.integers(0, 64, 40), rng.integers(0, 64, 40)] = True
    dm = cosmetic.DefectMap(mask, "GRBG")
    whole = dm.apply(img.copy())
    band = dm.apply(img[20:40].copy(), y0=20)
    # Away from the band edges (2 rows) the band result is exact.
    np.testing.assert_allclose(band[2:-2], whole[22:38])


def test_bad_column_and_spikes():
    rng = np.random.default_rng(2)
    dark = rng.normal(0, 1, (300, 200)).astype(np.float32)
    dark[:, 77] += 4.0  # a warm column: small per pixel, obvious as a column
    mask = cosmetic.find_bad_lines(dark, None, sigma=5.0)
    assert mask[:, 77].all() and mask.sum() == 300
    clean = rng.normal(0, 1, (300, 200)).astype(np.float32)
    assert cosmetic.find_bad_lines(clean, None, sigma=5.0).sum() == 0
    # A hot pixel spikes; a star does not.
    light = rng.normal(100, 2, (100, 100)).astype(np.float32)
    yy, xx = np.mgrid[0:100, 0:100]
    light += 5000 * np.exp(-((xx - 50.3) ** 2 + (yy - 40.6) ** 2) / (2 * 0.9 ** 2))
    light[70, 20] += 3000
    spikes = cosmetic.find_spikes(light, None)
    assert spikes[70, 20] and not spikes[35:46, 45:56].any()
