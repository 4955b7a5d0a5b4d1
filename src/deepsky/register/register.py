"""Registering one frame onto the reference: stars first, phase correlation as fallback."""

from __future__ import annotations

from typing import Any

import numpy as np

from deepsky.errors import ConfigError
from deepsky.register.match import Match, match_stars, refine_match
from deepsky.register.phase import phase_correlate
from deepsky.register.transform import MODELS
from deepsky.types import Registration, StarList, Transform

__all__ = ["register_frame", "centroid_sigma"]


def centroid_sigma(stars: StarList, *, floor: float = 0.005) -> np.ndarray:
    """Expected centroid error of each star in pixels: ``0.6 * FWHM / SNR`` (the
    background-limited error of a Gaussian fit per axis), with a ``floor`` for systematics;
    0.1 px where FWHM or SNR are unknown."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = 0.6 * stars.fwhm / stars.snr
    s = np.where(np.isfinite(s) & (s > 0), s, 0.1)
    return np.hypot(s, floor)


def register_frame(
    stars: StarList,
    ref_stars: StarList,
    *,
    model: str = "affine",
    image: Any = None,
    ref_image: Any = None,
    max_stars: int = 150,
    tolerance: float = 2.0,
    min_matches: int = 4,
    max_rms: float = 1.0,
    scale_range: tuple[float, float] = (0.5, 2.0),
    allow_mirror: bool = True,
    max_nfa: float = 1e-3,
    phase_fallback: bool = True,
    min_response: float = 0.1,
    min_pairs: dict[str, int] | None = None,
) -> Registration:
    """Find the transform that maps a frame onto the reference.

    Stars are matched by asterisms (:func:`~deepsky.register.match.match_stars`) and the
    transform is fitted over every matched star. If that fails and both images are given,
    phase correlation (translation and rotation) gives a starting transform, refined on
    whatever stars pair up under it (``method="phase"``).

    Parameters
    ----------
    stars, ref_stars : StarList
        Stars of the frame and of the reference (brightest first, as detection returns).
    model : {"affine", "homography", "similarity", "shift"}
        Most flexible model fitted. The simplest model the matched stars call for is used
        (:func:`~deepsky.register.transform.fit_model`: affine from 8 pairs, homography
        from 16, and only when an F-test says the extra terms are real). Affine is the
        default: on the real Seestar and CAFOS frames it predicts held-out stars better
        than a similarity (differential refraction), and a homography does no better.
    image, ref_image : array_like, optional
        The frame and reference images (mono or luminance), for the phase fallback.
    max_stars, tolerance, min_matches, scale_range, allow_mirror, max_nfa, min_pairs
        Matching options (see :func:`~deepsky.register.match.match_stars`).
    max_rms : float
        Largest RMS residual in pixels of an accepted star solution.
    phase_fallback : bool
        Try phase correlation when stars fail and both images are given.
    min_response : float
        Smallest phase-correlation response accepted without star confirmation.

    Returns
    -------
    Registration
        ``ok=False`` with ``reason`` (and the identity transform) when the frame cannot be
        registered; this function does not raise for that.
    """
    if model not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    if not isinstance(stars, StarList) or not isinstance(ref_stars, StarList):
        raise ConfigError("register_frame needs StarList objects for stars and ref_stars")
    sig, ref_sig = centroid_sigma(stars), centroid_sigma(ref_stars)
    m = match_stars(stars.xy, ref_stars.xy, model=model, src_sigma=sig, dst_sigma=ref_sig,
                    max_stars=max_stars, tolerance=tolerance, min_matches=min_matches,
                    scale_range=scale_range, allow_mirror=allow_mirror, max_nfa=max_nfa,
                    min_pairs=min_pairs)
    if m.ok and m.rms_px <= max_rms:
        return _registration(m, "stars")
    reason = m.reason if not m.ok else (
        f"star match residual {m.rms_px:.2f} px above max_rms {max_rms:g} px")
    if phase_fallback and image is not None and ref_image is not None:
        ph = phase_correlate(image, ref_image, rotation=True)
        if len(stars) >= 3 and len(ref_stars) >= 3:
            r = refine_match(stars.xy, ref_stars.xy, ph.transform, model=model,
                             src_sigma=sig, dst_sigma=ref_sig, tolerance=3.0 * tolerance,
                             min_pairs=min_pairs)
            if r.ok and r.n_matches >= 3 and r.rms_px <= max_rms:
                return _registration(r, "phase")
        if ph.response >= min_response:
            return Registration(ph.transform, ok=True, method="phase", model="similarity",
                                n_matches=0, rms_px=float("nan"),
                                reason=f"{reason}; phase correlation only "
                                       f"(response {ph.response:.2f})")
        reason = f"{reason}; phase correlation response {ph.response:.3f} < {min_response:g}"
    return Registration(Transform.identity(), ok=False, method="none", model=model,
                        n_matches=m.n_matches, rms_px=m.rms_px, reason=reason)


def _registration(m: Match, method: str) -> Registration:
    return Registration(m.transform, ok=True, method=method, model=m.model,
                        n_matches=m.n_matches, rms_px=m.rms_px, reason="")
