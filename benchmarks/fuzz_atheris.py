"""Coverage-guided fuzzing of the readers with atheris (libFuzzer), when it is installed.

Not a test; the random mutation fuzzer ``benchmarks/fuzz_readers.py`` needs nothing extra.
The first byte of each input picks the format (FITS, gzipped FITS, TIFF, XISF, PNG, JPEG,
DNG), the rest is the file. Reading must end in a Frame or an InputError; anything else
(another exception, a warning escaping a reader) is a crash that libFuzzer reports and saves
as ``crash-*`` in the current folder. The corpus starts from one valid file of each format.

    .venv/bin/pip install atheris
    .venv/bin/python benchmarks/fuzz_atheris.py --seconds 600
    .venv/bin/python benchmarks/fuzz_atheris.py crash-1234abcd   # replay a crash

Every extra argument goes to libFuzzer (``-rss_limit_mb=3072``, ``-timeout=20`` are set).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["deepsky"]):
    import deepsky.io.fits  # noqa: E402,F401  (imported here to be instrumented)
    import deepsky.io.headers  # noqa: E402,F401
    import deepsky.io.images  # noqa: E402,F401
    import deepsky.io.raw  # noqa: E402,F401
    import deepsky.io.sources  # noqa: E402,F401
    import deepsky.io.tiff  # noqa: E402,F401
    import deepsky.io.xisf  # noqa: E402,F401
    from deepsky.errors import InputError  # noqa: E402

from fuzz_readers import SUFFIX, make_seeds, read_all_ways  # noqa: E402

ORDER = ["fits", "fits.gz", "tiff", "xisf", "png", "jpeg", "dng", "fits.fz"]
WORK = Path(tempfile.mkdtemp(prefix="deepsky-atheris-"))


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    fmt = ORDER[data[0] % len(ORDER)]
    path = WORK / f"input{SUFFIX[fmt]}"
    path.write_bytes(data[1:])
    try:
        read_all_ways(path)
    except InputError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=600)
    args, rest = ap.parse_known_args()
    corpus = WORK / "corpus"
    corpus.mkdir()
    for fmt, blob in make_seeds(WORK).items():
        (corpus / fmt).write_bytes(bytes([ORDER.index(fmt)]) + blob)
    argv = [sys.argv[0], f"-max_total_time={args.seconds}", "-rss_limit_mb=3072",
            "-timeout=20", *rest]
    if not any(not a.startswith("-") for a in rest):  # no crash file to replay
        argv.append(str(corpus))
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
