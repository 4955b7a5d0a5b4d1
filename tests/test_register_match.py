"""Asterism matching: any rotation (incl. 180 degrees), mirror, scale, outliers, few stars."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from deepsky.register import match, match_stars, refine_match
from deepsky.types import Transform
from test_detect_synthetic import grid_error

SHAPE = (1024, 1024)


def _scene(seed, n, t, *, outlier_fraction=0.0, noise=0.05, keep=1.0, jitter=0.4):
    """Reference stars over the field, brightest first, and the frame's view of them through
    ``t`` (frame -> reference): the stars inside the frame, with centroid noise, ranked by
    a brightness that differs by ``jitter`` (log-normal: another filter, other seeing), a
    fraction replaced by stars that are not in the reference, and ``keep`` of them
    detected."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, 1024, (n, 2))
    flux = rng.pareto(1.0, n) + 1.0
    order = np.argsort(-flux)
    ref, flux = ref[order], flux[order]
    frame = t.inverse().apply(ref)
    inside = np.all((frame >= 0) & (frame < 1024), axis=1) & (rng.random(n) < keep)
    frame = frame[inside] + rng.normal(0, noise, (inside.sum(), 2))
    seen = flux[inside] * np.exp(rng.normal(0, jitter, inside.sum()))
    n_out = int(outlier_fraction * len(frame))
    fake = rng.choice(len(frame), n_out, replace=False)
    frame[fake] = rng.uniform(0, 1024, (n_out, 2))  # false detections / unknown stars
    return frame[np.argsort(-seen)], ref + rng.normal(0, noise, ref.shape)


@st.composite
def frame_transforms(draw):
    angle = draw(st.one_of(st.floats(-180, 180), st.sampled_from([180.0, -90.0, 0.0])))
    scale = draw(st.floats(0.9, 1.1))
    c = 511.5
    t = (Transform.translation(draw(st.floats(-150, 150)), draw(st.floats(-150, 150)))
         @ Transform.rotation_about(angle, c, c)
         @ Transform.translation(c, c) @ Transform.similarity(scale=scale)
         @ Transform.translation(-c, -c))
    if draw(st.booleans()):  # mirrored (a frame read bottom-up, a diagonal flip)
        t = t @ Transform(np.array([[-1.0, 0, 1023], [0, 1, 0], [0, 0, 1]]))
    return t


@settings(max_examples=30, deadline=None, derandomize=True)
@given(t=frame_transforms(), seed=st.integers(0, 2**31))
def test_matcher_recovers_any_similarity_with_outliers(t, seed):
    frame, ref = _scene(seed, 150, t, outlier_fraction=0.3)
    m = match_stars(frame, ref, model="similarity")
    assert m.ok, m.reason
    assert m.transform.is_mirrored == t.is_mirrored
    assert grid_error(m.transform, t, SHAPE).max() < 0.1
    # pairs are true pairs: a matched frame star predicts its reference star closely
    assert np.max(np.hypot(*(t.apply(frame[m.src_index]) - ref[m.dst_index]).T)) < 0.5


@settings(max_examples=15, deadline=None, derandomize=True)
@given(t=frame_transforms(), seed=st.integers(0, 2**31), n=st.integers(6, 12))
def test_matcher_works_with_a_handful_of_stars(t, seed, n):
    # a short exposure: its few bright stars against a reference with many more
    frame, ref = _scene(seed, 200, t, noise=0.05)
    frame = frame[:n]
    m = match_stars(frame, ref, model="homography", min_matches=4)
    if np.sum(np.all((t.apply(frame) >= 0) & (t.apply(frame) < 1024), axis=1)) >= 5:
        assert m.ok, m.reason
        assert grid_error(m.transform, t, SHAPE).max() < 0.5  # 0.05 px noise, 5+ stars
        assert m.model in ("shift", "similarity")  # too few pairs for more


def test_thousands_of_stars():
    t = Transform.rotation_about(3.0, 511.5, 511.5) @ Transform.translation(40, -25)
    frame, ref = _scene(5, 3000, t, noise=0.03, keep=0.8)
    m = match_stars(frame, ref)
    assert m.ok and m.n_matches > 0.7 * len(frame)
    assert grid_error(m.transform, t, SHAPE).max() < 0.01


def test_unrelated_fields_do_not_match():
    rng = np.random.default_rng(6)
    a, b = rng.uniform(0, 1024, (40, 2)), rng.uniform(0, 1024, (40, 2))
    m = match_stars(a, b)
    assert not m.ok
    assert m.reason and m.transform.max_displacement(Transform.identity(), 1024, 1024) == 0


