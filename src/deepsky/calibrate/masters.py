"""Master calibration frames: many frames combined into one, tile by tile.

A master is combined with outlier rejection (winsorized sigma clipping by default; the median
for 2-4 frames, where clipping has nothing to work with), in float32, one band of rows at a
time: each frame's band is read once, so 100 frames of 24 MP need only ``memory_mb``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from deepsky.errors import CalibrationError
from deepsky.integrate.reject import combine
from deepsky.io.sources import FrameSource
from deepsky.medians import median
from deepsky.parallel import map_threads

# Bytes per pixel per frame while combining: the float32 block plus the kernel's working set.
_BYTES_PER_SAMPLE = 4 * 2
# Largest block read at once, whatever the memory budget: bands of a few hundred rows are as
# fast to combine as the whole frame, and a small block is touched (and zeroed by the kernel)
# once and reused for every band, instead of hundreds of megabytes of fresh memory per master.
_BLOCK_MB = 64


@dataclass(frozen=True)
class Master:
    """A combined calibration frame."""

    data: np.ndarray
    kind: str
    n_frames: int
    method: str
    rejected_fraction: float
    exposure: float | None = None
    temperature: float | None = None
    gain: float | None = None
    filter: str | None = None
    bayer: str | None = None


def effective_method(method: str, n: int) -> str:
    """Clipping needs samples: with 2-4 frames use the median, with 1 the frame itself."""
    if n <= 1:
        return "mean"
    if n <= 4 and method not in ("mean", "median"):
        return "median"
    return method


def band_rows(n_frames: int, width: int, height: int, channels: int, memory_mb: float,
              bytes_per_sample: int = _BYTES_PER_SAMPLE, min_rows: int = 8) -> int:
    """How many rows of ``n_frames`` frames fit in ``memory_mb`` at once."""
    per_row = max(1, n_frames) * width * channels * bytes_per_sample
    rows = int(memory_mb * 1024 * 1024 // per_row)
    return int(min(height, max(min_rows, rows)))


def combine_sources(
    sources: Sequence[FrameSource],
    *,
    kind: str,
    method: str = "winsorized",
    sigma: float = 3.0,
    memory_mb: float = 1024,
    prepare: Callable[[np.ndarray, int, int, int], np.ndarray] | None = None,
) -> Master:
    """Combine frames band by band into a :class:`Master`.

    ``prepare(band, index, y0, y1)`` may transform each frame's band before combination
    (subtract a bias, normalise a flat); it receives a fresh array it may modify.
    """
    if not sources:
        raise CalibrationError(f"no {kind} frames to combine")
    first = sources[0].meta
    shape = first.shape
    for s in sources[1:]:
        if s.meta.shape != shape:
            raise CalibrationError(f"{s.path}: {kind} frame is {s.meta.width}x{s.meta.height}, "
                                   f"the others are {first.width}x{first.height}")
    n = len(sources)
    how = effective_method(method, n)
    channels = first.channels
    out = np.empty(shape, np.float32)
    rows = band_rows(n, first.width, first.height, channels, min(memory_mb, _BLOCK_MB))
    rejected = 0
    buf = np.empty(n * int(np.prod(shape[:-2])) * rows * shape[-1], np.float32)
    for y0 in range(0, first.height, rows):
        y1 = min(first.height, y0 + rows)
        band_shape = (n,) + shape[:-2] + (y1 - y0, shape[-1])
        block = buf[: int(np.prod(band_shape))].reshape(band_shape)  # contiguous

        def fill(i: int) -> None:
            if prepare is None:
                sources[i].read_rows_into(y0, y1, block[i])
            else:
                block[i] = prepare(sources[i].read_rows(y0, y1), i, y0, y1)

        map_threads(fill, range(n))
        if channels == 1:
            res, lo, hi, _ = combine(block, method=how, low=sigma, high=sigma)
            out[y0:y1] = res
            rejected += int(lo.sum(dtype=np.int64) + hi.sum(dtype=np.int64))
        else:
            for c in range(channels):
                res, lo, hi, _ = combine(np.ascontiguousarray(block[:, c]), method=how,
                                         low=sigma, high=sigma)
                out[c, y0:y1] = res
                rejected += int(lo.sum(dtype=np.int64) + hi.sum(dtype=np.int64))
    total = n * int(np.prod(shape))
    return Master(
        data=out, kind=kind, n_frames=n, method=how,
        rejected_fraction=rejected / total if total else 0.0,
        exposure=first.exposure, temperature=_median([s.meta.temperature for s in sources]),
        gain=first.gain_or_iso, filter=first.filter, bayer=first.bayer,
    )


def _median(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


def frame_level(source: FrameSource, *, subtract: np.ndarray | None = None,
                stride: int = 4) -> float:
    """Robust level (median) of a frame, from a strided sample of its pixels."""
    sample = source.read_sample(stride)
    if subtract is not None:
        sample = sample - subtract[..., ::stride, ::stride]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        raise CalibrationError(f"{source.path}: no valid pixels")
    return float(median(sample))


def normalize_per_channel(flat: np.ndarray, bayer: str | None, *, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Divide a flat by its level, per CFA channel for a mosaic (so the flat does not change
    the colour balance), globally for mono; return the normalised flat and the mask of pixels
    below ``floor`` (set to 1 there: they are corrected as defects, never divided by)."""
    out = flat.astype(np.float32, copy=True)
    if bayer and out.ndim == 2:
        for dy in (0, 1):
            for dx in (0, 1):
                plane = out[dy::2, dx::2]
                level = _robust_level(plane)
                plane /= np.float32(level)
    elif out.ndim == 3:
        for c in range(out.shape[0]):
            out[c] /= np.float32(_robust_level(out[c]))
    else:
        out /= np.float32(_robust_level(out))
    low = ~(out >= floor)  # also catches NaN
    out[low] = 1.0
    return out, low


def _robust_level(plane: np.ndarray) -> float:
    """Median of the central 50% of the frame (the best-illuminated, least vignetted part)."""
    h, w = plane.shape
    core = plane[h // 4: h - h // 4, w // 4: w - w // 4]
    vals = core[np.isfinite(core)]
    if vals.size == 0:
        raise CalibrationError("master flat has no valid pixels")
    level = float(median(vals))
    if not level > 0:
        raise CalibrationError(f"master flat level is {level:g}: the flats are not exposed "
                               "(or the bias/dark-flat is wrong)")
    return level
