"""TIFF reading and writing (tifffile).

Reading: 8/16/32-bit integer and 16/32/64-bit float samples, mono or RGB (contiguous
``H x W x 3`` or planar ``3 x H x W``), first image of the file; values as stored (a 16-bit
file reads as 0..65535). An alpha channel is dropped. Metadata: deepsky's own block (below)
when present; otherwise what TIFF/EXIF tags say (camera make and model, DateTime /
DateTimeOriginal, ExposureTime, ISO).

Writing: ``bits=16`` writes uint16 (values rounded and clipped to 0..65535, NaN as 0: the
ADU convention, callers working in 0..1 scale by 65535 themselves), ``bits=32`` float32.
Metadata travel as JSON in the ImageDescription tag::

    {"deepsky": {"version": 1, "cards": [[key, value, comment], ...], "history": [...]}}

where ``cards`` are the FITS keywords a FITS writer would write (normalised metadata
included) and ``history`` the processing steps. Reading such a file gives back the same
:class:`~deepsky.types.FrameMeta` fields and ``Frame.history``.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import tifffile

from deepsky.errors import InputError, OutputError
from deepsky.io._common import check_image_array, check_input_file, owned_float32, read_head
from deepsky.io._common import no_warnings, short, to_integer
from deepsky.io.atomic import atomic_path
from deepsky.io.fits import embedded_cards, header_from_cards
from deepsky.io.headers import meta_from_header
from deepsky.types import Frame, FrameMeta

# tifffile logs each damaged tag at WARNING level; with logging not configured, Python prints
# those lines on stderr, around deepsky's one-line error. The reader reports damage itself.
logging.getLogger("tifffile").addHandler(logging.NullHandler())

_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_BLOCK_KEY = "deepsky"


def read_tiff(path: str | os.PathLike) -> Frame:
    """Read the first image of a TIFF file as an owned float32 :class:`Frame`.

    Mono ``(H, W)`` or colour ``(3, H, W)`` (R, G, B), values as stored.
    """
    p = Path(path)
    with _open(p) as tif:
        page, geometry = _first_image(tif, p)
        try:
            with no_warnings():
                raw = page.asarray()
        except Exception as err:  # tifffile and its codecs raise many kinds on bad data
            if "imagecodecs" in str(err):
                raise InputError(p, f"TIFF compression {_compression_name(page)} needs the "
                                    "optional 'imagecodecs' package (pip install "
                                    "imagecodecs)") from err
            raise InputError(p, f"cannot decode the TIFF pixel data, the file is corrupt "
                                f"or truncated ({short(err)})") from err
        meta, history = _meta(page, geometry, p)
    raw = np.asarray(raw)
    _, h, w, spp = geometry
    if raw.size != h * w * spp:
        raise InputError(p, f"the pixel data ({raw.size} samples) do not match the tags "
                            f"({w} x {h} x {spp}); the file is corrupt or truncated")
    return Frame(_to_planes(raw, geometry), meta, history)


def read_tiff_meta(path: str | os.PathLike) -> FrameMeta:
    """Metadata of a TIFF file (no pixel data decoded)."""
    p = Path(path)
    with _open(p) as tif:
        page, geometry = _first_image(tif, p)
        return _meta(page, geometry, p)[0]


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    bits: int = 16,
    meta: FrameMeta | None = None,
    history: Iterable[str] = (),
    cards: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``(H, W)`` or ``(3, H, W)`` data as an uncompressed TIFF, atomically.

    Parameters
    ----------
    bits : 16 or 32
        16: uint16, values rounded and clipped to 0..65535 as given (NaN becomes 0).
        32: float32, values as given.
    meta, history, cards
        Stored as FITS-style cards plus history lines (JSON in ImageDescription) and read
        back by :func:`read_tiff`.

    Examples
    --------
    >>> write_tiff("stack.tif", stack, bits=16, meta=frame.meta)  # doctest: +SKIP
    """
    final = Path(path)
    if bits not in (16, 32):
        raise OutputError(f"{final}: bits must be 16 or 32, got {bits!r}")
    arr = check_image_array(data, final)
    arr = to_integer(arr, np.uint16) if bits == 16 else arr.astype(np.float32, copy=False)
    colour = arr.ndim == 3
    if colour:
        arr = np.ascontiguousarray(np.moveaxis(arr, 0, -1))  # (H, W, 3), RGB contiguous
    block = {_BLOCK_KEY: {"version": 1,
                          "cards": [list(c) for c in embedded_cards(meta=meta, cards=cards)],
                          "history": [str(h) for h in history]}}
    description = json.dumps(block, ensure_ascii=True, allow_nan=True)
    with atomic_path(final) as tmp:
        tifffile.imwrite(tmp, arr, photometric="rgb" if colour else "minisblack",
                         planarconfig="contig" if colour else None, description=description,
                         metadata=None, software="deepsky", compression=None)
    return final


# ----------------------------------------------------------------------------------------------
def _open(path: Path) -> tifffile.TiffFile:
    check_input_file(path, "TIFF")
    head = read_head(path, 4)
    if head not in _TIFF_MAGIC:
        raise InputError(path, f"not a TIFF file (starts with {head!r}, expected 'II*' or "
                               "'MM*')")
    try:
        with no_warnings():
            return tifffile.TiffFile(path, mode="rb")
    except Exception as err:  # TiffFileError, struct.error, ValueError, ... on corrupt files
        raise InputError(path, f"not a readable TIFF file ({short(err)})") from err


