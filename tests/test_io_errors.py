"""Bad input for every format: a clear InputError naming the file, never a library's
traceback; inputs are never changed by reading; writes are atomic."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from deepsky.errors import InputError, OutputError
from deepsky.io import read, read_meta, write
from deepsky.io.fits import read_fits_rows

try:  # the DNG writer of the RAW tests (tests/ is a folder of modules, or a package)
    from test_io_raw import write_dng
except ImportError:  # pragma: no cover
    from tests.test_io_raw import write_dng

ALL_NAMES = ["a.fits", "a.fit", "a.fts", "a.fits.fz", "a.fits.gz", "a.tif", "a.tiff",
             "a.xisf", "a.png", "a.jpg", "a.jpeg", "a.dng", "a.cr2", "a.nef"]


def _good_files(folder: Path) -> dict[str, Path]:
    """One small valid file per format."""
    rng = np.random.default_rng(41)
    data = rng.uniform(0, 65535, size=(48, 64)).astype(np.float32)
    files = {
        "fits": write(folder / "g.fits", data, bits=16),
        "tiff": write(folder / "g.tif", data),
        "xisf": write(folder / "g.xisf", data),
        "png": write(folder / "g.png", data / 65535),
        "jpeg": write(folder / "g.jpg", data / 65535),
        "dng": write_dng(folder / "g.dng", data.astype(np.uint16)),
    }
    gz = folder / "g.fits.gz"
    gz.write_bytes(gzip.compress(files["fits"].read_bytes()))
    files["fits.gz"] = gz
    fz = folder / "g.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data.astype(np.uint16))]).writeto(fz)
    files["fits.fz"] = fz
    return files


@pytest.mark.parametrize("name", ALL_NAMES)
def test_text_file_with_an_image_name(tmp_path, name):
    path = tmp_path / name
    path.write_text("SIMPLE? no. This is a text file, not an image.\n" * 50)
    for reader in (read, read_meta):
        with pytest.raises(InputError) as info:
            reader(path)
        assert str(info.value).startswith(f"{path}: ")
        assert info.value.path == str(path)
        assert "not a" in info.value.problem or "not readable" in info.value.problem


@pytest.mark.parametrize("name", ALL_NAMES)
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.touch()
    for reader in (read, read_meta):
        with pytest.raises(InputError, match=r": empty file \(0 bytes\)"):
            reader(path)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_missing_file_and_folder(tmp_path, name):
    with pytest.raises(InputError, match=r": file not found"):
        read(tmp_path / name)
    (tmp_path / name).mkdir()
    with pytest.raises(InputError, match=r": is a folder"):
        read(tmp_path / name)


@pytest.mark.parametrize("fmt, fraction", [
    ("fits", 0.3), ("fits", 0.75), ("fits.gz", 0.5), ("fits.fz", 0.3), ("fits.fz", 0.7),
    ("tiff", 0.5), ("xisf", 0.5), ("xisf", 0.95), ("png", 0.5), ("jpeg", 0.5), ("dng", 0.5),
])
def test_truncated_file(tmp_path, fmt, fraction):
    good = _good_files(tmp_path)[fmt]
    blob = good.read_bytes()
    cut = tmp_path / f"cut_{good.name}"
    cut.write_bytes(blob[:int(len(blob) * fraction)])
    with pytest.raises(InputError) as info:
        read(cut)
    assert str(info.value).startswith(f"{cut}: ")
    problem = info.value.problem
    assert any(word in problem for word in ("truncated", "corrupt", "not a readable")), problem


def test_truncated_fits_message_says_how_much_is_missing(tmp_path):
    good = _good_files(tmp_path)["fits"]
    cut = tmp_path / "cut.fits"
    cut.write_bytes(good.read_bytes()[:2880 + 1000])
    with pytest.raises(InputError, match=r"cut\.fits: truncated file: the header announces "
                                         r"6144 bytes of pixel data, only 1000 are present"):
        read(cut)
    with pytest.raises(InputError, match=r"cut\.fits: truncated file"):
        read_fits_rows(cut, 0, 2)


@pytest.mark.parametrize("index, card", [
    (1, "BITPIX  =                   12"),
    (3, "NAXIS1  = 'abc'"),
    (3, "NAXIS1  =                  -64"),
    (7, "COMMENT   the END card is gone"),
])
def test_fits_with_broken_header(tmp_path, index, card):
    good = write(tmp_path / "g.fits", np.zeros((4, 5)), bits=16).read_bytes()
    cards = [good[i:i + 80] for i in range(0, 2880, 80)]
    assert cards[7].startswith(b"END")
    cards[index] = card.ljust(80).encode()
    bad = tmp_path / "b.fits"
    bad.write_bytes(b"".join(cards) + good[2880:])
    with pytest.raises(InputError, match=r"b\.fits: (not a readable FITS file|cannot read)"):
        read(bad)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "a.bmp"
    path.write_bytes(b"BM" + bytes(100))
    with pytest.raises(InputError, match=r"a\.bmp: unsupported file type '\.bmp'"):
        read(path)


def test_unwritable_output_is_an_output_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running with permissions that ignore a read-only folder (root)")
        with pytest.raises(OutputError, match=r"cannot write, permission denied"):
            write(folder / "a.tif", np.zeros((2, 2)))
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("fmt", ["fits", "fits.gz", "fits.fz", "tiff", "xisf", "png", "jpeg",
                                 "dng"])
def test_reading_never_changes_the_input(tmp_path, fmt):
    path = _good_files(tmp_path)[fmt]
    past = 1_600_000_000_000_000_000
    os.utime(path, ns=(past, past))
    path.chmod(0o444)
    before = path.read_bytes()
    frame = read(path)
    meta = read_meta(path)
    assert frame.meta == meta
    if fmt.startswith("fits"):
        read_fits_rows(path, 3, 5)
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == past
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("name", ["o.fits", "o.tif", "o.xisf", "o.png", "o.jpg"])
def test_writes_are_atomic(tmp_path, name, monkeypatch):
    """A write that fails half-way leaves neither a partial file nor a temporary one, and
    keeps an existing file as it was."""
    path = write(tmp_path / name, np.full((4, 4), 0.5, np.float32))
    before = path.read_bytes()
    import deepsky.io.atomic as atomic

    real_replace = atomic.os.replace

    def failing_replace(src, dst):
        assert Path(src).exists() and Path(src).name.startswith(".o.")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OutputError, match=rf"{name}: cannot write, the disk is full"):
        write(path, np.zeros((4, 4), np.float32))
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_flushed_write_syncs_before_the_rename(tmp_path, monkeypatch):
    """``flush=True`` (calibrated frames): the data reach the disk before the new name
    appears, the file reads back whole, and a failure of the flush (a full disk seen only at
    write-back, an I/O error) leaves no file and no temporary one."""
    import deepsky.io.atomic as atomic
    from deepsky.io.fits import write_fits

    order: list[str] = []
    real_sync, real_replace = atomic.os.fdatasync, atomic.os.replace
    monkeypatch.setattr(atomic.os, "fdatasync", lambda fd: (order.append("sync"), real_sync(fd)))
    monkeypatch.setattr(atomic.os, "replace",
                        lambda a, b: (order.append("rename"), real_replace(a, b)))
    data = np.arange(64 * 48, dtype=np.float32).reshape(48, 64)
    path = write_fits(tmp_path / "c.fits", data, flush=True)
    assert order == ["sync", "rename"]
    np.testing.assert_array_equal(read(path).data, data)
    order.clear()
    write_fits(tmp_path / "plain.fits", data)
    assert order == ["rename"]  # small outputs are not synced one by one

    def failing_sync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "fdatasync", failing_sync)
    with pytest.raises(OutputError, match=r"d\.fits: cannot write: Input/output error"):
        write_fits(tmp_path / "d.fits", data, flush=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.fits", "plain.fits"]


def test_readers_silence_warnings_safely_from_many_threads():
    """Frames are read on several threads at once: the readers' warning silencer must hold
    for each block however the blocks of other threads overlap (``catch_warnings`` restores
    the process-wide filters another thread still relies on), and put the filters back when
    the last block ends."""
    import threading
    import time
    import warnings

    from deepsky.io._common import no_warnings

    escaped = []

    def reader(k: int) -> None:
        for i in range(300):
            with no_warnings():
                time.sleep(0.0002 * ((k + i) % 3))
                try:
                    warnings.warn("non-standard card", UserWarning)
                except UserWarning as err:
                    escaped.append(err)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        threads = [threading.Thread(target=reader, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert escaped == []
        with pytest.raises(UserWarning):
            warnings.warn("after the readers", UserWarning)


def test_frame_source_of_a_file_truncated_after_it_was_opened(tmp_path):
    """Frames are read by row ranges long after discovery: a file cut short meanwhile (a
    copy still running, a network share) gives a one-line InputError, and the rows that are
    still there read as they are stored."""
    from deepsky.io.sources import open_source

    data = np.arange(64 * 48, dtype=np.float32).reshape(48, 64)
    path = tmp_path / "light.fits"
    fits.PrimaryHDU(data).writeto(path)
    src = open_source(path)
    with open(path, "r+b") as fh:
        fh.truncate(2880 + 20 * 64 * 4)  # the header and 20 of the 48 rows
    np.testing.assert_array_equal(src.read_region(2, 18, 5, 40), data[2:18, 5:40])
    with pytest.raises(InputError, match=r"light\.fits: cannot read the pixel data \(the file "
                                         r"is shorter than its header says\)"):
        src.read_rows(10, 30)
