"""Detection: sky background, stars, and per-frame quality.

* :func:`estimate_background` - mesh background level and noise.
* :func:`find_stars` / :func:`detect_frame` - stars with sub-pixel centroids and shapes
  (``detect_frame`` handles mono and Bayer CFA frames).
* :func:`frame_quality`, :func:`select_frames`, :func:`choose_reference` - per-frame
  measures, rejection of bad frames with reasons, and the reference frame.

Pure functions: arrays in, results out; no file I/O.
"""

from deepsky.detect.background import Background, estimate_background
from deepsky.detect.quality import choose_reference, frame_quality, reference_score, select_frames
from deepsky.detect.stars import cfa_luminance, detect_frame, find_stars

__all__ = [
    "Background", "estimate_background", "find_stars", "cfa_luminance", "detect_frame",
    "frame_quality", "select_frames", "choose_reference", "reference_score",
]
