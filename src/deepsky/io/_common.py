"""Small helpers shared by the readers and writers of :mod:`deepsky.io` (not public)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deepsky.errors import InputError, OutputError


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
