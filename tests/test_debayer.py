"""Demosaicing against a known colour scene: PSNR and colour error of each method."""

import numpy as np
import pytest

from deepsky.calibrate.debayer import check_pattern, debayer
from deepsky.errors import CalibrationError
from deepsky.types import BAYER_PATTERNS, bayer_channel_masks


def _scene(h=256, w=256, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((3, h, w), np.float32) + np.array([300, 350, 250], np.float32)[:, None, None]
    for _ in range(120):
        x, y = rng.uniform(8, w - 8, 2)
        s = rng.uniform(1.0, 2.0)
        col = rng.uniform(0.5, 1.5, 3).astype(np.float32)
        g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s)) * rng.uniform(500, 20000)
        img += col[:, None, None] * g
    gal = np.exp(-np.hypot((xx - w / 2) / 40, (yy - h / 2) / 18)) * 3000
    img += np.array([1.2, 1.0, 0.8], np.float32)[:, None, None] * gal
    return img


def _psnr(out, truth, border=8):
    err = (out - truth)[:, border:-border, border:-border]
    return 10 * np.log10(truth.max() ** 2 / np.mean(err ** 2))


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_rcd_beats_bilinear(pattern):
    truth = _scene()
    mosaic = (truth * bayer_channel_masks(pattern, truth.shape[1:])).sum(axis=0)
    bil = debayer(mosaic, pattern, method="bilinear")
    rcd = debayer(mosaic, pattern, method="rcd")
    p_bil, p_rcd = _psnr(bil, truth), _psnr(rcd, truth)
    assert p_bil > 38
    assert p_rcd > p_bil + 3, (p_bil, p_rcd)
    # Colour error on the galaxy (smooth, known colour ratios): below 1 %.
    core = (slice(None), slice(118, 138), slice(118, 138))
    ratio = rcd[core].mean(axis=(1, 2)) / truth[core].mean(axis=(1, 2))
    assert np.all(np.abs(ratio - 1) < 0.01)
    # Measured samples are kept exactly.
    masks = bayer_channel_masks(pattern, mosaic.shape)
    for c in range(3):
        np.testing.assert_array_equal(rcd[c][masks[c]], mosaic[masks[c]])


def test_negative_values_survive():
    rng = np.random.default_rng(2)
    mosaic = rng.normal(0.0, 5.0, (64, 64)).astype(np.float32)
    out = debayer(mosaic, "RGGB", method="rcd")
    assert out.min() < 0 and abs(out.mean()) < 1.0


def test_superpixel():
    m = np.zeros((4, 6), np.float32)
    m[0::2, 0::2] = 10  # R
    m[0::2, 1::2] = 20  # G
    m[1::2, 0::2] = 30  # G
    m[1::2, 1::2] = 40  # B
    out = debayer(m, "RGGB", method="superpixel")
    assert out.shape == (3, 2, 3)
    np.testing.assert_allclose(out[:, 0, 0], [10, 25, 40])


def test_refusals():
    with pytest.raises(CalibrationError, match="X-Trans"):
        check_pattern(None, cfa="xtrans", where="a.raf: ")
    with pytest.raises(CalibrationError, match="no valid Bayer pattern"):
        check_pattern("RGBG")
