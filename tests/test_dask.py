"""The Dask backend: a real LocalCluster (worker processes over TCP) gives the local numbers."""

from __future__ import annotations

import numpy as np
import pytest

from deepsky.config import load_config
from deepsky.io import read
from deepsky.pipeline.backends import DaskBackend, make_backend
from deepsky.pipeline.progress import Reporter
from deepsky.pipeline.run import run_pipeline

SPEC = dict(width=256, height=256, bayer="RGGB", n_lights=5, n_darks=4, n_flats=4,
            n_biases=4, seed=43, satellite_frames=(1,))


def test_local_cluster_equals_local_run(simulated_session, tmp_path):
    from dask.distributed import LocalCluster

    sim = simulated_session(**SPEC)
    # Several tiles, so that integration runs as several tasks.
    cfg = load_config(overrides=["run.memory_mb=1"])
    q = Reporter(quiet=True)
    local = run_pipeline(sim.path, tmp_path / "local", cfg, reporter=q)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        backend = make_backend(cluster.scheduler_address)
        try:
            assert isinstance(backend, DaskBackend) and backend.workers == 2
            remote = run_pipeline(sim.path, tmp_path / "dask", cfg, reporter=q, backend=backend)
        finally:
            backend.close()
    a = read(tmp_path / "local" / "stack.fits").data
    b = read(tmp_path / "dask" / "stack.fits").data
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6, equal_nan=True)
    assert remote.record["stacks"][0]["trails"] == local.record["stacks"][0]["trails"]
    assert remote.record["backend"].startswith("tcp://")
    assert remote.record["frames"] == local.record["frames"]


def test_bad_scheduler_is_a_clear_error():
    from deepsky.errors import ConfigError

    with pytest.raises(ConfigError, match="expected threads, processes or tcp"):
        make_backend("nonsense")
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        DaskBackend("tcp://127.0.0.1:9", workers=1)
