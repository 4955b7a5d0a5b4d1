"""report.html: written by every run, self-contained, and showing what matters.

One small simulated colour session (6 lights: a satellite trail in light 3, clouds on light 5)
is run once for the module; the tests read its report. A real browser (headless Chromium)
renders it when one is installed.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from deepsky.config import Config, load_config
from deepsky.errors import RegistrationError
from deepsky.pipeline.progress import Reporter
from deepsky.pipeline.report import (REPORT_NAME, centre_shift, duration, trail_in_frame,
                                     write_report)
from deepsky.pipeline.run import run_pipeline
from deepsky.types import Transform

SPEC = dict(n_lights=6, satellite_frames=(2,), cloudy_frames=(4,))
NON_DEFAULT = "postprocess.export.tiff=false"  # also spares the run a file
PNG_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def _find_chromium() -> str | None:
    for c in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if c and os.access(c, os.X_OK):
            return c
    return None


CHROMIUM = _find_chromium()


@pytest.fixture(scope="module")
def run(simulated_session, tmp_path_factory):
    sim = simulated_session(**SPEC)
    out = tmp_path_factory.mktemp("report") / "out"
    res = run_pipeline(sim.path, out, load_config(overrides=[NON_DEFAULT]),
                       reporter=Reporter(quiet=True))
    page = (out / REPORT_NAME).read_text(encoding="utf-8")
    return sim, res, out, page


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Tags()
    p.feed(page)
    return p.tags


def _section(page: str, ident: str) -> str:
    start = page.index(f'<section id="{ident}">')
    return page[start:page.index("</section>", start)]


# ----------------------------------------------------------------------------------------------
# The file
# ----------------------------------------------------------------------------------------------
def test_report_is_written_atomically_and_listed(run):
    _, res, out, _ = run
    path = out / REPORT_NAME
    assert path in res.outputs
    # atomic_path writes ".report.<random>.tmp.html" beside it, then renames.
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or ".tmp" in p.name]


def test_report_is_self_contained(run):
    *_, page = run
    assert 'src="http' not in page and "<link" not in page and "<script" not in page
    assert "@import" not in page and "url(" not in page
    assert "http://" not in page and "https://" not in page
    for tag, attrs in _tags(page):
        if "src" in attrs:
            assert attrs["src"].startswith("data:image/png;base64,"), tag
        if "href" in attrs:
            assert attrs["href"].startswith("#"), attrs["href"]


def test_report_embeds_valid_pngs_and_stays_small(run):
    from PIL import Image

    *_, page = run
    uris = PNG_URI.findall(page)
    # final image, quality plot, registration plot, trail thumbnail, maps, histogram
    assert len(uris) >= 6
    for u in uris:
        with Image.open(io.BytesIO(base64.b64decode(u))) as im:
            assert im.format == "PNG"
            im.verify()
    assert len(page.encode()) < 4_000_000


def test_report_header_says_what_was_stacked(run):
    _, res, _, page = run
    header = page[:page.index('<main')]
    assert "Simulated Field" in header  # OBJECT of the lights
    assert "5 / 6" in header  # frames used / total
    assert "5 min" in header  # 5 x 60 s
    assert "2024-03-15" in header
    # The final image comes first, before every section.
    assert 'alt="final image"' in header


# ----------------------------------------------------------------------------------------------
# What it shows
# ----------------------------------------------------------------------------------------------
def test_rejected_frame_and_its_reason_come_first(run):
    _, res, _, page = run
    rejected = [r for r in res.pipeline.records if not r.used]
    assert [r.name for r in rejected] == ["Light_0005_60s.fits"]
    attention = _section(page, "attention")
    assert "Light_0005_60s.fits" in attention
    assert html.escape(rejected[0].reason) in attention
    # Before the plots: not buried.
    assert page.index('id="attention"') < page.index('id="quality"')


def test_trail_frame_is_drawn(run):
    _, res, _, page = run
    trails = _section(page, "trails")
    assert "Light_0003_60s.fits" in trails
    assert 'alt="trail in Light_0003_60s.fits"' in trails
    assert len(PNG_URI.findall(trails)) == 1


def test_plots_and_maps_are_present(run):
    *_, page = run
    for ident in ("quality", "registration", "maps", "final"):
        assert len(PNG_URI.findall(_section(page, ident))) >= 1, ident
    assert "% of the samples rejected low" in _section(page, "maps")


def test_inventory_masters_settings_and_timings(run):
    import dataclasses

    *_, page = run
    session = _section(page, "session")
    for kind in ("light", "dark", "flat", "bias"):
        assert f'<span class="kind {kind}">{kind}</span>' in session
    assert "master_bias" in session and "built" in session
    settings = _section(page, "settings")
    changed = settings[:settings.index("<details>")]
    assert "postprocess.export.tiff" in changed  # the one non-default setting, first
    assert "integration.rejection" not in changed

    def leaves(obj, prefix=""):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            key = f"{prefix}{f.name}"
            yield from leaves(v, key + ".") if dataclasses.is_dataclass(v) else [key]

    every = settings[settings.index("<details>"):]
    for key in leaves(Config()):
        assert f">{key}<" in every, key
    run_part = _section(page, "run")
    for stage in ("masters", "analyze", "register", "postprocess"):
        assert f"<td>{stage}</td>" in run_part
    assert "numpy" in run_part


# ----------------------------------------------------------------------------------------------
# The geometry behind the drawings and plots
# ----------------------------------------------------------------------------------------------
def test_trail_lands_on_the_injected_satellite_in_the_frame(run):
    sim, res, _, _ = run
    sg = res.pipeline.stacks[0]
    rec = next(r for r in sg.records if r.name == "Light_0003_60s.fits")
    (trail,) = sg.trails[rec.name]
    to_out = Transform.translation(-sg.origin[0], -sg.origin[1]) @ rec.registration.transform
    f = rec.analysis.lowres_factor
    binned = trail_in_frame(trail, to_out, f)
    full = binned * f + (f - 1) / 2
    sat = sim.truth.lights[2].satellite
    d = np.array([sat.x1 - sat.x0, sat.y1 - sat.y0])
    normal = np.array([-d[1], d[0]]) / np.hypot(*d)
    off = (full - [sat.x0, sat.y0]) @ normal
    assert_allclose(np.abs(off), 0.0, atol=3.0)  # both ends on the true line, frame pixels


def test_drift_is_the_frame_centre_shift_onto_the_reference(run):
    sim, res, _, _ = run
    recs = res.pipeline.records
    ref = next(i for i, r in enumerate(recs) if r.registration is not None
               and r.registration.method == "reference")
    w, h = recs[0].meta.width, recs[0].meta.height
    for i, r in enumerate(recs):
        if r.registration is None or not r.registration.ok:
            continue
        truth = sim.truth.transform(ref).inverse() @ sim.truth.transform(i)
        assert_allclose(np.abs(np.subtract(centre_shift(r.registration.transform, w, h),
                                           centre_shift(truth, w, h))), 0.0, atol=0.5)


def test_centre_shift_and_binned_trail_by_hand():
    t = Transform.rotation_about(90.0, 49.5, 29.5) @ Transform.translation(3.0, -2.0)
    dx, dy = centre_shift(t, 100, 60)
    assert_allclose(np.abs(np.subtract((dx, dy), t.apply([[49.5, 29.5]])[0] - [49.5, 29.5])),
                    0, atol=1e-9)

    class T:  # a trail along the output row y = 10, x from 4 to 20
        x0, y0, x1, y1 = 4.0, 10.0, 20.0, 10.0

    # Output grid origin (5, 7) in reference pixels; the frame is the reference.
    to_out = Transform.translation(-5, -7)
    p = trail_in_frame(T, to_out, 4)
    # frame pixel (9, 17) -> bin (9 - 1.5) / 4
    assert_allclose(np.abs(p - [[(9 - 1.5) / 4, (17 - 1.5) / 4], [(25 - 1.5) / 4,
                                                                    (17 - 1.5) / 4]]), 0,
                    atol=1e-12)


def test_duration_reads_naturally():
    assert duration(45) == "45 s"
    assert duration(540) == "9 min"
    assert duration(5400) == "1 h 30 min"
    assert duration(3600) == "1 h"
    assert duration(320) == "5 min 20 s"


# ----------------------------------------------------------------------------------------------
# Runs that stop early, and the public function
# ----------------------------------------------------------------------------------------------
def test_report_of_a_run_where_every_light_is_rejected(simulated_session, tmp_path):
    sim = simulated_session(**SPEC)
    out = tmp_path / "out"
    with pytest.raises(RegistrationError, match="every light was rejected"):
        run_pipeline(sim.path, out, load_config(overrides=["selection.min_stars=100000"]),
                     reporter=Reporter(quiet=True))
    page = (out / REPORT_NAME).read_text(encoding="utf-8")
    attention = _section(page, "attention")
    assert "stopped early" in page and "every light was rejected" in attention
    assert "6 of 6 frames rejected" in attention
    for i in range(1, 7):
        assert f"Light_000{i}_60s.fits" in attention
    assert "need 100000" in attention
    assert "No image" in page


def test_write_report_returns_its_path(run, tmp_path):
    _, res, _, _ = run
    target = tmp_path / "elsewhere" / "r.html"
    assert write_report(res.pipeline, res, target) == target
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in target.parent.iterdir()] == ["r.html"]


# ----------------------------------------------------------------------------------------------
# A real browser
# ----------------------------------------------------------------------------------------------
def _chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp / 'profile'}", "--hide-scrollbars",
           "--enable-logging=stderr", "--v=0", *extra, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None,
                    reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_a_browser(run, tmp_path):
    from PIL import Image

    *_, out, page = run
    report = out / REPORT_NAME
    shot = tmp_path / "shot.png"
    # One start: the screenshot to the file, the rendered DOM to stdout.
    r = _chromium(report, tmp_path, "--window-size=1400,3000", f"--screenshot={shot}",
                  "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines()
              if "Uncaught" in ln or ("CONSOLE" in ln and "error" in ln.lower())
              or "net::ERR" in ln]
    assert not errors, errors
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1400, 3000)
        rgb = np.asarray(im.convert("RGB"))
    # The style sheet applied: the header band is the night colour (#0d1117).
    assert_allclose(np.abs(rgb[8, 8].astype(int) - [13, 17, 23]), 0, atol=2)

    def colours(a):
        a = a.reshape(-1, 3).astype(np.int32)
        return len(np.unique(a[:, 0] << 16 | a[:, 1] << 8 | a[:, 2]))

    # The final image (a photograph) in the header band and the plots below it rendered.
    assert colours(rgb[200:700, 300:1100]) > 3000
    below = rgb[900:3000]
    assert colours(below) > 4000  # about 1600 with the images left out
    # the rejected-frame red of the alert box and the plots
    assert (np.abs(below.astype(int) - [224, 49, 49]).max(axis=-1) < 12).sum() > 50

    rendered = r.stdout
    assert len(PNG_URI.findall(rendered)) == len(PNG_URI.findall(page))
    for ident in ("attention", "quality", "registration", "trails", "maps", "final",
                  "session", "settings", "run"):
        assert f'id="{ident}"' in rendered, ident
