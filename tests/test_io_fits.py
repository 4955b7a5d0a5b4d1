"""FITS reading and writing (deepsky.io.fits): scaling, cubes, compression, Bayer/ROWORDER,
keyword dialects, row bands."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from deepsky.errors import InputError, OutputError
from deepsky.io import read, write
from deepsky.io.fits import TiledFits, read_fits, read_fits_meta, read_fits_rows, write_fits
from deepsky.types import BAYER_PATTERNS, FrameMeta, bayer_channel_masks, bayer_shift
from deepsky.io.sources import open_source

COLOUR_VALUES = {"R": 1000.0, "G": 2000.0, "B": 3000.0}


# ----------------------------------------------------------------------------------------------
# A FITS file written byte by byte (independent of astropy's writer)
# ----------------------------------------------------------------------------------------------
def _card(key: str, value: object) -> bytes:
    if isinstance(value, bool):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, str):
        text = "'" + value.replace("'", "''").ljust(8) + "'"
    else:
        text = f"{value!r:>20}" if isinstance(value, float) else f"{value:>20}"
    return f"{key:<8}= {text}".ljust(80).encode("ascii")


def fits_bytes(stored: np.ndarray, bitpix: int, cards: dict[str, object] | None = None) -> bytes:
    """A primary HDU: ``stored`` (numpy order, C-contiguous) written big-endian as is."""
    head = [_card("SIMPLE", True), _card("BITPIX", bitpix), _card("NAXIS", stored.ndim)]
    for i, n in enumerate(reversed(stored.shape), start=1):
        head.append(_card(f"NAXIS{i}", n))
    for key, value in (cards or {}).items():
        head.append(_card(key, value))
    head.append(b"END".ljust(80))
    header = b"".join(head)
    header += b" " * (-len(header) % 2880)
    dtype = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}[bitpix]
    data = np.ascontiguousarray(stored, dtype=dtype).tobytes()
    return header + data + b"\0" * (-len(data) % 2880)


def write_raw_fits(path: Path, stored: np.ndarray, bitpix: int, **cards: object) -> Path:
    path.write_bytes(fits_bytes(stored, bitpix, {k.replace("_", "-"): v
                                                  for k, v in cards.items()}))
    return path


# ----------------------------------------------------------------------------------------------
# BITPIX, BZERO, BSCALE
# ----------------------------------------------------------------------------------------------
_SCALINGS = [
    # bitpix, stored values, BZERO, BSCALE
    (8, np.array([[0, 1, 128], [200, 254, 255]], np.uint8), None, None),
    (8, np.array([[0, 1, 128], [200, 254, 255]], np.uint8), -128, 1),
    (16, np.array([[-32768, -1, 0], [1, 1234, 32767]], np.int16), 32768, 1),
    (16, np.array([[-32768, -1, 0], [1, 1234, 32767]], np.int16), None, None),
    (16, np.array([[-200, -1, 0], [1, 1234, 32767]], np.int16), 100, 0.5),
    (32, np.array([[-2**31, -2**31 + 5, -2**31 + 65535], [0, 1, 1000]], np.int32), 2**31, 1),
    (32, np.array([[-7, 0, 3], [1000, 65535, 16000000]], np.int32), 10, 2),
    (-32, np.array([[-1.5, 0.0, 0.25], [1e-3, 65535.0, 3.4e38]], np.float32), None, None),
    (-32, np.array([[-1.5, 0.0, 0.25], [1.0, 4.0, 1024.0]], np.float32), 1.0, 2.0),
    (-64, np.array([[-1.5, 0.0, 0.25], [1e-3, 65535.0, 1e30]], np.float64), None, None),
]


def _scaled_fits(tmp_path, stored, bitpix, bzero, bscale):
    """A plain FITS file of ``stored`` with the scaling cards given (None: no card)."""
    cards = {}
    if bscale is not None:
        cards["BSCALE"] = float(bscale)
    if bzero is not None:
        cards["BZERO"] = float(bzero) if isinstance(bzero, float) else bzero
    return write_raw_fits(tmp_path / "s.fits", stored, bitpix, **cards)


@pytest.mark.parametrize("bitpix, stored, bzero, bscale", _SCALINGS)
def test_bitpix_with_bzero_bscale(tmp_path, bitpix, stored, bzero, bscale):
    path = _scaled_fits(tmp_path, stored, bitpix, bzero, bscale)
    expected = (stored.astype(np.float64) * (1 if bscale is None else bscale)
                + (0 if bzero is None else bzero)).astype(np.float32)
    frame = read_fits(path)
    assert frame.data.dtype == np.float32 and frame.data.dtype.isnative
    assert frame.data.flags.owndata and frame.data.flags.c_contiguous
    np.testing.assert_array_equal(frame.data, expected)
    assert frame.meta.bit_depth == (bitpix if bitpix > 0 else None)
    if bitpix == 16 and bzero == 32768:
        assert frame.meta.white_level == 65535.0
    np.testing.assert_array_equal(read_fits_rows(path, 1, 2), expected[1:2])


def test_blank_follows_astropy(tmp_path):
    """BLANK pixels read as NaN where the scaling makes the data floating point; with the
    unsigned conventions (BZERO = 32768 on BITPIX 16) the values stay as stored."""
    stored = np.array([[0, -5, 7], [-5, 1, 2]], np.int16)
    unsigned = read_fits(write_raw_fits(tmp_path / "u.fits", stored, 16, BZERO=32768,
                                        BLANK=-5)).data
    np.testing.assert_array_equal(unsigned, stored + 32768.0)
    scaled = read_fits(write_raw_fits(tmp_path / "s.fits", stored, 16, BSCALE=0.5,
                                      BLANK=-5)).data
    assert np.isnan(scaled[0, 1]) and np.isnan(scaled[1, 0])
    assert scaled[0, 2] == 3.5 and scaled[1, 2] == 1.0
    np.testing.assert_array_equal(np.isnan(read_fits_rows(tmp_path / "s.fits", 1, 2)),
                                  [[True, False, False]])


def test_uint16_round_trip_through_write_fits(tmp_path):
    data = np.array([[-5.0, 0.4, 0.6], [65534.6, 70000.0, np.nan]], np.float32)
    write_fits(tmp_path / "u.fits", data, dtype=np.uint16)
    with fits.open(tmp_path / "u.fits") as hdul:
        assert hdul[0].header["BITPIX"] == 16 and hdul[0].header["BZERO"] == 32768
    np.testing.assert_array_equal(read_fits(tmp_path / "u.fits").data,
                                  [[0, 0, 1], [65535, 65535, 0]])


# ----------------------------------------------------------------------------------------------
# Cubes
# ----------------------------------------------------------------------------------------------
def test_colour_cube_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    cube = rng.uniform(0, 60000, size=(3, 5, 7)).astype(np.float32)
    meta = FrameMeta(kind="light", exposure=120.0, channels=3)
    write_fits(tmp_path / "c.fits", cube, meta=meta, history=("stack v1: 3 frames",))
    frame = read_fits(tmp_path / "c.fits")
    np.testing.assert_array_equal(frame.data, cube)
    assert frame.meta.shape == (3, 5, 7) and frame.meta.bayer is None
    assert frame.meta.kind == "light" and frame.meta.exposure == 120.0
    assert frame.history == ("stack v1: 3 frames",)
    np.testing.assert_array_equal(read_fits_rows(tmp_path / "c.fits", 2, 4), cube[:, 2:4])


def test_single_plane_cube_is_mono_and_alpha_plane_is_dropped(tmp_path):
    plane = np.arange(12, dtype=np.int16).reshape(1, 3, 4)
    mono = read_fits(write_raw_fits(tmp_path / "m.fits", plane, 16))
    assert mono.data.shape == (3, 4) and mono.meta.channels == 1
    np.testing.assert_array_equal(mono.data, plane[0])
    rgba = np.arange(48, dtype=np.int16).reshape(4, 3, 4)
    colour = read_fits(write_raw_fits(tmp_path / "a.fits", rgba, 16, BAYERPAT="RGGB"))
    np.testing.assert_array_equal(colour.data, rgba[:3])
    assert colour.meta.bayer is None  # BAYERPAT means nothing for colour data
    np.testing.assert_array_equal(read_fits_rows(tmp_path / "a.fits", 1, 3), rgba[:3, 1:3])


def test_unsupported_dimensions_are_refused(tmp_path):
    two = write_raw_fits(tmp_path / "two.fits", np.zeros((2, 3, 4), np.int16), 16)
    with pytest.raises(InputError, match=r"two\.fits: unsupported image shape"):
        read_fits(two)


# ----------------------------------------------------------------------------------------------
# Compression
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def u16() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 65536, size=(37, 23)).astype(np.uint16)


def _write_fz(path: Path, data: np.ndarray, header: fits.Header | None = None,
              tile: tuple[int, ...] | None = None) -> Path:
    comp = fits.CompImageHDU(data, header=header, compression_type="RICE_1",
                             tile_shape=tile)
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(path)
    return path


def test_tile_compressed_fz(tmp_path, u16):
    header = fits.Header([("EXPTIME", 30.0), ("BAYERPAT", "GRBG"), ("IMAGETYP", "Dark")])
    path = _write_fz(tmp_path / "a.fits.fz", u16, header, tile=(8, 23))
    frame = read_fits(path)
    np.testing.assert_array_equal(frame.data, u16)
    m = frame.meta
    assert (m.width, m.height, m.bit_depth, m.white_level) == (23, 37, 16, 65535.0)
    assert (m.kind, m.exposure, m.bayer) == ("dark", 30.0, "GRBG")
    assert read_fits_meta(path) == m
    for y0, y1 in ((0, 1), (5, 19), (30, 37), (0, 37)):
        np.testing.assert_array_equal(read_fits_rows(path, y0, y1), u16[y0:y1])


def test_fz_colour_cube(tmp_path):
    cube = np.random.default_rng(6).integers(0, 5000, size=(3, 9, 11)).astype(np.int32)
    path = _write_fz(tmp_path / "c.fz", cube)
    np.testing.assert_array_equal(read_fits(path).data, cube)
    np.testing.assert_array_equal(read_fits_rows(path, 4, 8), cube[:, 4:8])


@pytest.mark.parametrize("name", ["a.fits.gz", "a.fit.gz", "a.fts.gz"])
def test_gzipped_fits(tmp_path, u16, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(fits_bytes(u16.astype(np.int32) - 32768, 16,
                                              {"BZERO": 32768, "EXPTIME": 5.0})))
    frame = read(path)
    np.testing.assert_array_equal(frame.data, u16)
    assert frame.meta.exposure == 5.0
    np.testing.assert_array_equal(read_fits_rows(path, 10, 12), u16[10:12])


@pytest.mark.parametrize("suffix", [".fit", ".fits", ".fts"])
def test_plain_suffixes_and_rows(tmp_path, u16, suffix):
    path = write_fits(tmp_path / f"a{suffix}", u16, dtype=np.uint16)
    np.testing.assert_array_equal(read(path).data, u16)
    np.testing.assert_array_equal(read_fits_rows(path, 3, 9), u16[3:9])
    assert read_fits_rows(path, 4, 4).shape == (0, 23)


def test_rows_outside_the_image_are_refused(tmp_path, u16):
    path = write_fits(tmp_path / "a.fits", u16)
    for y0, y1 in ((-1, 3), (5, 2), (0, 38)):
        with pytest.raises(InputError, match=r"a\.fits: rows y0=.*outside the image"):
            read_fits_rows(path, y0, y1)


# ----------------------------------------------------------------------------------------------
# Bayer pattern, offsets and ROWORDER
# ----------------------------------------------------------------------------------------------
def _coded_mosaic(pattern: str, height: int, width: int) -> np.ndarray:
    """Top-down image whose pixels hold 1000/2000/3000 where ``pattern`` (seen from the top-left
    pixel) puts R/G/B."""
    grid = np.array([COLOUR_VALUES[c] for c in pattern]).reshape(2, 2)
    yy, xx = np.mgrid[0:height, 0:width]
    return grid[yy % 2, xx % 2].astype(np.int16)


def _assert_bayer_names_the_pixels(data: np.ndarray, bayer: str) -> None:
    masks = bayer_channel_masks(bayer, data.shape)
    for k, colour in enumerate("RGB"):
        assert np.unique(data[masks[k]]).tolist() == [COLOUR_VALUES[colour]], colour


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("height", [6, 7])
@pytest.mark.parametrize("roworder", [None, "TOP-DOWN", "BOTTOM-UP"])
@pytest.mark.parametrize("xoff, yoff", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_effective_bayer_pattern_names_the_right_pixels(tmp_path, pattern, height, roworder,
                                                       xoff, yoff):
    """The camera's image has ``pattern`` at its top-left pixel; BAYERPAT plus the offsets
    describe it (colour of image pixel (x, y) = BAYERPAT[(y + YBAYROFF) % 2][(x + XBAYROFF) %
    2]); a BOTTOM-UP camera stores the rows reversed. ``meta.bayer`` must name the colour of
    the pixels of the array as read."""
    image = _coded_mosaic(pattern, height, 8)
    stored = image[::-1] if roworder == "BOTTOM-UP" else image
    cards: dict[str, object] = {"BAYERPAT": bayer_shift(pattern, xoff, yoff)}
    if xoff or yoff:
        cards.update(XBAYROFF=xoff, YBAYROFF=yoff)
    if roworder:
        cards["ROWORDER"] = roworder
    path = write_raw_fits(tmp_path / "m.fits", stored, 16, **cards)
    frame = read_fits(path)
    np.testing.assert_array_equal(frame.data, stored)
    assert frame.meta.cfa == "bayer"
    _assert_bayer_names_the_pixels(frame.data, frame.meta.bayer)
    # Written back: TOP-DOWN, no offsets, the effective pattern; it reads the same.
    out = write_fits(tmp_path / "out.fits", frame.data, meta=frame.meta)
    with fits.open(out) as hdul:
        h = hdul[0].header
        assert (h["ROWORDER"], h["XBAYROFF"], h["YBAYROFF"]) == ("TOP-DOWN", 0, 0)
        assert h["BAYERPAT"] == frame.meta.bayer
    again = read_fits(out)
    assert again.meta.bayer == frame.meta.bayer
    np.testing.assert_array_equal(again.data, frame.data)


def test_bottom_up_flip_depends_on_height_parity(tmp_path):
    even = read_fits_meta(write_raw_fits(tmp_path / "e.fits", np.zeros((4, 4), np.int16), 16,
                                         BAYERPAT="RGGB", ROWORDER="BOTTOM-UP"))
    odd = read_fits_meta(write_raw_fits(tmp_path / "o.fits", np.zeros((5, 4), np.int16), 16,
                                        BAYERPAT="RGGB", ROWORDER="BOTTOM-UP"))
    assert (even.bayer, odd.bayer) == ("GBRG", "RGGB")


# ----------------------------------------------------------------------------------------------
# Keyword dialects
# ----------------------------------------------------------------------------------------------
_DIALECTS = [
    ({"EXPTIME": 10.0}, "exposure", 10.0),
    ({"EXPOSURE": 2.5}, "exposure", 2.5),
    ({"EXPTIME": 3.0, "EXPOSURE": 99.0}, "exposure", 3.0),
    ({"GAIN": 80}, "gain", 80.0),
    ({"EGAIN": 1.43}, "egain", 1.43),
    ({"ISOSPEED": 1600}, "iso", 1600),
    ({"CCD-TEMP": -9.8}, "temperature", -9.8),
    ({"SET-TEMP": -10.0}, "set_temperature", -10.0),
    ({"FILTER": "Ha 7nm"}, "filter", "Ha 7nm"),
    ({"XBINNING": 2, "YBINNING": 2}, "binning", (2, 2)),
    ({"XBINNING": 3}, "binning", (3, 3)),
    ({"IMAGETYP": "Light Frame"}, "kind", "light"),
    ({"IMAGETYP": "Light"}, "kind", "light"),
    ({"IMAGETYP": "science"}, "kind", "light"),
    ({"IMAGETYP": "Dark Frame"}, "kind", "dark"),
    ({"IMAGETYP": "Flat Field"}, "kind", "flat"),
    ({"IMAGETYP": "Bias Frame"}, "kind", "bias"),
    ({"IMAGETYP": "zero"}, "kind", "bias"),
    ({"IMAGETYP": "Dark Flat"}, "kind", "darkflat"),
    ({"FRAME": "Flat"}, "kind", "flat"),
    ({"IMAGETYP": "focus"}, "kind", "unknown"),
    ({"DATE-OBS": "2025-03-27T01:26:45.943164"}, "date",
     datetime(2025, 3, 27, 1, 26, 45, 943164, tzinfo=timezone.utc)),
    ({"DATE-OBS": "2021-03-28", "TIME-OBS": "23:06:34"}, "date",
     datetime(2021, 3, 28, 23, 6, 34, tzinfo=timezone.utc)),
    ({"DATE-OBS": "2021-03-28T23:06:34Z"}, "date",
     datetime(2021, 3, 28, 23, 6, 34, tzinfo=timezone.utc)),
    ({"INSTRUME": "ZWO ASI2600MC Pro"}, "instrument", "ZWO ASI2600MC Pro"),
    ({"TELESCOP": "RedCat 51"}, "telescope", "RedCat 51"),
    ({"FOCALLEN": 250}, "focal_length", 250.0),
    ({"XPIXSZ": 3.76}, "pixel_size", 3.76),
]


@pytest.mark.parametrize("cards, field, expected", _DIALECTS)
def test_keyword_dialects(tmp_path, cards, field, expected):
    path = write_raw_fits(tmp_path / "k.fits", np.zeros((2, 2), np.int16), 16)
    path.write_bytes(fits_bytes(np.zeros((2, 2), np.int16), 16, cards))
    assert getattr(read_fits_meta(path), field) == expected


def test_missing_keywords_are_none(tmp_path):
    meta = read_fits_meta(write_raw_fits(tmp_path / "n.fits", np.zeros((2, 3), np.int16), 16))
    assert (meta.exposure, meta.gain, meta.iso, meta.temperature, meta.filter, meta.date,
            meta.instrument, meta.bayer, meta.cfa) == (None,) * 9
    assert meta.kind == "unknown" and meta.binning == (1, 1)
    assert (meta.width, meta.height, meta.channels) == (3, 2, 1)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def test_metadata_and_history_round_trip(tmp_path):
    meta = FrameMeta(kind="flat", exposure=1.25, gain=100.0, egain=0.8, temperature=-10.5,
                     set_temperature=-10.0, filter="OIII", binning=(2, 2), bayer="GBRG",
                     cfa="bayer", date=datetime(2024, 2, 3, 4, 5, 6, 789000, tzinfo=timezone.utc),
                     instrument="ZWO ASI294MC", telescope="RC8", object="NGC 7000",
                     black_level=12.0, white_level=65535.0, focal_length=1625.0,
                     pixel_size=4.63, width=8, height=6)
    data = np.random.default_rng(1).uniform(0, 1000, size=(6, 8)).astype(np.float32)
    history = ("calibrate v1: bias, flat", "x" * 150)
    path = write(tmp_path / "w.fits", data, meta=meta, history=history,
                 cards={"NCOMBINE": 7})
    frame = read(path)
    np.testing.assert_array_equal(frame.data, data)
    got = frame.meta
    assert got.replace(path=None, format="", bit_depth=None) == meta
    assert got.header["NCOMBINE"] == 7
    # Long history lines are wrapped into 70-character HISTORY cards.
    assert frame.history == ("calibrate v1: bias, flat", "x" * 70, "x" * 70, "x" * 10)


def test_write_refuses_bad_shapes_and_leaves_nothing(tmp_path):
    for bad in (np.zeros((2, 3, 4)), np.zeros(5), np.zeros((0, 3))):
        with pytest.raises(OutputError, match=r"b\.fits: cannot write an array of shape"):
            write_fits(tmp_path / "b.fits", bad)
    assert list(tmp_path.iterdir()) == []


def test_write_overwrite_false(tmp_path):
    path = write_fits(tmp_path / "a.fits", np.zeros((2, 2)))
    with pytest.raises(OutputError, match="already exists"):
        write_fits(path, np.ones((2, 2)), overwrite=False)


def test_gzip_stream_without_gz_suffix(tmp_path, u16):
    """A gzipped file is recognised by its content; the truncation check must not compare
    the compressed size with the header's pixel count."""
    path = tmp_path / "packed.fits"
    path.write_bytes(gzip.compress(fits_bytes(u16.astype(np.int32) - 32768, 16,
                                              {"BZERO": 32768})))
    np.testing.assert_array_equal(read_fits(path).data, u16)
    # The pipeline's band reader decodes it too (it used to map the compressed bytes with
    # the decompressed stream's data offset: "truncated").
    from deepsky.io.sources import open_source

    src = open_source(path)
    assert src.offset is None
    np.testing.assert_array_equal(src.read_rows(3, 7), u16[3:7])


