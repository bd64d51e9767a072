"""Aggregators as plain functions, and majority vote against the binomial closed form."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from conftest import problems
from scipy.stats import binom

from treesearch import CallableVerifier, Candidate, ConfigError, SamplingParams, SearchConfig, run
from treesearch.answers.aggregate import (
    aggregate,
    best_of_n,
    filter_vote,
    get_aggregator,
    hierarchical_vote,
    majority_vote,
    weighted_vote,
)
from treesearch.answers.extract import extract_answer
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import ABSTAIN


def candidates(*pairs: tuple[str | None, float | None]) -> list[Candidate]:
    return [Candidate(node=i + 1, answer=a, score=s) for i, (a, s) in enumerate(pairs)]


def test_majority_counts_groups_and_breaks_ties_by_score() -> None:
    cs = candidates(("1", 0.1), ("2", 0.9), ("1", 0.1), ("2", 0.2), (None, 1.0))
    assert majority_vote(cs[:4], [0, 1, 0, 1]) == "2"  # 2 v 2, the 2s score higher
    assert majority_vote(cs[:3], [0, 1, 0]) == "1"


def test_equivalent_answers_vote_together() -> None:
    cs = candidates(("0.5", None), ("1/2", None), ("3", None))
    assert majority_vote(cs, [0, 0, 1]) == "0.5"


def test_weighted_and_best_use_scores() -> None:
    cs = candidates(("7", 0.3), ("7", 0.3), ("9", 0.5))
    assert weighted_vote(cs, [0, 0, 1]) == "7"  # 0.6 beats 0.5
    assert best_of_n(cs, [0, 0, 1]) == "9"
    assert majority_vote([], []) is None and best_of_n([], []) is None


def test_equal_total_scores_go_to_the_most_common_answer() -> None:
    """All scores 0 (a verifier that rejects everything, confidences of nothing): the answer
    given most, not the one found first, in a flat vote and within a revision chain."""
    cs = candidates(("7", 0.0), ("9", 0.0), ("9", 0.0), ("8", None))
    groups = [0, 1, 1, 2]
    assert weighted_vote(cs, groups) == "9"
    assert majority_vote(cs, groups) == "9"
    chained = [Candidate(node=c.node, answer=c.answer, score=c.score, chain=1) for c in cs]
    assert hierarchical_vote(chained, groups) == "9"
    # Equal sums and counts: the answer found first, whatever the order of the groups' ids.
    assert weighted_vote(candidates(("4", 0.5), ("3", 0.5)), [1, 0]) == "4"


def test_unknown_aggregator() -> None:
    with pytest.raises(ConfigError, match="unknown aggregator 'median'"):
        get_aggregator("median")


def majority_accuracy(p: float, k: int) -> float:
    """P[the right answer wins a K-vote] with two answers, K odd: P[Bin(K, p) > K/2]."""
    return float(binom.sf(k // 2, k, p))


@pytest.mark.anyio
@pytest.mark.parametrize(("prefix", "p", "k"), [("a", 0.6, 5), ("b", 0.4, 7), ("c", 0.75, 3)])
async def test_majority_vote_matches_the_binomial(
    fake_server: Callable[..., str], prefix: str, p: float, k: int, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    policy = make_policy(fake_server(), "fake")
    config = SearchConfig(strategy="majority-vote", n=k, sampling=SamplingParams(seed=7))
    results = await run(problems(prefix, 300), policy, config)
    accuracy = sum(bool(r.correct) for r in results) / len(results)
    expected = majority_accuracy(p, k)
    sigma = math.sqrt(expected * (1 - expected) / len(results))
    assert abs(accuracy - expected) < 3.5 * sigma
    assert all(len(r.candidates) == k and r.stopped_by == "done" for r in results)


@pytest.mark.anyio
async def test_best_of_n_picks_what_the_verifier_prefers(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    """An exact checker as the verifier: best-of-N is right whenever one sample is.

    The checker compares the extracted answer, not a substring: gold "10" must not
    score a wrong "1000" (the fake server's wrong answers contain the gold one)."""

    def exact(problem, steps):  # type: ignore[no-untyped-def]
        return 1.0 if extract_answer(steps[-1]) == problem.answer else 0.0

    policy = make_policy(fake_server(), "fake")
    config = SearchConfig(strategy="best-of-n", n=4, sampling=SamplingParams(seed=3))
    results = await run(problems("b", 60), policy, config, verifier=CallableVerifier(exact))
    for result in results:
        any_right = any(c.answer == result.gold for c in result.candidates)
        assert result.correct == any_right
        assert all(c.score in (0.0, 1.0) for c in result.candidates)
        assert [c.score for c in result.candidates] == [
            float(c.answer == result.gold) for c in result.candidates
        ]


def test_score_based_aggregators_fall_back_to_majority_without_scores_and_say_so() -> None:
    # The budget ran out before the verifier: no path has a score.
    candidates = [Candidate(node=i, answer=a) for i, a in enumerate(["1", "2", "2", "2"])]
    groups = [0, 1, 1, 1]
    assert aggregate("weighted", candidates, groups) == ("2", "majority")
    assert aggregate("best", candidates, groups) == ("2", "majority")
    scored = [*candidates[:3], Candidate(node=3, answer="1", score=0.9)]
    assert aggregate("best", scored, [0, 1, 1, 0]) == ("1", "best")
    assert aggregate("weighted", scored, [0, 1, 1, 0]) == ("1", "weighted")


def test_filter_vote_drops_only_what_the_judge_rejected() -> None:
    # Two answers judged wrong, one with no verdict (ABSTAIN, e.g. a cut-off judgement):
    # the one the judge did not reject wins, though it is the minority.
    candidates = [
        Candidate(node=0, answer="7", score=0.0),
        Candidate(node=1, answer="7", score=0.0),
        Candidate(node=2, answer="9", score=ABSTAIN),
    ]
    assert filter_vote(candidates, [0, 0, 1]) == "9"


def test_hierarchical_vote_selects_within_chains_then_across() -> None:
    """Chain 1 says 5 twice weakly and 7 once strongly; chain 2 says 7. Within chain 1 the 5s
    sum to 1.2 > 0.9, so it picks 5 carrying 1.2; across chains 5 (1.2) beats 7 (1.0). A flat
    weighted vote would pick 7 (1.9 against 1.2)."""
    cs = [
        Candidate(node=1, answer="5", score=0.6, chain=1),
        Candidate(node=2, answer="5", score=0.6, chain=1),
        Candidate(node=3, answer="7", score=0.9, chain=1),
        Candidate(node=4, answer="7", score=1.0, chain=4),
    ]
    groups = [0, 0, 1, 1]
    assert hierarchical_vote(cs, groups) == "5"
    assert weighted_vote(cs, groups) == "7"
    # Without chains every candidate is a chain of its own: the weighted vote.
    flat = [Candidate(node=c.node, answer=c.answer, score=c.score) for c in cs]
    assert hierarchical_vote(flat, groups) == weighted_vote(flat, groups) == "7"
