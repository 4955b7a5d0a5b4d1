"""Registration: the transform of each frame onto the reference, and resampling.

* :func:`register_frame` - stars matched by asterisms (any rotation, flips, mirror), the
  transform fitted over all matched stars; phase correlation as fallback.
* :func:`match_stars`, :func:`refine_match` - the matcher itself.
* :func:`fit_transform`, :func:`fit_model` - least-squares shift / similarity / affine /
  homography, and the simplest of them the matched stars call for.
* :func:`phase_correlate` - translation (and rotation) from whole images.
* :func:`warp_image`, :func:`warp_window`, :func:`source_bounds` - resampling onto the
  reference grid (Lanczos-3 with clamping by default), whole frames or tile by tile.

Pure functions: arrays in, results out; no file I/O.
"""

from deepsky.register.match import Match, match_stars, refine_match
from deepsky.register.phase import PhaseResult, phase_correlate
from deepsky.register.register import centroid_sigma, register_frame
from deepsky.register.transform import MODELS, fit_model, fit_transform, residuals, simplest_model
from deepsky.register.warp import METHODS, source_bounds, warp_image, warp_window

__all__ = [
    "register_frame", "centroid_sigma", "Match", "match_stars", "refine_match",
    "fit_transform", "fit_model", "residuals", "simplest_model", "MODELS", "PhaseResult",
    "phase_correlate", "warp_image", "warp_window", "source_bounds", "METHODS",
]