# ----------------------------------------------------------------------------------------------
# TiledFits: a file laid out first, filled a region at a time
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_tiled_fits_writes_the_bytes_write_fits_writes(tmp_path, channels):
    """Filled region by region in any order (whole-row bands and partial rows), the file is
    byte for byte what write_fits writes for the same arrays, cards and history."""
    rng = np.random.default_rng(channels)
    h, w = 61, 47
    img = (h, w) if channels == 1 else (channels, h, w)
    data = rng.normal(100, 10, img).astype(np.float32)
    data.flat[5] = np.nan
    weight = rng.random((h, w)).astype(np.float32)
    low = rng.integers(0, 65536, img).astype(np.uint16)
    used = rng.integers(0, 65536, (h, w)).astype(np.uint16)
    cards = {"NCOMBINE": 20, "OBJECT": "M 94 é", "REFFRAME": "x" * 60}
    history = ["deepsky: " + "a long history line " * 8, "second"]
    arrays = [("WEIGHT", weight, {"COMMENT": "weights"}), ("COVERAGE", used, None),
              ("REJ_LOW", low, {"COMMENT": "low"})]
    write_fits(tmp_path / "whole.fits", data, cards=cards, history=history, extensions=arrays)
    tf = TiledFits(tmp_path / "part.fits", [(None, img, np.float32, cards, history)] + [
        (name, a.shape, a.dtype, c, ()) for name, a, c in arrays]).create()
    everything = [data] + [a for _n, a, _c in arrays]
    for y0, y1, x0, x1 in [(40, 61, 20, 47), (0, 25, 0, 47), (25, 40, 0, 47), (40, 61, 0, 20)]:
        for k, a in enumerate(everything):
            tf.write(k, a[..., y0:y1, x0:x1], y0, x0)
    for k, a in enumerate(everything):  # regions read back as written
        got = tf.read(k, 10, 50, 5, 30)
        assert got.dtype == a.dtype
        np.testing.assert_array_equal(got.reshape(a[..., 10:50, 5:30].shape), a[..., 10:50, 5:30])
    final = tf.commit(tmp_path / "stack.fits")
    assert not (tmp_path / "part.fits").exists()
    assert final.read_bytes() == (tmp_path / "whole.fits").read_bytes()


