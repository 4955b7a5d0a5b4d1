"""Find and classify the frames of a session.

Two layouts are understood:

* **folders**: the session folder holds ``lights/``, ``darks/``, ``flats/``, ``biases/`` and
  ``darkflats/`` (also singular names, ``offset(s)``, ``dark_flats``, ``flatdarks``,
  ``flat_darks``; any case). Each is searched recursively. A subfolder of ``lights/`` or
  ``flats/`` names the filter of the frames inside it (``lights/Ha/*.fits``); frames directly in
  ``lights/`` take the filter from their header.
* **mixed**: one folder of frames (not searched recursively), each classified by its
  IMAGETYP/FRAME header, else by its file-name prefix (``Light_``, ``Dark_``, ``Flat_``,
  ``Bias_``, ``Offset_``, ``DarkFlat_``, ``FlatDark_`` as N.I.N.A., ASIAIR, Seestar and SharpCap
  write them).

Unreadable files are listed with their reason; they never stop the discovery.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepsky.errors import DeepskyError, InputError
from deepsky.io import is_image_file, read_meta
from deepsky.types import FrameMeta

KINDS = ("light", "dark", "flat", "bias", "darkflat")

_FOLDER_KIND = {
    "light": "light", "lights": "light",
    "dark": "dark", "darks": "dark",
    "flat": "flat", "flats": "flat",
    "bias": "bias", "biases": "bias", "offset": "bias", "offsets": "bias",
    "darkflat": "darkflat", "darkflats": "darkflat", "dark_flat": "darkflat",
    "dark_flats": "darkflat", "flatdark": "darkflat", "flatdarks": "darkflat",
    "flat_dark": "darkflat", "flat_darks": "darkflat", "dark-flats": "darkflat",
    "flat-darks": "darkflat",
}

# File-name prefixes, longest first so that DarkFlat_ is not read as Dark.
_PREFIXES = (
    ("darkflat", "darkflat"), ("dark_flat", "darkflat"), ("flatdark", "darkflat"),
    ("flat_dark", "darkflat"), ("light", "light"), ("dark", "dark"), ("flat", "flat"),
    ("bias", "bias"), ("offset", "bias"),
)


def folder_kind(name: str) -> str | None:
    """The frame kind a folder name stands for, or None."""
    return _FOLDER_KIND.get(name.strip().lower())


def prefix_kind(filename: str) -> str | None:
    """The frame kind a file-name prefix stands for (``Light_001.fits`` -> light), or None."""
    low = filename.lower()
    for prefix, kind in _PREFIXES:
        if low.startswith(prefix) and (len(low) == len(prefix) or not low[len(prefix)].isalpha()):
            return kind
    return None


@dataclass(frozen=True)
class Unreadable:
    path: Path
    reason: str
    kind: str | None = None  # from the folder or the file-name prefix, when they say


@dataclass
class Session:
    """The frames of one session, classified by kind."""

    root: Path
    layout: str  # "folders" or "mixed"
    frames: dict[str, list[FrameMeta]] = field(default_factory=lambda: {k: [] for k in KINDS})
    unreadable: list[Unreadable] = field(default_factory=list)
    unclassified: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def lights(self) -> list[FrameMeta]:
        return self.frames["light"]

    @property
    def unreadable_lights(self) -> list[Unreadable]:
        """Files that are lights by their folder or name but cannot be read."""
        return [u for u in self.unreadable if u.kind == "light"]

    @property
    def darks(self) -> list[FrameMeta]:
        return self.frames["dark"]

    @property
    def flats(self) -> list[FrameMeta]:
        return self.frames["flat"]

    @property
    def biases(self) -> list[FrameMeta]:
        return self.frames["bias"]

    @property
    def darkflats(self) -> list[FrameMeta]:
        return self.frames["darkflat"]

    def light_groups(self) -> dict[tuple[Any, ...], list[FrameMeta]]:
        """Lights grouped by filter and by camera and frame geometry (one stack per group)."""
        groups: dict[tuple[Any, ...], list[FrameMeta]] = defaultdict(list)
        for m in self.lights:
            groups[light_group_key(m)].append(m)
        return dict(groups)

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per (kind, filter, exposure, gain, size, pattern): the inventory table."""
        rows: dict[tuple[Any, ...], list[FrameMeta]] = defaultdict(list)
        for kind in KINDS:
            for m in self.frames[kind]:
                key = (kind, m.filter if kind in ("light", "flat") else None,
                       m.exposure, m.gain_or_iso, m.width, m.height, m.binning, m.bayer or m.cfa,
                       m.channels)
                rows[key].append(m)
        out = []
        for key, metas in rows.items():
            kind, flt, exp, gain, w, h, binning, pattern, channels = key
            temps = [m.temperature for m in metas if m.temperature is not None]
            out.append({
                "type": kind,
                "filter": flt,
                "count": len(metas),
                "exposure": exp,
                "gain": gain,
                "gain_kind": "ISO" if metas[0].gain is None and metas[0].iso is not None else "gain",
                "temperature_min": min(temps) if temps else None,
                "temperature_max": max(temps) if temps else None,
                "width": w,
                "height": h,
                "binning": f"{binning[0]}x{binning[1]}",
                "bayer": pattern,
                "channels": channels,
            })
        order = {k: i for i, k in enumerate(KINDS)}
        out.sort(key=lambda r: (order[r["type"]], str(r["filter"]), r["exposure"] or 0))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "counts": {k: len(v) for k, v in self.frames.items()},
            "groups": self.summary_rows(),
            "light_groups": [
                {"filter": key[0], "instrument": key[1], "width": key[2], "height": key[3],
                 "binning": f"{key[4][0]}x{key[4][1]}", "bayer": key[5], "count": len(v)}
                for key, v in self.light_groups().items()
            ],
            "files": {k: [str(m.path) for m in v] for k, v in self.frames.items()},
            "unreadable": [{"path": str(u.path), "reason": u.reason, "kind": u.kind}
                           for u in self.unreadable],
            "unclassified": [str(p) for p in self.unclassified],
            "warnings": list(self.warnings),
        }


