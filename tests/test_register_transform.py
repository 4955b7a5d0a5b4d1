"""Least-squares transform fits: exact and noisy recovery (property tests), model choice."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from deepsky.errors import ConfigError, RegistrationError
from deepsky.register import fit_transform, residuals, simplest_model
from deepsky.register.transform import fit_model
from deepsky.types import Transform
from test_detect_synthetic import grid_error

SHAPE = (1000, 1500)


@st.composite
def transforms(draw, model):
    angle = draw(st.floats(-180, 180))
    scale = draw(st.floats(0.8, 1.25))
    dx, dy = draw(st.floats(-300, 300)), draw(st.floats(-300, 300))
    t = Transform.similarity(scale=scale, angle_deg=angle, dx=dx, dy=dy)
    if model == "similarity" and draw(st.booleans()):
        t = t @ Transform(np.diag([-1.0, 1.0, 1.0]))  # mirrored
    if model in ("affine", "homography"):
        shear = np.eye(3)
        shear[0, 1] = draw(st.floats(-0.05, 0.05))
        shear[1, 1] = draw(st.floats(0.95, 1.05))
        t = t @ Transform(shear)
    if model == "homography":
        persp = np.eye(3)
        persp[2, 0] = draw(st.floats(-2e-5, 2e-5))
        persp[2, 1] = draw(st.floats(-2e-5, 2e-5))
        t = t @ Transform(persp)
    return t


def _points(seed, n):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(0, SHAPE[1], n), rng.uniform(0, SHAPE[0], n)])


@pytest.mark.parametrize("model", ["similarity", "affine", "homography"])
def test_exact_points_are_recovered(model):
    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(t=transforms(model), seed=st.integers(0, 2**31), n=st.integers(6, 60))
    def check(t, seed, n):
        src = _points(seed, n)
        fit = fit_transform(src, t.apply(src), model)
        assert grid_error(fit, t, SHAPE).max() < 1e-6

    check()


@pytest.mark.parametrize("model", ["similarity", "affine", "homography"])
def test_noisy_points_give_small_grid_errors(model):
    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(t=transforms(model), seed=st.integers(0, 2**31))
    def check(t, seed):
        rng = np.random.default_rng(seed)
        src = _points(seed, 300)
        dst = t.apply(src) + rng.normal(0, 0.05, (300, 2))
        fit = fit_transform(src, dst, model)
        # 0.05 px per star over 300 stars: a few thousandths inside, more at the corners
        assert np.median(grid_error(fit, t, SHAPE)) < 0.015
        assert grid_error(fit, t, SHAPE).max() < 0.05
        assert np.sqrt(np.mean(residuals(fit, src, dst) ** 2)) < 0.1

    check()


def test_weights_discount_bad_points():
    t = Transform.similarity(angle_deg=10, dx=5, dy=-7)
    src = _points(1, 50)
    dst = t.apply(src)
    dst[:5] += 3.0
    w = np.ones(50)
    w[:5] = 0.0
    assert grid_error(fit_transform(src, dst, "affine", weights=w), t, SHAPE).max() < 1e-6
    assert grid_error(fit_transform(src, dst, "affine"), t, SHAPE).max() > 0.1


def test_shift_and_mirror_options():
    src = _points(2, 10)
    assert_allclose(fit_transform(src, src + [3.5, -1.25], "shift").matrix[:2, 2], [3.5, -1.25])
    flip = Transform(np.diag([-1.0, 1.0, 1.0])) @ Transform.similarity(angle_deg=20)
    assert fit_transform(src, flip.apply(src), "similarity").is_mirrored
    proper = fit_transform(src, flip.apply(src), "similarity", mirror=False)
    assert not proper.is_mirrored


def test_model_selection_is_driven_by_the_data():
    rng = np.random.default_rng(3)
    src = _points(3, 200)
    noise = rng.normal(0, 0.05, (200, 2))
    sim = Transform.similarity(angle_deg=2, dx=30, dy=-12)
    assert fit_model(src, sim.apply(src) + noise, "homography")[1] == "similarity"
    aff = Transform(np.array([[1.001, 0.002, 3.0], [0.0, 0.998, 1.0], [0, 0, 1]]))
    assert fit_model(src, aff.apply(src) + noise, "homography")[1] == "affine"
    hom = Transform(np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 1.0], [2e-6, -3e-6, 1]]))
    assert fit_model(src, hom.apply(src) + noise, "homography")[1] == "homography"
    assert fit_model(src, hom.apply(src) + noise, "affine")[1] == "affine"
    # few pairs: never more than they can constrain
    assert fit_model(src[:6], hom.apply(src[:6]), "homography")[1] == "similarity"


def test_simplest_model_thresholds():
    assert simplest_model("homography", 40) == "homography"
    assert simplest_model("homography", 10) == "affine"
    assert simplest_model("homography", 5) == "similarity"
    assert simplest_model("homography", 1) == "shift"
    assert simplest_model("homography", 10, min_pairs={"affine": 12}) == "similarity"


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="model must be one of"):
        fit_transform([[0, 0]], [[0, 0]], "projective")
    with pytest.raises(RegistrationError, match="at least 4 point pairs, got 3"):
        fit_transform(_points(0, 3), _points(1, 3), "homography")
    with pytest.raises(RegistrationError, match="not on one line"):
        line = np.column_stack([np.arange(5.0), np.arange(5.0)])
        fit_transform(line, line, "affine")


def test_the_model_choice_f_test_is_the_f_distribution():
    """The F-test's survival function (closed form for the 2 parameters each model adds)
    is scipy's F distribution; and a fit with a zero weight leaves that point out."""
    from scipy.special import fdtrc

    from deepsky.register import _kernels

    for dof in (1, 2, 5, 17, 100, 2999):
        for stat in (1e-6, 0.3, 1.0, 4.0, 9.21, 50.0, 400.0):
            assert _kernels.f2_survival(dof, stat) == pytest.approx(fdtrc(2, dof, stat), rel=1e-9)
    src = _points(5, 30)
    t = Transform.similarity(angle_deg=3, dx=4, dy=-2)
    dst = t.apply(src)
    dst[0] += 100.0
    w = np.ones(30)
    w[0] = 0.0
    for model in ("similarity", "affine", "homography"):
        fit = fit_transform(src, dst, model, weights=w)
        assert np.allclose(fit.apply(src[1:]), dst[1:], atol=1e-6)
