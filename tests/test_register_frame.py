"""register_frame end to end on synthetic frames, phase correlation, and failures."""

from __future__ import annotations

import numpy as np
import pytest

from deepsky.detect import detect_frame
from deepsky.errors import ConfigError
from deepsky.register import phase_correlate, register_frame
from deepsky.types import Registration, StarList, Transform
from test_detect_synthetic import frame_from_reference, grid_error, random_field, render_stars

SHAPE = (384, 384)
C = (SHAPE[1] - 1) / 2


@pytest.fixture(scope="module")
def field():
    rng = np.random.default_rng(20)
    xy, flux = random_field(rng, 260, SHAPE, margin=-60, flux=(3.0, 5.0))
    ref = render_stars(SHAPE, xy, flux, 2.6, beta=3.0, sky=200.0, rng=rng, poisson=True)
    return xy, flux, ref, detect_frame(ref)[0]


@pytest.mark.parametrize("transform", [
    Transform.translation(23.4, -17.9),
    Transform.rotation_about(180.0, C, C) @ Transform.translation(4.2, 9.7),
    Transform.rotation_about(-4.0, C, C) @ Transform(np.array([[-1.0, 0, 383], [0, 1, 0], [0, 0, 1]])),
])
def test_stars_register_to_a_hundredth_of_a_pixel(field, transform):
    xy, flux, _, ref_stars = field
    rng = np.random.default_rng(21)
    img, _ = frame_from_reference(rng, xy, flux, transform, SHAPE, 3.0, beta=3.0, sky=200.0,
                                  poisson=True)
    stars, _ = detect_frame(img)
    reg = register_frame(stars, ref_stars)
    assert isinstance(reg, Registration)
    assert reg.ok and reg.method == "stars" and reg.reason == ""
    assert reg.n_matches > 80 and reg.rms_px < 0.5
    assert reg.model == "similarity"  # the data call for nothing more
    err = grid_error(reg.transform, transform, SHAPE)
    assert np.median(err) < 0.01 and err.max() < 0.03


def test_phase_fallback_when_stars_are_too_few(field):
    xy, flux, ref, ref_stars = field
    t = Transform.rotation_about(2.0, C, C) @ Transform.translation(-12.3, 6.6)
    rng = np.random.default_rng(22)
    img, _ = frame_from_reference(rng, xy, flux, t, SHAPE, 3.0, beta=3.0, sky=200.0,
                                  poisson=True)
    stars, _ = detect_frame(img)
    few = stars.select(np.arange(2))  # as if clouds hid all but two stars
    reg = register_frame(few, ref_stars, image=img, ref_image=ref)
    assert reg.ok and reg.method == "phase"
    assert grid_error(reg.transform, t, SHAPE).max() < 1.0
    # without images there is no fallback: a reason, no exception
    reg = register_frame(few, ref_stars)
    assert not reg.ok and "too few stars" in reg.reason
    assert reg.transform.max_displacement(Transform.identity(), 10, 10) == 0


def test_unrelated_frame_is_refused_with_a_reason(field):
    *_, ref_stars = field
    rng = np.random.default_rng(23)
    other = StarList.from_columns(x=rng.uniform(0, 384, 60), y=rng.uniform(0, 384, 60),
                                  fwhm=np.full(60, 3.0), snr=np.full(60, 50.0))
    reg = register_frame(other, ref_stars)
    assert not reg.ok and reg.reason and reg.method == "none"


@pytest.mark.parametrize("angle", [0.0, 7.0, 90.0, 180.0])
def test_phase_correlation_recovers_shift_and_rotation(field, angle):
    xy, flux, ref, _ = field
    t = Transform.rotation_about(angle, C, C) @ Transform.translation(15.6, -8.2)
    rng = np.random.default_rng(24)
    img, _ = frame_from_reference(rng, xy, flux, t, SHAPE, 3.0, sky=200.0, poisson=True)
    res = phase_correlate(img, ref, rotation=angle != 0.0)
    assert res.response > 0.1
    assert grid_error(res.transform, t, SHAPE).max() < 1.0


def test_options_are_validated(field):
    *_, ref_stars = field
    with pytest.raises(ConfigError, match="model must be one of"):
        register_frame(ref_stars, ref_stars, model="spline")
