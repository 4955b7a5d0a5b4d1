"""Rejection kernels against known truth: injected outliers, Gaussian noise statistics."""

import numpy as np
import pytest

from deepsky.integrate.reject import METHODS, combine


def _noise(n, shape=(40, 40), seed=0, sigma=10.0):
    rng = np.random.default_rng(seed)
    return rng.normal(100.0, sigma, (n,) + shape).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
def test_constant_block_gives_the_constant(method):
    b = np.full((6, 4, 5), 7.5, np.float32)
    low, high = (1, 1) if method == "minmax" else ((0.1, 0.1) if method == "percentile" else (3, 3))
    out, lo, hi, used = combine(b, method=method, low=low, high=high)
    np.testing.assert_allclose(out, 7.5, atol=1e-6)


@pytest.mark.parametrize(("method", "n"), [("mad", 3), ("mad", 5), ("mad", 9),
                                           ("winsorized", 5), ("winsorized", 9),
                                           ("gesd", 5), ("gesd", 9)])
def test_robust_methods_reject_a_trail_in_few_frames(method, n):
    b = _noise(n, seed=n)
    b[1, 10:14, :] += 400.0  # a bright trail across frame 1
    out, lo, hi, used = combine(b, method=method, low=3.0, high=3.0)
    clean = np.delete(b, 1, axis=0)[:, 10:14, :].mean(axis=0)
    # Inside the trail the result is (close to) the mean of the other frames.
    assert np.all(hi[10:14] >= 1)
    assert np.max(np.abs(out[10:14] - clean)) < 15.0


def test_plain_sigma_clip_cannot_reject_with_few_frames():
    # The documented weakness that motivates the robust methods.
    b = _noise(5, seed=3)
    b[2, 5, 5] += 400.0
    out, lo, hi, used = combine(b, method="sigma", low=3.0, high=3.0)
    assert hi[5, 5] == 0


@pytest.mark.parametrize("method", ["winsorized", "sigma", "mad", "linear", "gesd"])
def test_noise_of_clean_stack_close_to_sqrt_n(method):
    n, sigma = 30, 10.0
    b = _noise(n, shape=(80, 80), seed=11, sigma=sigma)
    k = 5.0 if method == "linear" else 3.0  # Siril's defaults: 5 for linear fit, 3 otherwise
    out, lo, hi, used = combine(b, method=method, low=k, high=k)
    ratio = out.std() / (sigma / np.sqrt(n))
    assert 0.9 < ratio < 1.12, ratio
    assert (lo.astype(int) + hi).mean() / n < 0.03


def test_weights_and_missing_samples():
    b = np.stack([np.full((2, 2), v, np.float32) for v in (1.0, 2.0, 4.0)])
    b[2, 0, 0] = np.nan
    out, lo, hi, used = combine(b, method="mean", weights=np.array([1.0, 1.0, 2.0]))
    assert out[1, 1] == pytest.approx((1 + 2 + 8) / 4)
    assert out[0, 0] == pytest.approx(1.5)
    assert used[0, 0] == 2 and used[1, 1] == 3


def test_mask_excludes_samples_and_all_missing_is_nan():
    b = np.ones((3, 2, 2), np.float32)
    b[0] = 100
    mask = np.zeros_like(b, bool)
    mask[0] = True
    out, *_ = combine(b, method="mean", mask=mask)
    np.testing.assert_allclose(out, 1.0)
    out, *_ = combine(np.full((3, 1, 1), np.nan, np.float32), method="winsorized")
    assert np.isnan(out[0, 0])


def test_minmax_and_percentile():
    b = np.array([1, 2, 3, 4, 100], np.float32).reshape(5, 1, 1)
    out, lo, hi, _ = combine(b, method="minmax", low=1, high=1)
    assert out[0, 0] == pytest.approx(3.0) and lo[0, 0] == 1 and hi[0, 0] == 1
    out, lo, hi, _ = combine(b, method="percentile", low=0.8, high=0.5)
    assert hi[0, 0] == 1 and out[0, 0] == pytest.approx(2.5)


