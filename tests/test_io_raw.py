"""Camera RAW reading (deepsky.io.raw) through DNG files written here.

The DNGs are made with tifffile (image, CFA and DNG tags) plus an EXIF IFD appended by hand,
where cameras and converters keep ExposureTime, ISO and the date; LibRaw reads them as it
reads a camera's DNG.
"""

from __future__ import annotations

import io
import struct
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile

from deepsky.errors import InputError
from deepsky.io import read, read_meta, write
from deepsky.io.raw import read_exif, read_raw, read_raw_meta, require_bayer
from deepsky.types import BAYER_PATTERNS, bayer_channel_masks

XTRANS = "GGRGGB" "GGBGGR" "BRGRBG" "GGBGGR" "GGRGGB" "RBGBRG"
_CFA_CODES = {"R": 0, "G": 1, "B": 2}
COLOUR_VALUES = {"R": 1000, "G": 2000, "B": 3000}


# ----------------------------------------------------------------------------------------------
# Writing test DNGs
# ----------------------------------------------------------------------------------------------
def _ascii(text: str) -> bytes:
    return text.encode("ascii") + b"\0"


def write_dng(
    path: Path,
    mosaic: np.ndarray,
    *,
    pattern: str = "RGGB",
    black: int | list[int] = 256,
    white: int = 4095,
    exposure: tuple[int, int] = (1, 250),
    iso: int = 800,
    date: str = "2024:05:06 22:33:44",
    subsec: str | None = None,
    offset: str | None = None,
    make: str = "Acme",
    model: str = "Acme Astro 9",
    active_area: tuple[int, int, int, int] | None = None,
) -> Path:
    """A DNG holding ``mosaic`` (uint16, at least 22 x 22, LibRaw's minimum) with CFA
    ``pattern`` (4 letters for Bayer, 36 for X-Trans) and EXIF in its own IFD.

    ``black`` is one level or four (one per 2x2 position); ``active_area`` is DNG's
    ActiveArea (top, left, bottom, right), where the CFA pattern then starts.
    """
    n = 6 if len(pattern) == 36 else 2
    cfa = bytes(_CFA_CODES[c] for c in pattern)
    blacks = [black] if isinstance(black, int) else list(black)
    extratags = [
        (271, "s", 0, make, True),
        (272, "s", 0, model, True),
        (33421, "H", 2, (n, n), True),                 # CFARepeatPatternDim
        (33422, "B", len(cfa), cfa, True),             # CFAPattern
        (34664, "I", 1, 0, True),                      # becomes ExifIFD (34665) below
        (50706, "B", 4, (1, 4, 0, 0), True),           # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),           # DNGBackwardVersion
        (50708, "s", 0, f"{make} {model}", True),      # UniqueCameraModel
        (50710, "B", 3, (0, 1, 2), True),              # CFAPlaneColor
        (50711, "H", 1, 1, True),                      # CFALayout: rectangular
        (50713, "H", 2, (2, 2) if len(blacks) == 4 else (1, 1), True),  # BlackLevelRepeatDim
        (50714, "H", len(blacks), tuple(blacks), True),  # BlackLevel
        (50717, "H", 1, white, True),                  # WhiteLevel
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
        (50778, "H", 1, 21, True),                     # CalibrationIlluminant1: D65
    ]
    if active_area is not None:
        extratags.append((50829, "I", 4, active_area, True))  # ActiveArea
    tifffile.imwrite(path, np.ascontiguousarray(mosaic, dtype=np.uint16), byteorder="<",
                     photometric=32803, subfiletype=0, extratags=extratags, metadata=None,
                     software=None)
    entries = [(33434, 5, 1, struct.pack("<II", *exposure)),   # ExposureTime
               (34855, 3, 1, struct.pack("<H", iso)),           # ISOSpeedRatings
               (36867, 2, 20, _ascii(date))]                    # DateTimeOriginal
    if offset is not None:
        entries.append((36881, 2, len(offset) + 1, _ascii(offset)))  # OffsetTimeOriginal
    if subsec is not None:
        entries.append((37521, 2, len(subsec) + 1, _ascii(subsec)))  # SubSecTimeOriginal
    with open(path, "r+b") as f:
        f.seek(0, 2)
        end = f.tell()
        start = end + (end % 2)
        extra_at = start + 2 + 12 * len(entries) + 4
        table, extra = b"", b""
        for tag, typ, count, blob in entries:
            if len(blob) <= 4:
                value = blob.ljust(4, b"\0")
            else:
                value = struct.pack("<I", extra_at + len(extra))
                extra += blob + (b"\0" if len(blob) % 2 else b"")
            table += struct.pack("<HHI", tag, typ, count) + value
        f.write(b"\0" * (start - end))
        f.write(struct.pack("<H", len(entries)) + table + b"\0\0\0\0" + extra)
        # tifffile refuses to write tag 34665 itself: turn the placeholder into it.
        f.seek(4)
        ifd0 = struct.unpack("<I", f.read(4))[0]
        f.seek(ifd0)
        count = struct.unpack("<H", f.read(2))[0]
        for k in range(count):
            f.seek(ifd0 + 2 + 12 * k)
            if struct.unpack("<H", f.read(2))[0] == 34664:
                f.seek(ifd0 + 2 + 12 * k)
                f.write(struct.pack("<HHII", 34665, 4, 1, start))
                break
    return path


