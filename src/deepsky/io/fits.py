"""FITS reading and writing (plain, tile-compressed ``.fz`` and gzipped ``.gz``).

The first HDU with image data is read (a ``.fz`` file keeps it in extension 1). The file is
opened read-only; a file cut short inside its pixel data, a damaged header or a non-FITS
file raises :class:`~deepsky.errors.InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import unicodedata
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError

from deepsky.errors import InputError, OutputError
from deepsky.io._common import check_image_array, check_input_file, is_gzip, owned_float32
from deepsky.io._common import no_warnings, read_head, to_integer
from deepsky.io._common import short as _short
from deepsky.io.atomic import atomic_path, output_error
from deepsky.io.headers import as_float, first, header_cards_from_meta, meta_from_header
from deepsky.types import Frame, FrameMeta

try:  # the tile decompressor's own exception (not an OSError or ValueError)
    from astropy.io.fits.hdu.compressed._compression import CfitsioException as _CfitsioError
except ImportError:  # pragma: no cover - another astropy layout
    class _CfitsioError(Exception):  # type: ignore[no-redef]
        """Stands for astropy's CfitsioException where it cannot be imported."""

# What astropy raises on a damaged file, at opening or later, lazily, when a header value or
# the pixel data are first touched (found by fuzzing: benchmarks/fuzz_readers.py).
FITS_ERRORS = (OSError, ValueError, TypeError, IndexError, KeyError, EOFError, AttributeError,
               RuntimeError, ZeroDivisionError, MemoryError, OverflowError, zlib.error,
               VerifyError, _CfitsioError)

FITS_EXTENSIONS = (".fit", ".fits", ".fts", ".fz", ".fit.gz", ".fits.gz", ".fts.gz", ".fit.fz",
                   ".fits.fz")

# Cards that describe the data layout: never copied from an input header into an output.
_STRUCTURAL = {
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BZERO", "BSCALE",
    "BLANK", "PCOUNT", "GCOUNT", "XTENSION", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1",
    "ZNAXIS2", "ZNAXIS3", "ZTILE1", "ZTILE2", "ZTILE3", "ZCMPTYPE", "ZNAME1", "ZVAL1",
    "ZNAME2", "ZVAL2", "ZQUANTIZ", "ZSIMPLE", "ZEXTEND", "CHECKSUM", "DATASUM", "DATAMIN",
    "DATAMAX", "END", "ZDITHER0", "ZHECKSUM", "ZDATASUM", "TFIELDS", "TTYPE1", "TFORM1",
}


