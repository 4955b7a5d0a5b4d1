"""``report.html``: one self-contained page showing what a run did and how it went.

The page leads with what a person wants first: the target, the nights, the integration time,
how many frames were used, and the final image itself. Warnings and rejected frames follow
straight away, then per-frame quality and registration over time, the trails found (drawn on
the frames that have them), the rejection and coverage maps of each stack, the histogram of
the finished image, the session inventory, the masters, and the run's settings, timings and
versions.

Everything is embedded: images are base64 data URIs (PNG for plots, maps and thumbnails; the
photographic previews too), the style sheet is inline, there is no script, font or network
request. Images are downsized (the final image to ~1200 px) so the page stays a few MB.

:func:`write_report` is called by :func:`deepsky.pipeline.run.run_pipeline` at the end of a
run (also one that stopped after registration: the report then shows why).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io as _io
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from deepsky.config import Config
from deepsky.io.atomic import write_text
from deepsky.types import Transform

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from deepsky.pipeline.registration import LightRecord
    from deepsky.pipeline.run import RunResult
    from deepsky.pipeline.runner import Pipeline
    from deepsky.pipeline.stacking import StackGroup

__all__ = ["write_report", "REPORT_NAME"]

REPORT_NAME = "report.html"

# Sizes (pixels on the long side) of the embedded images.
FINAL_SIZE = 1200
PREVIEW_SIZE = 700
THUMB_SIZE = 420
MAP_SIZE = 420  # rejection/coverage maps are block-averaged to about this size
MAX_THUMBS = 24

# Colours shared by the plots and the page.
INK = "#1d2330"
MUTED = "#6b7280"
GRID = "#e5e7eb"
ACCENT = "#2f6fde"
BAD = "#e03131"
WARN = "#f08c00"
_FILTER_COLOURS = {
    "r": "#e03131", "red": "#e03131", "g": "#2f9e44", "green": "#2f9e44",
    "b": "#1c7ed6", "blue": "#1c7ed6", "l": "#495057", "lum": "#495057",
    "luminance": "#495057", "ha": "#c2255c", "h-alpha": "#c2255c", "halpha": "#c2255c",
    "oiii": "#0ca678", "o3": "#0ca678", "sii": "#e8590c", "s2": "#e8590c",
}
_CYCLE = ["#2f6fde", "#7048e8", "#0ca678", "#e8590c", "#c2255c", "#495057", "#1098ad"]


# ----------------------------------------------------------------------------------------------
# What the report shows about each light
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FramePoint:
    """One light as the plots and tables see it."""

    index: int  # 1-based, session order
    name: str
    filter: str
    date: datetime | None
    exposure: float | None
    used: bool
    reason: str
    n_stars: float
    fwhm: float
    roundness: float
    background: float
    weight: float
    dx: float  # shift of the frame centre onto the reference, px (NaN: not registered)
    dy: float
    rotation: float  # degrees
    reference: bool


def centre_shift(t: Transform, width: int, height: int) -> tuple[float, float]:
    """Where ``t`` moves the frame's centre pixel, ``(dx, dy)`` in reference pixels."""
    c = np.array([(width - 1) / 2, (height - 1) / 2])
    d = t.apply(c[None])[0] - c
    return float(d[0]), float(d[1])


def trail_in_frame(trail: Any, frame_to_output: Transform, factor: int) -> np.ndarray:
    """The end points ``[[x0, y0], [x1, y1]]`` of a trail (output-grid pixels) in the frame's
    binned geometry (``factor`` x ``factor`` bins; bin ``p`` is centred on full-resolution
    pixel ``factor * p + (factor - 1) / 2``)."""
    full = frame_to_output.inverse().apply([[trail.x0, trail.y0], [trail.x1, trail.y1]])
    return (full - (factor - 1) / 2) / factor


def frame_points(pipe: "Pipeline") -> list[FramePoint]:
    """Every light of the run, in session order."""
    refs = {id(g.reference_record) for g in pipe.groups if g.ok}
    out = []
    for i, r in enumerate(pipe.records, start=1):
        q = r.analysis.quality
        reg = r.registration
        if reg is not None and reg.ok:
            dx, dy = centre_shift(reg.transform, r.meta.width, r.meta.height)
            rot = reg.transform.rotation_deg
        else:
            dx = dy = rot = math.nan
        out.append(FramePoint(
            index=i, name=r.name, filter=r.meta.filter or "", date=r.meta.date,
            exposure=r.meta.exposure, used=r.used, reason=r.reason,
            n_stars=float(q.n_stars), fwhm=_f(q.fwhm), roundness=_f(q.roundness),
            background=_f(q.background), weight=_f(r.weight), dx=dx, dy=dy, rotation=rot,
            reference=id(r) in refs))
    return out


def _f(v: Any) -> float:
    return math.nan if v is None else float(v)


# ----------------------------------------------------------------------------------------------
# The public entry point
# ----------------------------------------------------------------------------------------------
def write_report(pipe: "Pipeline", result: "RunResult", out_path: str | Path, *,
                 error: BaseException | None = None) -> Path:
    """Write the run's ``report.html`` (self-contained) atomically to ``out_path``.

    Parameters
    ----------
    pipe : Pipeline
        The pipeline after (at least) registration: its session, plan, groups, stacks.
    result : RunResult
        The run's result: the post-processed outputs (``result.processed``) and the run
        record (``result.record``, the content of run.json) when already made.
    out_path : path
        Where to write, normally ``OUT/report.html``.
    error : exception, optional
        What stopped the run early, shown at the top of the page.

    Returns the path written.
    """
    page = _page(pipe, result, error)
    out = Path(out_path)
    write_text(out, page)
    return out


def _page(pipe: "Pipeline", result: "RunResult", error: BaseException | None) -> str:
    record = result.record or {}
    frames = frame_points(pipe)
    final = _final_image(pipe, result)
    parts = [
        _header(pipe, frames, record, error),
        _hero(final),
        '<main class="wrap">',
        _nav(pipe),
        _attention(pipe, frames, error),
        _quality_section(frames),
        _registration_section(frames),
        _trails_section(pipe),
        _maps_section(pipe),
        _final_section(final, result, pipe),
        _inventory_section(pipe),
        _settings_section(pipe.cfg),
        _run_section(pipe, record),
        "</main>",
        f'<footer class="wrap">{_e(_generated(record))}</footer>',
    ]
    title = f"deepsky report: {_target(pipe)}"
    return _HTML.format(title=_e(title), css=_CSS, body="\n".join(p for p in parts if p))