def colour_coded_mosaic(pattern: str, height: int, width: int, *, dy: int = 0,
                        dx: int = 0) -> np.ndarray:
    """A mosaic whose pixels hold 1000/2000/3000 where ``pattern`` (starting at pixel
    ``(dx, dy)``) puts R/G/B."""
    n = 6 if len(pattern) == 36 else 2
    grid = np.array([COLOUR_VALUES[c] for c in pattern]).reshape(n, n)
    yy, xx = np.mgrid[0:height, 0:width]
    return grid[(yy - dy) % n, (xx - dx) % n].astype(np.uint16)


def assert_pattern_picks_colours(data: np.ndarray, bayer: str) -> None:
    masks = bayer_channel_masks(bayer, data.shape)
    for k, colour in enumerate("RGB"):
        assert np.unique(data[masks[k]]).tolist() == [COLOUR_VALUES[colour]], colour


@pytest.fixture
def mosaic() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 4096, size=(24, 32)).astype(np.uint16)


# ----------------------------------------------------------------------------------------------
# Data, pattern, levels, EXIF
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_dng_mosaic_pattern_and_levels_round_trip(tmp_path, mosaic, pattern):
    path = write_dng(tmp_path / f"{pattern}.dng", mosaic, pattern=pattern, black=256,
                     white=4095, exposure=(1, 250), iso=800, date="2024:05:06 22:33:44")
    frame = read_raw(path)
    assert frame.data.dtype == np.float32 and frame.data.flags.owndata
    assert frame.data.flags.c_contiguous and frame.data.dtype.isnative
    np.testing.assert_array_equal(frame.data, mosaic.astype(np.float32))
    m = frame.meta
    assert (m.width, m.height, m.channels) == (32, 24, 1)
    assert m.bayer == pattern and m.cfa == "bayer"
    assert m.black_level == 256.0 and m.white_level == 4095.0
    assert m.exposure == pytest.approx(1 / 250, abs=0)
    assert m.iso == 800 and m.gain is None and m.gain_or_iso == 800.0
    assert m.date == datetime(2024, 5, 6, 22, 33, 44, tzinfo=timezone.utc)
    assert m.instrument == "Acme Astro 9"
    assert m.kind == "unknown" and m.format == "raw"
    assert m.header["BAYERPAT"] == pattern and m.header["BLKLEVEL"] == 256.0
    # LibRaw itself sees what the test wrote (the helper makes a realistic DNG).
    with rawpy.imread(str(path)) as raw:
        np.testing.assert_array_equal(raw.raw_image_visible, mosaic)
        assert raw.other.iso_speed == 800.0


