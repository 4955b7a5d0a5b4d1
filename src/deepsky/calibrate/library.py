"""A calibration library: masters kept on disk and reused while their inputs and settings
are unchanged.

A master's key hashes the settings that shape it and, for each input frame, its name, size,
modification time and a fingerprint of its content (the first and last 64 KiB), so that a
replaced or edited frame rebuilds the master while an unchanged session reuses it at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from deepsky import io
from deepsky.calibrate.masters import Master
from deepsky.io.atomic import write_text
from deepsky.io.fits import write_fits

LIBRARY_VERSION = 1
_CHUNK = 65536


def file_fingerprint(path: Path) -> str:
    """Name, size, mtime and the first and last 64 KiB of a file, hashed."""
    st = path.stat()
    h = hashlib.sha1()
    h.update(f"{path.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_CHUNK))
        if st.st_size > 2 * _CHUNK:
            fh.seek(-_CHUNK, os.SEEK_END)
            h.update(fh.read(_CHUNK))
    return h.hexdigest()


def master_key(kind: str, paths: Sequence[Path], settings: dict[str, Any]) -> str:
    h = hashlib.sha1()
    h.update(json.dumps({"v": LIBRARY_VERSION, "kind": kind, "settings": settings},
                        sort_keys=True, default=str).encode())
    for p in sorted(paths, key=str):
        h.update(file_fingerprint(p).encode())
    return h.hexdigest()[:20]


@dataclass
class Library:
    """Masters in a folder, indexed by key in ``library.json``."""

    folder: Path

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self._index_path = self.folder / "library.json"
        self._index: dict[str, Any] = {}
        if self._index_path.exists():
            try:
                self._index = json.loads(self._index_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._index = {}

    def load(self, key: str) -> Master | None:
        entry = self._index.get(key)
        if not entry:
            return None
        path = self.folder / entry["file"]
        if not path.exists():
            return None
        try:
            frame = io.read(path)
        except Exception:  # a damaged cache entry is rebuilt, never fatal
            return None
        if frame.meta.header is None or frame.meta.header.get("DSKYKEY") != key:
            return None
        return Master(
            data=frame.data, kind=entry["kind"], n_frames=int(entry["n_frames"]),
            method=entry["method"], rejected_fraction=float(entry["rejected_fraction"]),
            exposure=entry.get("exposure"), temperature=entry.get("temperature"),
            gain=entry.get("gain"), filter=entry.get("filter"), bayer=entry.get("bayer"),
        )

    def store(self, key: str, name: str, master: Master, *, inputs: Sequence[Path],
              history: Sequence[str] = ()) -> Path:
        path = self.folder / name
        cards: dict[str, Any] = {
            "IMAGETYP": f"Master {master.kind.capitalize() if master.kind != 'darkflat' else 'Dark Flat'}",
            "NCOMBINE": master.n_frames,
            "DSKYKEY": key,
            "DSKYMETH": master.method,
        }
        if master.exposure is not None:
            cards["EXPTIME"] = master.exposure
        if master.temperature is not None:
            cards["CCD-TEMP"] = master.temperature
        if master.gain is not None:
            cards["GAIN"] = master.gain
        if master.filter:
            cards["FILTER"] = master.filter
        if master.bayer:
            cards.update({"BAYERPAT": master.bayer, "XBAYROFF": 0, "YBAYROFF": 0,
                          "ROWORDER": "TOP-DOWN"})
        hist = [f"master {master.kind} of {master.n_frames} frames, {master.method} "
                f"({master.rejected_fraction * 100:.3f}% of samples rejected)"]
        hist += [f"input: {p.name}" for p in inputs[:200]]
        hist += list(history)
        # Synced before its name appears (a library outlives the run) and dropped from the
        # page cache: the master is in memory already, and fresh cache pages are expensive
        # where memory is (masters stage 1.95 -> 1.15 s system time, docs/benchmarks.md).
        write_fits(path, master.data, cards=cards, history=hist, flush=True)
        self._index[key] = {
            "file": name, "kind": master.kind, "n_frames": master.n_frames,
            "method": master.method, "rejected_fraction": master.rejected_fraction,
            "exposure": master.exposure, "temperature": master.temperature,
            "gain": master.gain, "filter": master.filter, "bayer": master.bayer,
        }
        write_text(self._index_path, json.dumps(self._index, indent=1, sort_keys=True))
        return path

    def path_of(self, key: str) -> Path | None:
        entry = self._index.get(key)
        return None if not entry else self.folder / entry["file"]


def write_defect_map(path: Path, mask: np.ndarray, *, history: Sequence[str] = ()) -> Path:
    """The defect map as a FITS image (1 = defective pixel)."""
    return write_fits(path, mask.astype(np.uint8), dtype=np.uint8,
                      cards={"IMAGETYP": "Defect Map", "NDEFECT": int(mask.sum())},
                      history=history, flush=True)