def test_median_and_large_n():
    b = _noise(120, shape=(10, 10), seed=5)
    out, *_ = combine(b, method="median")
    np.testing.assert_allclose(out, np.median(b, axis=0), rtol=1e-6)
    b[7] += 1000
    out, lo, hi, _ = combine(b, method="winsorized")
    assert np.all(hi >= 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown rejection method"):
        combine(np.ones((3, 2, 2)), method="nope")
    with pytest.raises(ValueError, match="weights"):
        combine(np.ones((3, 2, 2)), weights=np.ones(2))


def _reference_clip(samples: np.ndarray, method: str, low: float, high: float,
                    weights: np.ndarray | None = None) -> tuple:
    """Iterative clipping around the median, plainly in numpy (no sorting tricks, no
    prefix sums): the kept samples' (weighted) mean and the counts rejected low and high."""
    good = np.isfinite(samples)
    kept = samples[good].astype(np.float64)
    wts = (np.ones(samples.shape) if weights is None else weights)[good]
    n0 = kept.size
    nl = nh = 0
    for _ in range(10):
        if kept.size < 3:
            break
        med = np.median(kept)
        if method == "sigma":
            sigma = kept.std(ddof=1)
        elif method == "winsorized":  # Siril's iteration, run to its limit
            sigma = kept.std(ddof=1)
            for _ in range(10_000):
                last = sigma
                sigma = 1.134 * np.clip(kept, med - 1.5 * sigma, med + 1.5 * sigma).std(ddof=1)
                if abs(sigma - last) <= 1e-13 * last:
                    break
            if sigma < 1e-9 * kept.std(ddof=1):
                sigma = 0.0  # it decays to 0 (the unclipped samples are all equal)
        else:
            sigma = 1.4826 * np.median(np.abs(kept - med))
        if sigma <= 0:
            break
        lo, hi = kept < med - low * sigma, kept > med + high * sigma
        if kept.size - lo.sum() - hi.sum() < 2 or not (lo.any() or hi.any()):
            break
        nl += int(lo.sum())
        nh += int(hi.sum())
        kept, wts = kept[~lo & ~hi], wts[~lo & ~hi]
    assert kept.size + nl + nh == n0
    return np.average(kept, weights=wts), nl, nh


@pytest.mark.parametrize("n", [4, 7, 20, 33, 64, 150])
@pytest.mark.parametrize("method", ["sigma", "mad", "winsorized"])
@pytest.mark.parametrize("weighted", [False, True])
def test_stacks_clip_as_the_plain_algorithm(n, method, weighted):
    """The clipping methods sort each pixel's samples (a sorting network across the pixels
    of a row) and clip with prefix sums; integer data (ties), outliers on both sides,
    missing samples and per-frame weights give the plain algorithm's result pixel by
    pixel, the clipping centre being the exact median at any N, the winsorized sigma the
    limit of Siril's iteration (solved per segment, not iterated to a tolerance)."""
    rng = np.random.default_rng(n)
    block = np.round(rng.normal(1000, 8, (n, 12, 40))).astype(np.float32)
    hit = rng.random(block.shape) < 0.06
    block[hit] += rng.choice([-150.0, 90.0, 4000.0], hit.sum()).astype(np.float32)
    block[rng.random(block.shape) < 0.03] = np.nan
    block[:, 0, 0] = np.nan  # no sample at all
    weights = rng.uniform(0.2, 3.0, n) if weighted else None
    out, lo, hi, used = combine(block, method=method, low=3.0, high=2.5, weights=weights,
                                workers=1)
    assert np.isnan(out[0, 0]) and used[0, 0] == 0
    for y in range(block.shape[1]):
        for x in range(block.shape[2]):
            if (y, x) == (0, 0):
                continue
            mean, nl, nh = _reference_clip(block[:, y, x], method, 3.0, 2.5, weights)
            assert (lo[y, x], hi[y, x]) == (nl, nh), (y, x)
            assert used[y, x] == np.isfinite(block[:, y, x]).sum() - nl - nh
            assert out[y, x] == pytest.approx(mean, rel=1e-6)
    if method != "sigma" or n >= 20:  # (a plain sigma clip of a few samples cannot reject)
        assert lo.sum() + hi.sum() > 0.03 * block.size  # the outliers were there to reject


@pytest.mark.parametrize("n", [3, 5, 16, 17, 31, 32, 33, 100, 257])
def test_sorting_network_sorts(n):
    """The pruned odd-even merge network sorts every input of its size (0-1 principle on
    random binary inputs, plus random floats)."""
    from deepsky.integrate.reject import _network

    pairs = _network(n)
    rng = np.random.default_rng(n)
    data = np.concatenate([rng.integers(0, 2, (400, n)).astype(float), rng.random((400, n))])
    for i, j in pairs:
        a, b = data[:, i].copy(), data[:, j].copy()
        data[:, i], data[:, j] = np.minimum(a, b), np.maximum(a, b)
    assert np.all(np.diff(data, axis=1) >= 0)


def test_cut_counts_in_float32_are_the_float64_comparisons():
    """The lock step counts a column's samples below a float64 cut in float32 against the
    cut rounded inwards: the same counts as comparing in float64, for cuts on a sample, one
    float64 step either side of one, at +-0, beyond float32's range, infinite and NaN."""
    from deepsky.integrate.reject import _count_cuts

    rng = np.random.default_rng(5)
    n, cw = 12, 4000
    vals = np.sort(rng.normal(0, 1, (n, cw)).astype(np.float32), axis=0)
    vals[:, :50] = np.sort(rng.normal(0, 1e-42, (n, 50)).astype(np.float32), axis=0)  # subnormal
    vals[:4, 60:80] = 0.0
    vals[4:6, 60:80] = -0.0
    vals[-2:, 100:140] = np.inf
    vals[:1, 140:160] = -np.inf
    vals = np.sort(vals, axis=0)
    pick = vals[rng.integers(0, n, cw), np.arange(cw)].astype(np.float64)
    a = pick + rng.choice([-1.0, 0.0, 1.0], cw) * np.spacing(np.abs(pick))
    b = pick + rng.choice([-1.0, 0.0, 1.0], cw) * np.spacing(np.abs(pick))
    a[200:220] = rng.normal(0, 1, 20)
    special = [0.0, -0.0, 5e-324, -5e-324, 1e-46, -1e-46, 3.5e38, -3.5e38, 1e300, -1e300,
               np.inf, -np.inf, np.nan, float(np.finfo(np.float32).max),
               -float(np.finfo(np.float32).max)]
    for i, v in enumerate(special):
        a[300 + i::400] = v
        b[301 + 2 * i::400] = v
    f32 = np.empty((2, cw), np.float32)
    below = np.empty(cw, np.int32)
    upto = np.empty(cw, np.int32)
    _count_cuts(vals, n, cw, a, b, f32, below, upto)
    v64 = vals.astype(np.float64)
    assert np.array_equal(below, (v64 < a).sum(axis=0))
    assert np.array_equal(upto, (v64 <= b).sum(axis=0))


def test_winsorized_lock_step_on_a_sample_at_the_cut():
    """A flat's pixel whose lowest sample lies 1e-3 inside the low cut (3 sigma) when the
    middle pair of its 20 samples is summed in float32, as the per-pixel clipping sums it,
    and 7e-4 beyond it when summed in float64: the lock step (a run of such pixels) keeps
    it, as the per-pixel clipping does."""
    import deepsky.integrate.reject as rj

    col = np.array([30051.146484375, 30223.9609375, 30215.951171875, 30276.3984375,
                    30139.7890625, 30058.671875, 30441.693359375, 30304.00390625,
                    30242.716796875, 30355.56640625, 29840.0234375, 30197.4296875,
                    30192.896484375, 30143.68359375, 30178.6875, 30290.314453125,
                    30071.724609375, 30170.1875, 30372.974609375, 30202.666015625], np.float32)
    block = np.repeat(col[:, None, None], 600, axis=2)
    kw = dict(method="winsorized", low=3.0, high=3.0, workers=1)
    fast = combine(block, **kw)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(rj, "_LOCKSTEP_MAX", 0)
        plain = combine(block, **kw)
    assert (fast[1] == 0).all() and (plain[1] == 0).all()
    assert np.array_equal(fast[0], plain[0])
    assert np.allclose(fast[0], col.astype(np.float64).mean(), rtol=1e-6)


@pytest.mark.parametrize("n", [3, 8, 20, 32, 100])
def test_winsorized_lock_step_is_the_per_pixel_clipping(n, monkeypatch):
    """The winsorizing in lock step across a run of pixels gives the per-pixel walks'
    results bit for bit: wide rows (the long-running pixels handed back, the pixels the first
    round clipped continued per pixel), ties, constant columns, infinite samples, missing
    ones, weights, one, two or ten clipping rounds."""
    import deepsky.integrate.reject as rj

    rng = np.random.default_rng(100 + n)
    block = rng.normal(500, rng.uniform(0.05, 30), (n, 6, 1500)).astype(np.float32)
    block[:, 1] = np.round(block[:, 1])  # integer values: ties
    block[:, 2, :200] = 7.0  # no spread: sigma 0
    block[0, 3, :40] = np.inf
    block[1 % n, 3, 20:60] = -np.inf
    block[: n // 2, 4, 100:160] = 1e6  # half the samples far off
    hit = rng.random(block.shape) < 0.05
    block[hit] += rng.uniform(-400, 400, hit.sum()).astype(np.float32)
    block[rng.random(block.shape) < 0.04] = np.nan
    weights = rng.uniform(0.2, 3.0, n)
    for max_iter in (1, 2, 10):
        for w in (None, weights):
            kw = dict(method="winsorized", low=2.5, high=3.0, weights=w, max_iter=max_iter,
                      workers=1)
            fast = combine(block, **kw)
            with monkeypatch.context() as m:
                m.setattr(rj, "_LOCKSTEP_MAX", 0)
                plain = combine(block, **kw)
            for a, b in zip(fast, plain):
                assert np.array_equal(a, b, equal_nan=True)
            assert fast[1].sum() + fast[2].sum() > 0  # there was clipping to agree on
