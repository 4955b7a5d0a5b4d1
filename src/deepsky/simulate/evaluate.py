"""Measure processed frames against the simulator's truth.

These are the yardsticks of deepsky's tests and benchmarks, public so that a user can check
settings on a simulated session too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepsky.simulate.model import SessionModel
from deepsky.simulate.truth import Truth


def flat_scale(model: SessionModel, bayer: str | None) -> np.ndarray:
    """Per-pixel factor a correctly calibrated light carries relative to the noiseless
    light: the true flat's level in the central 50 % of the field, per CFA channel on a
    mosaic (what :func:`deepsky.calibrate.masters.normalize_per_channel` divides by)."""
    flat = model.flat_field()
    h, w = flat.shape
    out = np.ones_like(flat)
    planes = [(slice(dy, None, 2), slice(dx, None, 2)) for dy in (0, 1) for dx in (0, 1)] \
        if bayer else [(slice(None), slice(None))]
    for sl in planes:
        p = flat[sl]
        ph, pw = p.shape
        out[sl] = np.median(p[ph // 4: ph - ph // 4, pw // 4: pw - pw // 4])
    return out


def _box_medians(img: np.ndarray, mask: np.ndarray, box: int) -> np.ndarray:
    h, w = img.shape
    out = []
    for y in range(0, h - box + 1, box):
        for x in range(0, w - box + 1, box):
            v = img[y:y + box, x:x + box][~mask[y:y + box, x:x + box]]
            if v.size > box * box // 4:
                out.append(np.median(v))
    return np.array(out)


def calibration_report(
    model: SessionModel,
    truth: Truth,
    calibrated: list[np.ndarray],
    indices: list[int],
    *,
    defects: np.ndarray | None = None,
    bayer: str | None = None,
    box: int = 64,
) -> dict[str, Any]:
    """How well calibrated lights (ADU, float, mosaic for colour) match the truth.

    Returns
    -------
    dict with
      ``flat_residual_pct``: largest |median residual| of ``box`` x ``box`` boxes (stars
        masked), averaged over the lights, in % of the sky level;
      ``dust_residual_sigma``: largest |mean residual| inside a dust shadow, in units of the
        per-pixel noise; ``dust_residual_sem``: the same in units of the standard error of
        that mean;
      ``dark_residual_rn``: |mean residual| of the frame in units of the read noise;
      ``hot_corrected_pct``: injected hot pixels whose calibrated value is within 5 sigma of
        the truth; ``good_touched_pct``: defect-map pixels that are not injected defects, in %
        of all pixels; ``noise_e``: per-pixel noise of the residual (e-).
    """
    s = truth.sensor
    g = s.egain
    scale = flat_scale(model, bayer)
    resid = []
    for cal, i in zip(calibrated, indices):
        expected = model.render_noiseless_light(i).astype(np.float64) * scale
        resid.append(cal.astype(np.float64) * g - expected)
    r = np.mean(resid, axis=0)  # average of the lights: less noise, same systematics
    exp0 = model.render_noiseless_light(indices[0]).astype(np.float64) * scale
    sky = float(np.median(exp0))
    hot_xy = np.array([(int(round(x)), int(round(y))) for x, y, _ in s.hot_pixels], int)
    cold_xy = np.array([(int(round(x)), int(round(y))) for x, y in s.cold_pixels], int)
    bad_truth = np.zeros(r.shape, bool)
    for arr in (hot_xy, cold_xy):
        if arr.size:
            bad_truth[arr[:, 1], arr[:, 0]] = True
    from scipy import ndimage

    # Stars: well above the sky of their own CFA channel (the channels' skies differ).
    level = np.empty_like(exp0)
    planes = [(slice(dy, None, 2), slice(dx, None, 2)) for dy in (0, 1) for dx in (0, 1)] \
        if bayer else [(slice(None), slice(None))]
    for sl in planes:
        level[sl] = np.median(exp0[sl])
    stars = exp0 > level * 1.05
    stars = ndimage.binary_dilation(stars, iterations=2) | bad_truth
    clean = r[~stars]
    noise = 1.4826 * float(np.median(np.abs(clean - np.median(clean))))
    noise_single = noise * np.sqrt(len(resid))
    boxes = _box_medians(r, stars, box)
    out: dict[str, Any] = {
        "sky_e": sky,
        "noise_e": noise_single,
        "flat_residual_pct": float(np.max(np.abs(boxes)) / sky * 100) if boxes.size else float("nan"),
        "dark_residual_rn": float(abs(np.mean(clean)) / s.read_noise),
    }
    yy, xx = np.mgrid[0:r.shape[0], 0:r.shape[1]]
    worst_sig, worst_sem = 0.0, 0.0
    for x, y, rad, _depth in s.dust:
        inside = (np.hypot(xx - x, yy - y) <= rad) & ~stars
        if inside.sum() < 10:
            continue
        m = float(np.mean(r[inside]))
        worst_sig = max(worst_sig, abs(m) / noise)
        worst_sem = max(worst_sem, abs(m) / (noise / np.sqrt(inside.sum())))
    out["dust_residual_sigma"] = worst_sig
    out["dust_residual_sem"] = worst_sem
    if hot_xy.size:
        vals = r[hot_xy[:, 1], hot_xy[:, 0]]
        local = np.sqrt(np.maximum(exp0[hot_xy[:, 1], hot_xy[:, 0]], 1.0) + s.read_noise ** 2)
        local = local / np.sqrt(len(resid))
        out["hot_corrected_pct"] = float(np.mean(np.abs(vals) < 5 * np.maximum(local, noise)) * 100)
        out["n_hot"] = int(len(hot_xy))
    if defects is not None:
        touched = defects & ~bad_truth
        out["good_touched_pct"] = float(touched.sum() / touched.size * 100)
        out["n_defects"] = int(defects.sum())
    return out


def trail_pixels(truth: Truth, reference_index: int, shape: tuple[int, int], *,
                 origin: tuple[int, int] = (0, 0), extra: float = 2.0) -> np.ndarray:
    """Mask of the output grid covered by the injected satellite trails of all lights
    (within the trail's FWHM plus ``extra`` px), for a stack registered on light
    ``reference_index`` with its grid origin at ``origin``."""
    from deepsky.integrate.trails import Trail, trail_mask
    from deepsky.types import Transform

    to_ref = Transform.translation(-origin[0], -origin[1]) @ \
        truth.transform(reference_index).inverse()
    trails = []
    for i, rec in enumerate(truth.frames("light")):
        sat = rec.satellite
        if sat is not None:
            t = Trail(sat.x0, sat.y0, sat.x1, sat.y1, sat.width, 0.0)
            trails.append(t.transformed(to_ref @ truth.transform(i)))
    return trail_mask(trails, (0, 0), shape, margin=extra)


def background_noise(image: np.ndarray, mask: np.ndarray | None = None, size: int = 9) -> float:
    """Per-pixel noise of an image's background: robust sigma of the image minus its
    median-filtered self, outside ``mask`` (True = excluded)."""
    from scipy import ndimage

    img = np.nan_to_num(image.astype(np.float32), nan=float(np.nanmedian(image)))
    hp = img - ndimage.median_filter(img, size=size)
    # A median filter of a noise field leaves sqrt(1 + pi/(2 n)) of the noise in the
    # difference; correct for it so the figure is the image's own noise.
    corr = np.sqrt(1 + np.pi / (2 * size * size))
    vals = hp[~mask] if mask is not None else hp.ravel()
    vals = vals[np.isfinite(vals)]
    return float(1.4826 * np.median(np.abs(vals - np.median(vals))) / corr)
