"""TIFF reading and writing (deepsky.io.tiff)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest
import tifffile

from deepsky.errors import InputError, OutputError
from deepsky.io import read, read_meta, write
from deepsky.io.tiff import read_tiff, read_tiff_meta, write_tiff
from deepsky.types import FrameMeta

META = FrameMeta(kind="light", width=12, height=10, exposure=30.0, gain=100.0,
                 temperature=-10.0, set_temperature=-10.0, filter="L'", binning=(2, 2),
                 bayer="GBRG", cfa="bayer",
                 date=datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc),
                 instrument="ZWO ASI294MC Pro", telescope="RC8", object="M 42",
                 black_level=64.0, white_level=65535.0, focal_length=530.0, pixel_size=4.63)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


def test_write_16_bit_rounds_clips_and_keeps_metadata(tmp_path):
    data = np.array([[-3.0, 0.49, 0.5, 1.5], [65534.5, 65535.4, 9e9, np.nan]], np.float32)
    meta = META.replace(width=4, height=2)
    path = write_tiff(tmp_path / "a.tif", data, bits=16, meta=meta,
                      history=("calibrate v1: dark", "stack v2: 12 frames"),
                      cards={"NCOMBINE": 12})
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].dtype == np.uint16
    frame = read_tiff(path)
    np.testing.assert_array_equal(frame.data, [[0, 0, 0, 2], [65534, 65535, 65535, 0]])
    assert frame.data.dtype == np.float32 and frame.data.flags.owndata
    assert frame.history == ("calibrate v1: dark", "stack v2: 12 frames")
    got = frame.meta
    assert got.replace(path=None, format="", bit_depth=None) == meta
    assert (got.format, got.bit_depth, got.path) == ("tiff", 16, path)
    assert got.header["NCOMBINE"] == 12
    assert read_tiff_meta(path) == got


def test_write_32_bit_float_colour_exact(tmp_path, rng):
    data = rng.uniform(-10, 1e5, size=(3, 5, 7)).astype(np.float32)
    path = write(tmp_path / "c.tiff", data, bits=32, meta=FrameMeta(kind="flat", exposure=2.0))
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.dtype == np.float32 and page.shape == (5, 7, 3)
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
    frame = read(path)
    np.testing.assert_array_equal(frame.data, data)
    assert frame.meta.shape == (3, 5, 7)
    assert (frame.meta.kind, frame.meta.exposure, frame.meta.bayer) == ("flat", 2.0, None)


def test_default_bits_is_16(tmp_path):
    path = write(tmp_path / "d.tif", np.full((2, 3), 7.6, np.float32))
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].dtype == np.uint16
    np.testing.assert_array_equal(read(path).data, np.full((2, 3), 8.0))


def test_description_holds_the_cards_as_json(tmp_path):
    path = write_tiff(tmp_path / "j.tif", np.zeros((2, 2)), meta=META.replace(width=2,
                                                                                height=2))
    with tifffile.TiffFile(path) as tif:
        block = json.loads(tif.pages[0].description)["deepsky"]
    cards = {k: v for k, v, _ in block["cards"]}
    assert cards["EXPTIME"] == 30.0 and cards["BAYERPAT"] == "GBRG"
    assert cards["DATE-OBS"] == "2024-01-02T03:04:05.678000"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int16, np.float16,
                                   np.float32, np.float64])
def test_read_sample_types_mono_rgb_planar(tmp_path, rng, dtype):
    mono = rng.uniform(0, 250, size=(6, 9)).astype(dtype)
    rgb = rng.uniform(0, 250, size=(6, 9, 3)).astype(dtype)
    tifffile.imwrite(tmp_path / "m.tif", mono)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(rgb, -1, 0), photometric="rgb",
                     planarconfig="separate")
    m = read_tiff(tmp_path / "m.tif")
    np.testing.assert_array_equal(m.data, mono.astype(np.float32))
    assert m.meta.shape == (6, 9) and m.data.dtype == np.float32
    expected_bits = None if np.dtype(dtype).kind == "f" else np.dtype(dtype).itemsize * 8
    assert m.meta.bit_depth == expected_bits
    for name in ("c.tif", "p.tif"):
        c = read_tiff(tmp_path / name)
        np.testing.assert_array_equal(c.data, np.moveaxis(rgb, -1, 0).astype(np.float32))
        assert c.meta.shape == (3, 6, 9) and c.data.flags.c_contiguous


def test_alpha_is_dropped_and_grey_alpha_is_mono(tmp_path, rng):
    rgba = rng.integers(0, 65535, size=(4, 5, 4)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", rgba, photometric="rgb", extrasamples=[2])
    np.testing.assert_array_equal(read_tiff(tmp_path / "a.tif").data,
                                  np.moveaxis(rgba[..., :3], -1, 0))
    ga = rng.integers(0, 255, size=(4, 5, 2)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "g.tif", ga, photometric="minisblack", extrasamples=[2])
    np.testing.assert_array_equal(read_tiff(tmp_path / "g.tif").data, ga[..., 0])


def test_deflate_compressed_tiff(tmp_path, rng):
    data = rng.integers(0, 65535, size=(8, 8)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", data, compression="zlib")
    np.testing.assert_array_equal(read_tiff(tmp_path / "z.tif").data, data)


def test_first_page_of_a_multipage_file(tmp_path, rng):
    pages = rng.integers(0, 255, size=(3, 4, 5)).astype(np.uint8)
    with tifffile.TiffWriter(tmp_path / "s.tif") as tw:
        for page in pages:
            tw.write(page, contiguous=False)
    np.testing.assert_array_equal(read_tiff(tmp_path / "s.tif").data, pages[0])


def test_foreign_tiff_metadata_from_tags(tmp_path):
    data = np.zeros((4, 4), np.uint16)
    tifffile.imwrite(tmp_path / "cam.tif", data, datetime="2023:09:10 11:12:13",
                     extratags=[(271, "s", 0, "Canon", True), (272, "s", 0, "EOS 6D", True)])
    meta = read_meta(tmp_path / "cam.tif")
    assert meta.instrument == "Canon EOS 6D"
    assert meta.date == datetime(2023, 9, 10, 11, 12, 13, tzinfo=timezone.utc)
    assert (meta.kind, meta.exposure, meta.white_level) == ("unknown", None, 65535.0)


def test_write_refuses_bad_bits_and_shapes_leaving_nothing(tmp_path):
    with pytest.raises(OutputError, match=r"a\.tif: bits must be 16 or 32, got 8"):
        write_tiff(tmp_path / "a.tif", np.zeros((2, 2)), bits=8)
    with pytest.raises(OutputError, match=r"a\.tif: cannot write an array of shape \(4, 2, 2\)"):
        write_tiff(tmp_path / "a.tif", np.zeros((4, 2, 2)))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = write_tiff(tmp_path / "keep.tif", np.ones((2, 2)))
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tifffile, "imwrite", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_tiff(path, np.zeros((2, 2)))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.tif"]


def test_compression_without_its_codec_says_what_to_install(tmp_path):
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("imagecodecs is installed: LZW can be decoded")
    path = tmp_path / "l.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint16))
    blob = bytearray(path.read_bytes())
    ifd = int.from_bytes(blob[4:8], "little")
    for k in range(int.from_bytes(blob[ifd:ifd + 2], "little")):
        entry = ifd + 2 + 12 * k
        if int.from_bytes(blob[entry:entry + 2], "little") == 259:  # Compression -> LZW
            blob[entry + 8:entry + 10] = (5).to_bytes(2, "little")
    path.write_bytes(bytes(blob))
    with pytest.raises(InputError, match=r"l\.tif: TIFF compression LZW needs the optional "
                                         r"'imagecodecs' package"):
        read_tiff(path)