def test_too_few_stars_is_a_reason_not_an_error():
    m = match_stars(np.zeros((2, 2)), np.ones((30, 2)))
    assert not m.ok and "too few stars" in m.reason


def test_refine_from_a_rough_transform():
    t = Transform.similarity(angle_deg=1.0, dx=20.0, dy=5.0)
    frame, ref = _scene(7, 200, t)
    rough = Transform.similarity(angle_deg=1.05, dx=20.8, dy=4.5)
    m = refine_match(frame, ref, rough, model="affine", tolerance=3.0)
    assert m.ok and m.n_matches > 0.9 * len(frame)
    assert grid_error(m.transform, t, SHAPE).max() < 0.02


def _pairs_by_kdtree(pred, inside, dst, tol):
    """The pairing as the k-d tree gives it: each predicted star inside to its nearest
    reference star closer than ``tol``, then one frame star per reference star (the
    closest; the lower frame index on a tie), ordered by reference index."""
    si = np.flatnonzero(inside)
    d, di = cKDTree(dst).query(pred[si], distance_upper_bound=tol)
    ok = np.isfinite(d)
    si, di, d = si[ok], di[ok], d[ok]
    order = np.argsort(d, kind="stable")
    _, first = np.unique(di[order], return_index=True)
    keep = order[first]
    return si[keep], di[keep]


@pytest.mark.parametrize("seed", range(12))
def test_grid_pairing_equals_the_kdtree_pairing(seed):
    """The compiled refinement's pairing and the hypotheses' scoring (stars bucketed in
    cells) find exactly the neighbours a k-d tree query does: crowded and sparse fields, tolerances above and below the cell size,
    predictions beyond the reference's extent, close pairs of reference stars (an exact tie
    of distances is left out: which of two stars at one position a k-d tree returns is
    not specified)."""
    rng = np.random.default_rng(seed)
    n_ref = int(rng.integers(3, 3000))
    dst = rng.uniform(0, rng.uniform(50, 4000), (n_ref, 2))
    k = n_ref // 20
    dst[:k] = dst[k: 2 * k] + rng.normal(0, 0.05, (k, 2))  # close pairs
    n = int(rng.integers(1, 3000))
    pred = np.concatenate([dst[rng.integers(0, n_ref, n // 2)] + rng.normal(0, 1.5, (n // 2, 2)),
                           rng.uniform(-100, 4100, (n - n // 2, 2))])
    inside = rng.random(n) < 0.9
    cell, g = match._grid_of(dst)
    a = np.exp(1j * rng.uniform(-np.pi, np.pi)) * rng.uniform(0.98, 1.02)
    for tol in (0.75, 2.0, 3.0 * cell, 6.0):
        si, di = match._kernels._pairs(pred, inside, dst, g, cell, tol)
        ksi, kdi = _pairs_by_kdtree(pred, inside, dst, tol)
        assert np.array_equal(di, kdi) and np.array_equal(si, ksi), (seed, tol)
        # the hypotheses' score: frame stars landing within tol of a reference star
        for flip in (False, True):
            z = pred[:, 0] + 1j * pred[:, 1]
            moved = a * (np.conj(z) if flip else z) + (3.0 - 2.0j)
            d, _ = cKDTree(dst).query(np.column_stack([moved.real, moved.imag]),
                                      distance_upper_bound=tol)
            reach = int(np.ceil(tol / cell))
            assert match._kernels._count_near(a.real, a.imag, 3.0, -2.0, flip, pred, dst, g,
                                              cell, reach, tol * tol) == np.isfinite(d).sum()


def test_refinement_recovers_the_model_the_data_have():
    """Refinement on thousands of pairs: an affine field (refraction) is fitted as affine,
    a rotation as a similarity, each to the truth's precision."""
    aff = Transform(np.array([[1.0004, 0.0003, 12.0], [-0.0002, 0.9997, -7.0], [0, 0, 1]]))
    sim = Transform.similarity(angle_deg=0.7, dx=12.0, dy=-7.0)
    for t, want in ((aff, "affine"), (sim, "similarity")):
        frame, ref = _scene(11, 2500, t, noise=0.03, jitter=0.0)
        m = refine_match(frame, ref, Transform.translation(12.5, -6.5), model="affine")
        assert m.ok and m.model == want
        assert grid_error(m.transform, t, SHAPE).max() < 0.01
