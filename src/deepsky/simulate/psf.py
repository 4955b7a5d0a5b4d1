"""Point-spread function and pixel-integrated star rendering.

The PSF is an elliptical Moffat profile, optionally smeared along a straight segment (a
tracking error that trails the stars). Stars are drawn as postage stamps whose size grows
with brightness; each stamp is integrated over the pixel area by supersampling, normalised
so that the star's flux in the image is exactly its catalogue flux, and all stamps are added
to the image in one ``np.bincount`` pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Stamp radii (px) a star may get; grouping stars by radius keeps the work vectorised.
_RADII = np.array([3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96,
                   112, 128, 160, 192, 224, 256])
# Elements of a supersampled stamp block evaluated at once (bounds the memory to ~10 MB).
_BLOCK = 1 << 21


@dataclass(frozen=True)
class PSF:
    """An elliptical Moffat PSF, optionally trailed.

    ``fwhm`` is the FWHM of the minor axis (px); the major axis is ``fwhm * elongation``,
    at ``angle`` radians from +x towards +y. ``trail_length`` (px) smears the profile along
    a segment at ``trail_angle``, centred on the star (so the centroid does not move).

    The Moffat profile is ``(1 + u**2/a**2 + v**2/b**2) ** -beta`` with
    ``a = fwhm_major / (2 sqrt(2**(1/beta) - 1))`` and likewise ``b``.
    """

    fwhm: float
    beta: float = 3.0
    elongation: float = 1.0
    angle: float = 0.0
    trail_length: float = 0.0
    trail_angle: float = 0.0

    @property
    def fwhm_major(self) -> float:
        return self.fwhm * self.elongation

    @property
    def alpha_minor(self) -> float:
        return self.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0))

    @property
    def alpha_major(self) -> float:
        return self.alpha_minor * self.elongation

    @property
    def supersampling(self) -> int:
        """Sub-pixels per pixel axis used to integrate the profile over a pixel."""
        return int(min(6, max(3, math.ceil(6.0 / self.fwhm))))

    @property
    def roundness(self) -> float:
        """Minor/major axis ratio of the PSF core (1 = round).

        Computed from second moments of a Gaussian with the same FWHMs, convolved with the
        trail segment (variance ``L**2 / 12`` along the trail): ``sqrt(lambda_min /
        lambda_max)``. Without a trail it is ``1 / elongation``.
        """
        k = 1.0 / (8.0 * math.log(2.0))
        su, sv = k * self.fwhm_major ** 2, k * self.fwhm ** 2
        c, s = math.cos(self.angle), math.sin(self.angle)
        cov = np.array([[su * c * c + sv * s * s, (su - sv) * c * s],
                        [(su - sv) * c * s, su * s * s + sv * c * c]])
        if self.trail_length > 0:
            t = np.array([math.cos(self.trail_angle), math.sin(self.trail_angle)])
            cov = cov + (self.trail_length ** 2 / 12.0) * np.outer(t, t)
        lo, hi = np.linalg.eigvalsh(cov)
        return float(math.sqrt(lo / hi))

    def without_trail(self) -> "PSF":
        return PSF(self.fwhm, self.beta, self.elongation, self.angle)

    # ------------------------------------------------------------------------------------
    def stamp_radius(self, peak_flux: np.ndarray, threshold: float) -> np.ndarray:
        """Stamp radius (px, from a fixed ladder) for stars of total flux ``peak_flux``.

        The radius is where the profile of the brightest channel drops below ``threshold``
        (in the flux's units per pixel), at least ``2 * fwhm_major`` plus half the trail.
        """
        f = np.maximum(np.asarray(peak_flux, dtype=np.float64), 0.0)
        a, b, beta = self.alpha_major, self.alpha_minor, self.beta
        trail_spread = 1.0 + self.trail_length / max(self.fwhm, 1e-6)
        peak_sb = f * (beta - 1.0) / (math.pi * a * b) / trail_spread
        ratio = np.maximum(peak_sb / max(threshold, 1e-30), 1.0)
        r = a * np.sqrt(np.maximum(ratio ** (1.0 / beta) - 1.0, 0.0))
        r = np.maximum(r, 2.0 * self.fwhm_major + 1.0) + 0.5 * self.trail_length
        idx = np.minimum(np.searchsorted(_RADII, np.ceil(r)), len(_RADII) - 1)
        return _RADII[idx]

    def profile(self, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
        """Unnormalised profile at offsets ``(du, dv)`` (broadcast; float32)."""
        out = None
        if self.trail_length > 0:
            n = max(2, int(math.ceil(self.trail_length / (0.3 * self.fwhm))) + 1)
            ct, st = math.cos(self.trail_angle), math.sin(self.trail_angle)
            for s in np.linspace(-0.5, 0.5, n) * self.trail_length:
                p = self._moffat(du - np.float32(s * ct), dv - np.float32(s * st))
                out = p if out is None else out + p
            assert out is not None
            return out
        return self._moffat(du, dv)

    def _moffat(self, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
        ia2, ib2 = 1.0 / self.alpha_major ** 2, 1.0 / self.alpha_minor ** 2
        c, s = math.cos(self.angle), math.sin(self.angle)
        qa = np.float32(c * c * ia2 + s * s * ib2)
        qc = np.float32(s * s * ia2 + c * c * ib2)
        qb = np.float32(2.0 * c * s * (ia2 - ib2))
        q = (du * du) * qa + (dv * dv) * qc + np.float32(1.0)
        if qb != 0:
            q = q + (du * dv) * qb
        if self.beta == 3.0:
            t = np.reciprocal(q)
            return t * t * t
        return np.power(q, np.float32(-self.beta))

    def stamps(self, fx: np.ndarray, fy: np.ndarray, radius: int) -> np.ndarray:
        """Pixel-integrated stamps ``(n, 2r+1, 2r+1)`` (each summing to 1) of stars whose
        centres sit at ``(fx, fy)`` from the centre of the stamp's middle pixel."""
        ss = self.supersampling
        side = 2 * radius + 1
        big = side * ss
        grid = (np.arange(big) + 0.5) / ss - (radius + 0.5)
        fx = np.asarray(fx, dtype=np.float64)
        fy = np.asarray(fy, dtype=np.float64)
        du = (grid[None, None, :] - fx[:, None, None]).astype(np.float32)
        dv = (grid[None, :, None] - fy[:, None, None]).astype(np.float32)
        val = self.profile(du, dv)
        pix = val.reshape(len(fx), side, ss, side, ss).sum(axis=(2, 4), dtype=np.float32)
        pix /= pix.sum(axis=(1, 2), keepdims=True)
        return pix

    def kernel(self, radius: int | None = None) -> np.ndarray:
        """A centred, pixel-integrated kernel ``(2r+1, 2r+1)`` summing to 1."""
        if radius is None:
            radius = int(math.ceil(5.0 * self.fwhm_major + 0.5 * self.trail_length + 2))
        return self.stamps(np.zeros(1), np.zeros(1), radius)[0]


def render_stars(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    psf: PSF,
    *,
    cfa: np.ndarray | None = None,
    threshold: float = 0.05,
) -> np.ndarray:
    """Render point sources with ``psf`` on a grid of ``shape`` (H, W).

    Parameters
    ----------
    x, y : array (n,)
        Centres in pixel coordinates of the grid (the centre of ``out[j, i]`` is ``(i, j)``).
    flux : array (n,) or (n, C)
        Total flux of each star (per colour channel when 2-D).
    cfa : int array (2, 2), optional
        Channel index seen by pixel ``(x, y)``: ``cfa[y % 2, x % 2]``. With it the result is
        one mosaic ``(H, W)`` where each pixel takes its channel's flux; without it the
        result is ``(H, W)`` for 1-D ``flux`` or ``(C, H, W)``.
    threshold : float
        Flux per pixel where a star's stamp may end (its flux is renormalised into the stamp,
        so the image holds exactly ``flux``).
    """
    h, w = shape
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    f = np.asarray(flux, dtype=np.float64)
    one_d = f.ndim == 1
    f = f.reshape(len(x), -1) if len(x) else f.reshape(0, 1 if one_d else f.shape[-1])
    nch = f.shape[1]
    n_planes = 1 if (cfa is not None or nch == 1) else nch
    fmax = f.max(axis=1, initial=0.0)
    keep = np.isfinite(x) & np.isfinite(y) & (fmax > 0)
    ix = np.rint(np.where(keep, x, 0.0)).astype(np.int64)
    iy = np.rint(np.where(keep, y, 0.0)).astype(np.int64)
    radius = psf.stamp_radius(fmax, threshold)
    keep &= (ix + radius >= 0) & (ix - radius <= w - 1) & (iy + radius >= 0) & \
            (iy - radius <= h - 1)
    idx_parts: list[np.ndarray] = []
    val_parts: list[list[np.ndarray]] = [[] for _ in range(n_planes)]
    ss = psf.supersampling
    for r in np.unique(radius[keep]):
        members = np.flatnonzero(keep & (radius == r))
        side = 2 * int(r) + 1
        chunk = max(1, _BLOCK // (side * ss) ** 2)
        off = np.arange(-r, r + 1)
        for start in range(0, len(members), chunk):
            m = members[start:start + chunk]
            st = psf.stamps(x[m] - ix[m], y[m] - iy[m], int(r))
            xs = ix[m, None, None] + off[None, None, :]
            ys = iy[m, None, None] + off[None, :, None]
            inb = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
            flat_idx = np.broadcast_to(ys * w + xs, st.shape)[inb]
            idx_parts.append(flat_idx)
            if cfa is not None:
                ch = np.asarray(cfa)[ys % 2, xs % 2]
                ch = np.broadcast_to(ch, st.shape)
                vals = st * f[m][np.arange(len(m))[:, None, None], ch].astype(np.float32)
                val_parts[0].append(vals[inb])
            else:
                for c in range(n_planes):
                    vals = st * f[m, c].astype(np.float32)[:, None, None]
                    val_parts[c].append(vals[inb])
    planes = []
    all_idx = np.concatenate(idx_parts) if idx_parts else np.zeros(0, dtype=np.int64)
    for c in range(n_planes):
        vals = np.concatenate(val_parts[c]) if val_parts[c] else np.zeros(0, np.float32)
        img = np.bincount(all_idx, weights=vals, minlength=h * w)
        planes.append(img.astype(np.float32).reshape(h, w))
    if n_planes == 1 and (one_d or cfa is not None or nch == 1):
        return planes[0]
    return np.stack(planes)