@pytest.mark.parametrize("pattern", ["RGGB", "GRBG"])
@pytest.mark.parametrize("area", [(1, 1, 26, 34), (1, 2, 26, 34), (2, 1, 26, 34),
                                  (3, 3, 27, 35)])
def test_bayer_pattern_follows_the_visible_area(tmp_path, pattern, area):
    """DNG's CFA pattern starts at the ActiveArea's corner; LibRaw may crop differently, and
    meta.bayer must still name the colour of the pixels actually returned."""
    coded = colour_coded_mosaic(pattern, 28, 36, dy=area[0], dx=area[1])
    frame = read_raw(write_dng(tmp_path / "a.dng", coded, pattern=pattern, active_area=area))
    assert frame.data.shape[0] >= 22 and frame.data.shape[1] >= 30
    assert_pattern_picks_colours(frame.data, frame.meta.bayer)


def test_per_position_black_levels(tmp_path, mosaic):
    path = write_dng(tmp_path / "b.dng", mosaic, pattern="RGGB", black=[250, 252, 254, 256])
    meta = read_raw_meta(path)
    assert meta.black_level == pytest.approx(253.0)
    assert meta.header["CBLACK"] == "250 252 254 256"


def test_date_with_offset_and_subseconds_is_utc(tmp_path, mosaic):
    path = write_dng(tmp_path / "d.dng", mosaic, date="2024:05:06 22:33:44", subsec="25",
                     offset="+02:00")
    assert read_raw_meta(path).date == datetime(2024, 5, 6, 20, 33, 44, 250000,
                                                tzinfo=timezone.utc)


def test_meta_reader_agrees_with_full_reader(tmp_path, mosaic):
    path = write_dng(tmp_path / "m.dng", mosaic, pattern="BGGR", exposure=(30, 1), iso=1600)
    full, meta = read_raw(path).meta, read_raw_meta(path)
    assert full == meta
    assert meta.exposure == 30.0 and meta.iso == 1600
    assert read_meta(path) == meta and read(path).meta == meta


def test_xtrans_is_read_and_refused_for_debayering(tmp_path):
    coded = colour_coded_mosaic(XTRANS, 24, 36)
    frame = read_raw(write_dng(tmp_path / "x.dng", coded, pattern=XTRANS))
    np.testing.assert_array_equal(frame.data, coded)
    assert frame.meta.cfa == "xtrans" and frame.meta.bayer is None
    assert frame.meta.header["BAYERPAT"] == XTRANS
    with pytest.raises(InputError, match=r"x\.dng: X-Trans sensor .*cannot debayer"):
        require_bayer(frame.meta)


def test_require_bayer_returns_the_pattern(tmp_path, mosaic):
    meta = read_raw_meta(write_dng(tmp_path / "g.dng", mosaic, pattern="GBRG"))
    assert require_bayer(meta) == "GBRG"


# ----------------------------------------------------------------------------------------------
# The EXIF reader on the other containers
# ----------------------------------------------------------------------------------------------
def _tiff_bytes(extratags: list[tuple]) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((1, 1), np.uint8), extratags=extratags, metadata=None,
                     software=None)
    return buf.getvalue()


def test_exif_of_tiff_raws_with_other_magic_numbers(tmp_path, mosaic):
    """ORF ('IIRO') and RW2 ('IIU') are TIFF structures with another magic number."""
    blob = bytearray(write_dng(tmp_path / "a.dng", mosaic, iso=400).read_bytes())
    for magic, name in ((b"RO", "a.orf"), (b"U\0", "a.rw2")):
        blob[2:4] = magic
        (tmp_path / name).write_bytes(bytes(blob))
        exif = read_exif(tmp_path / name)
        assert exif[271] == "Acme" and exif[34855] == [400] and exif[33434] == [(1, 250)]


