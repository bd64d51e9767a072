"""The statistics behind ``report`` and ``compare``: an accuracy's interval, a paired test and
a paired interval for two runs on the same problems, and the spread over seeds.

Plain Python (no numpy or scipy at run time), exact where it is cheap: the Wilson score
interval (Newcombe 1998's formula, as scipy's ``binomtest(...).proportion_ci("wilson")``),
McNemar's exact test (a two-sided binomial test on the discordant pairs, summed from a
saddle-point density so a large count costs no more than a small one), a paired bootstrap of
the accuracy difference that draws each resample's counts instead of its problems, and a
Student t interval over per-seed accuracies. Where there is nothing to estimate from (no
problems, one seed) a function returns None rather than a NaN.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_RESAMPLES = 10_000


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes`` out of ``trials`` (None without trials).
    Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at 0/n or n/n,
    which matters for the small and near-perfect subsets a report splits into."""
    _check_confidence(confidence)
    if trials == 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in 0..{trials}, got {successes}")
    z = statistics.NormalDist().inv_cdf(0.5 + 0.5 * confidence)
    p = successes / trials
    denominator = 2 * (trials + z * z)
    center = (2 * trials * p + z * z) / denominator
    delta = z / denominator * math.sqrt(4 * trials * p * (1 - p) + z * z)
    low = 0.0 if successes == 0 else center - delta
    high = 1.0 if successes == trials else center + delta
    return low, high


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided p-value for two classifiers on the same problems, from the
    discordant pairs: ``only_a`` problems only A got right, ``only_b`` only B. Under the null
    each discordant pair goes either way with probability 1/2, so the p-value is twice the
    smaller binomial tail (capped at 1). The tail is exact, not a normal approximation: its
    largest term comes from Loader's saddle-point binomial density (accurate to about 1e-14
    relative at any count, where big-integer sums take seconds past ten thousand pairs), and
    the terms below it by the ratio of neighbours, until they no longer change the sum.
    No discordant pair is no evidence of a difference: 1.0."""
    if only_a < 0 or only_b < 0:
        raise ValueError("discordant counts must be non-negative")
    n, smaller = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    term = _half_binomial_pmf(smaller, n)
    tail = 0.0
    for k in range(smaller, -1, -1):
        tail += term
        term *= k / (n - k + 1)  # P(k - 1) / P(k)
        if term < tail * 1e-17:
            break
    return min(1.0, 2 * tail)


def _half_binomial_pmf(k: int, n: int) -> float:
    """P(X = k) for X ~ Binomial(n, 1/2), by Loader (2000), "Fast and accurate computation of
    binomial probabilities" (R's dbinom): the Stirling remainders and the deviance term bd0
    keep the relative error near machine precision where lgamma differences would lose digits
    to cancellation at large n."""
    if k in (0, n):
        return math.ldexp(1.0, -n)
    half = n / 2
    log_pmf = _stirling_error(n) - _stirling_error(k) - _stirling_error(n - k)
    log_pmf -= _bd0(k, half) + _bd0(n - k, half)
    return math.exp(log_pmf) / math.sqrt(2 * math.pi * k * (n - k) / n)


def _stirling_error(n: int) -> float:
    """log(n!) − log(√(2πn)·(n/e)ⁿ): from lgamma for small n, its asymptotic series above."""
    if n <= 15:
        return math.lgamma(n + 1) - (n + 0.5) * math.log(n) + n - 0.5 * math.log(2 * math.pi)
    inverse_square = 1.0 / (n * n)
    series = 1 / 1188
    for coefficient in (1 / 1680, 1 / 1260, 1 / 360):
        series = coefficient - series * inverse_square
    return (1 / 12 - series * inverse_square) / n


def _bd0(x: float, mean: float) -> float:
    """x·log(x/mean) + mean − x without the cancellation when x is near the mean (Loader's bd0)."""
    if abs(x - mean) >= 0.1 * (x + mean):
        return x * math.log(x / mean) + mean - x
    ratio = (x - mean) / (x + mean)
    total, term, square, j = (x - mean) * ratio, 2 * x * ratio, ratio * ratio, 1
    while True:
        term *= square
        updated = total + term / (2 * j + 1)
        if updated == total:
            return updated
        total, j = updated, j + 1


@dataclass(frozen=True, kw_only=True, slots=True)
class PairedDifference:
    """Two runs on the same ``pairs`` problems: the accuracy difference A − B, its bootstrap
    interval at ``confidence`` from ``resamples`` resamples (``seed``), the discordant counts
    (``only_a``: A right and B wrong) and McNemar's exact p-value."""

    pairs: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    interval: tuple[float, float]
    only_a: int
    only_b: int
    p_value: float
    confidence: float
    resamples: int
    seed: int


def paired_difference(
    a: Sequence[bool],
    b: Sequence[bool],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedDifference | None:
    """Compare two runs' correctness on the same problems, in the same order (None for no
    problems). The interval is the percentile interval of a paired bootstrap: resampling the
    problems with replacement keeps each problem's two outcomes together, so it is as narrow
    as the runs' agreement allows. A resample's difference depends only on how many of its
    problems fall in each of the three kinds (only A right, only B right, alike), a multinomial
    draw; drawing those counts (two binomial draws, each in constant expected time) is the
    same bootstrap at a cost that does not grow with the number of problems."""
    _check_confidence(confidence)
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} and {len(b)}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    n = len(a)
    if n == 0:
        return None
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    rng = random.Random(seed)
    rest_share = only_b / (n - only_a) if n > only_a else 0.0
    draws = []
    for _ in range(resamples):
        x = _binomial(rng, n, only_a / n)
        draws.append((x - _binomial(rng, n - x, rest_share)) / n)
    tail = (1.0 - confidence) / 2
    accuracy_a, accuracy_b = sum(map(bool, a)) / n, sum(map(bool, b)) / n
    return PairedDifference(
        pairs=n,
        accuracy_a=accuracy_a,
        accuracy_b=accuracy_b,
        difference=(only_a - only_b) / n,
        interval=(percentile(draws, 100 * tail), percentile(draws, 100 * (1 - tail))),
        only_a=only_a,
        only_b=only_b,
        p_value=mcnemar_exact(only_a, only_b),
        confidence=confidence,
        resamples=resamples,
        seed=seed,
    )


def _binomial(rng: random.Random, trials: int, share: float) -> int:
    """A draw from Binomial(trials, share) in constant expected time whatever ``trials``:
    Devroye's geometric method below a mean of 10, else Hörmann (1993)'s transformed
    rejection with squeeze (BTRS), as Python 3.12's ``random.binomialvariate`` (not in 3.11)."""
    if share <= 0.0 or trials == 0:
        return 0
    if share >= 1.0:
        return trials
    if share > 0.5:
        return trials - _binomial(rng, trials, 1.0 - share)
    if trials * share < 10.0:
        successes = position = 0
        log_q = math.log1p(-share)
        while True:
            position += math.floor(math.log(1.0 - rng.random()) / log_q) + 1
            if position > trials:
                return successes
            successes += 1
    spread = math.sqrt(trials * share * (1.0 - share))
    b = 1.15 + 2.53 * spread
    a = -0.0873 + 0.0248 * b + 0.01 * share
    c = trials * share + 0.5
    squeeze = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spread
    log_odds = math.log(share / (1.0 - share))
    mode = math.floor((trials + 1) * share)
    at_mode = math.lgamma(mode + 1) + math.lgamma(trials - mode + 1)
    while True:
        u = rng.random() - 0.5
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + c)
        if k < 0 or k > trials:
            continue
        v = rng.random()
        if us >= 0.07 and v <= squeeze:
            return k
        v *= alpha / (a / (us * us) + b)
        if math.log(v) <= at_mode - math.lgamma(k + 1) - math.lgamma(trials - k + 1) + (k - mode) * log_odds:
            return k


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) of sorted or unsorted ``values``, interpolating
    linearly between order statistics (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def t_quantile(probability: float, df: int) -> float:
    """The Student t distribution's ``probability`` quantile (above 1/2) for integer ``df``,
    from the closed-form CDF of Abramowitz & Stegun 26.7.3-4, inverted by bisection on the
    angle θ = atan(t/√df), where that CDF is monotone on a bounded interval."""
    if df < 1:
        raise ValueError(f"df must be a positive integer, got {df}")
    if not 0.5 < probability < 1.0:
        raise ValueError(f"probability must be in (1/2, 1), got {probability!r}")
    inside = 2 * probability - 1  # P(|T| ≤ t)
    low, high = 0.0, math.pi / 2
    for _ in range(200):
        middle = (low + high) / 2
        if _t_inside(middle, df) < inside:
            low = middle
        else:
            high = middle
    return math.sqrt(df) * math.tan((low + high) / 2)


def _t_inside(theta: float, df: int) -> float:
    """P(|T| ≤ √df·tan θ) for T with ``df`` degrees of freedom."""
    sin, cos = math.sin(theta), math.cos(theta)
    if df % 2:
        term, series = cos, 0.0 if df == 1 else cos
        for k in range(3, df - 1, 2):
            term *= cos * cos * (k - 1) / k
            series += term
        return 2 / math.pi * (theta + sin * series)
    term, series = 1.0, 1.0
    for k in range(2, df - 1, 2):
        term *= cos * cos * (k - 1) / k
        series += term
    return sin * series


@dataclass(frozen=True, kw_only=True, slots=True)
class SeedSpread:
    """The mean of per-seed accuracies and its Student t interval (``interval`` None with one
    seed, where there is no spread to measure)."""

    mean: float
    interval: tuple[float, float] | None
    seeds: int
    confidence: float


def seed_interval(accuracies: Sequence[float], confidence: float = 0.95) -> SeedSpread | None:
    """The mean accuracy over seeds with a t interval on the per-seed accuracies (None without
    any). Papers that run several seeds report this: the seed's spread is the variation a
    reader would see rerunning, and pooling the seeds' counts into one Wilson interval would
    treat the same problems, answered again, as new problems and look too sure. With few seeds
    the t interval can reach past 0 or 1, where no accuracy lies: it is clipped to [0, 1]."""
    _check_confidence(confidence)
    if not accuracies:
        return None
    mean = statistics.fmean(accuracies)
    if len(accuracies) == 1:
        return SeedSpread(mean=mean, interval=None, seeds=1, confidence=confidence)
    half = t_quantile(0.5 + confidence / 2, len(accuracies) - 1) * statistics.stdev(accuracies)
    half /= math.sqrt(len(accuracies))
    interval = (max(0.0, mean - half), min(1.0, mean + half))
    return SeedSpread(mean=mean, interval=interval, seeds=len(accuracies), confidence=confidence)
