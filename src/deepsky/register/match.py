"""Star matching between a frame and the reference: asterisms, hypotheses, refinement.

:func:`match_stars` finds which frame star is which reference star without knowing the
transform (any translation, any rotation including a 180-degree meridian flip, a mirror,
and a scale within ``scale_range``):

1. Triangles are formed among the brightest stars of each list: each star with pairs of
   its 6 nearest neighbours; when one list has at most 25 stars, all its triangles against
   all triangles of the other list's 50 brightest (a short exposure's few stars need not
   be the reference's very brightest). A
   triangle's invariants are its sorted side ratios ``(a/c, b/c)``: unchanged by translation,
   rotation, scale and mirror. Its vertices are ordered by the opposite side.
2. Triangles with close invariants (a KD-tree query) give candidate correspondences; each
   gives a similarity transform (mirrored when the triangle's orientation flips).
3. Candidates are voted in transform space (rotation, scale, translation); those of the
   most-voted cells are tried first. A hypothesis scores the number of bright frame stars
   that land within ``tolerance`` of a reference star; the best one wins.
4. :func:`refine_match` predicts *all* frame stars with the current transform, pairs each
   with the nearest reference star within a tolerance that shrinks with the residual,
   fits ``model`` (a simpler model when there are too few pairs, see
   :func:`~deepsky.register.transform.simplest_model`), sigma-clips, and repeats until the
   pairs stop changing.
5. A match is accepted when it has ``min_matches`` pairs and its number of false alarms
   (``NFA``: hypotheses tried x the binomial probability that as many stars beyond the
   triangle land by chance within the tolerance) is below ``max_nfa``. With sparse fields
   this accepts 4-6 tight pairs, where a fixed minimum of 10 (Siril) would fail.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from deepsky.errors import ConfigError
from deepsky.register import _kernels
from deepsky.register.transform import MODELS, pairs_needed
from deepsky.types import Transform

__all__ = ["Match", "match_stars", "refine_match"]


@dataclass(frozen=True, eq=False)
class Match:
    """Outcome of matching two star lists.

    ``src_index[k]`` and ``dst_index[k]`` are a matched pair (indices into the lists given);
    ``transform`` maps the frame (src) onto the reference (dst), fitted with ``model`` over
    all pairs; ``rms_px`` is the RMS distance of the pairs after the fit. ``ok`` is False
    when no trustworthy match was found, with ``reason`` saying why and the identity
    transform (the rejected pairs are kept for diagnosis).
    """

    transform: Transform
    src_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dst_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    model: str = "shift"
    rms_px: float = float("nan")
    ok: bool = False
    reason: str = ""
    nfa: float = float("inf")
    n_hypotheses: int = 0

    @property
    def n_matches(self) -> int:
        return len(self.src_index)


def match_stars(
    src_xy: Any,
    dst_xy: Any,
    *,
    model: str = "affine",
    src_sigma: Any = None,
    dst_sigma: Any = None,
    max_stars: int = 150,
    tolerance: float = 2.0,
    min_matches: int = 4,
    scale_range: tuple[float, float] = (0.5, 2.0),
    allow_mirror: bool = True,
    max_nfa: float = 1e-3,
    min_pairs: dict[str, int] | None = None,
) -> Match:
    """Match two star lists (brightest first) and fit the transform between them.

    Parameters
    ----------
    src_xy, dst_xy : array_like, shape (N, 2) and (M, 2)
        Star positions of the frame and of the reference, brightest first.
    model : {"shift", "similarity", "affine", "homography"}
        The most flexible model fitted at the end (simpler when pairs are few).
    src_sigma, dst_sigma : array_like, optional
        Centroid uncertainty of each star in pixels; pairs are weighted by
        ``1 / (src_sigma**2 + dst_sigma**2)`` in the final fits. Unweighted when omitted.
    max_stars : int
        Brightest stars of each list used to find the asterism match (all are used in the
        refinement).
    tolerance : float
        Largest distance in pixels between a predicted frame star and its reference star
        while searching (the refinement tightens it to about 5 x the residual).
    min_matches : int
        Fewest pairs of an accepted match (at least 3).
    scale_range : (float, float)
        Allowed frame-to-reference scale.
    allow_mirror : bool
        Accept mirrored solutions (a frame flipped left-right or a diagonal flip).
    max_nfa : float
        Largest expected number of false alarms of an accepted match.
    min_pairs : dict, optional
        Pairs each model needs before it is used (see ``simplest_model``).

    Returns
    -------
    Match
        ``ok`` False (with the reason) when no match passes; never raises for that.
    """
    src = _as_xy(src_xy, "src_xy")
    dst = _as_xy(dst_xy, "dst_xy")
    if model not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    if min_matches < 3:
        raise ConfigError(f"min_matches must be at least 3, got {min_matches!r}")
    if not (0 < scale_range[0] <= 1.0 <= scale_range[1]):
        raise ConfigError(f"scale_range must be (lo <= 1 <= hi), got {scale_range!r}")
    s_sig = _as_sigma(src_sigma, len(src), "src_sigma")
    d_sig = _as_sigma(dst_sigma, len(dst), "dst_sigma")
    fail = Match(Transform.identity(), ok=False)
    n_s, n_d = len(src), len(dst)
    if min(n_s, n_d) < 3:
        return _replace(fail, reason=f"too few stars to match ({n_s} in the frame, {n_d} in "
                                     f"the reference; need 3)")
    n = min(n_s, n_d, max_stars)
    if n <= _ALL_TRIANGLES:
        # a sparse list (short exposure, thin clouds): all its triangles, against all the
        # triangles of the other list's brightest stars (which need not rank the same)
        k = _DEEP_SPARSE
        ts = _Triangles(src[: n if n_s <= n_d else min(n_s, k)], all_triangles=True)
        td = _reference_triangles(dst[: n if n_d < n_s else min(n_d, k)], True)
    else:
        depth = min(int(1.5 * n) + 5, max_stars)
        ts = _Triangles(src[: min(n_s, depth)])
        td = _reference_triangles(dst[: min(n_d, depth)], False)
    if len(ts.inv) == 0 or len(td.inv) == 0:
        return _replace(fail, reason="no usable star triangles (stars too close together)")
    cand = _candidates(ts, td, eps=0.015)
    if len(cand) == 0:
        return _replace(fail, reason="no matching star triangles between frame and reference")
    # score hypotheses against the brightest stars
    src_b = src[:max_stars]
    dst_b = dst[: min(n_d, 2 * max_stars)]
    best, count, tried = _search(ts, td, cand, src_b, dst_b, tolerance, scale_range,
                                 allow_mirror, min_matches)
    if best is None:
        return _replace(fail, reason="no asterism hypothesis matched more than 3 stars",
                        n_hypotheses=tried)
    t0 = best
    # false-alarm odds of the best hypothesis: stars beyond the triangle's 3 that land within
    # the tolerance of one of dst_b's stars by chance
    area = _area(dst_b)
    p = min(1.0, len(dst_b) * math.pi * tolerance ** 2 / area)
    extra = count - 3
    nfa = float(tried * _binom_sf(extra - 1, max(len(src_b) - 3, 1), p)) if extra > 0 else np.inf
    refined = refine_match(src, dst, t0, model=model, src_sigma=s_sig, dst_sigma=d_sig,
                           tolerance=tolerance, min_pairs=min_pairs)
    refined = _replace(refined, nfa=nfa, n_hypotheses=tried)
    if refined.n_matches < min_matches:
        return _replace(refined, ok=False, transform=Transform.identity(), reason=(
            f"only {refined.n_matches} stars matched (need {min_matches})"))
    if nfa > max_nfa:
        return _replace(refined, ok=False, transform=Transform.identity(), reason=(
            f"match not significant: {count} stars agree, {nfa:.2g} false alarms expected "
            f"(max {max_nfa:g})"))
    return _replace(refined, ok=True, reason="")


def refine_match(
    src_xy: Any,
    dst_xy: Any,
    initial: Transform,
    *,
    model: str = "affine",
    src_sigma: Any = None,
    dst_sigma: Any = None,
    tolerance: float = 2.0,
    clip: float = 3.5,
    max_iter: int = 12,
    min_pairs: dict[str, int] | None = None,
    alpha: float = 1e-3,
) -> Match:
    """Pair every frame star with its nearest reference star under a transform, and refit.

    Iterates: predict the frame stars with the current transform; pair each with the
    nearest reference star within the current tolerance (one-to-one, closest first); fit
    the simplest model up to ``model`` that the pairs call for
    (:func:`~deepsky.register.transform.fit_model`: enough pairs, and an F-test at level
    ``alpha`` against the simpler model) weighted by the centroid uncertainties; drop pairs whose normalised residual exceeds ``clip`` robust standard
    deviations; shrink the tolerance to 5 x the residual RMS (at least 0.75 px); stop when
    the pairs no longer change.

    Parameters
    ----------
    src_xy, dst_xy : array_like
        Frame and reference star positions.
    initial : Transform
        Starting frame-to-reference transform (from asterisms, phase correlation, or a
        previous frame).
    model, src_sigma, dst_sigma, tolerance, min_pairs
        As in :func:`match_stars`.
    clip : float
        Sigma-clipping threshold on normalised residuals.
    max_iter : int
        Most iterations.
    alpha : float
        Significance level for taking a more flexible model.

    Returns
    -------
    Match
        ``ok`` is True when at least 3 pairs remain; ``nfa`` is not computed here.
    """
    src = _as_xy(src_xy, "src_xy")
    dst = _as_xy(dst_xy, "dst_xy")
    s_sig = _as_sigma(src_sigma, len(src), "src_sigma")
    d_sig = _as_sigma(dst_sigma, len(dst), "dst_sigma")
    if model not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    if len(src) == 0 or len(dst) == 0:
        return Match(initial, ok=False, reason="no stars to pair")
    cell, g = _grid_of(dst)
    m, used, si, di, rms, found = _kernels.refine(
        src, dst, g, cell, s_sig, d_sig, initial.matrix, MODELS.index(model),
        _needs(min_pairs), float(tolerance), float(clip), int(max_iter), float(alpha))
    if not found:
        return Match(initial, ok=False, reason="no star pairs within the tolerance")
    order = np.argsort(si, kind="stable")
    return Match(Transform(m), si[order].astype(np.int64), di[order].astype(np.int64),
                 MODELS[used], float(rms), ok=len(si) >= 3,
                 reason="" if len(si) >= 3 else "fewer than 3 star pairs")


def _needs(min_pairs: dict[str, int] | None) -> np.ndarray:
    """The fewest pairs of each model (:func:`pairs_needed`), by model code."""
    need = pairs_needed(min_pairs)
    return np.array([need[m] for m in MODELS], np.int64)


# ----------------------------------------------------------------------------------------------
# internals
# ----------------------------------------------------------------------------------------------
def _replace(m: Match, **changes: Any) -> Match:
    import dataclasses

    return dataclasses.replace(m, **changes)


def _as_xy(xy: Any, name: str) -> np.ndarray:
    a = np.asarray(xy, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 2))
    if a.ndim != 2 or a.shape[1] != 2:
        raise ConfigError(f"{name} must be an (N, 2) array of x, y, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ConfigError(f"{name} holds non-finite coordinates")
    return a


def _as_sigma(sig: Any, n: int, name: str) -> np.ndarray:
    if sig is None:
        return np.full(n, 0.1)
    s = np.asarray(sig, dtype=np.float64).reshape(-1)
    if len(s) != n:
        raise ConfigError(f"{name} has {len(s)} entries for {n} stars")
    return np.where(np.isfinite(s) & (s > 0), np.maximum(s, 1e-3), 1.0)


def _area(xy: np.ndarray) -> float:
    span = xy.max(axis=0) - xy.min(axis=0)
    return float(max(span[0], 1.0) * max(span[1], 1.0))


_ALL_TRIANGLES = 25  # lists this short use all their triangles
_DEEP_SPARSE = 50  # ... against all triangles of this many stars of the other list


class _Triangles:
    """Triangles of a star list, their invariants and ordered vertices."""

    def __init__(self, xy: np.ndarray, min_side: float = 6.0, all_triangles: bool = False
                 ) -> None:
        n = len(xy)
        if n < 3:
            tri = np.zeros((0, 3), np.int64)
        elif n <= _ALL_TRIANGLES or all_triangles:
            tri = np.array(list(combinations(range(n), 3)), np.int64).reshape(-1, 3)
        else:
            k = min(7, n)
            _, nn = cKDTree(xy).query(xy, k=k)
            combos = np.array(list(combinations(range(1, k), 2)))
            tri = np.concatenate([
                np.stack([nn[:, 0], nn[:, a], nn[:, b]], axis=1) for a, b in combos])
            tri = np.sort(tri, axis=1)
            code = np.unique((tri[:, 0] * n + tri[:, 1]) * n + tri[:, 2])
            tri = np.stack([code // (n * n), (code // n) % n, code % n], axis=1)
        p = xy[tri]  # (T, 3, 2)
        # side opposite vertex k
        side = np.stack([np.hypot(*(p[:, 1] - p[:, 2]).T), np.hypot(*(p[:, 0] - p[:, 2]).T),
                         np.hypot(*(p[:, 0] - p[:, 1]).T)], axis=1)
        order = np.argsort(side, axis=1, kind="stable")  # vertex opposite shortest first
        side = np.take_along_axis(side, order, axis=1)
        tri = np.take_along_axis(tri, order, axis=1)
        good = (side[:, 0] >= min_side) & (side[:, 2] > 0)
        self.tri = tri[good]
        self.side = side[good]
        self.inv = self.side[:, :2] / self.side[:, 2:3]
        q = xy[self.tri]
        cross = ((q[:, 1, 0] - q[:, 0, 0]) * (q[:, 2, 1] - q[:, 0, 1])
                 - (q[:, 1, 1] - q[:, 0, 1]) * (q[:, 2, 0] - q[:, 0, 0]))
        self.orient = np.sign(cross)
        self.z = q[:, :, 0] + 1j * q[:, :, 1]  # (T, 3) complex vertices
        self._inv_tree: cKDTree | None = None

    def inv_tree(self) -> cKDTree:
        """A k-d tree of the invariants (built once: a reference's triangles serve every
        frame)."""
        if self._inv_tree is None:
            self._inv_tree = cKDTree(self.inv)
        return self._inv_tree


# The reference's side of a match (its triangles and their k-d tree, its stars bucketed
# for the nearest-star queries) is the same for every frame registered to it: built once, keyed by the positions
# themselves (a few KB; a new reference or star list is a new key). ~2.5 ms of ~19 a frame.
@functools.lru_cache(maxsize=16)
def _cached_triangles(key: bytes, all_triangles: bool) -> _Triangles:
    t = _Triangles(np.frombuffer(key, np.float64).reshape(-1, 2).copy(),
                   all_triangles=all_triangles)
    t.inv_tree()
    return t


def _reference_triangles(xy: np.ndarray, all_triangles: bool) -> _Triangles:
    return _cached_triangles(np.ascontiguousarray(xy, np.float64).tobytes(), all_triangles)


@functools.lru_cache(maxsize=16)
def _cached_grid(key: bytes) -> tuple[float, tuple[Any, ...]]:
    xy = np.frombuffer(key, np.float64).reshape(-1, 2).copy()
    # cells of about one star each: a query looks at the 3 x 3 cells around it
    cell = max(1.0, math.sqrt(_area(xy) / len(xy)))
    return cell, _kernels.grid(xy, cell)


def _grid_of(xy: np.ndarray) -> tuple[float, tuple[Any, ...]]:
    """Stars bucketed for the nearest-star queries of the hypotheses' scoring and of
    :func:`refine_match`'s pairing (a reference's, built once, serve every frame)."""
    return _cached_grid(np.ascontiguousarray(xy, np.float64).tobytes())


def _candidates(ts: _Triangles, td: _Triangles, eps: float) -> np.ndarray:
    """(K, 3) rows of (src triangle, dst triangle, invariant distance), closest first."""
    tree = td.inv_tree()
    k = min(8, len(td.inv))
    dist, idx = tree.query(ts.inv, k=k, distance_upper_bound=eps)
    dist, idx = dist.reshape(len(ts.inv), -1), idx.reshape(len(ts.inv), -1)
    si, kk = np.nonzero(np.isfinite(dist))
    if len(si) == 0:
        return np.zeros((0, 3))
    rows = np.stack([si, idx[si, kk], dist[si, kk]], axis=1).astype(np.float64)
    return rows[np.argsort(rows[:, 2], kind="stable")]


def _search(ts: _Triangles, td: _Triangles, cand: np.ndarray, src_b: np.ndarray,
            dst_b: np.ndarray, tol: float, scale_range: tuple[float, float], allow_mirror: bool,
            min_matches: int) -> tuple[Transform | None, int, int]:
    """Try candidate triangle pairs (:func:`deepsky.register._kernels.search`); return the
    best hypothesis (None when none scored more than 3 stars), its score and the number of
    hypotheses tried."""
    si = cand[:, 0].astype(np.int64)
    di = cand[:, 1].astype(np.int64)
    cell, g = _grid_of(dst_b)
    good_enough = max(min_matches + 3, int(0.5 * min(len(src_b), len(dst_b))))
    m, count, tried = _kernels.search(
        np.ascontiguousarray(ts.z[si]), np.ascontiguousarray(td.z[di]),
        ts.orient[si] != td.orient[di], np.ascontiguousarray(src_b), dst_b, g, cell,
        float(tol), float(scale_range[0]), float(scale_range[1]), bool(allow_mirror),
        good_enough, 20000)
    return (Transform(m) if count > 0 else None), int(count), int(tried)


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X > k) for X ~ Binomial(n, p) (scipy.special's regularised incomplete beta: the
    same as scipy.stats.binom.sf without importing scipy.stats, which costs half a second)."""
    from scipy.special import betainc

    if k < 0:
        return 1.0
    if k >= n:
        return 0.0
    return float(betainc(k + 1, n - k, p))
