"""XISF reading and writing (PixInsight's format).

Reading uses the ``xisf`` package for the header and the data block (all its compression
codecs included) and handles what it does not: the *normal* (interleaved) pixel storage
next to the default *planar* one, big-endian blocks, and FITS keyword values with their
types (strings quoted, logical T/F, numbers). Metadata come from the image's FITS keywords,
completed by the standard XISF properties (``Instrument:ExposureTime``,
``Observation:Time:Start``, ...) and the ``imageType`` attribute where a keyword is absent.
Values are returned as stored (``bounds`` is not applied).

Writing produces a monolithic XISF 1.0 file: one float32 image (planar, uncompressed) whose
FITS keywords are those a FITS writer would write (normalised metadata included), with one
``HISTORY`` keyword per history line (the text in its comment, as PixInsight does). The
``bounds`` attribute is ``0:1`` when the data lie in [0, 1], ``0:65535`` when they lie in
[0, 65535] (ADU), otherwise a range that holds the data and [0, 1], so PixInsight shows the
image correctly.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from deepsky.errors import InputError
from deepsky.io._common import check_image_array, check_input_file, owned_float32, read_head
from deepsky.io._common import no_warnings, short
from deepsky.io.atomic import atomic_path
from deepsky.io.fits import embedded_cards, header_from_cards
from deepsky.io.headers import meta_from_header
from deepsky.types import Frame, FrameMeta

_SIGNATURE = b"XISF0100"
_NS = "http://www.pixinsight.com/xisf"
_ALIGN = 4096

# XISF property -> (FITS keyword, factor) used when the keyword itself is absent.
_PROPERTY_KEYWORDS = {
    "Instrument:ExposureTime": ("EXPTIME", None),
    "Instrument:Camera:Name": ("INSTRUME", None),
    "Instrument:Camera:ISOSpeed": ("ISOSPEED", None),
    "Instrument:Camera:Gain": ("EGAIN", None),  # XISF defines it in electrons per ADU
    "Instrument:Camera:XBinning": ("XBINNING", None),
    "Instrument:Camera:YBinning": ("YBINNING", None),
    "Instrument:Sensor:Temperature": ("CCD-TEMP", None),
    "Instrument:Sensor:TargetTemperature": ("SET-TEMP", None),
    "Instrument:Sensor:XPixelSize": ("XPIXSZ", None),
    "Instrument:Filter:Name": ("FILTER", None),
    "Instrument:Telescope:Name": ("TELESCOP", None),
    "Instrument:Telescope:FocalLength": ("FOCALLEN", 1000.0),  # metres -> mm
    "Observation:Object:Name": ("OBJECT", None),
    "Observation:Time:Start": ("DATE-OBS", None),
    "PCL:CFASourcePattern": ("BAYERPAT", None),
}
_KIND_TO_IMAGETYPE = {"light": "Light", "dark": "Dark", "flat": "Flat", "bias": "Bias"}


def read_xisf(path: str | os.PathLike) -> Frame:
    """Read the first image of an XISF file as an owned float32 :class:`Frame`.

    Mono ``(H, W)`` or colour ``(3, H, W)`` (R, G, B); values as stored.
    """
    p = Path(path)
    doc = _open(p)
    image = _first_image(doc, p)
    w, h, c = image["geometry"]
    location = image.get("location") or ()
    if len(location) == 3 and location[0] == "attachment":
        end, size = int(location[1]) + int(location[2]), p.stat().st_size
        if end > size:
            raise InputError(p, f"truncated file: the pixel data end at byte {end}, the file "
                                f"has {size} bytes")
    try:
        with no_warnings(), contextlib.redirect_stdout(io.StringIO()):
            block = np.asarray(doc.read_image(0, data_format="channels_first"))
    except Exception as err:  # the xisf package raises many kinds on damaged data blocks
        raise InputError(p, f"cannot read the XISF pixel data, the file is corrupt or "
                            f"truncated ({short(err)})") from err
    if str(image.get("byteOrder", "little")).lower() == "big":
        block = block.view(block.dtype.newbyteorder(">"))
    flat = block.reshape(-1)
    if str(image.get("pixelStorage", "Planar")).lower() == "normal":
        planes = flat.reshape(h, w, c).transpose(2, 0, 1)
    else:
        planes = flat.reshape(c, h, w)
    data = owned_float32(planes[0] if c < 3 else planes[:3])
    meta, history = _meta(doc, image, p)
    return Frame(data, meta, history)


def read_xisf_meta(path: str | os.PathLike) -> FrameMeta:
    """Metadata of an XISF file (only the XML header is read)."""
    p = Path(path)
    doc = _open(p)
    return _meta(doc, _first_image(doc, p), p)[0]


def write_xisf(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    meta: FrameMeta | None = None,
    history: Iterable[str] = (),
    cards: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``(H, W)`` or ``(3, H, W)`` data as a float32 XISF file, atomically.

    The metadata (``meta``, extra ``cards``) become FITS keywords of the image, each
    ``history`` line a HISTORY keyword; :func:`read_xisf` reads them back.
    """
    final = Path(path)
    arr = check_image_array(data, final).astype(np.float32, copy=False)
    planes = arr[np.newaxis] if arr.ndim == 2 else arr
    c, h, w = planes.shape
    keywords = [(k, _fits_value_text(v), comment)
                for k, v, comment in embedded_cards(meta=meta, cards=cards)]
    keywords += [("HISTORY", "", str(line)) for line in history]
    attrs = {
        "geometry": f"{w}:{h}:{c}",
        "sampleFormat": "Float32",
        "bounds": _bounds(planes),
        "colorSpace": "Gray" if c == 1 else "RGB",
        "pixelStorage": "Planar",
    }
    if meta is not None and meta.kind in _KIND_TO_IMAGETYPE:
        attrs["imageType"] = _KIND_TO_IMAGETYPE[meta.kind]
    block = np.ascontiguousarray(planes, dtype="<f4").tobytes()
    blob = _encode(attrs, keywords, block)
    with atomic_path(final) as tmp:
        tmp.write_bytes(blob)
    return final


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
def _open(path: Path) -> Any:
    check_input_file(path, "XISF")
    head = read_head(path, 16)
    if not head.startswith(_SIGNATURE):
        raise InputError(path, f"not an XISF file (starts with {head[:8]!r}, expected "
                               f"{_SIGNATURE!r}; only monolithic XISF files are supported)")
    try:
        from xisf import XISF

        # The xisf package prints (on stdout) each property type it does not know.
        with no_warnings(), contextlib.redirect_stdout(io.StringIO()):
            return XISF(os.fspath(path))
    except Exception as err:  # ValueError, ET.ParseError, KeyError, ... on a damaged header
        raise InputError(path, f"not a readable XISF file, the header is damaged "
                               f"({short(err)})") from err


