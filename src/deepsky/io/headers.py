"""Turn the many dialects of FITS-style keywords into one :class:`FrameMeta`.

Capture programs disagree on names (EXPTIME or EXPOSURE, CCD-TEMP or CCDTEMP, IMAGETYP
'Light Frame' or 'science'); this module knows them, so the rest of deepsky does not have to.
XISF files carry FITS keywords too, so their reader uses the same functions.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

from astropy.io.fits.verify import VerifyError

from deepsky.types import BAYER_PATTERNS, FrameMeta, bayer_flip_rows, bayer_shift

# Keys looked at, in order of preference, for each field.
EXPOSURE_KEYS = ("EXPTIME", "EXPOSURE", "EXP_TIME", "EXPOSURE_TIME", "ITIME")
GAIN_KEYS = ("GAIN", "CCD-GAIN", "CCDGAIN_SET")
EGAIN_KEYS = ("EGAIN", "E-GAIN", "CCDSENS")
ISO_KEYS = ("ISOSPEED", "ISO", "ISO_SPEED")
TEMP_KEYS = ("CCD-TEMP", "CCD_TEMP", "CCDTEMP", "TEMPERAT", "SENSOR-T", "DET-TEMP")
SETTEMP_KEYS = ("SET-TEMP", "SET_TEMP", "SETTEMP")
FILTER_KEYS = ("FILTER", "FILTNAME", "FILTER1", "FILT-1", "INSFLNAM")
KIND_KEYS = ("IMAGETYP", "FRAME", "FRAMETYP", "IMAGETYPE", "OBSTYPE")
XBIN_KEYS = ("XBINNING", "CCDXBIN", "BINX", "XBIN", "CCDBINX")
YBIN_KEYS = ("YBINNING", "CCDYBIN", "BINY", "YBIN", "CCDBINY")
INSTRUMENT_KEYS = ("INSTRUME", "CAMERA", "DETECTOR")
BAYER_KEYS = ("BAYERPAT", "COLORTYP", "CFA-PAT", "BAYER")
XOFF_KEYS = ("XBAYROFF", "BAYOFFX")
YOFF_KEYS = ("YBAYROFF", "BAYOFFY")

# Values of IMAGETYP & co., lower case, words only.
_KIND_WORDS = {
    "light": "light", "lightframe": "light", "science": "light", "object": "light",
    "sky": "light", "target": "light",
    "dark": "dark", "darkframe": "dark", "darkcurrent": "dark",
    "flat": "flat", "flatframe": "flat", "flatfield": "flat", "skyflat": "flat",
    "domeflat": "flat", "twilightflat": "flat",
    "bias": "bias", "biasframe": "bias", "offset": "bias", "zero": "bias",
    "offsetframe": "bias",
    "darkflat": "darkflat", "flatdark": "darkflat", "darkflatframe": "darkflat",
    "flatdarkframe": "darkflat",
}


def normalize_kind(value: Any) -> str:
    """Map an IMAGETYP-style value to one of light/dark/flat/bias/darkflat/unknown."""
    if value is None:
        return "unknown"
    word = re.sub(r"[^a-z]", "", str(value).lower())
    return _KIND_WORDS.get(word, "unknown")


def first(header: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """Value of the first of ``keys`` present and not blank in ``header``."""
    for k in keys:
        try:
            v = header[k]
        except (KeyError, IndexError, ValueError, TypeError, VerifyError):
            continue  # absent, or a card the header library cannot parse: as if absent
        if v is None:
            continue
        if isinstance(v, str) and not v.strip():
            continue
        return v
    return None


def as_float(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(str(v).strip()) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def as_int(v: Any) -> int | None:
    f = as_float(v)
    return None if f is None else int(round(f))


def as_text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def parse_date(value: Any, time_value: Any = None) -> datetime | None:
    """Parse DATE-OBS-style text (ISO 8601, with or without time and fraction) as UTC."""
    s = as_text(value)
    if s is None:
        return None
    s = s.replace(" ", "T").rstrip("Z")
    if "T" not in s and as_text(time_value):
        s = f"{s}T{as_text(time_value)}"
    # Old style dd/mm/yy dates.
    m = re.fullmatch(r"(\d\d)/(\d\d)/(\d\d)", s)
    if m:
        d, mo, y = (int(g) for g in m.groups())
        s = f"{1900 + y if y > 50 else 2000 + y:04d}-{mo:02d}-{d:02d}"
    # Python accepts at most 6 fraction digits.
    s = re.sub(r"(\.\d{6})\d+", r"\1", s)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    try:
        return dt.astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:00-05:00 is past the last date Python holds
        return None


def mjd_to_datetime(mjd: float) -> datetime | None:
    """The UTC date of a Modified Julian Date; None outside the years 1..9999."""
    try:
        return datetime(1858, 11, 17, tzinfo=timezone.utc) + timedelta(days=mjd)
    except OverflowError:
        return None


def effective_bayer(
    pattern: Any, *, xoff: Any = 0, yoff: Any = 0, roworder: Any = None, height: int
) -> str | None:
    """The 2x2 pattern as it applies to the first stored pixel of the data array.

    ``BAYERPAT`` describes the pattern seen from the top-left pixel of the image, with
    ``XBAYROFF``/``YBAYROFF`` shifting where the pattern starts. In a ``TOP-DOWN`` file
    (the default when ROWORDER is absent, as most cameras write) the first stored row is the
    top row, so the pattern applies as given. In a ``BOTTOM-UP`` file the first stored row is
    the bottom one: the pattern is flipped, which depends on whether the height is odd.
    This follows Siril's reading of the same keywords.
    """
    p = as_text(pattern)
    if p is None:
        return None
    p = p.upper()
    if p not in BAYER_PATTERNS:
        return None
    p = bayer_shift(p, (as_int(xoff) or 0) % 2, (as_int(yoff) or 0) % 2)
    order = (as_text(roworder) or "TOP-DOWN").upper()
    if order == "BOTTOM-UP":
        p = bayer_flip_rows(p, height)
    return p


def meta_from_header(
    header: Mapping[str, Any],
    *,
    path: str | Path | None,
    width: int,
    height: int,
    channels: int,
    fmt: str,
    bit_depth: int | None = None,
    raw_header: Any = None,
) -> FrameMeta:
    """Build a :class:`FrameMeta` from FITS-style keywords and the array's size."""
    kind = normalize_kind(first(header, KIND_KEYS))
    date = parse_date(first(header, ("DATE-OBS", "DATE-BEG", "DATE_OBS")),
                      first(header, ("TIME-OBS",)))
    if date is None:
        mjd = as_float(first(header, ("MJD-OBS", "MJD-BEG")))
        if mjd is not None:
            date = mjd_to_datetime(mjd)
    raw_pattern = first(header, BAYER_KEYS)
    bayer = None
    cfa = None
    if channels == 1 and raw_pattern is not None:
        text = str(raw_pattern).strip().upper()
        if len(text) == 36 and set(text) <= set("RGB"):
            cfa = "xtrans"
        else:
            bayer = effective_bayer(
                raw_pattern,
                xoff=first(header, XOFF_KEYS),
                yoff=first(header, YOFF_KEYS),
                roworder=first(header, ("ROWORDER",)),
                height=height,
            )
            cfa = "bayer" if bayer else None
    xb = as_int(first(header, XBIN_KEYS)) or 1
    yb = as_int(first(header, YBIN_KEYS)) or xb
    white = as_float(first(header, ("SATURATE", "SATLEVEL")))
    if white is None and bit_depth is not None and bit_depth > 0:
        white = float(2**bit_depth - 1)
    return FrameMeta(
        path=None if path is None else Path(path),
        kind=kind,
        width=int(width),
        height=int(height),
        channels=int(channels),
        exposure=as_float(first(header, EXPOSURE_KEYS)),
        gain=as_float(first(header, GAIN_KEYS)),
        iso=as_int(first(header, ISO_KEYS)),
        egain=as_float(first(header, EGAIN_KEYS)),
        temperature=as_float(first(header, TEMP_KEYS)),
        set_temperature=as_float(first(header, SETTEMP_KEYS)),
        filter=as_text(first(header, FILTER_KEYS)),
        binning=(max(1, xb), max(1, yb)),
        bayer=bayer,
        cfa=cfa,
        date=date,
        instrument=as_text(first(header, INSTRUMENT_KEYS)),
        telescope=as_text(first(header, ("TELESCOP",))),
        object=as_text(first(header, ("OBJECT",))),
        black_level=as_float(first(header, ("BLKLEVEL", "PEDESTAL"))),
        white_level=white,
        bit_depth=bit_depth,
        focal_length=as_float(first(header, ("FOCALLEN",))),
        pixel_size=as_float(first(header, ("XPIXSZ", "PIXSIZE1", "PIXSIZE"))),
        format=fmt,
        header=raw_header,
    )


