"""Frame weights for the weighted mean of the integration.

``none``      every frame counts the same
``noise``     1 / sigma^2 of the frame's background noise *after* normalisation: the
              minimum-variance combination (a 3 s frame scaled up 20x to match a 60 s one
              has 20x its noise and gets 1/400 of its weight)
``quality``   star count / FWHM^2 (sharp, star-rich frames count more), normalised
``exposure``  the exposure time

Weights are normalised to a mean of 1 over the used frames; they are written to frames.csv.
"""

from __future__ import annotations

import numpy as np

METHODS = ("none", "noise", "quality", "exposure")


def frame_weights(*, method: str, noise_after_norm: np.ndarray | None = None,
                  n_stars: np.ndarray | None = None, fwhm: np.ndarray | None = None,
                  exposure: np.ndarray | None = None, n: int | None = None) -> np.ndarray:
    """One weight per frame (``noise_after_norm`` may be ``(N, C)``: the channels' noises
    are averaged in quadrature)."""
    if method not in METHODS:
        raise ValueError(f"unknown weighting {method!r}; one of {', '.join(METHODS)}")
    count = n
    for arr in (noise_after_norm, n_stars, fwhm, exposure):
        if arr is not None:
            count = len(arr)
            break
    if count is None:
        raise ValueError("frame_weights needs at least one measure or n")
    w = np.ones(count)
    if method == "noise" and noise_after_norm is not None:
        s = np.asarray(noise_after_norm, float)
        var = np.mean(s * s, axis=1) if s.ndim == 2 else s * s
        w = np.where(np.isfinite(var) & (var > 0), 1.0 / var, np.nan)
    elif method == "quality" and n_stars is not None and fwhm is not None:
        ns = np.asarray(n_stars, float)
        f = np.asarray(fwhm, float)
        w = np.where((ns > 0) & np.isfinite(f) & (f > 0), ns / (f * f), np.nan)
    elif method == "exposure" and exposure is not None:
        e = np.asarray(exposure, float)
        w = np.where(np.isfinite(e) & (e > 0), e, np.nan)
    good = np.isfinite(w) & (w > 0)
    if not good.any():
        return np.ones(count)
    w = np.where(good, w, np.nanmin(w[good]))
    return w / w.mean()