def test_tiled_fits_reopens_only_its_own_layout(tmp_path):
    layout = [(None, (8, 8), np.float32, {"DSKYKEY": "abc"}, ())]
    tf = TiledFits(tmp_path / "p.fits", layout).create()
    tf.write(0, np.ones((8, 8), np.float32), 0, 0)
    tf.close()
    again = TiledFits(tmp_path / "p.fits", layout)
    assert again.open_existing()
    np.testing.assert_array_equal(again.read(0, 0, 8, 0, 8)[0], 1.0)
    again.close()
    other = TiledFits(tmp_path / "p.fits", [(None, (8, 8), np.float32, {"DSKYKEY": "xyz"}, ())])
    assert not other.open_existing()  # other cards: not this layout
    bigger = TiledFits(tmp_path / "p.fits", [(None, (8, 9), np.float32, {"DSKYKEY": "abc"}, ())])
    assert not bigger.open_existing()
    assert not TiledFits(tmp_path / "none.fits", layout).open_existing()


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint16])
def test_write_fits_leaves_the_arrays_alone_while_writing(tmp_path, monkeypatch, dtype):
    """astropy writes a little-endian array by swapping its bytes in place and back: another
    thread reading it meanwhile (a master is written while the next is built from it) saw
    garbage. write_fits hands astropy big-endian copies, so the arrays never change."""
    import astropy.io.fits.file as fits_file

    data = np.linspace(-5, 5, 48, dtype=np.float32).reshape(6, 8)
    ext = np.arange(48, dtype=dtype).reshape(6, 8)
    before = (data.copy(), ext.copy())
    intact = []
    real = fits_file._File.writearray

    def spy(self, arr):
        intact.append(np.array_equal(data, before[0]) and np.array_equal(ext, before[1]))
        return real(self, arr)

    monkeypatch.setattr(fits_file._File, "writearray", spy)
    write_fits(tmp_path / "x.fits", data, extensions=[("EXT", ext, None)])
    assert intact == [True, True]
    with fits.open(tmp_path / "x.fits") as hdul:
        np.testing.assert_array_equal(hdul[0].data, data)
        np.testing.assert_array_equal(hdul[1].data, ext)


