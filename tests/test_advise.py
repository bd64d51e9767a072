"""The predicted vote curve: exact against brute force, Chen et al.'s closed form, estimates from
rows, the measured curve of the synthetic server, and ``treesearch advise`` as a user runs it."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import run_cli
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.stats import binom

from treesearch import Candidate, ConfigError, MathEquivalence, Problem, SamplingParams, SearchConfig, run
from treesearch.answers.aggregate import filter_vote, majority_vote
from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.optimal.advise import estimate, predict_votes
from treesearch.optimal.mixture import fit_difficulty
from treesearch.optimal.votes import (
    AnswerDistribution,
    best_k,
    curve,
    filter_vote_accuracy,
    turning_point,
    two_answer_best_k,
    vote_accuracy,
    vote_curve,
)
from treesearch.runs.loop import read_output


def dist(*answers: float, correct: int | None = 0, unanswered: float = 0.0, **kw: Any) -> AnswerDistribution:
    return AnswerDistribution(answers=answers, correct=correct, unanswered=unanswered, **kw)


# -- brute force -----------------------------------------------------------------------


def by_sequences(d: AnswerDistribution, k: int) -> float:
    """Every sequence of k samples, decided by treesearch's own majority vote (which breaks
    ties by the answer found first) and weighted by its probability."""
    kinds = [(str(i), p) for i, p in enumerate(d.answers)] + [(None, d.unanswered)]
    total = 0.0
    for sequence in itertools.product(range(len(kinds)), repeat=k):
        probability = math.prod(kinds[i][1] for i in sequence)
        if probability:
            candidates = [Candidate(node=n, answer=kinds[i][0]) for n, i in enumerate(sequence)]
            total += probability * (majority_vote(candidates, list(sequence)) == str(d.correct))
    return total


def by_counts(d: AnswerDistribution, k: int) -> Fraction:
    """The multinomial sum over count vectors, exactly, a tie of t+1 counting 1/(t+1)."""
    ps = [Fraction(p).limit_denominator(10**6) for p in (*d.answers, d.unanswered)]
    total = Fraction(0)
    for counts in itertools.product(range(k + 1), repeat=len(d.answers)):
        rest = k - sum(counts)
        top = max(counts)
        if rest < 0 or top == 0 or d.correct is None or counts[d.correct] != top:
            continue
        ways = Fraction(math.factorial(k), math.prod(math.factorial(c) for c in (*counts, rest)))
        probability = ways * math.prod(p**c for p, c in zip(ps, (*counts, rest), strict=True))
        total += probability / sum(c == top for c in counts)
    return total


def filter_by_sequences(d: AnswerDistribution, samples: int) -> float:
    """Every sequence of judged samples, decided by treesearch's own filter-vote aggregator."""
    assert d.kept is not None
    kinds: list[tuple[str | None, float | None, float]] = [(None, None, d.unanswered)]
    for i, (p, r) in enumerate(zip(d.answers, d.kept, strict=True)):
        kinds += [(str(i), 1.0, p * r), (str(i), 0.0, p * (1 - r))]
    total = 0.0
    for sequence in itertools.product(range(len(kinds)), repeat=samples):
        probability = math.prod(kinds[i][2] for i in sequence)
        if probability:
            candidates = [
                Candidate(node=n, answer=kinds[i][0], score=kinds[i][1]) for n, i in enumerate(sequence)
            ]
            groups = [int(c.answer) if c.answer is not None else -1 for c in candidates]
            total += probability * (filter_vote(candidates, groups) == str(d.correct))
    return total


CASES = [
    dist(0.6, 0.4),  # two answers: even K ties
    dist(0.35, 0.4, 0.25),  # the right answer is not the likeliest
    dist(0.3, 0.3, 0.2, correct=1, unanswered=0.2),  # equal leaders, no-answer mass
    dist(0.25, 0.35, 0.15, 0.1, unanswered=0.15),
    dist(0.5, correct=0, unanswered=0.5),  # the only answer, half the samples unanswered
    dist(0.7, 0.3, correct=None),  # the right answer was never seen
]


