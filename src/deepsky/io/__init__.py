"""Everything that opens a file lives here.

``read(path)`` returns a :class:`~deepsky.types.Frame` (owned float32 data plus normalised
metadata) for any supported format; ``read_meta(path)`` reads only the metadata;
``write(path, data, ...)`` picks the writer from the extension. Inputs are opened read-only;
outputs go to a temporary name and are renamed when complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from deepsky.errors import InputError, OutputError
from deepsky.types import Frame, FrameMeta

FITS_SUFFIXES = (".fit", ".fits", ".fts", ".fz")
RAW_SUFFIXES = (".cr2", ".cr3", ".nef", ".arw", ".dng", ".orf", ".rw2", ".pef", ".raf",
                ".crw", ".nrw", ".srw", ".3fr", ".erf", ".kdc", ".mrw", ".x3f", ".iiq")
TIFF_SUFFIXES = (".tif", ".tiff")
XISF_SUFFIXES = (".xisf",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ALL_SUFFIXES = FITS_SUFFIXES + RAW_SUFFIXES + TIFF_SUFFIXES + XISF_SUFFIXES + IMAGE_SUFFIXES


def format_of(path: str | os.PathLike) -> str | None:
    """'fits', 'raw', 'tiff', 'xisf', 'image' from the file name, or None if unsupported.

    ``.gz`` is looked through (``x.fits.gz`` is FITS).
    """
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix in FITS_SUFFIXES:
        return "fits"
    if suffix in RAW_SUFFIXES:
        return "raw"
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in XISF_SUFFIXES:
        return "xisf"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return None


def is_image_file(path: str | os.PathLike) -> bool:
    return format_of(path) is not None


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not an image file")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied (file is not readable)")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")


def read(path: str | os.PathLike) -> Frame:
    """Read any supported image file as an owned float32 :class:`Frame`."""
    p = Path(path)
    fmt = format_of(p)
    if fmt is None:
        raise InputError(p, f"unsupported file type '{p.suffix}' (supported: "
                            f"{', '.join(s for s in ALL_SUFFIXES)})")
    _check_readable(p)
    if fmt == "fits":
        from deepsky.io.fits import read_fits
        return read_fits(p)
    if fmt == "raw":
        from deepsky.io.raw import read_raw
        return read_raw(p)
    if fmt == "tiff":
        from deepsky.io.tiff import read_tiff
        return read_tiff(p)
    if fmt == "xisf":
        from deepsky.io.xisf import read_xisf
        return read_xisf(p)
    from deepsky.io.images import read_image
    return read_image(p)


def read_meta(path: str | os.PathLike) -> FrameMeta:
    """Read only the metadata of an image file (fast: no pixel decoding where avoidable)."""
    p = Path(path)
    fmt = format_of(p)
    if fmt is None:
        raise InputError(p, f"unsupported file type '{p.suffix}'")
    _check_readable(p)
    if fmt == "fits":
        from deepsky.io.fits import read_fits_meta
        return read_fits_meta(p)
    if fmt == "raw":
        from deepsky.io.raw import read_raw_meta
        return read_raw_meta(p)
    if fmt == "tiff":
        from deepsky.io.tiff import read_tiff_meta
        return read_tiff_meta(p)
    if fmt == "xisf":
        from deepsky.io.xisf import read_xisf_meta
        return read_xisf_meta(p)
    from deepsky.io.images import read_image_meta
    return read_image_meta(p)


def write(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    meta: FrameMeta | None = None,
    history: tuple[str, ...] | list[str] = (),
    cards: dict[str, Any] | None = None,
    bits: int | None = None,
) -> Path:
    """Write ``data`` in the format its extension names, atomically.

    FITS: float32 (``bits=16`` for uint16). TIFF: ``bits=16`` (default) or ``32`` (float).
    XISF: float32. PNG/JPEG: 8-bit previews of data already scaled to 0..1.
    """
    p = Path(path)
    fmt = format_of(p)
    if fmt == "fits":
        from deepsky.io.fits import write_fits
        return write_fits(p, data, meta=meta, cards=cards, history=history,
                          dtype=np.uint16 if bits == 16 else np.float32)
    if fmt == "tiff":
        from deepsky.io.tiff import write_tiff
        return write_tiff(p, data, bits=bits or 16, meta=meta, history=history, cards=cards)
    if fmt == "xisf":
        from deepsky.io.xisf import write_xisf
        return write_xisf(p, data, meta=meta, history=history, cards=cards)
    if fmt == "image":
        from deepsky.io.images import write_preview
        return write_preview(p, data)
    raise OutputError(f"{p}: cannot write this file type (use .fits, .tif, .xisf, .png or .jpg)")
