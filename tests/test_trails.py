"""Trail search on synthetic residuals with known lines, blobs and noise."""

import numpy as np
import pytest

from deepsky.integrate.trails import Trail, object_mask, trail_mask, trails_from_residual
from deepsky.types import Transform


def _residual(seed=1, n=384, blobs=True, galaxy=3.0):
    rng = np.random.default_rng(seed)
    res = rng.normal(0, 1, (n, n)).astype(np.float32)
    yy, xx = np.mgrid[0:n, 0:n]
    stars = np.zeros((n, n), np.float32)  # the provisional stack's stars
    if blobs:  # star residuals, positive and negative, as seeing differences leave them
        for _ in range(150):
            x, y = rng.uniform(0, n, 2)
            g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.2 ** 2))
            res += rng.uniform(-30, 60) * g
            stars += rng.uniform(50, 500) * g
    res += galaxy * np.exp(-np.hypot((xx - 190) / 30, (yy - 220) / 15))
    mask = object_mask(stars + rng.normal(0, 1, (n, n)))
    return res, yy, xx, mask


def _add_segment(res, yy, xx, seg, amp, sigma=0.7):
    t = Trail(*seg, width=0, significance=0)
    d = t.distance(xx.astype(float), yy.astype(float))
    res += amp * np.exp(-d ** 2 / (2 * sigma ** 2))


def test_noise_stars_and_galaxy_give_no_trail():
    for seed in range(3):
        res, _, _, mask = _residual(seed=seed, galaxy=8.0)
        assert trails_from_residual(res, factor=4, mask=mask) == []


@pytest.mark.parametrize("amp", [1.0, 3.0, 30.0])
def test_faint_to_bright_segment_found_with_its_extent(amp):
    res, yy, xx, mask = _residual(seed=5)
    seg = (30.0, 40.0, 300.0, 350.0)  # ends inside the frame
    _add_segment(res, yy, xx, seg, amp)
    found = trails_from_residual(res, factor=4, mask=mask)
    assert len(found) == 1
    t = found[0]
    # Back on the binned grid (factor 4, centre offset 1.5).
    ends = np.array([[t.x0, t.y0], [t.x1, t.y1]])
    ends = (ends - 1.5) / 4
    truth = np.array([[30, 40], [300, 350]], float)
    if np.linalg.norm(ends[0] - truth[0]) > np.linalg.norm(ends[0] - truth[1]):
        ends = ends[::-1]
    length = np.linalg.norm(truth[1] - truth[0])
    # The ends of the faintest trail (1 sigma per binned pixel) fade into the noise; what is
    # left unmasked there adds well under the stack's noise.
    tol = 0.15 if amp < 2 else 0.1
    assert np.max(np.linalg.norm(ends - truth, axis=1)) < tol * length
    assert 4 <= t.width <= 16  # full-res px (the injected FWHM is 1.65 binned px = 6.6)


def test_two_trails_and_mask():
    res, yy, xx, mask = _residual(seed=7)
    _add_segment(res, yy, xx, (0.0, 100.0, 383.0, 140.0), 2.0)
    _add_segment(res, yy, xx, (200.0, 0.0, 120.0, 383.0), 2.0)
    found = trails_from_residual(res, factor=4, mask=mask)
    assert len(found) == 2
    m = trail_mask(found, (0, 0), (1536, 1536), margin=3)
    # The mask covers the trails (checked at a point on each) and little else.
    assert m[int(4 * 120 + 1.5), int(4 * 191.5 + 1.5)]
    assert m.mean() < 0.03


def test_transform_and_mask_window():
    t = Trail(10, 10, 110, 10, 4.0, 9.0)
    moved = t.transformed(Transform.translation(5, 7))
    assert (moved.x0, moved.y0, moved.x1, moved.y1) == (15, 17, 115, 17)
    win = trail_mask([t], (50, 0), (20, 20), margin=1)
    assert win[10, 5] and win[13, 5] and not win[14, 5]


def test_bin_image_is_the_block_mean():
    """Binned images (trail search, phase registration) are the means of whole factor x
    factor blocks, a partial last block dropped, NaN-aware where pixels are missing."""
    from deepsky.integrate.trails import bin_image

    rng = np.random.default_rng(3)
    img = rng.normal(200, 15, (203, 150)).astype(np.float32)
    for f in (1, 2, 4, 5):
        h, w = 203 // f * f, 150 // f * f
        want = img[:h, :w].astype(np.float64).reshape(h // f, f, w // f, f).mean(axis=(1, 3))
        got = bin_image(img, f)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6)
    img[10, 12] = np.nan
    got = bin_image(img, 4)
    block = np.delete(img[8:12, 12:16].ravel(), 2 * 4 + 0)
    assert got[2, 3] == pytest.approx(block.astype(np.float64).mean(), rel=1e-6)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("kind", ["affine", "homography"])
