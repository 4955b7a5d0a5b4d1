"""The realistic session simulator with ground truth.

Simulates the raw sub-exposures of a deep-sky imaging session (lights, darks, flats,
biases, dark-flats) from a physical model in electrons, converted to ADU, and records the
exact truth the other stages are tested against.

>>> from deepsky.simulate import SessionSpec, simulate_session
>>> spec = SessionSpec(width=512, height=384, n_lights=4, seed=1)
>>> # truth = simulate_session(spec, "session")   # writes the frames and truth files

See ``docs/simulator.md`` for the model, every parameter and the files written.
"""

from deepsky.simulate.model import (
    SessionModel,
    build_model,
    expected_light,
    light_transform,
    render_noiseless_light,
    render_truth_background,
    render_truth_sky,
    true_bias,
    true_dark_current,
    true_flat,
)
from deepsky.simulate.psf import PSF, render_stars
from deepsky.simulate.scene import StarCatalogue
from deepsky.simulate.session import simulate_session
from deepsky.simulate.spec import SessionSpec, spec_from_options
from deepsky.simulate.truth import (
    CalibrationTruth,
    GalaxyTruth,
    LightTruth,
    NebulaTruth,
    SatelliteTruth,
    SensorTruth,
    SkyTruth,
    Truth,
    load_truth,
    read_truth_stars,
)

__all__ = [
    "PSF",
    "CalibrationTruth",
    "GalaxyTruth",
    "LightTruth",
    "NebulaTruth",
    "SatelliteTruth",
    "SensorTruth",
    "SessionModel",
    "SessionSpec",
    "SkyTruth",
    "StarCatalogue",
    "Truth",
    "build_model",
    "expected_light",
    "light_transform",
    "load_truth",
    "read_truth_stars",
    "render_noiseless_light",
    "render_stars",
    "render_truth_background",
    "render_truth_sky",
    "simulate_session",
    "spec_from_options",
    "true_bias",
    "true_dark_current",
    "true_flat",
]
