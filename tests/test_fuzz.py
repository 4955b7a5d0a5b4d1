"""Fuzzing in brief: mutated files of every format read as a Frame or raise InputError, never
another exception, never a hang, never a line printed around the CLI's error; header
normalisation takes any card value. ``benchmarks/fuzz_readers.py`` (and, with atheris,
``benchmarks/fuzz_atheris.py``) run the same idea for minutes; every crash they found is a
regression test below, with the smallest input that shows it."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import math
import signal
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepsky.errors import InputError
from deepsky.io import read, read_meta, write
from deepsky.io.fits import read_fits_rows
from deepsky.io.headers import meta_from_header
from deepsky.io.sources import open_source

try:  # the seed writers of the IO tests (tests/ is a folder of modules, or a package)
    from test_io_errors import _good_files
    from test_io_raw import write_dng
except ImportError:  # pragma: no cover
    from tests.test_io_errors import _good_files
    from tests.test_io_raw import write_dng

SUFFIX = {"fits": ".fits", "fits.gz": ".fits.gz", "fits.fz": ".fits.fz", "tiff": ".tif",
          "xisf": ".xisf", "png": ".png", "jpeg": ".jpg", "dng": ".dng"}
CARD_KEYS = ["BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "BZERO", "BSCALE", "BLANK",
             "END", "EXPTIME", "BAYERPAT", "ROWORDER", "DATE-OBS", "XBINNING", "SATURATE",
             "CONTINUE", "HISTORY", "ZIMAGE", "ZNAXIS1", "TFORM1", "XTENSION", "GCOUNT"]
CARD_VALUES = ["0", "-1", "3", "12", "-64", "999999999", "1E300", "NaN", "T", "''", "'RGGB'",
               "'BOTTOM-UP'", "'2024-13-45T25:61:61'", "1.0.0", "(1, 2)", "'&'", "32768"]


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang when the block runs longer than ``seconds`` (SIGALRM, main thread)."""
    def alarm(_sig, _frame):
        raise Hang(f"no answer in {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def read_every_way(path: Path) -> None:
    """read, read_meta, open_source(...).read() and (FITS) read_fits_rows: each returns a
    consistent result or raises InputError; anything else propagates."""
    for way in ("read", "meta", "source", "rows"):
        try:
            if way == "read":
                frame = read(path)
                assert frame.data.dtype == np.float32 and frame.data.flags.c_contiguous
                assert frame.data.shape[-2:] == (frame.meta.height, frame.meta.width)
            elif way == "meta":
                read_meta(path)
            elif way == "source":
                src = open_source(path)
                assert src.read().shape == src.meta.shape
            elif ".fit" in path.name:
                read_fits_rows(path, 0, min(2, read_meta(path).height))
        except InputError as err:
            assert str(err).startswith(f"{path}: ")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    return {k: p.read_bytes() for k, p in _good_files(tmp_path_factory.mktemp("seeds")).items()}


def _mutate(blob: bytes, ops: list[tuple]) -> bytes:
    b = bytearray(blob)
    for op in ops:
        if not b:
            break
        if op[0] == "cut":
            del b[int(op[1] * len(b)):]
        elif op[0] == "flip":
            for pos, bit in op[1]:
                b[pos % len(b)] ^= 1 << bit
        elif op[0] == "bytes":
            pos = op[1] % len(b)
            b[pos:pos + len(op[2])] = op[2]
        elif op[0] == "card":  # a FITS header card (80 bytes) replaced
            text = f"{op[2]:<8}= {op[3]:>20}".ljust(80)[:80].encode("ascii", "replace")
            b[op[1] * 80:op[1] * 80 + 80] = text
    return bytes(b)


MUTATION = st.one_of(
    st.tuples(st.just("cut"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 7)),
                                        min_size=1, max_size=6)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 7)),
                                        min_size=1, max_size=3)),
    st.tuples(st.just("bytes"), st.integers(0, 4095),
              st.sampled_from([b"\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
                               b"\x00\x00\x00\x80", b"\x01"]) | st.binary(min_size=1,
                                                                          max_size=8)),
    st.tuples(st.just("card"), st.integers(0, 35), st.sampled_from(CARD_KEYS),
              st.sampled_from(CARD_VALUES)),
)


