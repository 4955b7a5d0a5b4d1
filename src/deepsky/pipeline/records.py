"""``frames.csv``: one row per light, what happened to it and why."""

from __future__ import annotations

import csv
import io as _io
import math
from pathlib import Path
from typing import Any, Sequence

from deepsky.io.atomic import write_text
from deepsky.pipeline.registration import LightRecord

COLUMNS = ["file", "status", "reason", "filter", "exposure", "date", "n_stars", "fwhm", "hfr",
           "roundness", "background", "noise", "snr", "weight", "n_matches", "reg_rms_px",
           "reg_method", "rotation_deg", "flux_ratio", "n_trails",
           "h00", "h01", "h02", "h10", "h11", "h12", "h20", "h21", "h22"]


def _num(v: Any, digits: int = 6) -> str:
    if v is None:
        return ""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return ""
    return f"{f:.{digits}g}"


def row(r: LightRecord) -> dict[str, str]:
    q = r.analysis.quality
    reg = r.registration
    out = {
        "file": r.name,
        "status": r.status,
        "reason": r.reason,
        "filter": r.meta.filter or "",
        "exposure": _num(r.meta.exposure),
        "date": r.meta.date.isoformat() if r.meta.date else "",
        "n_stars": str(q.n_stars),
        "fwhm": _num(q.fwhm),
        "hfr": _num(q.hfr),
        "roundness": _num(q.roundness),
        "background": _num(q.background),
        "noise": _num(q.noise),
        "snr": _num(q.snr),
        "weight": _num(r.weight),
        "n_matches": "" if reg is None else str(reg.n_matches),
        "reg_rms_px": "" if reg is None else _num(reg.rms_px),
        "reg_method": "" if reg is None else reg.method,
        "rotation_deg": "" if reg is None or not reg.ok else _num(reg.transform.rotation_deg),
        "flux_ratio": _num(r.flux_ratio),
        "n_trails": str(len(r.extra.get("trails", []))),
    }
    m = reg.transform.matrix if reg is not None and reg.ok else None
    for k, name in enumerate(COLUMNS[-9:]):
        out[name] = "" if m is None else repr(float(m.flat[k]))
    return out


def write_frames_csv(path: str | Path, records: Sequence[LightRecord], *,
                     unreadable: Sequence[Any] = ()) -> Path:
    """One row per light; ``unreadable`` (discovery's :class:`Unreadable` lights, which
    have no record) are added as rejected, with the reason they could not be read."""
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow(row(r))
    for u in unreadable:
        w.writerow({**dict.fromkeys(COLUMNS, ""), "file": Path(u.path).name,
                    "status": "rejected", "reason": f"unreadable: {u.reason}"})
    write_text(path, buf.getvalue())
    return Path(path)


def read_frames_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
