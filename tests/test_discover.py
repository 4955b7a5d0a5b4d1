"""Session discovery: layouts, naming variants, classification and warnings."""

import json
from pathlib import Path

import numpy as np
import pytest

from deepsky.cli import main
from deepsky.io.discover import discover, folder_kind, prefix_kind
from deepsky.io.fits import write_fits

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _frame(path, kind=None, exposure=10.0, size=(32, 24), flt=None, temp=None, gain=100):
    cards = {"EXPTIME": exposure, "GAIN": gain}
    if kind:
        cards["IMAGETYP"] = kind
    if flt:
        cards["FILTER"] = flt
    if temp is not None:
        cards["CCD-TEMP"] = temp
    w, h = size
    write_fits(path, np.full((h, w), 1000, np.float32), cards=cards, dtype=np.uint16)


def test_names():
    assert folder_kind("Lights") == "light" and folder_kind("OFFSETS") == "bias"
    assert folder_kind("flat_darks") == "darkflat" and folder_kind("Dark_Flats") == "darkflat"
    assert folder_kind("notes") is None
    assert prefix_kind("DarkFlat_001.fits") == "darkflat"
    assert prefix_kind("Light_M 94_10.0s.fit") == "light"
    assert prefix_kind("Offset_0001.fits") == "bias"
    assert prefix_kind("Flatness.fits") is None


def test_folder_layout_with_filters_and_warnings(tmp_path):
    s = tmp_path / "session"
    for i in range(3):
        _frame(s / "Lights" / "Ha" / f"a{i}.fits", exposure=300, flt="H")
        _frame(s / "Lights" / "OIII" / f"b{i}.fits", exposure=300)
    for i in range(2):
        _frame(s / "FLATS" / "Ha" / f"f{i}.fits", exposure=2)
    for i in range(4):
        _frame(s / "darks" / f"d{i}.fits", exposure=120)  # no light has 120 s
    _frame(s / "offsets" / "bias1.fits", exposure=0)
    _frame(s / "flat_darks" / "fd.fits", exposure=2, size=(64, 48))  # wrong size
    (s / "darks" / "notes.txt").write_text("not an image")
    (s / "darks" / "broken.fits").write_text("SIMPLE = garbage")
    sess = discover(s)
    assert sess.layout == "folders"
    counts = {k: len(v) for k, v in sess.frames.items()}
    assert counts == {"light": 6, "dark": 4, "flat": 2, "bias": 1, "darkflat": 1}
    assert {m.filter for m in sess.lights} == {"Ha", "OIII"}  # the folder names the filter
    assert len(sess.light_groups()) == 2
    text = " | ".join(sess.warnings)
    assert "1 unreadable file(s)" in text and "broken.fits" in text
    assert "darks with exposure 120 s match no light exposure" in text
    assert "only one bias frame" in text
    assert "1 darkflat frame(s) match no lights in size" in text
    assert "no flats for the lights of filter(s) OIII" in text


def test_mixed_folder_by_header_then_prefix(tmp_path):
    s = tmp_path / "mixed"
    _frame(s / "frame_001.fits", kind="Light Frame")
    _frame(s / "frame_002.fits", kind="LIGHT")
    _frame(s / "Dark_001.fits")
    _frame(s / "x.fits", kind="Bias Frame", exposure=0)
    _frame(s / "Flat_001.fits", kind="Flat Field", exposure=1)
    _frame(s / "mystery.fits")
    _frame(s / "Light_003.fits", size=(40, 24))
    sess = discover(s)
    assert sess.layout == "mixed"
    assert len(sess.lights) == 3 and len(sess.darks) == 1 and len(sess.biases) == 1
    assert [p.name for p in sess.unclassified] == ["mystery.fits"]
    assert any("mixed sizes" in w for w in sess.warnings)


def test_empty_and_missing(tmp_path):
    sess = discover(tmp_path)
    assert sess.lights == [] and "no light frames found" in sess.warnings
    from deepsky.errors import InputError
    with pytest.raises(InputError, match="session folder not found"):
        discover(tmp_path / "nope")


@pytest.mark.skipif(not (SHARED / "seestar-m94").is_dir(), reason="../shared/data absent")
def test_real_seestar(capsys):
    sess = discover(SHARED / "seestar-m94")
    assert len(sess.lights) == 32
    assert {(m.bayer, m.exposure, m.width, m.height) for m in sess.lights} == {("GRBG", 10.0, 1080, 1920)}
    assert main(["inspect", str(SHARED / "seestar-m94"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["light"] == 32 and data["groups"][0]["bayer"] == "GRBG"


@pytest.mark.skipif(not (SHARED / "ngc2420-cafos").is_dir(), reason="../shared/data absent")
def test_real_cafos():
    sess = discover(SHARED / "ngc2420-cafos")
    assert len(sess.biases) == 2
    assert sorted(m.filter for m in sess.flats) == ["B", "V"]
    by = {}
    for m in sess.lights:
        by[m.filter] = by.get(m.filter, 0) + 1
    assert by == {"B": 6, "V": 5}
    assert sorted(m.exposure for m in sess.lights if m.filter == "B") == [2, 3, 3, 60, 60, 60]
