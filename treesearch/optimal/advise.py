"""How many LM calls to spend: predicted vote and filter-vote accuracy against K (Chen et al. 2024).

More calls do not always help. Majority vote over K samples drives each problem's
accuracy to 1 when its right answer is the likeliest one and to 0 when a wrong one
is, so a set mixing easy and hard problems can score best at a small K. Here lives
the math that predicts the curve from answer distributions (a plain function of data,
no I/O, no event loop), Chen et al.'s two-answer closed form, and the estimate from a
probe run's results rows: how difficulty spreads over the problems, fitted by maximum
likelihood (a mixture of binomials, as Chen et al. fit their two classes), since each
problem's own few samples misplace the problems near ½. ``predict_votes(rows)`` does it
all: the rows of one ``treesearch run`` of majority-vote (or filter-vote) with several
samples per problem in, the curve, the best K and their bootstrap bands out.
"""

from __future__ import annotations

import itertools
import math
import operator
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from treesearch.errors import ConfigError

if TYPE_CHECKING:
    from treesearch.answers.equivalence import AnswerEquivalence

# The largest K worth asking about: the cost grows as K³, and past about 2,000 the
# scaled coefficients below leave the range of a float.
MAX_K = 1000

# Strategies whose candidates are independent samples of one distribution.
_SAMPLING = frozenset({"majority-vote", "filter-vote", "best-of-n", "weighted-vote"})

# Two accuracies closer than this are a tie: the smaller K wins it.
_TIE = 1e-12

_T = TypeVar("_T")


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
    _check_k(max_k)
    return _vote_curve(dist, max_k, _Memo())


def vote_accuracy(dist: AnswerDistribution, k: int) -> float:
    """The exact probability that majority vote over ``k`` independent samples picks the right
    answer. Unanswered samples do not vote (all unanswered: wrong); a tie among t+1 leading
    answers is broken at random, so it counts 1/(t+1), which is also what treesearch's
    first-found tie-break gives with exchangeable samples."""
    return vote_curve(dist, k)[k - 1]


def _vote_curve(dist: AnswerDistribution, max_k: int, memo: _Memo) -> list[float]:
    if dist.correct is None or dist.answers[dist.correct] <= 0.0:
        return [0.0] * max_k
    wrong = [p for i, p in enumerate(dist.answers) if i != dist.correct and p > 0]
    return _pattern_curve(dist.answers[dist.correct], _shares(wrong), dist.unanswered, max_k, memo)


def _shares(weights: Sequence[float]) -> tuple[float, ...]:
    total = math.fsum(weights)
    return tuple(sorted(w / total for w in weights))


