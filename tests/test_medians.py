"""The radix-select median (deepsky.medians) against numpy's, value for value."""

import numpy as np
import pytest

from deepsky.medians import median


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["normal", "integers", "tiny", "constant", "heavy tails",
                                  "two clusters", "subnormal", "signed zeros", "two values"])
@pytest.mark.parametrize("n", [20_000, 20_001, 65_536, 65_537, 200_001])
def test_median_is_numpys(dtype, kind, n):
    """Odd and even counts, ties (integer values, a constant array), values of both signs
    and zeros of both signs, values spanning 10 decades: the very value np.median gives,
    of the same type."""
    rng = np.random.default_rng(hash((kind, n)) % 2**32)
    a = {"normal": lambda: rng.normal(100, 5, n),
         "integers": lambda: np.round(rng.normal(0, 3, n)),  # ties, -0.0 and +0.0
         "tiny": lambda: np.abs(rng.normal(0, 1e-3, n)),
         "constant": lambda: np.full(n, -2.5),
         "heavy tails": lambda: rng.standard_cauchy(n) * 1e5,
         # the selection narrows the keys' range round by round: ranges of every width
         "two clusters": lambda: np.where(rng.random(n) < 0.5, rng.normal(0, 1, n),
                                          rng.normal(1e6, 1, n)),
         "subnormal": lambda: rng.normal(0, 1e-310, n) if dtype == np.float64
         else rng.normal(0, 1e-40, n).astype(np.float32),
         "signed zeros": lambda: np.where(rng.random(n) < 0.5, 0.0, -0.0),
         "two values": lambda: rng.choice([1.0, 7.0], n)}[kind]().astype(dtype)
    got, want = median(a), np.median(a)
    assert type(got) is type(want)
    assert got == want


def test_median_hands_other_input_to_numpy():
    """Short arrays, integer arrays, 2-D arrays: numpy's own median."""
    assert median(np.arange(11.0)) == 5.0
    assert median(np.arange(100_000)) == np.median(np.arange(100_000))
    a = np.arange(200_000, dtype=np.float32).reshape(400, 500)
    assert median(a) == np.median(a)
