"""Defect detection and replacement on synthetic frames with known defects."""

import warnings

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


def _plain_apply(dm, data, y0=0, x0=0):
    """The replacement rule in plain numpy: median of the finite inner-ring neighbours inside
    the region, of the whole ring when fewer than 2 of those; untouched when none."""
    out = data.copy()
    planes = out if out.ndim == 3 else out[None]
    src = data if data.ndim == 3 else data[None]
    h, w = planes.shape[1:]
    for i in range(dm.count):
        y, x = dm.ys[i] - y0, dm.xs[i] - x0
        if not (0 <= y < h and 0 <= x < w):
            continue
        for p, plane in enumerate(planes):
            def ring(k):
                v = [src[p, dm.ny[i, j] - y0, dm.nx[i, j] - x0] for j in range(k)
                     if dm.ny[i, j] >= 0 and 0 <= dm.ny[i, j] - y0 < h
                     and 0 <= dm.nx[i, j] - x0 < w]
                return [a for a in v if np.isfinite(a)]
            v = ring(4)
            if len(v) < 2:
                v = ring(8)
            if v:
                plane[y, x] = np.median(np.array(v, np.float32))
    return out


@pytest.mark.parametrize("bayer", [None, "RGGB", "GBRG"])
def test_defect_replacement_equals_the_plain_rule(bayer):
    """Clustered defects (neighbours that are defects themselves), missing (NaN) neighbours,
    frame and band edges, colour images: the same values as the rule written out pixel by
    pixel."""
    rng = np.random.default_rng(5)
    h, w = 90, 70
    mask = rng.random((h, w)) < 0.08
    mask[40:44, 30:34] = True  # a cluster: inner neighbours missing
    mask[0, :5] = mask[:, -1] = True  # frame edges
    dm = cosmetic.DefectMap(mask, bayer)
    img = rng.normal(100, 5, (h, w)).astype(np.float32)
    img[rng.random((h, w)) < 0.05] = np.nan
    np.testing.assert_array_equal(dm.apply(img.copy()), _plain_apply(dm, img))
    band = img[17:61, 9:55].copy()
    np.testing.assert_array_equal(dm.apply(band.copy(), y0=17, x0=9),
                                  _plain_apply(dm, band, 17, 9))
    rgb = rng.normal(50, 2, (3, h, w)).astype(np.float32)
    np.testing.assert_array_equal(dm.apply(rgb.copy()), _plain_apply(dm, rgb))


@pytest.mark.parametrize("shape", [(600, 517), (517, 600), (1, 6), (6, 1), (2, 2)])
def test_line_medians_are_numpys(shape):
    """The bad-line search's per-line medians (one partition, the pair's lower half from
    the maximum below it) are np.median's, bit for bit and of its dtype: odd and even line
    lengths, ties, float32 and float64, blocks of lines, and NaN (nanmedian's)."""
    from deepsky.calibrate.cosmetic import _line_medians

    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    for dtype in (np.float32, np.float64):
        a = rng.normal(100, 5, shape).astype(dtype)
        a[::3, ::2] = np.round(a[::3, ::2])
        for axis in (0, 1):
            got = _line_medians(a, axis, chunk=64)
            want = np.median(a, axis=axis)
            assert got.dtype == want.dtype and np.array_equal(got, want)
        a[0, -1] = np.nan
        for axis in (0, 1):
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                got = _line_medians(a, axis, chunk=64)
                want = np.nanmedian(a, axis=axis)
            assert np.array_equal(got, want, equal_nan=True)