def _first_image(doc: Any, path: Path) -> dict[str, Any]:
    images = doc.get_images_metadata()
    if not images:
        raise InputError(path, "no image in the XISF file")
    image = images[0]
    geometry = image.get("geometry", ())
    if len(geometry) != 3 or not all(int(g) > 0 for g in geometry):
        raise InputError(path, f"unsupported XISF geometry {geometry} (expected width:height:"
                               "channels)")
    space = str(image.get("colorSpace", "Gray"))
    if space not in ("Gray", "RGB"):
        raise InputError(path, f"unsupported XISF colour space {space!r} (Gray or RGB)")
    return image


def _image_element(doc: Any) -> ET.Element | None:
    return doc.get_metadata_xml().find(f"{{{_NS}}}Image")


def _meta(doc: Any, image: dict[str, Any], path: Path) -> tuple[FrameMeta, tuple[str, ...]]:
    w, h, c = image["geometry"]
    cards: list[tuple[str, Any, str]] = []
    history: list[str] = []
    element = _image_element(doc)
    if element is not None:
        for kw in element.findall(f"{{{_NS}}}FITSKeyword"):
            name = kw.get("name", "").strip().upper()
            value, comment = kw.get("value", ""), kw.get("comment", "")
            if name == "HISTORY":
                history.append(comment if comment else _parse_fits_value(value) or "")
            elif name and name != "COMMENT":
                cards.append((name, _parse_fits_value(value), comment))
    present = {k for k, _, _ in cards}
    for prop_id, prop in (image.get("XISFProperties") or {}).items():
        target = _PROPERTY_KEYWORDS.get(prop_id)
        if target is None or target[0] in present:
            continue
        value = prop.get("value") if isinstance(prop, dict) else None
        if isinstance(value, np.ndarray) or value is None:
            continue
        if target[1] is not None:
            try:
                value = float(value) * target[1]
            except (TypeError, ValueError):
                continue
        elif isinstance(value, np.generic):
            value = value.item()
        cards.append((target[0], value, "from XISF property " + prop_id))
        present.add(target[0])
    if "IMAGETYP" not in present and image.get("imageType"):
        cards.append(("IMAGETYP", str(image["imageType"]), "from XISF imageType"))
    header = header_from_cards(cards)
    dtype = np.dtype(image["dtype"])
    bit_depth = dtype.itemsize * 8 if dtype.kind in "ui" else None
    meta = meta_from_header(header, path=path, width=w, height=h, channels=3 if c >= 3 else 1,
                            fmt="xisf", bit_depth=bit_depth, raw_header=header)
    return meta, tuple(history)


