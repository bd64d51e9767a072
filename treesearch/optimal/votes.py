"""Predicted accuracy of majority vote and filter-vote against K (Chen et al. 2024), from
answer distributions: a plain function of data, no I/O, no event loop.

More calls do not always help. Majority vote over K samples drives each problem's
accuracy to 1 when its right answer is the likeliest one and to 0 when a wrong one is,
so a set mixing easy and hard problems can score best at a small K. Here lives the exact
curve for given distributions and Chen et al.'s two-answer closed form.
"""


from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from treesearch.errors import ConfigError

if TYPE_CHECKING:
    pass

# The largest K worth asking about: the cost grows as K³, and past about 2,000 the
# scaled coefficients below leave the range of a float.
MAX_K = 1000


# Two accuracies closer than this are a tie: the smaller K wins it.
_TIE = 1e-12



@dataclass(frozen=True, kw_only=True, slots=True)
class AnswerDistribution:
    """One problem's answers: ``answers[i]`` the probability that a sample states the i-th
    distinct answer (equivalent answers already grouped), ``correct`` the index of the right
    one (None when no sample found it), ``unanswered`` the probability that a sample states
    none (it never votes). They sum to 1. ``kept``, when a judge looked at the answers,
    gives per answer the share of its samples the judge did not reject (filter-vote)."""

    answers: tuple[float, ...]
    correct: int | None
    unanswered: float = 0.0
    kept: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if any(not 0.0 <= p <= 1.0 for p in (*self.answers, self.unanswered)):
            raise ConfigError(f"probabilities must be in [0, 1], got {self.answers}, {self.unanswered}")
        if abs(math.fsum(self.answers) + self.unanswered - 1.0) > 1e-9:
            raise ConfigError(
                f"answer probabilities and unanswered must sum to 1, got "
                f"{math.fsum(self.answers) + self.unanswered}"
            )
        if self.correct is not None and not 0 <= self.correct < len(self.answers):
            raise ConfigError(f"correct must index answers (0..{len(self.answers) - 1}), got {self.correct}")
        if self.kept is not None and (
            len(self.kept) != len(self.answers) or any(not 0.0 <= r <= 1.0 for r in self.kept)
        ):
            raise ConfigError(f"kept needs one share in [0, 1] per answer, got {self.kept}")

    @classmethod
    def from_counts(
        cls,
        counts: Sequence[int],
        correct: int | None,
        samples: int,
        kept: Sequence[int] | None = None,
    ) -> AnswerDistribution:
        """The distribution ``samples`` draws estimate: ``counts[i]`` stated answer i (``kept[i]``
        of them not rejected by the judge); the rest stated none."""
        answered = sum(counts)
        if samples <= 0 or answered > samples or any(c <= 0 for c in counts):
            raise ConfigError(f"counts {list(counts)} do not fit {samples} samples")
        if kept is not None and any(not 0 <= r <= c for r, c in zip(kept, counts, strict=True)):
            raise ConfigError(f"kept counts {list(kept)} do not fit counts {list(counts)}")
        return cls(
            answers=tuple(c / samples for c in counts),
            correct=correct,
            unanswered=(samples - answered) / samples,
            kept=None if kept is None else tuple(r / c for r, c in zip(kept, counts, strict=True)),
        )


# -- majority vote --------------------------------------------------------------------


def vote_curve(dist: AnswerDistribution, max_k: int) -> list[float]:
    """``[vote_accuracy(dist, K) for K in 1..max_k]``, in one pass (see ``vote_accuracy``)."""
    check_k(max_k)
    return _vote_curve(dist, max_k, Memo())


def vote_accuracy(dist: AnswerDistribution, k: int) -> float:
    """The exact probability that majority vote over ``k`` independent samples picks the right
    answer. Unanswered samples do not vote (all unanswered: wrong); a tie among t+1 leading
    answers is broken at random, so it counts 1/(t+1), which is also what treesearch's
    first-found tie-break gives with exchangeable samples."""
    return vote_curve(dist, k)[k - 1]