def test_trail_search_warp_is_the_nearest_neighbour_warp(kind):
    """The trail search's OpenCV resampling gives warp_image's nearest-neighbour values
    (NaN outside the frame and where the frame has NaN)."""
    from deepsky.pipeline.stacking import _warp_nearest
    from deepsky.register.warp import warp_image

    rng = np.random.default_rng(4)
    img = rng.normal(100, 5, (120, 150)).astype(np.float32)
    img[40, 60] = np.nan
    m = np.array([[0.9993, 0.0371, 4.3], [-0.0371, 0.9993, -6.2], [0.0, 0.0, 1.0]])
    if kind == "homography":
        m[2, :2] = (2e-5, -1e-5)
    t = Transform(m)
    want, _ = warp_image(img, t, (110, 160), method="nearest", clamp=False, parallel=False)
    got = _warp_nearest(img, t, (110, 160))
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.mean() > 0.999 and np.isnan(want).sum() > 1000
    assert np.isnan(got[~np.isnan(want)]).sum() <= 1


def test_compiled_same_convolution_is_numpys():
    """The trail extent's smoothing (compiled) is np.convolve(..., "same"), also where the
    kernel is the longer of the two (numpy then convolves the other way round)."""
    from deepsky.integrate.trails import _convolve_same

    rng = np.random.default_rng(4)
    for n in range(1, 25):
        for m in (1, 2, 5, 10, 31):
            a, v = rng.normal(size=n), rng.normal(size=m)
            np.testing.assert_allclose(_convolve_same(a, v), np.convolve(a, v, "same"),
                                       rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("theta_deg, steep", [(20.0, False), (71.0, True), (90.0, True)])
def test_refined_line_matches_the_drawn_one(theta_deg, steep):
    """The compiled candidate refinement, on a drawn segment (shallow and steep, so both of
    the strip's scan directions): its ends within 3 px, its width about the drawn one."""
    from deepsky.integrate.trails import _refine

    n = 300
    rng = np.random.default_rng(7)
    z = rng.normal(0, 1, (n, n)).astype(np.float32)
    yy, xx = np.mgrid[0:n, 0:n]
    th = np.radians(theta_deg)
    ux, uy = np.cos(th), np.sin(th)
    x0, y0 = 150 - 100 * ux, 150 - 100 * uy
    seg = (x0, y0, 150 + 100 * ux, 150 + 100 * uy)
    _add_segment(z, yy, xx, seg, 6.0, sigma=1.0)
    normal = th + np.pi / 2  # the Hough parametrisation: x cos + y sin = rho
    rho = 150 * np.cos(normal) + 150 * np.sin(normal)
    assert (abs(np.sin(normal)) < abs(np.cos(normal))) == steep
    got = _refine(z, float(normal), float(rho), min_length=60.0)
    assert got is not None
    gx0, gy0, gx1, gy1, width, halo = got
    ends = sorted([(gx0, gy0), (gx1, gy1)])
    want = sorted([seg[:2], seg[2:]])
    for (a, b), (c, d) in zip(ends, want):
        assert np.hypot(a - c, b - d) < 0.06 * 200 + 3  # the 5 % extension each side
    assert 1.5 < width < 4.0 and halo >= width / 2
    assert _refine(z, float(normal), float(rho) + 40.0, min_length=60.0) is None  # beside it


@pytest.mark.parametrize("seed", range(4))
def test_hough_lines_are_opencvs(seed):
    """The compiled Hough transform gives OpenCV's ``HoughLines`` lines, values and order,
    on noise maps with lines of several angles and lengths, NaN holes, thresholds from a
    few votes to many, and other angle steps and shapes."""
    import math

    import cv2

    from deepsky.integrate.trails import hough_lines

    rng = np.random.default_rng(seed)
    h, w = [(512, 512), (300, 471), (97, 260), (256, 128)][seed]
    z = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(3):
        x0, x1 = rng.uniform(0, w, 2)
        y0, y1 = rng.uniform(0, h, 2)
        _add_segment(z, yy, xx, (x0, y0, x1, y1), rng.uniform(1.0, 4.0))
    z[rng.integers(0, h, 50), rng.integers(0, w, 50)] = np.nan
    for cut, step, votes in ((1.5, 0.25, 39), (1.5, 0.25, 10), (2.5, 0.5, 20),
                             (-0.5, 1.0, 80), (1.5, 0.1, 60)):
        binary = (np.nan_to_num(z, nan=0.0) > cut).astype(np.uint8)
        ref = cv2.HoughLines(binary, 1, math.radians(step), votes)
        got = hough_lines(z, cut, step, votes, 20)
        if ref is None:
            assert got is None
            continue
        np.testing.assert_array_equal(got, ref[:20, 0, :].astype(np.float64))
    # too few points: no lines (and no votes counted)
    assert hough_lines(z, 1.5, 0.25, 10, 20, min_points=h * w) is None
    # offsets beyond the float32 rounding's range: refused, not miscounted
    with pytest.raises(ValueError, match="too large"):
        hough_lines(np.zeros((1, 1 << 22), np.float32), 1.5, 0.25, 10, 20)
