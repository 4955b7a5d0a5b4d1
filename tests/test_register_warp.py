"""Warping: against analytically rendered frames, no ringing, footprints, tiles, colour."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.spatial import cKDTree

from deepsky.detect import find_stars
from deepsky.errors import ConfigError
from deepsky.register import source_bounds, warp_image, warp_window
from deepsky.types import Transform
from test_detect_synthetic import random_field, render_stars

SHAPE = (256, 256)


def _field(seed=0, n=40, fwhm=3.0):
    rng = np.random.default_rng(seed)
    xy, flux = random_field(rng, n, SHAPE, margin=-40, flux=(4.0, 5.0))
    return xy, flux, fwhm


def _aperture_flux(img, xy, r=9.0, sky=100.0):
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    return np.array([np.sum((img - sky)[(xx - x) ** 2 + (yy - y) ** 2 <= r * r]) for x, y in xy])


@pytest.mark.parametrize("transform", [
    Transform.translation(7.37, -4.81),
    Transform.rotation_about(3.3, 127.5, 127.5) @ Transform.translation(-5.2, 2.6),
])
def test_warp_matches_an_analytic_render(transform):
    ref_xy, flux, fwhm = _field()
    frame = render_stars(SHAPE, transform.inverse().apply(ref_xy), flux, fwhm, sky=100.0)
    truth = render_stars(SHAPE, ref_xy, flux, fwhm, sky=100.0)
    warped, foot = warp_image(frame, transform, SHAPE)
    inner = np.all((ref_xy > 20) & (ref_xy < SHAPE[0] - 20), axis=1)  # full footprint
    # isolated stars only, so that apertures hold one star
    d, _ = cKDTree(ref_xy).query(ref_xy, k=2)
    use = inner & (d[:, 1] > 20)
    assert use.sum() >= 8
    a = find_stars(np.nan_to_num(warped, nan=100.0), threshold=10)
    b = find_stars(truth, threshold=10)
    da, ia = cKDTree(a.xy).query(ref_xy[use])
    db, ib = cKDTree(b.xy).query(ref_xy[use])
    assert np.all(da < 0.5) and np.all(db < 0.5)
    assert np.max(np.hypot(*(a.xy[ia] - b.xy[ib]).T)) < 0.01
    assert_allclose(np.nanmin(warped), 100.0, atol=1e-3)  # clamped: no dark rings
    fa = _aperture_flux(np.nan_to_num(warped, nan=100.0), ref_xy[use])
    fb = _aperture_flux(truth, ref_xy[use])
    assert np.max(np.abs(fa / fb - 1.0)) < 0.005


def test_clamping_removes_the_dark_ring():
    # a bright, sharp star on a flat sky: Lanczos alone undershoots around it
    xy = np.array([[31.5, 32.3]])
    frame = render_stars((64, 64), xy, 2e6, 1.3, sky=100.0)
    t = Transform.translation(0.43, 0.31)
    ringing, _ = warp_image(frame, t, (64, 64), clamp=False)
    clamped, _ = warp_image(frame, t, (64, 64), clamp=True)
    core = (slice(20, 44), slice(20, 44))
    assert np.nanmin(ringing[core]) < 100.0 - 50.0  # the effect is real
    assert np.nanmin(clamped[core]) >= 100.0 - 1e-3
    bicubic, _ = warp_image(frame, t, (64, 64), method="bicubic", clamp=True)
    assert np.nanmin(bicubic[core]) >= 100.0 - 1e-3


def test_footprint_and_fill_at_the_edges():
    img = np.full((40, 50), 7.0, np.float32)
    out, foot = warp_image(img, Transform.translation(10.5, -3.0), (40, 50))
    # source x = X - 10.5: output columns 0..9 see nothing, column 10 is the source's edge
    assert np.isnan(out[:, :10]).all() and (foot[:, :10] == 0).all()
    assert (foot[:-4, 14:] == 1.0).all()  # full 6x6 support inside
    assert (foot[:-4, 10:13] > 0).all() and (foot[:-4, 10:13] < 1).all()
    assert np.isnan(out[-3:, :]).all() and (foot[-3:, :] == 0).all()
    assert_allclose(out[~np.isnan(out)], 7.0, atol=1e-5)  # a flat image stays flat
    out0, foot0 = warp_image(img, Transform.translation(10.5, -3.0), (40, 50), fill=0.0)
    assert (out0[:, :10] == 0).all()


def test_integer_shift_is_exact_and_methods_agree_on_smooth_data():
    rng = np.random.default_rng(1)
    img = rng.normal(100, 10, (60, 70)).astype(np.float32)
    for method in ("lanczos3", "bicubic", "bilinear", "nearest"):
        out, _ = warp_image(img, Transform.translation(3, -2), (60, 70), method=method)
        assert_allclose(out[0:58, 3:70], img[2:60, 0:67], atol=1e-4)  # out(X, Y) = img(X-3, Y+2)
    yy, xx = np.mgrid[0:60, 0:70]
    smooth = (100 + 5 * np.sin(xx / 9.0) + 3 * np.cos(yy / 7.0)).astype(np.float32)
    t = Transform.rotation_about(2.0, 35, 30) @ Transform.translation(0.3, 0.6)
    sx, sy = t.inverse().apply(np.stack([xx.ravel(), yy.ravel()], 1)).T
    exact = (100 + 5 * np.sin(sx / 9.0) + 3 * np.cos(sy / 7.0)).reshape(60, 70)
    # on a smooth field (amplitude 5): Keys cubic reproduces quadratics; Lanczos-3 is off by
    # up to 0.02 px x the gradient (its first moment is not exact), bilinear by its curvature
    for method, tol in (("lanczos3", 0.03), ("bicubic", 0.01), ("bilinear", 0.03)):
        out, foot = warp_image(smooth, t, (60, 70), method=method)
        inside = foot == 1.0
        assert np.max(np.abs(out[inside] - exact[inside])) < tol, method


def _window_equals_whole(img, t, origin, shape, whole, foot):
    """Warp one window of the reference grid from the source band it needs; assert it is
    the same bits (values and footprint) as that window of the whole warp; return it."""
    y0, y1, x0, x1 = source_bounds(t, origin, shape, img.shape)
    out, f = warp_window(img[y0:y1, x0:x1], (x0, y0), t, origin, shape, src_shape=img.shape)
    X0, Y0 = origin
    assert_array_equal(out, whole[Y0:Y0 + shape[0], X0:X0 + shape[1]])
    assert_array_equal(f, foot[Y0:Y0 + shape[0], X0:X0 + shape[1]])
    return out


def test_window_of_a_band_equals_the_whole_warp():
    rng = np.random.default_rng(2)
    img = rng.normal(100, 10, (300, 280)).astype(np.float32)
    t = Transform(np.array([[0.998, -0.06, 12.3], [0.061, 0.999, -7.7], [1e-6, -2e-6, 1.0]]))
    whole, foot = warp_image(img, t, (310, 290))
    for origin, shape in (((100, 120), (64, 80)), ((0, 0), (50, 50)), ((250, 270), (40, 20))):
        _window_equals_whole(img, t, origin, shape, whole, foot)
    assert source_bounds(Transform.translation(1000, 0), (0, 0), (10, 10), img.shape) == (0, 0, 0, 0)


def test_colour_planes_and_serial_kernel():
    rng = np.random.default_rng(3)
    rgb = rng.normal(100, 10, (3, 50, 60)).astype(np.float32)
    t = Transform.rotation_about(5.0, 30, 25)
    out, foot = warp_image(rgb, t, (50, 60))
    assert out.shape == (3, 50, 60) and foot.shape == (50, 60)
    for c in range(3):
        mono, _ = warp_image(rgb[c], t, (50, 60), parallel=False)
        assert_array_equal(out[c], mono)


def test_options_are_validated():
    with pytest.raises(ConfigError, match="method must be one of"):
        warp_image(np.zeros((8, 8)), Transform.identity(), (8, 8), method="lanczos4")
    with pytest.raises(ConfigError, match="out_shape"):
        warp_image(np.zeros((8, 8)), Transform.identity(), (0, 8))


def _lanczos_weights(t):
    """The normalised Lanczos-3 weights of taps -2..3 at fractional offset t, by the formula."""
    d = np.asarray(t, np.float64)[..., None] - np.arange(-2, 4)
    w = np.sinc(d) * np.sinc(d / 3.0)
    return w / w.sum(axis=-1, keepdims=True)


def _lanczos_reference(img, minv, X, Y):
    """Lanczos-3 at output pixel (X, Y), plainly: the 6 x 6 taps around the source point
    with the formula's weights, clamped below by the 4 x 4 neighbours."""
    den = minv[2, 0] * X + minv[2, 1] * Y + minv[2, 2]
    sx = (minv[0, 0] * X + minv[0, 1] * Y + minv[0, 2]) / den
    sy = (minv[1, 0] * X + minv[1, 1] * Y + minv[1, 2]) / den
    fx, fy = int(np.floor(sx)), int(np.floor(sy))
    wx, wy = _lanczos_weights(sx - fx), _lanczos_weights(sy - fy)
    win = img[fy - 2:fy + 4, fx - 2:fx + 4].astype(np.float64)
    return max(float(wy @ win @ wx), float(win[1:5, 1:5].min()))