def _vote_curve(dist: AnswerDistribution, max_k: int, memo: Memo) -> list[float]:
    if dist.correct is None or dist.answers[dist.correct] <= 0.0:
        return [0.0] * max_k
    wrong = [p for i, p in enumerate(dist.answers) if i != dist.correct and p > 0]
    return _pattern_curve(dist.answers[dist.correct], _shares(wrong), dist.unanswered, max_k, memo)


def _shares(weights: Sequence[float]) -> tuple[float, ...]:
    total = math.fsum(weights)
    return tuple(sorted(w / total for w in weights))


@dataclass(slots=True)
class Memo:
    """What the vote curves of many problems share: the win table of each split of the samples
    that are not right (whatever the right answer's rate), the binomial rows of each rate."""

    tables: dict[tuple[tuple[float, ...], float, int], list[list[float]]] = field(default_factory=dict)
    pmfs: dict[tuple[float, int], list[list[float]]] = field(default_factory=dict)

    def table(self, wrong: tuple[float, ...], unanswered: float, max_k: int) -> list[list[float]]:
        """``_win_table(wrong, max_k)``, thinned (``_thinned_table``) when a share ``unanswered``
        of the samples that are not right state no answer."""
        found = self.tables.get((wrong, unanswered, max_k))
        if found is None:
            if unanswered > 0.0:
                found = _thinned_table(self.table(wrong, 0.0, max_k), 1.0 - unanswered)
            else:
                found = _win_table(wrong, max_k)
            self.tables[wrong, unanswered, max_k] = found
        return found

    def pmf(self, r: float, top: int) -> list[list[float]]:
        found = self.pmfs.get((r, top))
        if found is None:
            found = self.pmfs[r, top] = _binomial_pmfs(r, top)
        return found


def _pattern_curve(
    right: float, wrong: tuple[float, ...], unanswered: float, max_k: int, memo: Memo
) -> list[float]:
    """Vote accuracy for K = 1..max_k when a sample is right with probability ``right``,
    unanswered with ``unanswered``, and otherwise states a wrong answer, the wrong answers'
    shares among themselves being ``wrong`` (sorted, summing to 1). The win table depends on
    ``wrong`` alone, so one serves every ``right`` (each fitted difficulty class, each
    bootstrap resample)."""
    answered = 1.0 - unanswered
    if right <= 0.0:
        return [0.0] * max_k
    if wrong:
        table = memo.table(wrong, 0.0, max_k)
        rows = memo.pmf(min(1.0, right / answered), max_k)
        voted = [
            min(1.0, max(0.0, math.fsum(map(operator.mul, rows[a], table[a])))) for a in range(1, max_k + 1)
        ]
    else:  # the right answer is the only one
        voted = [1.0] * max_k
    if unanswered <= 0.0:
        return voted
    return [
        min(1.0, math.fsum(map(operator.mul, row[1:], voted))) for row in memo.pmf(answered, max_k)[1:]
    ]


def _binomial_pmfs(r: float, top: int) -> list[list[float]]:
    """P(B = i), i = 0..n, for B ~ Binomial(n, r), n = 0..top, by Pascal's recurrence."""
    rows = [[1.0]]
    s = 1.0 - r
    for _ in range(top):
        last = rows[-1]
        rows.append([s * b + r * a for a, b in zip([0.0, *last], [*last, 0.0], strict=True)])
    return rows