def is_fits_name(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(FITS_EXTENSIONS)


@contextlib.contextmanager
def _open(path: Path, *, memmap: bool) -> Iterator[fits.HDUList]:
    """The file's HDUs, read-only. The file is opened here (not by astropy) so that it is
    closed on every path: astropy leaves its own handle open when a header fails to parse.

    A gzipped file is decompressed here, completely, which checks the stream's CRC: given a
    stream whose CRC is wrong, astropy loops, eating memory, forever (found by fuzzing).
    """
    check_input_file(path, "FITS")
    gz = is_gzip(path)
    try:
        fh = open(path, "rb")
    except OSError as err:
        raise InputError(path, f"cannot open the file ({err.strerror or err})") from err
    with fh:
        src: Any = fh
        if gz:
            try:
                src = io.BytesIO(gzip.GzipFile(fileobj=fh, mode="rb").read())
            except (OSError, EOFError, zlib.error, MemoryError) as err:
                raise InputError(path, f"corrupt or truncated gzip stream ({_short(err)})") \
                    from err
        _check_axes(src.read(_HEAD_BYTES), path)
        src.seek(0)
        try:
            with no_warnings():
                # astropy warns about truncated files and non-standard cards; the checks in
                # the readers turn the problems that matter into an InputError.
                hdul = fits.open(src, mode="readonly", memmap=memmap and not gz,
                                 lazy_load_hdus=False)
        except FITS_ERRORS as err:
            why = f"header keyword {err.args[0]} is missing" if isinstance(err, KeyError) \
                else _short(err)
            if "No SIMPLE card" in why:  # astropy's advice (ignore_missing_simple) is not ours
                why = "it does not start with a SIMPLE card"
            raise InputError(path, f"not a readable FITS file ({why})") from err
        try:
            with no_warnings():  # astropy verifies cards lazily, and warns
                yield hdul
        except FITS_ERRORS as err:  # a damaged card or data block, met by the reader's code
            raise InputError(path, f"not a readable FITS file ({_short(err)})") from err
        finally:
            hdul.close()


_HEAD_BYTES = 65536
_AXES_CARD = re.compile(rb"(Z?NAXIS) {2,3}= *([-+]?[0-9]+)")


def _check_axes(head: bytes, path: Path) -> None:
    """Refuse a NAXIS (or ZNAXIS) card of the first headers outside 0..999, the standard's
    range, before astropy sees it: with NAXIS = 999999999 astropy loops for minutes."""
    i = head.find(b"NAXIS")  # (found by bytes.find: a regex tried at every card costs more)
    while i >= 0:
        off = i - i % 80  # the card's start: NAXIS there, or ZNAXIS
        m = _AXES_CARD.match(head, off, off + 80) if i - off <= 1 else None
        if m and not 0 <= int(m.group(2)) <= 999:
            raise InputError(path, f"not a readable FITS file ({m.group(1).decode()} = "
                                   f"{int(m.group(2))}: at most 999 axes)")
        i = head.find(b"NAXIS", i + 5)


def _image_hdu(hdul: fits.HDUList, path: Path) -> Any:
    """The first image HDU with data (a ``.fz`` file keeps it in extension 1)."""
    for hdu in hdul:
        if isinstance(hdu, fits.GroupsHDU):
            continue
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            # A CompImageHDU's ``header`` is the image header (NAXIS, BITPIX of the image,
            # not of the binary table that stores the tiles).
            naxis = hdu.header.get("NAXIS", 0)
            if isinstance(naxis, int) and naxis > 0:
                return hdu
    raise InputError(path, "no image data in the file (no HDU with NAXIS > 0; truncated?)")


def _geometry(hdu: Any, path: Path) -> tuple[int, int, int]:
    """``(width, height, channels)`` from NAXISn; channels is 1 or 3."""
    h = hdu.header
    naxis = h.get("NAXIS", 0)
    dims = [h.get(f"NAXIS{i}", 0) for i in range(1, naxis + 1)]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise InputError(path, f"bad image dimensions NAXISn = {dims}")
    # Drop trailing axes of length 1 (NAXIS3 = 1 is a mono image).
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    check_scaling(h, path)
    if len(dims) == 2:
        return dims[0], dims[1], 1
    if len(dims) == 3 and dims[2] in (3, 4):
        return dims[0], dims[1], 3
    raise InputError(path, f"unsupported image shape NAXIS = {naxis}, axes = {dims} "
                           "(expected 2-D mono or a 3-plane colour cube)")


def check_scaling(header: fits.Header, path: Path) -> None:
    """Refuse BZERO/BSCALE cards that cannot scale pixels into float32 or that contradict
    each other (astropy scales with one card and a plain header lookup gives another)."""
    values: dict[str, list[Any]] = {"BZERO": [], "BSCALE": []}
    for card in header.cards:
        try:
            key = card.keyword
        except (ValueError, TypeError, VerifyError):
            continue  # another damaged card: not a scaling one
        if key not in values:
            continue
        try:
            values[key].append(card.value)
        except (ValueError, TypeError, VerifyError) as err:
            raise InputError(path, f"not a readable FITS file (the {key} card cannot be "
                                   f"parsed: {_short(err)})") from None
    for key, found in values.items():
        if len(set(map(repr, found))) > 1:
            raise InputError(path, f"not a readable FITS file ({len(found)} {key} cards "
                                   f"with different values: the pixel scaling is ambiguous)")
        for v in found[:1]:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) \
                    or abs(v) > float(np.finfo(np.float32).max) \
                    or (key == "BSCALE" and v == 0):
                raise InputError(path, f"not a readable FITS file ({key} = {v!r} cannot "
                                       "scale pixel values)")


def _bitpix(header: fits.Header) -> int:
    return int(header.get("BITPIX", -32))


