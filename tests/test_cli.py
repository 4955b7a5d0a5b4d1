"""The command line: help, version, errors as one line with exit code 2."""

import subprocess
import sys

import pytest

from deepsky import __version__
from deepsky.cli import build_parser, main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert name in out
    assert "inspect" in out and "calibrate" in out and "demo" in out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_user_error_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "deepsky.cli", "inspect", str(tmp_path / "nope")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "nope: session folder not found" in r.stderr
    assert "Traceback" not in r.stderr


def test_config_defaults_and_bad_set(capsys):
    assert main(["config", "--defaults"]) == 0
    out = capsys.readouterr().out
    assert "[calibration]" in out and "master_rejection" in out
    assert main(["config", "--set", "calibration.debayer=nope"]) == 2
    assert "calibration.debayer" in capsys.readouterr().err
