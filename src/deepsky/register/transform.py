"""Least-squares fits of geometric transforms between matched star positions.

Models, from the simplest:

``"shift"`` (2 parameters)
    translation only.
``"similarity"`` (4)
    rotation, uniform scale and translation (Umeyama's closed form). A mirrored similarity
    (one axis flipped) is chosen instead when it fits better, unless ``mirror`` says which.
``"affine"`` (6)
    any linear map plus translation: adds anisotropic scale and shear, which absorb
    differential atmospheric refraction across the field.
``"homography"`` (8)
    a projective map: adds the small perspective terms of a tilted sensor or of a field
    de-rotator that is not on axis. Fitted by the normalised DLT (Hartley), then refined by
    Gauss-Newton on the reprojection error in the reference frame.

All fits minimise the (weighted) squared distances in the *destination* (reference) frame.
:func:`fit_model` picks the simplest model, up to a given one, that the points call for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepsky.errors import ConfigError, RegistrationError
from deepsky.register import _kernels
from deepsky.types import Transform

__all__ = ["MODELS", "MIN_POINTS", "N_PARAMS", "fit_transform", "fit_model", "residuals",
           "simplest_model", "pairs_needed"]

MODELS: tuple[str, ...] = ("shift", "similarity", "affine", "homography")

#: fewest point pairs that determine each model exactly (1, 2, 3, 4)
MIN_POINTS: dict[str, int] = dict(zip(MODELS, _kernels.MIN_POINTS.tolist()))

#: free parameters of each model (2, 4, 6, 8)
N_PARAMS: dict[str, int] = dict(zip(MODELS, _kernels.N_PARAMS.tolist()))


def fit_transform(
    src_xy: Any,
    dst_xy: Any,
    model: str = "affine",
    *,
    weights: Any = None,
    mirror: bool | None = None,
    refine: bool = True,
) -> Transform:
    """Fit the transform of ``model`` that maps ``src_xy`` onto ``dst_xy``.

    Parameters
    ----------
    src_xy, dst_xy : array_like, shape (N, 2)
        Matched ``(x, y)`` positions: frame stars and their reference counterparts.
    model : {"shift", "similarity", "affine", "homography"}
        The transform family (see the module notes).
    weights : array_like, shape (N,), optional
        Non-negative weights of the pairs (e.g. inverse centroid variances).
    mirror : bool, optional
        Similarity only: True forces a mirrored fit, False a proper one, None (default)
        takes the better of the two.
    refine : bool
        Homography only: refine the DLT solution by Gauss-Newton on the reprojection error.

    Returns
    -------
    Transform
        Maps frame pixels to reference pixels.

    Raises
    ------
    RegistrationError
        Too few points (or all weights zero) for ``model``, or a degenerate configuration
        (all points on a line for affine and homography).

    Examples
    --------
    >>> import numpy as np
    >>> t = Transform.similarity(scale=1.01, angle_deg=3.0, dx=5.0, dy=-2.0)
    >>> src = np.random.default_rng(0).uniform(0, 1000, (10, 2))
    >>> fit = fit_transform(src, t.apply(src), "similarity")
    >>> bool(np.allclose(fit.matrix, t.matrix))
    True
    """
    src, dst, w = _checked(src_xy, dst_xy, weights, model)
    m, status = _kernels.fit(MODELS.index(model), src, dst, w,
                             -1 if mirror is None else int(bool(mirror)), bool(refine))
    if status != _kernels.OK:
        raise RegistrationError(_DEGENERATE[model])
    return Transform(m)


def _checked(src_xy: Any, dst_xy: Any, weights: Any, model: str
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points and weights as contiguous float64 arrays, or the error that says what is
    wrong with them (for a fit of ``model``)."""
    if model not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    src = np.ascontiguousarray(np.asarray(src_xy, dtype=np.float64).reshape(-1, 2))
    dst = np.ascontiguousarray(np.asarray(dst_xy, dtype=np.float64).reshape(-1, 2))
    if len(src) != len(dst):
        raise RegistrationError(f"fit_transform needs as many source as destination points, "
                                f"got {len(src)} and {len(dst)}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if len(w) != len(src) or np.any(~np.isfinite(w)) or np.any(w < 0):
        raise RegistrationError(f"weights must be {len(src)} finite non-negative numbers")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise RegistrationError("fit_transform got non-finite coordinates")
    n = int(np.count_nonzero(w))
    if n < MIN_POINTS[model]:
        raise RegistrationError(f"a {model} fit needs at least {MIN_POINTS[model]} point "
                                f"pairs, got {n}")
    return src, dst, np.ascontiguousarray(w)


def residuals(transform: Transform, src_xy: Any, dst_xy: Any) -> np.ndarray:
    """Distances in pixels between ``transform(src_xy)`` and ``dst_xy``."""
    pred = transform.apply(src_xy)
    return np.hypot(*(pred - np.asarray(dst_xy, np.float64).reshape(-1, 2)).T)


def simplest_model(model: str, n_pairs: int, *, min_pairs: dict[str, int] | None = None) -> str:
    """The most flexible model, up to ``model``, that ``n_pairs`` can constrain safely.

    ``min_pairs`` gives the fewest pairs each model needs to be trusted (default: shift 1,
    similarity 2, affine 8, homography 16: about twice the points of the parameters
    beyond similarity, so that noise in a few stars does not bend the frame's corners).
    """
    if model not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    need = pairs_needed(min_pairs)
    for m in MODELS[: MODELS.index(model) + 1][::-1]:
        if n_pairs >= need[m]:
            return m
    return "shift"


def pairs_needed(min_pairs: dict[str, int] | None = None) -> dict[str, int]:
    """The fewest pairs each model is trusted with (:func:`simplest_model`'s defaults,
    updated by ``min_pairs``)."""
    need = {"shift": 1, "similarity": 2, "affine": 8, "homography": 16}
    if min_pairs:
        need.update(min_pairs)
    return need


def fit_model(
    src_xy: Any,
    dst_xy: Any,
    model: str = "affine",
    *,
    weights: Any = None,
    alpha: float = 1e-3,
    min_pairs: dict[str, int] | None = None,
) -> tuple[Transform, str]:
    """Fit the simplest model, up to ``model``, that the matched points call for.

    Starting from a similarity (or a shift when the pairs are too few for it), a more
    flexible model (affine, then homography) is taken only when the pairs are enough for it
    (:func:`simplest_model`) *and* it lowers the weighted squared residuals significantly:
    an F-test of the nested models at level ``alpha``. Extra parameters the data do not
    need only add noise, worst at the frame's corners, so a field that is truly a rotation
    and a shift is fitted as one; refraction, tilt or optical distortion upgrade it.

    Returns
    -------
    (Transform, str)
        The transform and the name of the model chosen.
    """
    if model not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    n = len(np.asarray(src_xy, dtype=np.float64).reshape(-1, 2))
    top = simplest_model(model, n, min_pairs=min_pairs)
    src, dst, w = _checked(src_xy, dst_xy, weights, "shift" if top == "shift" else "similarity")
    m, code, status = _kernels.fit_model(src, dst, w, MODELS.index(top), float(alpha))
    if status != _kernels.OK:
        raise RegistrationError(_DEGENERATE[MODELS[code]])
    return Transform(m), MODELS[code]


# Why a fit with enough points failed (all points on a line, or coincident).
_DEGENERATE = {
    "shift": "a shift fit needs at least 1 point pair",
    "similarity": "a similarity fit needs at least 2 distinct points",
    "affine": "an affine fit needs 3 points not on one line",
    "homography": "a homography fit needs 4 points with no 3 on one line",
}