def _win_table(wrong: tuple[float, ...], max_k: int) -> list[list[float]]:
    """``table[a][j]`` = W(a − j, j), a = 0..max_k: the tie-weighted chance that the right
    answer, holding j of a answered votes, wins when the other n = a − j fall on the wrong
    answers with shares ``wrong`` (summing to 1). Then the vote over a answered samples is
    right with Σ_j Binomial(a, j; p)·W(a − j, j).

    W(n, 0) = 0; W(n, j) = 1 when n < j; 1 − Σ_i [P(B_i ≥ j) − ½·P(B_i = j)] when n < 2j,
    since then at most one wrong answer can reach j (B_i ~ Binomial(n, q_i)); otherwise from
    generating polynomials (see ``_others_series``)."""
    table = [[0.0] + [1.0] * a for a in range(max_k + 1)]
    if not wrong:  # every sample that is not right states no answer
        return table
    first_single = max_k // 3 + 1  # from here on 2j > max_k − j: at most one other reaches j
    # lost[n][i] = Σ over the wrong answers of P(B ≥ i) − ½·P(B = i), B ~ Binomial(n, q)
    lost = [[0.0] * (n + 1) for n in range(max_k - first_single + 1)]
    for q in wrong:
        for n, row in enumerate(_binomial_pmfs(q, max_k - first_single)):
            tail = list(itertools.accumulate(reversed(row)))[::-1]
            lost[n] = [x + t - 0.5 * b for x, t, b in zip(lost[n], tail, row, strict=True)]
    for j in range(first_single, max_k + 1):
        for n in range(j, max_k - j + 1):
            table[j + n][j] = 1.0 - lost[n][j]
    log_fact = [math.lgamma(n + 1) for n in range(max_k + 1)]
    for j in range(1, first_single):
        top = max_k - j
        scale = max(1.0, top / 3)
        log_scale = math.log(scale)
        series = _others_series(j, wrong, top, scale)
        series += [0.0] * (top + 1 - len(series))  # the powers past its support: W = 0
        for n, coefficient in enumerate(series):
            table[j + n][j] = math.exp(log_fact[n] - n * log_scale) * coefficient
    return table


def _thinned_table(table: list[list[float]], answered: float) -> list[list[float]]:
    """``table`` (W(n, j) at ``table[j + n][j]``) when each of the samples that are not right
    states an answer with probability ``answered``: V(t, j) = Σ_m Binomial(t, m; answered)·W(m, j)."""
    top = len(table) - 1
    rows = _binomial_pmfs(answered, top)
    thinned = [[0.0] * (a + 1) for a in range(top + 1)]
    for j in range(top + 1):
        column = [table[m + j][j] for m in range(top - j + 1)]
        for t in range(top - j + 1):
            thinned[t + j][j] = math.fsum(map(operator.mul, rows[t], column))
    return thinned


