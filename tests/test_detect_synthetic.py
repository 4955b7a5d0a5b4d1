"""Synthetic star fields with known sub-pixel positions, for the detection and registration
tests (and checks of the renderer itself).

Other test modules import the helpers: ``from test_detect_synthetic import render_stars``.
Stars are Gaussian or Moffat profiles integrated over each pixel (5 x 5 sub-samples for
Moffat, exact error functions for Gaussian), so pixel-phase effects are real.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.testing import assert_allclose
from scipy.special import erf

from deepsky.types import Transform


def render_stars(shape, xy, flux, fwhm, *, beta=None, sky=100.0, noise=5.0, rng=None,
                 poisson=False, ellipticity=0.0, angle=0.0, gradient=None):
    """Render stars at ``xy`` ((N, 2) array, 0-based pixel centres) with total ``flux``.

    ``beta`` None: Gaussian (exact pixel integration), else Moffat of that beta. A non-zero
    ``ellipticity`` (1 - b/a) and ``angle`` (radians) stretch the profile (sub-sampled).
    Noise: Gaussian of ``noise`` ADU, or Poisson when ``poisson``; none without ``rng``.
    ``gradient`` (gx, gy) adds a linear sky gradient in ADU per pixel.
    """
    h, w = shape
    img = np.full(shape, sky, np.float64)
    if gradient is not None:
        yy, xx = np.mgrid[0:h, 0:w]
        img += gradient[0] * (xx - w / 2) + gradient[1] * (yy - h / 2)
    xy = np.asarray(xy, float).reshape(-1, 2)
    flux = np.broadcast_to(np.asarray(flux, float), (len(xy),))
    r = int(math.ceil(4 * fwhm * (1 + 3 * ellipticity))) + 2
    ss = 5
    off = (np.arange(ss) + 0.5) / ss - 0.5
    for (x, y), f in zip(xy, flux):
        x0, x1 = max(int(x) - r, 0), min(int(x) + r + 2, w)
        y0, y1 = max(int(y) - r, 0), min(int(y) + r + 2, h)
        if x0 >= x1 or y0 >= y1:
            continue
        if beta is None and ellipticity == 0:
            s = fwhm / (2 * math.sqrt(2 * math.log(2))) * math.sqrt(2)
            gx = 0.5 * (erf((np.arange(x0, x1) + 0.5 - x) / s) - erf((np.arange(x0, x1) - 0.5 - x) / s))
            gy = 0.5 * (erf((np.arange(y0, y1) + 0.5 - y) / s) - erf((np.arange(y0, y1) - 0.5 - y) / s))
            img[y0:y1, x0:x1] += f * np.outer(gy, gx)
            continue
        px = (np.arange(x0, x1)[None, :, None, None] + off[None, None, None, :]) - x
        py = (np.arange(y0, y1)[:, None, None, None] + off[None, None, :, None]) - y
        c, s_ = math.cos(angle), math.sin(angle)
        u = (c * px + s_ * py)
        v = (-s_ * px + c * py) / max(1e-6, 1 - ellipticity)
        r2 = u * u + v * v
        if beta is None:
            sig = fwhm / (2 * math.sqrt(2 * math.log(2)))
            prof = np.exp(-r2 / (2 * sig * sig)) / (2 * math.pi * sig * sig)
        else:
            a = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
            prof = (beta - 1) / (math.pi * a * a) * (1 + r2 / (a * a)) ** (-beta)
        prof = prof / max(1e-6, 1 - ellipticity)
        img[y0:y1, x0:x1] += f * prof.mean(axis=(2, 3))
    if rng is not None:
        if poisson:
            img = rng.poisson(np.clip(img, 0, None)).astype(np.float64)
        elif noise:
            img = img + rng.normal(0.0, noise, shape)
    return img.astype(np.float32)


def random_field(rng, n, shape, *, margin=-50, flux=(2.5, 5.0)):
    """``n`` random star positions over ``shape`` (extending ``-margin`` beyond its edges, so
    shifted frames still see stars) and log-uniform fluxes in ``10**flux`` ADU."""
    h, w = shape
    xy = np.column_stack([rng.uniform(margin, w - 1 - margin, n),
                          rng.uniform(margin, h - 1 - margin, n)])
    f = 10 ** rng.uniform(flux[0], flux[1], n)
    order = np.argsort(-f)
    return xy[order], f[order]


def frame_from_reference(rng, ref_xy, flux, transform, shape, fwhm, **kw):
    """Render the frame that ``transform`` (frame -> reference) maps onto the reference
    catalogue ``ref_xy``: its stars sit at ``transform.inverse()(ref_xy)``."""
    xy = transform.inverse().apply(ref_xy)
    return render_stars(shape, xy, flux, fwhm, rng=rng, **kw), xy


def grid_error(a: Transform, b: Transform, shape, n=16):
    """Distances in pixels between where two transforms send a grid over a frame."""
    h, w = shape
    gx, gy = np.meshgrid(np.linspace(0, w - 1, n), np.linspace(0, h - 1, n))
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    return np.hypot(*(a.apply(pts) - b.apply(pts)).T)


# ----------------------------------------------------------------------------------------------
def test_render_conserves_flux_and_centres():
    img = render_stars((64, 64), [[30.3, 31.7]], 1e4, 3.0, sky=0.0)
    assert_allclose(img.sum(), 1e4, rtol=1e-3)
    yy, xx = np.mgrid[0:64, 0:64]
    assert_allclose([(img * xx).sum() / img.sum(), (img * yy).sum() / img.sum()], [30.3, 31.7],
                    atol=1e-3)
    moffat = render_stars((96, 96), [[48.2, 47.6]], 1e4, 3.0, beta=3.0, sky=0.0)
    assert_allclose(moffat.sum(), 1e4, rtol=0.03)  # wings beyond the stamp


def test_frame_from_reference_places_stars_by_inverse_transform():
    rng = np.random.default_rng(0)
    t = Transform.similarity(angle_deg=30, dx=5, dy=-3)
    ref_xy = np.array([[10.0, 20.0], [40.0, 5.0]])
    _, xy = frame_from_reference(rng, ref_xy, [1e3, 1e3], t, (64, 64), 2.0)
    assert_allclose(t.apply(xy), ref_xy, atol=1e-9)
