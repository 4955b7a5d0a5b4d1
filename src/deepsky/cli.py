"""The ``deepsky`` command: parses arguments, builds the config, calls the pipeline.

A :class:`~deepsky.errors.DeepskyError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from deepsky import __version__
from deepsky.errors import DeepskyError

Handler = Callable[[argparse.Namespace], int]


# ----------------------------------------------------------------------------------------------
# Output helpers
# ----------------------------------------------------------------------------------------------
def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output: wide enough that tables are never cut.
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, width=width)


def _fmt(v: Any, fmt: str = "{:g}") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return fmt.format(v)
    return str(v)


# ----------------------------------------------------------------------------------------------
# inspect
# ----------------------------------------------------------------------------------------------
def cmd_inspect(args: argparse.Namespace) -> int:
    from deepsky.io.discover import discover

    session = discover(args.path)
    if args.json:
        print(json.dumps(session.to_json(), indent=2, default=str))
        return 0
    from rich.table import Table

    con = _console()
    table = Table(title=f"Session {session.root} ({session.layout} layout)", title_justify="left")
    for col in ("type", "filter", "count", "exposure", "gain/ISO", "temp (C)", "size", "bin",
                "Bayer"):
        table.add_column(col, justify="right" if col in ("count", "exposure") else "left")
    for r in session.summary_rows():
        t0, t1 = r["temperature_min"], r["temperature_max"]
        temp = "-" if t0 is None else (f"{t0:g}" if t0 == t1 else f"{t0:g}..{t1:g}")
        gain = "-" if r["gain"] is None else (
            f"ISO {r['gain']:g}" if r["gain_kind"] == "ISO" else f"{r['gain']:g}")
        table.add_row(
            r["type"], r["filter"] or "-", str(r["count"]),
            "-" if r["exposure"] is None else f"{r['exposure']:g} s", gain, temp,
            f"{r['width']}x{r['height']}" + ("x3" if r["channels"] == 3 else ""),
            r["binning"], r["bayer"] or "mono",
        )
    con.print(table)
    groups = session.light_groups()
    if groups:
        con.print(f"{len(session.lights)} lights in {len(groups)} group(s): " + "; ".join(
            f"{k[0] or 'no filter'} {k[2]}x{k[3]} {k[5] or 'mono'} ({len(v)})"
            for k, v in groups.items()))
    for u in session.unreadable:
        con.print(f"[yellow]unreadable:[/] {u.path}: {u.reason}")
    for w in session.warnings:
        con.print(f"[yellow]warning:[/] {w}")
    return 0


# ----------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------
def cmd_config(args: argparse.Namespace) -> int:
    from deepsky.config import load_config, to_toml

    cfg = load_config(None if args.defaults else args.config, args.set or ())
    sys.stdout.write(to_toml(cfg))
    return 0


# ----------------------------------------------------------------------------------------------
# simulate and demo
# ----------------------------------------------------------------------------------------------
def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise DeepskyError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 2048x2048") from None
    if not (16 <= w <= 20000 and 16 <= h <= 20000):
        raise DeepskyError(f"--size {text!r}: width and height must be 16 to 20000 pixels")
    return w, h


def cmd_simulate(args: argparse.Namespace) -> int:
    from deepsky.simulate import simulate_session, spec_from_options

    w, h = _parse_size(args.size) if args.size else (None, None)
    options: dict[str, Any] = {
        "width": w, "height": h, "n_lights": args.frames, "bayer": args.bayer, "seed": args.seed,
        "n_darks": args.darks, "n_flats": args.flats, "n_biases": args.biases,
        "n_darkflats": args.darkflats, "exposure": args.exposure,
        "dark_exposure": args.dark_exposure, "satellite_frames": args.trails,
        "cloudy_frames": args.cloudy, "trailed_frames": args.trailed,
        "meridian_flip_frames": args.meridian_flip, "max_shift": args.shift,
        "max_rotation": args.rotation, "filters": args.filters, "fwhm": args.seeing,
        "layout": args.layout,
    }
    spec = spec_from_options(**{k: v for k, v in options.items() if v is not None})
    out = Path(args.out)
    _refuse_nonempty(out, args.force)
    simulate_session(spec, out, workers=_workers(args))
    print(f"simulated session written to {out} (truth in {out / 'truth.json'})")
    return 0


def _refuse_nonempty(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DeepskyError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise DeepskyError(f"{out}: folder is not empty (use --force to write into it anyway)")


def _workers(args: argparse.Namespace) -> int:
    n = getattr(args, "workers", 0) or 0
    return n if n > 0 else (os.cpu_count() or 1)


def _config(args: argparse.Namespace) -> Any:
    from deepsky.config import load_config

    cfg = load_config(getattr(args, "config", None), getattr(args, "set", None) or ())
    if getattr(args, "workers", None):
        from deepsky.config import config_from_dict, config_to_dict

        d = config_to_dict(cfg)
        d["run"]["workers"] = args.workers
        cfg = config_from_dict(d)
    return cfg


def _reporter(args: argparse.Namespace) -> Any:
    """The command's one Reporter (main() closes its log with the command's outcome)."""
    from deepsky.pipeline.progress import Reporter

    if getattr(args, "_reporter", None) is None:
        args._reporter = Reporter(quiet=getattr(args, "quiet", False),
                                  verbose=getattr(args, "verbose", False),
                                  command_line=" ".join(["deepsky", *args._argv]))
    return args._reporter


def _freeze_imports() -> None:
    """Move the ~180 000 objects the libraries created on import out of the garbage
    collector's sight (``gc.freeze``): they live as long as the process, and every full
    collection of a run walked them again (0.1 s of a 20-frame stack). Then the collector,
    which :func:`main` stops while a command imports its libraries, runs again. For the
    command line only, which runs one pipeline per process."""
    gc.freeze()
    gc.enable()


def _close_log(args: argparse.Namespace, last: str) -> None:
    rep = getattr(args, "_reporter", None)
    if rep is not None:
        rep.close_log(last)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from deepsky.pipeline.calibration import calibrate_session

    _freeze_imports()
    cfg = _config(args)
    rep = _reporter(args)
    res = calibrate_session(args.session, Path(args.out), cfg, reporter=rep)
    out = Path(args.out)
    built = sum(1 for m in res.plan.masters if not m.reused and m.kind != "defects")
    reused = sum(1 for m in res.plan.masters if m.reused)
    defects = [m for m in res.plan.masters if m.kind == "defects"]
    print(f"masters: {built} built, {reused} reused, in {out / 'masters'}")
    for d in defects:
        print(f"defect map {d.name}: {d.n_frames} defective pixels")
    print(f"{len(res.written)} calibrated lights in {out / 'calibrated'}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from deepsky.pipeline.registration import rotation_range
    from deepsky.pipeline.runner import Pipeline

    _freeze_imports()
    cfg = _config(args)
    pipe = Pipeline(Path(args.session), Path(args.out), cfg, reporter=_reporter(args))
    try:
        pipe.discover()
        pipe.calibration()
        pipe.analyze()
        pipe.register()
    finally:
        if pipe.groups:
            pipe.write_frames()
    recs = pipe.records
    used = [r for r in recs if r.used]
    print(f"{len(used)} of {len(recs)} lights registered and selected; "
          f"frames.csv in {Path(args.out)}")
    for g in pipe.groups:
        if g.ok:
            lo, hi = rotation_range(g.records)
            print(f"reference {g.reference_record.name}; rotation {lo:+.2f} to {hi:+.2f} deg")
    for r in recs:
        if not r.used:
            print(f"rejected {r.name}: {r.reason}")
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from deepsky.pipeline.runner import Pipeline

    _freeze_imports()
    cfg = _config(args)
    pipe = Pipeline(Path(args.session), Path(args.out), cfg, reporter=_reporter(args))
    try:
        pipe.discover()
        pipe.calibration()
        pipe.analyze()
        pipe.register()
        pipe.stack()
    finally:
        if pipe.groups:
            pipe.write_frames()
    recs = pipe.records
    print(f"{sum(r.used for r in recs)} of {len(recs)} lights stacked; frames.csv in "
          f"{Path(args.out)}")
    for sg in pipe.stacks:
        n_tr = sum(len(v) for v in sg.trails.values())
        print(f"{sg.path}: {len(sg.used)} frames, {sg.exposure:g} s, rejection {sg.method}, "
              f"{n_tr} trail(s) masked")
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from deepsky.postprocess.process import process_file

    _freeze_imports()
    cfg = _config(args)
    res = process_file(Path(args.stack), Path(args.out), cfg, reporter=_reporter(args))
    print(res)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from deepsky.pipeline.demo import run_demo

    _freeze_imports()
    return run_demo(Path(args.out), workers=args.workers, force=args.force,
                    reporter=_reporter(args))


def cmd_run(args: argparse.Namespace) -> int:
    from deepsky.pipeline.run import run_pipeline

    _freeze_imports()
    cfg = _config(args)
    if args.scheduler:
        from deepsky.config import config_from_dict, config_to_dict

        d = config_to_dict(cfg)
        d["run"]["scheduler"] = args.scheduler
        cfg = config_from_dict(d)
    res = run_pipeline(Path(args.session), Path(args.out), cfg, reporter=_reporter(args))
    print(f"done: results in {Path(args.out)}")
    for p in res.outputs:
        print(f"  {p}")
    return 0


# ----------------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------------
def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated frame numbers, got {text!r}")


def _float_range(text: str) -> tuple[float, float]:
    try:
        parts = [float(v) for v in text.split("-" if "-" in text.strip("-") else ",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B, e.g. 2.0-3.5, got {text!r}")
    if len(parts) == 1:
        parts = parts * 2
    return (parts[0], parts[1])


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (see deepsky config --defaults)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting, e.g. --set calibration.debayer=bilinear")
    p.add_argument("--workers", type=int, default=0, help="parallel workers (0 = all cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and results")
    p.add_argument("-v", "--verbose", action="store_true", help="print details of each step")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepsky",
        description="From a night of raw deep-sky sub-exposures to a finished astrophoto.",
    )
    parser.add_argument("--version", action="version", version=f"deepsky {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    p = sub.add_parser("inspect", help="list the frames of a session folder and what is wrong "
                                       "with them", description="Classify the frames of a session")
    p.add_argument("path", help="session folder (lights/ darks/ flats/ biases/, or mixed frames)")
    p.add_argument("--json", action="store_true", help="print the inventory as JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("simulate", help="write a realistic simulated session with its ground "
                                        "truth", description="Simulate a session with ground truth")
    p.add_argument("out", help="output folder")
    p.add_argument("--frames", type=int, help="number of light frames")
    p.add_argument("--size", help="frame size WIDTHxHEIGHT, e.g. 2048x2048")
    p.add_argument("--bayer", type=str.upper, choices=["RGGB", "GRBG", "GBRG", "BGGR", "NONE"],
                   help="CFA pattern of a colour sensor, or none for mono")
    p.add_argument("--seed", type=int, help="random seed (same seed, same session)")
    p.add_argument("--darks", type=int, help="number of darks")
    p.add_argument("--flats", type=int, help="number of flats (per filter)")
    p.add_argument("--biases", type=int, help="number of biases")
    p.add_argument("--darkflats", type=int, help="number of dark-flats")
    p.add_argument("--exposure", type=float, help="light exposure, s")
    p.add_argument("--dark-exposure", type=float, help="dark exposure, s (default: as lights)")
    p.add_argument("--filters", help="comma-separated filter names (several: one set of lights "
                                     "and flats each)")
    p.add_argument("--trails", type=_int_list, help="frames (0-based) with a satellite trail")
    p.add_argument("--cloudy", type=_int_list, help="frames (0-based) taken through cloud")
    p.add_argument("--trailed", type=_int_list, help="frames (0-based) with trailed stars")
    p.add_argument("--meridian-flip", type=int, help="number of frames after a meridian flip")
    p.add_argument("--shift", type=float, help="largest random shift between frames, px")
    p.add_argument("--rotation", type=float, help="largest random rotation, degrees")
    p.add_argument("--seeing", type=_float_range, help="seeing FWHM range in px, e.g. 2-3.5")
    p.add_argument("--layout", choices=["folders", "flat"],
                   help="folders: lights/ darks/ ...; flat: one folder with Light_ ... prefixes")
    p.add_argument("--workers", type=int, default=0, help="parallel workers (0 = all cores)")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("calibrate", help="build master bias/dark/flat and write calibrated "
                                         "lights", description="Calibrate the lights of a session")
    p.add_argument("session", help="session folder")
    p.add_argument("-o", "--out", required=True, help="output folder (masters/, calibrated/)")
    _add_run_options(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("register", help="calibrate, find stars, select frames and register "
                                        "them; writes frames.csv",
                       description="Calibrate, detect, select and register the lights")
    p.add_argument("session", help="session folder")
    p.add_argument("-o", "--out", required=True, help="output folder")
    _add_run_options(p)
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("stack", help="calibrate, register and integrate the lights into "
                                     "stack.fits", description="Everything up to the stack")
    p.add_argument("session", help="session folder")
    p.add_argument("-o", "--out", required=True, help="output folder")
    _add_run_options(p)
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("config", help="print the configuration (defaults, or as a file and "
                                      "--set would make it)")
    p.add_argument("--defaults", action="store_true", help="print every setting with its default")
    p.add_argument("--config", help="TOML config file to load")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting, e.g. --set calibration.debayer=bilinear")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("process", help="post-process a linear stack (gradient, colour, stretch, "
                                       "noise, deconvolution) into final images",
                       description="Post-process any linear FITS/TIFF/XISF image")
    p.add_argument("stack", help="linear image (e.g. stack.fits)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    _add_run_options(p)
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("run", help="the whole pipeline: raw frames to finished images and a "
                                   "report", description="Run the whole pipeline")
    p.add_argument("session", help="session folder")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--scheduler", help="threads, processes or tcp://HOST:PORT (Dask)")
    _add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="simulate a small colour session and run the pipeline on it")
    p.add_argument("--out", default="deepsky-demo", help="folder for the session and results "
                                                         "(default ./deepsky-demo)")
    p.add_argument("--workers", type=int, default=0, help="parallel workers (0 = all cores)")
    p.add_argument("--force", action="store_true", help="replace an existing demo folder")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and results")
    p.add_argument("-v", "--verbose", action="store_true", help="print details of each step")
    p.set_defaults(func=cmd_demo)
    return parser


def single_threaded_blas() -> None:
    """Ask the BLAS libraries numpy and scipy load (OpenBLAS, MKL) for one thread each,
    unless the user's environment says otherwise; effective when numpy is not yet imported
    (and in the worker processes a run starts, which inherit the setting).

    deepsky runs its own threads (a frame or a band each); its matrix products are small
    (star lists, 3x3 transforms). OpenBLAS keeps a pool of one thread per core that spins
    for a while after every call, and there are two of them (numpy's and scipy's): ~2 % of
    a run's CPU time doing nothing, taken from the threads doing the work (on 2 cores: 20
    frames 4.99 -> 4.79 s, 8.5 -> 8.0 s of CPU; docs/benchmarks.md)."""
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def main(argv: Sequence[str] | None = None) -> int:
    single_threaded_blas()
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    # A file-size limit (ulimit -f) must give a clear error, not kill the process.
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    from deepsky.parallel import keep_freed_memory

    keep_freed_memory()
    # No garbage collection while the command imports numpy, scipy, astropy and numba: the
    # ~190 000 objects they create triggered collections that walked them again and again
    # (a quarter of a second of a 1 s import). _freeze_imports() turns it back on.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        rc = int(args.func(args) or 0)
    except DeepskyError as err:
        print(f"deepsky: error: {err}", file=sys.stderr)
        _close_log(args, f"error: {err}")
        return 2
    except BrokenPipeError:  # output piped into a command that stopped reading (head)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        _close_log(args, "output pipe closed")
        return 1
    except KeyboardInterrupt:
        resumes = args.command in ("run", "stack", "register", "calibrate")
        print("deepsky: interrupted" + (" (finished steps are kept: the same command resumes)"
                                        if resumes else ""), file=sys.stderr)
        _close_log(args, "interrupted")
        return 130
    except BaseException as err:  # a bug: the traceback follows; the log says where it stopped
        _close_log(args, f"failed: {type(err).__name__}: {err}")
        raise
    finally:
        if gc_was_enabled:
            gc.enable()
    _close_log(args, f"finished (exit code {rc})")
    return rc


def entry() -> None:
    """The console command: :func:`main`, then a quick exit.

    Python's own shutdown tears down every module and runs the garbage collector over the
    ~180 000 objects numpy, scipy, astropy and numba leave behind: about half a second
    after the work is done, for nothing the command needs. So once :func:`main` has returned,
    the remaining worker threads are stopped and joined, the exit handlers run (logging,
    temporary folders, Dask's clients and clusters), the standard streams are flushed, and
    the process ends. An exception from :func:`main` (a bug: it prints its traceback) takes the
    ordinary way out."""
    import atexit
    import threading

    rc = main()
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None:  # not CPython: the ordinary shutdown
        sys.exit(rc)
    # What the interpreter's shutdown does first: the threading exit hooks (thread pools stop
    # their idle workers) and the join of the non-daemon threads.
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream
            stream.flush()
    os._exit(rc)


if __name__ == "__main__":  # pragma: no cover
    entry()