def force_bayer(session: Session, pattern: str) -> Session:
    """The session with ``calibration.bayer_pattern`` applied: ``auto`` keeps each file's
    pattern; ``none`` makes every single-plane frame mono; a 2x2 pattern (of the pixels as
    stored) is given to every single-plane frame (not to X-Trans ones)."""
    if pattern == "auto":
        return session
    bayer, cfa = (None, None) if pattern == "none" else (pattern, "bayer")
    frames = {k: [m.replace(bayer=bayer, cfa=cfa) if m.channels == 1 and m.cfa != "xtrans"
                  else m for m in v] for k, v in session.frames.items()}
    return dataclasses.replace(session, frames=frames)


def light_group_key(m: FrameMeta) -> tuple[Any, ...]:
    return (m.filter, m.instrument, m.width, m.height, m.binning, m.bayer or m.cfa)


def same_filter(a: str | None, b: str | None) -> bool:
    return (a or "").strip().lower() == (b or "").strip().lower()


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    out: list[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and is_image_file(name):
                    out.append(Path(dirpath) / name)
    else:
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith(".") and is_image_file(p.name):
                out.append(p)
    return out


def _read_all(paths: list[Path], workers: int) -> list[FrameMeta | Unreadable]:
    """The metadata of every file. The headers are parsed one after the other (astropy's
    parsing is Python, holding the GIL: 4 threads took 0.24 s for 80 cached files where one
    takes 0.18 s); the waiting for the disk or a network filesystem overlaps through the
    kernel instead: each file's first bytes are asked for ahead (``workers`` > 1)."""
    def one(p: Path) -> FrameMeta | Unreadable:
        try:
            return read_meta(p)
        except DeepskyError as err:
            reason = err.problem if isinstance(err, InputError) else str(err)
            return Unreadable(p, reason)

    if workers > 1 and len(paths) >= 8:
        _read_ahead(paths)
    return [one(p) for p in paths]


def _read_ahead(paths: list[Path], nbytes: int = 65536) -> None:
    """Ask the kernel to start reading the first ``nbytes`` of each file (headers) now:
    posix_fadvise(WILLNEED) returns at once, the reads proceed in the background."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue  # read_meta reports it
        try:
            advise(fd, 0, nbytes, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def discover(root: str | os.PathLike, *, workers: int = 4) -> Session:
    """Classify every image file of the session folder ``root``.

    Raises :class:`InputError` if ``root`` is not a readable folder; an empty or
    frame-less folder gives an empty :class:`Session` (the caller decides whether that is an
    error).
    """
    root_path = Path(root)
    if not root_path.exists():
        raise InputError(root_path, "session folder not found")
    if not root_path.is_dir():
        raise InputError(root_path, "not a folder (give the session folder that holds the frames)")
    try:
        children = sorted(root_path.iterdir())
    except PermissionError as err:
        raise InputError(root_path, "permission denied (cannot list the folder)") from err

    kind_dirs = [(c, folder_kind(c.name)) for c in children if c.is_dir() and folder_kind(c.name)]
    session = Session(root=root_path, layout="folders" if kind_dirs else "mixed")

    # (path, kind from folder or None, filter from folder or None)
    planned: list[tuple[Path, str | None, str | None]] = []
    if kind_dirs:
        for folder, kind in kind_dirs:
            for p in _image_files(folder, recursive=True):
                rel = p.relative_to(folder).parts
                flt = rel[0] if len(rel) > 1 and kind in ("light", "flat") else None
                planned.append((p, kind, flt))
    else:
        planned = [(p, None, None) for p in _image_files(root_path, recursive=False)]

    results = _read_all([p for p, _, _ in planned], workers)
    disagree = 0
    for (path, kind, flt), res in zip(planned, results):
        if isinstance(res, Unreadable):
            session.unreadable.append(Unreadable(path, res.reason,
                                                 kind or prefix_kind(path.name)))
            continue
        meta = res
        header_kind = meta.kind if meta.kind != "unknown" else None
        if kind is None:
            kind = header_kind or prefix_kind(path.name)
        elif header_kind and header_kind != kind:
            disagree += 1
        if kind is None:
            session.unclassified.append(path)
            continue
        changes: dict[str, Any] = {"kind": kind}
        if flt is not None:
            changes["filter"] = flt
        session.frames[kind].append(meta.replace(**changes))
    if disagree:
        session.warnings.append(
            f"{disagree} file(s) have an IMAGETYP header that disagrees with their folder; "
            "the folder was trusted")
    for kind in KINDS:
        session.frames[kind].sort(
            key=lambda m: (m.date is None, m.date.timestamp() if m.date else 0.0, str(m.path)))
    session.warnings.extend(_check(session))
    return session


def header_pattern(m: FrameMeta) -> Any:
    """The CFA pattern text a file's header gives (BAYERPAT & co.), or None."""
    from deepsky.io.headers import BAYER_KEYS, first

    h = m.header
    if h is None:
        return None
    try:
        v = first(h, BAYER_KEYS)
    except (TypeError, ValueError, AttributeError):
        return None
    return str(v).strip() if v is not None and str(v).strip() else None


def _fmt_exp(e: float | None) -> str:
    return "?" if e is None else f"{e:g} s"


def _filter_names(metas: list[FrameMeta]) -> dict[str, str]:
    """Filter names as written, keyed by their case-folded form."""
    return {(m.filter or "").strip().lower(): (m.filter or "(none)") for m in metas}


def _check(s: Session) -> list[str]:
    """Warnings about what will not work as the user probably expects."""
    out: list[str] = []
    if s.unreadable:
        out.append(f"{len(s.unreadable)} unreadable file(s) skipped: "
                   + "; ".join(f"{u.path.name} ({u.reason})" for u in s.unreadable[:5])
                   + (" ..." if len(s.unreadable) > 5 else ""))
    if s.unclassified:
        out.append(f"{len(s.unclassified)} file(s) could not be classified (no IMAGETYP header "
                   f"and no Light_/Dark_/Flat_/Bias_ prefix), ignored: "
                   + ", ".join(p.name for p in s.unclassified[:5]))
    if not s.lights:
        out.append("no light frames found")
        return out
    bad_pattern = sorted({str(p) for m in s.lights + s.flats
                          if m.channels == 1 and m.cfa is None
                          and (p := header_pattern(m)) is not None})
    if bad_pattern:
        out.append("BAYERPAT = " + ", ".join(repr(p) for p in bad_pattern) + " is not a 2x2 "
                   "Bayer pattern (RGGB, BGGR, GRBG, GBRG): those frames are processed as "
                   "mono; set calibration.bayer_pattern if the camera is a colour one")
    sizes = Counter((m.width, m.height, m.binning) for m in s.lights)
    if len(sizes) > 1:
        desc = ", ".join(f"{n} of {w}x{h} bin {b[0]}x{b[1]}" for (w, h, b), n in sizes.most_common())
        out.append(f"lights have mixed sizes: {desc}; each size is processed as its own group")
    light_geoms = {(m.width, m.height, m.binning) for m in s.lights}
    light_exps = {round(m.exposure, 3) for m in s.lights if m.exposure is not None}
    for kind in ("dark", "flat", "bias", "darkflat"):
        frames = s.frames[kind]
        if not frames:
            continue
        bad = [m for m in frames if (m.width, m.height, m.binning) not in light_geoms]
        if bad:
            w = bad[0]
            out.append(f"{len(bad)} {kind} frame(s) match no lights in size/binning "
                       f"(e.g. {w.path.name if w.path else '?'}: {w.width}x{w.height} bin "
                       f"{w.binning[0]}x{w.binning[1]}) and will not be used")
        if len(frames) == 1 and kind != "flat":
            out.append(f"only one {kind} frame: its noise goes straight into every calibrated "
                       "light (take 20 or more)")
    dark_exps = sorted({round(m.exposure, 3) for m in s.darks if m.exposure is not None})
    unmatched = [e for e in dark_exps if e not in light_exps]
    if unmatched:
        out.append("darks with exposure " + ", ".join(_fmt_exp(e) for e in unmatched)
                   + " match no light exposure (" + ", ".join(_fmt_exp(e) for e in
                   sorted(light_exps)) + "); they can only be used scaled")
    if s.flats:
        light_names, flat_names = _filter_names(s.lights), _filter_names(s.flats)
        orphan = sorted(flat_names[f] for f in set(flat_names) - set(light_names))
        if orphan:
            out.append("flats for filter(s) " + ", ".join(orphan) + " match no lights")
        counts = Counter((m.filter or "").strip().lower() for m in s.flats)
        singles = sorted(flat_names[f] for f, n in counts.items() if n == 1)
        if singles:
            out.append("a single flat for filter(s) " + ", ".join(singles)
                       + ": its noise goes into every calibrated light")
        missing = sorted(light_names[f] for f in set(light_names) - set(flat_names))
        if missing:
            out.append("no flats for the lights of filter(s) " + ", ".join(missing))
    return out