def test_band_reader_layout_follows_a_rewritten_file(tmp_path, u16):
    """The data layout of a file is read once per version of it: a file replaced by one
    with a longer header (another data offset) is read at its new offset."""
    import os

    from deepsky.io.sources import open_source

    path = tmp_path / "frame.fits"
    path.write_bytes(fits_bytes(u16.astype(np.int32) - 32768, 16, {"BZERO": 32768}))
    first = open_source(path)
    np.testing.assert_array_equal(first.read_rows(0, 4), u16[:4])
    cards = {"BZERO": 32768, **{f"NOTE{i}": "x" * 60 for i in range(40)}}
    path.write_bytes(fits_bytes(u16.astype(np.int32) - 32767, 16, cards))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    again = open_source(path)
    assert again.offset > first.offset
    np.testing.assert_array_equal(again.read_rows(0, 4), u16[:4] + 1)


@pytest.mark.parametrize("bitpix, stored, bzero, bscale", _SCALINGS)
def test_read_sample_is_the_strided_frame(tmp_path, bitpix, stored, bzero, bscale):
    """FrameSource.read_sample converts only the sampled pixels; it must give exactly the
    sampled pixels of the whole frame, whatever the scaling (here on a 9 x 11 tiling of the
    case's values, so that every stored value lands on sampled pixels)."""
    src = open_source(_scaled_fits(tmp_path, np.tile(stored, (5, 4))[:9, :11], bitpix, bzero,
                                   bscale))
    assert src.offset is not None  # the mapped reader
    for step in (1, 2, 3, 4):
        got = src.read_sample(step)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, src.read()[::step, ::step])


