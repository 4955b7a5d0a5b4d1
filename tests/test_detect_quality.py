"""Frame quality, selection with reasons, and the choice of the reference frame."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepsky.detect import (
    choose_reference, estimate_background, frame_quality, reference_score, select_frames,
)
from deepsky.errors import ConfigError, RegistrationError
from deepsky.types import FrameQuality, StarList


def _q(n=600, fwhm=3.0, roundness=0.9, background=1000.0, noise=10.0, snr=50.0):
    return FrameQuality(n_stars=n, fwhm=fwhm, hfr=fwhm / 2, roundness=roundness,
                        background=background, noise=noise, snr=snr)


def _session(k=10):
    rng = np.random.default_rng(0)
    return [_q(n=int(rng.integers(560, 640)), fwhm=float(rng.uniform(2.8, 3.2)),
               roundness=float(rng.uniform(0.86, 0.92)),
               background=float(rng.uniform(990, 1010))) for _ in range(k)]


def test_frame_quality_from_stars_and_background():
    stars = StarList.from_columns(
        x=[1.0, 2.0, 3.0], y=[1.0, 2.0, 3.0], fwhm=[2.0, 3.0, 9.0], hfr=[1.0, 1.5, 4.0],
        roundness=[0.9, 0.8, 0.5], snr=[10.0, 20.0, 500.0], saturated=[False, False, True])
    img = (500 + 4 * np.random.default_rng(1).standard_normal((128, 128))).astype(np.float32)
    q = frame_quality(stars, estimate_background(img))
    assert q.n_stars == 3
    assert q.fwhm == 2.5 and q.hfr == 1.25 and q.roundness == pytest.approx(0.85)
    assert q.snr == 15.0  # saturated star left out
    assert q.background == pytest.approx(500, abs=0.5) and q.noise == pytest.approx(4, abs=0.3)
    empty = frame_quality(StarList.empty(), None)
    assert empty.n_stars == 0 and math.isnan(empty.fwhm) and math.isnan(empty.background)


def test_good_session_keeps_everything():
    assert all(ok for ok, _ in select_frames(_session()))


def test_bad_frames_rejected_with_reasons():
    qs = _session()
    qs[2] = _q(n=45, background=1300.0)                 # cloud lit by the town
    qs[5] = _q(fwhm=5.4)                                # bad seeing / focus
    qs[7] = _q(roundness=0.45, fwhm=4.0)                # trailed
    qs[8] = _q(n=0, fwhm=float("nan"), roundness=float("nan"))
    res = select_frames(qs)
    assert [ok for ok, _ in res] == [True, True, False, True, True, False, True, False, False,
                                     True]
    reason = res[2][1]
    assert reason.startswith("clouds: 45 stars vs session median ")
    assert "(< 50%)" in reason and "background jump: 1300.0" in reason
    assert res[5][1].startswith("seeing/focus: FWHM 5.40 px vs session median")
    assert "(> 1.6x)" in res[5][1]
    assert res[7][1].startswith("trailing/wind: roundness 0.45")
    assert res[8][1] == "no stars: 0 stars detected (need 4)"


def test_thresholds_are_keyword_options():
    qs = _session()
    qs[3] = _q(fwhm=5.0)
    assert not select_frames(qs)[3][0]
    assert select_frames(qs, max_fwhm_ratio=1.8)[3][0]
    qs[4] = _q(n=350)
    assert select_frames(qs, min_star_fraction=0.5)[4][0]
    assert not select_frames(qs, min_star_fraction=0.7)[4][0]
    with pytest.raises(ConfigError, match="min_star_fraction"):
        select_frames(qs, min_star_fraction=1.5)


def test_groups_judge_each_exposure_separately():
    short = [_q(n=12, background=800.0, noise=5.0) for _ in range(3)]
    long = [_q(n=300, background=4000.0, noise=50.0) for _ in range(3)]
    qs = short + long
    assert not all(ok for ok, _ in select_frames(qs))
    assert all(ok for ok, _ in select_frames(qs, groups=["2s"] * 3 + ["60s"] * 3))


def test_choose_reference_prefers_many_sharp_round_stars():
    qs = _session()
    qs[6] = _q(n=700, fwhm=2.6, roundness=0.93, snr=55.0)
    ok = select_frames(qs)
    assert choose_reference(qs, ok) == 6
    assert np.argmax(reference_score(qs)) == 6
    # a rejected frame is never the reference
    ok[6] = (False, "manual")
    assert choose_reference(qs, ok) != 6
    with pytest.raises(RegistrationError, match="no reference frame"):
        choose_reference(qs, [False] * len(qs))


def test_reference_prefers_precise_anchors_over_sharpness_alone():
    # a short sharp frame against a long, deeper one of slightly softer seeing
    short = _q(n=260, fwhm=3.6, snr=40.0, background=900.0, noise=18.0)
    long = _q(n=320, fwhm=4.5, snr=180.0, background=7000.0, noise=85.0)
    assert choose_reference([short, long]) == 1
