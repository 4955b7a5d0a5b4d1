"""Compiled kernels of the registration: the transform fits, the star-pair refinement and
the asterism hypotheses' search.

:mod:`deepsky.register.transform` and :mod:`deepsky.register.match` are the API (arguments
checked, errors raised); the arithmetic is here, in numba, so that a frame's refinement -- a
dozen weighted fits and sigma clips over a thousand star pairs, and the nearest-neighbour
pairing between them -- and its hypotheses' search each run as one call that lets go of the
interpreter lock (as numpy calls on arrays this small they took ~10 ms a frame, most of it
the interpreter's, and registering on two threads kept one of them waiting).

Models by code: 0 shift, 1 similarity, 2 affine, 3 homography. A fit returns its 3 x 3
matrix and a status: ``OK``, ``FEW`` (fewer points than the model needs) or ``DEGENERATE``
(points on a line, coincident points).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

OK, FEW, DEGENERATE = 0, 1, 2
SHIFT, SIMILARITY, AFFINE, HOMOGRAPHY = 0, 1, 2, 3  # (transform.MODELS, in order)
MIN_POINTS = np.array([1, 2, 3, 4], np.int64)  # the fewest pairs that determine each model
N_PARAMS = np.array([2, 4, 6, 8], np.int64)  # each model's free parameters

_JIT = dict(cache=True, nogil=True)


@njit(**_JIT)
def apply(m, xy, out):  # pragma: no cover - numba
    """``out[k] = m (xy[k], 1)`` with the projective division."""
    for k in range(xy.shape[0]):
        x = xy[k, 0]
        y = xy[k, 1]
        w = x * m[2, 0] + y * m[2, 1] + m[2, 2]
        out[k, 0] = (x * m[0, 0] + y * m[0, 1] + m[0, 2]) / w
        out[k, 1] = (x * m[1, 0] + y * m[1, 1] + m[1, 2]) / w


@njit(**_JIT)
def _normalised(m):  # pragma: no cover - numba
    """The matrix as :class:`~deepsky.types.Transform` keeps it (h22 = 1 when not 0)."""
    if m[2, 2] != 0.0 and m[2, 2] != 1.0:
        return m / m[2, 2]
    return m


@njit(**_JIT)
def chi2(m, src, dst, w):  # pragma: no cover - numba
    """Weighted sum of squared distances between ``m(src)`` and ``dst``."""
    s = 0.0
    for k in range(src.shape[0]):
        x = src[k, 0]
        y = src[k, 1]
        q = x * m[2, 0] + y * m[2, 1] + m[2, 2]
        dx = (x * m[0, 0] + y * m[0, 1] + m[0, 2]) / q - dst[k, 0]
        dy = (x * m[1, 0] + y * m[1, 1] + m[1, 2]) / q - dst[k, 1]
        s += w[k] * (dx * dx + dy * dy)
    return s


@njit(**_JIT)
def _shift(src, dst, w):  # pragma: no cover - numba
    sw = 0.0
    dx = 0.0
    dy = 0.0
    for k in range(src.shape[0]):
        sw += w[k]
        dx += w[k] * (dst[k, 0] - src[k, 0])
        dy += w[k] * (dst[k, 1] - src[k, 1])
    m = np.eye(3)
    m[0, 2] = dx / sw
    m[1, 2] = dy / sw
    return m, OK


@njit(**_JIT)
def _similarity(src, dst, w, mirror):  # pragma: no cover - numba
    """Weighted least-squares similarity (Umeyama) in complex form: z' = a z + b, or
    z' = a conj(z) + b mirrored; ``mirror`` -1 takes the better of the two, 0 the proper
    one, 1 the mirrored one."""
    n = src.shape[0]
    sw = 0.0
    for k in range(n):
        sw += w[k]
    ms = 0j
    md = 0j
    for k in range(n):
        ws = w[k] / sw
        ms += ws * complex(src[k, 0], src[k, 1])
        md += ws * complex(dst[k, 0], dst[k, 1])
    var = 0.0
    for k in range(n):
        c = complex(src[k, 0], src[k, 1]) - ms
        var += w[k] / sw * (c.real * c.real + c.imag * c.imag)
    m = np.eye(3)
    if not var > 0.0:
        return m, DEGENERATE
    best_err = np.inf
    best_flip = False
    best_a = 0j
    best_b = 0j
    for f in range(2):
        flip = f == 1
        if (mirror == 0 and flip) or (mirror == 1 and not flip):
            continue
        msf = ms.conjugate() if flip else ms
        num = 0j
        for k in range(n):
            c = complex(src[k, 0], src[k, 1]) - ms
            u = c.conjugate() if flip else c
            num += w[k] / sw * (complex(dst[k, 0], dst[k, 1]) - md) * u.conjugate()
        a = num / var
        b = md - a * msf
        err = 0.0
        for k in range(n):
            c = complex(src[k, 0], src[k, 1]) - ms
            u = c.conjugate() if flip else c
            e = a * u + a * msf + b - complex(dst[k, 0], dst[k, 1])
            err += w[k] / sw * (e.real * e.real + e.imag * e.imag)
        if err < best_err or best_err == np.inf:
            best_err = err
            best_flip = flip
            best_a = a
            best_b = b
    ar = best_a.real
    ai = best_a.imag
    if best_flip:  # x' = ar x + ai y + bx ; y' = ai x - ar y + by
        m[0, 0], m[0, 1], m[0, 2] = ar, ai, best_b.real
        m[1, 0], m[1, 1], m[1, 2] = ai, -ar, best_b.imag
    else:
        m[0, 0], m[0, 1], m[0, 2] = ar, -ai, best_b.real
        m[1, 0], m[1, 1], m[1, 2] = ai, ar, best_b.imag
    return m, OK


@njit(**_JIT)
def _normaliser(pts, w):  # pragma: no cover - numba
    """Hartley normalisation: centroid to the origin, mean distance sqrt(2)."""
    n = pts.shape[0]
    sw = 0.0
    cx = 0.0
    cy = 0.0
    for k in range(n):
        sw += w[k]
        cx += w[k] * pts[k, 0]
        cy += w[k] * pts[k, 1]
    cx /= sw
    cy /= sw
    d = 0.0
    for k in range(n):
        d += w[k] * math.hypot(pts[k, 0] - cx, pts[k, 1] - cy)
    d /= sw
    s = math.sqrt(2.0) / d if d > 0 else 1.0
    t = np.eye(3)
    t[0, 0] = s
    t[1, 1] = s
    t[0, 2] = -s * cx
    t[1, 2] = -s * cy
    return t


@njit(**_JIT)
def _affine(src, dst, w):  # pragma: no cover - numba
    """Weighted least squares in Hartley-normalised coordinates (the normal equations of
    the three parameters of each output coordinate, solved by Cholesky: a 3 x 3 system
    as well conditioned as the normalisation makes it)."""
    ts = _normaliser(src, w)
    td = _normaliser(dst, w)
    n = src.shape[0]
    a = np.zeros((3, 3))
    b = np.zeros((3, 2))
    for k in range(n):
        x = src[k, 0] * ts[0, 0] + ts[0, 2]
        y = src[k, 1] * ts[1, 1] + ts[1, 2]
        u = dst[k, 0] * td[0, 0] + td[0, 2]
        v = dst[k, 1] * td[1, 1] + td[1, 2]
        wk = w[k]
        a[0, 0] += wk * x * x
        a[0, 1] += wk * x * y
        a[0, 2] += wk * x
        a[1, 1] += wk * y * y
        a[1, 2] += wk * y
        a[2, 2] += wk
        b[0, 0] += wk * x * u
        b[1, 0] += wk * y * u
        b[2, 0] += wk * u
        b[0, 1] += wk * x * v
        b[1, 1] += wk * y * v
        b[2, 1] += wk * v
    a[1, 0] = a[0, 1]
    a[2, 0] = a[0, 2]
    a[2, 1] = a[1, 2]
    m = np.eye(3)
    # Cholesky of the 3 x 3 normal matrix; a pivot that vanishes relative to the diagonal
    # (points on a line) is a rank below 3
    scale = max(a[0, 0], a[1, 1], a[2, 2])
    l00 = a[0, 0]
    if not l00 > 1e-12 * scale:
        return m, DEGENERATE
    l00 = math.sqrt(l00)
    l10 = a[1, 0] / l00
    l20 = a[2, 0] / l00
    l11 = a[1, 1] - l10 * l10
    if not l11 > 1e-12 * scale:
        return m, DEGENERATE
    l11 = math.sqrt(l11)
    l21 = (a[2, 1] - l20 * l10) / l11
    l22 = a[2, 2] - l20 * l20 - l21 * l21
    if not l22 > 1e-12 * scale:
        return m, DEGENERATE
    l22 = math.sqrt(l22)
    sol = np.empty((3, 2))
    for c in range(2):
        z0 = b[0, c] / l00
        z1 = (b[1, c] - l10 * z0) / l11
        z2 = (b[2, c] - l20 * z0 - l21 * z1) / l22
        x2 = z2 / l22
        x1 = (z1 - l21 * x2) / l11
        x0 = (z0 - l10 * x1 - l20 * x2) / l00
        sol[0, c] = x0
        sol[1, c] = x1
        sol[2, c] = x2
    for c in range(2):
        m[c, 0] = sol[0, c]
        m[c, 1] = sol[1, c]
        m[c, 2] = sol[2, c]
    return _normalised(np.linalg.inv(td) @ m @ ts), OK


@njit(**_JIT)
def _normalised_points(pts, t):  # pragma: no cover - numba
    out = np.empty_like(pts)
    for k in range(pts.shape[0]):
        out[k, 0] = pts[k, 0] * t[0, 0] + t[0, 2]
        out[k, 1] = pts[k, 1] * t[1, 1] + t[1, 2]
    return out


@njit(**_JIT)
def _homography_dlt(src, dst, w):  # pragma: no cover - numba
    """Normalised DLT (Hartley): the right singular vector of the weighted 2n x 9 system."""
    ts = _normaliser(src, w)
    td = _normaliser(dst, w)
    s = _normalised_points(src, ts)
    d = _normalised_points(dst, td)
    n = src.shape[0]
    rows = np.zeros((2 * n, 9))
    for k in range(n):
        x, y, u, v = s[k, 0], s[k, 1], d[k, 0], d[k, 1]
        sw = math.sqrt(w[k])
        r0 = rows[2 * k]
        r1 = rows[2 * k + 1]
        r0[0], r0[1], r0[2] = -x * sw, -y * sw, -sw
        r0[6], r0[7], r0[8] = u * x * sw, u * y * sw, u * sw
        r1[3], r1[4], r1[5] = -x * sw, -y * sw, -sw
        r1[6], r1[7], r1[8] = v * x * sw, v * y * sw, v * sw
    _, sv, vt = np.linalg.svd(rows, full_matrices=False)
    h = np.eye(3)
    if sv.shape[0] >= 9 and sv[-2] <= 1e-12 * sv[0]:
        return h, DEGENERATE
    h = np.linalg.inv(td) @ np.ascontiguousarray(vt[-1]).reshape(3, 3) @ ts
    if abs(h[2, 2]) < 1e-300:
        return h, DEGENERATE
    return h / h[2, 2], OK


@njit(**_JIT)
def _project(p, s):  # pragma: no cover - numba
    n = s.shape[0]
    u = np.empty(n)
    v = np.empty(n)
    den = np.empty(n)
    for k in range(n):
        q = p[6] * s[k, 0] + p[7] * s[k, 1] + 1.0
        den[k] = q
        u[k] = (p[0] * s[k, 0] + p[1] * s[k, 1] + p[2]) / q
        v[k] = (p[3] * s[k, 0] + p[4] * s[k, 1] + p[5]) / q
    return u, v, den


@njit(**_JIT)
def _cost(u, v, d, w):  # pragma: no cover - numba
    c = 0.0
    for k in range(u.shape[0]):
        c += w[k] * ((u[k] - d[k, 0]) ** 2 + (v[k] - d[k, 1]) ** 2)
    return c


@njit(**_JIT)
def _homography_refine(src, dst, w, h, iterations=10):  # pragma: no cover - numba
    """Gauss-Newton on the weighted reprojection error, in normalised coordinates."""
    ts = _normaliser(src, w)
    td = _normaliser(dst, w)
    s = _normalised_points(src, ts)
    d = _normalised_points(dst, td)
    n = src.shape[0]
    hn = td @ h @ np.linalg.inv(ts)
    hn = hn / hn[2, 2]
    p = np.empty(8)
    for k in range(8):
        p[k] = hn[k // 3, k % 3]
    u, v, den = _project(p, s)
    cost = _cost(u, v, d, w)
    jw = np.zeros((2 * n, 8))
    rw = np.empty(2 * n)
    for _ in range(iterations):
        jw[:, :] = 0.0
        for k in range(n):
            x, y, q = s[k, 0], s[k, 1], den[k]
            sw = math.sqrt(w[k])
            a = jw[2 * k]
            b = jw[2 * k + 1]
            a[0], a[1], a[2] = x / q * sw, y / q * sw, 1.0 / q * sw
            b[3], b[4], b[5] = x / q * sw, y / q * sw, 1.0 / q * sw
            a[6], a[7] = -u[k] * x / q * sw, -u[k] * y / q * sw
            b[6], b[7] = -v[k] * x / q * sw, -v[k] * y / q * sw
            rw[2 * k] = (d[k, 0] - u[k]) * sw
            rw[2 * k + 1] = (d[k, 1] - v[k]) * sw
        step = np.linalg.lstsq(jw, rw)[0]
        pn = p + step
        un, vn, dn = _project(pn, s)
        new = _cost(un, vn, d, w)
        if not np.isfinite(new) or new > cost:
            break
        done = cost - new <= 1e-12 * max(cost, 1e-300)
        p, u, v, den, cost = pn, un, vn, dn, new
        if done:
            break
    hn = np.eye(3)
    for k in range(8):
        hn[k // 3, k % 3] = p[k]
    out = np.linalg.inv(td) @ hn @ ts
    return out / out[2, 2]


@njit(**_JIT)
def fit(code, src, dst, w, mirror=-1, refine=True):  # pragma: no cover - numba
    """Fit model ``code`` to the pairs of positive weight: ``(matrix, status)``."""
    n = 0
    for k in range(w.shape[0]):
        if w[k] > 0:
            n += 1
    if n < MIN_POINTS[code]:
        return np.eye(3), FEW
    if n < w.shape[0]:
        keep = np.flatnonzero(w > 0)
        src = src[keep]
        dst = dst[keep]
        w = w[keep]
    if code == SHIFT:
        return _shift(src, dst, w)
    if code == SIMILARITY:
        return _similarity(src, dst, w, mirror)
    if code == AFFINE:
        return _affine(src, dst, w)
    h, status = _homography_dlt(src, dst, w)
    if status == OK and refine and n > 4:
        h = _homography_refine(src, dst, w, h)
    return h, status


@njit(**_JIT)
def f2_survival(dof, stat):  # pragma: no cover - numba
    """P(F > stat) for an F distribution with 2 and ``dof`` degrees of freedom (closed form:
    every step of the model chain adds 2 parameters)."""
    return (1.0 + 2.0 * stat / dof) ** (-0.5 * dof)


@njit(**_JIT)
def fit_model(src, dst, w, top, alpha):  # pragma: no cover - numba
    """Similarity, then affine, then homography up to model ``top``, each taken only when
    an F-test at level ``alpha`` says its 2 extra parameters lower the weighted squared
    residuals significantly (``top`` 0: the shift). Returns (matrix, model, status)."""
    first = SHIFT if top == SHIFT else SIMILARITY
    best, status = fit(first, src, dst, w)
    if status != OK:
        return best, first, status
    best_m = first
    chi_best = chi2(best, src, dst, w)
    for m in range(first + 1, top + 1):
        t, st = fit(m, src, dst, w)
        if st != OK:
            return t, m, st  # (as the API's fit_model raises there)
        chi = chi2(t, src, dst, w)
        dof = 2 * src.shape[0] - N_PARAMS[m]
        if dof <= 0 or chi <= 0:
            break
        stat = ((chi_best - chi) / (N_PARAMS[m] - N_PARAMS[best_m])) / (chi / dof)
        if stat > 0 and f2_survival(dof, stat) < alpha:
            best, best_m, chi_best = t, m, chi
        else:
            break
    return best, best_m, OK


@njit(**_JIT)
def simplest(model, n, need):  # pragma: no cover - numba
    """The most flexible model up to ``model`` that ``n`` pairs may use (``need[m]``: the
    fewest pairs of model m)."""
    for m in range(model, -1, -1):
        if n >= need[m]:
            return m
    return SHIFT


@njit(**_JIT)
def grid(xy, cell):  # pragma: no cover - numba
    """Bucket the points in square cells of side ``cell``: (origin x, origin y, columns,
    rows, each cell's first entry in ``order`` (and one past the last), ``order``)."""
    n = xy.shape[0]
    x0 = np.inf
    y0 = np.inf
    x1 = -np.inf
    y1 = -np.inf
    for k in range(n):
        x0 = min(x0, xy[k, 0])
        y0 = min(y0, xy[k, 1])
        x1 = max(x1, xy[k, 0])
        y1 = max(y1, xy[k, 1])
    nx = int((x1 - x0) // cell) + 1
    ny = int((y1 - y0) // cell) + 1
    start = np.zeros(nx * ny + 1, np.int64)
    cellof = np.empty(n, np.int64)
    for k in range(n):
        c = int((xy[k, 1] - y0) // cell) * nx + int((xy[k, 0] - x0) // cell)
        cellof[k] = c
        start[c + 1] += 1
    for c in range(nx * ny):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    order = np.empty(n, np.int64)
    for k in range(n):  # ascending index within a cell
        c = cellof[k]
        order[fill[c]] = k
        fill[c] += 1
    return x0, y0, nx, ny, start, order


@njit(cache=True, nogil=True, inline="always")
def _nearest(px, py, dst, g, cell, reach, t2):  # pragma: no cover - numba
    """The ``dst`` star of :func:`grid` ``g`` nearest to (px, py) among those closer than
    sqrt(t2) in the ``reach`` cells around it (ties: the lower index): (index, squared
    distance), or (-1, inf)."""
    x0, y0, nx, ny, start, order = g
    cx = int((px - x0) // cell)
    cy = int((py - y0) // cell)
    dj = -1
    dd = np.inf
    for gy in range(max(cy - reach, 0), min(cy + reach, ny - 1) + 1):
        for gx in range(max(cx - reach, 0), min(cx + reach, nx - 1) + 1):
            c = gy * nx + gx
            for q in range(start[c], start[c + 1]):
                j = order[q]
                ex = dst[j, 0] - px
                ey = dst[j, 1] - py
                d2 = ex * ex + ey * ey
                if d2 < t2 and (d2 < dd or (d2 == dd and j < dj)):
                    dd = d2
                    dj = j
    return dj, dd


@njit(**_JIT)
def _pairs(pred, inside, dst, g, cell, tol):  # pragma: no cover - numba
    """Each predicted frame star ``inside`` to its nearest reference star closer than
    ``tol`` (ties: the lower index), one to one (a reference star keeps its closest frame
    star; ties: the lower frame index); returns the pairs ordered by reference index."""
    m = dst.shape[0]
    best_d = np.full(m, np.inf)
    best_i = np.full(m, -1, np.int64)
    reach = int(math.ceil(tol / cell))
    t2 = tol * tol
    for i in range(pred.shape[0]):
        if not inside[i]:
            continue
        dj, dd = _nearest(pred[i, 0], pred[i, 1], dst, g, cell, reach, t2)
        if dj >= 0:
            d = math.sqrt(dd)
            if d < best_d[dj]:
                best_d[dj] = d
                best_i[dj] = i
    k = 0
    for j in range(m):
        if best_i[j] >= 0:
            k += 1
    si = np.empty(k, np.int64)
    di = np.empty(k, np.int64)
    k = 0
    for j in range(m):
        if best_i[j] >= 0:
            si[k] = best_i[j]
            di[k] = j
            k += 1
    return si, di


@njit(**_JIT)
def _fit_pairs(s, d, w, model, fixed, need, alpha):  # pragma: no cover - numba
    """The fit of :func:`_fit_clipped`'s pairs: (matrix, model, status)."""
    if fixed < 0:
        return fit_model(s, d, w, simplest(model, s.shape[0], need), alpha)
    used = simplest(fixed, s.shape[0], need)
    t, status = fit(used, s, d, w)
    return t, used, status


@njit(**_JIT)
def _fit_clipped(src, dst, si, di, sig2, model, fixed, need, clip, alpha):  # pragma: no cover
    """Weighted fit of the pairs, sigma-clipped on normalised residuals (3 rounds at most);
    the model chosen by :func:`fit_model` when ``fixed`` is -1, else the simplest up to
    ``fixed`` the pairs allow. Returns (matrix, model, status, si, di, sig2)."""
    s = src[si]
    d = dst[di]
    w = 1.0 / sig2
    t, used, status = _fit_pairs(s, d, w, model, fixed, need, alpha)
    if status != OK:
        return t, used, status, si, di, sig2
    pred = np.empty((si.shape[0], 2))
    for _ in range(3):
        n = si.shape[0]
        apply(t, s, pred)
        rn = np.empty(n)
        for k in range(n):
            rn[k] = math.hypot(pred[k, 0] - d[k, 0], pred[k, 1] - d[k, 1]) / math.sqrt(sig2[k])
        sc = np.median(rn) / 1.1774 if n else 0.0  # Rayleigh(s) median
        lim = clip * max(sc, 1e-12)
        nbad = 0
        for k in range(n):
            if rn[k] > lim:
                nbad += 1
        if nbad == 0 or (n - nbad) < max(3, n // 2):
            break
        keep = np.flatnonzero(rn <= lim)
        si, di, sig2 = si[keep], di[keep], sig2[keep]
        s, d, w = s[keep], d[keep], w[keep]
        pred = pred[: si.shape[0]]
        t, used, status = _fit_pairs(s, d, w, model, fixed, need, alpha)
        if status != OK:
            break
    return t, used, status, si, di, sig2


@njit(**_JIT)
def _rms(t, src, dst, si, di):  # pragma: no cover - numba
    pred = np.empty((si.shape[0], 2))
    apply(t, src[si], pred)
    acc = 0.0
    for k in range(si.shape[0]):
        ex = pred[k, 0] - dst[di[k], 0]
        ey = pred[k, 1] - dst[di[k], 1]
        acc += ex * ex + ey * ey
    return math.sqrt(acc / si.shape[0])


@njit(**_JIT)
def refine(src, dst, g, cell, s_sig, d_sig, m0, model, need, tolerance, clip, max_iter,
           alpha):  # pragma: no cover - numba
    """:func:`deepsky.register.match.refine_match`'s iterations: returns (matrix, model,
    si, di, rms, found) -- ``found`` False when no pairs were ever fitted."""
    t = m0.copy()
    tol = tolerance
    have = False
    psi = np.zeros(0, np.int64)
    pdi = np.zeros(0, np.int64)
    used = SHIFT
    rms = np.nan
    lo0 = np.inf
    lo1 = np.inf
    hi0 = -np.inf
    hi1 = -np.inf
    for j in range(dst.shape[0]):
        lo0 = min(lo0, dst[j, 0])
        lo1 = min(lo1, dst[j, 1])
        hi0 = max(hi0, dst[j, 0])
        hi1 = max(hi1, dst[j, 1])
    lo0 -= tol
    lo1 -= tol
    hi0 += tol
    hi1 += tol
    n = src.shape[0]
    pred = np.empty((n, 2))
    inside = np.empty(n, np.bool_)
    for _ in range(max_iter):
        apply(t, src, pred)
        nin = 0
        for i in range(n):
            inside[i] = (pred[i, 0] >= lo0) & (pred[i, 0] <= hi0) & (pred[i, 1] >= lo1) & (
                pred[i, 1] <= hi1)
            nin += inside[i]
        if nin == 0:
            break
        si, di = _pairs(pred, inside, dst, g, cell, tol)
        if si.shape[0] < 2:
            break
        sig2 = s_sig[si] ** 2 + d_sig[di] ** 2
        t_new, used_new, status, si, di, sig2 = _fit_clipped(
            src, dst, si, di, sig2, model, used if have else -1, need, clip, alpha)
        if status != OK:
            break
        used = used_new
        rms = _rms(t_new, src, dst, si, di)
        same = have and psi.shape[0] == si.shape[0] and np.array_equal(np.sort(psi),
                                                                        np.sort(si))
        t, psi, pdi, have = t_new, si, di, True
        tol = min(max(5.0 * rms, 0.75), tolerance)
        if same:
            break
    if have and psi.shape[0] >= 2:
        sig2 = s_sig[psi] ** 2 + d_sig[pdi] ** 2
        t_new, used_new, status, si, di, _ = _fit_clipped(src, dst, psi, pdi, sig2, model, -1,
                                                          need, clip, alpha)
        if status == OK:
            t, used, psi, pdi = t_new, used_new, si, di
            rms = _rms(t, src, dst, si, di)
    return _normalised(t), used, psi, pdi, rms, have


@njit(**_JIT)
def _count_near(ar, ai, br, bi, flip, src, dst, g, cell, reach, t2):  # pragma: no cover
    """How many of ``src`` land within sqrt(t2) of a ``dst`` star under z' = a z + b
    (z' = a conj(z) + b when ``flip``); ``reach`` cells around each are looked at."""
    count = 0
    for k in range(src.shape[0]):
        zr = src[k, 0]
        zi = -src[k, 1] if flip else src[k, 1]
        px = ar * zr - ai * zi + br
        py = ar * zi + ai * zr + bi
        if _nearest(px, py, dst, g, cell, reach, t2)[0] >= 0:
            count += 1
    return count


@njit(**_JIT)
def search(zs, zd, mirror, src_b, dst_b, g, cell, tol, scale_lo, scale_hi, allow_mirror,
           good_enough, max_tried):  # pragma: no cover - numba
    """The asterism hypotheses of :func:`deepsky.register.match.match_stars`: candidate
    triangle pairs ``zs[k]`` (frame vertices, complex) and ``zd[k]`` (reference), each a
    similarity (mirrored where ``mirror[k]``); those that fit their triangle within ``tol``
    and the scale range are voted in (mirror, 1 degree, 1 % scale, 4 tol) cells and tried
    most-voted first (then in candidate order), in batches of 32 doubling to 512, each
    scored by the stars of ``src_b`` landing within ``tol`` of one of ``dst_b``; stop once
    a hypothesis scores ``good_enough`` or ``max_tried`` were tried.

    Returns (matrix, score, tried): score 0 when no hypothesis scored more than 3."""
    n = zs.shape[0]
    a = np.empty(n, np.complex128)
    b = np.empty(n, np.complex128)
    ok = np.zeros(n, np.bool_)
    for k in range(n):
        u0, u1, u2 = zs[k, 0], zs[k, 1], zs[k, 2]
        if mirror[k]:
            u0, u1, u2 = u0.conjugate(), u1.conjugate(), u2.conjugate()
        d0, d1, d2 = zd[k, 0], zd[k, 1], zd[k, 2]
        mu = (u0 + u1 + u2) / 3.0
        md = (d0 + d1 + d2) / 3.0
        c0, c1, c2 = u0 - mu, u1 - mu, u2 - mu
        e0, e1, e2 = d0 - md, d1 - md, d2 - md
        num = e0 * c0.conjugate() + e1 * c1.conjugate() + e2 * c2.conjugate()
        den = abs(c0) ** 2 + abs(c1) ** 2 + abs(c2) ** 2
        ak = num / den
        bk = md - ak * mu
        a[k] = ak
        b[k] = bk
        resid = max(abs(ak * u0 + bk - d0), abs(ak * u1 + bk - d1), abs(ak * u2 + bk - d2))
        scale = abs(ak)
        ok[k] = (resid < tol) and (scale >= scale_lo) and (scale <= scale_hi) and (
            allow_mirror or not mirror[k])
    idx = np.flatnonzero(ok)
    m = np.eye(3)
    if idx.shape[0] == 0:
        return m, 0, 0
    # votes in transform space: the cell of each hypothesis, and how many share it
    nk = idx.shape[0]
    keys = np.empty((nk, 5), np.int64)
    for q in range(nk):
        k = idx[q]
        keys[q, 0] = 1 if mirror[k] else 0
        keys[q, 1] = int(math.floor(math.atan2(a[k].imag, a[k].real) / math.radians(1.0)))
        keys[q, 2] = int(math.floor(math.log(abs(a[k])) / 0.01))
        keys[q, 3] = int(math.floor(b[k].real / (4 * tol)))
        keys[q, 4] = int(math.floor(b[k].imag / (4 * tol)))
    code = np.zeros(nk, np.int64)
    for c in range(5):
        lo = keys[:, c].min()
        span = keys[:, c].max() - lo + 1
        for q in range(nk):
            code[q] = code[q] * span + (keys[q, c] - lo)
    by_code = np.argsort(code, kind="mergesort")
    votes = np.empty(nk, np.int64)
    q = 0
    while q < nk:
        r = q
        while r < nk and code[by_code[r]] == code[by_code[q]]:
            r += 1
        for s in range(q, r):
            votes[by_code[s]] = r - q
        q = r
    order = idx[np.argsort(-votes, kind="mergesort")]
    t2 = tol * tol
    reach = int(math.ceil(tol / cell))
    best_k = -1
    best = 0
    tried = 0
    batch = 32
    pos = 0
    while pos < nk and tried < max_tried:
        end = min(pos + batch, nk)
        top_k = -1
        top = -1
        for q in range(pos, end):
            k = order[q]
            cnt = _count_near(a[k].real, a[k].imag, b[k].real, b[k].imag, mirror[k], src_b,
                              dst_b, g, cell, reach, t2)
            if cnt > top:
                top = cnt
                top_k = k
        tried += end - pos
        pos = end
        if top > 3 and (best_k < 0 or top > best):
            best = top
            best_k = top_k
        if best_k >= 0 and best >= good_enough:
            break
        batch = min(batch * 2, 512)
    if best_k < 0:
        return m, 0, tried
    ar, ai = a[best_k].real, a[best_k].imag
    if mirror[best_k]:
        m[0, 0], m[0, 1], m[0, 2] = ar, ai, b[best_k].real
        m[1, 0], m[1, 1], m[1, 2] = ai, -ar, b[best_k].imag
    else:
        m[0, 0], m[0, 1], m[0, 2] = ar, -ai, b[best_k].real
        m[1, 0], m[1, 1], m[1, 2] = ai, ar, b[best_k].imag
    return m, best, tried
