"""Bad input through ``deepsky run``: every case ends as a demanding user expects.

Either the bad frame is skipped, with its reason in frames.csv, and the run goes on (the rest
of the session is fine), or nothing sensible can be made and the run stops with one line on
stderr naming the file (or setting) and the problem, and exit code 2. docs/reliability.md
has the table of cases. Runs are in-process (``deepsky.cli.main``) on a small simulated
session; only the permission cases need a subprocess (capabilities are dropped there when
the tests run as root, who reads and writes whatever the modes say).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from deepsky.cli import main
from deepsky.errors import InputError, RegistrationError
from deepsky.io import read
from deepsky.io.discover import discover

SPEC = dict(width=256, height=256, bayer=None, n_lights=4, n_darks=3, n_flats=3, n_biases=3,
            seed=23)
FAST = ["--set", "postprocess.deconvolution.enabled=false",
        "--set", "postprocess.denoise.enabled=false", "--set", "run.workers=2"]
KINDS = ("lights", "darks", "flats", "biases")


@dataclass
class Outcome:
    rc: int
    err: list[str]  # stderr lines
    out: Path

    @property
    def rows(self) -> dict[str, dict[str, str]]:
        with open(self.out / "frames.csv", newline="", encoding="utf-8") as fh:
            return {r["file"]: r for r in csv.DictReader(fh)}

    @property
    def warnings(self) -> list[str]:
        return [line[len("warning: "):] for line in self.err if line.startswith("warning: ")]

    def stacked(self, name: str = "stack.fits") -> int:
        return int(fits.getval(self.out / name, "NCOMBINE"))


def deepsky_run(capsys, session: Path, out: Path, *extra: str, quiet: bool = True) -> Outcome:
    capsys.readouterr()
    rc = main(["run", str(session), "-o", str(out), *(["-q"] if quiet else []), *FAST, *extra])
    return Outcome(rc, capsys.readouterr().err.strip().splitlines(), out)


def assert_error(res: Outcome, pattern: str) -> None:
    """Exit code 2 and a single line on stderr (quiet run) that matches ``pattern``."""
    import re

    assert res.rc == 2, res.err
    assert len(res.err) == 1, res.err
    assert re.fullmatch(r"deepsky: error: " + pattern, res.err[0]), res.err[0]


@pytest.fixture(autouse=True)
def _quick_report(request, monkeypatch):
    """The HTML report (matplotlib: most of a small run's time, tested in test_report.py) is
    a stub here, except in the tests that ask for ``real_report``."""
    if "real_report" in request.fixturenames:
        return
    from deepsky.io.atomic import write_text

    def stub(pipe, result, path, error=None):
        write_text(path, "<html><body>report stub</body></html>")
        return path

    monkeypatch.setattr("deepsky.pipeline.report.write_report", stub)


@pytest.fixture
def real_report() -> None:
    """Ask for the real HTML report."""


@pytest.fixture(scope="module")
def base(simulated_session):
    return simulated_session(**SPEC).path


@pytest.fixture
def session(base, tmp_path) -> Path:
    """A fresh copy of the small mono session (frames only)."""
    dst = tmp_path / "session"
    for k in KINDS:
        shutil.copytree(base / k, dst / k)
    return dst


def lights(session: Path) -> list[Path]:
    return sorted((session / "lights").rglob("*.fits"))


def rewrite(path: Path, data: np.ndarray | None = None, **cards) -> None:
    """Rewrite a FITS frame with new pixels and/or header cards (None removes a card)."""
    with fits.open(path) as h:
        hdr = h[0].header.copy()
        old = h[0].data.copy()
    arr = old if data is None else data
    if arr.dtype.kind == "f":
        for k in ("BZERO", "BSCALE", "BLANK"):
            hdr.remove(k, ignore_missing=True)
    for k, v in cards.items():
        if v is None:
            hdr.remove(k, ignore_missing=True)
        else:
            hdr[k] = v
    path.unlink()
    fits.writeto(path, arr, hdr)


def edit_card(path: Path, index: int, card: str) -> None:
    """Overwrite the 80-byte header card number ``index`` with raw text."""
    b = bytearray(path.read_bytes())
    b[index * 80:(index + 1) * 80] = card.ljust(80).encode()
    path.write_bytes(bytes(b))


# ----------------------------------------------------------------------------------------------
# A bad light is skipped with its reason; the run goes on
# ----------------------------------------------------------------------------------------------
def _skipped(capsys, session: Path, tmp_path: Path, name: str, reason: str,
             used: int = 3) -> Outcome:
    import re

    res = deepsky_run(capsys, session, tmp_path / "out")
    assert res.rc == 0, res.err
    row = res.rows[name]
    assert row["status"] == "rejected"
    assert re.fullmatch(reason, row["reason"]), row["reason"]
    assert sum(r["status"] == "used" for r in res.rows.values()) == used
    assert res.stacked() == used
    return res


def test_truncated_fits_light(capsys, session, tmp_path):
    p = lights(session)[1]
    p.write_bytes(p.read_bytes()[:5000])
    _skipped(capsys, session, tmp_path, p.name, r"unreadable: truncated file: the header "
             r"announces 131072 bytes of pixel data, only 2120 are present")


def test_zero_byte_light(capsys, session, tmp_path):
    p = lights(session)[1]
    p.write_bytes(b"")
    _skipped(capsys, session, tmp_path, p.name, r"unreadable: empty file \(0 bytes\)")


@pytest.mark.parametrize(("index", "card", "reason"), [
    (1, "BITPIX  =                   12", r"not a readable FITS file \(.+\)"),
    (2, "NAXIS   =                    5", r"not a readable FITS file \(header keyword NAXIS3 "
                                          r"is missing\)"),
    (2, "NAXIS   =            999999999", r"not a readable FITS file \(NAXIS = 999999999: at "
                                          r"most 999 axes\)"),
])
def test_fits_light_with_a_wrong_header(capsys, session, tmp_path, index, card, reason):
    p = lights(session)[1]
    edit_card(p, index, card)
    _skipped(capsys, session, tmp_path, p.name, "unreadable: " + reason)


def test_text_file_named_fits(capsys, session, tmp_path):
    (session / "lights" / "notes.fits").write_text("exposure notes, not an image\n" * 40)
    res = _skipped(capsys, session, tmp_path, "notes.fits", r"unreadable: not a readable FITS "
                   r"file \(it does not start with a SIMPLE card\)", used=4)
    assert len(res.rows) == 5


def test_raw_file_libraw_cannot_open(capsys, session, tmp_path):
    (session / "lights" / "IMG_0001.CR2").write_bytes(bytes(range(256)) * 40)
    _skipped(capsys, session, tmp_path, "IMG_0001.CR2", r"unreadable: not a camera RAW file "
             r"LibRaw can read \(unsupported format, or not a RAW file\)", used=4)


def test_all_zero_light(capsys, session, tmp_path):
    p = lights(session)[2]
    rewrite(p, np.zeros((256, 256), np.uint16))
    _skipped(capsys, session, tmp_path, p.name, r"blank frame: every pixel is 0")


def test_saturated_lights(capsys, session, tmp_path):
    full, most = lights(session)[1], lights(session)[2]
    rewrite(full, np.full((256, 256), 65535, np.uint16))
    data = read(most).data.astype(np.uint16)
    data[:180] = 65535
    rewrite(most, data)
    res = _skipped(capsys, session, tmp_path, full.name,
                   r"blank frame: every pixel is 65535 \(the white level: saturated\)", used=2)
    assert res.rows[most.name]["reason"] == ("saturated: 70% of the pixels are at the white "
                                             "level 65535")


def test_nan_and_inf_pixels(capsys, session, tmp_path):
    """NaN and infinite pixels are missing samples: the frame is used, the stack is finite
    (an infinity used to spread through the interpolation into NaN holes of the stack)."""
    p, q = lights(session)[1], lights(session)[2]
    data = read(p).data
    data[10:20] = np.nan
    data[50, 50], data[60, 60] = np.inf, -np.inf
    rewrite(p, data)
    rewrite(q, np.full((256, 256), np.nan, np.float32))
    res = _skipped(capsys, session, tmp_path, q.name,
                   r"no valid pixels: every pixel is NaN or infinite")
    assert res.rows[p.name]["status"] == "used"
    assert np.isfinite(read(res.out / "stack.fits").data).all()
    assert np.isfinite(read(res.out / "final_linear.fits").data).all()


def test_light_without_stars_clouds(simulated_session, capsys, tmp_path):
    sim = simulated_session(**{**SPEC, "n_lights": 5, "cloudy_frames": (2,),
                               "cloudy_transparency": 0.05})
    res = deepsky_run(capsys, sim.path, tmp_path / "out")
    assert res.rc == 0, res.err
    cloudy = res.rows[sim.files("light")[2].name]
    assert cloudy["status"] == "rejected"
    assert cloudy["reason"].startswith(("no stars: ", "clouds: ")), cloudy["reason"]
    assert res.stacked() == 4


def test_unreadable_light_is_listed_with_its_reason(base, tmp_path):
    """Lights discovery cannot read are rows of frames.csv (rejected, with the reason), so
    that every light the user gave is accounted for; run.json lists them too."""
    import json

    from deepsky.config import load_config
    from deepsky.pipeline.progress import Reporter
    from deepsky.pipeline.run import run_pipeline

    session = tmp_path / "s"
    for k in KINDS:
        shutil.copytree(base / k, session / k)
    bad = lights(session)[0]
    bad.write_bytes(b"")
    s = discover(session)
    assert [(u.path.name, u.kind, u.reason) for u in s.unreadable] == [
        (bad.name, "light", "empty file (0 bytes)")]
    cfg = load_config(overrides=FAST[1::2])
    res = run_pipeline(session, tmp_path / "out", cfg, reporter=Reporter(quiet=True))
    rec = json.loads((tmp_path / "out" / "run.json").read_text())
    assert rec["frames"]["total"] == 4 and rec["frames"]["used"] == 3
    assert rec["frames"]["rejected"] == {bad.name: "unreadable: empty file (0 bytes)"}
    assert res.record["frames"] == rec["frames"]


# ----------------------------------------------------------------------------------------------
# Sessions that are odd as a whole
# ----------------------------------------------------------------------------------------------
def test_lights_of_mixed_binning_make_one_stack_per_geometry(capsys, session, tmp_path):
    """Each geometry is its own group; the stacks get distinct names (before, both groups
    wrote stack_L.fits and the second overwrote the first)."""
    for p in lights(session)[2:]:
        rewrite(p, XBINNING=2, YBINNING=2)
    res = deepsky_run(capsys, session, tmp_path / "out", quiet=False)
    assert res.rc == 0, res.err
    assert any(w.startswith("lights have mixed sizes: 2 of 256x256 bin 1x1, 2 of 256x256 bin "
                            "2x2; each size is processed as its own group") for w in res.warnings)
    assert res.stacked("stack_L_256x256.fits") == 2
    assert res.stacked("stack_L_256x256_bin2x2.fits") == 2
    assert len(res.rows) == 4
    assert (res.out / "final.jpg").exists()
    assert (res.out / "processed_L_256x256_bin2x2" / "final.jpg").exists()


def test_lights_of_mixed_sizes(capsys, session, tmp_path):
    odd = lights(session)[3]
    rewrite(odd, read(odd).data[:128, :160].astype(np.uint16))
    res = deepsky_run(capsys, session, tmp_path / "out", quiet=False)
    assert res.rc == 0, res.err
    assert any("lights have mixed sizes: 3 of 256x256 bin 1x1, 1 of 160x128 bin 1x1" in w
               for w in res.warnings)
    assert len(res.rows) == 4
    used = sum(r["status"] == "used" for r in res.rows.values())
    stacks = sorted(p.name for p in res.out.glob("stack*.fits"))
    assert sum(res.stacked(n) for n in stacks) == used
    assert "stack_L_256x256.fits" in stacks or stacks == ["stack.fits"]


def test_calibration_frames_of_another_size(capsys, session, tmp_path):
    for p in (session / "darks").glob("*.fits"):
        rewrite(p, read(p).data[:128, :128].astype(np.uint16))
    res = deepsky_run(capsys, session, tmp_path / "out", quiet=False)
    assert res.rc == 0, res.err
    assert any(w.startswith("3 dark frame(s) match no lights in size/binning (e.g. ")
               and w.endswith(": 128x128 bin 1x1) and will not be used") for w in res.warnings)
    assert any(w.startswith("no dark matches the size/binning of lights") for w in res.warnings)
    assert res.stacked() == 4


def test_single_light(capsys, session, tmp_path):
    for p in lights(session)[1:]:
        p.unlink()
    res = deepsky_run(capsys, session, tmp_path / "out")
    assert res.rc == 0, res.err
    assert [r["status"] for r in res.rows.values()] == ["used"]
    assert res.stacked() == 1
    assert (res.out / "final.tif").exists()


def test_all_lights_rejected(capsys, session, tmp_path, real_report):
    res = deepsky_run(capsys, session, tmp_path / "out", "--set", "selection.min_stars=100000")
    assert_error(res, r"every light was rejected; see frames\.csv for the reasons")
    assert len(res.rows) == 4
    for r in res.rows.values():
        assert r["status"] == "rejected"
        assert r["reason"].startswith("no stars: ") and r["reason"].endswith("(need 100000)")
    assert not (res.out / "stack.fits").exists()
    assert "every light was rejected" in (res.out / "report.html").read_text()


def test_all_lights_blank(capsys, session, tmp_path):
    for p in lights(session):
        rewrite(p, np.zeros((256, 256), np.uint16))
    res = deepsky_run(capsys, session, tmp_path / "out")
    assert_error(res, r"every light was rejected; see frames\.csv for the reasons")
    assert {r["reason"] for r in res.rows.values()} == {"blank frame: every pixel is 0"}


def test_all_lights_unreadable(capsys, session, tmp_path):
    for p in lights(session):
        p.write_bytes(b"")
    res = deepsky_run(capsys, session, tmp_path / "out")
    assert_error(res, rf"{session}: none of the 4 light frame\(s\) can be read "
                      rf"\({lights(session)[0].name}: empty file \(0 bytes\)\); see frames\.csv")
    assert {r["reason"] for r in res.rows.values()} == {"unreadable: empty file (0 bytes)"}


def test_empty_session_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    res = deepsky_run(capsys, tmp_path / "empty", tmp_path / "out")
    assert_error(res, rf"{tmp_path / 'empty'}: no image files in the folder \(supported: "
                      r"FITS, RAW, TIFF, XISF, PNG, JPEG\)")
    assert not (tmp_path / "out").exists()


def test_session_with_only_darks(capsys, session, tmp_path):
    for k in ("lights", "flats", "biases"):
        shutil.rmtree(session / k)
    res = deepsky_run(capsys, session, tmp_path / "out")
    assert_error(res, rf"{session}: no light frames found \(expected lights/ or files named "
                      r"Light_\* or with IMAGETYP = Light\); found only 3 dark\(s\)")


def test_missing_session_folder(capsys, tmp_path):
    res = deepsky_run(capsys, tmp_path / "nope", tmp_path / "out")
    assert_error(res, rf"{tmp_path / 'nope'}: session folder not found")


@pytest.mark.parametrize("where", ["lights/out", ".", "darks"])
def test_output_folder_inside_the_input(capsys, session, where):
    before = sorted(p.relative_to(session) for p in session.rglob("*"))
    res = deepsky_run(capsys, session, session / where)
    assert_error(res, rf"{session / where}: the output folder is inside the input frames' "
                      r"folders; choose a folder outside them")
    # Nothing written into the input (a failed run used to leave run.json there).
    assert sorted(p.relative_to(session) for p in session.rglob("*")) == before


def test_output_in_a_subfolder_of_the_session_is_allowed(capsys, session):
    res = deepsky_run(capsys, session, session / "results")
    assert res.rc == 0, res.err
    assert res.stacked() == 4


def test_paths_with_spaces_and_non_ascii(capsys, base, tmp_path, real_report):
    """Non-ASCII names reach FITS headers (HISTORY, REFFRAME) as ASCII; they used to crash
    the masters' writer with astropy's ValueError."""
    session = tmp_path / "nuit du 15 été" / "M31 Andromède 星"
    for k in KINDS:
        shutil.copytree(base / k, session / k)
    for i, p in enumerate(lights(session)):
        p.rename(p.with_name(f"Lumière {i} ü.fits"))
    out = tmp_path / "résultats ü 2"
    res = deepsky_run(capsys, session, out)
    assert res.rc == 0, res.err
    assert sorted(res.rows) == [f"Lumière {i} ü.fits" for i in range(4)]
    hdr = fits.getheader(out / "stack.fits")
    assert hdr["REFFRAME"].startswith("Lumiere ") and hdr["REFFRAME"].endswith(" u.fits")
    assert (out / "final.jpg").exists() and (out / "report.html").exists()


# ----------------------------------------------------------------------------------------------
# Bayer pattern
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def colour(simulated_session, tmp_path_factory):
    """A colour session and its stack with the correct pattern."""
    sim = simulated_session(**{**SPEC, "bayer": "RGGB", "n_lights": 3})
    out = tmp_path_factory.mktemp("colour_ok")
    assert main(["run", str(sim.path), "-o", str(out), "-q", *FAST]) == 0
    return sim.path, read(out / "stack.fits").data


def _colour_copy(src: Path, dst: Path, **cards) -> Path:
    for k in KINDS:
        shutil.copytree(src / k, dst / k)
    for k in ("lights", "flats"):
        for p in (dst / k).rglob("*.fits"):
            rewrite(p, **cards)
    return dst


def test_missing_bayer_pattern(capsys, colour, tmp_path):
    """No BAYERPAT: processed as mono, with a warning saying the frames look like a colour
    mosaic and how to tell the pattern; given the pattern, the stack is the right one."""
    src, right = colour
    session = _colour_copy(src, tmp_path / "s", BAYERPAT=None)
    res = deepsky_run(capsys, session, tmp_path / "mono", quiet=False)
    assert res.rc == 0
    assert any(w.startswith("Light_0001_60s.fits: no Bayer pattern in the file, but its 2x2 "
                            "pixel levels differ by ") and "set calibration.bayer_pattern"
               in w.lower() for w in res.warnings), res.warnings
    assert read(res.out / "stack.fits").data.ndim == 2
    res = deepsky_run(capsys, session, tmp_path / "rggb", "--set",
                      "calibration.bayer_pattern=RGGB")
    assert res.rc == 0
    np.testing.assert_array_equal(read(res.out / "stack.fits").data, right)


def test_wrong_bayer_pattern(capsys, colour, tmp_path):
    """A wrong BAYERPAT cannot be seen in the pixels; the setting overrides it."""
    src, right = colour
    session = _colour_copy(src, tmp_path / "s", BAYERPAT="BGGR")
    res = deepsky_run(capsys, session, tmp_path / "out", "--set",
                      "calibration.bayer_pattern=RGGB")
    assert res.rc == 0
    np.testing.assert_array_equal(read(res.out / "stack.fits").data, right)


def test_invalid_bayer_pattern(capsys, colour, tmp_path):
    src, _ = colour
    session = _colour_copy(src, tmp_path / "s", BAYERPAT="XYZW")
    res = deepsky_run(capsys, session, tmp_path / "out", quiet=False)
    assert res.rc == 0
    assert ("BAYERPAT = 'XYZW' is not a 2x2 Bayer pattern (RGGB, BGGR, GRBG, GBRG): those "
            "frames are processed as mono; set calibration.bayer_pattern if the camera is a "
            "colour one") in res.warnings
    assert not any("no Bayer pattern in the file" in w for w in res.warnings)


def test_mono_session_gets_no_bayer_warning(capsys, session, tmp_path):
    res = deepsky_run(capsys, session, tmp_path / "out", quiet=False)
    assert res.rc == 0
    assert not any("Bayer" in w for w in res.warnings), res.warnings


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "toml", "pattern"), [
    (["--set", "calibration.foo=1"], None,
     r"unknown setting calibration\.foo in section \[calibration\]; known: .*master_sigma"),
    (["--set", "detection.threshold=0.5"], None,
     r"setting detection\.threshold = '0\.5' is out of range \(allowed 2 to 100\)"),
    (["--set", "detection.threshold=nan"], None,
     r"setting detection\.threshold = 'nan' is not allowed: expected a number \(allowed 2 to "
     r"100\)"),
    (["--set", "run.memory_mb=0"], None,
     r"setting run\.memory_mb = '0' is out of range \(allowed 1 to 1048576\)"),
    (["--set", "registration.model=magic"], None,
     r"setting registration\.model = 'magic' is not allowed: expected one of 'shift', "
     r"'similarity', 'affine', 'homography'"),
    (["--set", "calibration.cosmetic"], None,
     r"--set 'calibration\.cosmetic': expected section\.key=value"),
    (["--set", "nosection.x=1"], None,
     r"unknown setting nosection in the top level; known: calibration, .*"),
    ([], "[calibration]\nmaster_sigma = 3\nfoo = 1\n",
     r"unknown setting calibration\.foo in section \[calibration\]; known: .*"),
    ([], "[integration]\ndrizzle = 7\n",
     r".*integration\.drizzle.* out of range \(allowed 1 to 3\)"),
    ([], "[calibration\nmaster_sigma = 3\n",
     r".*bad\.toml: not valid TOML \(Expected ']' at the end of a table declaration .*\)"),
])
def test_bad_settings(capsys, session, tmp_path, args, toml, pattern):
    if toml is not None:
        (tmp_path / "bad.toml").write_text(toml)
        args = ["--config", str(tmp_path / "bad.toml")]
    res = deepsky_run(capsys, session, tmp_path / "out", *args)
    assert_error(res, pattern)
    assert not (tmp_path / "out").exists()


def test_missing_config_file(capsys, session, tmp_path):
    res = deepsky_run(capsys, session, tmp_path / "out", "--config", str(tmp_path / "x.toml"))
    assert_error(res, rf"{tmp_path / 'x.toml'}: config file not found")


# ----------------------------------------------------------------------------------------------
# Permissions (a subprocess: root reads and writes whatever the modes say)
# ----------------------------------------------------------------------------------------------
def _unprivileged() -> list[str]:
    """A command prefix under which file modes apply: nothing for a normal user; for root,
    setpriv dropping the capabilities that bypass them (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH); skip when that is not possible."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file modes do not apply to root")
    cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search",
           "--inh-caps=-dac_override,-dac_read_search"]
    probe = subprocess.run([*cmd, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root and cannot drop capabilities: {probe.stderr!r}")
    return cmd


def _run_cli(prefix: list[str], session: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "deepsky.cli", "run", str(session),
                           "-o", str(out), "-q", *FAST], capture_output=True, text=True)


def test_unreadable_files(session, tmp_path):
    prefix = _unprivileged()
    light = lights(session)[1]
    dark = sorted((session / "darks").glob("*.fits"))[0]
    light.chmod(0)
    dark.chmod(0)
    r = _run_cli(prefix, session, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    rows = Outcome(0, [], tmp_path / "out").rows
    assert rows[light.name]["status"] == "rejected"
    assert rows[light.name]["reason"] == "unreadable: permission denied (file is not readable)"
    assert int(fits.getval(tmp_path / "out" / "stack.fits", "NCOMBINE")) == 3


@pytest.mark.parametrize("nested", [False, True])
def test_read_only_output_folder(session, tmp_path, nested):
    prefix = _unprivileged()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    out = ro / "sub" if nested else ro
    try:
        r = _run_cli(prefix, session, out)
    finally:
        ro.chmod(0o755)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"deepsky: error: {out}/masters/master_bias_g100.fits: cannot write, permission denied "
        "(read-only folder?)"], r.stderr
    assert list(ro.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# The API raises what the command line prints
# ----------------------------------------------------------------------------------------------
def test_api_errors(base, tmp_path):
    from deepsky.config import load_config
    from deepsky.pipeline.progress import Reporter
    from deepsky.pipeline.run import run_pipeline

    cfg = load_config(overrides=[*FAST[1::2], "selection.min_stars=100000"])
    with pytest.raises(RegistrationError, match=r"^every light was rejected; see frames\.csv"):
        run_pipeline(base, tmp_path / "out", cfg, reporter=Reporter(quiet=True))
    with pytest.raises(InputError, match=r": no image files in the folder"):
        (tmp_path / "empty").mkdir()
        run_pipeline(tmp_path / "empty", tmp_path / "out2", cfg, reporter=Reporter(quiet=True))
