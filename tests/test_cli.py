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


def test_the_command_line_keeps_freed_memory_for_reuse():
    """``keep_freed_memory`` (called by ``deepsky``'s main): a freed 256 MB block comes back
    from the process's own heap (no new pages for the kernel to zero) instead of fresh
    memory, as it does with glibc's defaults."""
    import platform
    import subprocess

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's allocator only")
    probe = (
        "import resource, sys, numpy as np\n"
        "from deepsky.parallel import keep_freed_memory\n"
        "ok = keep_freed_memory() if sys.argv[1] == 'keep' else True\n"
        "a = np.ones(64 << 20, np.float32); del a\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "b = np.ones(64 << 20, np.float32)\n"
        "print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")
    faults = {}
    for mode in ("keep", "default"):
        out = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True,
                             text=True, check=True).stdout.split()
        assert out[0] == "True"
        faults[mode] = int(out[1])
    # 256 MB is 65536 small pages or 128 huge ones: fresh memory faults at least 128 times
    assert faults["default"] >= 100, faults
    assert faults["keep"] < 20, faults


def test_the_command_line_starts_no_blas_threads():
    """``single_threaded_blas`` (called by ``deepsky``'s main before numpy is imported): numpy
    and scipy load without OpenBLAS's pools of spinning threads; a user's own setting stays."""
    import os

    if not os.path.isdir("/proc/self/task") or (os.cpu_count() or 1) < 2:
        pytest.skip("counts threads in /proc, on 2 or more cores")
    probe = (
        "import os, sys\n"
        "from deepsky.cli import single_threaded_blas\n"
        "if sys.argv[1] == 'single': single_threaded_blas()\n"
        "import numpy as np, scipy.linalg\n"
        "a = np.ones((300, 300)); a @ a\n"
        "print(len(os.listdir('/proc/self/task')), os.environ.get('OPENBLAS_NUM_THREADS'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS",
                                                            "MKL_NUM_THREADS",
                                                            "OMP_NUM_THREADS")}

    def threads(mode: str, **extra: str) -> tuple[int, str]:
        out = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True,
                             text=True, check=True, env={**env, **extra}).stdout.split()
        return int(out[0]), out[1]

    default, _ = threads("default")
    assert default > 1  # numpy's and scipy's OpenBLAS start their pools
    assert threads("single") == (1, "1")
    assert threads("single", OPENBLAS_NUM_THREADS="2")[1] == "2"


def test_output_into_a_closed_pipe_ends_without_a_traceback():
    """``deepsky config --defaults | head -1``: the reader has gone when deepsky writes;
    deepsky exits with code 1 and nothing on stderr (no traceback, no 'Exception ignored')."""
    import os

    r, w = os.pipe()
    os.close(r)  # nobody reads: the first write fails with EPIPE
    try:
        res = subprocess.run([sys.executable, "-m", "deepsky.cli", "config", "--defaults"],
                             stdout=w, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(w)
    assert res.returncode == 1
    assert res.stderr.decode() == ""