def test_exif_of_cr3_boxes(tmp_path):
    cmt1 = _tiff_bytes([(271, "s", 0, "Canon", True), (272, "s", 0, "Canon EOS R6", True)])
    cmt2 = _tiff_bytes([(33434, "2I", 1, (1, 30), True), (34855, "H", 1, 3200, True),
                        (36867, "s", 0, "2023:08:01 01:02:03", True)])
    boxes = b"".join(struct.pack(">I", 8 + len(b)) + name + b
                     for name, b in ((b"CMT1", cmt1), (b"CMT2", cmt2)))
    uuid = struct.pack(">I", 24 + len(boxes)) + b"uuid" + bytes(16) + boxes
    blob = struct.pack(">I", 24) + b"ftypcrx " + bytes(12) + struct.pack(">I", 8 + len(uuid)) \
        + b"moov" + uuid
    (tmp_path / "a.cr3").write_bytes(blob)
    exif = read_exif(tmp_path / "a.cr3")
    assert exif[272] == "Canon EOS R6" and exif[34855] == [3200]
    assert exif[33434] == [(1, 30)] and exif[36867] == "2023:08:01 01:02:03"


def test_exif_of_raf(tmp_path):
    tiff = _tiff_bytes([(271, "s", 0, "FUJIFILM", True), (272, "s", 0, "X-T4", True),
                        (36867, "s", 0, "2022:02:03 04:05:06", True)])
    jpeg = b"\xff\xd8\xff\xe1" + struct.pack(">H", 8 + len(tiff)) + b"Exif\0\0" + tiff
    head = b"FUJIFILMCCD-RAW 0201FF383501" + b"X-T4".ljust(32, b"\0")
    head = head.ljust(84, b"\0") + struct.pack(">II", 100, len(jpeg))
    (tmp_path / "a.raf").write_bytes(head.ljust(100, b"\0") + jpeg)
    exif = read_exif(tmp_path / "a.raf")
    assert exif[271] == "FUJIFILM" and exif[272] == "X-T4"
    assert exif[36867] == "2022:02:03 04:05:06"


def test_exif_of_unknown_or_damaged_files_is_empty(tmp_path):
    (tmp_path / "a.nef").write_bytes(b"II*\0" + b"\xff" * 20)
    (tmp_path / "b.cr2").write_bytes(b"not a raw at all")
    assert read_exif(tmp_path / "a.nef") == {}
    assert read_exif(tmp_path / "b.cr2") == {}


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a.dng", "a.cr2", "a.nef", "a.arw", "a.cr3", "a.raf"])
def test_text_file_with_raw_name_is_an_input_error(tmp_path, name):
    path = tmp_path / name
    path.write_text("this is not a raw file\n" * 20)
    with pytest.raises(InputError, match=rf"{name}: not a camera RAW file LibRaw can read"):
        read_raw(path)
    with pytest.raises(InputError, match=name):
        read_raw_meta(path)


def test_empty_raw_is_an_input_error(tmp_path):
    path = tmp_path / "a.cr2"
    path.touch()
    with pytest.raises(InputError, match=r"a\.cr2: empty file"):
        read_raw(path)


def test_truncated_dng_is_an_input_error(tmp_path):
    mosaic = np.random.default_rng(1).integers(0, 4096, size=(64, 64)).astype(np.uint16)
    blob = write_dng(tmp_path / "full.dng", mosaic).read_bytes()
    (tmp_path / "cut.dng").write_bytes(blob[:len(blob) // 2])
    with pytest.raises(InputError, match=r"cut\.dng: cannot read the RAW file, it is truncated"):
        read_raw(tmp_path / "cut.dng")


def test_other_image_formats_with_raw_names_are_refused(tmp_path):
    data = np.random.default_rng(2).uniform(0, 1, size=(3, 40, 50))
    sources = {"j.nef": write(tmp_path / "src.jpg", data),
               "t.dng": write(tmp_path / "src.tif", data * 255, bits=16),
               "f.cr2": write(tmp_path / "src.fits", data[0])}
    for name, source in sources.items():
        path = tmp_path / name
        path.write_bytes(source.read_bytes())
        with pytest.raises(InputError, match=rf"{name}: not a camera RAW file"):
            read_raw(path)
