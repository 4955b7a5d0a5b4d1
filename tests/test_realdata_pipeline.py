"""The pipeline on the real frames of ../shared/data (skipped when absent)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from deepsky.config import load_config
from deepsky.detect.stars import detect_frame
from deepsky.io import read
from deepsky.pipeline.progress import Reporter
from deepsky.pipeline.run import run_pipeline

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAFOS = SHARED / "ngc2420-cafos"
SEESTAR = SHARED / "seestar-m94"
Q = Reporter(quiet=True)


def _session_v(root: Path, only_long: bool) -> Path:
    """A session folder of links to the CAFOS V lights (all, or the 60 s ones), V flat, biases."""
    from astropy.io import fits

    (root / "lights" / "V").mkdir(parents=True)
    (root / "flats" / "V").mkdir(parents=True)
    (root / "biases").mkdir()
    for f in sorted((CAFOS / "lights" / "V").glob("*.fits")):
        if only_long and fits.getval(f, "EXPTIME") != 60:
            continue
        os.symlink(f, root / "lights" / "V" / f.name)
    for f in (CAFOS / "flats" / "V").glob("*.fits"):
        os.symlink(f, root / "flats" / "V" / f.name)
    for f in (CAFOS / "biases").glob("*.fits"):
        os.symlink(f, root / "biases" / f.name)
    return root


@pytest.mark.skipif(not CAFOS.is_dir(), reason="../shared/data/ngc2420-cafos absent")
def test_mixed_exposures_beat_the_long_ones_alone(tmp_path):
    """3 s + 60 s frames stacked give at least the star SNR of the 60 s frames alone:
    photometric normalisation and noise weights give the short frames their small due."""
    cfg = load_config(overrides=["registration.reference=uamA_0031.fits",
                                 "postprocess.deconvolution.enabled=false"])
    out = {}
    for tag, only_long in (("all", False), ("long", True)):
        session = _session_v(tmp_path / f"s_{tag}", only_long)
        run_pipeline(session, tmp_path / tag, cfg, reporter=Q)
        out[tag] = read(tmp_path / tag / "stack.fits").data
    rows = list(csv.DictReader((tmp_path / "all" / "frames.csv").read_text().splitlines()))
    w = {r["file"]: float(r["weight"]) for r in rows}
    assert w["uamA_0029.fits"] < 0.15 * w["uamA_0031.fits"]  # a 3 s frame weighs little
    stars = {}
    for tag, img in out.items():
        s, _ = detect_frame(np.nan_to_num(img, nan=float(np.nanmedian(img))))
        stars[tag] = s
    tree = cKDTree(stars["long"].xy)
    d, j = tree.query(stars["all"].xy, distance_upper_bound=1.0)
    ok = np.isfinite(d)
    assert ok.sum() > 100
    ratio = stars["all"].snr[ok] / stars["long"].snr[j[ok]]
    assert np.median(ratio) >= 1.0


@pytest.mark.skipif(not SEESTAR.is_dir(), reason="../shared/data/seestar-m94 absent")
def test_seestar_night_to_a_finished_image(tmp_path):
    res = run_pipeline(SEESTAR, tmp_path, load_config(), reporter=Q)
    rec = res.record
    assert rec["frames"]["used"] == 32 and rec["frames"]["total"] == 32
    stack = read(tmp_path / "stack.fits").data
    assert stack.shape == (3, 1920, 1080)
    final = read(tmp_path / "final_linear.fits").data
    # No green cast: the background channel medians agree.
    med = np.nanmedian(final, axis=(1, 2))
    assert np.max(np.abs(med / med.mean() - 1)) < 0.01
    for name in ("final.tif", "final.jpg", "report.html", "frames.csv", "run.json"):
        assert (tmp_path / name).exists()
