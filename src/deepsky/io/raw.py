"""Camera RAW files (CR2, CR3, NEF, ARW, DNG, ORF, RW2, PEF, RAF, ...) through LibRaw (rawpy).

What a RAW frame reads as
-------------------------
* ``data`` is the sensor's CFA mosaic of the *visible* area (``raw_image_visible``), copied
  to float32 while the file is open, in the sensor's own orientation (the camera's rotation
  flag is ignored: the CFA only makes sense unrotated). It is **not** LibRaw's demosaiced
  output.
* Values are kept **as stored**: the black level is *not* subtracted. It is recorded in
  ``meta.black_level`` (and the saturation level in ``meta.white_level``) so that
  calibration with bias/dark frames, which contain the same pedestal, removes it; a
  pipeline without darks can subtract ``meta.black_level`` itself. When the camera has a
  different black level per CFA position, ``meta.black_level`` is their mean and the
  ``CBLACK`` card of ``meta.header`` lists them in the order of the 2x2 pattern.
* ``meta.bayer`` is the 2x2 pattern of ``data[0:2, 0:2]`` in deepsky's convention (LibRaw's
  second green is ``G``); ``meta.cfa`` is ``"bayer"``. An X-Trans sensor (6x6 pattern)
  reads with ``meta.cfa = "xtrans"`` and ``meta.bayer = None``; :func:`require_bayer`
  refuses such a frame with a clear message wherever a Bayer pattern is needed.
* Exposure, ISO and the date come from the file's EXIF (TIFF-based raws, the CMT boxes of
  CR3, the EXIF block in a RAF's preview), falling back to what LibRaw reports; camera make
  and model only from the EXIF (LibRaw's make/model are not exposed by rawpy). The EXIF
  date is the camera's clock: it is converted to UTC when the file records its offset
  (``OffsetTimeOriginal``), and taken as UTC otherwise.
* ``meta.kind`` is ``"unknown"``: a RAW file does not say whether it is a light, dark or
  flat; the session's folders do.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import sys
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np
import rawpy
from astropy.io import fits

from deepsky.errors import InputError
from deepsky.io._common import check_input_file, no_warnings, owned_float32, short
from deepsky.io.fits import fits_text
from deepsky.types import BAYER_PATTERNS, Frame, FrameMeta

RAW_EXTENSIONS = (".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".orf",
                  ".rw2", ".pef", ".raf", ".crw", ".srw", ".3fr", ".erf", ".kdc", ".mrw",
                  ".x3f", ".iiq")

# EXIF / TIFF tags read from the file.
_MAKE, _MODEL, _DATETIME = 271, 272, 306
_EXPOSURE, _EXIF_IFD, _ISO = 33434, 34665, 34855
_DATE_ORIGINAL, _OFFSET_ORIGINAL, _SUBSEC_ORIGINAL = 36867, 36881, 37521
_UNIQUE_MODEL = 50708
_WANTED = {_MAKE, _MODEL, _DATETIME, _EXPOSURE, _ISO, _DATE_ORIGINAL, _OFFSET_ORIGINAL,
           _SUBSEC_ORIGINAL, _UNIQUE_MODEL}


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
def read_raw(path: str | os.PathLike) -> Frame:
    """Read a camera RAW file as its CFA mosaic (float32, values as stored) and metadata.

    Raises
    ------
    InputError
        If the file is missing, empty, or LibRaw cannot open or decode it.

    Examples
    --------
    >>> frame = read_raw("IMG_0001.CR2")          # doctest: +SKIP
    >>> frame.meta.bayer, frame.meta.black_level  # doctest: +SKIP
    ('RGGB', 2048.0)
    """
    p = Path(path)
    data, meta = _read(p, with_data=True)
    assert data is not None
    return Frame(data, meta)


def read_raw_meta(path: str | os.PathLike) -> FrameMeta:
    """Metadata of a camera RAW file (LibRaw still has to unpack it to learn the pattern)."""
    return _read(Path(path), with_data=False)[1]


def require_bayer(meta: FrameMeta) -> str:
    """The frame's 2x2 Bayer pattern, or an :class:`InputError` saying why there is none.

    Debayering and CFA-aware calibration call this: an X-Trans mosaic (``meta.cfa ==
    "xtrans"``) is refused, as is a frame without a colour filter array.
    """
    if meta.cfa == "xtrans":
        raise InputError(meta.path, "X-Trans sensor (6x6 colour filter pattern): deepsky "
                                    "cannot debayer X-Trans mosaics; convert the files to "
                                    "demosaiced TIFF or FITS (e.g. with darktable or Siril) "
                                    "first, or process them as mono")
    if not meta.bayer:
        raise InputError(meta.path, "no Bayer pattern: the image is mono or already in colour")
    return meta.bayer


# ----------------------------------------------------------------------------------------------
# LibRaw
# ----------------------------------------------------------------------------------------------
# LibRaw's C code prints data errors on the process's stderr ("<file>: Unexpected end of
# file", "<file>: data corrupted at <offset>"), around deepsky's own one-line error. While
# any thread is in LibRaw, file descriptor 2 points to a scratch file; each reader picks the
# lines naming its file (they name it), and the last one out restores stderr and passes on
# whatever else was written meanwhile (progress lines of other threads), in order.
_CAPTURE_LOCK = threading.Lock()
_capture: dict[str, Any] = {"users": 0, "saved": -1, "file": None}


@contextlib.contextmanager
def _libraw_stderr() -> Iterator[list[str]]:
    """Yield a list that, when the block ends, holds the lines printed on fd 2 meanwhile
    (by LibRaw, or by anything else: those are passed on to the real stderr)."""
    printed: list[str] = []
    with _CAPTURE_LOCK:
        if _capture["users"] == 0:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            try:
                scratch = tempfile.TemporaryFile()
                saved = os.dup(2)
                os.dup2(scratch.fileno(), 2)
            except OSError:  # no fd 2, or no temporary space: LibRaw prints as it will
                pass
            else:
                _capture.update(saved=saved, file=scratch)
        capturing = _capture["file"] is not None
        if capturing:
            _capture["users"] += 1
    if not capturing:
        yield printed
        return
    try:
        yield printed
    finally:
        with _CAPTURE_LOCK:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            scratch = _capture["file"]
            size = os.fstat(scratch.fileno()).st_size
            text = os.pread(scratch.fileno(), size, 0).decode("utf-8", "replace")
            printed.extend(text.splitlines())
            _capture["users"] -= 1
            if _capture["users"] == 0:
                os.dup2(_capture["saved"], 2)
                os.close(_capture["saved"])
                scratch.close()
                _capture.update(saved=-1, file=None)
                other = [line for line in text.splitlines() if not _LIBRAW_LINE.search(line)]
                if other:
                    with contextlib.suppress(OSError):
                        os.write(2, ("\n".join(other) + "\n").encode())


_LIBRAW_LINE = re.compile(r": (Unexpected end of file|data corrupted at -?\d+)$")


def _read(path: Path, *, with_data: bool) -> tuple[np.ndarray | None, FrameMeta]:
    check_input_file(path, "camera RAW")
    failure: InputError | None = None
    with _libraw_stderr() as printed:
        try:
            result = _read_libraw(path, with_data=with_data)
        except InputError as err:
            failure = err
    said = [line.split(os.fspath(path), 1)[1].lstrip(": ") for line in printed
            if os.fspath(path) in line and _LIBRAW_LINE.search(line)]
    if failure is not None:
        if not said:
            raise failure
        problem = failure.problem
        problem = problem[:-1] + f": {said[0]})" if problem.endswith(")") else \
            f"{problem} ({said[0]})"
        raise InputError(path, problem) from failure
    if said:  # read, but LibRaw met damaged data on the way: the pixels cannot be trusted
        raise InputError(path, f"the RAW data are truncated or damaged (LibRaw: {said[0]})")
    return result


def _read_libraw(path: Path, *, with_data: bool) -> tuple[np.ndarray | None, FrameMeta]:
    try:
        with no_warnings():
            raw = rawpy.imread(os.fspath(path))
    except rawpy.LibRawFileUnsupportedError as err:
        raise InputError(path, "not a camera RAW file LibRaw can read (unsupported format, "
                               "or not a RAW file)") from err
    except rawpy.LibRawIOError as err:
        raise InputError(path, "cannot read the RAW file, it is truncated or damaged "
                               f"(LibRaw: {_libraw_message(err)})") from err
    except (rawpy.LibRawError, rawpy.NotSupportedError) as err:
        raise InputError(path, f"cannot open the RAW file (LibRaw: {_libraw_message(err)})") \
            from err
    except OSError as err:
        raise InputError(path, f"cannot read the file ({err.strerror or err})") from err

    with raw:
        try:
            with no_warnings():
                info = _libraw_info(raw, path, with_data=with_data)
        except InputError:
            raise
        except (rawpy.LibRawError, rawpy.NotSupportedError, RuntimeError, ValueError,
                NotImplementedError) as err:
            raise InputError(path, "cannot decode the RAW data, the file is corrupt or "
                                   f"truncated (LibRaw: {_libraw_message(err)})") from err

    exif = read_exif(path)
    meta = _build_meta(path, info, exif)
    return info["data"], meta


def _libraw_message(err: BaseException) -> str:
    text = short(err)
    m = re.fullmatch(r"b'(.*)'", text)
    return m.group(1) if m else text


def _libraw_info(raw: Any, path: Path, *, with_data: bool) -> dict[str, Any]:
    """Everything needed from the open RawPy object (its buffers die when it closes)."""
    sizes = raw.sizes
    desc = raw.color_desc.decode("ascii", "replace")
    info: dict[str, Any] = {"width": int(sizes.width), "height": int(sizes.height),
                            "data": None, "channels": 1, "bayer": None, "cfa": None,
                            "xtrans": None}
    if raw.raw_type != rawpy.RawType.Flat:
        # Already RGB at the sensor level (Foveon, linear DNG, sRAW): 3 planes, no CFA.
        info["channels"] = 3
        if with_data:
            img = raw.raw_image_visible
            info["data"] = owned_float32(np.moveaxis(img[..., :3], -1, 0))
        info["black"] = _mean_or_none(raw.black_level_per_channel[:3])
    else:
        pattern = raw.raw_pattern  # colour indices from the top-left of the *full* raw
        n = pattern.shape[0]
        # Shift to the first visible pixel.
        rows = (np.arange(n) + int(sizes.top_margin)) % n
        cols = (np.arange(n) + int(sizes.left_margin)) % n
        vis = pattern[np.ix_(rows, cols)]
        letters = [[_colour_letter(desc, int(i), path) for i in row] for row in vis]
        levels = raw.black_level_per_channel
        per_position = [float(levels[int(i)]) for i in vis.ravel()] if n > 1 else [
            float(levels[0])]
        info["black"] = float(np.mean(per_position))
        if n == 2 and len(set(per_position)) > 1:
            info["cblack"] = " ".join(f"{v:g}" for v in per_position)
        if n == 2:
            text = "".join(letters[0] + letters[1])
            if text not in BAYER_PATTERNS:
                raise InputError(path, f"unsupported colour filter pattern {text!r}")
            info["bayer"], info["cfa"] = text, "bayer"
        elif n == 6:
            info["cfa"], info["xtrans"] = "xtrans", "".join("".join(r) for r in letters)
        elif n != 1:
            raise InputError(path, f"unsupported colour filter array ({n}x{n} pattern, "
                                   f"colours {desc!r})")
        if with_data:
            # Copy while the file is open: rawpy's buffer dies with the RawPy object.
            info["data"] = owned_float32(raw.raw_image_visible)
    info["white"] = float(raw.white_level) if raw.white_level else None
    try:
        other = raw.other
    except (OverflowError, OSError, ValueError):  # rawpy converts a bad timestamp itself
        other = None
    iso = getattr(other, "iso_speed", 0) or 0
    shutter = getattr(other, "shutter_speed", 0) or 0
    stamp = getattr(other, "timestamp", None)
    info["iso"] = float(iso) if iso > 0 else None
    info["shutter"] = float(f"{shutter:.6g}") if shutter > 0 else None
    # LibRaw's time stamp is the camera clock read as local time; rawpy turns it back into
    # that clock reading. Like the EXIF date without an offset, it is taken as UTC.
    info["timestamp"] = (stamp.replace(tzinfo=timezone.utc)
                         if isinstance(stamp, datetime) and stamp.year > 1970 else None)
    return info


def _colour_letter(desc: str, index: int, path: Path) -> str:
    letter = desc[index] if 0 <= index < len(desc) else "?"
    if letter not in "RGB":
        raise InputError(path, f"unsupported sensor colours {desc!r} (only R, G, B filters "
                               "are supported)")
    return letter


def _mean_or_none(values: Any) -> float | None:
    vals = [float(v) for v in values]
    return float(np.mean(vals)) if vals else None


def _build_meta(path: Path, info: dict[str, Any], exif: dict[int, Any]) -> FrameMeta:
    make = _text(exif.get(_MAKE))
    model = _text(exif.get(_MODEL)) or _text(exif.get(_UNIQUE_MODEL))
    if make and model and model.lower().startswith(make.split()[0].lower()):
        instrument: str | None = model
    else:
        instrument = " ".join(x for x in (make, model) if x) or None
    exposure = _rational(exif.get(_EXPOSURE)) or info["shutter"]
    iso_value = _first_number(exif.get(_ISO))
    if iso_value is None or iso_value >= 65535:  # 65535: "too high for this tag" (Nikon)
        iso_value = info["iso"] or iso_value
    iso = int(round(iso_value)) if iso_value else None
    date = _exif_date(exif) or info["timestamp"]

    header = fits.Header()
    cards: list[tuple[str, Any, str]] = [
        ("INSTRUME", instrument, "camera make and model"),
        ("EXPTIME", exposure, "[s] exposure time"),
        ("ISOSPEED", iso, "ISO speed"),
        ("DATE-OBS", date.strftime("%Y-%m-%dT%H:%M:%S.%f") if date else None,
         "start of exposure (camera clock)"),
        ("BAYERPAT", info["bayer"] or info["xtrans"], "CFA pattern of the first pixels"),
        ("XBAYROFF", 0 if info["cfa"] else None, ""),
        ("YBAYROFF", 0 if info["cfa"] else None, ""),
        ("ROWORDER", "TOP-DOWN" if info["cfa"] else None, ""),
        ("BLKLEVEL", info["black"], "[ADU] black level (not subtracted)"),
        ("CBLACK", info.get("cblack"), "[ADU] black level per 2x2 CFA position"),
        ("SATURATE", info["white"], "[ADU] white (saturation) level"),
    ]
    for key, value, comment in cards:
        if value is not None:
            header[key] = (fits_text(value), comment)  # EXIF text need not be ASCII
    return FrameMeta(
        path=path,
        kind="unknown",
        width=info["width"],
        height=info["height"],
        channels=info["channels"],
        exposure=exposure,
        iso=iso,
        bayer=info["bayer"],
        cfa=info["cfa"],
        date=date,
        instrument=instrument,
        black_level=info["black"],
        white_level=info["white"],
        bit_depth=16,
        format="raw",
        header=header,
    )


# ----------------------------------------------------------------------------------------------
# EXIF (a minimal, read-only TIFF IFD reader)
# ----------------------------------------------------------------------------------------------
def read_exif(path: str | os.PathLike) -> dict[int, Any]:
    """The few EXIF/TIFF tags deepsky uses, from a RAW file's metadata; ``{}`` if none.

    Handles TIFF-structured raws (CR2, NEF, ARW, DNG, PEF, ORF, RW2, SRW, ... whatever their
    magic number), CR3 (the TIFF blocks in its CMT1/CMT2 boxes) and RAF (the EXIF block of
    its embedded preview). Tags read: Make, Model, DateTime, ExposureTime, ISO,
    DateTimeOriginal, OffsetTimeOriginal, SubSecTimeOriginal, UniqueCameraModel. Metadata
    problems never fail a read: a damaged block just yields fewer tags.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
            size = os.fstat(f.fileno()).st_size
            if head[:2] in (b"II", b"MM"):
                return _parse_tiff(f, 0, size)
            if head[4:8] == b"ftyp":
                return _parse_cr3(f, size)
            if head.startswith(b"FUJIFILMCCD-RAW"):
                return _parse_raf(f, head, size)
    except (OSError, struct.error, ValueError, OverflowError):
        return {}
    return {}