def _first_image(tif: tifffile.TiffFile, path: Path) -> tuple[Any, tuple[str, int, int, int]]:
    """The first page and its geometry ``(layout, height, width, samples)``; layout is
    'mono', 'contig' (``H x W x S``) or 'planar' (``S x H x W``)."""
    try:
        page = tif.pages[0]
        shape, axes, dtype = tuple(page.shape), str(page.axes), np.dtype(page.dtype)
        photometric = int(page.photometric)
    except Exception as err:
        raise InputError(path, f"not a readable TIFF file ({short(err)})") from err
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise InputError(path, f"unsupported TIFF sample type {dtype}")
    if photometric == 3:
        raise InputError(path, "palette (indexed-colour) TIFF is not supported; save it as "
                               "greyscale or RGB")
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise InputError(path, f"bad image dimensions {shape} in the TIFF tags")
    # Leading axes of length 1 carry nothing (a single plane, a single sample).
    while len(shape) > 2 and shape[0] == 1:
        shape, axes = shape[1:], axes[1:]
    if len(shape) == 2:
        return page, ("mono", shape[0], shape[1], 1)
    if len(shape) == 3 and axes.endswith("S") and shape[2] <= 4:
        return page, ("contig", shape[0], shape[1], shape[2])
    if len(shape) == 3 and axes[0] == "S" and shape[0] <= 4:
        return page, ("planar", shape[1], shape[2], shape[0])
    raise InputError(path, f"unsupported TIFF layout: shape {shape}, axes {axes!r} (expected "
                           "one mono or RGB image)")


def _compression_name(page: Any) -> str:
    try:
        return str(page.compression.name)
    except AttributeError:
        return str(page.compression)


def _to_planes(raw: np.ndarray, geometry: tuple[str, int, int, int]) -> np.ndarray:
    """``(H, W)`` or ``(3, H, W)`` float32; alpha (and a grey image's alpha) dropped."""
    layout, h, w, s = geometry
    if layout == "mono":
        return owned_float32(raw.reshape(h, w))
    planes = raw.reshape(h, w, s).transpose(2, 0, 1) if layout == "contig" \
        else raw.reshape(s, h, w)
    return owned_float32(planes[0] if s < 3 else planes[:3])


def _meta(page: Any, geometry: tuple[str, int, int, int],
          path: Path) -> tuple[FrameMeta, tuple[str, ...]]:
    _, h, w, s = geometry
    channels = 3 if s >= 3 else 1
    dtype = np.dtype(page.dtype)
    bit_depth = int(page.bitspersample) if dtype.kind in "ui" else None
    block = _deepsky_block(page)
    if block is not None:
        header = header_from_cards(tuple(c) for c in block.get("cards", [])
                                   if isinstance(c, list) and len(c) == 3)
        history = tuple(str(line) for line in block.get("history", []))
    else:
        header = header_from_cards(_cards_from_tags(page))
        history = ()
    meta = meta_from_header(header, path=path, width=w, height=h, channels=channels,
                            fmt="tiff", bit_depth=bit_depth, raw_header=header)
    return meta, history


def _deepsky_block(page: Any) -> dict[str, Any] | None:
    try:
        text = page.description
    except Exception:
        return None
    if not text or not text.lstrip().startswith("{"):
        return None
    try:
        block = json.loads(text)
    except ValueError:
        return None
    if isinstance(block, dict) and isinstance(block.get(_BLOCK_KEY), dict):
        return block[_BLOCK_KEY]
    return None


def _cards_from_tags(page: Any) -> list[tuple[str, Any, str]]:
    """FITS-style cards from the standard TIFF and EXIF tags of a foreign TIFF."""
    cards: list[tuple[str, Any, str]] = []
    tags = page.tags
    exif: dict[str, Any] = {}
    try:
        if "ExifTag" in tags and isinstance(tags["ExifTag"].value, dict):
            exif = tags["ExifTag"].value
    except Exception:
        exif = {}

    def tag(name: str) -> Any:
        try:
            return tags[name].value if name in tags else None
        except Exception:
            return None

    make, model = tag("Make"), tag("Model")
    instrument = " ".join(str(x).strip() for x in (make, model) if x and str(x).strip())
    if instrument:
        cards.append(("INSTRUME", instrument, "camera"))
    exposure = exif.get("ExposureTime")
    if isinstance(exposure, tuple) and len(exposure) == 2 and exposure[1]:
        cards.append(("EXPTIME", exposure[0] / exposure[1], "[s] exposure time"))
    iso = exif.get("ISOSpeedRatings", exif.get("PhotographicSensitivity"))
    if isinstance(iso, (tuple, list)):
        iso = iso[0] if iso else None
    if isinstance(iso, int) and iso > 0:
        cards.append(("ISOSPEED", iso, "ISO speed"))
    date = _tiff_date(exif.get("DateTimeOriginal") or tag("DateTime"))
    if date is not None:
        cards.append(("DATE-OBS", date.strftime("%Y-%m-%dT%H:%M:%S"), "camera clock"))
    return cards


def _tiff_date(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip()[:19], "%Y:%m:%d %H:%M:%S").replace(
            tzinfo=timezone.utc)
    except ValueError:
        return None
