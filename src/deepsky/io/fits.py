"""FITS reading and writing (plain, tile-compressed ``.fz`` and gzipped ``.gz``)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.utils.exceptions import AstropyUserWarning

from deepsky.errors import InputError
from deepsky.io.atomic import atomic_path
from deepsky.io.headers import header_cards_from_meta, meta_from_header
from deepsky.types import Frame, FrameMeta

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


def _open(path: Path, *, memmap: bool) -> fits.HDUList:
    try:
        size = path.stat().st_size
    except FileNotFoundError as err:
        raise InputError(path, "file not found") from err
    except PermissionError as err:
        raise InputError(path, "permission denied") from err
    if size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fits.open(path, mode="readonly", memmap=memmap, lazy_load_hdus=False)
    except PermissionError as err:
        raise InputError(path, "permission denied") from err
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError) as err:
        raise InputError(path, f"not a readable FITS file ({_short(err)})") from err


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:160]


def _image_hdu(hdul: fits.HDUList, path: Path) -> Any:
    for hdu in hdul:
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            naxis = hdu.header.get("ZNAXIS" if isinstance(hdu, fits.CompImageHDU) else "NAXIS", 0)
            if isinstance(naxis, int) and naxis > 0:
                return hdu
    raise InputError(path, "no image data in the file (no HDU with NAXIS > 0)")


def _geometry(hdu: Any, path: Path) -> tuple[int, int, int]:
    h = hdu.header
    comp = isinstance(hdu, fits.CompImageHDU)
    pre = "ZNAXIS" if comp else "NAXIS"
    naxis = h.get(pre, 0)
    dims = [h.get(f"{pre}{i}", 0) for i in range(1, naxis + 1)]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise InputError(path, f"bad image dimensions {pre}n = {dims}")
    # Drop trailing axes of length 1 (NAXIS3 = 1 is a mono image).
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 2:
        return dims[0], dims[1], 1
    if len(dims) == 3 and dims[2] in (3, 4):
        return dims[0], dims[1], 3
    raise InputError(path, f"unsupported image shape NAXIS = {naxis}, axes = {dims} "
                           "(expected 2-D mono or a 3-plane colour cube)")


def _bitpix(hdu: Any) -> int:
    h = hdu.header
    return int(h.get("ZBITPIX", h.get("BITPIX", -32))) if isinstance(hdu, fits.CompImageHDU) \
        else int(h.get("BITPIX", -32))


def _bit_depth(hdu: Any) -> int | None:
    bp = _bitpix(hdu)
    if bp == 8:
        return 8
    if bp == 16:
        return 16
    if bp == 32:
        return 32
    return None


def read_fits_meta(path: str | os.PathLike) -> FrameMeta:
    """Metadata only (no pixel data is read)."""
    p = Path(path)
    with _open(p, memmap=True) as hdul:
        hdu = _image_hdu(hdul, p)
        w, h, c = _geometry(hdu, p)
        header = hdu.header.copy()
    return meta_from_header(header, path=p, width=w, height=h, channels=c, fmt="fits",
                            bit_depth=_bit_depth(hdu), raw_header=header)


def read_fits(path: str | os.PathLike) -> Frame:
    """Read the first image in a FITS file as an owned float32 :class:`Frame`.

    Integer data are scaled with BZERO/BSCALE (so uint16 stored as int16 + 32768 reads as
    0..65535). A 3-D cube with 3 (or 4, alpha dropped) planes is colour ``(3, H, W)``.
    """
    p = Path(path)
    with _open(p, memmap=False) as hdul:
        hdu = _image_hdu(hdul, p)
        w, h, c = _geometry(hdu, p)
        header = hdu.header.copy()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = hdu.data
        except (OSError, ValueError, TypeError, IndexError, EOFError) as err:
            raise InputError(p, f"cannot read the pixel data ({_short(err)})") from err
        if raw is None:
            raise InputError(p, "no pixel data")
        if raw.size < h * w:
            raise InputError(p, f"truncated: {raw.size} pixels for a {w}x{h} image")
        data = np.array(raw, dtype=np.float32, copy=True, order="C")
    data = data.reshape(data.shape[-3:] if data.ndim >= 3 else data.shape)
    if data.ndim == 3:
        data = np.ascontiguousarray(data[:3]) if c == 3 else data[0]
    meta = meta_from_header(header, path=p, width=w, height=h, channels=c, fmt="fits",
                            bit_depth=_bit_depth(hdu), raw_header=header)
    return Frame(data, meta, _history_from_header(header))


def _history_from_header(header: fits.Header) -> tuple[str, ...]:
    try:
        return tuple(str(v) for v in header["HISTORY"])
    except KeyError:
        return ()


def read_fits_rows(path: str | os.PathLike, y0: int, y1: int) -> np.ndarray:
    """Rows ``y0:y1`` of the image (all planes of a cube) as float32, reading only them.

    Uncompressed files are memory-mapped, so only the needed bytes are read.
    """
    p = Path(path)
    with _open(p, memmap=True) as hdul:
        hdu = _image_hdu(hdul, p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(hdu, fits.CompImageHDU):
                sec = hdu.section[..., y0:y1, :]
            else:
                sec = hdu.section[..., y0:y1, :] if hasattr(hdu, "section") else hdu.data[..., y0:y1, :]
            out = np.array(sec, dtype=np.float32, copy=True)
    while out.ndim > 3:
        out = out[0]
    if out.ndim == 3 and out.shape[0] == 1:
        out = out[0]
    elif out.ndim == 3:
        out = np.ascontiguousarray(out[:3])
    return out


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        for key, value, comment in _clean_cards(src):
            try:
                out[key] = (value, comment)
            except (ValueError, KeyError):
                continue
        if meta is not None:
            for key, value in header_cards_from_meta(meta).items():
                out[key] = value
            if not meta.bayer:
                for key in ("BAYERPAT", "XBAYROFF", "YBAYROFF", "COLORTYP"):
                    out.remove(key, ignore_missing=True, remove_all=True)
        for key, value in (cards or {}).items():
            out[key] = value
        for line in history:
            for chunk in _wrap(str(line), 70):
                out.add_history(chunk)
    return out


def _wrap(text: str, width: int) -> list[str]:
    text = text.replace("\n", " ")
    return [text[i:i + width] for i in range(0, max(len(text), 1), width)]


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
) -> Path:
    """Write ``data`` (``(H, W)`` or ``(3, H, W)``) as FITS, atomically.

    ``dtype`` is float32 by default; ``np.uint16`` writes BITPIX 16 with BZERO 32768 (values
    are rounded and clipped to 0..65535). ``extensions`` are extra image HDUs
    ``(EXTNAME, array, cards)``.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise FileExistsError(final)
    hdr = build_header(meta=meta, header=header, cards=cards, history=history)
    arr = np.asarray(data)
    dt = np.dtype(dtype)
    if dt == np.uint16:
        arr = np.clip(np.rint(arr), 0, 65535).astype(np.uint16)
    elif dt == np.uint8:
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    else:
        arr = arr.astype(dt, copy=False)
    primary = fits.PrimaryHDU(data=arr, header=hdr)
    if dt == np.uint16:
        primary.scale("uint16")
    hdus: list[Any] = [primary]
    for name, ext_data, ext_cards in extensions:
        ext = fits.ImageHDU(data=np.asarray(ext_data), name=name)
        for k, v in (ext_cards or {}).items():
            ext.header[k] = v
        hdus.append(ext)
    with atomic_path(final) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            warnings.simplefilter("ignore", AstropyUserWarning)
            fits.HDUList(hdus).writeto(tmp, overwrite=True, output_verify="silentfix")
    return final
