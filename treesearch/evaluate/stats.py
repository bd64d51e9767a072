"""The statistics behind ``report`` and ``compare``: an accuracy's interval, a paired test and
a paired interval for two runs on the same problems, and the spread over seeds.

Plain Python (no numpy or scipy at run time), exact where it is cheap: the Wilson score
interval (Newcombe 1998's formula, as scipy's ``binomtest(...).proportion_ci("wilson")``),
McNemar's exact test (a two-sided binomial test on the discordant pairs, in integers), a
paired bootstrap of the accuracy difference that draws each resample's counts instead of its
problems, and a Student t interval over per-seed accuracies. Where there is nothing to
estimate from (no problems, one seed) a function returns None rather than a NaN.
"""

from __future__ import annotations

import bisect
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
    smaller binomial tail (capped at 1), computed in integers so a large count loses nothing.
    No discordant pair is no evidence of a difference: 1.0."""
    if only_a < 0 or only_b < 0:
        raise ValueError("discordant counts must be non-negative")
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1))
    return min(1.0, tail / (1 << (discordant - 1)))


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
    draw; drawing those counts (two binomials by their inverse CDF) is the same bootstrap at a
    cost that does not grow with the number of problems."""
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
    first = _Binomial(n, only_a / n)
    rest_share = only_b / (n - only_a) if n > only_a else 0.0
    rest: dict[int, _Binomial] = {}
    draws = []
    for _ in range(resamples):
        x = first.draw(rng)
        if n - x not in rest:
            rest[n - x] = _Binomial(n - x, rest_share)
        draws.append((x - rest[n - x].draw(rng)) / n)
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


class _Binomial:
    """Draws from Binomial(trials, share) by inverse CDF: one uniform and a bisection a draw."""

    def __init__(self, trials: int, share: float) -> None:
        if share <= 0.0 or share >= 1.0 or trials == 0:
            self._cumulative = [1.0] if share < 1.0 else [0.0] * trials + [1.0]
            return
        log_p, log_q = math.log(share), math.log1p(-share)
        whole = math.lgamma(trials + 1)
        total, self._cumulative = 0.0, []
        for k in range(trials + 1):
            total += math.exp(
                whole - math.lgamma(k + 1) - math.lgamma(trials - k + 1) + k * log_p + (trials - k) * log_q
            )
            self._cumulative.append(total)

    def draw(self, rng: random.Random) -> int:
        cumulative = self._cumulative
        return min(bisect.bisect_right(cumulative, rng.random() * cumulative[-1]), len(cumulative) - 1)


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
