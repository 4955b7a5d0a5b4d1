"""Phase correlation: the frame-to-reference offset (and rotation) from the whole image.

The fallback for frames with too few stars to match (thin clouds, very short exposures,
bad focus): it needs no detection, only overlapping structure. Both images are reduced to
at most ``max_size`` pixels on their long side, their background removed and their bright
end compressed (square root of the clipped signal) so that a few bright stars do not
dominate, and a Hann window suppresses the edges.

* Translation: ``cv2.phaseCorrelate`` on the prepared images.
* Rotation (``rotation=True``): the magnitude spectra are resampled to log-polar
  coordinates, where a rotation (and a scale) becomes a shift; its phase correlation gives
  the angle up to 180 degrees (to a few tenths of a degree), polished to ~0.01 degree by
  maximising the translation correlation over nearby angles; both candidates (angle and angle + 180) are tried and the
  stronger correlation kept. Mirrored frames are not handled (star matching handles them).

The precision is a fraction of a reduced pixel; the registration refines the result on
stars when it can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from deepsky.errors import ConfigError, InputError
from deepsky.types import Transform

__all__ = ["PhaseResult", "phase_correlate"]


@dataclass(frozen=True)
class PhaseResult:
    """``transform`` maps frame pixels to reference pixels; ``response`` is the height of the
    normalised correlation peak (0-1; above ~0.05 the peak is usually real)."""

    transform: Transform
    response: float
    angle_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)


def phase_correlate(
    image: Any,
    ref_image: Any,
    *,
    rotation: bool = False,
    max_size: int = 1024,
) -> PhaseResult:
    """Estimate the transform of ``image`` onto ``ref_image`` by phase correlation.

    Parameters
    ----------
    image, ref_image : array_like, shape (H, W)
        Frame and reference (mono, or a luminance of colour data), same shape.
    rotation : bool
        Also estimate a rotation (log-polar spectra); otherwise translation only.
    max_size : int
        Long side in pixels of the reduced images the correlation runs on.

    Returns
    -------
    PhaseResult
        The transform (a translation, or a rotation about the image centre then a
        translation) and the correlation response.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> ref = np.zeros((256, 256), np.float32)
    >>> for x, y in rng.uniform(20, 236, (40, 2)):
    ...     ref[int(y), int(x)] = 1000.0
    >>> frame = np.roll(ref, (5, -7), axis=(0, 1))
    >>> r = phase_correlate(frame, ref)
    >>> np.round(r.transform.apply([[0.0, 0.0]])).tolist()
    [[7.0, -5.0]]
    """
    a = _as_2d(image, "image")
    b = _as_2d(ref_image, "ref_image")
    if a.shape != b.shape:
        raise InputError(None, f"image {a.shape} and ref_image {b.shape} must have one shape")
    if max_size < 32:
        raise ConfigError(f"max_size must be at least 32, got {max_size!r}")
    f = max(1, int(math.ceil(max(a.shape) / max_size)))
    pa, pb = _prepare(a, f), _prepare(b, f)
    win = cv2.createHanningWindow((pa.shape[1], pa.shape[0]), cv2.CV_32F)
    h, w = a.shape
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    if not rotation:
        (dx, dy), resp = _phase_correlate(pa, pb, win)
        d = _to_full(dx, dy, f)
        return PhaseResult(Transform.translation(*d), float(resp), 0.0, d)
    angle = _rotation(pa, pb, win)
    rc = ((pa.shape[1] - 1) / 2.0, (pa.shape[0] - 1) / 2.0)

    def shift_at(ang: float) -> tuple[tuple[float, float], float]:
        # rotate the reduced frame into the reference orientation, then find the shift
        m = cv2.getRotationMatrix2D(rc, -ang, 1.0)
        pr = cv2.warpAffine(pa, m, (pa.shape[1], pa.shape[0]), flags=cv2.INTER_LINEAR)
        (dx, dy), resp = _phase_correlate(pr, pb, win)
        return (dx, dy), float(resp)

    best: PhaseResult | None = None
    for ang in (angle, angle + 180.0):
        ang = (ang + 180.0) % 360.0 - 180.0
        ang, _ = _refine_angle(shift_at, ang)
        (dx, dy), resp = shift_at(ang)
        d = _to_full(dx, dy, f)
        rot = Transform.rotation_about(ang, *centre)
        res = PhaseResult(Transform.translation(*d) @ rot, resp, ang, d)
        if best is None or res.response > best.response:
            best = res
    assert best is not None
    return best


# ----------------------------------------------------------------------------------------------
def _as_2d(img: Any, name: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 2 or min(arr.shape) < 16:
        raise InputError(None, f"{name} must be a 2-D array of at least 16 x 16, "
                               f"got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _phase_correlate(a: np.ndarray, b: np.ndarray, win: np.ndarray | None):
    """``cv2.phaseCorrelate`` on copies: with a window, OpenCV 5 multiplies its inputs by
    the window in place, which would corrupt every later correlation of the same arrays."""
    if win is None:
        return cv2.phaseCorrelate(a.copy(), b.copy())
    return cv2.phaseCorrelate(a.copy(), b.copy(), win)


def _to_full(dx: float, dy: float, f: int) -> tuple[float, float]:
    # a reduced pixel j covers full pixels f*j .. f*j + f - 1: centres map as x = f*u + (f-1)/2,
    # so a shift scales by f exactly
    return float(dx * f), float(dy * f)


def _prepare(img: np.ndarray, f: int) -> np.ndarray:
    a = np.nan_to_num(img, nan=float(np.nanmedian(img)))
    if f > 1:
        h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
        a = cv2.resize(a[:h, :w], (w // f, h // f), interpolation=cv2.INTER_AREA)
    # remove a smooth background, keep the positive signal compressed
    bg = cv2.blur(a, (31, 31), borderType=cv2.BORDER_REFLECT)
    bg = cv2.medianBlur(bg, 5)
    s = a - bg
    noise = 1.4826 * float(np.median(np.abs(s - np.median(s)))) + 1e-12
    s = np.clip(s / noise, 0.0, 1000.0)
    return np.sqrt(s).astype(np.float32)


def _refine_angle(shift_at, angle: float) -> tuple[float, float]:
    """Polish the log-polar angle (good to a few tenths of a degree) by maximising the
    translation correlation's response: at each step (0.5, 0.25, 0.12, 0.06 degree) move to
    the better neighbour, or to the parabola's peak through the three responses."""
    resp0 = shift_at(angle)[1]
    for step in (0.5, 0.25, 0.12, 0.06):
        lo, hi = shift_at(angle - step)[1], shift_at(angle + step)[1]
        den = lo - 2.0 * resp0 + hi
        if den < 0:
            off = float(np.clip(0.5 * (lo - hi) / den, -1.0, 1.0)) * step
        else:
            off = step if hi > lo else -step
        cands = [(resp0, angle), (lo, angle - step), (hi, angle + step)]
        if off not in (0.0, step, -step):
            cands.append((shift_at(angle + off)[1], angle + off))
        resp0, angle = max(cands)
    return angle, resp0


