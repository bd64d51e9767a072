"""How difficulty spreads over a probe's problems: a mixture of binomials fitted by maximum
likelihood (EM, the number of classes by BIC), as Chen et al. fit their two classes, since
each problem's own few samples misplace the problems near ½.
"""


from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from treesearch.errors import ConfigError

if TYPE_CHECKING:
    pass

# -- the spread of difficulty over problems ----------------------------------------------

# The most difficulty classes fitted; BIC picks fewer when they do not pay.
MAX_CLASSES = 4

# EM stops when a step gains less log-likelihood than this per problem.
_EM_TOLERANCE = 1e-10
_EM_STEPS = 5000


@dataclass(frozen=True, kw_only=True, slots=True)
class DifficultyMix:
    """How hard a probe's problems are: a share ``weights[c]`` of them in class c, where each
    sample is right with probability ``rights[c]`` (Chen et al.'s model: two classes, easy and
    hard). ``fit_difficulty`` fits it by maximum likelihood; ``log_likelihood`` is the fit's."""

    weights: tuple[float, ...]
    rights: tuple[float, ...]
    log_likelihood: float


def class_posteriors(
    weights: Sequence[float], rights: Sequence[float], counts: Iterable[tuple[int, int]]
) -> list[tuple[list[float], float]]:
    """Per (right, samples) pair: P(class | counts), and log P(counts) less log C(samples, right)."""
    classes = [
        (
            math.log(w) if w > 0 else -math.inf,
            math.log(p) if p > 0 else -math.inf,
            math.log1p(-p) if p < 1 else -math.inf,
        )
        for w, p in zip(weights, rights, strict=True)
    ]
    found = []
    for right, samples in counts:
        wrong = samples - right
        # 0·log 0 = 0: a class right always explains a problem right always
        logs = [
            log_w + (right * log_p if right else 0.0) + (wrong * log_q if wrong else 0.0)
            for log_w, log_p, log_q in classes
        ]
        top = max(logs)
        shares = [math.exp(x - top) for x in logs]
        total = math.fsum(shares)
        found.append(([x / total for x in shares], top + math.log(total)))
    return found


def fit_difficulty(counts: Iterable[tuple[int, int]], *, max_classes: int = MAX_CLASSES) -> DifficultyMix:
    """The mixture of binomials of greatest likelihood for ``counts``, one (right samples,
    samples) pair per problem, fitted by EM from two starts per number of classes, the number
    (1..max_classes) chosen by the Bayesian information criterion.

    A problem's own share of right samples is a noisy estimate of its rate (with 16 samples a
    problem right with p = .45 shows more right than wrong 27% of the time), and majority vote
    magnifies which side of ½ a rate lies on; the mixture pools all problems to estimate how
    the rates spread. k classes need 2k − 1 ≤ n samples a problem to be told apart, so the
    largest n caps k."""
    histogram = Counter(counts)
    if not histogram:
        raise ConfigError("fitting difficulty needs at least one problem")
    for right, samples in histogram:
        if samples < 1 or not 0 <= right <= samples:
            raise ConfigError(f"{right} right of {samples} samples is not a count")
    problems = sum(histogram.values())
    most = max(samples for _, samples in histogram)
    best: tuple[float, DifficultyMix] | None = None
    for k in range(1, min(max_classes, (most + 1) // 2, len(histogram)) + 1):
        fit = max((em(histogram, *start) for start in _starts(histogram, k)), key=lambda m: m.log_likelihood)
        bic = (2 * k - 1) * math.log(problems) - 2 * fit.log_likelihood
        if best is None or bic < best[0]:
            best = (bic, fit)
    assert best is not None  # k = 1 always runs
    return best[1]


def _starts(histogram: Counter[tuple[int, int]], k: int) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """Equal weights with rates at the problems' quantiles, or spread evenly over (0, 1)."""
    rates = sorted(right / samples for (right, samples), m in histogram.items() for _ in range(m))
    quantiles = (min(0.98, max(0.02, rates[int((c + 0.5) / k * len(rates))])) for c in range(k))
    equal = (1.0 / k,) * k
    return [(equal, tuple(quantiles)), (equal, tuple((c + 0.5) / k for c in range(k)))]


def em(
    histogram: Counter[tuple[int, int]], weights: tuple[float, ...], rights: tuple[float, ...]
) -> DifficultyMix:
    """EM for a binomial mixture from ``weights`` and ``rights``: each step moves every class
    to the problems it explains (weighted by posterior), which never lowers the likelihood."""
    items = [
        (right, n, m, math.lgamma(n + 1) - math.lgamma(right + 1) - math.lgamma(n - right + 1))
        for (right, n), m in histogram.items()
    ]
    problems = sum(histogram.values())
    previous = -math.inf
    for _ in range(_EM_STEPS):
        mass = [0.0] * len(weights)
        right_mass = [0.0] * len(weights)
        sample_mass = [0.0] * len(weights)
        total = 0.0
        posteriors = class_posteriors(weights, rights, ((right, samples) for right, samples, _, _ in items))
        for (right, samples, m, constant), (shares, log_likelihood) in zip(items, posteriors, strict=True):
            total += m * (log_likelihood + constant)
            for c, r in enumerate(shares):
                mass[c] += m * r
                right_mass[c] += m * r * right
                sample_mass[c] += m * r * samples
        if total - previous <= _EM_TOLERANCE * problems:
            break
        previous = total
        weights = tuple(x / problems for x in mass)
        rights = tuple(
            min(1.0, r / n) if n > 0 else p for r, n, p in zip(right_mass, sample_mass, rights, strict=True)
        )
    return DifficultyMix(weights=weights, rights=rights, log_likelihood=total)


