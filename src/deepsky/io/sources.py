"""Frames as sources of row bands, for tile-by-tile work with flat memory.

``open_source(path)`` reads a file's metadata once and returns a :class:`FrameSource` whose
``read_rows(y0, y1)`` returns only the rows asked for. Uncompressed FITS files are
memory-mapped directly (the data offset and scaling are taken from the header once), so a
band costs only its own bytes. Other formats (compressed FITS, RAW, TIFF, XISF) are decoded
once into a ``.npy`` cache file when a cache folder is given, else kept in memory.

No file handle stays open between calls: a session of thousands of frames never hits the
open-file limit.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepsky.errors import InputError
from deepsky.io import format_of, read, read_meta
from deepsky.io._common import is_gzip, no_warnings
from deepsky.io.atomic import atomic_path
from deepsky.io.fits import FITS_ERRORS, check_scaling
from deepsky.types import FrameMeta

_BITPIX_DTYPE = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


@dataclass
class FrameSource:
    """One frame that can be read band by band. Picklable (holds paths, not handles).

    Pixels come as stored, except that infinite values read as NaN (a missing sample)."""

    path: Path
    meta: FrameMeta
    # Direct memory map of an uncompressed FITS file.
    offset: int | None = None
    dtype: str | None = None
    file_shape: tuple[int, ...] | None = None
    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None
    # Decoded copy (.npy) for every other case.
    cache_file: Path | None = None
    _memory: np.ndarray | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.meta.shape

    @property
    def height(self) -> int:
        return self.meta.height

    @property
    def width(self) -> int:
        return self.meta.width

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` (clipped to the frame) as a new float32 array: ``(rows, W)`` or
        ``(3, rows, W)``."""
        y0 = max(0, int(y0))
        y1 = min(self.meta.height, int(y1))
        if y1 <= y0:
            return np.zeros(self.meta.shape[:-2] + (0, self.meta.width), np.float32)
        if self.offset is not None:
            return self._read_mapped(y0, y1)
        arr = self._decoded()
        return _inf_to_nan(np.array(arr[..., y0:y1, :], dtype=np.float32, copy=True))

    def read_rows_into(self, y0: int, y1: int, out: np.ndarray) -> None:
        """:meth:`read_rows` written into ``out`` (float32, of the band's shape). A plain
        FITS image is converted straight from the file's bytes, without the float32 band
        :meth:`read_rows` returns and its copy into ``out``."""
        if (self.offset is not None and self.file_shape is not None
                and len(self.file_shape) == 2 and 0 <= y0 < y1 <= self.meta.height
                and out.shape == (y1 - y0, self.meta.width) and out.dtype == np.float32):
            self._read_mapped(y0, y1, into=out)
        else:
            out[...] = self.read_rows(y0, y1)

    def read(self) -> np.ndarray:
        """The whole frame as float32."""
        return self.read_rows(0, self.meta.height)

    def read_sample(self, step: int) -> np.ndarray:
        """Every ``step``-th row and column of the frame (``[..., ::step, ::step]``) as new
        float32: only the sampled pixels are converted."""
        if self.offset is not None:
            return self._read_mapped(0, self.meta.height, step=step)
        arr = self._decoded()
        return _inf_to_nan(np.array(arr[..., ::step, ::step], dtype=np.float32, copy=True))

    def read_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``y0:y1`` and columns ``x0:x1`` (clipped to the frame) as new float32; only
        those bytes are read from an uncompressed FITS file."""
        y0 = max(0, int(y0))
        y1 = min(self.meta.height, int(y1))
        x0 = max(0, int(x0))
        x1 = min(self.meta.width, int(x1))
        if y1 <= y0 or x1 <= x0:
            return np.zeros(self.meta.shape[:-2] + (max(0, y1 - y0), max(0, x1 - x0)),
                            np.float32)
        if self.offset is not None:
            return self._read_mapped(y0, y1, x0, x1)
        arr = self._decoded()
        return _inf_to_nan(np.array(arr[..., y0:y1, x0:x1], dtype=np.float32, copy=True))

    def _read_mapped(self, y0: int, y1: int, x0: int = 0, x1: int | None = None,
                     step: int = 1, into: np.ndarray | None = None) -> np.ndarray:
        """The pixels asked for as float32: a new array, or ``into`` (a 2-D image's band of
        that shape: converted straight into it)."""
        mm = None
        if self.file_shape is not None and len(self.file_shape) == 2:
            band = self._pread_rows(y0, y1)[::step, x0:x1:step]
        else:  # planes: a memory map of the file's data
            try:
                mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset,
                               shape=self.file_shape)
            except (OSError, ValueError) as err:
                raise InputError(self.path, f"cannot read the pixel data ({err})") from err
            band = mm[..., y0:y1:step, x0:x1:step]
        try:
            if into is None:
                out = band.astype(np.float32)
            else:
                out = into
                np.copyto(out, band, casting="unsafe")
            bad = band == self.blank if self.blank is not None else None
        finally:
            del band, mm
        if self.bscale != 1.0:
            out *= np.float32(self.bscale)
        if self.bzero != 0.0:
            out += np.float32(self.bzero)
        if bad is not None and bad.any():
            out[bad] = np.nan
        if self.dtype is not None and self.dtype.endswith(("f4", "f8")):
            _inf_to_nan(out)
        while out.ndim > 3:
            out = out[0]
        if out.ndim == 3 and self.meta.channels == 1:
            out = out[0]
        elif out.ndim == 3 and out.shape[0] > 3:
            out = np.ascontiguousarray(out[:3])
        return out

    def _pread_rows(self, y0: int, y1: int) -> np.ndarray:
        """Whole rows ``y0:y1`` of a 2-D image, as stored, with one read: a window of a
        memory map faults once per row (a page each), ~0.5 ms per window of a few hundred
        rows, which hundreds of frames times dozens of tiles turned into seconds."""
        dt = np.dtype(self.dtype)
        width = self.file_shape[1]
        raw = np.empty((y1 - y0, width), dt)
        buf = memoryview(raw).cast("B")
        start = self.offset + y0 * width * dt.itemsize
        done = 0
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                while done < len(buf):  # a network filesystem may return less at a time
                    n = os.preadv(fd, [buf[done:]], start + done)
                    if n <= 0:
                        raise InputError(self.path, "cannot read the pixel data (the file "
                                                    "is shorter than its header says)")
                    done += n
            finally:
                os.close(fd)
        except OSError as err:
            raise InputError(self.path, f"cannot read the pixel data ({err})") from err
        return raw

    def _decoded(self) -> np.ndarray:
        if self._memory is not None:
            return self._memory
        if self.cache_file is not None:
            if not self.cache_file.exists():
                _decode_to(self.path, self.cache_file)
            return np.load(self.cache_file, mmap_mode="r")
        self._memory = read(self.path).data
        return self._memory

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_memory"] = None  # never ship pixel data between processes
        return state


def _inf_to_nan(a: np.ndarray) -> np.ndarray:
    """Infinite pixels become NaN (in place), the pipeline's mark of a missing sample: an
    infinity would spread through interpolation and poison every mean it enters."""
    inf = np.isinf(a)
    if inf.any():
        a[inf] = np.nan
    return a


def _decode_to(path: Path, cache_file: Path) -> None:
    data = read(path).data
    with atomic_path(cache_file, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, data)


def _cache_name(path: Path) -> str:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha1(key.encode()).hexdigest()[:16] + ".npy"


def open_source(path: str | os.PathLike, *, meta: FrameMeta | None = None,
                cache_dir: str | os.PathLike | None = None) -> FrameSource:
    """A :class:`FrameSource` for ``path`` (metadata read now, pixels on demand)."""
    p = Path(path)
    m = meta if meta is not None else read_meta(p)
    if format_of(p) == "fits" and not p.name.lower().endswith((".gz", ".fz")):
        mapped = _fits_layout(p)
        if mapped is not None:
            offset, dtype, shape, bscale, bzero, blank = mapped
            return FrameSource(p, m, offset=offset, dtype=dtype, file_shape=shape,
                               bscale=bscale, bzero=bzero, blank=blank)
    cache_file = None if cache_dir is None else Path(cache_dir) / _cache_name(p)
    return FrameSource(p, m, cache_file=cache_file)


_Layout = tuple[int, str, tuple[int, ...], float, float, "int | None"]
# Layouts already read, by (path, size, modification time): each stage opens its own sources
# (masters, analysis, integration), and astropy's parse of a header is 3-5 ms of Python.
_LAYOUTS: dict[tuple[str, int, int], "_Layout | None"] = {}


def _fits_layout(p: Path) -> _Layout | None:
    """Data offset, dtype, shape and scaling of the first image HDU, if it is uncompressed
    (read once per version of the file: remembered by its path, size and mtime)."""
    try:
        key = _layout_key(p)
    except OSError:
        return _read_layout(p)  # the error, as fits.open reports it
    if key not in _LAYOUTS:
        _LAYOUTS[key] = _read_layout(p)
    return _LAYOUTS[key]


def _layout_key(p: Path) -> tuple[str, int, int]:
    """A version of the file: its path, size and modification time."""
    st = p.stat()
    return str(p.absolute()), st.st_size, st.st_mtime_ns


def _read_layout(p: Path) -> _Layout | None:
    from astropy.io import fits

    if is_gzip(p):
        return None  # gzip-compressed whatever its name: decoded, not mapped
    try:
        with no_warnings():
            with fits.open(p, mode="readonly", memmap=True, lazy_load_hdus=False) as hdul:
                return _layout_in(hdul, p)
    except InputError:
        raise
    except FITS_ERRORS as err:
        raise InputError(p, f"not a readable FITS file ({err})") from err


def _layout_in(hdul: Any, p: Path) -> _Layout | None:
    from astropy.io import fits

    for i, hdu in enumerate(hdul):
        if isinstance(hdu, fits.CompImageHDU):
            return None
        if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)):
            continue
        h = hdu.header
        naxis = h.get("NAXIS", 0)
        if not naxis:
            continue
        check_scaling(h, p)
        bitpix = int(h["BITPIX"])
        dims = tuple(int(h[f"NAXIS{k}"]) for k in range(naxis, 0, -1))
        offset = int(hdu.fileinfo()["datLoc"])  # (HDUList.fileinfo re-serialises the header)
        nbytes = abs(bitpix) // 8 * int(np.prod(dims))
        if p.stat().st_size < offset + nbytes:
            raise InputError(p, f"truncated: the data needs {offset + nbytes} bytes, "
                                f"the file has {p.stat().st_size}")
        blank = h.get("BLANK") if bitpix > 0 else None
        return (offset, _BITPIX_DTYPE[bitpix], dims, float(h.get("BSCALE", 1.0)),
                float(h.get("BZERO", 0.0)),
                int(blank) if isinstance(blank, int) and _blank_fits(blank, bitpix) else None)
    return None


def remember_layout(p: Path, hdul: Any) -> None:
    """Note the layout of ``p`` from its HDUs, opened (uncompressed) by someone reading its
    metadata anyway: the discovery's parse then serves the band reader too. Silent: a file
    whose layout cannot be read is left for :func:`open_source` to report."""
    if p.name.lower().endswith((".gz", ".fz")):
        return
    try:
        if is_gzip(p):  # HDUs of the decompressed stream
            return
        key = _layout_key(p)
        with no_warnings():
            layout = _layout_in(hdul, p)
    except (InputError, OSError, *FITS_ERRORS):
        return
    _LAYOUTS[key] = layout


def _blank_fits(blank: int, bitpix: int) -> bool:
    """A BLANK value outside the stored integer range can never match (CAFOS writes 32768)."""
    lim = {8: (0, 255), 16: (-32768, 32767), 32: (-2**31, 2**31 - 1), 64: (-2**63, 2**63 - 1)}
    lo, hi = lim[bitpix]
    return lo <= blank <= hi
