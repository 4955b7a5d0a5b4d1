"""Shared, seeded fixtures: small simulated sessions with known truth.

``simulated_session(**options)`` simulates a small session (256 x 256 by default, see
``SMALL_SESSION``) into a temporary folder and returns a :class:`SimulatedSession`; the same
options within one test run return the same (cached) session, so many tests can share one
simulation. Options are any :class:`deepsky.simulate.SessionSpec` fields.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from deepsky.simulate import SessionModel, SessionSpec, Truth, build_model, simulate_session

# The Ctrl-C tests send SIGINT to deepsky subprocesses as a terminal would to a foreground
# command. A suite started in the background by a non-interactive shell (`... &`, nohup)
# inherits SIGINT ignored, and so would every child: Python keeps an ignored SIGINT ignored,
# and the run would finish instead of stopping. Handled here, it is default again in the
# children after their exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# A session small enough for unit tests (well under a second to simulate).
SMALL_SESSION: dict[str, Any] = {
    "width": 256,
    "height": 256,
    "n_lights": 4,
    "n_darks": 5,
    "n_flats": 5,
    "n_biases": 5,
    "seed": 7,
}


@dataclass(frozen=True)
class SimulatedSession:
    """A simulated session on disk: its folder, spec, truth and prepared model."""

    path: Path
    spec: SessionSpec
    truth: Truth
    model: SessionModel

    def files(self, kind: str) -> list[Path]:
        """Paths of the frames of ``kind`` (light/dark/flat/bias/darkflat), in order."""
        return [self.path / rec.file for rec in self.truth.frames(kind)]

    def read(self, relative: str | Path) -> np.ndarray:
        """Pixel data of a file of the session (float32, as stored)."""
        from deepsky.io.fits import read_fits

        return read_fits(self.path / relative).data

    def stack(self, kind: str) -> np.ndarray:
        """All frames of ``kind`` as one ``(N, H, W)`` float64 array."""
        return np.stack([self.read(p).astype(np.float64) for p in self.files(kind)])


@pytest.fixture(scope="session")
def simulated_session(tmp_path_factory: pytest.TempPathFactory) \
        -> Callable[..., SimulatedSession]:
    """Factory: ``simulated_session(**spec_options) -> SimulatedSession`` (cached)."""
    cache: dict[SessionSpec, SimulatedSession] = {}

    def make(**options: Any) -> SimulatedSession:
        spec = SessionSpec(**{**SMALL_SESSION, **options})
        if spec not in cache:
            path = tmp_path_factory.mktemp("simulated")
            truth = simulate_session(spec, path)
            cache[spec] = SimulatedSession(path, spec, truth, build_model(spec))
        return cache[spec]

    return make


@pytest.fixture(scope="session")
def small_session(simulated_session: Callable[..., SimulatedSession]) -> SimulatedSession:
    """The default small colour session (256 x 256 RGGB, 4 lights, seed 7)."""
    return simulated_session()


@pytest.fixture(scope="session")
def small_mono_session(simulated_session: Callable[..., SimulatedSession]) -> SimulatedSession:
    """A small mono session (256 x 256, L filter, 4 lights, seed 7)."""
    return simulated_session(bayer=None)
