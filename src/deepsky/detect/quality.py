"""Per-frame quality, selection of the frames worth stacking, and the reference frame.

Session statistics are robust (median, MAD), computed over the frames given (or over each
group, when frames of different filters or exposures are judged together), so one bad frame
does not move the yardstick.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Sequence

import numpy as np

from deepsky.detect._validate import in_range, positive
from deepsky.detect.background import Background
from deepsky.errors import ConfigError, RegistrationError
from deepsky.types import FrameQuality, StarList

__all__ = ["frame_quality", "select_frames", "choose_reference", "reference_score"]


def frame_quality(stars: StarList, background: Background) -> FrameQuality:
    """Measure one frame from its stars and background.

    ``n_stars`` counts the detected stars; ``fwhm``, ``hfr`` and ``roundness`` are medians
    over the unsaturated stars (all stars if every one is saturated); ``background`` and
    ``noise`` the global sky level and noise; ``snr`` the median flux SNR of the 20
    brightest unsaturated stars, which are mostly the same stars in every frame of a field,
    so it compares depth and transparency across frames (the median over all detections
    would not: it is set by the faintest, near the threshold). Star measures are NaN when
    no star was found.

    Examples
    --------
    >>> q = frame_quality(StarList.empty(), None)
    >>> q.n_stars, math.isnan(q.fwhm)
    (0, True)
    """
    n = len(stars)
    use = ~stars.saturated if n and (~stars.saturated).any() else np.ones(n, bool)

    def med(a: np.ndarray) -> float:
        a = a[use]
        a = a[np.isfinite(a)]
        return float(np.median(a)) if len(a) else float("nan")

    return FrameQuality(
        n_stars=n,
        fwhm=med(stars.fwhm),
        hfr=med(stars.hfr),
        roundness=med(stars.roundness),
        background=float("nan") if background is None else float(background.global_level),
        noise=float("nan") if background is None else float(background.global_rms),
        snr=_bright_snr(stars, use),
    )


def _bright_snr(stars: StarList, use: np.ndarray, n: int = 20) -> float:
    idx = np.flatnonzero(use)
    idx = idx[np.argsort(-np.nan_to_num(stars.flux[idx], nan=-np.inf), kind="stable")][:n]
    snr = stars.snr[idx]
    snr = snr[np.isfinite(snr)]
    return float(np.median(snr)) if len(snr) else float("nan")


def select_frames(
    qualities: Sequence[FrameQuality],
    *,
    min_stars: int = 4,
    min_star_fraction: float = 0.5,
    max_fwhm_ratio: float = 1.6,
    min_roundness: float = 0.5,
    max_roundness_drop: float = 0.15,
    max_background_jump: float = 5.0,
    max_noise_ratio: float | None = None,
    groups: Sequence[Hashable] | None = None,
) -> list[tuple[bool, str]]:
    """Decide which frames to keep, each rejection with a reason naming measure and limit.

    A frame is rejected for

    * **no stars**: fewer than ``min_stars`` stars;
    * **clouds**: fewer stars than ``min_star_fraction`` x the session median;
    * **seeing/focus**: median FWHM above ``max_fwhm_ratio`` x the session median;
    * **trailing/wind**: median roundness below ``min_roundness``, or more than
      ``max_roundness_drop`` below the session median;
    * **background jump** (clouds lit by the town or the moon, dawn): background above the
      session median by more than ``max_background_jump`` x the session spread (the larger of
      1.4826 MAD of the frames' backgrounds and the median pixel noise);
    * **noise**: noise above ``max_noise_ratio`` x the session median (off by default).

    Parameters
    ----------
    qualities : sequence of FrameQuality
        One per frame, from :func:`frame_quality`.
    groups : sequence, optional
        A key per frame (filter, exposure); statistics are computed within each group.
        Frames of very different exposures must not share a group: their star counts
        differ for good reasons.

    Returns
    -------
    list of (bool, str)
        ``(True, "")`` for a kept frame; ``(False, reason)`` otherwise, reasons joined by
        ``"; "`` when several apply, e.g. ``"clouds: 45 stars vs session median 610 (< 50%)"``.
    """
    q = list(qualities)
    min_stars = positive("min_stars", min_stars, integer=True, allow_zero=True)
    min_star_fraction = in_range("min_star_fraction", min_star_fraction, 0.0, 1.0)
    max_fwhm_ratio = positive("max_fwhm_ratio", max_fwhm_ratio)
    min_roundness = in_range("min_roundness", min_roundness, 0.0, 1.0)
    max_roundness_drop = in_range("max_roundness_drop", max_roundness_drop, 0.0, 1.0)
    max_background_jump = positive("max_background_jump", max_background_jump)
    if max_noise_ratio is not None:
        max_noise_ratio = positive("max_noise_ratio", max_noise_ratio)
    keys = [None] * len(q) if groups is None else list(groups)
    if len(keys) != len(q):
        raise ConfigError(f"groups has {len(keys)} entries for {len(q)} frames")
    out: list[tuple[bool, str]] = [(True, "")] * len(q)
    for key in dict.fromkeys(keys):
        idx = [i for i, k in enumerate(keys) if k == key]
        stats = _session([q[i] for i in idx])
        for i in idx:
            reasons = _reasons(q[i], stats, min_stars=min_stars,
                               min_star_fraction=min_star_fraction,
                               max_fwhm_ratio=max_fwhm_ratio, min_roundness=min_roundness,
                               max_roundness_drop=max_roundness_drop,
                               max_background_jump=max_background_jump,
                               max_noise_ratio=max_noise_ratio)
            out[i] = (not reasons, "; ".join(reasons))
    return out


def reference_score(qualities: Sequence[FrameQuality]) -> np.ndarray:
    """Score of each frame as a registration reference (higher is better).

    Every frame is registered onto the reference, so the reference should give the most
    precise anchors: a registration's error scales as ``sigma / sqrt(N)`` with the star
    centroid error ``sigma ~ FWHM / SNR``. Hence

    ``score = ln(snr) + 0.5 ln(n_stars) - ln(fwhm) + ln(roundness)``

    (``snr`` of the brightest stars, see :func:`frame_quality`; roundness because trailing
    or wind makes centroids less certain). Sky level and noise in ADU are left out: they
    differ between exposures for reasons that do not matter here. Frames without stars
    score ``-inf``.
    """
    q = list(qualities)
    n = np.array([x.n_stars for x in q], float)
    f = np.array([x.fwhm for x in q], float)
    r = np.array([x.roundness for x in q], float)
    s = np.array([x.snr for x in q], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.log(s) + 0.5 * np.log(n) - np.log(f) + np.log(np.clip(r, 1e-3, 1.0))
    return np.where(np.isfinite(score) & (n > 0), score, -np.inf)


def choose_reference(qualities: Sequence[FrameQuality], ok: Sequence[Any] | None = None) -> int:
    """Index of the best reference frame among the kept ones (see :func:`reference_score`).

    Parameters
    ----------
    qualities : sequence of FrameQuality
    ok : sequence, optional
        Per frame, a bool or the ``(ok, reason)`` pairs :func:`select_frames` returns; only
        kept frames are candidates. All frames when omitted.

    Raises
    ------
    RegistrationError
        When no frame is kept or no kept frame has stars.
    """
    q = list(qualities)
    if ok is None:
        keep = np.ones(len(q), bool)
    else:
        keep = np.array([bool(k[0]) if isinstance(k, tuple) else bool(k) for k in ok])
        if len(keep) != len(q):
            raise ConfigError(f"ok has {len(keep)} entries for {len(q)} frames")
    score = reference_score(q)
    score = np.where(keep, score, -np.inf)
    if len(q) == 0 or not np.isfinite(score).any():
        raise RegistrationError(
            f"no reference frame: {int(keep.sum())} of {len(q)} frames kept, none with stars")
    return int(np.argmax(score))


# ----------------------------------------------------------------------------------------------
def _median(values: list[float]) -> float:
    a = np.array(values, float)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if len(a) else float("nan")


def _session(q: list[FrameQuality]) -> dict[str, float]:
    bg = np.array([x.background for x in q], float)
    bg = bg[np.isfinite(bg)]
    med_bg = float(np.median(bg)) if len(bg) else float("nan")
    mad_bg = float(1.4826 * np.median(np.abs(bg - med_bg))) if len(bg) else float("nan")
    noise = _median([x.noise for x in q])
    with_stars = [x for x in q if x.n_stars > 0]
    return dict(
        n=_median([x.n_stars for x in q]),
        fwhm=_median([x.fwhm for x in with_stars]),
        roundness=_median([x.roundness for x in with_stars]),
        background=med_bg,
        spread=float(np.nanmax([mad_bg, noise, 1e-12])),
        noise=noise,
    )


def _reasons(x: FrameQuality, s: dict[str, float], *, min_stars, min_star_fraction,
             max_fwhm_ratio, min_roundness, max_roundness_drop, max_background_jump,
             max_noise_ratio) -> list[str]:
    out = []
    if x.n_stars < min_stars:
        out.append(f"no stars: {x.n_stars} stars detected (need {min_stars})")
    elif math.isfinite(s["n"]) and x.n_stars < min_star_fraction * s["n"]:
        out.append(f"clouds: {x.n_stars} stars vs session median {s['n']:.0f} "
                   f"(< {100 * min_star_fraction:.0f}%)")
    if math.isfinite(x.fwhm) and math.isfinite(s["fwhm"]) and x.fwhm > max_fwhm_ratio * s["fwhm"]:
        out.append(f"seeing/focus: FWHM {x.fwhm:.2f} px vs session median {s['fwhm']:.2f} px "
                   f"(> {max_fwhm_ratio:g}x)")
    if math.isfinite(x.roundness):
        limit = min_roundness
        if math.isfinite(s["roundness"]):
            limit = max(limit, s["roundness"] - max_roundness_drop)
        if x.roundness < limit:
            out.append(f"trailing/wind: roundness {x.roundness:.2f} vs session median "
                       f"{s['roundness']:.2f} (< {limit:.2f})")
    if math.isfinite(x.background) and math.isfinite(s["background"]):
        jump = (x.background - s["background"]) / s["spread"]
        if jump > max_background_jump:
            out.append(f"background jump: {x.background:.1f} vs session median "
                       f"{s['background']:.1f} (+{jump:.1f} x spread {s['spread']:.2f} "
                       f"> {max_background_jump:g})")
    if (max_noise_ratio is not None and math.isfinite(x.noise) and math.isfinite(s["noise"])
            and x.noise > max_noise_ratio * s["noise"]):
        out.append(f"noise: {x.noise:.2f} vs session median {s['noise']:.2f} "
                   f"(> {max_noise_ratio:g}x)")
    return out