# ----------------------------------------------------------------------------------------------
# Header, hero image, warnings
# ----------------------------------------------------------------------------------------------
def _target(pipe: "Pipeline") -> str:
    lights = pipe.session.lights if pipe.session else []
    names = Counter((m.object or "").strip() for m in lights if (m.object or "").strip())
    if names:
        return names.most_common(1)[0][0]
    return pipe.session_path.resolve().name or str(pipe.session_path)


def _date_range(dates: Sequence[datetime]) -> str:
    if not dates:
        return "no dates in the files"
    a, b = min(dates), max(dates)
    a, b = _utc(a), _utc(b)
    if a == b:
        return f"{a:%Y-%m-%d %H:%M} UTC"
    if a.date() == b.date():
        return f"{a:%Y-%m-%d %H:%M} – {b:%H:%M} UTC"
    return f"{a:%Y-%m-%d %H:%M} – {b:%Y-%m-%d %H:%M} UTC"


def _utc(d: datetime) -> datetime:
    return d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)


def duration(seconds: float) -> str:
    """``5400`` -> ``"1 h 30 min"``; ``540`` -> ``"9 min"``; ``45`` -> ``"45 s"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.3g} s" if seconds < 10 else f"{s} s"
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h} h {m} min" if m else f"{h} h"
    return f"{m} min {sec} s" if sec else f"{m} min"


def _header(pipe: "Pipeline", frames: list[FramePoint], record: dict[str, Any],
            error: BaseException | None) -> str:
    lights = pipe.session.lights if pipe.session else []
    used = [f for f in frames if f.used]
    rejected = [f for f in frames if not f.used]
    integ = sum(f.exposure or 0.0 for f in used)
    kit = Counter(" · ".join(x for x in (m.telescope, m.instrument) if x) for m in lights)
    kit.pop("", None)
    sub = [_date_range([m.date for m in lights if m.date is not None])]
    if kit:
        sub.append(kit.most_common(1)[0][0])
    filters = [sg.name for sg in pipe.stacks if sg.name]
    stats = [
        ("integration", duration(integ) if integ else "–", ""),
        ("frames used", f"{len(used)} / {len(frames)}", ""),
        ("rejected", str(len(rejected)), "bad" if rejected else ""),
        ("warnings", str(len(pipe.reporter.warnings)), "warn" if pipe.reporter.warnings else ""),
    ]
    if filters:
        stats.append(("filters", ", ".join(filters), ""))
    if "wall_s" in record:
        stats.append(("run time", duration(float(record["wall_s"])), ""))
    cards = "".join(f'<div class="stat {c}"><div class="k">{_e(k)}</div>'
                    f'<div class="v">{_e(v)}</div></div>' for k, v, c in stats)
    status = ""
    if error is not None:
        status = '<span class="pill bad">stopped early</span>'
    return (f'<header class="top"><div class="wrap">'
            f'<div class="brand">deepsky report</div>'
            f'<h1>{_e(_target(pipe))} {status}</h1>'
            f'<div class="sub">{" &nbsp;·&nbsp; ".join(_e(s) for s in sub)}</div>'
            f'<div class="stats">{cards}</div></div></header>')


@dataclass(frozen=True)
class _Final:
    uri: str  # data URI of the downsized image ("" when there is none)
    caption: str
    display: np.ndarray | None  # the display image (H, W, C) uint8, for the histogram
    size: tuple[int, int] = (0, 0)  # (width, height) of the embedded image


def _final_image(pipe: "Pipeline", result: "RunResult") -> _Final:
    main = result.processed.get("main")
    jpeg = main.paths.get("jpeg") if main is not None else None
    if jpeg is not None and Path(jpeg).exists():
        img = _read_rgb8(Path(jpeg))
        small = _downsize(img, FINAL_SIZE)
        note = ", downsized" if small.shape != img.shape else ""
        return _Final(_png_uri(small),
                      f"{Path(jpeg).name} ({img.shape[1]} × {img.shape[0]} px){note}", img,
                      (small.shape[1], small.shape[0]))
    stacks = [sg for sg in pipe.stacks if sg.path is not None and sg.path.exists()]
    if not stacks:
        return _Final("", "no stack was made", None)
    sg = max(stacks, key=lambda s: (s.exposure, len(s.used)))
    img = _stack_preview(sg.path, FINAL_SIZE)
    return _Final(_png_uri(img), f"{sg.path.name}, auto-stretched (no final.jpg was made)",
                  None, (img.shape[1], img.shape[0]))


def _hero(final: _Final) -> str:
    if not final.uri:
        return ('<div class="hero"><div class="wrap"><div class="noimg">No image: the run '
                'stopped before a stack was made.</div></div></div>')
    w, h = final.size
    style = ""
    if 0 < max(w, h) < 600:  # a small image: shown enlarged (whole times) rather than tiny
        k = 600 // max(w, h)
        style = f' style="width:{w * k}px"'
    return (f'<div class="hero"><div class="wrap"><figure><img alt="final image"{style} '
            f'src="{final.uri}"><figcaption>{_e(final.caption)}</figcaption></figure>'
            f'</div></div>')


def _nav(pipe: "Pipeline") -> str:
    links = [("attention", "Warnings & rejections"), ("quality", "Frame quality"),
             ("registration", "Registration")]
    if any(sg.trails for sg in pipe.stacks):
        links.append(("trails", "Trails"))
    if pipe.stacks:
        links.append(("maps", "Rejection maps"))
    links += [("final", "Final image"), ("session", "Session"), ("settings", "Settings"),
              ("run", "Run")]
    return '<nav>' + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in links) + '</nav>'


def _attention(pipe: "Pipeline", frames: list[FramePoint], error: BaseException | None
               ) -> str:
    out = ['<section id="attention"><h2>Warnings &amp; rejected frames</h2>']
    if error is not None:
        out.append(f'<div class="alert bad"><b>The run stopped early</b>: '
                   f'{_e(type(error).__name__)}: {_e(str(error))}</div>')
    warnings = list(pipe.reporter.warnings)
    if warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        out.append(f'<div class="alert warn"><b>{_n(len(warnings), "warning")}</b>'
                   f'<ul>{items}</ul></div>')
    unreadable = pipe.session.unreadable if pipe.session else []
    if unreadable:
        rows = [(_e(u.path.name), _e(u.reason)) for u in unreadable]
        out.append(f'<div class="alert warn"><b>{_n(len(unreadable), "unreadable file")}'
                   f'</b> (skipped)'
                   + _table(["file", "reason"], rows) + "</div>")
    rejected = [f for f in frames if not f.used]
    if rejected:
        rows = [(str(f.index), f'<span class="mono">{_e(f.name)}</span>', _e(f.filter),
                 _e(_utc(f.date).strftime("%Y-%m-%d %H:%M:%S") if f.date else ""),
                 _e(f.reason)) for f in rejected]
        out.append(f'<div class="alert bad"><b>{len(rejected)} of '
                   f'{_n(len(frames), "frame")} rejected</b>'
                   + _table(["#", "file", "filter", "date (UTC)", "reason"], rows,
                            cls="rejected") + "</div>")
    if not warnings and not rejected and not unreadable and error is None:
        out.append('<div class="alert ok">No warnings; every frame was used.</div>')
    out.append("</section>")
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# Plots over time
# ----------------------------------------------------------------------------------------------
def _x_values(frames: list[FramePoint]) -> tuple[np.ndarray, bool]:
    """DATE-OBS as matplotlib date numbers when every frame has one, else frame numbers."""
    if frames and all(f.date is not None for f in frames):
        from matplotlib.dates import date2num

        return np.array([date2num(_utc(f.date)) for f in frames], float), True
    return np.array([f.index for f in frames], float), False


def _filter_colour(name: str, order: dict[str, int]) -> str:
    return _FILTER_COLOURS.get(name.strip().lower(), _CYCLE[order[name] % len(_CYCLE)])


def _quality_section(frames: list[FramePoint]) -> str:
    if not frames:
        return ""
    panels = [("fwhm", "FWHM (px)"), ("roundness", "roundness"), ("n_stars", "stars"),
              ("background", "background (ADU)"), ("weight", "weight")]
    fig = _figure(11, 1.55 * len(panels) + 0.6)
    axes = fig.subplots(len(panels), 1, sharex=True)
    x, dated = _x_values(frames)
    filters = list(dict.fromkeys(f.filter for f in frames))
    order = {n: i for i, n in enumerate(filters)}
    used = np.array([f.used for f in frames])
    for ax, (attr, label) in zip(axes, panels):
        y = np.array([getattr(f, attr) for f in frames], float)
        _mark_rejected(ax, x[~used])
        for flt in filters:
            sel = np.array([f.filter == flt for f in frames]) & used
            if not sel.any():
                continue
            o = np.argsort(x[sel])
            ax.plot(x[sel][o], y[sel][o], "-o", color=_filter_colour(flt, order), ms=3.5,
                    lw=1.0, label=flt or "frames")
        ry = y[~used]
        if attr == "weight":
            ry = np.zeros_like(ry)  # rejected frames weigh nothing
        if ry.size:
            ax.plot(x[~used], ry, "X", color=BAD, ms=8, mec="white", mew=0.6,
                    label="rejected", zorder=5)
        ax.set_ylabel(label, fontsize=9, color=INK)
        _style(ax)
        _pad_ylim(ax, np.concatenate([y[used & np.isfinite(y)], ry[np.isfinite(ry)]]))
    _x_axis(axes[-1], dated, x)
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside upper right",
                   ncols=min(6, len(seen)), frameon=False, fontsize=9)
    n_rej = int((~used).sum())
    cap = (f"{_n(len(frames), 'frame')} by "
           f"{'time (DATE-OBS, UTC)' if dated else 'frame number'}"
           f"; rejected frames are red crosses on a red band"
           + (f" ({n_rej})" if n_rej else " (none)") + ". Weights are those of the stack.")
    return (f'<section id="quality"><h2>Frame quality over time</h2>'
            f'{_fig_html(fig, "per-frame quality", cap)}</section>')


def _registration_section(frames: list[FramePoint]) -> str:
    reg = [f for f in frames if math.isfinite(f.dx) and not f.reference]
    if not reg:
        why = ("only the reference frame was usable" if len(frames) > 1
               else "a single frame, nothing to register")
        return ('<section id="registration"><h2>Registration</h2>'
                f'<p class="muted">No frame was registered: {why}.</p></section>')
    fig = _figure(11, 4.6)
    gs = fig.add_gridspec(2, 2, width_ratios=[3.2, 1.25])
    ax_s = fig.add_subplot(gs[0, 0])
    ax_r = fig.add_subplot(gs[1, 0], sharex=ax_s)
    ax_p = fig.add_subplot(gs[:, 1])
    x, dated = _x_values(frames)
    used = np.array([f.used for f in frames])
    ok = np.array([math.isfinite(f.dx) for f in frames])
    o = np.argsort(x[ok])
    xs = x[ok][o]
    dx = np.array([f.dx for f in frames])[ok][o]
    dy = np.array([f.dy for f in frames])[ok][o]
    rot = np.array([f.rotation for f in frames])[ok][o]
    for ax in (ax_s, ax_r):
        _mark_rejected(ax, x[~used])
    ax_s.plot(xs, dx, "-o", color=ACCENT, ms=3, lw=1.0, label="x shift")
    ax_s.plot(xs, dy, "-o", color=WARN, ms=3, lw=1.0, label="y shift")
    ax_s.set_ylabel("shift (px)", fontsize=9)
    ax_r.plot(xs, rot, "-o", color="#7048e8", ms=3, lw=1.0)
    ax_r.set_ylabel("rotation (°)", fontsize=9)
    refs = np.array([f.reference for f in frames])[ok][o]
    if refs.any():
        ax_s.plot(xs[refs], np.zeros(refs.sum()), "*", color=INK, ms=10, zorder=6,
                  label="reference")
    fig.legend(*ax_s.get_legend_handles_labels(), loc="outside upper left", ncols=3,
               frameon=False, fontsize=9)
    for ax, vals in ((ax_s, np.concatenate([dx, dy])), (ax_r, rot)):
        _style(ax)
        _pad_ylim(ax, vals)
    ax_s.tick_params(labelbottom=False)
    _x_axis(ax_r, dated, x)
    # The drift path: where each frame's centre sits on the reference, coloured by time.
    ax_p.scatter(dx, dy, c=np.arange(len(dx)), cmap="viridis", s=16, zorder=3)
    ax_p.plot(dx, dy, "-", color=GRID, lw=0.8, zorder=2)
    ax_p.set_xlabel("x shift (px)", fontsize=9)
    ax_p.set_ylabel("y shift (px)", fontsize=9)
    ax_p.set_title("drift path (dark → light: early → late)", fontsize=9, color=MUTED)
    ax_p.invert_yaxis()  # image convention: y grows downwards
    ax_p.set_aspect("equal", adjustable="datalim")
    _style(ax_p)
    n_rej_reg = sum(1 for f in frames if f.used is False and not math.isfinite(f.dx))
    cap = ("Shift of each frame's centre onto the reference and the rotation of its transform"
           f"; {_n(len(reg), 'frame')} registered to the reference"
           + (f", {n_rej_reg} rejected before or at registration (red bands)"
              if n_rej_reg else "") + ".")
    return (f'<section id="registration"><h2>Registration: drift and rotation</h2>'
            f'{_fig_html(fig, "registration drift and rotation", cap)}</section>')


def _mark_rejected(ax: "Axes", xs: np.ndarray) -> None:
    for xv in xs:
        ax.axvline(xv, color=BAD, alpha=0.16, lw=6, zorder=0)


def _pad_ylim(ax: "Axes", vals: np.ndarray) -> None:
    v = np.asarray(vals, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        ax.set_ylim(0, 1)
        return
    lo, hi = float(v.min()), float(v.max())
    pad = 0.12 * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 0.5)
    ax.set_ylim(lo - pad, hi + pad)


def _x_axis(ax: "Axes", dated: bool, x: np.ndarray) -> None:
    """Time (or frame number) ticks and limits of the shared x axis."""
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    least = 2.0 / 1440 if dated else 2.0  # at least two minutes, or two frames, wide
    pad = 0.03 * (hi - lo) if hi - lo >= least else (least - (hi - lo)) / 2
    ax.set_xlim(lo - pad, hi + pad)
    if dated:
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        loc = AutoDateLocator(minticks=5, maxticks=12)
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(loc))
        ax.set_xlabel("time (UTC)", fontsize=9)
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("frame number (no DATE-OBS)", fontsize=9)


# ----------------------------------------------------------------------------------------------
# Trails
# ----------------------------------------------------------------------------------------------
def _trails_section(pipe: "Pipeline") -> str:
    found = [(sg, name, ts) for sg in pipe.stacks for name, ts in sg.trails.items() if ts]
    if not found:
        if any(sg.path is not None for sg in pipe.stacks) and pipe.cfg.integration.trails:
            return ('<section id="trails"><h2>Trails</h2><p class="muted">No satellite or '
                    'aircraft trail was found.</p></section>')
        return ""
    cards = []
    rows = []
    for sg, name, ts in found:
        rec = next((r for r in sg.records if r.name == name), None)
        for t in ts:
            rows.append((f'<span class="mono">{_e(name)}</span>', _e(sg.name),
                         f"({t.x0:.0f}, {t.y0:.0f}) – ({t.x1:.0f}, {t.y1:.0f})",
                         f"{math.hypot(t.x1 - t.x0, t.y1 - t.y0):.0f}", f"{t.width:.1f}",
                         f"{t.significance:.0f}"))
        if rec is None or len(cards) >= MAX_THUMBS:
            continue
        uri = _trail_thumbnail(sg, rec, ts, pipe.cfg.integration.trail_margin)
        if uri:
            cards.append(f'<figure class="thumb"><img alt="trail in {_e(name)}" src="{uri}">'
                         f'<figcaption><span class="mono">{_e(name)}</span> · '
                         f'{_n(len(ts), "trail")}</figcaption></figure>')
    more = len(found) - len(cards)
    note = (f'<p class="muted">{_n(more, "more frame")} with trails (listed below, not '
            f'drawn).</p>' if more > 0 else "")
    table = _table(["frame", "filter", "from – to (output px)", "length (px)", "width (px)",
                    "significance (σ)"], rows)
    return (f'<section id="trails"><h2>Trails found</h2>'
            f'<p class="muted">{_n(sum(len(ts) for _, _, ts in found), "trail")} in '
            f'{_n(len(found), "frame")}, masked before the rejection. Each is outlined on '
            f'the frame it was found in (binned luminance, stretched).</p>'
            f'<div class="grid">{"".join(cards)}</div>{note}{table}</section>')


def _trail_thumbnail(sg: "StackGroup", rec: "LightRecord", trails: Sequence[Any],
                     margin: float) -> str:
    import cv2

    low_path = Path(rec.analysis.lowres)
    if rec.registration is None or not rec.registration.ok or not low_path.exists():
        return ""
    f = rec.analysis.lowres_factor
    low = np.load(low_path).astype(np.float32, copy=False)
    gray = _stretch8(low[None])[0]
    h, w = gray.shape
    k = THUMB_SIZE / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    img = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    img = np.repeat(img[:, :, None], 3, axis=2)
    to_out = Transform.translation(-sg.origin[0], -sg.origin[1]) @ rec.registration.transform
    scale = 1.0 / f * k
    for t in trails:
        p = trail_in_frame(t, to_out, f)
        # Display pixel centres: binned pixel j spans [j - 0.5, j + 0.5] -> [k j, k (j + 1)].
        p = (p + 0.5) * k
        d = p[1] - p[0]
        n = np.array([-d[1], d[0]]) / max(1e-9, float(np.hypot(*d)))
        off = max(4.0, (t.radius + margin) * scale + 3.0)
        for sgn in (-1, 1):
            a, b = p[0] + sgn * off * n, p[1] + sgn * off * n
            cv2.line(img, _pt(a), _pt(b), (255, 70, 70), 1, cv2.LINE_AA, shift=4)
    return _png_uri(img)


def _pt(p: np.ndarray) -> tuple[int, int]:
    # Sub-pixel drawing: cv2 takes fixed-point coordinates with 4 fractional bits (shift=4);
    # keep them in range so far-off end points do not overflow.
    q = np.clip(np.asarray(p, float) - 0.5, -1e5, 1e5) * 16
    return int(round(q[0])), int(round(q[1]))


# ----------------------------------------------------------------------------------------------
# Rejection and coverage maps
# ----------------------------------------------------------------------------------------------
def _maps_section(pipe: "Pipeline") -> str:
    blocks = []
    for sg in pipe.stacks:
        if sg.path is None:
            continue
        src = _maps_file(sg.path)
        if src is None:
            blocks.append(f'<p class="muted">{_e(sg.path.name)}: no rejection maps (the file '
                          f'has no REJ_LOW/REJ_HIGH extensions).</p>')
            continue
        maps, totals, k = _read_maps(src)
        mh, mw = maps["COVERAGE"].shape
        fig = _figure(11, min(7.5, 3.0 * mh / max(1, mw) + 0.7))
        axes = fig.subplots(1, 3)
        titles = {"REJ_LOW": "rejected low", "REJ_HIGH": "rejected high",
                  "COVERAGE": "coverage (frames kept)"}
        for ax, key in zip(axes, ("REJ_LOW", "REJ_HIGH", "COVERAGE")):
            m = maps[key]
            cov = key == "COVERAGE"
            vmax = float(np.nanmax(m)) if cov else float(np.nanpercentile(m, 99.8))
            vmax = vmax if math.isfinite(vmax) and vmax > 0 else 1.0
            im = ax.imshow(m, cmap="viridis" if cov else "magma", vmin=0, vmax=vmax,
                           interpolation="nearest")
            ax.set_title(titles[key], fontsize=10, color=INK)
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
            cb.ax.tick_params(labelsize=8)
            cb.set_label("frames per pixel" if cov else "samples per pixel", fontsize=8,
                         color=MUTED)
            cb.outline.set_visible(False)
        tot_low, tot_high, kept = totals["REJ_LOW"], totals["REJ_HIGH"], totals["COVERAGE"]
        nch, cov_ch = int(totals["channels"]), int(totals["coverage_channels"])
        # COVERAGE may count one channel's kept samples only; every channel has the same
        # number of samples per pixel, so scale it to all of them.
        samples = max(1.0, kept * nch / cov_ch + tot_low + tot_high)
        notes = [f"{100 * tot_low / samples:.3f} % of the samples rejected low, "
                 f"{100 * tot_high / samples:.3f} % high"]
        if nch > 1:
            notes.append("rejections summed over the channels")
        if cov_ch > 1:
            notes.append("coverage averaged over the channels")
        if k > 1:
            notes.append(f"maps averaged over {k}×{k} px blocks")
        cap = (f"<b>{_e(sg.path.name)}</b> ({_e(sg.name or 'no filter')}, "
               f"{_n(len(sg.used), 'frame')}, {_e(sg.method)} rejection"
               + (f", maps from {_e(src.name)}" if src != sg.path else "") + "): "
               + "; ".join(notes) + ".")
        blocks.append(_fig_html(fig, f"rejection maps of {sg.path.name}", cap, raw_cap=True))
    if not blocks:
        return ""
    return ('<section id="maps"><h2>Rejection and coverage maps</h2>'
            + "".join(blocks) + "</section>")


def _maps_file(stack: Path) -> Path | None:
    """The stack file holding the maps (a drizzled stack keeps them in ``*_nodrizzle``)."""
    for p in (stack, stack.with_name(stack.stem + "_nodrizzle" + stack.suffix)):
        if p.exists() and {"REJ_LOW", "REJ_HIGH", "COVERAGE"} <= set(_extnames(p)):
            return p
    return None


def _extnames(path: Path) -> list[str]:
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdul:
        return [str(h.name).upper() for h in hdul]


def _read_maps(path: Path) -> tuple[dict[str, np.ndarray], dict[str, float], int]:
    """The REJ_LOW, REJ_HIGH (summed over channels) and COVERAGE (averaged over channels
    when it has several) maps of a stack file, block-averaged by ``k`` to about MAP_SIZE px;
    their totals over all pixels and channels, with ``"channels"``: the channels of the
    REJ maps, ``"coverage_channels"`` those of COVERAGE; and ``k``. Read in bands of rows:
    a big stack's maps never sit whole in memory."""
    from astropy.io import fits

    maps: dict[str, np.ndarray] = {}
    totals: dict[str, float] = {}
    # Sections read just the rows asked for (memmap cannot: the maps are scaled integers).
    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        h, w = hdul["COVERAGE"].shape[-2:]
        k = max(1, math.ceil(max(h, w) / MAP_SIZE))
        for key in ("REJ_LOW", "REJ_HIGH", "COVERAGE"):
            hdu = hdul[key]
            nch = hdu.shape[0] if len(hdu.shape) == 3 else 1
            step = k * max(1, (16 << 20) // max(1, 4 * nch * w * k))
            bands, total = [], 0.0
            for y0 in range(0, h, step):
                y1 = min(h, y0 + step)
                a = np.asarray(hdu.section[..., y0:y1, :], dtype=np.float32)
                total += float(a.sum(dtype=np.float64))
                if a.ndim == 3:
                    a = a.mean(axis=0) if key == "COVERAGE" else a.sum(axis=0)
                bands.append(_block_mean(a, k) if a.shape[0] >= k else a[:0, :w // k])
            maps[key] = np.concatenate(bands)
            totals[key] = total
            totals["coverage_channels" if key == "COVERAGE" else "channels"] = nch
    return maps, totals, k


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return a
    h, w = a.shape
    hh, ww = h // k * k, w // k * k
    if hh == 0 or ww == 0:
        return a
    return a[:hh, :ww].reshape(hh // k, k, ww // k, k).mean(axis=(1, 3))


# ----------------------------------------------------------------------------------------------
# Final image, histogram, per-filter previews
# ----------------------------------------------------------------------------------------------
def _final_section(final: _Final, result: "RunResult", pipe: "Pipeline") -> str:
    out = ['<section id="final"><h2>Final image</h2>']
    main = result.processed.get("main")
    if final.display is not None:
        out.append(_fig_html(_histogram(final.display), "histogram of the final image",
                             "Histogram of final.jpg (8-bit display values), per channel, "
                             "log scale."))
    if main is not None:
        files = ", ".join(f'<span class="mono">{_e(p.name)}</span>'
                          for p in main.paths.values())
        if main.info.get("reused"):
            out.append(f"<p>Post-processing reused from an earlier run (same stack, same "
                       f"settings): {files}.</p>")
        else:
            out.append(f"<p>Written: {files}.</p>")
            out.append("<details><summary>Processing recipe</summary><ol class=\"recipe\">"
                       + "".join(f"<li>{_e(r)}</li>" for r in main.recipe)
                       + "</ol></details>")
    previews = []
    by_file = {sg.path.name: sg for sg in pipe.stacks if sg.path is not None}
    for key, res in result.processed.items():
        if key == "main":
            continue
        sg = by_file.get(key)
        label = (sg.name if sg is not None and sg.name else key)
        jpeg = res.paths.get("jpeg")
        if jpeg is not None and Path(jpeg).exists():
            uri = _png_uri(_downsize(_read_rgb8(Path(jpeg)), PREVIEW_SIZE))
        elif sg is not None and sg.path is not None and sg.path.exists():
            uri = _png_uri(_stack_preview(sg.path, PREVIEW_SIZE))
        else:
            continue
        exp = f" · {duration(sg.exposure)}" if sg is not None and sg.exposure else ""
        previews.append(f'<figure class="thumb"><img alt="{_e(label)}" src="{uri}">'
                        f'<figcaption><b>{_e(label)}</b>{_e(exp)}</figcaption></figure>')
    if previews:
        out.append('<h3>Each filter\'s stack</h3><div class="grid">' + "".join(previews)
                   + "</div>")
    if len(out) == 1:
        out.append('<p class="muted">No final image was made.</p>')
    out.append("</section>")
    return "".join(out)


def _histogram(img: np.ndarray) -> "Figure":
    fig = _figure(11, 2.6)
    ax = fig.subplots()
    names = ("red", "green", "blue") if img.shape[2] == 3 else ("luminance",)
    colours = (BAD, "#2f9e44", "#1c7ed6") if img.shape[2] == 3 else (INK,)
    x = np.arange(256)
    for c, (name, col) in enumerate(zip(names, colours)):
        counts = np.bincount(img[:, :, c].ravel(), minlength=256).astype(float)
        counts[counts == 0] = np.nan
        ax.fill_between(x, counts, step="mid", color=col, alpha=0.12, lw=0)
        ax.step(x, counts, where="mid", color=col, lw=1.0, label=name)
    ax.set_yscale("log")
    ax.set_xlim(0, 255)
    ax.set_xlabel("display value (0–255)", fontsize=9)
    ax.set_ylabel("pixels", fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    _style(ax)
    return fig


def _read_rgb8(path: Path) -> np.ndarray:
    """An 8-bit image file as (H, W, C) uint8 (C = 3, or 1 for grey)."""
    from PIL import Image

    with Image.open(path) as im:
        mode = "L" if im.mode in ("L", "I;16", "I", "F") else "RGB"
        a = np.asarray(im.convert(mode))
    return a[:, :, None] if a.ndim == 2 else a


def _downsize(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    k = size / max(h, w)
    if k >= 1:
        return img
    out = cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))),
                     interpolation=cv2.INTER_AREA)
    return out[:, :, None] if out.ndim == 2 else out


def _stack_preview(path: Path, size: int) -> np.ndarray:
    """An auto-stretched (H, W, C) uint8 preview of a linear stack file."""
    from deepsky import io

    data = io.read(path).data
    planes = data[None] if data.ndim == 2 else data
    h, w = planes.shape[-2:]
    k = max(1, math.ceil(max(h, w) / size))
    small = np.stack([_block_mean(np.nan_to_num(p, nan=float(np.nanmedian(p))), k)
                      for p in planes])
    return np.moveaxis(_stretch8(small), 0, -1)


def _stretch8(planes: np.ndarray) -> np.ndarray:
    """A linked screen-transfer stretch of ``(C, H, W)`` linear data to uint8: black point at
    median - 2.8 MADN of the luminance, sky background at 0.2, white at its 99.95th
    percentile."""
    a = np.asarray(planes, dtype=np.float32)
    lum = a.mean(axis=0)
    v = lum[np.isfinite(lum)]
    if v.size == 0:
        return np.zeros(a.shape, np.uint8)
    med = float(np.median(v))
    madn = 1.4826 * float(np.median(np.abs(v - med)))
    lo = med - 2.8 * madn
    hi = float(np.percentile(v, 99.95))
    if not hi > lo:
        hi = lo + 1.0
    x = np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    m0 = min(max((med - lo) / (hi - lo), 1e-6), 0.999)
    t = 0.2
    mid = _mtf(t, m0)  # the midtones balance that sends the median to t
    y = _mtf(mid, x)
    return np.rint(np.clip(y, 0, 1) * 255).astype(np.uint8)


def _mtf(m: float, x: Any) -> Any:
    """The midtones transfer function (PixInsight): 0 -> 0, m -> 0.5, 1 -> 1."""
    return (m - 1) * x / ((2 * m - 1) * x - m)


# ----------------------------------------------------------------------------------------------
# Inventory, masters, settings, run
# ----------------------------------------------------------------------------------------------
def _inventory_section(pipe: "Pipeline") -> str:
    s = pipe.session
    if s is None:
        return ""
    rows = []
    for r in s.summary_rows():
        gain = r["gain"]
        if gain is None:
            gain_s = ""
        elif r["gain_kind"] == "ISO":
            gain_s = f"ISO {gain:g}"
        else:
            gain_s = f"{gain:g}"
        t0, t1 = r["temperature_min"], r["temperature_max"]
        temp = "" if t0 is None else (f"{t0:.1f} °C" if abs(t1 - t0) < 0.05
                                      else f"{t0:.1f} … {t1:.1f} °C")
        size = f"{r['width']} × {r['height']}" + (f" (bin {r['binning']})"
                                                   if r["binning"] != "1x1" else "")
        if r["channels"] == 3:
            size += ", RGB"
        exp = "" if r["exposure"] is None else f"{r['exposure']:g} s"
        rows.append((f'<span class="kind {r["type"]}">{_e(r["type"])}</span>',
                     _e(r["filter"] or ""), str(r["count"]), exp, _e(gain_s), temp, _e(size),
                     _e(r["bayer"] or "")))
    out = [f'<section id="session"><h2>Session</h2><p class="muted">'
           f'<span class="mono">{_e(str(s.root))}</span> ({_e(s.layout)} layout)</p>',
           _table(["type", "filter", "count", "exposure", "gain", "temperature", "size",
                   "Bayer"], rows, cls="num3")]
    if s.unclassified:
        out.append(f'<p class="muted">{len(s.unclassified)} file(s) could not be classified '
                   f'and were ignored.</p>')
    masters = pipe.plan.masters if pipe.plan else []
    out.append("<h3>Masters</h3>")
    if masters:
        mrows = []
        for m in masters:
            what = "pixels" if m.kind == "defects" else "frames"
            mrows.append((
                _e(m.kind), f'<span class="mono">{_e(m.name)}</span>',
                '<span class="pill reused">reused</span>' if m.reused
                else '<span class="pill built">built</span>',
                f"{m.n_frames} {what}", _e(m.method),
                "" if m.exposure is None else f"{m.exposure:g} s",
                "" if m.temperature is None else f"{m.temperature:.1f} °C",
                _e(m.filter or "")))
        out.append(_table(["kind", "file", "", "from", "method", "exposure", "temperature",
                           "filter"], mrows))
    else:
        out.append('<p class="muted">No calibration frames: the lights were used as they '
                   'are.</p>')
    out.append("</section>")
    return "".join(out)


def _settings_rows(cfg: Any, default: Any, prefix: str = ""
                   ) -> Iterable[tuple[str, Any, Any, str]]:
    """``(dotted key, value, default, description)`` of every leaf setting."""
    for f in dataclasses.fields(cfg):
        key = f"{prefix}.{f.name}" if prefix else f.name
        v, d = getattr(cfg, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(v):
            yield from _settings_rows(v, d, key)
        else:
            yield key, v, d, str(f.metadata.get("doc", ""))


def _settings_section(cfg: Config) -> str:
    rows = list(_settings_rows(cfg, Config()))
    changed = [r for r in rows if r[1] != r[2]]
    out = ['<section id="settings"><h2>Settings</h2>']
    if changed:
        out.append(f"<p>{_n(len(changed), 'setting')} differ"
                   f"{'s' if len(changed) == 1 else ''} from the defaults:</p>")
        out.append(_table(["setting", "value", "default", "what it does"],
                          [(f'<span class="mono">{_e(k)}</span>', f"<b>{_e(_val(v))}</b>",
                            _e(_val(d)), _e(doc)) for k, v, d, doc in changed],
                          cls="settings"))
    else:
        out.append('<p>All settings at their defaults.</p>')
    sections: dict[str, list[tuple[str, Any, Any, str]]] = {}
    for r in rows:
        sections.setdefault(r[0].split(".")[0], []).append(r)
    body = []
    for name, rs in sections.items():
        body.append(f"<h4>{_e(name)}</h4>" + _table(
            ["setting", "value", "what it does"],
            [(f'<span class="mono">{_e(k)}</span>',
              f"<b>{_e(_val(v))}</b>" if v != d else _e(_val(v)), _e(doc))
             for k, v, d, doc in rs], cls="settings"))
    out.append(f"<details><summary>All {len(rows)} settings</summary>{''.join(body)}"
               "</details></section>")
    return "".join(out)


def _val(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if v is None:
        return "–"
    return str(v)


def _run_section(pipe: "Pipeline", record: dict[str, Any]) -> str:
    out = ['<section id="run"><h2>Run</h2><div class="cols">']
    timings = dict(record.get("timings_s") or pipe.reporter.timings)
    if timings:
        top = max(timings.values()) or 1.0
        rows = [(_e(k), f"{v:.2f} s",
                 f'<div class="bar" style="width:{max(1.0, 100 * v / top):.1f}%"></div>')
                for k, v in timings.items()]
        wall = record.get("wall_s")
        cap = f" (whole run {duration(float(wall))})" if wall is not None else ""
        out.append(f"<div><h3>Timings{_e(cap)}</h3>"
                   + _table(["stage", "time", ""], rows, cls="timings") + "</div>")
    counts = dict(pipe.counts)
    side = []
    if counts:
        side.append("<h3>Counts</h3>" + _table(
            ["", ""], [(_e(k.replace("_", " ")), str(v)) for k, v in counts.items()],
            cls="kv"))
    vers = record.get("versions")
    if vers is None:
        from deepsky.pipeline.run import versions

        vers = versions()
    machine = record.get("machine") or {}
    extra = [("backend", record.get("backend", "")),
             ("workers", machine.get("cpus", "")), ("platform", machine.get("platform", ""))]
    side.append("<h3>Versions</h3>" + _table(
        ["", ""], [(_e(k), f'<span class="mono">{_e(str(v))}</span>')
                   for k, v in list(vers.items()) + extra if v != ""], cls="kv"))
    out.append("<div>" + "".join(side) + "</div></div>")
    stacks = [sg for sg in pipe.stacks if sg.path is not None]
    if stacks:
        rows = [(f'<span class="mono">{_e(sg.path.name)}</span>', _e(sg.name or "–"),
                 f"{len(sg.used)} / {len(sg.records)}", duration(sg.exposure) if sg.exposure
                 else "–", _e(sg.method), f"{sg.shape[1]} × {sg.shape[0]}",
                 "colour" if sg.channels == 3 else "mono",
                 str(sum(len(v) for v in sg.trails.values())))
                for sg in stacks]
        out.append("<h3>Stacks</h3>" + _table(
            ["file", "filter", "frames", "integration", "rejection", "size", "", "trails"],
            rows))
    out.append("</section>")
    return "".join(out)


def _generated(record: dict[str, Any]) -> str:
    from deepsky import __version__

    started = record.get("started", "")
    return (f"Made by deepsky {__version__}" + (f"; run started {started}" if started else "")
            + f"; session {record.get('session', '')}.")


# ----------------------------------------------------------------------------------------------
# Small helpers: figures, images, HTML
# ----------------------------------------------------------------------------------------------
def _figure(w: float, h: float) -> "Figure":
    from matplotlib.figure import Figure

    # A Figure of its own (no pyplot): no global state, safe from any thread.
    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def _style(ax: "Axes") -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9ca3af")
    ax.tick_params(labelsize=8, colors="#4b5563")
    ax.grid(True, color=GRID, lw=0.6)
    ax.set_axisbelow(True)


def _fig_png(fig: "Figure") -> bytes:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def _fig_html(fig: "Figure", alt: str, caption: str, *, raw_cap: bool = False) -> str:
    uri = "data:image/png;base64," + base64.b64encode(_fig_png(fig)).decode("ascii")
    cap = caption if raw_cap else _e(caption)
    return (f'<figure class="plot"><img alt="{_e(alt)}" src="{uri}">'
            f'<figcaption>{cap}</figcaption></figure>')


def _png_uri(img: np.ndarray) -> str:
    """A (H, W, C) or (H, W) uint8 image as a PNG data URI."""
    from PIL import Image

    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    buf = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _n(count: int, noun: str) -> str:
    """``_n(1, "frame")`` -> ``"1 frame"``, ``_n(3, "frame")`` -> ``"3 frames"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "") -> str:
    """An HTML table; ``rows`` hold HTML (escape text before)."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    c = f' class="{cls}"' if cls else ""
    return f'<div class="tablewrap"><table{c}><thead><tr>{th}</tr></thead><tbody>{body}' \
           f'</tbody></table></div>'


_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="deepsky">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}
</body>
</html>
"""

_CSS = """
:root { --ink:#1d2330; --muted:#6b7280; --line:#e5e7eb; --bg:#f4f5f7; --card:#ffffff;
  --accent:#2f6fde; --bad:#e03131; --warn:#f08c00; --ok:#2f9e44; --night:#0d1117; }
* { box-sizing: border-box; }
html { scroll-behavior: smooth; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  "Noto Sans", sans-serif; -webkit-font-smoothing: antialiased; }
.wrap { max-width: 1220px; margin: 0 auto; padding: 0 28px; }
header.top { background: var(--night); color: #e6edf3; padding: 30px 0 22px; }
.brand { font-size: 12px; letter-spacing: .16em; text-transform: uppercase; color: #7d8590; }
h1 { font-size: 34px; line-height: 1.15; font-weight: 650; margin: 6px 0 6px;
  letter-spacing: -.015em; }
.sub { color: #9da7b3; font-size: 15px; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px;
  margin-top: 22px; }
.stat { background: rgba(255,255,255,.06); border: 1px solid rgba(255,255,255,.08);
  border-radius: 10px; padding: 10px 14px; }
.stat .k { font-size: 11px; letter-spacing: .08em; text-transform: uppercase; color: #8b949e; }
.stat .v { font-size: 21px; font-weight: 600; font-variant-numeric: tabular-nums;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.stat.bad .v { color: #ff6b6b; } .stat.warn .v { color: #fcc419; }
.hero { background: var(--night); padding: 4px 0 30px; }
.hero figure { margin: 0; text-align: center; }
.hero img { display: block; margin: 0 auto; max-width: 100%; max-height: 88vh;
  object-fit: contain; border-radius: 6px; box-shadow: 0 10px 40px rgba(0,0,0,.5); }
.hero figcaption { color: #7d8590; font-size: 12px; margin-top: 10px; }
.noimg { color: #9da7b3; padding: 40px 0; text-align: center; }
nav { display: flex; flex-wrap: wrap; gap: 4px 18px; padding: 14px 0 4px; font-size: 14px; }
nav a { color: var(--muted); text-decoration: none; border-bottom: 1px solid transparent; }
nav a:hover { color: var(--accent); border-color: var(--accent); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  padding: 20px 26px 22px; margin: 18px 0; box-shadow: 0 1px 2px rgba(16,24,40,.04); }
h2 { font-size: 20px; font-weight: 650; margin: 0 0 12px; letter-spacing: -.01em; }
h3 { font-size: 15px; font-weight: 650; margin: 20px 0 8px; }
h4 { font-size: 13px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted);
  margin: 18px 0 6px; }
p { margin: 6px 0 10px; }
.muted { color: var(--muted); }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
  monospace; font-size: 12.5px; }
figure { margin: 0; }
figure.plot img { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin: 6px 2px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr));
  gap: 16px; margin: 12px 0; }
figure.thumb { background: #f8f9fb; border: 1px solid var(--line); border-radius: 10px;
  padding: 8px; }
figure.thumb img { display: block; width: 100%; height: auto; border-radius: 6px;
  background: #000; }
.tablewrap { overflow-x: auto; margin: 8px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px;
  font-variant-numeric: tabular-nums; }
th { text-align: left; font-size: 11px; font-weight: 600; letter-spacing: .06em;
  text-transform: uppercase; color: var(--muted); padding: 6px 10px;
  border-bottom: 1px solid var(--line); white-space: nowrap; }
td { padding: 6px 10px; border-bottom: 1px solid #eef0f3; vertical-align: top; }
tbody tr:hover td { background: #fafbfc; }
table.kv td:first-child { color: var(--muted); width: 40%; }
table.kv thead, table.timings thead { display: none; }
table.timings td:last-child { width: 55%; }
table.settings td:first-child { white-space: nowrap; }
table.rejected td:nth-child(2), table.rejected td:nth-child(4) { white-space: nowrap; }
.bar { height: 8px; border-radius: 4px; background: linear-gradient(90deg, #4c8bf5,
  var(--accent)); margin-top: 6px; }
.alert { border-left: 4px solid; border-radius: 8px; padding: 12px 16px; margin: 12px 0; }
.alert ul { margin: 6px 0 0; padding-left: 20px; }
.alert table { background: transparent; }
.alert tbody tr:hover td { background: transparent; }
.alert.bad { border-color: var(--bad); background: #fff5f5; }
.alert.warn { border-color: var(--warn); background: #fff9db; }
.alert.ok { border-color: var(--ok); background: #ebfbee; }
.pill { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px;
  font-weight: 600; vertical-align: middle; }
.pill.built { background: #e7f5ff; color: #1864ab; }
.pill.reused { background: #f3f0ff; color: #5f3dc4; }
.pill.bad { background: #e03131; color: #fff; font-size: 13px; }
.kind { font-weight: 600; }
.kind.light { color: #e8590c; } .kind.dark { color: #495057; } .kind.flat { color: #1c7ed6; }
.kind.bias { color: #7048e8; } .kind.darkflat { color: #0c8599; }
.cols { display: grid; grid-template-columns: 1.3fr 1fr; gap: 28px; }
@media (max-width: 860px) { .cols { grid-template-columns: 1fr; } h1 { font-size: 26px; } }
details { margin-top: 12px; }
details summary { cursor: pointer; color: var(--accent); font-weight: 600; }
ol.recipe { font-size: 13px; color: #374151; }
footer { color: var(--muted); font-size: 12px; padding: 10px 28px 40px; }
@media print { .hero { background: #fff; } nav { display: none; } section { break-inside: avoid; } }
"""
