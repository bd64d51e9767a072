"""Self-certainty (Kang et al. 2025): the token estimate by hand and against the exact value on
distributions known in full, Borda's votes by hand, and best-of-N and Borda voting on the
synthetic server, whose top logprobs leave less outside the top k on traces heading to the
gold answer."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from conftest import PROBLEMS, problems
from hypothesis import given
from hypothesis import strategies as st
from stub_server import Script, stub_server

from treesearch import BudgetLimits, Candidate, Prefix, SamplingParams, SearchConfig, StepFormat, run, search
from treesearch.answers.aggregate import aggregate, borda_vote, borda_votes, majority_vote
from treesearch.answers.certainty import LOGPROB_FLOOR, TAIL_FLOOR, token_certainty, trace_certainty
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.engine.policy import token_confidence
from treesearch.engine.tree import ROOT

V = 151_936  # the default vocabulary


def exact(probabilities: Sequence[float]) -> float:
    """KL(U ‖ p) = −(1/V) Σ_j log(V p_j) over a distribution known in full."""
    size = len(probabilities)
    return -math.fsum(math.log(size * p) for p in probabilities) / size


def top_k(probabilities: Sequence[float], k: int) -> list[float]:
    """The logprobs a server would list: the k likeliest."""
    return [math.log(p) for p in sorted(probabilities, reverse=True)[:k]]


def shortfall(probabilities: Sequence[float], k: int) -> float:
    """How far the estimate from the top k falls short: ((V − k)/V) KL(U ‖ the tail normalised)."""
    tail = sorted(probabilities, reverse=True)[k:]
    if not tail:
        return 0.0
    mass = math.fsum(tail)
    return len(tail) / len(probabilities) * exact([p / mass for p in tail])


# -- the estimate -------------------------------------------------------------------------


def test_token_certainty_by_hand() -> None:
    p = [0.5, 0.25, 0.125, 0.125]
    # Every token listed: the exact value, (1/4)(−log 2 − log 1 − log ½ − log ½) = (log 2)/4.
    assert token_certainty([math.log(x) for x in p], 4) == pytest.approx(math.log(2) / 4, abs=1e-15)
    # The top 2: the other two share 0.25 evenly, as they do in p: still exact.
    assert token_certainty([math.log(0.5), math.log(0.25)], 4) == pytest.approx(math.log(2) / 4, abs=1e-15)
    # The top 1: the other three take 1/6 each, −(1/4)(log 2 + 3 log ⅔) < (log 2)/4.
    assert token_certainty([math.log(0.5)], 4) == pytest.approx(-(math.log(2) + 3 * math.log(2 / 3)) / 4)
    # Top 2 of a large vocabulary: 0.01 over 998 tokens.
    expected = -math.log(1000) - (math.log(0.9) + math.log(0.09) + 998 * math.log(0.01 / 998)) / 1000
    assert token_certainty([math.log(0.9), math.log(0.09)], 1000) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(4.5827, abs=1e-4)  # −log 0.01 = 4.605, less O(k log V / V)
    # A trace is the mean of its tokens; a trace without tokens scores 0.
    assert trace_certainty([1.0, 2.0, 6.0]) == 3.0 and trace_certainty([]) == 0.0


def test_the_estimate_is_at_most_the_exact_value_short_by_the_tails_divergence() -> None:
    """A distribution known in full (V = 64, a language model's shape: a few likely tokens, a
    tail over five orders of magnitude, all above the floor on the rest): at every k the
    estimate from the top k falls short of the exact value by ((V − k)/V) KL(U ‖ the tail
    normalised), never grows with k, and vanishes at k = V − 1 and V."""
    draws = random.Random(5)
    logits = [draws.gauss(0, 2.5) for _ in range(64)]
    top = max(logits)
    weights = [math.exp(x - top) for x in logits]
    p = [w / math.fsum(weights) for w in weights]
    assert min(p) > TAIL_FLOOR and max(p) / min(p) > 1e5
    truth = exact(p)
    errors = [truth - token_certainty(top_k(p, k), len(p)) for k in range(1, len(p) + 1)]
    for k, error in enumerate(errors, start=1):
        assert error == pytest.approx(shortfall(p, k), abs=1e-9)
        assert error >= -1e-9
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(errors))
    assert errors[-1] == pytest.approx(0.0, abs=1e-12) and errors[-2] == pytest.approx(0.0, abs=1e-12)
    assert errors[0] > 1.0  # with one token listed the long tail is far from flat


@given(
    weights=st.lists(st.floats(1e-6, 1.0), min_size=2, max_size=40),
    k=st.integers(1, 40),
)
def test_the_shortfall_holds_for_any_distribution(weights: list[float], k: int) -> None:
    """The shortfall wherever the rest is above the floor; below it, the floor (a larger rest
    than the true one) only lowers the estimate further."""
    p = [w / math.fsum(weights) for w in weights]
    k = min(k, len(p))
    estimate = token_certainty(top_k(p, k), len(p))
    assert estimate <= exact(p) + 1e-9
    rest = math.fsum(sorted(p, reverse=True)[k:])
    if k == len(p) or rest >= TAIL_FLOOR:
        assert exact(p) - estimate == pytest.approx(shortfall(p, k), abs=1e-9)
    else:
        assert exact(p) - estimate >= shortfall(p, k) - 1e-9


@pytest.mark.parametrize(
    ("tops", "tail"),
    [
        ([0.0, -20.0], TAIL_FLOOR),  # the listed tokens sum past 1 after rounding
        ([1e-7], TAIL_FLOOR),  # a logprob rounded above 0
        ([math.log(0.5), -math.inf], 0.5),  # a masked token listed
        ([math.log(0.5), math.nan], 0.5),  # a broken server's NaN
    ],
)
def test_rounding_and_masked_tokens_give_finite_certainties(tops: list[float], tail: float) -> None:
    value = token_certainty(tops, V)
    assert math.isfinite(value)
    assert value == pytest.approx(-math.log(tail), abs=0.01)  # V ≫ k: about −log of the rest


def test_a_large_vocabulary_barely_matters() -> None:
    tops = [math.log(0.9), math.log(0.0999)] + [math.log(1e-6)] * 18
    values = [token_certainty(tops, size) for size in (32_000, 128_256, V)]
    assert max(values) - min(values) < 0.01
    assert values[-1] == pytest.approx(-math.log(1 - 0.9 - 0.0999 - 18e-6), abs=0.01)


# -- Borda ---------------------------------------------------------------------------------


def candidates(*pairs: tuple[str | None, float | None]) -> list[Candidate]:
    return [Candidate(node=i + 1, answer=a, score=s) for i, (a, s) in enumerate(pairs)]


def test_borda_votes_by_hand() -> None:
    """N = 4 ranked by certainty: node 1 (3.0), node 3 (2.0), node 2 (1.0), node 4 (0.5)."""
    four = candidates(("A", 3.0), ("B", 1.0), ("B", 2.0), ("A", 0.5))
    groups = [0, 1, 1, 0]
    assert borda_votes(four, power=1.0) == {1: 4.0, 3: 3.0, 2: 2.0, 4: 1.0}
    # p = 1: A has 4 + 1 = 5, B 3 + 2 = 5; the tie goes to the larger score sum, A's 3.5.
    assert borda_vote(four, groups, power=1.0) == "A"
    # p = 0.5: A has √4 + √1 = 3, B √3 + √2 ≈ 3.146: B.
    votes = borda_votes(four, power=0.5)
    assert votes[1] + votes[4] == pytest.approx(3.0)
    assert votes[3] + votes[2] == pytest.approx(math.sqrt(3) + math.sqrt(2))
    assert borda_vote(four, groups, power=0.5) == "B"
    # p = 0 is majority vote, and the default is Kang et al.'s 0.5.
    assert borda_vote(four, groups, power=0.0) == majority_vote(four, groups) == "A"
    assert aggregate("borda", four, groups) == ("B", "borda")
    assert aggregate("borda", four, groups, borda_power=1.0) == ("A", "borda")


def test_borda_ties_in_score_rank_by_order_and_unscored_paths_get_no_votes() -> None:
    tied = candidates(("A", 1.0), ("B", 1.0), ("B", None))
    assert borda_votes(tied, power=1.0) == {1: 2.0, 2: 1.0}  # equal scores: the earlier ranks first
    assert borda_vote(tied, [0, 1, 1], power=1.0) == "A"
    # Without any score (the budget ran out first), Borda falls back to majority vote and says so.
    assert aggregate("borda", candidates(("A", None), ("B", None), ("B", None)), [0, 1, 1]) == (
        "B",
        "majority",
    )


# -- the synthetic server and the strategies -------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("api", ["completions", "chat"])
async def test_wrong_traces_are_less_certain_by_the_margin(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], api: str
) -> None:
    """The synthetic server's top 20 leave e^−c outside, c the token's drawn confidence: a
    token's self-certainty is about c (at most −log of the floor on the rest), 3 lower (the
    default margin) on traces heading to a wrong answer."""
    policy = make_policy(fake_server(), api=api)
    problem = PROBLEMS["a3"]
    params = SamplingParams(seed=1, logprobs=20, stop=())
    generation = await policy.generate(Prefix(problem=problem), 40, params)
    right: list[float] = []
    wrong: list[float] = []
    for choice in generation.choices:
        assert choice.certainties is not None and choice.confidences is not None
        assert len(choice.certainties) == choice.tokens
        for certainty, confidence in zip(choice.certainties, choice.confidences, strict=True):
            assert certainty == pytest.approx(min(confidence, -math.log(TAIL_FLOOR)), abs=0.01)
        (right if f"The answer is {problem.answer}." in choice.text else wrong).append(
            trace_certainty(choice.certainties)
        )
    assert right and wrong
    assert 2.5 < statistics.mean(right) - statistics.mean(wrong) < 3.5
    assert max(wrong) < min(right)  # ~30 tokens a trace: the margin separates every trace


def config(strategy: str, **options: Any) -> SearchConfig:
    return SearchConfig(strategy=strategy, sampling=SamplingParams(seed=11), **options)


@pytest.mark.anyio
@pytest.mark.parametrize("strategy", ["self-certainty", "borda"])
async def test_each_trace_scores_its_self_certainty_and_the_rule_picks_by_it(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], strategy: str
) -> None:
    policy = make_policy(fake_server())
    result = await search(PROBLEMS["b5"], policy, config(strategy, n=8))
    assert result.error is None and result.tree is not None and result.usage.requests == 1
    traces = result.tree.children(ROOT)
    assert len(traces) == 8 and len(result.candidates) == 8
    for candidate in result.candidates:
        node = result.tree.node(candidate.node)
        assert candidate.score == trace_certainty(node.certainties or ())
    groups = [0 if c.answer == result.candidates[0].answer else 1 for c in result.candidates]
    if strategy == "self-certainty":
        assert result.aggregated_by == "best"
        assert result.answer == max(result.candidates, key=lambda c: c.score or 0.0).answer
    else:
        assert result.aggregated_by == "borda"
        assert result.answer == borda_vote(result.candidates, groups, power=0.5)


@pytest.mark.anyio
async def test_selection_by_certainty_beats_a_random_pick_and_majority_where_the_gold_is_rarer(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    """Problems whose gold answer has probability 0.4 against one wrong answer's 0.6: majority
    vote of 8 mostly errs, a random trace is right 40% of the time, and the margin lets
    self-certainty pick a right trace whenever one is drawn; Borda (p = 0.5) lies between."""
    policy = make_policy(fake_server())
    chosen = problems("b", 30)
    accuracy: dict[str, float] = {}
    for strategy in ("majority-vote", "self-certainty", "borda"):
        results = await run(chosen, policy, config(strategy, n=8))
        assert all(r.error is None for r in results)
        accuracy[strategy] = statistics.mean(bool(r.correct) for r in results)
        if strategy == "self-certainty":
            random_pick = statistics.mean(
                statistics.mean(c.answer == r.gold for c in r.candidates) for r in results
            )
            # Right whenever any of the 8 traces is.
            assert [r.correct for r in results] == [any(c.answer == r.gold for c in r.candidates)
                                                    for r in results]  # fmt: skip
    assert accuracy["self-certainty"] > random_pick + 0.3
    assert accuracy["self-certainty"] >= accuracy["borda"] >= accuracy["majority-vote"]
    assert accuracy["borda"] > accuracy["majority-vote"]


def answers_without_logprobs(method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    """A server that ignores ``logprobs``: four choices, none with logprobs."""
    choices = [{"index": i, "text": "Step 1: this points to 7.\n\nThe answer is 7.", "finish_reason": "stop"}
               for i in range(4)]  # fmt: skip
    usage = {"prompt_tokens": 20, "completion_tokens": 44, "total_tokens": 64}
    return 200, {"id": "x", "object": "text_completion", "model": "fake", "choices": choices, "usage": usage}


@pytest.mark.anyio
@pytest.mark.parametrize("strategy", ["self-certainty", "borda"])
async def test_a_server_without_logprobs_is_refused_in_one_line(
    make_policy: Callable[..., OpenAIPolicy], strategy: str
) -> None:
    with stub_server(answers_without_logprobs) as url:
        result = await search(PROBLEMS["a1"], make_policy(url), config(strategy, n=4))
    assert result.stopped_by == "error" and result.answer is None
    assert result.error is not None and "logprobs" in result.error and "\n" not in result.error
    assert result.usage.requests == 1


@pytest.mark.anyio
@pytest.mark.parametrize("strategy", ["self-certainty", "borda"])
async def test_a_budget_for_some_traces_is_never_overrun_and_those_that_came_back_are_chosen_from(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], strategy: str
) -> None:
    """A budget for 14 traces' worst case (of 40 tokens; they take about 21) of the 40 asked
    for: the budget stops the sampling, never overspent, and the traces in the tree are scored
    and chosen from."""
    policy = make_policy(fake_server())
    limit = 14 * 40
    chosen = config(strategy, n=40, step=StepFormat(max_tokens=40),
                    budget=BudgetLimits(tokens=limit, count_prompt=False))  # fmt: skip
    result = await search(PROBLEMS["b3"], policy, chosen)
    assert result.stopped_by == "budget" and result.error is None
    assert result.usage.completion_tokens <= limit
    assert result.tree is not None
    traces = result.tree.children(ROOT)
    assert 14 <= len(traces) < 40
    assert all(node.scores == (trace_certainty(node.certainties or ()),) for node in traces)
    assert result.answer is not None and result.candidates
    assert result.aggregated_by == ("best" if strategy == "self-certainty" else "borda")


@pytest.mark.anyio
@pytest.mark.parametrize("api", ["completions", "chat"])
async def test_a_stream_carries_the_same_certainties_as_the_whole_answer(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], api: str
) -> None:
    policy = make_policy(fake_server(), api=api)
    prefix = Prefix(problem=PROBLEMS["a7"])
    params = SamplingParams(seed=4, logprobs=20, stop=())
    (whole,) = (await policy.generate(prefix, 1, params)).choices
    pieces = [piece async for piece in policy.stream(prefix, params)]
    assert whole.certainties is not None and len(whole.certainties) == whole.tokens
    assert tuple(c for piece in pieces for c in piece.certainties) == whole.certainties


@pytest.mark.anyio
async def test_streamed_traces_keep_their_certainties_in_the_tree(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    """Online DeepConf streams all but its warm-up traces: each, cut or finished, keeps a
    certainty for every token it streamed."""
    policy = make_policy(fake_server())
    chosen = config("deepconf", n=12, deepconf_warmup=4, deepconf_stop=None)
    result = await search(PROBLEMS["b4"], policy, chosen)
    assert result.error is None and result.tree is not None
    streamed = result.tree.children(ROOT)[4:]
    assert len(streamed) == 8
    for trace in streamed:
        assert trace.certainties is not None and trace.confidences is not None
        assert len(trace.certainties) == len(trace.confidences) == trace.tokens


# -- logprobs a broken server sends ----------------------------------------------------------


@pytest.mark.parametrize("bad", [math.inf, 1e-3], ids=["+inf", "above 0"])
def test_a_logprob_above_0_counts_as_0_in_both_measures(bad: float) -> None:
    """No probability exceeds 1: a logprob above 0 (+Infinity, which Python's json reads, or
    a rounding) is bounded to 0, as NaN and −inf are to the floor, so neither self-certainty
    nor DeepConf's confidence is ever infinite."""
    assert token_certainty([bad, -3.0], V) == token_certainty([0.0, -3.0], V)
    assert token_confidence([bad, -3.0]) == token_confidence([0.0, -3.0]) == 1.5
    for low in (-math.inf, math.nan, -9999.0):
        assert token_confidence([-0.1, low]) == token_confidence([-0.1, LOGPROB_FLOOR])


