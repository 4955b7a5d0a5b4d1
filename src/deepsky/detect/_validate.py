"""Small validating helpers shared by the detection modules (public boundary checks)."""

from __future__ import annotations

from typing import Any

import numpy as np

from deepsky.errors import ConfigError, InputError


def as_image(image: Any, name: str = "image", min_size: int = 8) -> np.ndarray:
    """A C-contiguous, native-endian float32 2-D view or copy of ``image``."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise InputError(None, f"{name} must be a 2-D array (H, W), got shape {arr.shape}")
    if arr.shape[0] < min_size or arr.shape[1] < min_size:
        raise InputError(None, f"{name} is too small: shape {arr.shape} (at least "
                               f"{min_size} x {min_size})")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(None, f"{name} must hold real numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_mask(mask: Any, shape: tuple[int, int], name: str = "mask") -> np.ndarray | None:
    """``None`` or a C-contiguous bool array of ``shape`` (True = excluded)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != shape:
        raise InputError(None, f"{name} has shape {m.shape}, the image has {shape}")
    return np.ascontiguousarray(m, dtype=bool)


def positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> Any:
    """Check that an option is a (strictly) positive finite number."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        ok = bool(np.isfinite(value)) and (value >= 0 if allow_zero else value > 0)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        what = "integer" if integer else "number"
        sign = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite {what} {sign}, got {value!r}")
    return int(value) if integer else float(value)


def in_range(name: str, value: Any, lo: float, hi: float) -> float:
    """Check that an option is a finite number within ``[lo, hi]``."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)