@pytest.mark.parametrize("d", CASES)
def test_the_curve_is_the_brute_force_vote(d: AnswerDistribution) -> None:
    exact = vote_curve(d, 10)
    longest = 6 if len(d.answers) > 2 else 8
    for k in range(1, longest + 1):
        assert exact[k - 1] == pytest.approx(by_sequences(d, k), abs=1e-12)
    for k in range(1, 11):
        assert exact[k - 1] == pytest.approx(float(by_counts(d, k)), abs=1e-9)
        assert vote_accuracy(d, k) == pytest.approx(exact[k - 1], abs=1e-15)


def test_two_answers_match_the_binomial_far_out() -> None:
    """Odd K up to 301, past the point where the scaling of powers matters."""
    exact = vote_curve(dist(0.52, 0.48), 301)
    for k in (1, 9, 63, 151, 301):
        assert exact[k - 1] == pytest.approx(float(binom.sf(k // 2, k, 0.52)), abs=1e-12)
    for k in (1, 9, 63, 151):
        assert exact[k] == pytest.approx(exact[k - 1], abs=1e-12)  # K + 1: a tie splits evenly


@given(
    weights=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=5),
    unanswered=st.sampled_from([0.0, 0.1, 0.4]),
    k=st.integers(1, 40),
)
def test_every_answer_s_chance_to_win_adds_up(weights: list[float], unanswered: float, k: int) -> None:
    """Someone wins unless every sample is unanswered: Σ_a P(a wins) = 1 − u^K."""
    answers = tuple(w / sum(weights) * (1 - unanswered) for w in weights)
    wins = [
        vote_accuracy(AnswerDistribution(answers=answers, correct=i, unanswered=unanswered), k)
        for i in range(len(answers))
    ]
    assert math.fsum(wins) == pytest.approx(1 - unanswered**k, abs=1e-12)


def by_counts_in_logs(d: AnswerDistribution, k: int) -> float:
    """``by_counts`` in floating point (log-multinomials), for K too large for fractions."""
    logs = [math.log(p) for p in (*d.answers, d.unanswered)]
    total = 0.0
    for counts in itertools.product(range(k + 1), repeat=len(d.answers)):
        rest = k - sum(counts)
        top = max(counts)
        if rest < 0 or top == 0 or d.correct is None or counts[d.correct] != top:
            continue
        log_ways = math.lgamma(k + 1) - sum(math.lgamma(c + 1) for c in (*counts, rest))
        total += math.exp(log_ways + sum(c * lp for c, lp in zip((*counts, rest), logs, strict=True))) / sum(
            c == top for c in counts
        )
    return total


def test_large_k_stays_exact() -> None:
    d = dist(0.34, 0.31, 0.2, unanswered=0.15)
    assert vote_curve(d, 90)[-1] == pytest.approx(by_counts_in_logs(d, 90), abs=1e-12)
    answers = (0.3, 0.25, 0.2, 0.15)
    wins = [vote_curve(dist(*answers, correct=i, unanswered=0.1), 240)[-1] for i in range(4)]
    assert math.fsum(wins) == pytest.approx(1.0, abs=1e-12)
    assert wins == sorted(wins, reverse=True)  # the likelier an answer, the likelier it wins


# -- Chen et al.'s two-answer mix ---------------------------------------------------------


def test_the_closed_form_agrees_with_the_exact_curve() -> None:
    alpha, easy, hard = 0.6, 0.85, 0.45
    assert turning_point(alpha, easy, hard) == pytest.approx(3.545, abs=1e-3)
    assert two_answer_best_k(alpha, easy, hard) == 7
    mix = [dist(easy, 1 - easy)] * 3 + [dist(hard, 1 - hard)] * 2  # α = 3/5
    odd = list(range(1, 64, 2))
    accuracies = curve(mix, odd)
    assert best_k(odd, accuracies) == 7
    assert accuracies[0] < accuracies[3] and accuracies[-1] < accuracies[3]  # rises, then falls
    # Even K ties the odd K below it with two answers; the smaller K wins the tie.
    assert best_k(range(1, 64), curve(mix, range(1, 64))) == 7


def test_the_closed_form_refuses_mixes_it_does_not_cover() -> None:
    with pytest.raises(ConfigError, match="closer to ½"):
        turning_point(0.5, 0.6, 0.1)  # the hard problems converge faster: the curve ends rising
    with pytest.raises(ConfigError, match="p_easy"):
        turning_point(0.5, 0.4, 0.45)
    assert two_answer_best_k(0.1, 0.55, 0.45) == 1  # too few easy problems: one call is best


# -- filter-vote --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "d",
    [
        dist(0.5, 0.3, unanswered=0.2, kept=(0.9, 0.4)),
        dist(0.3, 0.4, 0.2, unanswered=0.1, kept=(0.8, 0.5, 0.1)),
        dist(0.3, 0.7, kept=(0.0, 1.0)),  # the judge rejects every right answer
        dist(0.6, 0.4, kept=(0.0, 0.0)),  # and everything: the fallback vote decides
    ],
)
def test_filter_vote_is_the_brute_force_filter(d: AnswerDistribution) -> None:
    for samples in range(1, 5):
        assert filter_vote_accuracy(d, 2 * samples) == pytest.approx(
            filter_by_sequences(d, samples), abs=1e-12
        )


def test_filter_vote_needs_judgements_and_even_calls() -> None:
    with pytest.raises(ConfigError, match="kept"):
        filter_vote_accuracy(dist(0.6, 0.4), 4)
    with pytest.raises(ConfigError, match="even number of calls"):
        filter_vote_accuracy(dist(0.6, 0.4, kept=(1.0, 0.5)), 3)
    with pytest.raises(ConfigError, match="sum to 1"):
        dist(0.6, 0.6)


# -- estimates from results rows -----------------------------------------------------------


def row(
    ident: str, answers: Sequence[str | None], *, gold: str | None = "1/2", **extra: Any
) -> dict[str, Any]:
    scores = extra.pop("scores", [None] * len(answers))
    return {
        "id": ident,
        "gold": gold,
        "candidates": [
            {"node": n + 1, "answer": a, "score": s}
            for n, (a, s) in enumerate(zip(answers, scores, strict=True))
        ],
        "error": extra.pop("error", None),
        **extra,
    }


@pytest.fixture(scope="module")
def equivalence() -> Iterator[MathEquivalence]:
    with MathEquivalence() as shared:
        yield shared


def test_rows_become_distributions(equivalence: MathEquivalence) -> None:
    rows = [
        # Eight samples asked for, five answered: "0.5" and "1/2" are one answer, the right one.
        row("a", ["3", "0.5", "3", "1/2", "0.5"], config={"strategy": "majority-vote", "n": 8}),
        row("b", ["2", "2"]),  # no config: the candidates are all the samples
        row("e", [], config={"n": 4}),  # four samples, none answered
        row("c", ["1/2"], error="endpoint failed"),
        row("d", ["1/2"], gold=None),
    ]
    found = estimate(rows, equivalence)
    assert found.distributions == (
        dist(2 / 8, 3 / 8, correct=1, unanswered=3 / 8),
        dist(1.0, correct=None),
        dist(correct=None, unanswered=1.0),
    )
    assert found.samples == (8, 2, 4)
    assert found.skipped == {"with an error": 1, "without gold": 1}
    assert not found.judged


def test_judge_scores_give_kept_shares(equivalence: MathEquivalence) -> None:
    config = {"strategy": "filter-vote", "n": 12, "n_counts_judgements": True}  # 6 samples
    rows = [row("a", ["1/2", "1/2", "7", "7", None], scores=[1.0, 0.0, 0.5, 0.0, None], config=config)]
    (d,) = estimate(rows, equivalence).distributions
    assert d == dist(2 / 6, 2 / 6, correct=0, unanswered=2 / 6, kept=(0.5, 0.5))  # abstaining keeps
    unscored = estimate([row("b", ["1/2", "7"], strategy="filter-vote")], equivalence).distributions
    assert unscored[0].kept == (1.0, 1.0)  # nothing judged: the aggregator falls back to majority


def test_tree_search_rows_are_refused(equivalence: MathEquivalence) -> None:
    with pytest.raises(ConfigError, match="strategy 'beam' does not draw independent samples"):
        estimate([row("a", ["1/2"], strategy="beam")], equivalence)


def test_predict_needs_usable_rows(equivalence: MathEquivalence) -> None:
    with pytest.raises(
        ConfigError, match=r"no usable rows to estimate from \(2 without gold\); advise needs gold"
    ):
        predict_votes([row("a", ["1"], gold=None), row("b", ["1"], gold=None)], equivalence=equivalence)


def test_predict_gives_both_curves(equivalence: MathEquivalence) -> None:
    config = {"strategy": "filter-vote", "n": 8}
    rows = [
        row(str(i), ["1/2", "1/2", "3", "3", "3"], scores=[1.0, 1.0, 0.0, 1.0, 0.0], config=config)
        for i in range(3)
    ]
    prediction = predict_votes(rows, [1, 2, 3, 4, 8], equivalence=equivalence)
    d = dist(2 / 8, 3 / 8, unanswered=3 / 8, kept=(1.0, 1 / 3))
    assert prediction.vote == pytest.approx([vote_accuracy(d, k) for k in (1, 2, 3, 4, 8)], abs=1e-15)
    assert prediction.filter_vote is not None
    assert prediction.filter_vote[0] is None  # odd K: no even number of calls
    assert prediction.filter_vote[1] == pytest.approx(filter_vote_accuracy(d, 2), abs=1e-15)
    assert prediction.best_vote_k == best_k(prediction.ks, prediction.vote)
    assert prediction.best_filter_k == 8  # the judge prefers the right answer: more calls help


# -- few samples a problem: the fitted difficulty --------------------------------------------


def chen_probe(seed: int, problems: int = 400, samples: int = 16) -> list[dict[str, Any]]:
    """Rows of a majority-vote probe on Chen et al.'s mix: a share .6 of the problems right with
    p = .85, the rest with p = .45, two answers; seeded."""
    rng = random.Random(seed)
    config = {"strategy": "majority-vote", "n": samples}
    rows = []
    for i in range(problems):
        p = 0.85 if rng.random() < 0.6 else 0.45
        rows.append(row(str(i), ["1/2" if rng.random() < p else "3" for _ in range(samples)], config=config))
    return rows


CHEN_MIX = [dist(0.85, 0.15)] * 3 + [dist(0.45, 0.55)] * 2  # α = 3/5: the true curve, best K = 7
KS = range(1, 65)


def test_sixteen_samples_a_problem_find_chen_s_k(equivalence: MathEquivalence) -> None:
    """Read off each problem's own 16 samples, a problem at p = .45 looks easy 27% of the time:
    the curve flattens and its top drifts to K = 15 here. The fitted mix finds 7, and its
    bootstrap band holds the true curve."""
    rows = chen_probe(0)
    prediction = predict_votes(rows, KS, equivalence=equivalence)
    assert 5 <= prediction.best_vote_k <= 9
    assert prediction.best_vote_k_band is not None and prediction.vote_band is not None
    first, last = prediction.best_vote_k_band
    assert 5 <= first <= prediction.best_vote_k <= last <= 11
    assert best_k(KS, curve(prediction.estimate.distributions, KS)) == 15  # each problem's own samples
    true = curve(CHEN_MIX, KS)
    for k in (1, 7, 15, 31, 63):
        low, high = prediction.vote_band[k - 1]
        assert low <= true[k - 1] <= high, (k, low, true[k - 1], high)
        assert low <= prediction.vote[k - 1] <= high
    mix = prediction.difficulty
    assert sorted(mix.rights) == pytest.approx([0.45, 0.85], abs=0.02)
    assert mix.weights[mix.rights.index(max(mix.rights))] == pytest.approx(0.6, abs=0.03)


def test_the_fitted_curve_is_the_mixture_s(equivalence: MathEquivalence) -> None:
    """With two answers the predicted curve is Σ_c w_c·P[Bin(K, p_c) > K/2] (ties halved), by scipy:
    at EM's fixed point each weight is its class's mean posterior (here to EM's tolerance)."""
    prediction = predict_votes(chen_probe(1), KS, equivalence=equivalence, resamples=0)
    assert prediction.vote_band is None and prediction.best_vote_k_band is None
    mix = prediction.difficulty
    for k in (1, 2, 7, 20, 64):
        expected = sum(
            w * (binom.sf(k // 2, k, p) + (0.5 * binom.pmf(k // 2, k, p) if k % 2 == 0 else 0.0))
            for w, p in zip(mix.weights, mix.rights, strict=True)
        )
        assert prediction.vote[k - 1] == pytest.approx(expected, abs=1e-5)


def test_the_fit_is_the_maximum_likelihood(equivalence: MathEquivalence) -> None:
    rng = random.Random(2)
    counts = [
        (sum(rng.random() < p for _ in range(16)), 16)
        for p in (0.85 if rng.random() < 0.6 else 0.45 for _ in range(400))
    ]
    mix = fit_difficulty(counts)
    assert len(mix.weights) == 2  # BIC: Chen et al.'s two classes, no more

    def log_likelihood(w: float, p1: float, p2: float) -> float:
        return float(
            sum(math.log(w * binom.pmf(a, n, p1) + (1 - w) * binom.pmf(a, n, p2)) for a, n in counts)
        )

    assert mix.log_likelihood == pytest.approx(log_likelihood(mix.weights[0], *mix.rights), abs=1e-9)
    best = minimize(lambda x: -log_likelihood(*x), [0.5, 0.3, 0.7], bounds=[(1e-6, 1 - 1e-6)] * 3)
    assert -best.fun <= mix.log_likelihood + 1e-6  # scipy finds nothing likelier
    same = [(sum(rng.random() < 0.6 for _ in range(16)), 16) for _ in range(400)]
    homogeneous = fit_difficulty(same)
    assert len(homogeneous.weights) == 1  # one rate for all: no second class pays
    assert homogeneous.rights[0] == pytest.approx(sum(a for a, _ in same) / (16 * 400), abs=1e-12)
    with pytest.raises(ConfigError, match="at least one problem"):
        fit_difficulty([])
    with pytest.raises(ConfigError, match="5 right of 4 samples"):
        fit_difficulty([(5, 4)])


def test_the_band_repeats_with_its_seed(equivalence: MathEquivalence) -> None:
    rows = chen_probe(3, problems=100)
    first, again, other = (
        predict_votes(rows, [1, 7, 31], equivalence=equivalence, resamples=20, seed=seed)
        for seed in (1, 1, 2)
    )
    assert first.vote_band == again.vote_band and first.best_vote_k_band == again.best_vote_k_band
    assert first.vote == other.vote and first.vote_band != other.vote_band


def test_a_judge_that_keeps_everything_is_majority_vote(equivalence: MathEquivalence) -> None:
    """Filter-vote over the fitted classes: with every sample kept, 2m calls are a vote over m
    samples, also for the answers the probe never showed (the right one of a problem never
    right, the wrong one of a problem always right), which take the probe's kept share."""
    rows = chen_probe(4, problems=60, samples=8)
    for r in rows:
        r["config"] = {"strategy": "filter-vote", "n": 8}
        for c in r["candidates"]:
            c["score"] = 1.0
    rows += [row("never", ["3"] * 8, config={"strategy": "filter-vote", "n": 8}, scores=[1.0] * 8)]
    prediction = predict_votes(rows, range(1, 21), equivalence=equivalence, resamples=0)
    assert prediction.filter_vote is not None
    for m in range(1, 11):
        assert prediction.filter_vote[2 * m - 1] == pytest.approx(prediction.vote[m - 1], abs=1e-12)


@pytest.mark.parametrize(("answer", "accuracy"), [("1/2", 1.0), ("3", 0.0)])
def test_problems_always_right_or_always_wrong(
    equivalence: MathEquivalence, answer: str, accuracy: float
) -> None:
    rows = [row(str(i), [answer] * 8) for i in range(20)]
    prediction = predict_votes(rows, [1, 2, 7, 64], equivalence=equivalence, resamples=20)
    assert prediction.vote == (accuracy,) * 4
    assert prediction.best_vote_k == 1 and prediction.best_vote_k_band == (1, 1)
    assert prediction.vote_band == ((accuracy, accuracy),) * 4
    assert prediction.difficulty.rights == (accuracy,)


def test_one_sample_a_problem_or_none_is_one_line(equivalence: MathEquivalence) -> None:
    with pytest.raises(ConfigError, match="every problem has one sample") as raised:
        predict_votes([row(str(i), ["1/2" if i % 2 else "3"]) for i in range(10)], equivalence=equivalence)
    assert "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match=r"no usable rows to estimate from \(no rows\)"):
        predict_votes([], equivalence=equivalence)


def test_the_split_of_wrong_answers_is_kept(equivalence: MathEquivalence) -> None:
    """Many answers: the right one at .4 against two wrong ones at .3 wins more with K; the
    fitted right rate carries each problem's own split of the rest."""
    rows = [row(str(i), ["1/2"] * 4 + ["3"] * 3 + ["4"] * 3) for i in range(6)]
    prediction = predict_votes(rows, [1, 9, 40], equivalence=equivalence, resamples=0)
    expected = curve([dist(0.4, 0.3, 0.3)], [1, 9, 40])
    assert prediction.vote == pytest.approx(expected, abs=1e-12)
    assert prediction.vote[0] < prediction.vote[1] < prediction.vote[2]


# -- end to end: the synthetic server ------------------------------------------------------

EASY, HARD = 600, 400  # α = .6 with p₁ = .85, p₂ = .45: Chen et al.'s curve, best K = 7
MEASURED_KS = (1, 3, 7, 15, 31)


@dataclass(frozen=True)
class Probe:
    path: Path
    rows: list[dict[str, Any]]  # a second run's rows, n = 31, another seed


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Probe:
    """A probe of 64 samples per problem, and an independent run of 31 to measure against."""
    records = [
        *make_problems(EASY, p_correct=0.85, prefix="easy"),
        *make_problems(HARD, p_correct=0.45, prefix="hard"),
    ]
    problems = [Problem.from_record(record) for record in records]
    workdir = tmp_path_factory.mktemp("advise")
    path = workdir / "probe.jsonl"

    async def both(url: str) -> None:
        policy = OpenAIPolicy(url, "fake")
        try:
            for n, seed, output in ((64, 1, path), (31, 2, workdir / "measure.jsonl")):
                config = SearchConfig(strategy="majority-vote", n=n, sampling=SamplingParams(seed=seed))
                await run(problems, policy, config, output=output, keep_trees=False)
        finally:
            await policy.aclose()

    with spawn([], records, workdir) as url:
        anyio.run(both, url)
    return Probe(path, list(read_output(workdir / "measure.jsonl").values()))


def measured_at(rows: list[dict[str, Any]], k: int, equivalence: MathEquivalence) -> float:
    """Majority vote over each row's first k samples (the samples are independent, so these are
    k samples), by treesearch's own aggregator and answer equivalence."""
    right = 0
    for r in rows:
        candidates = [Candidate(node=c["node"], answer=c["answer"]) for c in r["candidates"][:k]]
        answer = majority_vote(candidates, equivalence.group([c.answer or "" for c in candidates]))
        right += answer is not None and equivalence.matches(answer, r["gold"])
    return right / len(rows)


def test_the_prediction_matches_the_measured_curve(probe: Probe, equivalence: MathEquivalence) -> None:
    prediction = predict_votes(read_output(probe.path).values(), range(1, 32), equivalence=equivalence)
    assert prediction.estimate.samples == (64,) * (EASY + HARD)
    predicted = dict(zip(prediction.ks, prediction.vote, strict=True))
    measured = {k: measured_at(probe.rows, k, equivalence) for k in MEASURED_KS}
    # At 31 samples the prefix vote is the run's own answer.
    assert measured[31] == sum(bool(r["correct"]) for r in probe.rows) / len(probe.rows)
    print("K, predicted, measured:", [(k, round(predicted[k], 4), round(measured[k], 4)) for k in measured])
    for k in MEASURED_KS:
        error = math.sqrt(predicted[k] * (1 - predicted[k]) / len(probe.rows))
        assert abs(predicted[k] - measured[k]) <= 3 * error, (k, predicted[k], measured[k])
    assert 5 <= prediction.best_vote_k <= 9  # Chen et al.'s K* = 7
    assert predicted[1] < predicted[7] > predicted[31]
    assert measured[1] < measured[7] > measured[31]  # more calls first help, then hurt


# -- the command line ----------------------------------------------------------------------


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_advise_help() -> None:
    done = run_cli("advise", "--help")
    assert done.returncode == 0
    assert "--results" in done.stdout and "--max-k" in done.stdout and "Chen et al." in done.stdout


def test_advise_prints_the_table(probe: Probe) -> None:
    done = run_cli("advise", "--results", str(probe.path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"estimated from {EASY + HARD} problems, 64 samples each"
    assert lines[1].startswith("difficulty fitted by maximum likelihood: a sample is right with p = 0.8")
    assert lines[2].split() == ["K", "vote", "90%", "band"]  # majority-vote rows: no judge
    (best,) = [line for line in lines if line.split()[1].endswith("*")]
    assert best.split()[0] == "7"
    assert lines[-1].startswith("* best: vote at K=7 (")
    assert "in 90% of 200 resamples of the problems" in lines[-1]


def test_advise_on_sixteen_samples_shows_the_band(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "probe.jsonl", chen_probe(0))
    done = run_cli("advise", "--results", str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].endswith("a sample is right with p = 0.84 on 58%, 0.45 on 42%")
    (best,) = [line for line in lines if line.split()[1].endswith("*")]
    k, vote, low, _, high = best.split()
    assert 5 <= int(k) <= 9 and float(low) <= float(vote.rstrip("*")) <= float(high)
    assert f"* best: vote at K={k} (" in done.stdout and "in 90% of 200 resamples" in done.stdout
    assert lines[-1] == "K above 16 extrapolates from the fitted difficulty classes"


def test_advise_shows_filter_vote_when_judged(tmp_path: Path) -> None:
    config = {"strategy": "filter-vote", "n": 8}
    rows = [
        row(str(i), ["1/2", "1/2", "3", "3"], scores=[1.0, 1.0, 0.0, 1.0], config=config) for i in range(4)
    ]
    done = run_cli("advise", "--results", str(write_rows(tmp_path / "r.jsonl", rows)), "--ks", "1,2,3,16")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2].split() == ["K", "vote", "90%", "band", "filter-vote"]
    assert "filter-vote at K=16 calls (8 samples, each judged;" in done.stdout
    assert "K above 8 extrapolates" in done.stdout


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, (), "--results {path}: no such file"),
        ('{"id": "a", "gold": "1"}\n{"id": \n', (), "{path}:2: not JSON"),
        (
            '{"id": "a", "gold": null, "candidates": []}\n',
            (),
            "no usable rows to estimate from (1 without gold)",
        ),
        ("", (), "{path} holds no rows"),
        ('{"id": "a", "gold": "1", "candidates": [{"answer": "1"}]}\n', (), "every problem has one sample"),
        ("", ("--bootstrap", "-1"), "argument --bootstrap: must be an integer from 0 to 10000"),
        ('{"id": "a", "gold": "1", "strategy": "mcts"}\n', (), "strategy 'mcts' does not draw"),
        ("", ("--ks", "3,x"), "argument --ks: must be a comma list of K from 1 to 1000, got '3,x'"),
        ("", ("--max-k", "1001"), "argument --max-k: must be an integer from 1 to 1000"),
    ],
)
def test_advise_errors_are_one_line(
    tmp_path: Path, content: str | None, args: tuple[str, ...], message: str
) -> None:
    path = tmp_path / "results.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    done = run_cli("advise", "--results", str(path), *args)
    assert done.returncode == 2
    assert message.format(path=path) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