def _rotation(pa: np.ndarray, pb: np.ndarray, win: np.ndarray) -> float:
    """Rotation angle (degrees, modulo 180) of frame onto reference from log-polar spectra."""
    def spectrum(p: np.ndarray) -> np.ndarray:
        f = np.fft.fftshift(np.abs(np.fft.fft2(p * win)))
        h, w = f.shape
        yy, xx = np.mgrid[0:h, 0:w]
        r = np.hypot((xx - w / 2) / w, (yy - h / 2) / h)
        return (np.log1p(f) * np.clip(r * 4, 0, 1)).astype(np.float32)  # high-pass

    fa, fb = spectrum(pa), spectrum(pb)
    h, w = fa.shape
    n_theta = 720
    n_r = max(h, w) // 2
    centre = (w / 2.0, h / 2.0)
    radius = min(h, w) / 2.0
    flags = cv2.WARP_POLAR_LOG | cv2.INTER_LINEAR | cv2.WARP_FILL_OUTLIERS
    la = cv2.warpPolar(fa, (n_r, n_theta), centre, radius, flags)
    lb = cv2.warpPolar(fb, (n_r, n_theta), centre, radius, flags)
    (_, dtheta), _ = _phase_correlate(la, lb, None)
    # rows are angle: a shift of dtheta rows is a rotation by dtheta * 360 / n_theta degrees;
    # the spectrum of the rotated image turns the same way as the image
    return float(dtheta * 360.0 / n_theta)