def test_lanczos_weights_are_the_formulas():
    """The kernels' polynomial weights (the written-out table is the fit's) against the
    formula, in both precisions, exact at a whole-pixel offset; the same weights from the
    vectorised and the per-pixel code."""
    from deepsky.register.warp import (_LANCZOS3_POLY, _LANCZOS3_POLY_F32, _lanczos3_poly,
                                       _poly_weights, _weights)

    assert np.allclose(_lanczos3_poly(), _LANCZOS3_POLY, rtol=0, atol=1e-12)
    t = np.concatenate([[0.0, 1e-7, 0.5, 1 - 2 ** -24], np.linspace(0, 1, 20001)[1:-1]])
    exact = _lanczos_weights(t)
    t32 = t.astype(np.float32)
    W = np.empty((12, len(t)), np.float32)
    _poly_weights(t32, t32[::-1].copy(), _LANCZOS3_POLY_F32, W, len(t))
    assert np.abs(W[:6].T - _lanczos_weights(t32.astype(np.float64))).max() < 4e-7
    assert np.abs(W[6:].T - _lanczos_weights(t32[::-1].astype(np.float64))).max() < 4e-7
    assert W[:6, 0].tolist() == [0, 0, 1, 0, 0, 0]  # a whole-pixel offset copies the pixel
    w = np.empty(6)
    worst = 0.0
    for i in range(0, len(t), 97):
        assert _weights(t[i], 3, w, _LANCZOS3_POLY) == (6, -2)
        worst = max(worst, float(np.abs(w - exact[i]).max()))
    assert worst < 2e-7
    _weights(0.0, 3, w, _LANCZOS3_POLY)
    assert w.tolist() == [0, 0, 1, 0, 0, 0]