def chat_entries(tops: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
    """A chat answer's logprob entries: token i and its top logprobs ``tops[i]`` (none where
    the list is empty)."""
    return [{"token": f"t{i}", "logprob": top[0] if top else -0.5, "bytes": None,
             "top_logprobs": [{"token": f"t{i}.{j}", "logprob": v, "bytes": None} for j, v in enumerate(top)]}
            for i, top in enumerate(tops)]  # fmt: skip


USAGE = {"prompt_tokens": 9, "completion_tokens": 4}



def whole_chat(tops: Sequence[Sequence[float]], answers: Sequence[str] = ("7",)) -> Script:
    """A chat server that answers every request with one choice an answer of ``answers``,
    each token's top logprobs ``tops`` (json writes inf as Infinity and Python reads it)."""
    choices = [{"index": i, "finish_reason": "stop", "logprobs": {"content": chat_entries(tops)},
                "message": {"role": "assistant", "content": f"The answer is {a}."}}
               for i, a in enumerate(answers)]  # fmt: skip
    body = {"id": "x", "object": "chat.completion", "model": "fake", "choices": choices, "usage": USAGE}
    return lambda method, path, headers: (200, body)


def streamed_chat(tops: Sequence[Sequence[float]]) -> Script:
    """The same answer as ``whole_chat``'s first, streamed a token an event."""
    events: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"content": f"t{i}"}, "finish_reason": None,
                      "logprobs": {"content": [entry]}}]}
        for i, entry in enumerate(chat_entries(tops))
    ]  # fmt: skip
    events += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
               {"choices": [], "usage": USAGE}]  # fmt: skip
    body = "".join([*(f"data: {json.dumps(event)}\n\n" for event in events), "data: [DONE]\n\n"]).encode()
    return lambda method, path, headers: (200, body)