def _bit_depth(header: fits.Header) -> int | None:
    bp = _bitpix(header)
    return bp if bp in (8, 16, 32, 64) else None


def _white_level(header: fits.Header) -> float | None:
    """Largest value an integer image can hold after BZERO/BSCALE (65535 for uint16)."""
    bp = _bitpix(header)
    if bp not in (8, 16, 32, 64):
        return None
    top = 255 if bp == 8 else 2 ** (bp - 1) - 1
    bscale = as_float(header.get("BSCALE", 1.0))
    bzero = as_float(header.get("BZERO", 0.0))
    return float(top * (1.0 if bscale is None else bscale) + (bzero or 0.0))


def _meta(header: fits.Header, path: Path, w: int, h: int, c: int) -> FrameMeta:
    """Metadata from the image header *as in the file* (astropy rewrites BITPIX, BZERO and
    BSCALE of ``hdu.header`` once it has scaled the data: pass a copy taken before)."""
    meta = meta_from_header(header, path=path, width=w, height=h, channels=c, fmt="fits",
                            bit_depth=_bit_depth(header), raw_header=header)
    if first(header, ("SATURATE", "SATLEVEL")) is None:
        meta = meta.replace(white_level=_white_level(header))
    return meta


def _check_complete(hdu: Any, path: Path) -> None:
    """Refuse an uncompressed file cut short inside its pixel data."""
    if isinstance(hdu, fits.CompImageHDU) or read_head(path, 6) != b"SIMPLE":
        return  # compressed (tiles, or a gzip/bzip2 stream): sizes in the file differ
    # the HDU's own fileinfo: HDUList.fileinfo re-serialises every header to see whether
    # the list was resized (~1 ms a file), and nothing here is ever modified
    info = hdu.fileinfo()
    if not info:
        return
    naxis = hdu.header.get("NAXIS", 0)
    needed = abs(_bitpix(hdu.header)) // 8
    for i in range(1, naxis + 1):
        needed *= int(hdu.header.get(f"NAXIS{i}", 0))
    have = path.stat().st_size - int(info["datLoc"])
    if have < needed:
        raise InputError(path, f"truncated file: the header announces {needed} bytes of pixel "
                               f"data, only {max(have, 0)} are present")


def read_fits_meta(path: str | os.PathLike) -> FrameMeta:
    """Metadata only (no pixel data is read; an uncompressed file shorter than its header
    announces is refused, so discovery lists a half-copied frame as unreadable)."""
    from deepsky.io.sources import remember_layout

    p = Path(path)
    with _open(p, memmap=False) as hdul:
        hdu = _image_hdu(hdul, p)
        w, h, c = _geometry(hdu, p)
        _check_complete(hdu, p)
        meta = _meta(hdu.header, p, w, h, c)  # (no copy: the data are never read here)
        remember_layout(p, hdul)  # the band reader will not parse this header again
        return meta


def read_fits(path: str | os.PathLike) -> Frame:
    """Read the first image in a FITS file as an owned float32 :class:`Frame`.

    Integer data are scaled with BZERO/BSCALE (so uint16 stored as int16 + 32768 reads as
    0..65535). BLANK is honoured as astropy does: BLANK pixels read as NaN when the scaling
    makes the data floating point, and are left as stored under the unsigned-integer
    conventions (BZERO = 2**15 or 2**31 with BSCALE = 1). A 3-D cube with 3 (or 4, alpha
    dropped) planes is colour ``(3, H, W)``. The rows are returned as stored:
    ``meta.bayer`` already accounts for ROWORDER and the Bayer offsets.
    """
    p = Path(path)
    with _open(p, memmap=False) as hdul:
        hdu = _image_hdu(hdul, p)
        w, h, c = _geometry(hdu, p)
        _check_complete(hdu, p)
        header = hdu.header.copy()
        try:
            with no_warnings():
                raw = hdu.data
                if raw is None:
                    raise InputError(p, "no pixel data")
                data = np.array(raw, dtype=np.float32, copy=True, order="C")
        except InputError:
            raise
        except FITS_ERRORS as err:
            raise InputError(p, f"cannot read the pixel data, the file is corrupt or "
                                f"truncated ({_short(err)})") from err
        meta = _meta(header, p, w, h, c)  # inside: a damaged card is an InputError
        history = _history_from_header(header)
    data = _select_planes(data, h, w, c, p)
    return Frame(data, meta, history)