@pytest.mark.parametrize("fmt", list(SUFFIX))
@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_files_raise_only_input_error(seeds, tmp_path, capfd, fmt, ops):
    path = tmp_path / f"input{SUFFIX[fmt]}"
    path.write_bytes(_mutate(seeds[fmt], ops))
    capfd.readouterr()
    with time_limit(10):
        read_every_way(path)
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == "", printed


# ----------------------------------------------------------------------------------------------
# Header normalisation takes anything
# ----------------------------------------------------------------------------------------------
HEADER_KEYS = ["IMAGETYP", "FRAME", "EXPTIME", "EXPOSURE", "GAIN", "EGAIN", "ISOSPEED",
               "CCD-TEMP", "SET-TEMP", "FILTER", "XBINNING", "YBINNING", "DATE-OBS",
               "TIME-OBS", "MJD-OBS", "INSTRUME", "TELESCOP", "OBJECT", "BAYERPAT",
               "XBAYROFF", "YBAYROFF", "ROWORDER", "BLKLEVEL", "SATURATE", "FOCALLEN",
               "XPIXSZ", "COLORTYP", "CFA-PAT"]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                   st.sampled_from(["RGGB", "rggb", "BOTTOM-UP", "Light Frame", "2024-02-30",
                                    "2024-05-06T22:33:44.123456789", "12/05/99", " ", "1e400",
                                    "G" * 36, "nan", "-0"]),
                   st.complex_numbers(allow_nan=True), st.binary(max_size=8))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(cards=st.dictionaries(st.sampled_from(HEADER_KEYS) | st.text(max_size=8), VALUES,
                             max_size=12),
       height=st.integers(1, 5000), channels=st.sampled_from([1, 3]))
def test_header_normalisation_takes_any_value(cards, height, channels):
    meta = meta_from_header(cards, path=None, width=7, height=height, channels=channels,
                            fmt="fits", bit_depth=16)
    for v in (meta.exposure, meta.gain, meta.egain, meta.temperature, meta.set_temperature,
              meta.white_level, meta.black_level, meta.focal_length, meta.pixel_size):
        assert v is None or (isinstance(v, float) and math.isfinite(v))
    assert meta.bayer in (None, "RGGB", "BGGR", "GRBG", "GBRG")
    assert meta.cfa in (None, "bayer", "xtrans")
    assert meta.binning[0] >= 1 and meta.binning[1] >= 1
    assert meta.kind in ("light", "dark", "flat", "bias", "darkflat", "unknown")
    assert meta.date is None or meta.date.tzinfo is not None
    for t in (meta.filter, meta.instrument, meta.telescope, meta.object):
        assert t is None or (isinstance(t, str) and t == t.strip() and t)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(cards=st.lists(st.tuples(st.sampled_from(HEADER_KEYS),
                                st.sampled_from(CARD_VALUES + ["'Light'", "60", "-10.5"])),
                      max_size=10))
def test_header_normalisation_of_raw_fits_cards(cards):
    """Cards as a file holds them (astropy parses them lazily: an unparsable card counts as
    absent, it does not make the frame unreadable)."""
    text = "".join(f"{k:<8}= {v:>20}".ljust(80)[:80] for k, v in cards) + "END".ljust(80)
    header = fits.Header.fromstring(text)
    meta = meta_from_header(header, path=None, width=4, height=4, channels=1, fmt="fits")
    assert meta.exposure is None or math.isfinite(meta.exposure)


# ----------------------------------------------------------------------------------------------
# Regressions: each crash the fuzzers found, with the smallest input that shows it
# ----------------------------------------------------------------------------------------------
def _fits(data: np.ndarray | None = None) -> bytes:
    data = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) if data is None else data
    b = io.BytesIO()
    fits.PrimaryHDU(data).writeto(b)
    return b.getvalue()


