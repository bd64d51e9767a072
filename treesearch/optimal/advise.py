"""How many LM calls to spend (Chen et al. 2024): the estimate from a probe run's results
rows. ``predict_votes(rows)`` does it all: the rows of one ``treesearch run`` of
majority-vote (or filter-vote) with several samples per problem in, the answer
distributions they show, the spread of difficulty fitted over them (``mixture``), the
predicted curve (``votes``), the best K and their bootstrap bands out.
"""


from __future__ import annotations

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
from treesearch.optimal.mixture import DifficultyMix, class_posteriors, em, fit_difficulty
from treesearch.optimal.votes import AnswerDistribution, Memo, best_k, check_k, filter_curve

# Strategies whose candidates are independent samples of one distribution.
_SAMPLING = frozenset({"majority-vote", "filter-vote", "best-of-n", "weighted-vote"})

_T = TypeVar("_T")


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
    memo: Memo,
    *,
    filtered: bool = False,
) -> list[float]:
    """Vote (or with ``filtered`` filter-vote, 1..top/2 samples) accuracy for K = 1..top: the
    mean over problems of Σ_c P(class c | its counts) · the accuracy of a problem right with
    rights[c] whose other samples split as its own did. With two answers this is the mixture's
    own curve Σ_c w_c·P[Bin(K, p_c) > K/2], EM's weights being the mean posteriors."""
    memo.pmfs.clear()  # the rates change with every fit
    counts = list({(right, samples) for right, samples, _ in outcomes})
    posteriors = dict(zip(counts, class_posteriors(mix.weights, mix.rights, counts), strict=True))
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
            values = filter_curve(dist, top // 2)
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
    memo: Memo,
) -> tuple[tuple[tuple[float, float], ...], tuple[int, int]]:
    """The central ``level`` band of the vote accuracy at each K and of the best K over
    ``resamples`` resamples of the problems (with replacement), each refitted by EM from the
    full fit (so with its number of classes)."""
    rng = random.Random(seed)
    curves = []
    bests = []
    for _ in range(resamples):
        sample = rng.choices(outcomes, k=len(outcomes))
        refit = em(Counter((right, samples) for right, samples, _ in sample), mix.weights, mix.rights)
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


def _usable_estimate(rows: Iterable[Mapping[str, Any]], equivalence: AnswerEquivalence | None) -> Estimate:
    """``estimate`` of the rows (with a MathEquivalence of its own, closed after, when none is
    given), refused with the reason when no row is usable or no problem has two samples."""
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
    return found


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
        check_k(k)
    if resamples < 0 or not 0.0 < level < 1.0:
        raise ConfigError(f"needs resamples ≥ 0 and 0 < level < 1, got {resamples}, {level}")
    found = _usable_estimate(rows, equivalence)
    outcomes = _outcomes(found)
    mix = fit_difficulty((right, samples) for right, samples, _ in outcomes)
    memo = Memo()
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
