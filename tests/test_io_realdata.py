"""Real camera frames from ../shared/data (skipped when the folder is absent)."""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from deepsky.io import read, read_meta
from deepsky.io.fits import read_fits_rows

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SEESTAR = DATA / "seestar-m94" / "lights"
CAFOS = DATA / "ngc2420-cafos"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not DATA.is_dir(), reason="real frames not available: ../shared/data "
                                                 "is absent (only in the project workspace)"),
]


def _one(folder: Path, pattern: str) -> Path:
    files = sorted(folder.glob(pattern))
    if not files:
        pytest.skip(f"no {pattern} in {folder}")
    return files[0]


def test_seestar_light():
    path = _one(SEESTAR, "*.fit")
    before = (path.stat().st_mtime_ns, path.stat().st_size)
    frame = read(path)
    m = frame.meta
    assert frame.data.shape == (1920, 1080) and (m.width, m.height) == (1080, 1920)
    assert frame.data.dtype == np.float32 and frame.data.flags.owndata
    assert m.bayer == "GRBG" and m.cfa == "bayer"
    assert (m.exposure, m.gain, m.kind) == (10.0, 80.0, "light")
    assert (m.focal_length, m.pixel_size) == (250.0, pytest.approx(2.9))
    assert m.instrument == "Seestar S50" and m.filter == "IRCUT"
    assert m.date is not None and m.date.year == 2025 and m.date.tzinfo == timezone.utc
    assert 0 <= frame.data.min() and frame.data.max() <= 65535  # uint16 via BZERO
    assert m.white_level == 65535.0 and m.bit_depth == 16
    np.testing.assert_array_equal(read_fits_rows(path, 100, 164), frame.data[100:164])
    assert (path.stat().st_mtime_ns, path.stat().st_size) == before


def test_seestar_all_metadata_agree():
    files = sorted(SEESTAR.glob("*.fit"))
    assert len(files) >= 2
    metas = [read_meta(f) for f in files]
    assert {(m.width, m.height, m.bayer, m.exposure, m.gain, m.kind) for m in metas} == {
        (1080, 1920, "GRBG", 10.0, 80.0, "light")}
    dates = [m.date for m in metas]
    assert all(isinstance(d, datetime) for d in dates) and len(set(dates)) == len(dates)


def test_cafos_light_bias_flat():
    light = _one(CAFOS / "lights" / "B", "*.fits")
    frame = read(light)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = fits.getheader(light)
    m = frame.meta
    assert frame.data.shape == (1024, 1024) and (m.width, m.height) == (1024, 1024)
    assert m.kind == "light" and m.exposure == float(header["EXPTIME"])
    assert m.bayer is None and m.channels == 1
    assert m.filter == "JohnsonB" and m.instrument == "CAFOS 2.2"
    assert m.egain == pytest.approx(1.43) and m.temperature == -99.0
    expected_date = datetime.fromisoformat(header["DATE-OBS"]).replace(tzinfo=timezone.utc)
    assert m.date == expected_date
    assert 0 <= frame.data.min() and frame.data.max() <= 65535
    assert read_meta(_one(CAFOS / "biases", "*.fits")).kind == "bias"
    assert read_meta(_one(CAFOS / "flats" / "V", "*.fits")).kind == "flat"


def test_cafos_light_exposures_match_the_readme():
    exposures = sorted(read_meta(f).exposure for f in (CAFOS / "lights" / "B").glob("*.fits"))
    assert exposures == [2.0, 3.0, 3.0, 60.0, 60.0, 60.0]


def test_real_files_are_left_unchanged():
    for path in (_one(SEESTAR, "*.fit"), _one(CAFOS / "lights" / "V", "*.fits")):
        st = path.stat()
        head = path.read_bytes()[:2880]
        read(path)
        read_meta(path)
        read_fits_rows(path, 0, 8)
        after = path.stat()
        assert (after.st_mtime_ns, after.st_size) == (st.st_mtime_ns, st.st_size)
        assert path.read_bytes()[:2880] == head