def _before_end(blob: bytes, card: str) -> bytes:
    """A card inserted before END (the header block keeps its size)."""
    end = next(i for i in range(36) if blob[i * 80:i * 80 + 8] == b"END     ")
    b = bytearray(blob)
    b[end * 80:end * 80 + 160] = card.ljust(80).encode() + b"END".ljust(80)
    return bytes(b)


def _reads_or_input_error(path: Path, pattern: str | None, capfd) -> None:
    capfd.readouterr()
    with time_limit(10):
        for fn in (read, read_meta):
            if pattern is None:
                fn(path)
            else:
                with pytest.raises(InputError, match=pattern):
                    fn(path)
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""


def test_gzip_stream_with_a_bad_crc(tmp_path, capfd):
    """Was: astropy looped forever, eating ~25 MB/s (a bit flip in a .fits.gz)."""
    gz = bytearray(gzip.compress(_fits()))
    gz[-8] ^= 0xFF
    (tmp_path / "a.fits.gz").write_bytes(bytes(gz))
    _reads_or_input_error(tmp_path / "a.fits.gz", r"a\.fits\.gz: corrupt or truncated gzip "
                          r"stream \(CRC check failed", capfd)
    with pytest.raises(InputError, match="CRC check failed"):
        read_fits_rows(tmp_path / "a.fits.gz", 0, 2)


