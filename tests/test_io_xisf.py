"""XISF reading and writing (deepsky.io.xisf)."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from xisf import XISF

from deepsky.errors import OutputError
from deepsky.io import read, read_meta, write
from deepsky.io.xisf import read_xisf, read_xisf_meta, write_xisf
from deepsky.types import FrameMeta

NS = "{http://www.pixinsight.com/xisf}"
META = FrameMeta(kind="dark", width=7, height=5, exposure=300.0, gain=120.0, egain=0.25,
                 temperature=-15.2, set_temperature=-15.0, filter="O'III", binning=(1, 1),
                 date=datetime(2023, 11, 5, 22, 1, 2, 500000, tzinfo=timezone.utc),
                 instrument="QHY268M", telescope="Esprit 100", object="NGC 6992",
                 focal_length=550.0, pixel_size=3.76)


def _image_attrs(path: Path) -> dict[str, str]:
    with open(path, "rb") as f:
        f.read(8)
        length = struct.unpack("<I", f.read(4))[0]
        f.read(4)
        root = ET.fromstring(f.read(length))
    return dict(root.find(f"{NS}Image").attrib)


def hand_written_xisf(path: Path, planes_or_pixels: bytes, *, geometry: str, sample: str,
                      storage: str, byte_order: str = "little",
                      keywords: tuple[tuple[str, str, str], ...] = ()) -> Path:
    """A monolithic XISF file built here byte by byte (not with the writer under test)."""
    kw = "".join(f'<FITSKeyword name="{n}" value="{v}" comment="{c}"/>' for n, v, c in keywords)
    position = 4096
    space = "RGB" if geometry.endswith(":3") else "Gray"

    def header(pos: int) -> bytes:
        return (f'<?xml version="1.0" encoding="UTF-8"?><xisf version="1.0" '
                f'xmlns="http://www.pixinsight.com/xisf"><Image geometry="{geometry}" '
                f'sampleFormat="{sample}" colorSpace="{space}" '
                f'pixelStorage="{storage}" byteOrder="{byte_order}" bounds="0:65535" '
                f'location="attachment:{pos}:{len(planes_or_pixels)}">{kw}</Image>'
                f'<Metadata/></xisf>').encode()

    xml = header(position)
    blob = b"XISF0100" + struct.pack("<I", len(xml)) + b"\0" * 4 + xml
    path.write_bytes(blob.ljust(position, b"\0") + planes_or_pixels)
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(21)


def test_round_trip_mono_with_metadata_and_history(tmp_path, rng):
    data = rng.uniform(0, 4000, size=(5, 7)).astype(np.float32)
    history = ("calibrate v1: bias 'master' & flat <none>", "stack v2: " + "y" * 120)
    path = write_xisf(tmp_path / "a.xisf", data, meta=META, history=history,
                      cards={"NCOMBINE": 9, "ROTATED": True, "PEDSTL": 1.5e-3})
    frame = read_xisf(path)
    np.testing.assert_array_equal(frame.data, data)
    assert frame.data.dtype == np.float32 and frame.data.flags.owndata
    assert frame.history == history  # one HISTORY keyword per line, never wrapped
    got = frame.meta
    assert got.replace(path=None, format="") == META
    assert got.header["NCOMBINE"] == 9 and got.header["ROTATED"] is True
    assert got.header["PEDSTL"] == 1.5e-3
    assert read_xisf_meta(path) == got
    attrs = _image_attrs(path)
    assert attrs["sampleFormat"] == "Float32" and attrs["pixelStorage"] == "Planar"
    assert attrs["imageType"] == "Dark" and attrs["bounds"] == "0:65535"


def test_round_trip_colour_through_dispatch(tmp_path, rng):
    data = rng.uniform(0, 1, size=(3, 4, 6)).astype(np.float32)
    path = write(tmp_path / "c.xisf", data, meta=FrameMeta(kind="light", exposure=60.0))
    frame = read(path)
    np.testing.assert_array_equal(frame.data, data)
    assert frame.meta.shape == (3, 4, 6) and frame.meta.exposure == 60.0
    attrs = _image_attrs(path)
    assert attrs["colorSpace"] == "RGB" and attrs["geometry"] == "6:4:3"
    assert attrs["bounds"] == "0:1"
    # The xisf package reads what we wrote.
    np.testing.assert_array_equal(XISF.read(str(path)), np.moveaxis(data, 0, -1))


def test_bounds_cover_data_outside_the_usual_ranges(tmp_path):
    path = write_xisf(tmp_path / "n.xisf", np.array([[-2.0, 3.0], [70000.0, np.nan]]))
    assert _image_attrs(path)["bounds"] == "-2.0:70000.0"
    np.testing.assert_array_equal(np.isnan(read_xisf(path).data), [[False, False],
                                                                   [False, True]])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.float32, np.float64])
@pytest.mark.parametrize("codec", [None, "zlib", "lz4hc", "zstd"])
def test_read_files_of_the_xisf_package(tmp_path, rng, dtype, codec):
    rgb = rng.uniform(0, 250, size=(4, 6, 3)).astype(dtype)
    meta = {"FITSKeywords": {"EXPTIME": [{"value": "30.", "comment": "s"}],
                             "IMAGETYP": [{"value": "'Flat Frame'", "comment": ""}],
                             "BAYERPAT": [{"value": "'RGGB'", "comment": ""}]}}
    XISF.write(str(tmp_path / "p.xisf"), rgb, image_metadata=meta, codec=codec,
               shuffle=codec is not None)
    frame = read_xisf(tmp_path / "p.xisf")
    np.testing.assert_array_equal(frame.data, np.moveaxis(rgb, -1, 0).astype(np.float32))
    assert (frame.meta.exposure, frame.meta.kind, frame.meta.bayer) == (30.0, "flat", None)
    mono = rgb[..., :1]
    XISF.write(str(tmp_path / "m.xisf"), mono, image_metadata=meta, codec=codec)
    m = read_xisf(tmp_path / "m.xisf")
    np.testing.assert_array_equal(m.data, mono[..., 0].astype(np.float32))
    assert m.meta.bayer == "RGGB" and m.meta.cfa == "bayer"
    assert m.meta.bit_depth == (None if np.dtype(dtype).kind == "f"
                                else np.dtype(dtype).itemsize * 8)


def test_normal_pixel_storage(tmp_path, rng):
    rgb = rng.integers(0, 65535, size=(3, 5, 4)).astype(np.uint16)  # (c, h, w)
    interleaved = np.ascontiguousarray(np.moveaxis(rgb, 0, -1)).astype("<u2").tobytes()
    path = hand_written_xisf(tmp_path / "n.xisf", interleaved, geometry="4:5:3",
                             sample="UInt16", storage="Normal",
                             keywords=(("EXPTIME", "12.5", ""), ("OBJECT", "'M 31'", "")))
    frame = read_xisf(path)
    np.testing.assert_array_equal(frame.data, rgb)
    assert frame.meta.exposure == 12.5 and frame.meta.object == "M 31"


def test_big_endian_planar_block(tmp_path, rng):
    mono = rng.uniform(-5, 5, size=(3, 4)).astype(np.float32)
    path = hand_written_xisf(tmp_path / "b.xisf", mono.astype(">f4").tobytes(),
                             geometry="4:3:1", sample="Float32", storage="Planar",
                             byte_order="big")
    frame = read_xisf(path)
    np.testing.assert_array_equal(frame.data, mono)
    assert frame.data.dtype.isnative


def test_metadata_from_xisf_properties_when_keywords_are_absent(tmp_path):
    props = {
        "Instrument:ExposureTime": {"id": "Instrument:ExposureTime", "type": "Float32",
                                    "value": 180.0},
        "Instrument:Filter:Name": {"id": "Instrument:Filter:Name", "type": "String",
                                   "value": "Ha"},
        "Instrument:Sensor:Temperature": {"id": "Instrument:Sensor:Temperature",
                                          "type": "Float32", "value": -20.0},
        "Instrument:Telescope:FocalLength": {"id": "Instrument:Telescope:FocalLength",
                                             "type": "Float32", "value": 0.5},
        "Observation:Time:Start": {"id": "Observation:Time:Start", "type": "TimePoint",
                                   "value": "2024-03-04T05:06:07Z"},
    }
    XISF.write(str(tmp_path / "p.xisf"), np.zeros((3, 4, 1), np.float32),
               image_metadata={"XISFProperties": props})
    meta = read_meta(tmp_path / "p.xisf")
    assert (meta.exposure, meta.filter, meta.temperature) == (180.0, "Ha", -20.0)
    assert meta.focal_length == 500.0
    assert meta.date == datetime(2024, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def test_write_refuses_bad_shapes(tmp_path):
    with pytest.raises(OutputError, match=r"x\.xisf: cannot write an array of shape \(2, 3, 3\)"):
        write_xisf(tmp_path / "x.xisf", np.zeros((2, 3, 3)))
    assert list(tmp_path.iterdir()) == []