def _others_series(j: int, others: Sequence[float], top: int, scale: float) -> list[float]:
    """[z^n], n ≤ top, of ∫₀¹ Π_i (a_i + y·b_i) dy with x = s·z: per other answer the
    exponential generating polynomials a_i(x) = Σ_{t<j} (q_i x)^t/t! (fewer than j votes) and
    b_i(x) = (q_i x)^j/j! (a tie at j); a tie among t+1 counts ∫₀¹ y^t dy = 1/(t+1). Then
    [x^n]·n! is W(n, j) (the q_i sum to 1). The scale s keeps (s·q)^n/n! inside the range of
    a float.

    Exact, no quadrature: ``layers[t]`` holds the coefficient of y^t from the power t·j on
    (below it is zero; those with t·j > top are never needed). The last answer needs no
    layers: ∫ P(y)·(a + y·b) dy = a·∫P + b·∫y·P. Below the power j every product is the plain
    exponential e^{Σq·x}, so only the powers from j on are multiplied out."""
    first, tie = _below_and_tie(others[0] * scale, j)
    layers = [first, [tie]] if len(others) > 1 else [[1.0]]
    rate = others[0] * scale if len(others) > 1 else 0.0  # Σ q·s of the answers in ``layers``
    for q in others[1:-1]:
        below, tie = _below_and_tie(q * scale, j)
        rate += q * scale
        grown = []
        for t in range(min(len(layers), top // j) + 1):
            limit = top - t * j
            poly = _multiply(layers[t], below, limit, low=j if t == 0 else 0) if t < len(layers) else []
            if t == 0:
                poly[:j] = _exp_series(rate, j - 1)
            else:
                poly = _add_scaled(poly, layers[t - 1], tie, limit)
            grown.append(poly)
        layers = grown
    q = others[-1]
    below, tie = _below_and_tie(q * scale, j)
    support = max(t * j + len(poly) for t, poly in enumerate(layers))
    moments = [[0.0] * support, [0.0] * support]  # ∫P and ∫y·P
    for t, poly in enumerate(layers):
        begin = t * j
        end = begin + len(poly)
        for moment, weight in zip(moments, (1.0 / (t + 1), 1.0 / (t + 2)), strict=True):
            moment[begin:end] = [x + weight * c for x, c in zip(moment[begin:end], poly, strict=True)]
    total = _multiply(moments[0], below, top, low=j)
    total[:j] = _exp_series(rate + q * scale, j - 1)
    total += [0.0] * (min(top + 1, j + support) - len(total))
    total[j:] = [x + tie * c for x, c in zip(total[j:], moments[1], strict=False)]
    return total


def _below_and_tie(rate: float, j: int) -> tuple[list[float], float]:
    """(rate·z)^t/t! for t < j (fewer than j votes), and (rate·z)^j/j! (a tie at j)."""
    below = _exp_series(rate, j - 1)
    return below, below[-1] * rate / j


def _exp_series(rate: float, top: int) -> list[float]:
    """rate^n/n! for n = 0..top, by the recurrence (no factorial overflows)."""
    terms = [1.0]
    for n in range(1, top + 1):
        terms.append(terms[-1] * rate / n)
    return terms


def _multiply(p: list[float], a: list[float], top: int, *, low: int = 0) -> list[float]:
    """The product of two coefficient lists, cut after the power ``top``, its powers below
    ``low`` left 0 (the caller knows them); the shorter factor is the outer loop."""
    if len(a) > len(p):
        p, a = a, p
    size = min(len(p) + len(a) - 1, top + 1)
    if size <= 0:
        return []
    out = [0.0] * size
    length = len(p)
    for shift in range(min(len(a), size)):
        c = a[shift]
        end = shift + length
        if end > size:
            end = size
        if shift >= low:
            out[shift:end] = [o + c * x for o, x in zip(out[shift:end], p, strict=False)]
        elif end > low:
            out[low:end] = [o + c * x for o, x in zip(out[low:end], p[low - shift :], strict=False)]
    return out


def _add_scaled(poly: list[float], other: list[float], factor: float, top: int) -> list[float]:
    """poly + factor·other, both from the same power on, cut after the power ``top``."""
    size = min(max(len(poly), len(other)), top + 1)
    poly = poly[:size] + [0.0] * (size - len(poly))
    n = min(size, len(other))
    poly[:n] = [o + factor * x for o, x in zip(poly[:n], other, strict=False)]
    return poly


# -- filter-vote ----------------------------------------------------------------------


def filter_vote_accuracy(dist: AnswerDistribution, calls: int) -> float:
    """Chen et al.'s filter-vote with ``calls`` LM calls: calls/2 samples, each judged once;
    majority vote among the answers the judge did not reject, or among all of them when it
    rejected every one. Needs ``dist.kept`` and an even number of calls."""
    _check_calls(calls)
    return filter_curve(dist, calls // 2)[calls // 2 - 1]


def filter_curve(dist: AnswerDistribution, generations: int) -> list[float]:
    """Filter-vote accuracy for 1..generations samples. A sample is kept (p_a·r_a), rejected
    (p_a·(1 − r_a)) or unanswered. Majority vote over the kept ones, rejected and unanswered
    not voting, is right with ``vote(kept)`` (which counts "none kept" as wrong); when none is
    kept, probability (1 − Σ p_a·r_a)^G, the vote runs over the rejected ones, drawn from the
    distribution conditioned on not being kept."""
    if dist.kept is None:
        raise ConfigError("filter-vote accuracy needs the judge's kept shares (AnswerDistribution.kept)")
    kept = [p * r for p, r in zip(dist.answers, dist.kept, strict=True)]
    kept_mass = math.fsum(kept)
    curve = vote_curve(_with(dist, kept, 1.0 - kept_mass), generations)
    none_kept = 1.0 - kept_mass
    if none_kept <= 0.0:
        return curve
    rejected = [(p - k) / none_kept for p, k in zip(dist.answers, kept, strict=True)]
    fallback = vote_curve(_with(dist, rejected, 1.0 - math.fsum(rejected)), generations)
    return [v + none_kept ** (g + 1) * f for g, (v, f) in enumerate(zip(curve, fallback, strict=True))]


def _with(dist: AnswerDistribution, answers: Sequence[float], unanswered: float) -> AnswerDistribution:
    return AnswerDistribution(
        answers=tuple(max(0.0, p) for p in answers), correct=dist.correct, unanswered=max(0.0, unanswered)
    )


# -- over a problem set ---------------------------------------------------------------


def curve(dists: Sequence[AnswerDistribution], ks: Sequence[int], *, filtered: bool = False) -> list[float]:
    """The expected accuracy over ``dists`` at each K of ``ks``: majority vote over K samples,
    or with ``filtered`` filter-vote with K calls (K even). Problems with the same
    distribution are computed once."""
    if not dists:
        raise ConfigError("a curve needs at least one answer distribution")
    for k in ks:
        if filtered:
            _check_calls(k)
        else:
            check_k(k)
    if not ks:
        return []
    top = max(ks)
    memo: dict[tuple[Any, ...], list[float]] = {}
    shared = Memo()
    totals = [0.0] * len(ks)
    for dist in dists:
        key = (dist.answers, dist.correct, dist.unanswered, dist.kept if filtered else None)
        values = memo.get(key)
        if values is None:
            values = filter_curve(dist, top // 2) if filtered else _vote_curve(dist, top, shared)
            memo[key] = values
        for i, k in enumerate(ks):
            totals[i] += values[k // 2 - 1] if filtered else values[k - 1]
    return [t / len(dists) for t in totals]


def best_k(ks: Sequence[int], accuracies: Sequence[float]) -> int:
    """The K of the highest accuracy; the smallest K among those within 1e-12 of it."""
    if not ks or len(ks) != len(accuracies):
        raise ConfigError("best_k needs one accuracy per K")
    top = max(accuracies)
    return min(k for k, a in zip(ks, accuracies, strict=True) if a >= top - _TIE)


def turning_point(alpha: float, p_easy: float, p_hard: float) -> float:
    """Chen et al.'s x: with a share ``alpha`` of two-answer problems whose right answer has
    probability ``p_easy`` > ½ and the rest ``p_hard`` < ½, vote accuracy over odd K = 2m+1
    rises while m + 1 < x = ln[α(2p₁−1)/((1−α)(1−2p₂))] / ln[p₂(1−p₂)/(p₁(1−p₁))] and falls
    after. Needs p₂ closer to ½ than p₁ (else the curve ends rising)."""
    if not (0.0 < alpha < 1.0 and 0.5 < p_easy < 1.0 and 0.0 <= p_hard < 0.5):
        raise ConfigError(
            f"needs 0 < alpha < 1, ½ < p_easy < 1, 0 ≤ p_hard < ½; got {alpha}, {p_easy}, {p_hard}"
        )
    ratio = (p_hard * (1 - p_hard)) / (p_easy * (1 - p_easy))
    if ratio <= 1.0:
        raise ConfigError("the closed form needs p_hard closer to ½ than p_easy: the curve would end rising")
    return math.log(alpha * (2 * p_easy - 1) / ((1 - alpha) * (1 - 2 * p_hard))) / math.log(ratio)


def two_answer_best_k(alpha: float, p_easy: float, p_hard: float) -> int:
    """The best odd K of Chen et al.'s two-answer mix, 2⌈x⌉ − 1 (at least 1)."""
    return max(1, 2 * math.ceil(turning_point(alpha, p_easy, p_hard)) - 1)


def check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"K must be from 1 to {MAX_K}, got {k}")


def _check_calls(calls: int) -> None:
    if calls % 2 or not 2 <= calls <= 2 * MAX_K:
        raise ConfigError(f"filter-vote needs an even number of calls from 2 to {2 * MAX_K}, got {calls}")


