"""The statistics of a report: Wilson score interval, McNemar's exact test, paired bootstrap, and for runs
against the null arm Fisher's exact test with Newcombe's interval (shares) and permutation tests of means
with the intervals they give when inverted."""
import itertools
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



def fisher_exact(a: int, n1: int, c: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test of a/n1 against c/n2: the summed probability (hypergeometric,
    margins fixed) of every table no more likely than the observed one."""
    k, n = a + c, n1 + n2

    def probability(x: int) -> float:
        return math.comb(n1, x) * math.comb(n2, k - x) / math.comb(n, k)

    observed = probability(a)
    tables = (probability(x) for x in range(max(0, k - n2), min(k, n1) + 1))
    return min(1.0, sum(p for p in tables if p <= observed * (1 + 1e-7)))


def newcombe(a: int, n1: int, c: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval of a/n1 - c/n2, from the two shares' Wilson intervals (his method 10)."""
    p1, p2 = a / n1, c / n2
    (l1, u1), (l2, u2) = wilson(a, n1, z), wilson(c, n2, z)
    return (p1 - p2 - math.hypot(p1 - l1, u2 - p2), p1 - p2 + math.hypot(u1 - p1, p2 - l2))


def mean_test(x, resamples: int = 10_000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float, float]:
    """(mean, lo, hi, p) of one sample: the sign-flip permutation test of a zero mean (every sign pattern
    when there are at most `resamples`, else that many random ones and the observed), and the interval of
    the shifts d it does not reject at `alpha` for x - d."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if 2 ** n <= resamples:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        signs = np.vstack([np.ones(n), np.random.default_rng(seed).choice((1.0, -1.0), (resamples, n))])
    return _shift_test(signs @ x / n, signs.mean(axis=1), x.mean(), x, alpha)


def mean_difference_test(x, y, resamples: int = 10_000, seed: int = 0,
                         alpha: float = 0.05) -> tuple[float, float, float, float]:
    """(mean(x) - mean(y), lo, hi, p): the two-sided permutation test of equal means (every split of the
    pooled values into groups of len(x) and len(y) when there are at most `resamples`, else that many random
    ones and the observed), and the interval of the shifts d it does not reject at `alpha` for x - d against y."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n, m = len(x), len(y)
    if math.comb(n + m, n) <= resamples:
        chosen = np.array(list(itertools.combinations(range(n + m), n)))
    else:
        shuffled = np.argsort(np.random.default_rng(seed).random((resamples, n + m)), axis=1)[:, :n]
        chosen = np.vstack([np.arange(n), shuffled])
    weights = np.full((len(chosen), n + m), -1.0 / m)
    np.put_along_axis(weights, chosen, 1.0 / n, axis=1)  # mean of the first group minus mean of the second
    return _shift_test(weights @ np.concatenate([x, y]), weights[:, :n].sum(axis=1), x.mean() - y.mean(),
                       np.concatenate([x, y]), alpha)


def _shift_test(a, b, observed: float, values, alpha: float) -> tuple[float, float, float, float]:
    """Each relabeling's statistic is `a - d * b` when the first sample is shifted by d (the observed one:
    `observed - d`); p(d) is the share of relabelings at least as far from 0 as the observed. Returns
    (observed, lo, hi, p(0)): lo and hi bound the shifts with p(d) > alpha, found by bisection from the
    estimate (where p = 1) outwards; infinite when even the farthest shift keeps p above alpha (too few
    relabelings: the smallest p the test can give is above alpha)."""
    tolerance = 1e-9 * (np.abs(values).max() + 1.0)

    def p(d: float) -> float:
        return float(np.mean(np.abs(a - d * b) >= abs(observed - d) - tolerance))

    if np.mean(np.abs(b) >= 1 - 1e-12) > alpha:  # as d goes to infinity only these relabelings still count
        return observed, -math.inf, math.inf, p(0.0)
    scale = max(float(np.ptp(values)), abs(observed), tolerance)

    def bound(direction: int) -> float:
        inside, outside = observed, observed + direction * scale
        while p(outside) > alpha:
            inside, outside = outside, observed + 2 * (outside - observed)
        for _ in range(100):
            middle = (inside + outside) / 2
            inside, outside = (middle, outside) if p(middle) > alpha else (inside, middle)
        return inside

    return observed, bound(-1), bound(1), p(0.0)
