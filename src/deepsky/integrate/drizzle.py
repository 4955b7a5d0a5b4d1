"""Drizzle (STScI's ``drizzle`` package): frames dropped onto a finer output grid, and Bayer
drizzle, which builds colour straight from the CFA mosaics without debayering.

Outliers cannot be rejected pixel by pixel while drizzling (each output pixel receives
fractions of many input pixels), so, as astrodrizzle does, the ordinary stack is "blotted"
back onto each frame and the frame's pixels that differ from it by more than ``k`` sigma (plus
the frame's trails) get zero weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from deepsky.calibrate.apply import calibrate_frame
from deepsky.integrate.stack import FrameInput
from deepsky.integrate.trails import trail_mask
from deepsky.register.warp import warp_image
from deepsky.types import Transform, bayer_channel_masks


@dataclass(frozen=True)
class DrizzlePlan:
    scale: float = 2.0
    pixfrac: float = 0.8
    kernel: str = "square"
    bayer: bool = False  # build colour from the CFA mosaics (Bayer drizzle)
    outlier_sigma: float = 4.0
    trail_margin: float = 3.0


@dataclass
class DrizzleResult:
    data: np.ndarray  # (C, Hs, Ws) float32
    weight: np.ndarray  # (C, Hs, Ws) float32


def output_transform(scale: float) -> Transform:
    """Reference pixel (X, Y) -> drizzled pixel: the centre of reference pixel 0 is the centre
    of the first ``scale`` x ``scale`` block of output pixels."""
    return Transform(np.array([[scale, 0, (scale - 1) / 2], [0, scale, (scale - 1) / 2],
                               [0, 0, 1.0]]))


def _pixmap(t: Transform, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    pts = t.apply(np.stack([xx.ravel(), yy.ravel()], axis=1))
    return pts.reshape(h, w, 2).astype(np.float64)


def _derivative(img: np.ndarray) -> np.ndarray:
    """Largest absolute difference of each pixel to its 4 neighbours (astrodrizzle's blot
    derivative): where the stack changes fast, a sub-pixel misfit or a change of seeing
    makes large, legitimate differences."""
    p = np.pad(np.nan_to_num(img), 1, mode="edge")
    c = p[1:-1, 1:-1]
    return np.max(np.abs(np.stack([p[:-2, 1:-1] - c, p[2:, 1:-1] - c, p[1:-1, :-2] - c,
                                   p[1:-1, 2:] - c])), axis=0)


def _outliers(plane: np.ndarray, blot: np.ndarray, sel: np.ndarray | None, k: float,
              scale: float = 1.2) -> np.ndarray:
    """Pixels differing from the blotted stack by more than ``k`` noise sigmas plus
    ``scale`` times the stack's local derivative (cosmic rays, satellites, hot pixels)."""
    diff = plane - blot
    sigma = _noise(diff if sel is None else diff[sel])
    return np.abs(diff) > k * sigma + scale * _derivative(blot)


def _noise(data: np.ndarray) -> float:
    v = data[np.isfinite(data)][::7]
    if v.size == 0:
        return 1.0
    med = np.median(v)
    return float(1.4826 * np.median(np.abs(v - med))) or 1.0


def drizzle_frames(inputs: Sequence[FrameInput], plan: DrizzlePlan, *, out_shape: tuple[int, int],
                   channels: int, stack: np.ndarray, progress: Any = None) -> DrizzleResult:
    """Drizzle every frame onto a grid ``scale`` times finer than ``out_shape``.

    ``stack`` is the ordinary (C, H, W) stack on the same output grid, used to find each
    frame's outliers. ``inputs[i].transform`` maps frame pixels to the output grid.
    """
    from drizzle.resample import Drizzle

    s = plan.scale
    hs, ws = int(round(out_shape[0] * s)), int(round(out_shape[1] * s))
    up = output_transform(s)
    drz = [Drizzle(kernel=plan.kernel, out_shape=(hs, ws), disable_ctx=True, fillval=np.nan)
           for _ in range(channels)]
    stack3 = stack if stack.ndim == 3 else stack[None]
    for fi in inputs:
        cal = fi.cal()
        raw = fi.source.read()
        data = raw if cal is None else calibrate_frame(raw, cal, dark_scale=fi.dark_scale,
                                                       cosmetic=fi.cosmetic, overwrite=True)
        del raw
        h, w = data.shape[-2:]
        mosaic = data.ndim == 2 and fi.bayer is not None
        # The stack seen from this frame: outliers and trails get no weight.
        blot, _ = warp_image(stack3, fi.transform.inverse(), (h, w), method="bilinear",
                             clamp=False, fill=np.nan, parallel=False)
        bad = np.zeros((h, w), bool)
        if fi.trails:
            inv = fi.transform.inverse()
            bad |= trail_mask([t.transformed(inv) for t in fi.trails], (0, 0), (h, w),
                              margin=plan.trail_margin)
        pixmap = _pixmap(up @ fi.transform, h, w)
        mul = np.broadcast_to(np.asarray(fi.mul, np.float32), (channels,))
        add = np.broadcast_to(np.asarray(fi.add, np.float32), (channels,))
        if mosaic:
            masks = bayer_channel_masks(fi.bayer, (h, w))
            for c in range(channels):
                plane = data * mul[c] + add[c]
                out = _outliers(plane, blot[c], masks[c], plan.outlier_sigma)
                ok = masks[c] & ~bad & ~out & np.isfinite(plane)
                wmap = ok.astype(np.float32) * np.float32(fi.weight)
                drz[c].add_image(np.nan_to_num(plane).astype(np.float32), exptime=1.0,
                                 pixmap=pixmap, weight_map=wmap, pixfrac=plan.pixfrac,
                                 in_units="cps")
        else:
            planes = data if data.ndim == 3 else data[None]
            for c in range(channels):
                plane = planes[min(c, len(planes) - 1)] * mul[c] + add[c]
                out = _outliers(plane, blot[c], None, plan.outlier_sigma)
                ok = ~bad & ~out & np.isfinite(plane)
                wmap = ok.astype(np.float32) * np.float32(fi.weight)
                drz[c].add_image(np.nan_to_num(plane).astype(np.float32), exptime=1.0,
                                 pixmap=pixmap, weight_map=wmap, pixfrac=plan.pixfrac,
                                 in_units="cps")
        if progress is not None:
            progress()
    data = np.stack([d.out_img for d in drz]).astype(np.float32)
    wht = np.stack([d.out_wht for d in drz]).astype(np.float32)
    data[wht <= 0] = np.nan
    return DrizzleResult(data, wht)
