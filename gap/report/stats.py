"""The statistics of a report: Wilson score interval, McNemar's exact test, paired bootstrap."""
import math

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial share (`nan`s for n = 0)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_bootstrap(diffs, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of a mean paired difference: the share of resampled means, shifted to the null
    (centred on 0), at least as far from 0 as the observed mean; (count + 1) / (resamples + 1)."""
    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) == 0:
        return math.nan
    observed = diffs.mean()
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory for long tasks
        stop = min(start + 1000, resamples)
        means[start:stop] = diffs[rng.integers(0, len(diffs), (stop - start, len(diffs)))].mean(axis=1)
    extreme = np.abs(means - observed) >= abs(observed) - 1e-12
    return float((extreme.sum() + 1) / (resamples + 1))