def test_gzip_stream_with_damaged_deflate_data(tmp_path, capfd):
    gz = bytearray(gzip.compress(_fits()))
    gz[len(gz) // 2] ^= 0xFF
    (tmp_path / "a.fits.gz").write_bytes(bytes(gz))
    _reads_or_input_error(tmp_path / "a.fits.gz", r"corrupt or truncated gzip stream", capfd)


def test_naxis_of_a_billion(tmp_path, capfd):
    """Was: astropy looped over 999999999 axes for minutes."""
    (tmp_path / "a.fits").write_bytes(_before_end(_fits(), "NAXIS   =            999999999"))
    _reads_or_input_error(tmp_path / "a.fits", r"a\.fits: not a readable FITS file \(NAXIS = "
                          r"999999999: at most 999 axes\)", capfd)


def test_repeated_naxis1_card(tmp_path):
    """Was: ValueError (reshape) from read_fits_rows; astropy takes the last NAXIS1."""
    blob = _before_end(_fits(), "NAXIS1  =                    2")
    (tmp_path / "a.fits").write_bytes(blob[:2880 + 48 * 64 * 2])
    for fn in (read, lambda p: read_fits_rows(p, 0, 2)):
        with pytest.raises(InputError, match=r"pixel data of shape \(\d+, 2\) do not match "
                                             r"the header \(64 x 48\)"):
            fn(tmp_path / "a.fits")


def test_continue_card_without_a_string(tmp_path, capfd):
    """Was: astropy's VerifyError."""
    (tmp_path / "a.fits").write_bytes(_before_end(_fits(), "CONTINUE= 5"))
    _reads_or_input_error(tmp_path / "a.fits", r"not a readable FITS file \(.*CONTINUE cards "
                          r"must have string values", capfd)


def test_unparsable_card_counts_as_absent(tmp_path, capfd):
    """Was: VerifyError from read_meta, a VerifyWarning out of read. A damaged SATURATE
    card does not make the frame unusable: the white level comes from BITPIX instead."""
    (tmp_path / "a.fits").write_bytes(_before_end(_fits(), "SATURATE= 1.0.0"))
    _reads_or_input_error(tmp_path / "a.fits", None, capfd)
    assert read_meta(tmp_path / "a.fits").white_level == 65535.0


def test_tile_compressed_file_with_damage(tmp_path, capfd):
    """Was: CfitsioException (damaged tiles) and RuntimeError (a damaged TFORM1)."""
    data = np.random.default_rng(1).integers(0, 60000, (48, 64)).astype(np.uint16)
    b = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(b)
    blob = b.getvalue()
    (tmp_path / "tform.fits.fz").write_bytes(blob.replace(b"1PB(", b"1PC("))
    tiles = bytearray(blob)
    for i in range(2880 * 3, min(len(tiles), 2880 * 3 + 2000)):
        tiles[i] ^= 0x5A
    (tmp_path / "tiles.fits.fz").write_bytes(bytes(tiles))
    for name in ("tform.fits.fz", "tiles.fits.fz"):
        read_meta(tmp_path / name)  # the header is fine
        with pytest.raises(InputError, match=r"cannot read the pixel data, the file is corrupt "
                                             r"or truncated"):
            read(tmp_path / name)


def _tiff_with(tmp_path: Path, tag: int, field: int, value: int) -> Path:
    """The seed TIFF with one field of one IFD entry overwritten (field 2: type, 8: value)."""
    blob = bytearray(write(tmp_path / "seed.tif",
                           np.arange(48 * 64, dtype=np.float32).reshape(48, 64)).read_bytes())
    ifd = int.from_bytes(blob[4:8], "little")
    n = int.from_bytes(blob[ifd:ifd + 2], "little")
    entry = next(ifd + 2 + 12 * i for i in range(n)
                 if int.from_bytes(blob[ifd + 2 + 12 * i:ifd + 4 + 12 * i], "little") == tag)
    width = 2 if field == 2 else 4
    blob[entry + field:entry + field + width] = value.to_bytes(width, "little")
    path = tmp_path / f"t{tag}_{field}.tif"
    path.write_bytes(bytes(blob))
    return path


def test_tiff_width_of_the_wrong_type(tmp_path, capfd):
    """Was: ValueError int('@') in the header normalisation (ImageWidth 64 read as ASCII)."""
    path = _tiff_with(tmp_path, 256, 2, 2)
    _reads_or_input_error(path, r"bad image dimensions \(48, '@'\) in the TIFF tags", capfd)


def test_tiff_with_zero_bits_per_sample(tmp_path, capfd):
    """Was: ValueError (reshape of an empty array)."""
    path = _tiff_with(tmp_path, 258, 8, 0)
    read_meta(path)
    with pytest.raises(InputError, match=r"the pixel data \(0 samples\) do not match the tags "
                                         r"\(64 x 48 x 1\); the file is corrupt or truncated"):
        read(path)


def test_damaged_tiff_prints_nothing(tmp_path, capfd):
    """Was: tifffile's logger printed '<tifffile.TiffPage 0 @8> incorrect StripByteCounts
    count' on stderr, around the CLI's one-line message."""
    path = _tiff_with(tmp_path, 279, 4, 2)
    _reads_or_input_error(path, None, capfd)


def test_raw_with_a_non_ascii_camera_make(tmp_path):
    """Was: astropy's ValueError building the header (EXIF text need not be ASCII)."""
    mosaic = np.random.default_rng(1).integers(0, 4000, (48, 64)).astype(np.uint16)
    blob = write_dng(tmp_path / "a.dng", mosaic).read_bytes()
    (tmp_path / "a.dng").write_bytes(blob.replace(b"Acme\x00", b"\xc1cme\x00", 1))
    meta = read_meta(tmp_path / "a.dng")
    assert meta.instrument == "\u00c1cme Acme Astro 9"
    assert meta.header["INSTRUME"] == "Acme Acme Astro 9"  # a FITS card holds ASCII
    assert read(tmp_path / "a.dng").data.shape == (48, 64)


def test_xisf_property_of_an_unknown_type_prints_nothing(tmp_path, capfd):
    """Was: the xisf package printed 'Unsupported Property type ...' on stdout."""
    blob = write(tmp_path / "s.xisf", np.zeros((4, 5), np.float32)).read_bytes()
    (tmp_path / "a.xisf").write_bytes(blob.replace(b'type="String">deepsky',
                                                   b'type="Strung">deepsky'))
    _reads_or_input_error(tmp_path / "a.xisf", None, capfd)


def test_date_out_of_range(tmp_path):
    """Was: OverflowError out of read_meta (found by the header fuzzing): MJD-OBS far outside
    the years 1..9999, or a DATE-OBS whose offset pushes it there, is no date."""
    for card in ("MJD-OBS =            999999999", "DATE-OBS= '9999-12-31T23:00:00-05:00'"):
        (tmp_path / "a.fits").write_bytes(_before_end(_fits(), card))
        assert read_meta(tmp_path / "a.fits").date is None


@pytest.mark.parametrize(("edits", "said"), [
    # BitsPerSample's tag made TileWidth, StripOffsets' count 5: LibRaw reads past the end.
    ({46: 66, 110: 5}, "Input/output error: Unexpected end of file"),
    # Another CFA layout and a DNG version that changes the decoder: damaged data.
    ({97: 128, 239: 196}, r"Data error or unsupported file format: data corrupted at \d+"),
])
def test_libraw_messages_go_into_the_error(seeds, tmp_path, capfd, edits, said):
    """Was: LibRaw's C code printed '<file>: Unexpected end of file' (or 'data corrupted at
    N') on stderr around deepsky's one-line error (found by benchmarks/fuzz_readers.py).
    Its line is now part of the error, and nothing is printed."""
    blob = bytearray(seeds["dng"])
    for pos, value in edits.items():
        blob[pos] = value
    (tmp_path / "a.dng").write_bytes(bytes(blob))
    capfd.readouterr()
    with pytest.raises(InputError, match=r"a\.dng: cannot decode the RAW data, the file is "
                                         r"corrupt or truncated \(LibRaw: " + said + r"\)$"):
        read(tmp_path / "a.dng")
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""


def test_other_output_during_a_raw_read_is_passed_on(seeds, tmp_path, capfd):
    """While LibRaw's stderr is captured, what other threads print reaches stderr after."""
    import threading

    import deepsky.io.raw as raw_module

    (tmp_path / "a.dng").write_bytes(seeds["dng"])
    capfd.readouterr()
    started, done = threading.Event(), threading.Event()
    real = raw_module._read_libraw

    def slow(path, *, with_data):
        started.set()
        done.wait(5)
        return real(path, with_data=with_data)

    raw_module._read_libraw = slow
    try:
        t = threading.Thread(target=read, args=(tmp_path / "a.dng",))
        t.start()
        started.wait(5)
        os.write(2, b"progress line\n")
        done.set()
        t.join()
    finally:
        raw_module._read_libraw = real
    assert capfd.readouterr().err == "progress line\n"


@pytest.mark.parametrize(("cards", "reason"), [
    (["BZERO   =                1E300"],  # after the seed's own BZERO = 32768
     r"2 BZERO cards with different values: the pixel scaling is ambiguous"),
    (["BZERO   =                1E300"], r"BZERO = 1e\+300 cannot scale pixel values"),
    (["BSCALE  =                    0"], r"BSCALE = 0 cannot scale pixel values"),
])
def test_pixel_scaling_that_cannot_be(tmp_path, capfd, cards, reason):
    """Was: a RuntimeWarning (overflow in the cast to float32) out of the memory-mapped
    reader, which also took the first of two BZERO cards where astropy takes the last
    (found by benchmarks/fuzz_readers.py). Every way of reading refuses the file."""
    data = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64)
    blob = _fits(data if "ambiguous" in reason else data.astype(np.int16))
    for card in cards:
        blob = _before_end(blob, card)
    (tmp_path / "a.fits").write_bytes(blob)
    _reads_or_input_error(tmp_path / "a.fits", r"a\.fits: not a readable FITS file \("
                          + reason + r"\)", capfd)
    with pytest.raises(InputError, match=reason):
        open_source(tmp_path / "a.fits").read()