def _select_planes(data: np.ndarray, h: int, w: int, c: int, path: Path) -> np.ndarray:
    """``(H, W)`` or the first 3 planes ``(3, H, W)`` of what astropy returned."""
    if data.size % (h * w) != 0 or data.shape[-2:] != (h, w):
        raise InputError(path, f"pixel data of shape {data.shape} do not match the header "
                               f"({w} x {h})")
    planes = data.reshape(-1, h, w)
    return owned_float32(planes[0] if c == 1 else planes[:3])


def _history_from_header(header: fits.Header) -> tuple[str, ...]:
    try:
        return tuple(str(v) for v in header["HISTORY"])
    except KeyError:
        return ()


def read_fits_rows(path: str | os.PathLike, y0: int, y1: int) -> np.ndarray:
    """Rows ``y0:y1`` of the image (all planes of a cube) as owned float32, reading only them.

    Returns ``(y1 - y0, W)`` for mono, ``(3, y1 - y0, W)`` for colour. BZERO/BSCALE are
    applied as in :func:`read_fits`. Plain files are read at the rows' offset only; a
    tile-compressed ``.fz`` decompresses only the tiles that hold the rows; a gzipped file
    is decompressed completely (its CRC checked).
    """
    p = Path(path)
    # Not memory-mapped: astropy cannot memory-map scaled (BZERO) data, and a section read
    # of an unmapped file seeks to the rows and reads only them.
    with _open(p, memmap=False) as hdul:
        hdu = _image_hdu(hdul, p)
        w, h, c = _geometry(hdu, p)
        if not (isinstance(y0, (int, np.integer)) and isinstance(y1, (int, np.integer))
                and 0 <= y0 <= y1 <= h):
            raise InputError(p, f"rows y0={y0}, y1={y1} are outside the image (height {h})")
        _check_complete(hdu, p)
        try:
            with no_warnings():
                sec = np.asarray(hdu.section[..., int(y0):int(y1), :], dtype=np.float32)
        except FITS_ERRORS as err:
            raise InputError(p, f"cannot read rows {y0}:{y1}, the file is corrupt or "
                                f"truncated ({_short(err)})") from err
    n = int(y1) - int(y0)
    if n == 0:
        return np.zeros((0, w) if c == 1 else (3, 0, w), dtype=np.float32)
    if sec.shape[-2:] != (n, w):  # e.g. a repeated NAXIS1 card: astropy takes the last one
        raise InputError(p, f"pixel data of shape {sec.shape} do not match the header "
                            f"({w} x {h})")
    planes = sec.reshape(-1, n, w)
    return owned_float32(planes[0] if c == 1 else planes[:3])


def _clean_cards(header: Any) -> list[tuple[str, Any, str]]:
    """Cards of an input header worth keeping in an output (no layout, no history)."""
    cards: list[tuple[str, Any, str]] = []
    if header is None:
        return cards
    if isinstance(header, fits.Header):
        for card in header.cards:
            key = card.keyword
            if not key or key in _STRUCTURAL or key in ("HISTORY", "COMMENT", ""):
                continue
            cards.append((key, card.value, card.comment))
    elif isinstance(header, Mapping):
        for key, value in header.items():
            if str(key).upper() in _STRUCTURAL:
                continue
            cards.append((str(key), value, ""))
    return cards


def build_header(
    *,
    meta: FrameMeta | None = None,
    header: Any = None,
    cards: Mapping[str, Any] | None = None,
    history: Iterable[str] = (),
) -> fits.Header:
    """A header from (in increasing priority) an input header, normalised metadata and
    explicit cards; HISTORY lines appended at the end."""
    out = fits.Header()
    src = header if header is not None else (meta.header if meta is not None else None)
    with no_warnings():
        for key, value, comment in _clean_cards(src):
            try:
                out[key] = (fits_text(value), fits_text(comment))
            except (ValueError, KeyError):
                continue
        if meta is not None:
            for key, value in header_cards_from_meta(meta).items():
                out[key] = fits_text(value)
            if not meta.bayer and meta.cfa != "xtrans":
                for key in ("BAYERPAT", "XBAYROFF", "YBAYROFF", "COLORTYP"):
                    out.remove(key, ignore_missing=True, remove_all=True)
        for key, value in (cards or {}).items():
            out[key] = fits_text(value)
        for line in history:
            for chunk in _wrap(fits_text(str(line).replace("\n", " ")), 70):
                out.add_history(chunk)
    return out


