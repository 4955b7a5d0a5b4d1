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
from deepsky.types import Transform

__all__ = ["MODELS", "MIN_POINTS", "N_PARAMS", "fit_transform", "fit_model", "residuals",
           "simplest_model"]

MODELS: tuple[str, ...] = ("shift", "similarity", "affine", "homography")

#: fewest point pairs that determine each model exactly
MIN_POINTS: dict[str, int] = {"shift": 1, "similarity": 2, "affine": 3, "homography": 4}

#: free parameters of each model
N_PARAMS: dict[str, int] = {"shift": 2, "similarity": 4, "affine": 6, "homography": 8}


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
    if model not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    src = np.asarray(src_xy, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_xy, dtype=np.float64).reshape(-1, 2)
    if len(src) != len(dst):
        raise RegistrationError(f"fit_transform needs as many source as destination points, "
                                f"got {len(src)} and {len(dst)}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if len(w) != len(src) or np.any(~np.isfinite(w)) or np.any(w < 0):
        raise RegistrationError(f"weights must be {len(src)} finite non-negative numbers")
    use = w > 0
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise RegistrationError("fit_transform got non-finite coordinates")
    if use.sum() < MIN_POINTS[model]:
        raise RegistrationError(f"a {model} fit needs at least {MIN_POINTS[model]} point "
                                f"pairs, got {int(use.sum())}")
    src, dst, w = src[use], dst[use], w[use]
    if model == "shift":
        d = np.average(dst - src, axis=0, weights=w)
        return Transform.translation(float(d[0]), float(d[1]))
    if model == "similarity":
        return _similarity(src, dst, w, mirror)
    if model == "affine":
        return _affine(src, dst, w)
    h = _homography_dlt(src, dst, w)
    if refine and len(src) > 4:
        h = _homography_refine(src, dst, w, h)
    return Transform(h)


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
    need = {"shift": 1, "similarity": 2, "affine": 8, "homography": 16}
    if min_pairs:
        need.update(min_pairs)
    for m in MODELS[: MODELS.index(model) + 1][::-1]:
        if n_pairs >= need[m]:
            return m
    return "shift"


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
    from scipy.special import fdtrc  # the F distribution's survival function (scipy.stats.f.sf
    # without importing scipy.stats, which costs a third of a second)

    src = np.asarray(src_xy, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_xy, dtype=np.float64).reshape(-1, 2)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    top = simplest_model(model, len(src), min_pairs=min_pairs)
    chain = [m for m in MODELS[: MODELS.index(top) + 1] if m != "shift"] or ["shift"]
    if top != "shift" and len(chain) > 1:
        chain = chain[chain.index("similarity"):]
    best_t = fit_transform(src, dst, chain[0], weights=w)
    best_m = chain[0]
    chi_best = _chi2(best_t, src, dst, w)
    dof_pts = 2 * len(src)
    for m in chain[1:]:
        t = fit_transform(src, dst, m, weights=w)
        chi = _chi2(t, src, dst, w)
        extra = N_PARAMS[m] - N_PARAMS[best_m]
        dof = dof_pts - N_PARAMS[m]
        if dof <= 0 or chi <= 0:
            break
        stat = ((chi_best - chi) / extra) / (chi / dof)
        if stat > 0 and fdtrc(extra, dof, stat) < alpha:
            best_t, best_m, chi_best = t, m, chi
        else:
            break
    return best_t, best_m


def _chi2(t: Transform, src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> float:
    r = t.apply(src) - dst
    return float(np.sum(w * np.sum(r * r, axis=1)))


# ----------------------------------------------------------------------------------------------
def _normaliser(pts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Hartley normalisation: centroid to the origin, mean distance sqrt(2)."""
    c = np.average(pts, axis=0, weights=w)
    d = np.average(np.hypot(*(pts - c).T), weights=w)
    s = np.sqrt(2.0) / d if d > 0 else 1.0
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]])


def _similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray, mirror: bool | None
                ) -> Transform:
    """Weighted least-squares similarity (Umeyama) in complex form: z' = a z + b or
    z' = a conj(z) + b for the mirrored one."""
    ws = w / w.sum()
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    ms, md = np.sum(ws * zs), np.sum(ws * zd)
    cs, cd = zs - ms, zd - md
    var = np.sum(ws * np.abs(cs) ** 2)
    if var <= 0:
        raise RegistrationError("a similarity fit needs at least 2 distinct points")
    best = None
    for flip in ((False, True) if mirror is None else (bool(mirror),)):
        u = np.conj(cs) if flip else cs
        a = np.sum(ws * cd * np.conj(u)) / var
        b = md - a * (np.conj(ms) if flip else ms)
        err = np.sum(ws * np.abs(a * u + a * (np.conj(ms) if flip else ms) + b - zd) ** 2)
        if best is None or err < best[0]:
            best = (err, flip, a, b)
    _, flip, a, b = best
    ar, ai = a.real, a.imag
    if flip:  # x' = ar x + ai y + bx ; y' = ai x - ar y + by
        m = np.array([[ar, ai, b.real], [ai, -ar, b.imag], [0, 0, 1.0]])
    else:
        m = np.array([[ar, -ai, b.real], [ai, ar, b.imag], [0, 0, 1.0]])
    return Transform(m)


def _affine(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> Transform:
    ts, td = _normaliser(src, w), _normaliser(dst, w)
    s = src @ ts[:2, :2].T + ts[:2, 2]
    d = dst @ td[:2, :2].T + td[:2, 2]
    a = np.column_stack([s, np.ones(len(s))]) * np.sqrt(w)[:, None]
    b = d * np.sqrt(w)[:, None]
    sol, _, rank, _ = np.linalg.lstsq(a, b, rcond=None)
    if rank < 3:
        raise RegistrationError("an affine fit needs 3 points not on one line")
    m = np.eye(3)
    m[:2, :] = sol.T
    return Transform(np.linalg.inv(td) @ m @ ts)


def _homography_dlt(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> np.ndarray:
    ts, td = _normaliser(src, w), _normaliser(dst, w)
    s = src @ ts[:2, :2].T + ts[:2, 2]
    d = dst @ td[:2, :2].T + td[:2, 2]
    n = len(s)
    x, y, u, v = s[:, 0], s[:, 1], d[:, 0], d[:, 1]
    z, o = np.zeros(n), np.ones(n)
    rows = np.empty((2 * n, 9))
    rows[0::2] = np.column_stack([-x, -y, -o, z, z, z, u * x, u * y, u])
    rows[1::2] = np.column_stack([z, z, z, -x, -y, -o, v * x, v * y, v])
    rows *= np.repeat(np.sqrt(w), 2)[:, None]
    _, sv, vt = np.linalg.svd(rows, full_matrices=False)
    if len(sv) >= 9 and sv[-2] <= 1e-12 * sv[0]:
        raise RegistrationError("a homography fit needs 4 points with no 3 on one line")
    h = vt[-1].reshape(3, 3)
    h = np.linalg.inv(td) @ h @ ts
    if abs(h[2, 2]) < 1e-300:
        raise RegistrationError("degenerate homography (points on a line?)")
    return h / h[2, 2]


def _homography_refine(src: np.ndarray, dst: np.ndarray, w: np.ndarray, h: np.ndarray,
                       iterations: int = 10) -> np.ndarray:
    """Gauss-Newton on the weighted reprojection error, in normalised coordinates."""
    ts, td = _normaliser(src, w), _normaliser(dst, w)
    s = src @ ts[:2, :2].T + ts[:2, 2]
    d = dst @ td[:2, :2].T + td[:2, 2]
    hn = td @ h @ np.linalg.inv(ts)
    hn = hn / hn[2, 2]
    p = hn.ravel()[:8].copy()
    sw = np.sqrt(w)

    def project(p):
        den = p[6] * s[:, 0] + p[7] * s[:, 1] + 1.0
        u = (p[0] * s[:, 0] + p[1] * s[:, 1] + p[2]) / den
        v = (p[3] * s[:, 0] + p[4] * s[:, 1] + p[5]) / den
        return u, v, den

    u, v, den = project(p)
    cost = np.sum(w * ((u - d[:, 0]) ** 2 + (v - d[:, 1]) ** 2))
    for _ in range(iterations):
        x, y = s[:, 0], s[:, 1]
        jr = np.zeros((len(s), 2, 8))
        jr[:, 0, 0], jr[:, 0, 1], jr[:, 0, 2] = x / den, y / den, 1.0 / den
        jr[:, 1, 3], jr[:, 1, 4], jr[:, 1, 5] = x / den, y / den, 1.0 / den
        jr[:, 0, 6], jr[:, 0, 7] = -u * x / den, -u * y / den
        jr[:, 1, 6], jr[:, 1, 7] = -v * x / den, -v * y / den
        r = np.stack([d[:, 0] - u, d[:, 1] - v], axis=1)
        jw = (jr * sw[:, None, None]).reshape(-1, 8)
        rw = (r * sw[:, None]).reshape(-1)
        step, *_ = np.linalg.lstsq(jw, rw, rcond=None)
        pn = p + step
        un, vn, dn = project(pn)
        new = np.sum(w * ((un - d[:, 0]) ** 2 + (vn - d[:, 1]) ** 2))
        if not np.isfinite(new) or new > cost:
            break
        p, u, v, den = pn, un, vn, dn
        done = cost - new <= 1e-12 * max(cost, 1e-300)
        cost = new
        if done:
            break
    hn = np.append(p, 1.0).reshape(3, 3)
    h = np.linalg.inv(td) @ hn @ ts
    return h / h[2, 2]