def _parse_fits_value(text: str) -> Any:
    """A FITS keyword value as XISF stores it (FITS syntax) -> str, bool, int or float."""
    t = (text or "").strip()
    if t.startswith("'"):
        inner = t[1:-1] if len(t) > 1 and t.endswith("'") else t[1:]
        return inner.replace("''", "'").rstrip()
    if t in ("T", "F"):
        return t == "T"
    if re.fullmatch(r"[+-]?\d+", t):
        return int(t)
    try:
        return float(t.replace("D", "E").replace("d", "e"))
    except ValueError:
        return t or None


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def _fits_value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _bounds(planes: np.ndarray) -> str:
    finite = planes[np.isfinite(planes)]
    if finite.size == 0:
        return "0:1"
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        return "0:1"
    if lo >= 0.0 and hi <= 65535.0:
        return "0:65535"
    return f"{min(lo, 0.0)!r}:{max(hi, 1.0)!r}"


def _encode(attrs: dict[str, str], keywords: list[tuple[str, str, str]], block: bytes) -> bytes:
    """A monolithic XISF file: signature, header length, XML header, aligned data block."""

    def header_xml(position: int) -> bytes:
        root = ET.Element("xisf", {
            "version": "1.0", "xmlns": _NS,
            "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
            "xsi:schemaLocation": f"{_NS} http://pixinsight.com/xisf/xisf-1.0.xsd"})
        image = ET.SubElement(root, "Image",
                              {**attrs, "location": f"attachment:{position}:{len(block)}"})
        for name, value, comment in keywords:
            ET.SubElement(image, "FITSKeyword", {"name": name, "value": value,
                                                 "comment": comment})
        metadata = ET.SubElement(root, "Metadata")
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        ET.SubElement(metadata, "Property", {"id": "XISF:CreationTime", "type": "TimePoint",
                                             "value": now})
        ET.SubElement(metadata, "Property", {"id": "XISF:CreatorApplication",
                                             "type": "String"}).text = "deepsky"
        text = ET.tostring(root, encoding="unicode")
        return ('<?xml version="1.0" encoding="UTF-8"?>\n' + text).encode("utf-8")

    position = _ALIGN
    while True:  # the position's digits change the header's length: settle it
        xml = header_xml(position)
        needed = -(-(16 + len(xml)) // _ALIGN) * _ALIGN
        if needed == position:
            break
        position = needed
    head = _SIGNATURE + struct.pack("<I", len(xml)) + b"\0\0\0\0" + xml
    return head + b"\0" * (position - len(head)) + block