@dataclass(slots=True)
class _Memo:
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
    right: float, wrong: tuple[float, ...], unanswered: float, max_k: int, memo: _Memo
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
    return _filter_curve(dist, calls // 2)[calls // 2 - 1]


def _filter_curve(dist: AnswerDistribution, generations: int) -> list[float]:
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
            _check_k(k)
    if not ks:
        return []
    top = max(ks)
    memo: dict[tuple[Any, ...], list[float]] = {}
    shared = _Memo()
    totals = [0.0] * len(ks)
    for dist in dists:
        key = (dist.answers, dist.correct, dist.unanswered, dist.kept if filtered else None)
        values = memo.get(key)
        if values is None:
            values = _filter_curve(dist, top // 2) if filtered else _vote_curve(dist, top, shared)
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


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"K must be from 1 to {MAX_K}, got {k}")


def _check_calls(calls: int) -> None:
    if calls % 2 or not 2 <= calls <= 2 * MAX_K:
        raise ConfigError(f"filter-vote needs an even number of calls from 2 to {2 * MAX_K}, got {calls}")


# -- from a probe's results rows --------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Estimate:
    """The answer distributions a run's rows estimate, one per usable row, with the number of
    samples each came from, and how many rows were skipped, by reason ("with an error",
    "without gold": nothing to tell the right answer by, "without samples")."""

    distributions: tuple[AnswerDistribution, ...]
    samples: tuple[int, ...]
    skipped: Mapping[str, int] = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        """Whether a judge looked at every problem's answers (so filter-vote can be predicted)."""
        return bool(self.distributions) and all(d.kept is not None for d in self.distributions)


def estimate(rows: Iterable[Mapping[str, Any]], equivalence: AnswerEquivalence) -> Estimate:
    """Each usable row's answer distribution: its candidates' answers grouped by
    ``equivalence``, over k samples (the row's ``config.n``, halved for filter-vote counting
    judgements; without a config its number of candidates), the samples that gave no answer
    unanswered. The right group is the largest whose answer ``matches`` the gold. Rows of
    filter-vote also give kept shares: a judge's score ≥ 0.5 keeps a sample, as the
    aggregator does (and every one when none was scored, as it then falls back to majority).
    Rows of tree searches are refused (ConfigError): their candidates are not independent
    samples of one distribution."""
    distributions: list[AnswerDistribution] = []
    samples: list[int] = []
    skipped: dict[str, int] = {}
    for row in rows:
        found = _row_distribution(row, equivalence)
        if isinstance(found, str):
            skipped[found] = skipped.get(found, 0) + 1
        else:
            distributions.append(found[0])
            samples.append(found[1])
    return Estimate(distributions=tuple(distributions), samples=tuple(samples), skipped=skipped)


def _row_distribution(
    row: Mapping[str, Any], same: AnswerEquivalence
) -> tuple[AnswerDistribution, int] | str:
    """A row's distribution and sample count, or why it is skipped."""
    where = f"row {row.get('id')!r}"
    config = row.get("config")
    if not isinstance(config, Mapping):
        config = {}
    strategy = row.get("strategy", config.get("strategy"))
    if strategy is not None and strategy not in _SAMPLING:
        raise ConfigError(
            f"{where}: strategy {strategy!r} does not draw independent samples; probe with "
            f"{' or '.join(sorted(_SAMPLING))}"
        )
    if row.get("error") is not None:
        return "with an error"
    if row.get("gold") is None:
        return "without gold"
    candidates = row.get("candidates") or []
    if not isinstance(candidates, list) or not all(isinstance(c, Mapping) for c in candidates):
        raise ConfigError(f"{where}: candidates must be a list of objects")
    answered = [c for c in candidates if c.get("answer") is not None]
    k = len(candidates)
    n = config.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        k = max(k, n // 2 if strategy == "filter-vote" and config.get("n_counts_judgements") else n)
    if k == 0:
        return "without samples"
    answers = [str(c["answer"]) for c in answered]
    groups = same.group(answers)
    scored = any(c.get("score") is not None for c in answered)
    first: dict[int, str] = {}
    count: dict[int, int] = {}
    kept: dict[int, int] = {}
    for candidate, answer, group in zip(answered, answers, groups, strict=True):
        first.setdefault(group, answer)
        count[group] = count.get(group, 0) + 1
        score = candidate.get("score")
        keep = not scored or (isinstance(score, int | float) and score >= 0.5)
        kept[group] = kept.get(group, 0) + keep
    order = list(first)
    gold = str(row["gold"])
    right = [g for g in order if same.matches(first[g], gold)]
    correct = order.index(max(right, key=count.__getitem__)) if right else None
    judged = strategy == "filter-vote" or config.get("aggregator") == "filter"
    dist = AnswerDistribution.from_counts(
        [count[g] for g in order], correct, k, [kept[g] for g in order] if judged else None
    )
    return dist, k


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


def _posteriors(
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
        fit = max((_em(histogram, *start) for start in _starts(histogram, k)), key=lambda m: m.log_likelihood)
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


def _em(
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
        posteriors = _posteriors(weights, rights, ((right, samples) for right, samples, _, _ in items))
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


@dataclass(frozen=True, slots=True)
class _Split:
    """How a problem's samples that were not right fell: the wrong answers' shares among the
    wrong samples (ascending), the share that stated no answer, and the judge's kept shares of
    the right answer and of each wrong one (1.0 when nothing was judged). A problem whose
    samples were all right shows no split: one wrong answer (Chen et al.'s two answers)."""

    wrong: tuple[float, ...]
    unanswered: float
    kept_right: float
    kept_wrong: tuple[float, ...]


def _outcomes(found: Estimate) -> list[tuple[int, int, _Split]]:
    """Each problem's right samples, samples and split. An answer the judge never saw (the
    right one of a problem never right, the unseen wrong one) gets the probe's kept share."""
    pooled = {True: [0.0, 0.0], False: [0.0, 0.0]}  # right?: [kept, samples]
    for dist, samples in zip(found.distributions, found.samples, strict=True):
        for i, (p, r) in enumerate(zip(dist.answers, dist.kept or (1.0,) * len(dist.answers), strict=True)):
            pooled[i == dist.correct][0] += p * r * samples
            pooled[i == dist.correct][1] += p * samples
    kept_right, kept_wrong = (kept / seen if seen else 1.0 for kept, seen in (pooled[True], pooled[False]))
    outcomes = []
    interned: dict[_Split, _Split] = {}  # one object per split: the curves' lookups compare by identity
    for dist, samples in zip(found.distributions, found.samples, strict=True):
        kept = dist.kept or (1.0,) * len(dist.answers)
        counts = [round(p * samples) for p in dist.answers]
        right = 0 if dist.correct is None else counts[dist.correct]
        wrong = sorted((counts[i], kept[i]) for i in range(len(counts)) if i != dist.correct)
        stated = sum(c for c, _ in wrong)
        if right == samples:
            split = _Split(wrong=(1.0,), unanswered=0.0, kept_right=kept_right, kept_wrong=(kept_wrong,))
        else:
            split = _Split(
                wrong=tuple(c / stated for c, _ in wrong),
                unanswered=(samples - right - stated) / (samples - right),
                kept_right=kept_right if dist.correct is None else kept[dist.correct],
                kept_wrong=tuple(r for _, r in wrong),
            )
        outcomes.append((right, samples, interned.setdefault(split, split)))
    return outcomes


def _fitted_curve(
    outcomes: Sequence[tuple[int, int, _Split]],
    mix: DifficultyMix,
    top: int,
    memo: _Memo,
    *,
    filtered: bool = False,
) -> list[float]:
    """Vote (or with ``filtered`` filter-vote, 1..top/2 samples) accuracy for K = 1..top: the
    mean over problems of Σ_c P(class c | its counts) · the accuracy of a problem right with
    rights[c] whose other samples split as its own did. With two answers this is the mixture's
    own curve Σ_c w_c·P[Bin(K, p_c) > K/2], EM's weights being the mean posteriors."""
    memo.pmfs.clear()  # the rates change with every fit
    counts = list({(right, samples) for right, samples, _ in outcomes})
    posteriors = dict(zip(counts, _posteriors(mix.weights, mix.rights, counts), strict=True))
    weight: dict[tuple[_Split, int], float] = {}
    for right, samples, split in outcomes:
        for c, r in enumerate(posteriors[right, samples][0]):
            if r > 0:
                weight[split, c] = weight.get((split, c), 0.0) + r
    totals = [0.0] * (top // 2 if filtered else top)
    for (split, c), w in weight.items():
        p = mix.rights[c]
        if filtered:
            rest = 1.0 - p
            dist = AnswerDistribution(
                answers=(p, *(rest * (1.0 - split.unanswered) * q for q in split.wrong)),
                correct=0,
                unanswered=rest * split.unanswered,
                kept=(split.kept_right, *split.kept_wrong),
            )
            values = _filter_curve(dist, top // 2)
        else:  # Σ_j Binomial(K, j; p)·V(K − j, j): the rows serve every split of the class
            rows = memo.pmf(p, top)
            table = memo.table(split.wrong, split.unanswered, top)
            values = [math.fsum(map(operator.mul, rows[k], table[k])) for k in range(1, top + 1)]
        totals = [t + w * v for t, v in zip(totals, values, strict=True)]
    return [t / len(outcomes) for t in totals]


def _bootstrap(
    outcomes: Sequence[tuple[int, int, _Split]],
    mix: DifficultyMix,
    ks: Sequence[int],
    *,
    resamples: int,
    level: float,
    seed: int,
    memo: _Memo,
) -> tuple[tuple[tuple[float, float], ...], tuple[int, int]]:
    """The central ``level`` band of the vote accuracy at each K and of the best K over
    ``resamples`` resamples of the problems (with replacement), each refitted by EM from the
    full fit (so with its number of classes)."""
    rng = random.Random(seed)
    curves = []
    bests = []
    for _ in range(resamples):
        sample = rng.choices(outcomes, k=len(outcomes))
        refit = _em(Counter((right, samples) for right, samples, _ in sample), mix.weights, mix.rights)
        full = _fitted_curve(sample, refit, max(ks), memo)
        values = [full[k - 1] for k in ks]
        curves.append(values)
        bests.append(best_k(ks, values))
    low, high = (1.0 - level) / 2, (1.0 + level) / 2
    columns = [sorted(column) for column in zip(*curves, strict=True)]
    bests.sort()
    return (
        tuple((_percentile(c, low), _percentile(c, high)) for c in columns),
        (_percentile(bests, low), _percentile(bests, high)),
    )


def _percentile(ordered: Sequence[_T], q: float) -> _T:
    return ordered[round(q * (len(ordered) - 1))]


@dataclass(frozen=True, kw_only=True, slots=True)
class Prediction:
    """The predicted accuracy at each K of ``ks``: ``vote`` for majority vote over K samples,
    ``filter_vote`` (when a judge scored the probe) for filter-vote with K calls, None at odd
    K. ``best_vote_k`` and ``best_filter_k`` maximise them (the smallest K on ties).
    ``difficulty`` is the fitted mixture they come from; ``vote_band`` the central ``level``
    band of the vote accuracy at each K over ``resamples`` bootstrap resamples of the
    problems, and ``best_vote_k_band`` that of the best K (None without resamples)."""

    ks: tuple[int, ...]
    vote: tuple[float, ...]
    best_vote_k: int
    filter_vote: tuple[float | None, ...] | None
    best_filter_k: int | None
    estimate: Estimate
    difficulty: DifficultyMix
    vote_band: tuple[tuple[float, float], ...] | None
    best_vote_k_band: tuple[int, int] | None
    resamples: int
    level: float


def predict_votes(
    rows: Iterable[Mapping[str, Any]],
    ks: Iterable[int] = range(1, 65),
    *,
    equivalence: AnswerEquivalence | None = None,
    resamples: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> Prediction:
    """The accuracy curve a probe's results rows predict, the best K, and their uncertainty.

    ``rows``: the JSONL rows of one ``treesearch run`` (majority-vote, or filter-vote for
    its curve too) with several samples per problem. ``equivalence`` groups answers
    (default: a ``MathEquivalence``, closed before returning). How likely a sample is to be
    right is not read off each problem's own few samples, which would scatter the problems
    near ½ to both sides of it, but from a mixture of difficulty classes fitted to all of
    them (``fit_difficulty``); how a problem's other samples split among wrong answers and
    no answer is kept as sampled. Up to K = samples per problem the curve is what the probe
    determines; above, the fitted classes extrapolate it. ``resamples`` bootstrap resamples
    of the problems (seeded by ``seed``; 0 for none) give the ``level`` bands."""
    wanted = sorted(set(ks))
    if not wanted:
        raise ConfigError("predicting needs at least one K")
    for k in wanted:
        _check_k(k)
    if resamples < 0 or not 0.0 < level < 1.0:
        raise ConfigError(f"needs resamples ≥ 0 and 0 < level < 1, got {resamples}, {level}")
    if equivalence is None:
        from treesearch.answers.equivalence import MathEquivalence

        with MathEquivalence() as math_equivalence:
            found = estimate(rows, math_equivalence)
    else:
        found = estimate(rows, equivalence)
    if not found.distributions:
        why = ", ".join(f"{count} {reason}" for reason, count in found.skipped.items()) or "no rows"
        hint = "; advise needs gold answers to tell the right one" if "without gold" in found.skipped else ""
        raise ConfigError(f"no usable rows to estimate from ({why}){hint}")
    if max(found.samples) < 2:
        raise ConfigError(
            "every problem has one sample: how difficulty spreads over problems, and so the accuracy "
            "at any K above 1, cannot be told from that; probe with more samples per problem (--n 16)"
        )
    outcomes = _outcomes(found)
    mix = fit_difficulty((right, samples) for right, samples, _ in outcomes)
    memo = _Memo()
    full = _fitted_curve(outcomes, mix, max(wanted), memo)
    vote = [full[k - 1] for k in wanted]
    filter_vote: tuple[float | None, ...] | None = None
    best_filter: int | None = None
    even = [k for k in wanted if k % 2 == 0]
    if found.judged and even:
        judged = _fitted_curve(outcomes, mix, max(even), memo, filtered=True)
        values = {k: judged[k // 2 - 1] for k in even}
        filter_vote = tuple(values.get(k) for k in wanted)
        best_filter = best_k(even, list(values.values()))
    band, best_band = (
        _bootstrap(outcomes, mix, wanted, resamples=resamples, level=level, seed=seed, memo=memo)
        if resamples
        else (None, None)
    )
    return Prediction(
        ks=tuple(wanted),
        vote=tuple(vote),
        best_vote_k=best_k(wanted, vote),
        filter_vote=filter_vote,
        best_filter_k=best_filter,
        estimate=found,
        difficulty=mix,
        vote_band=band,
        best_vote_k_band=best_band,
        resamples=resamples,
        level=level,
    )
