"""numba kernels of star detection: peak finding, elliptical Gaussian fits, measurements.

All kernels are serial and release the GIL (``nogil=True``), so frames can be processed in
parallel by a thread pool. Coordinates are 0-based ``(x = column, y = row)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Parameter vector of the elliptical Gaussian fitted to a star, for images of ``nch``
# channels (1 for mono; 3 for a Bayer mosaic, where each pixel sees one channel):
#   model(x, y) = bg[c] + amp[c] * exp(-0.5 * (A dx^2 + 2 B dx dy + C dy^2)),  c = chan(x, y)
# p = [x, y, A, B, C, bg[0..nch-1], amp[0..nch-1]]
X, Y, A, B, C = range(5)
BG0 = 5
# the pixel-local parameters (x, y, bg, amp) of a fit with a fixed shape
FIXED = np.array([0, 1, 5, 6], np.int64)
NPMAX = 11


def amp0(nch: int) -> int:
    """Index of the first amplitude in the parameter vector."""
    return BG0 + nch


# status codes of a fit
FIT_OK = 0
FIT_FAILED = 1


@njit(cache=True, nogil=True)
def local_maxima(sm, floor, row_box, col_box, border):  # pragma: no cover - numba
    """Pixels of ``sm`` above ``floor[row_box[y], col_box[x]]`` (a coarse lower bound of the
    detection threshold) that are local maxima of their 3x3 neighbourhood (strict against
    earlier neighbours in raster order, ``>=`` against later ones, so a plateau gives one).
    Returns their flat indices."""
    h, w = sm.shape
    out = []
    for y in range(border, h - border):
        fy = floor[row_box[y]]
        for x in range(border, w - border):
            v = sm[y, x]
            if v <= fy[col_box[x]]:
                continue
            if (v > sm[y, x - 1] and v >= sm[y, x + 1] and v > sm[y - 1, x - 1]
                    and v > sm[y - 1, x] and v > sm[y - 1, x + 1] and v >= sm[y + 1, x - 1]
                    and v >= sm[y + 1, x] and v >= sm[y + 1, x + 1]):
                out.append(y * w + x)
    res = np.empty(len(out), np.int64)
    for i in range(len(out)):
        res[i] = out[i]
    return res


@njit(cache=True, nogil=True)
def select_peaks(sm, cx, cy, level, rms, thresh, border, min_area, bad,
                 has_bad):  # pragma: no cover - numba
    """Which candidate pixels ``(cx, cy)`` (from a 3x3 dilation test) are true peaks.

    A peak is a strict maximum against its earlier (raster order) neighbours and ``>=`` the
    later ones, so a plateau gives one peak; it stands more than ``thresh * rms`` above
    ``level`` (``thresh`` already in units of the smoothed noise), has ``min_area`` pixels of
    its 3x3 neighbourhood above that threshold, lies ``border`` pixels from the edges and is
    not excluded (``bad & 1``).
    """
    h, w = sm.shape
    n = cx.shape[0]
    keep = np.zeros(n, np.bool_)
    for i in range(n):
        x = cx[i]
        y = cy[i]
        if x < border or y < border or x >= w - border or y >= h - border:
            continue
        v = sm[y, x]
        if not (v > sm[y, x - 1] and v >= sm[y, x + 1] and v > sm[y - 1, x - 1]
                and v > sm[y - 1, x] and v > sm[y - 1, x + 1] and v >= sm[y + 1, x - 1]
                and v >= sm[y + 1, x] and v >= sm[y + 1, x + 1]):
            continue
        t = level[i] + thresh * rms[i]
        if v <= t:
            continue
        if has_bad and (bad[y, x] & 1):
            continue
        area = 0
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                if sm[y + dy, x + dx] > t:
                    area += 1
        keep[i] = area >= min_area
    return keep


@njit(cache=True, nogil=True)
def peak_sharpness(img, xs, ys, level):  # pragma: no cover - numba
    """``max / sum`` of the background-subtracted 3x3 pixels around the brightest pixel
    near each integer position: about 1 for a lone hot pixel, 0.35 for a FWHM 1.5 px star."""
    h, w = img.shape
    n = xs.shape[0]
    out = np.full(n, np.nan)
    for i in range(n):
        bx = xs[i]
        by = ys[i]
        bv = -np.inf
        for yy in range(max(ys[i] - 1, 0), min(ys[i] + 2, h)):
            for xx in range(max(xs[i] - 1, 0), min(xs[i] + 2, w)):
                if img[yy, xx] > bv:
                    bv = img[yy, xx]
                    bx = xx
                    by = yy
        tot = 0.0
        for yy in range(max(by - 1, 0), min(by + 2, h)):
            for xx in range(max(bx - 1, 0), min(bx + 2, w)):
                tot += img[yy, xx] - level[i]
        if tot > 0:
            out[i] = (bv - level[i]) / tot
    return out


@njit(cache=True, nogil=True)
def mosaic_sharpness(mosaic, xs, ys, level, ratio):  # pragma: no cover - numba
    """:func:`peak_sharpness` on a Bayer mosaic for luminance peaks at ``(xs, ys)`` (the
    mosaic point ``(x + 0.5, y + 0.5)``), each pixel against its own channel's background
    ``level * ratio[2 (y % 2) + x % 2]``."""
    h, w = mosaic.shape
    n = xs.shape[0]
    out = np.full(n, np.nan)
    for i in range(n):
        bx = xs[i]
        by = ys[i]
        bv = -np.inf
        for yy in range(max(ys[i], 0), min(ys[i] + 2, h)):
            for xx in range(max(xs[i], 0), min(xs[i] + 2, w)):
                v = mosaic[yy, xx] - level[i] * ratio[(yy & 1) * 2 + (xx & 1)]
                if v > bv:
                    bv = v
                    bx = xx
                    by = yy
        tot = 0.0
        for yy in range(max(by - 1, 0), min(by + 2, h)):
            for xx in range(max(bx - 1, 0), min(bx + 2, w)):
                tot += mosaic[yy, xx] - level[i] * ratio[(yy & 1) * 2 + (xx & 1)]
        if tot > 0:
            out[i] = bv / tot
    return out


@njit(cache=True, nogil=True)
def _gauss(p, nch, c, dx, dy):  # pragma: no cover - numba
    return p[BG0 + nch + c] * np.exp(-0.5 * (p[A] * dx * dx + 2.0 * p[B] * dx * dy
                                             + p[C] * dy * dy))


@njit(cache=True, nogil=True)
def _chol_solve(M, g, n, L, z, x):  # pragma: no cover - numba
    """Solve ``M x = g`` (symmetric positive definite, n x n) into ``x``; False if not SPD.
    ``L`` and ``z`` are scratch buffers (no allocation in the fit loop)."""
    for i in range(n):
        for j in range(i + 1):
            s = M[i, j]
            for k in range(j):
                s -= L[i, k] * L[j, k]
            if i == j:
                if s <= 0.0:
                    return False
                L[i, i] = np.sqrt(s)
            else:
                L[i, j] = s / L[j, j]
    for i in range(n):
        s = g[i]
        for k in range(i):
            s -= L[i, k] * z[k]
        z[i] = s / L[i, i]
    for i in range(n - 1, -1, -1):
        s = z[i]
        for k in range(i + 1, n):
            s -= L[k, i] * x[k]
        x[i] = s / L[i, i]
    return True


@njit(cache=True, nogil=True)
def _eval(d, wt, px, py, pc, m, p, nch, e):  # pragma: no cover - numba
    """chi2 of ``p``; stores the Gaussian profile of each pixel in ``e``."""
    chi = 0.0
    for k in range(m):
        dx = px[k] - p[X]
        dy = py[k] - p[Y]
        ek = np.exp(-0.5 * (p[A] * dx * dx + 2.0 * p[B] * dx * dy + p[C] * dy * dy))
        e[k] = ek
        c = pc[k]
        r = d[k] - p[BG0 + c] - p[BG0 + nch + c] * ek
        chi += wt[k] * r * r
    return chi


@njit(cache=True, nogil=True)
def _valid(p, nch, cw):  # pragma: no cover - numba
    amp = 0.0
    for c in range(nch):
        amp += cw[c] * p[BG0 + nch + c]
    return amp > 0.0 and p[A] > 0.0 and p[C] > 0.0 and p[A] * p[C] - p[B] * p[B] > 0.0


@njit(cache=True, nogil=True)
def _fit_work(nch, size):  # pragma: no cover - numba
    """The scratch buffers of :func:`fit_gaussian` for stamps of up to ``size`` pixels."""
    npar = BG0 + 2 * nch
    return (np.empty((npar, npar)), np.empty((npar, npar)), np.empty(npar), np.empty(7),
            np.array([X, Y, A, B, C, 0, 0], np.int64), np.empty((nch, 7, 7)),
            np.empty((nch, 7)), np.empty(npar), np.zeros((npar, npar)), np.empty(npar),
            np.empty(npar), np.empty(size), np.empty(size))


@njit(cache=True, nogil=True, inline="always")
def _residual_jacobian(d, px, py, p, k, ek, bg, amp):  # pragma: no cover - numba
    """Pixel k's residual and its derivatives by (x, y, A, B, C, background, amplitude),
    ``ek`` its Gaussian profile, ``bg`` and ``amp`` the indices of its channel's
    background and amplitude in ``p``."""
    dx = px[k] - p[X]
    dy = py[k] - p[Y]
    ae = p[amp] * ek
    r = d[k] - p[bg] - ae
    return (r, ae * (p[A] * dx + p[B] * dy), ae * (p[B] * dx + p[C] * dy),
            -0.5 * ae * dx * dx, -ae * dx * dy, -0.5 * ae * dy * dy, 1.0, ek)


@njit(cache=True, nogil=True, inline="always")
def _normal_sums_mono(d, wt, px, py, m, p, e, free_shape, Mc, gc):  # pragma: no cover
    """:func:`fit_gaussian`'s normal equations for one channel, summed in registers (the
    lower triangle of ``Mc[0]`` and ``gc[0]``; with the shape fixed, the rows and columns of
    A, B, C are 0). The general loop sums into the arrays, which the compiler must assume
    may overlap, and reloads every term: a quarter of the fitting's time. The same
    products added in the same order: the same bits."""
    if not free_shape:
        Mc[:, :, :] = 0.0
        gc[:, :] = 0.0
    g0 = g1 = g2 = g3 = g4 = g5 = g6 = 0.0
    m00 = m10 = m11 = m20 = m21 = m22 = m30 = m31 = m32 = m33 = 0.0
    m40 = m41 = m42 = m43 = m44 = m50 = m51 = m52 = m53 = m54 = m55 = 0.0
    m60 = m61 = m62 = m63 = m64 = m65 = m66 = 0.0
    for k in range(m):
        wk = wt[k]
        if wk == 0.0:
            continue
        r, j0, j1, j2, j3, j4, j5, j6 = _residual_jacobian(d, px, py, p, k, e[k], BG0,
                                                           BG0 + 1)
        w0 = wk * j0
        w1 = wk * j1
        w5 = wk * j5
        w6 = wk * j6
        g0 += w0 * r
        g1 += w1 * r
        g5 += w5 * r
        g6 += w6 * r
        m00 += w0 * j0
        m10 += w1 * j0
        m11 += w1 * j1
        m50 += w5 * j0
        m51 += w5 * j1
        m55 += w5 * j5
        m60 += w6 * j0
        m61 += w6 * j1
        m65 += w6 * j5
        m66 += w6 * j6
        if free_shape:
            w2 = wk * j2
            w3 = wk * j3
            w4 = wk * j4
            g2 += w2 * r
            g3 += w3 * r
            g4 += w4 * r
            m20 += w2 * j0
            m21 += w2 * j1
            m22 += w2 * j2
            m30 += w3 * j0
            m31 += w3 * j1
            m32 += w3 * j2
            m33 += w3 * j3
            m40 += w4 * j0
            m41 += w4 * j1
            m42 += w4 * j2
            m43 += w4 * j3
            m44 += w4 * j4
            m52 += w5 * j2
            m53 += w5 * j3
            m54 += w5 * j4
            m62 += w6 * j2
            m63 += w6 * j3
            m64 += w6 * j4
    gc[0, 0], gc[0, 1], gc[0, 5], gc[0, 6] = g0, g1, g5, g6
    Mc[0, 0, 0], Mc[0, 1, 0], Mc[0, 1, 1] = m00, m10, m11
    Mc[0, 5, 0], Mc[0, 5, 1], Mc[0, 5, 5] = m50, m51, m55
    Mc[0, 6, 0], Mc[0, 6, 1], Mc[0, 6, 5], Mc[0, 6, 6] = m60, m61, m65, m66
    if free_shape:
        gc[0, 2], gc[0, 3], gc[0, 4] = g2, g3, g4
        Mc[0, 2, 0], Mc[0, 2, 1], Mc[0, 2, 2] = m20, m21, m22
        Mc[0, 3, 0], Mc[0, 3, 1], Mc[0, 3, 2], Mc[0, 3, 3] = m30, m31, m32, m33
        Mc[0, 4, 0], Mc[0, 4, 1], Mc[0, 4, 2], Mc[0, 4, 3], Mc[0, 4, 4] = m40, m41, m42, m43, m44
        Mc[0, 5, 2], Mc[0, 5, 3], Mc[0, 5, 4] = m52, m53, m54
        Mc[0, 6, 2], Mc[0, 6, 3], Mc[0, 6, 4] = m62, m63, m64


@njit(cache=True, nogil=True)
def fit_gaussian(d, wt, px, py, pc, m, p, nch, cw, maxiter, tol, free_shape,
                 work):  # pragma: no cover - numba
    """Levenberg-Marquardt fit of an elliptical Gaussian plus a constant per channel.

    ``d, wt, px, py, pc`` are the first ``m`` pixels' values, weights (0 = left out),
    coordinates and channels; ``p`` holds the starting point and receives the result;
    ``cw`` the share of pixels of each channel (the mean amplitude ``sum(cw * amp)`` must
    stay positive). With ``free_shape`` False the shape (A, B, C) stays as given and only
    the centre, backgrounds and amplitudes are fitted (faint stars: about 3x cheaper).
    Iterates until the centre moves less than ``tol`` pixels. Returns True when the fit
    converged to a valid Gaussian. ``work``: :func:`_fit_work`'s buffers (allocated once per
    pass, not once per star: a dozen allocations cost ~1 us a star).
    """
    npar = BG0 + 2 * nch
    M, Md, g, J, idx, Mc, gc, pn, Ls, zs, step, e, en = work
    lam = 1e-3
    chi = _eval(d, wt, px, py, pc, m, p, nch, e)
    converged = False
    for _ in range(maxiter):
        # normal equations per channel on the 7 parameters a pixel depends on (fixed
        # indices, lower triangle), then scattered symmetrically into M
        if nch == 1:
            _normal_sums_mono(d, wt, px, py, m, p, e, free_shape, Mc, gc)
        else:
            Mc[:, :, :] = 0.0
            gc[:, :] = 0.0
            for k in range(m):
                wk = wt[k]
                if wk == 0.0:
                    continue
                c = pc[k]
                r, J[0], J[1], J[2], J[3], J[4], J[5], J[6] = _residual_jacobian(
                    d, px, py, p, k, e[k], BG0 + c, BG0 + nch + c)
                if free_shape:
                    for a in range(7):
                        wja = wk * J[a]
                        gc[c, a] += wja * r
                        for b in range(a + 1):
                            Mc[c, a, b] += wja * J[b]
                else:
                    for a in range(4):
                        ia = FIXED[a]
                        wja = wk * J[ia]
                        gc[c, ia] += wja * r
                        for b in range(a + 1):
                            Mc[c, ia, FIXED[b]] += wja * J[FIXED[b]]
        M[:, :] = 0.0
        g[:] = 0.0
        for c in range(nch):
            idx[5] = BG0 + c
            idx[6] = BG0 + nch + c
            for a in range(7):
                g[idx[a]] += gc[c, a]
                for b in range(a + 1):
                    v = Mc[c, a, b]
                    M[idx[a], idx[b]] += v
                    if a != b:
                        M[idx[b], idx[a]] += v
        if not free_shape:  # the shape does not move
            for a in (A, B, C):
                M[a, a] = 1.0
                g[a] = 0.0
        accepted = False
        while lam < 1e7:
            for a in range(npar):
                for b in range(npar):
                    Md[a, b] = M[a, b]
                Md[a, a] = M[a, a] * (1.0 + lam) + 1e-12
            if _chol_solve(Md, g, npar, Ls, zs, step):
                for a in range(npar):
                    pn[a] = p[a] + step[a]
                if _valid(pn, nch, cw):
                    chin = _eval(d, wt, px, py, pc, m, pn, nch, en)
                    if chin <= chi:
                        converged = abs(step[X]) < tol and abs(step[Y]) < tol
                        p[:npar] = pn
                        e, en = en, e
                        chi = chin
                        lam = max(lam * 0.1, 1e-9)
                        accepted = True
                        break
            lam *= 10.0
        if not accepted:
            # no step lowers chi2 any more: a minimum (within numerical precision)
            converged = True
            break
        if converged:
            break
    return converged and _valid(p, nch, cw)


@njit(cache=True, nogil=True)
def fit_pass(img, chan, nch, bad, has_bad, sat_level, params, prev, rad, todo, nbr_ptr, nbr_idx,
             status, maxiter, max_shift, free):  # pragma: no cover - numba
    """Fit the stars listed in ``todo``, each on its own stamp of radius ``rad[i]``.

    ``chan[(y % 2) * 2 + x % 2]`` is the channel of pixel (x, y) (all 0 for mono).
    ``params[i]`` holds the starting point and receives the fit. Light of the neighbours
    ``nbr_idx[nbr_ptr[i]:nbr_ptr[i+1]]`` is subtracted with their models in ``prev`` (so a
    second pass deblends close pairs, Jacobi style). Excluded pixels (``bad & 1``) and
    saturated ones (``>= sat_level``) are not fitted. ``free[i]`` False keeps star i's
    shape fixed. ``status[i]`` is FIT_OK or FIT_FAILED.
    """
    h, w = img.shape
    npar = BG0 + 2 * nch
    cw = np.zeros(nch)
    for k in range(4):
        cw[chan[k]] += 0.25
    maxr = 0
    for i in todo:
        maxr = max(maxr, rad[i])
    size = (2 * maxr + 1) ** 2
    d = np.empty(size)
    wt = np.empty(size)
    px = np.empty(size)
    py = np.empty(size)
    pc = np.empty(size, np.int64)
    p = np.empty(npar)
    work = _fit_work(nch, size)
    for i in todo:
        r = rad[i]
        cx = int(np.floor(params[i, X] + 0.5))
        cy = int(np.floor(params[i, Y] + 0.5))
        x0 = max(cx - r, 0)
        x1 = min(cx + r + 1, w)
        y0 = max(cy - r, 0)
        y1 = min(cy + r + 1, h)
        m = 0
        ngood = 0
        for yy in range(y0, y1):
            for xx in range(x0, x1):
                dxc = xx - cx
                dyc = yy - cy
                if dxc * dxc + dyc * dyc > (r + 0.5) * (r + 0.5):
                    continue
                c = chan[(yy & 1) * 2 + (xx & 1)]
                v = img[yy, xx]
                good = np.isfinite(v) and v < sat_level and not (has_bad and bad[yy, xx] & 1)
                for q in range(nbr_ptr[i], nbr_ptr[i + 1]):
                    j = nbr_idx[q]
                    v -= _gauss(prev[j], nch, c, xx - prev[j, X], yy - prev[j, Y])
                d[m] = v if good else 0.0
                wt[m] = 1.0 if good else 0.0
                px[m] = xx - cx
                py[m] = yy - cy
                pc[m] = c
                m += 1
                if good:
                    ngood += 1
        for a in range(npar):
            p[a] = params[i, a]
        p[X] -= cx
        p[Y] -= cy
        x_start = p[X]
        y_start = p[Y]
        ok = ngood >= 3 * npar and fit_gaussian(d, wt, px, py, pc, m, p, nch, cw, maxiter,
                                                1e-3, free[i], work)
        if ok and (p[X] - x_start) ** 2 + (p[Y] - y_start) ** 2 > max_shift * max_shift:
            ok = False
        if ok:
            p[X] += cx
            p[Y] += cy
            for a in range(npar):
                params[i, a] = p[a]
            status[i] = FIT_OK
        else:
            status[i] = FIT_FAILED


@njit(cache=True, nogil=True)
def peak_and_saturation(img, chan, nch, sat_level, params):  # pragma: no cover - numba
    """Highest pixel above its channel's fitted background within 1.5 px of each centre,
    and whether a saturated pixel (``>= sat_level``) lies there."""
    n = params.shape[0]
    h, w = img.shape
    peak = np.full(n, np.nan)
    sat = np.zeros(n, np.bool_)
    for i in range(n):
        xc = params[i, X]
        yc = params[i, Y]
        cx = int(np.floor(xc + 0.5))
        cy = int(np.floor(yc + 0.5))
        best = -np.inf
        for yy in range(max(cy - 2, 0), min(cy + 3, h)):
            for xx in range(max(cx - 2, 0), min(cx + 3, w)):
                if (xx - xc) ** 2 + (yy - yc) ** 2 > 2.25:
                    continue
                if img[yy, xx] >= sat_level:
                    sat[i] = True
                v = img[yy, xx] - params[i, BG0 + chan[(yy & 1) * 2 + (xx & 1)]]
                if v > best:
                    best = v
        peak[i] = best
    return peak, sat


@njit(cache=True, nogil=True)
def measure(mimg, xs, ys, bg, nbr_ptr, nbr_idx, namp, na, nb, nc, hfr_rad, r_in, r_out_q,
            r_out, do_wing, active):  # pragma: no cover - numba
    """Sharpness, half-flux radius and wing level of each star on the measure image ``mimg``.

    ``xs, ys`` are the centres and ``bg`` the local background in ``mimg``; neighbours'
    light is removed with their Gaussian models ``namp * exp(-0.5 (na dx^2 + 2 nb dx dy +
    nc dy^2))``. The sharpness is ``max / sum`` of the background-subtracted 3x3 pixels
    around the brightest pixel near the centre (hot pixels and cosmic rays are near 1); the
    half-flux radius is measured within ``hfr_rad[i]`` from a radial profile in 0.2 px bins;
    the wing level is the median of the background-subtracted pixels whose distance from
    the centre, in units of the star's own fitted sigma (elliptical), is between ``r_in``
    and ``r_out_q`` (``r_out[i]`` pixels bound the search), over the star's amplitude
    ``namp[i]`` (where ``do_wing[i]``, else NaN): a few hundredths for a star, trailed or
    not, large (of either sign) for a galaxy core or nebula knot that a small Gaussian
    fitted the top of. Only the ``active`` stars are measured (the others stay NaN, but their
    models are still subtracted as neighbours): a fit already rejected on its shape -- a
    satellite trail fitted as a Gaussian thousands of pixels long -- would otherwise have its
    wing searched over the whole frame.
    """
    n = xs.shape[0]
    h, w = mimg.shape
    sharp = np.full(n, np.nan)
    hfr = np.full(n, np.nan)
    wing = np.full(n, np.nan)
    maxr = 1
    for i in range(n):
        if active[i]:
            maxr = max(maxr, int(np.ceil(max(hfr_rad[i], r_out[i] if do_wing[i] else 0.0))))
    size = min(2 * maxr + 1, h) * min(2 * maxr + 1, w)  # the boxes are clipped to the image
    rr = np.empty(size)
    ff = np.empty(size)
    ann = np.empty(size)
    for i in range(n):
        if not active[i]:
            continue
        xc = xs[i]
        yc = ys[i]
        cx = int(np.floor(xc + 0.5))
        cy = int(np.floor(yc + 0.5))
        bx, by = cx, cy
        bv = -np.inf
        for yy in range(max(cy - 1, 0), min(cy + 2, h)):
            for xx in range(max(cx - 1, 0), min(cx + 2, w)):
                if mimg[yy, xx] > bv:
                    bv = mimg[yy, xx]
                    bx, by = xx, yy
        tot = 0.0
        for yy in range(max(by - 1, 0), min(by + 2, h)):
            for xx in range(max(bx - 1, 0), min(bx + 2, w)):
                tot += mimg[yy, xx] - bg[i]
        if tot > 0:
            sharp[i] = (bv - bg[i]) / tot
        R = hfr_rad[i]
        ir = int(np.ceil(R))
        m = 0
        for yy in range(max(cy - ir, 0), min(cy + ir + 1, h)):
            for xx in range(max(cx - ir, 0), min(cx + ir + 1, w)):
                r = np.sqrt((xx - xc) ** 2 + (yy - yc) ** 2)
                if r > R:
                    continue
                v = mimg[yy, xx] - bg[i]
                if not np.isfinite(v):
                    continue
                for q in range(nbr_ptr[i], nbr_ptr[i + 1]):
                    j = nbr_idx[q]
                    dx = xx - xs[j]
                    dy = yy - ys[j]
                    v -= namp[j] * np.exp(-0.5 * (na[j] * dx * dx + 2.0 * nb[j] * dx * dy
                                                  + nc[j] * dy * dy))
                rr[m] = r
                ff[m] = v
                m += 1
        ia = int(np.ceil(r_out[i])) if do_wing[i] else -1
        na_ = 0
        for yy in range(max(cy - ia, 0), min(cy + ia + 1, h)):
            for xx in range(max(cx - ia, 0), min(cx + ia + 1, w)):
                dx = xx - xc
                dy = yy - yc
                q2 = na[i] * dx * dx + 2.0 * nb[i] * dx * dy + nc[i] * dy * dy
                if q2 < r_in * r_in or q2 > r_out_q * r_out_q:
                    continue
                v = mimg[yy, xx] - bg[i]
                if np.isfinite(v):
                    ann[na_] = v
                    na_ += 1
        if na_ > 0 and namp[i] > 0:
            wing[i] = np.median(ann[:na_]) / namp[i]
        if m > 0:
            nbin = int(R / 0.2) + 2
            prof = np.zeros(nbin)
            total = 0.0
            for k in range(m):
                prof[int(rr[k] / 0.2)] += ff[k]
                total += ff[k]
            if total > 0:
                half = 0.5 * total
                acc = 0.0
                for k in range(nbin):
                    if acc + prof[k] >= half and prof[k] > 0:
                        hfr[i] = 0.2 * (k + (half - acc) / prof[k])
                        break
                    acc += prof[k]
    return sharp, hfr, wing
