"""Detection, selection and registration against the simulator's truth (mono and Bayer).

A small version of the acceptance run (benchmarks/bench_register.py runs the full 50-frame
2048 x 2048 one): 10 lights of 768 x 768 with dithers up to 100 px, rotations up to 5
degrees, a meridian flip, seeing 1.5-4 px, one cloudy and one trailed frame, raw and
uncalibrated (hot pixels, amp glow, vignetting, dust, cosmic rays).
"""

from __future__ import annotations

import numpy as np
import pytest

from deepsky.detect import choose_reference, detect_frame, frame_quality, select_frames
from deepsky.io import read
from deepsky.register import register_frame
from deepsky.types import Transform
from test_detect_synthetic import grid_error

SESSION = dict(width=768, height=768, n_lights=10, n_darks=0, n_flats=0, n_biases=0, seed=11,
               max_shift=100, max_rotation=5.0, meridian_flip_frames=(8,), fwhm=(1.5, 4.0),
               cloudy_frames=(3,), trailed_frames=(6,))


@pytest.fixture(scope="module", params=[None, "RGGB"], ids=["mono", "bayer"])
def session(request, simulated_session):
    sim = simulated_session(**SESSION, bayer=request.param)
    frames = [read(p) for p in sim.files("light")]
    detections = [detect_frame(f.data, bayer=f.meta.bayer,
                               saturation=sim.truth.sensor.saturation_adu) for f in frames]
    return sim, frames, detections


def test_cloudy_and_trailed_frames_are_rejected_with_reasons(session):
    sim, _, detections = session
    qualities = [frame_quality(s, b) for s, b in detections]
    verdict = select_frames(qualities)
    for light, (ok, reason) in zip(sim.truth.lights, verdict):
        if light.cloudy:
            assert not ok and reason.startswith("clouds:"), reason
        elif light.trailed:
            assert not ok and "trailing/wind: roundness" in reason, reason
        else:
            assert ok, reason
    ref = choose_reference(qualities, verdict)
    assert not sim.truth.lights[ref].bad


def test_every_good_frame_registers_to_a_hundredth_of_a_pixel(session):
    sim, frames, detections = session
    ref_stars = detections[0][0]  # light 0 is the truth's reference
    shape = frames[0].data.shape
    errors = []
    for light, (stars, _) in zip(sim.truth.lights[1:], detections[1:]):
        reg = register_frame(stars, ref_stars)
        assert reg.ok, reg.reason
        truth = Transform.from_list(light.transform)
        if light.meridian_flipped:
            assert abs(abs(reg.transform.rotation_deg) - 180) < 6
        err = grid_error(reg.transform, truth, shape)
        if not light.bad:
            errors.append(err)
        assert err.max() < 0.3  # even cloudy and trailed frames register (less precisely)
    errors = np.concatenate(errors)
    assert np.median(errors) <= 0.01
    assert errors.max() <= 0.03


def test_measured_seeing_follows_the_truth(session):
    sim, _, detections = session
    fwhm = np.array([frame_quality(s, b).fwhm for s, b in detections])
    truth = np.array([light.fwhm for light in sim.truth.lights])
    good = np.array([not light.bad for light in sim.truth.lights])
    # a Gaussian fit to a Moffat (beta 3) core reads ~10 % wide; the ranking is what matters
    assert np.corrcoef(fwhm[good], truth[good])[0, 1] > 0.95
    assert np.all(np.abs(fwhm[good] / truth[good] - 1.1) < 0.12)