@pytest.mark.anyio
async def test_a_token_without_top_logprobs_is_skipped_whole_and_streamed_alike(
    make_policy: Callable[..., OpenAIPolicy],
) -> None:
    """A token listed without top logprobs has no estimate: it counts in neither measure, so
    the trace's self-certainty is the same whole and streamed (not pulled towards 0 whole)."""
    tops = [[-0.1, -3.0], [], [-0.2, -2.5], []]
    params = SamplingParams(logprobs=2)
    prefix = Prefix(problem=PROBLEMS["a1"])
    with stub_server(whole_chat(tops)) as url:
        (whole,) = (await make_policy(url, api="chat").generate(prefix, 1, params)).choices
    with stub_server(streamed_chat(tops)) as url:
        pieces = [piece async for piece in make_policy(url, api="chat").stream(prefix, params)]
    listed = [top for top in tops if top]
    assert whole.tokens == sum(piece.tokens or 0 for piece in pieces) == 4
    assert whole.certainties == tuple(c for piece in pieces for c in piece.certainties)
    assert whole.certainties == tuple(token_certainty(top, V) for top in listed)
    assert whole.confidences == tuple(c for piece in pieces for c in piece.confidences)
    assert whole.confidences == tuple(token_confidence(top) for top in listed)


@pytest.mark.anyio
@pytest.mark.parametrize("strategy", ["self-certainty", "borda", "deepconf"])
async def test_an_infinite_logprob_never_stops_the_problem(
    make_policy: Callable[..., OpenAIPolicy], strategy: str
) -> None:
    """A server's +Infinity logprob scores as a logprob of 0, never as an infinite score the
    tree refuses ("scores must be finite numbers")."""
    tops = [[math.inf, -3.0], [-0.1, -3.0], [-0.1, -3.0], [-0.1, -3.0]]
    with stub_server(whole_chat(tops, ["7", "8"])) as url:
        result = await search(PROBLEMS["a1"], make_policy(url, api="chat"), config(strategy, n=2))
    assert result.error is None and result.answer in ("7", "8")
    scores = [candidate.score for candidate in result.candidates]
    assert scores and all(score is not None and math.isfinite(score) for score in scores)
