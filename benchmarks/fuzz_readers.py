"""Fuzz the readers: mutated FITS, TIFF, XISF, PNG, JPEG and DNG files must read or raise
:class:`deepsky.errors.InputError`, nothing else, and never hang or exhaust memory.

Not a test (the suite runs a few seconds of the same idea in ``tests/test_fuzz.py``). Time
bounded; each finding (another exception, a hang, a crash of the process) is saved with the
input that caused it under ``--findings`` and listed at the end, grouped by kind:

    .venv/bin/python benchmarks/fuzz_readers.py --seconds 600
    .venv/bin/python benchmarks/fuzz_readers.py --seconds 60 --formats fits,tiff --seed 3
    .venv/bin/python benchmarks/fuzz_readers.py --replay findings/xxx.fits   # one input

The fuzzing runs in a child process that writes each input to disk before reading it: when
the child dies (a segfault in a C library, the kernel's OOM killer), the parent keeps that
input as a finding and starts a new child. Inside the child every read runs under an alarm
(``--timeout`` seconds: a hang) and an address-space limit (``--memory-mb``: a header that
announces a huge image and makes a reader allocate it shows up as a MemoryError).

Mutations of a valid seed file of each format: truncation, bit flips, runs of random bytes,
repeated or deleted chunks, and format-aware edits: FITS header cards replaced or inserted
with random keywords and values (NAXISn, BITPIX, BZERO, BSCALE, BLANK, BAYERPAT, dates...),
TIFF IFD entries (tag, type, count, value) overwritten, XISF header attributes (geometry,
sampleFormat, location, compression, ...) replaced in the XML. Each input is read with
``read``, ``read_meta``, ``open_source(...).read()`` and, for FITS, ``read_fits_rows``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import multiprocessing as mp
import os
import random
import re
import resource
import signal
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the seed writers of the IO tests (DNG, ...)

FORMATS = ("fits", "fits.gz", "fits.fz", "tiff", "xisf", "png", "jpeg", "dng")

FITS_KEYS = ["SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BZERO",
             "BSCALE", "BLANK", "END", "XTENSION", "PCOUNT", "GCOUNT", "EXPTIME", "IMAGETYP",
             "BAYERPAT", "XBAYROFF", "YBAYROFF", "ROWORDER", "DATE-OBS", "TIME-OBS", "MJD-OBS",
             "XBINNING", "YBINNING", "CCD-TEMP", "GAIN", "FILTER", "SATURATE", "HISTORY",
             "COMMENT", "CONTINUE", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZTILE1",
             "ZCMPTYPE", "TFIELDS", "TFORM1", "THEAP"]
FITS_VALUES = ["0", "1", "-1", "2", "3", "4", "8", "16", "-32", "-64", "12", "999999999",
               "-999999999", "2147483648", "1E300", "-1E-300", "NaN", "T", "F", "''", "'RGGB'",
               "'XYZW'", "'BOTTOM-UP'", "'2024-13-45T25:61:61'", "'not a date'", "1.5",
               "(1.0, 2.0)", "'" + "x" * 68 + "'", "32768", "65535", "'&'", "= 5", "/ only"]
XISF_ATTRS = ["geometry", "sampleFormat", "colorSpace", "location", "compression", "bounds",
              "pixelStorage", "byteOrder", "imageType", "value", "name", "type"]
XISF_VALUES = ["64:48:1", "0:0:1", "100000:100000:1", "64:48:3", "64:48", "a:b:c", "-1:5:1",
               "UInt16", "Float64", "Complex32", "Bogus", "RGB", "Gray", "attachment:0:10",
               "attachment:999999999:999999999", "attachment:-5:10", "inline:base64",
               "zlib:100", "lz4+sh:8:2", "zstd:99999999999", "0:1", "Normal", "Planar",
               "big", "little", "", "\"", "&amp;", "<x/>"]


# ----------------------------------------------------------------------------------------------
# Seeds and mutations
# ----------------------------------------------------------------------------------------------
def make_seeds(folder: Path) -> dict[str, bytes]:
    """One small valid file of each format, as bytes."""
    from test_io_errors import _good_files  # noqa: E402  (tests/ on sys.path above)

    return {fmt: p.read_bytes() for fmt, p in _good_files(folder).items()}


def _truncate(b: bytes, rnd: random.Random) -> bytes:
    return b[:rnd.randrange(0, len(b))]


def _flip(b: bytes, rnd: random.Random) -> bytes:
    a = bytearray(b)
    for _ in range(rnd.choice((1, 1, 2, 4, 16))):
        i = rnd.randrange(len(a))
        a[i] ^= 1 << rnd.randrange(8)
    return bytes(a)


def _head_flip(b: bytes, rnd: random.Random) -> bytes:
    """Bit flips in the first 4 KiB, where the headers live."""
    a = bytearray(b)
    for _ in range(rnd.choice((1, 2, 3))):
        i = rnd.randrange(min(len(a), 4096))
        a[i] ^= 1 << rnd.randrange(8)
    return bytes(a)


def _random_run(b: bytes, rnd: random.Random) -> bytes:
    a = bytearray(b)
    i = rnd.randrange(len(a))
    n = rnd.choice((1, 2, 4, 8, 64))
    a[i:i + n] = bytes(rnd.randrange(256) for _ in range(n))
    return bytes(a)


def _interesting_int(b: bytes, rnd: random.Random) -> bytes:
    """A 16/32-bit boundary value written over a random place of the first 4 KiB."""
    a = bytearray(b)
    i = rnd.randrange(min(len(a), 4096))
    v = rnd.choice((0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000,
                    0xFFFFFFFF))
    width = rnd.choice((2, 4))
    a[i:i + width] = (v & ((1 << (8 * width)) - 1)).to_bytes(width, rnd.choice(("little", "big")))
    return bytes(a)


def _chunk(b: bytes, rnd: random.Random) -> bytes:
    i = rnd.randrange(len(b))
    j = min(len(b), i + rnd.randrange(1, 4096))
    return b[:i] + b[j:] if rnd.random() < 0.5 else b[:j] + b[i:j] + b[j:]


def _fits_card(b: bytes, rnd: random.Random) -> bytes:
    """Replace or insert one 80-byte header card with a random keyword and value."""
    ncards = 36
    idx = rnd.randrange(ncards)
    key = rnd.choice(FITS_KEYS + ["".join(rnd.choice("ABCXYZ-_0123456789") for _ in range(8))])
    val = rnd.choice(FITS_VALUES)
    card = (f"{key:<8}= {val:>20}" if key not in ("HISTORY", "COMMENT", "END", "CONTINUE")
            else f"{key:<8}{val}")[:80].ljust(80).encode("ascii", "replace")
    a = bytearray(b)
    off = idx * 80
    if rnd.random() < 0.7:
        a[off:off + 80] = card
    else:
        a[off:off] = card
        del a[2880:2880 + 80]  # keep the block structure
    return bytes(a)


def _tiff_entry(b: bytes, rnd: random.Random) -> bytes:
    """Overwrite a field of a random 12-byte IFD entry of the first IFD."""
    if len(b) < 16 or b[:2] not in (b"II", b"MM"):
        return _flip(b, rnd)
    bo = "little" if b[:2] == b"II" else "big"
    ifd = int.from_bytes(b[4:8], bo)
    if ifd + 2 > len(b):
        return _flip(b, rnd)
    n = int.from_bytes(b[ifd:ifd + 2], bo)
    if n == 0:
        return _flip(b, rnd)
    e = ifd + 2 + 12 * rnd.randrange(n)
    a = bytearray(b)
    field = rnd.choice(("tag", "type", "count", "value"))
    off, width = {"tag": (0, 2), "type": (2, 2), "count": (4, 4), "value": (8, 4)}[field]
    v = rnd.choice((0, 1, 2, 3, 7, 8, 16, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, rnd.randrange(1 << 32)))
    a[e + off:e + off + width] = (v & ((1 << (8 * width)) - 1)).to_bytes(width, bo)
    return bytes(a)


def _xisf_attr(b: bytes, rnd: random.Random) -> bytes:
    """Replace the value of a random attribute of the XML header."""
    if not b.startswith(b"XISF0100") or len(b) < 16:
        return _flip(b, rnd)
    hlen = int.from_bytes(b[8:12], "little")
    if hlen > len(b) - 16:  # an earlier mutation broke the length
        return _flip(b, rnd)
    head = b[16:16 + hlen].decode("utf-8", "replace")
    attrs = [m for m in re.finditer(r'(\w+)="([^"]*)"', head)]
    if not attrs:
        return _flip(b, rnd)
    m = rnd.choice(attrs)
    if rnd.random() < 0.5:
        m2 = [x for x in attrs if x.group(1) in XISF_ATTRS]
        m = rnd.choice(m2) if m2 else m
    new = head[:m.start(2)] + rnd.choice(XISF_VALUES) + head[m.end(2):]
    raw = new.encode("utf-8")
    # Keep the header length (pad or cut): the data block offsets stay where they were.
    raw = raw[:hlen].ljust(hlen, b" ")
    return b[:16] + raw + b[16 + hlen:]


def _gz_inner(b: bytes, rnd: random.Random) -> bytes:
    """Mutate the FITS inside a gzip stream (the stream itself stays valid)."""
    try:
        inner = gzip.decompress(b)
    except (OSError, EOFError, zlib.error):  # an earlier mutation broke the stream
        return _flip(b, rnd)
    return gzip.compress(rnd.choice((_fits_card, _truncate, _head_flip))(inner, rnd))


MUTATORS: dict[str, list[Callable[[bytes, random.Random], bytes]]] = {
    "any": [_truncate, _flip, _head_flip, _random_run, _interesting_int, _chunk],
    "fits": [_fits_card, _fits_card, _fits_card],
    "fits.fz": [_fits_card],
    "fits.gz": [_gz_inner, _gz_inner],
    "tiff": [_tiff_entry, _tiff_entry],
    "dng": [_tiff_entry, _tiff_entry],
    "xisf": [_xisf_attr, _xisf_attr],
}


def mutate(fmt: str, seed: bytes, rnd: random.Random) -> bytes:
    b = seed
    for _ in range(rnd.choice((1, 1, 1, 2, 3))):
        fns = MUTATORS["any"] + MUTATORS.get(fmt, [])
        b = rnd.choice(fns)(b, rnd) if b else b
    return b


SUFFIX = {"fits": ".fits", "fits.gz": ".fits.gz", "fits.fz": ".fits.fz", "tiff": ".tif",
          "xisf": ".xisf", "png": ".png", "jpeg": ".jpg", "dng": ".dng"}


# ----------------------------------------------------------------------------------------------
# Reading one input
# ----------------------------------------------------------------------------------------------
class Hang(Exception):
    pass


def _alarm(_sig: int, _frame: Any) -> None:
    raise Hang()


def read_all_ways(path: Path) -> None:
    """Every way deepsky reads a file. An InputError of one way does not stop the others;
    any other exception (or a warning escaping a reader) propagates."""
    import warnings

    from deepsky.errors import InputError
    from deepsky.io import read, read_meta
    from deepsky.io.fits import read_fits_rows
    from deepsky.io.sources import open_source

    def whole() -> None:
        frame = read(path)
        assert frame.data.dtype.name == "float32" and frame.data.flags.c_contiguous
        assert frame.data.shape[-2:] == (frame.meta.height, frame.meta.width), \
            (frame.data.shape, frame.meta.height, frame.meta.width)

    def source() -> None:
        src = open_source(path)
        assert src.read().shape == src.meta.shape

    def rows() -> None:
        if path.name.endswith((".fits", ".fits.gz", ".fits.fz")):
            read_fits_rows(path, 0, min(2, read_meta(path).height))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for way in (whole, lambda: read_meta(path), source, rows):
            try:
                way()
            except InputError:
                pass


def classify(path: Path, timeout: float) -> tuple[str, str] | None:
    """None when reading raised only InputError (or nothing); else (kind, description)."""
    from deepsky.errors import InputError

    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    # Anything a library prints (stdout or stderr) would surround the CLI's one-line error.
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    noise = tempfile.TemporaryFile()
    os.dup2(noise.fileno(), 1)
    os.dup2(noise.fileno(), 2)
    try:
        read_all_ways(path)
    except InputError:
        return _noise(noise)
    except Hang:
        return ("hang", f"no answer in {timeout:g} s")
    except MemoryError:
        return ("memory", "MemoryError: a header made a reader allocate too much")
    except Exception as err:  # noqa: BLE001  -- that is the point of the fuzzer
        tb = traceback.extract_tb(err.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb)
                      if "deepsky" in f.filename), "?")
        return (type(err).__name__, f"{type(err).__name__} at {where}: "
                                     f"{str(err).splitlines()[0][:200] if str(err) else ''}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, old in zip((1, 2), saved):
            os.dup2(old, fd)
            os.close(old)
        if not noise.closed and sys.exc_info()[0] is not None:
            noise.close()
    return _noise(noise)


def _noise(f: Any) -> tuple[str, str] | None:
    f.seek(0)
    text = f.read().decode("utf-8", "replace").strip()
    f.close()
    if not text:
        return None
    return ("output", "printed: " + text.splitlines()[0][:120])


# ----------------------------------------------------------------------------------------------
# The child: fuzz until the deadline, report through a queue
# ----------------------------------------------------------------------------------------------
def child(work: str, formats: list[str], seed: int, deadline: float, timeout: float,
          memory_mb: int, queue: Any) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024, resource.RLIM_INFINITY))
    wd = Path(work)
    seeds = make_seeds(Path(tempfile.mkdtemp(dir=wd)))
    rnd = random.Random(seed)
    current = wd / "current.json"
    n = 0
    while time.time() < deadline:
        fmt = rnd.choice(formats)
        current.unlink(missing_ok=True)  # a death from here on is not a reader's
        data = mutate(fmt, seeds[fmt], rnd)
        path = wd / f"input{SUFFIX[fmt]}"
        path.write_bytes(data)
        current.write_text(json.dumps({"fmt": fmt, "path": str(path)}))
        res = classify(path, timeout)
        n += 1
        if res is not None:
            queue.put(("finding", fmt, res[0], res[1], data))
        if n % 200 == 0:
            queue.put(("count", n))
    queue.put(("count", n))
    queue.put(("done",))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="time budget (default 600)")
    ap.add_argument("--formats", default=",".join(FORMATS), help="comma-separated formats")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before a read is a hang")
    ap.add_argument("--memory-mb", type=int, default=3072, help="address-space limit of the child")
    ap.add_argument("--findings", default=str(ROOT / "benchmarks" / "results" / "fuzz_findings"))
    ap.add_argument("--replay", help="read one file and print what happens")
    args = ap.parse_args()
    if args.replay:
        res = classify(Path(args.replay), args.timeout)
        print("ok: read, or InputError" if res is None else f"{res[0]}: {res[1]}")
        return 0 if res is None else 1
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = set(formats) - set(FORMATS)
    if bad:
        ap.error(f"unknown formats {sorted(bad)}; known: {', '.join(FORMATS)}")
    findings_dir = Path(args.findings)
    deadline = time.time() + args.seconds
    total = 0
    found: dict[tuple[str, str], list[str]] = {}
    kinds: Counter[str] = Counter()
    restarts = 0
    ctx = mp.get_context("spawn")
    seed = args.seed
    with tempfile.TemporaryDirectory(prefix="deepsky-fuzz-") as work:
        while time.time() < deadline:
            q = ctx.Queue()
            proc = ctx.Process(target=child, args=(work, formats, seed, deadline, args.timeout,
                                                   args.memory_mb, q))
            proc.start()
            counted = 0
            done = False
            while not done:
                try:
                    msg = q.get(timeout=1.0)
                except Exception:  # queue.Empty
                    if not proc.is_alive():
                        break
                    continue
                if msg[0] == "count":
                    counted = msg[1]
                elif msg[0] == "done":
                    done = True
                else:
                    _, fmt, kind, desc, data = msg
                    # One finding per message, whatever the addresses and paths in it.
                    desc = re.sub(r"0x[0-9a-f]+|/tmp/\S+|@\d+|\d{3,}", "*", desc)
                    key = (fmt, desc)
                    kinds[kind] += 1
                    if key not in found:
                        findings_dir.mkdir(parents=True, exist_ok=True)
                        name = hashlib.sha1(data).hexdigest()[:12] + SUFFIX[fmt]
                        (findings_dir / name).write_bytes(data)
                        found[key] = [name]
                        print(f"finding: {fmt}: {desc} -> {findings_dir / name}", flush=True)
            proc.join(timeout=30)
            total += counted
            if not done:  # the child died: its current input is the finding
                restarts += 1
                cur = Path(work) / "current.json"
                code = proc.exitcode
                if cur.exists():
                    info = json.loads(cur.read_text())
                    data = Path(info["path"]).read_bytes()
                    findings_dir.mkdir(parents=True, exist_ok=True)
                    name = hashlib.sha1(data).hexdigest()[:12] + SUFFIX[info["fmt"]]
                    (findings_dir / name).write_bytes(data)
                    desc = f"the process died (exit code {code})"
                    found.setdefault((info["fmt"], desc), []).append(name)
                    kinds["crash"] += 1
                    print(f"finding: {info['fmt']}: {desc} -> {findings_dir / name}", flush=True)
                else:
                    print(f"the fuzzer's child died outside a read (exit code {code}); "
                          "restarting", flush=True)
                seed += 1000  # do not replay the same sequence
    print(f"\n{total} inputs in {args.seconds:g} s over {', '.join(formats)}; "
          f"{len(found)} distinct finding(s); {restarts} child restart(s)")
    for (fmt, desc), names in sorted(found.items()):
        print(f"  {fmt}: {desc} ({names[0]})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