def _parse_tiff(f: BinaryIO, base: int, size: int, *, follow_exif: bool = True) -> dict[int, Any]:
    """Tags of IFD0 (and its EXIF IFD) of the TIFF structure starting at ``base``."""
    f.seek(base)
    head = f.read(8)
    if len(head) < 8 or head[:2] not in (b"II", b"MM"):
        return {}
    bo = "<" if head[:2] == b"II" else ">"
    ifd0 = struct.unpack(bo + "I", head[4:8])[0]
    tags = _read_ifd(f, base, ifd0, bo, size)
    exif_ptr = tags.pop(_EXIF_IFD, None)
    if follow_exif and isinstance(exif_ptr, (list, tuple)) and exif_ptr:
        for key, value in _read_ifd(f, base, int(exif_ptr[0]), bo, size).items():
            tags.setdefault(key, value)
    return tags


_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_TYPE_FORMATS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 11: "f", 12: "d", 13: "I"}


def _read_ifd(f: BinaryIO, base: int, offset: int, bo: str, size: int) -> dict[int, Any]:
    tags: dict[int, Any] = {}
    if offset <= 0 or base + offset + 2 > size:
        return tags
    f.seek(base + offset)
    count = struct.unpack(bo + "H", f.read(2))[0]
    if count > 1000:
        return tags
    entries = f.read(12 * count)
    for k in range(len(entries) // 12):
        tag, typ, n, raw_value = struct.unpack(bo + "HHI4s", entries[12 * k:12 * k + 12])
        if tag not in _WANTED and tag != _EXIF_IFD:
            continue
        width = _TYPE_SIZES.get(typ)
        if width is None or n == 0 or n > 4096:
            continue
        nbytes = width * n
        if nbytes <= 4:
            blob = raw_value[:nbytes]
        else:
            where = base + struct.unpack(bo + "I", raw_value)[0]
            if where + nbytes > size:
                continue
            pos = f.tell()
            f.seek(where)
            blob = f.read(nbytes)
            f.seek(pos)
        tags[tag] = _decode(typ, n, blob, bo)
    return tags


def _decode(typ: int, n: int, blob: bytes, bo: str) -> Any:
    if typ == 2:
        return blob.split(b"\0", 1)[0].decode("latin-1").strip()
    if typ == 7:
        return blob
    if typ in (5, 10):
        fmt = "I" if typ == 5 else "i"
        vals = struct.unpack(f"{bo}{2 * n}{fmt}", blob)
        return [(vals[2 * i], vals[2 * i + 1]) for i in range(n)]
    return list(struct.unpack(f"{bo}{n}{_TYPE_FORMATS[typ]}", blob))


def _parse_cr3(f: BinaryIO, size: int) -> dict[int, Any]:
    """CR3 (ISO base media): the TIFF blocks in the CMT1 (IFD0) and CMT2 (EXIF) boxes."""
    f.seek(0)
    blob = f.read(min(size, 1 << 20))
    tags: dict[int, Any] = {}
    for name in (b"CMT1", b"CMT2"):
        at = blob.find(name)
        if at >= 4:
            box_size = struct.unpack(">I", blob[at - 4:at])[0]
            if 8 < box_size <= size:
                for key, value in _parse_tiff(f, at + 4, size, follow_exif=False).items():
                    tags.setdefault(key, value)
    return tags


def _parse_raf(f: BinaryIO, head: bytes, size: int) -> dict[int, Any]:
    """RAF: the camera name from the header, the rest from the preview JPEG's EXIF."""
    tags: dict[int, Any] = {_MAKE: "FUJIFILM"}
    model = head[28:60].split(b"\0", 1)[0].decode("latin-1").strip()
    if model:
        tags[_MODEL] = model
    if len(head) >= 92:
        jpeg_at, jpeg_len = struct.unpack(">II", head[84:92])
        if 0 < jpeg_at < size:
            f.seek(jpeg_at)
            jpeg = f.read(min(jpeg_len, 1 << 16))
            at = jpeg.find(b"Exif\0\0")
            if at >= 0:
                for key, value in _parse_tiff(f, jpeg_at + at + 6, size).items():
                    tags.setdefault(key, value)
    return tags


def _text(v: Any) -> str | None:
    if isinstance(v, str):
        v = v.strip()
        return v or None
    return None


def _rational(v: Any) -> float | None:
    if isinstance(v, list) and v and isinstance(v[0], tuple):
        num, den = v[0]
        if den:
            value = num / den
            return value if value > 0 else None
    return None


def _first_number(v: Any) -> float | None:
    if isinstance(v, list) and v and isinstance(v[0], (int, float)) and v[0] > 0:
        return float(v[0])
    return None


def _exif_date(exif: dict[int, Any]) -> datetime | None:
    text = _text(exif.get(_DATE_ORIGINAL)) or _text(exif.get(_DATETIME))
    if not text:
        return None
    try:
        dt = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    sub = _text(exif.get(_SUBSEC_ORIGINAL)) if exif.get(_DATE_ORIGINAL) else None
    if sub and sub.isdigit():
        dt = dt.replace(microsecond=int((sub + "000000")[:6]))
    offset = _text(exif.get(_OFFSET_ORIGINAL))
    m = re.fullmatch(r"([+-])(\d\d):(\d\d)", offset or "")
    tz = timezone.utc
    if m:
        delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        tz = timezone(delta if m.group(1) == "+" else -delta)
    return dt.replace(tzinfo=tz).astimezone(timezone.utc)
