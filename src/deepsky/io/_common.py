"""Small helpers shared by the readers and writers of :mod:`deepsky.io` (not public)."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from deepsky.errors import InputError, OutputError


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved: list = []


@contextlib.contextmanager
def no_warnings() -> Iterator[None]:
    """Silence warnings for the block (the libraries' chatter about non-standard cards and
    tags: the readers' own checks turn what matters into an InputError), safely from many
    threads at once. ``warnings.catch_warnings`` saves and restores the process-wide filter
    list, so blocks overlapping on two threads restore each other's state: one frame's header
    read while another ended its block warned after all (an error under pytest's
    ``filterwarnings = error``: a flaky test). Here the first block to start installs the
    filter and the last to end restores the list."""
    global _quiet_depth, _quiet_saved
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved = warnings.filters[:]
            warnings.simplefilter("ignore")
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                warnings.filters[:] = _quiet_saved
                getattr(warnings, "_filters_mutated", lambda: None)()  # drop cached lookups


def check_input_file(path: Path, what: str) -> int:
    """Refuse a missing, unreadable, folder or empty input; return its size in bytes."""
    try:
        st = path.stat()
    except FileNotFoundError as err:
        raise InputError(path, "file not found") from err
    except OSError as err:
        raise InputError(path, f"cannot access the file ({err.strerror or err})") from err
    if path.is_dir():
        raise InputError(path, f"is a folder, not a {what} file")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied (file is not readable)")
    if st.st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    return st.st_size


def is_gzip(path: Path) -> bool:
    """Whether the file is a gzip stream (by its first two bytes, whatever its name)."""
    return read_head(path, 2) == b"\x1f\x8b"


def read_head(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of a file (for recognising its format)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as err:
        raise InputError(path, f"cannot read the file ({err.strerror or err})") from err


def short(err: BaseException) -> str:
    """First line of an exception's message (or its class name), at most 160 characters."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:160]


def owned_float32(a: np.ndarray) -> np.ndarray:
    """A C-contiguous, native-endian float32 array that owns its memory."""
    out = np.ascontiguousarray(a, dtype=np.float32)
    if out.base is not None or not out.flags.owndata:
        out = out.copy()
    return out


def check_image_array(data: object, path: Path) -> np.ndarray:
    """``data`` as an array of shape ``(H, W)`` or ``(3, H, W)``, or an :class:`OutputError`."""
    arr = np.asarray(data)
    if arr.dtype.kind not in "biuf":
        raise OutputError(f"{path}: cannot write data of type {arr.dtype} (numbers expected)")
    ok = (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[0] == 3)) and arr.size > 0
    if not ok:
        raise OutputError(f"{path}: cannot write an array of shape {arr.shape} "
                          "(expected (H, W) mono or (3, H, W) colour)")
    return arr


def to_integer(arr: np.ndarray, dtype: type[np.integer]) -> np.ndarray:
    """Round and clip to the range of an unsigned integer type; NaN becomes 0."""
    info = np.iinfo(dtype)
    if arr.dtype.kind in "iub":
        return np.clip(arr, info.min, info.max).astype(dtype)
    a = np.nan_to_num(np.asarray(arr, dtype=np.float64), nan=0.0, posinf=info.max,
                      neginf=info.min)
    return np.clip(np.rint(a), info.min, info.max).astype(dtype)
