"""Selection, reference choice and registration of the analysed lights.

All lights of one camera geometry (size and binning) are registered to one reference, across
filters, so that the stacks of different filters line up for a colour combination.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from deepsky.config import Config
from deepsky.detect.quality import choose_reference, select_frames
from deepsky.errors import ConfigError, RegistrationError
from deepsky.io.sources import FrameSource
from deepsky.parallel import map_threads
from deepsky.pipeline.analysis import FrameAnalysis
from deepsky.register.match import refine_match
from deepsky.register.phase import phase_correlate
from deepsky.register.register import centroid_sigma, register_frame
from deepsky.types import FrameMeta, Registration, StarList, Transform


@dataclass
class LightRecord:
    """One light through selection and registration (a row of frames.csv)."""

    meta: FrameMeta
    analysis: FrameAnalysis
    source: FrameSource | None = None
    status: str = "used"
    reason: str = ""
    registration: Registration | None = None
    flux_ratio: float = float("nan")  # frame star flux / reference star flux
    weight: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # the file's path inside the session (unique when names repeat)

    @property
    def name(self) -> str:
        return self.label or Path(self.analysis.path).name

    @property
    def used(self) -> bool:
        return self.status == "used"

    def reject(self, reason: str) -> None:
        self.status = "rejected"
        self.reason = reason


def find_reference(records: list[LightRecord], wanted: str) -> int:
    """Index of the light the user named (file name, with or without extension)."""
    for i, r in enumerate(records):
        p = Path(r.analysis.path)
        if wanted in (p.name, p.stem, str(p), r.name):
            return i
    sample = ", ".join(r.name for r in records[:5])
    raise ConfigError(f"registration.reference = {wanted!r} is not one of the lights "
                      f"(e.g. {sample})")


def flux_ratio(stars: StarList, ref: StarList, t: Transform, *, radius: float = 1.5,
               min_pairs: int = 3) -> float:
    """Median flux ratio (frame / reference) of unsaturated stars matched by position."""
    if len(stars) == 0 or len(ref) == 0:
        return float("nan")
    good = ~stars.saturated & np.isfinite(stars.flux) & (stars.flux > 0)
    rgood = ~ref.saturated & np.isfinite(ref.flux) & (ref.flux > 0)
    if good.sum() < min_pairs or rgood.sum() < min_pairs:
        return float("nan")
    xy = t.apply(stars.xy[good])
    tree = cKDTree(ref.xy[rgood])
    d, j = tree.query(xy, distance_upper_bound=radius)
    ok = np.isfinite(d)
    if ok.sum() < min_pairs:
        return float("nan")
    ratios = stars.flux[good][ok] / ref.flux[rgood][j[ok]]
    # The brighter half: the faint stars' fluxes are noisy.
    snr = stars.snr[good][ok]
    if ok.sum() >= 2 * min_pairs:
        ratios = ratios[snr >= np.median(snr)]
    return float(np.median(ratios))


def _agreement(low: np.ndarray, low_ref: np.ndarray, t_low: Transform) -> float:
    """Normalised correlation of the high-passed binned frame, warped by ``t_low``, with the
    reference's, over their overlap: near 1 for a right transform, near 0 for a wrong one."""
    import cv2

    from deepsky.register.warp import warp_image

    def hp(img: np.ndarray) -> np.ndarray:
        a = np.nan_to_num(img.astype(np.float32), nan=float(np.nanmedian(img)))
        return a - cv2.GaussianBlur(a, (0, 0), 4.0)

    warped, foot = warp_image(hp(low), t_low, low_ref.shape, method="bilinear", clamp=False,
                              fill=np.nan, parallel=False)
    ref = hp(low_ref)
    ok = np.isfinite(warped) & (foot > 0.99)
    if ok.sum() < 0.2 * ok.size:
        return 0.0
    a = warped[ok] - warped[ok].mean()
    b = ref[ok] - ref[ok].mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def _phase_register(rec: LightRecord, ref: LightRecord, cfg: Config, first: Registration
                    ) -> Registration:
    """Frames with too few stars: phase correlation of the binned luminances (translation,
    and translation with rotation), the candidate that makes the frame look most like the
    reference kept, then (when some stars exist) refined on the stars from there.

    A phase-only registration is accepted only when the warped frame correlates clearly with
    the reference: a wrong transform would put every star of the frame beside its place in
    the stack."""
    f = rec.analysis.lowres_factor
    low = np.nan_to_num(np.load(rec.analysis.lowres))
    low_ref = np.nan_to_num(np.load(ref.analysis.lowres))
    s = Transform(np.array([[f, 0, (f - 1) / 2], [0, f, (f - 1) / 2], [0, 0, 1.0]]))
    best = None
    for rotation in (False, True):
        ph = phase_correlate(low, low_ref, rotation=rotation)
        score = _agreement(low, low_ref, ph.transform)
        if best is None or score > best[0]:
            best = (score, ph)
    score, ph = best
    t_full = s @ ph.transform @ s.inverse()
    stars, rstars = rec.analysis.stars, ref.analysis.stars
    if len(stars) >= 3 and len(rstars) >= 3:
        r = refine_match(stars.xy, rstars.xy, t_full, model=cfg.registration.model,
                         src_sigma=centroid_sigma(stars), dst_sigma=centroid_sigma(rstars),
                         tolerance=3.0 * max(2.0, f))
        if r.ok and r.n_matches >= 3 and r.rms_px <= cfg.registration.max_rms:
            return Registration(r.transform, ok=True, method="phase+stars", model=r.model,
                                n_matches=r.n_matches, rms_px=r.rms_px)
    if ph.response >= 0.1 and score >= 0.5:
        return Registration(t_full, ok=True, method="phase", model="similarity",
                            n_matches=0, rms_px=float("nan"),
                            reason=f"{first.reason}; registered by phase correlation only "
                                   f"(response {ph.response:.2f}, agreement {score:.2f})")
    return Registration(Transform.identity(), ok=False, method="none", model=first.model,
                        n_matches=first.n_matches, rms_px=first.rms_px,
                        reason=f"{first.reason}; phase correlation does not agree with the "
                               f"reference (agreement {score:.2f} < 0.5)")