def header_cards_from_meta(meta: FrameMeta) -> dict[str, Any]:
    """The normalised metadata as FITS keywords, for writers (Bayer pattern made explicit)."""
    cards: dict[str, Any] = {}
    kind_word = {"light": "Light Frame", "dark": "Dark Frame", "flat": "Flat Field",
                 "bias": "Bias Frame", "darkflat": "Dark Flat"}.get(meta.kind)
    if kind_word:
        cards["IMAGETYP"] = kind_word
    if meta.exposure is not None:
        cards["EXPTIME"] = meta.exposure
    if meta.gain is not None:
        cards["GAIN"] = meta.gain
    if meta.iso is not None:
        cards["ISOSPEED"] = meta.iso
    if meta.egain is not None:
        cards["EGAIN"] = meta.egain
    if meta.temperature is not None:
        cards["CCD-TEMP"] = meta.temperature
    if meta.set_temperature is not None:
        cards["SET-TEMP"] = meta.set_temperature
    if meta.filter is not None:
        cards["FILTER"] = meta.filter
    cards["XBINNING"], cards["YBINNING"] = meta.binning
    if meta.date is not None:
        cards["DATE-OBS"] = meta.date.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if meta.instrument:
        cards["INSTRUME"] = meta.instrument
    if meta.telescope:
        cards["TELESCOP"] = meta.telescope
    if meta.object:
        cards["OBJECT"] = meta.object
    if meta.focal_length is not None:
        cards["FOCALLEN"] = meta.focal_length
    if meta.pixel_size is not None:
        cards["XPIXSZ"] = meta.pixel_size
        cards["YPIXSZ"] = meta.pixel_size
    if meta.black_level is not None:
        cards["BLKLEVEL"] = meta.black_level
    if meta.white_level is not None:
        cards["SATURATE"] = meta.white_level
    if meta.bayer:
        cards["BAYERPAT"] = meta.bayer
        cards["XBAYROFF"] = 0
        cards["YBAYROFF"] = 0
        cards["ROWORDER"] = "TOP-DOWN"
    return cards