def fits_text(value: Any) -> Any:
    """Text as a FITS card can hold it (printable ASCII): accents dropped (``é`` -> ``e``), other
    characters as ``?`` (file names and object names need not be ASCII); others unchanged."""
    if not isinstance(value, str) or (value.isascii() and value.isprintable()):
        return value
    text = unicodedata.normalize("NFKD", value)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text)


def embedded_cards(
    *,
    meta: FrameMeta | None = None,
    cards: Mapping[str, Any] | None = None,
) -> list[tuple[str, Any, str]]:
    """The FITS keywords a FITS writer would write, as ``(key, value, comment)`` for formats
    that embed them (TIFF, XISF). Values are plain ``str``, ``int``, ``float``, ``bool`` or
    ``None`` (a keyword without value); no HISTORY or COMMENT cards."""
    out: list[tuple[str, Any, str]] = []
    for card in build_header(meta=meta, cards=cards).cards:
        key = card.keyword
        if not key or key in ("HISTORY", "COMMENT"):
            continue
        value = card.value
        if isinstance(value, fits.card.Undefined):
            value = None
        elif isinstance(value, np.generic):
            value = value.item()
        if value is not None and not isinstance(value, (str, int, float, bool)):
            value = str(value)
        out.append((key, value, str(card.comment or "")))
    return out


def header_from_cards(cards: Iterable[tuple[str, Any, str]]) -> fits.Header:
    """A FITS header from ``(key, value, comment)`` triples; unusable cards are skipped."""
    out = fits.Header()
    with no_warnings():
        for key, value, comment in cards:
            try:
                out.append(fits.Card(str(key), value, str(comment or "")), end=True)
            except (ValueError, KeyError, TypeError):
                continue
    return out


def _wrap(text: str, width: int) -> list[str]:
    text = text.replace("\n", " ")
    return [text[i:i + width] for i in range(0, max(len(text), 1), width)]


def _big_endian(a: np.ndarray) -> np.ndarray:
    """``a`` in FITS byte order (a copy when it is not already): astropy writes a
    little-endian float or signed array by byte-swapping it *in place* and back, so another
    thread reading it meanwhile (a master written while the next one is built from it) would
    see garbage. (Unsigned arrays are converted to a new signed array by astropy anyway.)"""
    if a.dtype.kind in "fi" and a.dtype.itemsize > 1 and a.dtype.byteorder in ("<", "="):
        return a.astype(a.dtype.newbyteorder(">"))
    return a