def test_read_sample_of_blank_cube_and_decoded_sources(tmp_path, u16):
    stored = np.array([[0, -5, 7, 3], [-5, 1, 2, -5], [4, -5, 6, 8]], np.int16)
    blank = open_source(write_raw_fits(tmp_path / "b.fits", stored, 16, BSCALE=0.5, BLANK=-5))
    np.testing.assert_array_equal(blank.read_sample(2), blank.read()[::2, ::2])
    assert np.isnan(blank.read_sample(1)).sum() == 4
    cube = np.random.default_rng(3).uniform(0, 6e4, size=(3, 7, 9)).astype(np.float32)
    write_fits(tmp_path / "c.fits", cube)
    np.testing.assert_array_equal(open_source(tmp_path / "c.fits").read_sample(3),
                                  cube[:, ::3, ::3])
    fz = open_source(_write_fz(tmp_path / "a.fits.fz", u16, tile=(8, 23)))
    assert fz.offset is None  # decoded, not mapped
    np.testing.assert_array_equal(fz.read_sample(4), u16[::4, ::4])


@pytest.mark.parametrize("bitpix, stored, bzero, bscale", _SCALINGS)
def test_read_rows_into_is_read_rows(tmp_path, bitpix, stored, bzero, bscale):
    """FrameSource.read_rows_into converts integers straight into the caller's array: the
    same values as read_rows, whatever the scaling and the stored type."""
    src = open_source(_scaled_fits(tmp_path, np.tile(stored, (4, 3))[:7, :8], bitpix, bzero,
                                   bscale))
    for y0, y1 in ((0, 7), (2, 5), (6, 7)):
        out = np.full((y1 - y0, 8), -1.0, np.float32)
        src.read_rows_into(y0, y1, out)
        np.testing.assert_array_equal(out, src.read_rows(y0, y1))


def test_read_rows_into_blank_cube_and_decoded_sources(tmp_path, u16):
    stored = np.array([[0, -5, 7, 3], [-5, 1, 2, -5], [4, -5, 6, 8]], np.int16)
    blank = open_source(write_raw_fits(tmp_path / "b.fits", stored, 16, BSCALE=0.5, BLANK=-5))
    out = np.zeros((2, 4), np.float32)
    blank.read_rows_into(1, 3, out)
    np.testing.assert_array_equal(out, blank.read_rows(1, 3))  # NaN where BLANK
    cube = np.random.default_rng(3).uniform(0, 6e4, size=(3, 7, 9)).astype(np.float32)
    write_fits(tmp_path / "c.fits", cube)
    out = np.zeros((3, 4, 9), np.float32)
    open_source(tmp_path / "c.fits").read_rows_into(2, 6, out)
    np.testing.assert_array_equal(out, cube[:, 2:6])
    out = np.zeros((5, 23), np.float32)
    open_source(_write_fz(tmp_path / "a.fits.fz", u16, tile=(8, 23))).read_rows_into(3, 8, out)
    np.testing.assert_array_equal(out, u16[3:8])
