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


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_rcd_threads_windows_border_and_nan(pattern):
    """What the integration relies on: the same RCD for any number of threads; a window of
    the mosaic (its CFA phase kept, the whole mosaic's value range given) the whole
    mosaic's result away from the window's edges; the 4-pixel border the bilinear estimate
    (through the scaling's float32 round trip); a NaN pixel NaN in every channel, and no
    NaN beyond the pixels its estimates reach."""
    truth = _scene(200, 232, seed=3)
    mosaic = (truth * bayer_channel_masks(pattern, truth.shape[1:])).sum(axis=0)
    mosaic = mosaic.astype(np.float32)
    vr = (float(mosaic.min()), float(mosaic.max()))
    one = debayer(mosaic, pattern, method="rcd", workers=1)
    for k in (2, 3, 5):
        np.testing.assert_array_equal(debayer(mosaic, pattern, method="rcd", workers=k), one)
    win = debayer(mosaic[40:150, 62:190], pattern, method="rcd", value_range=vr, workers=1)
    np.testing.assert_array_equal(win[:, 16:-16, 16:-16], one[:, 56:134, 78:174])
    bil = debayer(mosaic, pattern, method="bilinear")
    border = np.ones(mosaic.shape, bool)
    border[4:-4, 4:-4] = False
    np.testing.assert_allclose(one[:, border], bil[:, border], rtol=1e-5, atol=1e-3)
    holed = mosaic.copy()
    holed[100, 117] = np.nan
    out = debayer(holed, pattern, method="rcd", value_range=vr)
    assert np.isnan(out[:, 100, 117]).all()
    far = np.ones(mosaic.shape, bool)
    far[100 - 12:100 + 13, 117 - 12:117 + 13] = False
    np.testing.assert_array_equal(out[:, far], one[:, far])


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