@pytest.mark.parametrize("turn, persp", [(0.0, 0.0), (0.02, 0.0), (0.7, 0.0), (5.0, 0.0),
                                         (37.0, 0.0), (90.0, 0.0), (180.0, 0.0),
                                         (-90.3, 0.0), (0.3, 2e-5), (-4.0, -4e-5)])
def test_lanczos_runs_equal_the_plain_kernel(turn, persp):
    """The vectorised runs (and the transposed / mirrored bands they use for turned and
    flipped frames) give the plain Lanczos-3 value at every pixel, for affine and
    projective (``persp``) transforms, and a window of the reference grid gets the same
    bits as the whole warp."""
    rng = np.random.default_rng(7)
    img = rng.normal(1000, 30, (180, 200)).astype(np.float32)
    img[50:53, 60:64] = 40000  # a saturated star: the clamp at work around it
    t = Transform.rotation_about(turn, 99.5, 89.5) @ Transform.translation(0.37, -0.61)
    t = Transform(np.diag([1.0015, 0.9993, 1.0]) @ t.matrix)  # a little scale too
    if persp:
        t = Transform(np.array([[1, 0, 0], [0, 1, 0], [persp, -0.5 * persp, 1.0]]) @ t.matrix)
    whole, foot = warp_image(img, t, img.shape)
    minv = t.inverse().matrix
    ys, xs = np.nonzero(foot == 1.0)
    pick = rng.choice(len(ys), 400, replace=False)
    for y, x in zip(ys[pick], xs[pick]):
        assert whole[y, x] == pytest.approx(_lanczos_reference(img, minv, x, y), rel=2e-6,
                                            abs=1e-3)
    for origin, shape in (((37, 41), (50, 70)), ((0, 0), (33, 200)), ((150, 120), (30, 50))):
        out = _window_equals_whole(img, t, origin, shape, whole, foot)
        y0, y1, x0, x1 = source_bounds(t, origin, shape, img.shape)
        # straight into a caller's array, normalised on the way
        dest = np.empty((1,) + shape, np.float32)
        res, none = warp_window(img[y0:y1, x0:x1], (x0, y0), t, origin, shape,
                                src_shape=img.shape, out=dest[0], footprint=False,
                                gain=2.0, offset=-5.0)
        assert none is None and np.shares_memory(res, dest)
        assert_allclose(dest[0], 2.0 * out - 5.0, rtol=1e-6)