def register_lights(records: list[LightRecord], cfg: Config, *, progress: Any = None) -> int:
    """Select, choose the reference and register ``records`` (one camera geometry) in place.

    Returns the index of the reference. Raises :class:`RegistrationError` when no frame is
    usable at all.
    """
    if not records:
        raise RegistrationError("no lights to register")
    qualities = [r.analysis.quality for r in records]
    sel = cfg.selection
    if sel.enabled:
        groups = [(r.meta.filter or "", r.meta.exposure) for r in records]
        verdicts = select_frames(qualities, min_stars=sel.min_stars,
                                 min_star_fraction=sel.min_star_fraction,
                                 max_fwhm_ratio=sel.max_fwhm_ratio,
                                 min_roundness=sel.min_roundness,
                                 max_background_jump=sel.max_background_jump, groups=groups)
        for r, (ok, why) in zip(records, verdicts):
            if not ok:
                r.reject(why)
    if cfg.registration.reference != "auto":
        ref_i = find_reference(records, cfg.registration.reference)
        if not records[ref_i].used:
            records[ref_i].status, records[ref_i].reason = "used", ""
    else:
        ok = [r.used and len(r.analysis.stars) > 0 for r in records]
        if not any(ok):
            ok = [len(r.analysis.stars) > 0 for r in records]
            if not any(ok):
                raise RegistrationError("no light has any star: cannot choose a reference "
                                        "(clouds? a wrong exposure?)")
        ref_i = choose_reference(qualities, ok)
    ref = records[ref_i]
    ref.registration = Registration(Transform.identity(), ok=True, method="reference",
                                    model=cfg.registration.model,
                                    n_matches=len(ref.analysis.stars), rms_px=0.0)
    ref.flux_ratio = 1.0

    def one(r: LightRecord) -> None:
        reg = register_frame(r.analysis.stars, ref.analysis.stars,
                             model=cfg.registration.model, min_matches=cfg.registration.min_matches,
                             max_rms=cfg.registration.max_rms, phase_fallback=False)
        if not reg.ok and cfg.registration.phase_fallback:
            reg = _phase_register(r, ref, cfg, reg)
        r.registration = reg
        if not reg.ok:
            r.reject(f"not registered: {reg.reason}")
        else:
            r.flux_ratio = flux_ratio(r.analysis.stars, ref.analysis.stars, reg.transform)
        if progress is not None:
            progress()

    # Each frame against the reference, independently: on the worker threads (the triangle
    # search and the k-d tree queries are numpy and scipy code that release the GIL).
    map_threads(one, [r for r in records if r is not ref and r.used], workers=cfg.run.workers)
    return ref_i


def rotation_range(records: list[LightRecord]) -> tuple[float, float]:
    """Smallest and largest rotation (degrees) of the registered frames."""
    rots = [r.registration.transform.rotation_deg for r in records
            if r.registration is not None and r.registration.ok]
    return (min(rots), max(rots)) if rots else (math.nan, math.nan)


__all__ = ["LightRecord", "register_lights", "flux_ratio", "find_reference", "rotation_range"]