def write_fits(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    meta: FrameMeta | None = None,
    header: Any = None,
    cards: Mapping[str, Any] | None = None,
    history: Iterable[str] = (),
    dtype: Any = np.float32,
    extensions: Sequence[tuple[str, np.ndarray, Mapping[str, Any] | None]] = (),
    overwrite: bool = True,
    flush: bool = False,
) -> Path:
    """Write ``data`` (``(H, W)`` or ``(3, H, W)``) as FITS, atomically (``flush``: on disk
    and out of the page cache before the rename, see :func:`deepsky.io.atomic.atomic_path`).

    ``dtype`` is float32 by default; ``np.uint16`` writes BITPIX 16 with BZERO 32768 (values
    are rounded and clipped to 0..65535). ``extensions`` are extra image HDUs
    ``(EXTNAME, array, cards)``.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise OutputError(f"{final}: already exists (overwrite=False)")
    arr = check_image_array(data, final)
    hdr = build_header(meta=meta, header=header, cards=cards, history=history)
    dt = np.dtype(dtype)
    if dt == np.uint16:
        arr = to_integer(arr, np.uint16)
    elif dt == np.uint8:
        arr = to_integer(arr, np.uint8)
    else:
        arr = arr.astype(dt, copy=False)
    # astropy stores unsigned arrays as signed + BZERO by itself (uint16: BZERO = 32768);
    # calling ``scale("uint16")`` on top of that shifted the values a second time.
    hdul = _hdu_list(_big_endian(arr), hdr, [(name, _big_endian(np.asarray(ext_data)), cards)
                                              for name, ext_data, cards in extensions])
    with atomic_path(final, flush=flush) as tmp:
        with no_warnings():
            hdul.writeto(tmp, overwrite=True, output_verify="silentfix")
    return final


def _hdu_list(data: np.ndarray, header: fits.Header,
              extensions: Sequence[tuple[str, np.ndarray, Mapping[str, Any] | None]]
              ) -> fits.HDUList:
    """The primary HDU and the image extensions (``(EXTNAME, array, cards)``) of a file
    (:func:`write_fits` and :class:`TiledFits` build their headers the same way)."""
    hdus: list[Any] = [fits.PrimaryHDU(data=data, header=header)]
    with no_warnings():
        for name, ext_data, ext_cards in extensions:
            ext = fits.ImageHDU(data=ext_data, name=name)
            for k, v in (ext_cards or {}).items():
                ext.header[k] = v
            hdus.append(ext)
    return fits.HDUList(hdus)



_TILED_DTYPES = {np.dtype(np.float32): np.dtype(">f4"), np.dtype(np.uint16): np.dtype(">u2")}


class TiledFits:
    """A FITS file of image HDUs laid out first and filled a region at a time.

    :meth:`create` writes the headers (those :func:`write_fits` writes for the same shapes,
    dtypes, cards and history) and sizes the file, the data areas left as holes;
    :meth:`write` puts a region of one HDU's pixels in place with positioned writes,
    :meth:`read` reads one back, and :meth:`commit` renames the file onto its final name.
    A tile-by-tile integration writes its result this way as the tiles finish, in a file
    that is also its checkpoint, instead of holding everything for one write at the end.
    The bytes are those :func:`write_fits` writes for the same arrays.

    ``images``: ``(EXTNAME, shape, dtype, cards, history)``, the first the primary HDU (its
    EXTNAME unused; the extensions' history unused); shapes ``(H, W)`` or ``(C, H, W)``;
    dtypes float32 or uint16 (stored as astropy stores it: BITPIX 16, BZERO 32768).
    """

    def __init__(self, path: str | os.PathLike,
                 images: Sequence[tuple[str | None, tuple[int, ...], Any,
                                        Mapping[str, Any] | None, Iterable[str]]]) -> None:
        from numpy.lib.stride_tricks import as_strided

        self.path = Path(path)
        self._headers: list[tuple[int, bytes]] = []
        self._areas: list[tuple[int, tuple[int, ...], np.dtype]] = []
        stand_ins = []
        for _name, shape, dtype, _cards, _history in images:
            dt = np.dtype(dtype)
            if dt not in _TILED_DTYPES or len(shape) not in (2, 3):
                raise ValueError(f"TiledFits: unsupported image {dt} {tuple(shape)}")
            # A zero-stride stand-in: astropy derives BITPIX, NAXISn and BZERO from it.
            stand_ins.append(as_strided(np.zeros(1, dt), shape=tuple(shape),
                                        strides=(0,) * len(shape)))
        _name, _shape, _dtype, cards, history = images[0]
        hdul = _hdu_list(stand_ins[0], build_header(cards=cards, history=history),
                         [(im[0], a, im[3]) for im, a in zip(images[1:], stand_ins[1:])])
        pos = 0
        with no_warnings():
            hdul.update_extend()  # EXTEND = T in the primary header, as writeto() adds it
            hdul.verify("silentfix")
            for hdu in hdul:
                text = hdu.header.tostring().encode("ascii")
                self._headers.append((pos, text))
                pos += len(text)
                shape, dt = hdu.data.shape, np.dtype(hdu.data.dtype)
                self._areas.append((pos, (1, *shape) if len(shape) == 2 else tuple(shape),
                                    _TILED_DTYPES[dt]))
                pos += -(-int(np.prod(shape)) * dt.itemsize // 2880) * 2880
        self.size = pos
        self._fd: int | None = None

    def create(self) -> "TiledFits":
        """Write the headers and size the file, its space reserved (an existing one is
        replaced; a full disk is an :class:`OutputError` here)."""
        self.close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
            os.ftruncate(self._fd, self.size)
            if hasattr(os, "posix_fallocate"):  # a full disk fails now, not tiles later
                os.posix_fallocate(self._fd, 0, self.size)
            for offset, text in self._headers:
                self._pwrite(text, offset)
        except OSError as err:
            raise output_error(self.path, err) from err
        return self

    def open_existing(self) -> bool:
        """Open the file an earlier run left if it has this layout (size and headers);
        False when there is none or it differs."""
        self.close()
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError:
            return False
        try:
            same = os.fstat(fd).st_size == self.size and all(
                os.pread(fd, len(text), offset) == text for offset, text in self._headers)
        except OSError:
            same = False
        if not same:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _pwrite(self, data: Any, offset: int) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            n = os.pwrite(self._fd, view, offset)  # type: ignore[arg-type]
            view, offset = view[n:], offset + n

    def _rows(self, k: int, y0: int, y1: int, x0: int, x1: int
              ) -> Iterator[tuple[int, int, int, int]]:
        """(channel, row in the region, byte offset, row count) of the runs of a region."""
        offset, (c, h, w), dt = self._areas[k]
        if not (0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w):
            raise ValueError(f"TiledFits: region {(y0, y1, x0, x1)} outside {(h, w)}")
        for ch in range(c):
            if x0 == 0 and x1 == w:  # whole rows: one run per plane
                yield ch, 0, offset + (ch * h + y0) * w * dt.itemsize, y1 - y0
            else:
                for r in range(y1 - y0):
                    yield ch, r, offset + ((ch * h + y0 + r) * w + x0) * dt.itemsize, 1

    def write(self, k: int, region: np.ndarray, y0: int, x0: int) -> None:
        """Write ``region`` (``(h, w)`` or ``(C, h, w)``, float32 or uint16 as the HDU) into
        HDU ``k`` at row ``y0``, column ``x0``."""
        _offset, (c, _h, _w), dt = self._areas[k]
        rh, rw = region.shape[-2:]
        reg = region.reshape(c, rh, rw)
        # On disk: big-endian; unsigned 16-bit as signed with BZERO 32768 (the top bit flipped).
        disk = (reg ^ np.uint16(0x8000)).astype(dt) if dt.kind == "u" else reg.astype(dt)
        try:
            for ch, r, pos, n in self._rows(k, y0, y0 + rh, x0, x0 + rw):
                self._pwrite(disk[ch, r:r + n], pos)
        except OSError as err:
            raise output_error(self.path, err) from err

    def read(self, k: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """A region of HDU ``k`` as written: ``(C, h, w)``, float32 or uint16."""
        _offset, (c, _h, _w), dt = self._areas[k]
        out = np.empty((c, y1 - y0, x1 - x0), dt)
        try:
            for ch, r, pos, n in self._rows(k, y0, y1, x0, x1):
                want = n * (x1 - x0) * dt.itemsize
                got = os.pread(self._fd, want, pos)  # type: ignore[arg-type]
                if len(got) != want:
                    raise InputError(f"{self.path}: shorter than its layout")
                out[ch, r:r + n] = np.frombuffer(got, dt).reshape(n, x1 - x0)
        except OSError as err:
            raise InputError(f"{self.path}: cannot read: {err.strerror or err}") from err
        return (out ^ np.uint16(0x8000)).astype(np.uint16) if dt.kind == "u" else \
            out.astype(np.float32)

    def commit(self, final: str | os.PathLike) -> Path:
        """Close the file and rename it onto ``final`` (copied there, then renamed, when
        ``final`` is on another file system)."""
        import errno
        import shutil

        self.close()
        target = Path(final)
        try:
            os.replace(self.path, target)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise output_error(target, err) from err
            with atomic_path(target) as tmp:
                shutil.copyfile(self.path, tmp)
            self.path.unlink(missing_ok=True)
        return target

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
