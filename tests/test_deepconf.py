"""DeepConf: confidence measures by hand, the synthetic server's confidence-bearing logprobs and
streams, and offline and online DeepConf read back from the trees they grew."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from typing import Any

import anyio
import pytest
from conftest import PROBLEMS, server_stats
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs
from stub_server import stub_server

from treesearch import BudgetLimits, Prefix, SamplingParams, SearchConfig, StepFormat, search
from treesearch.answers.confidence import WindowGuard, group_confidences, percentile, trace_score
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.engine.policy import Piece
from treesearch.engine.tree import ROOT
from treesearch.errors import ConfigError

pytestmark = pytest.mark.anyio


def config(**options: object) -> SearchConfig:
    return SearchConfig(strategy="deepconf", sampling=SamplingParams(seed=3), **options)  # type: ignore[arg-type]


def first_cut(confidences: Sequence[float], window: int, threshold: float) -> int | None:
    """The token count at which a trace streamed a token a piece is cut, worked out the
    plain way (each window summed anew, not ``WindowGuard``'s running sum): the first
    window whose mean is under ``threshold``; a trace shorter than the window is one
    window, judged at its end (None: never cut)."""
    for end in range(window, len(confidences) + 1):
        if sum(confidences[end - window : end]) / window < threshold:
            return end
    if confidences and len(confidences) < window and sum(confidences) / len(confidences) < threshold:
        return len(confidences)
    return None


def test_confidence_measures_by_hand() -> None:
    tokens = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert group_confidences(tokens, 2) == [1.5, 2.5, 3.5, 4.5]
    assert group_confidences([2.0, 4.0], 4) == [3.0]  # shorter than the window: one group
    assert trace_score(tokens, 2, "lowest") == 1.5
    assert trace_score(tokens, 2, "tail") == 4.5
    assert trace_score(tokens, 2, "mean") == 3.0
    assert trace_score(tokens, 2, "bottom10") == 1.5  # the lowest of four groups
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert first_cut([5.0, 5.0, 1.0, 1.0, 5.0], 2, 3.5) == 3  # (5 + 1) / 2 < 3.5 at the third
    assert first_cut([5.0, 1.0, 3.0], 3, 3.5) == 3  # 9 / 3
    assert first_cut([1.0, 1.0], 3, 3.5) == 2  # shorter than the window: judged whole at its end
    assert first_cut([4.0, 3.5], 3, 3.5) is None
    assert first_cut([5.0, 5.0, 4.0], 2, 3.5) is None


def test_the_guard_judges_every_window_of_a_piece_and_a_short_trace_at_its_end() -> None:
    many = WindowGuard(2, 3.5)
    assert many([5.0, 5.0]) and not many([1.0, 5.0, 5.0])  # (5 + 1) / 2 inside the piece
    short = WindowGuard(4, 3.5)
    assert short([1.0, 2.0]) and short([3.0]) and not short([], done=True)  # the mean of all 3
    assert WindowGuard(4, 3.5)([], done=True)  # nothing streamed: nothing to judge


@given(
    confidences=st.lists(st.integers(0, 8).map(float), max_size=40),
    cuts=st.lists(st.integers(1, 6), min_size=1, max_size=40),
    window=st.integers(1, 8),
)
def test_the_guard_cuts_where_each_window_summed_anew_would(
    confidences: list[float], cuts: list[int], window: int
) -> None:
    """Fed in pieces of any sizes, the running sum stops in the piece holding the first
    window under the threshold (or at the end of a short trace), as the plain sum does."""
    threshold = 3.5  # between integers: no mean ties it
    guard, fed, stopped = WindowGuard(window, threshold), 0, None
    for size in itertools.cycle(cuts):
        piece = confidences[fed : fed + size]
        fed += len(piece)
        done = fed == len(confidences)
        if not guard(piece, done=done):
            stopped = fed
            break
        if done:
            break
    expected = first_cut(confidences, window, threshold)
    if expected is None:
        assert stopped is None
    else:
        assert stopped is not None and stopped - len(piece) < expected <= stopped


@pytest.mark.parametrize("api", ["completions", "chat"])
async def test_wrong_traces_carry_lower_confidence_by_the_margin(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], api: str
) -> None:
    """The synthetic server's top logprobs: each token's −mean(top-20) is its confidence,
    drawn 3 lower (the default margin) on traces heading to a wrong answer."""
    policy = make_policy(fake_server(), api=api)
    problem = PROBLEMS["a3"]
    generation = await policy.generate(Prefix(problem=problem), 40, SamplingParams(seed=1, logprobs=20,
                                                                                    stop=()))  # fmt: skip
    right, wrong = [], []
    for choice in generation.choices:
        assert choice.confidences is not None and len(choice.confidences) == choice.tokens
        (right if f"The answer is {problem.answer}." in choice.text else wrong).append(
            statistics.mean(choice.confidences)
        )
    assert right and wrong
    assert 2.5 < statistics.mean(right) - statistics.mean(wrong) < 3.5


async def test_offline_keeps_the_confident_share_and_weights_the_vote(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    policy = make_policy(fake_server())
    result = await search(PROBLEMS["b2"], policy, config(n=16, deepconf_keep=0.5))
    assert result.tree is not None and result.error is None
    traces = result.tree.children(ROOT)
    assert len(traces) == 16 and result.usage.requests == 1
    window = max(4, round(statistics.median(len(t.confidences or ()) for t in traces) / 8))
    scores = {t.id: trace_score(t.confidences or (), window) for t in traces}
    threshold = percentile(list(scores.values()), 0.5)
    kept = sorted(t.id for t in traces if scores[t.id] >= threshold and t.answer is not None)
    assert sorted(c.node for c in result.candidates) == kept
    weights: dict[str, float] = {}
    for node in kept:
        answer = result.tree.node(node).answer or ""
        weights[answer] = weights.get(answer, 0.0) + scores[node]
    assert result.answer == max(weights, key=lambda answer: weights[answer])
    assert result.correct  # b: the right answer is the rarer one (0.4), but the more confident


class Regrouped(OpenAIPolicy):
    """The synthetic server's stream (a token an event, then the finish reason, then the
    usage) regrouped ``size`` tokens a piece, the finish reason and usage riding on the last
    tokens, as a server sends that streams several tokens an event (vLLM with a stream
    interval, or speculative decoding)."""

    def __init__(self, *args: Any, size: int, **options: Any) -> None:
        super().__init__(*args, **options)
        self.size = size

    async def stream(self, prefix: Prefix, params: SamplingParams) -> AsyncGenerator[Piece, None]:
        held: list[Piece] = []
        async with aclosing(super().stream(prefix, params)) as pieces:
            async for piece in pieces:
                if piece.text and sum(len(p.confidences) for p in held) >= self.size:
                    yield merged(held)
                    held = []
                held.append(piece)
        yield merged(held)


def merged(pieces: list[Piece]) -> Piece:
    usage = next((p for p in pieces if p.completion_tokens is not None), Piece())
    return Piece(
        text="".join(p.text for p in pieces),
        tokens=sum(p.tokens or 0 for p in pieces),
        confidences=tuple(c for p in pieces for c in p.confidences),
        finish_reason=next((p.finish_reason for p in pieces if p.finish_reason), None),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
    )


@pytest.mark.parametrize(
    ("window", "size"),
    [(None, 1), (64, 1), (None, 6)],
    ids=["a-token-a-piece", "traces-shorter-than-the-window", "several-tokens-a-piece"],
)
async def test_online_cuts_each_stream_at_its_first_window_under_the_warmup_threshold(
    fake_server: Callable[..., str], window: int | None, size: int
) -> None:
    """Every window is judged: those ending inside a piece of several tokens, those in the
    piece that carries the finish reason, and a trace shorter than the window as one."""
    url = fake_server("--token-latency", "0.001")
    policy = Regrouped(url, "fake", size=size)
    before = server_stats(url)
    chosen = config(n=24, deepconf_warmup=8, deepconf_keep=0.1, deepconf_stop=None, confidence_window=window)
    try:
        with capture_logs() as events:
            result = await search(PROBLEMS["a5"], policy, chosen)
    finally:
        await policy.aclose()
    after = server_stats(url)
    assert result.tree is not None and result.error is None
    (logged,) = [e for e in events if e["event"] == "deepconf_threshold"]
    assert logged["threshold"] == percentile(logged["warmup"], 0.9)
    traces = result.tree.children(ROOT)
    streamed = traces[8:]
    assert len(streamed) == 16 and result.usage.requests == 1 + 16
    cut = [t for t in streamed if t.finish_reason == "low_confidence"]
    assert cut and len(cut) < 16
    for trace in streamed:
        confidences = trace.confidences or ()
        stop = first_cut(confidences, logged["window"], logged["threshold"])
        if trace in cut:  # in the piece it was closed at
            assert stop is not None and len(confidences) - size < stop <= len(confidences)
        else:
            assert stop is None
        assert trace.tokens == len(confidences)
    # Charged: what streamed, every token counted; the server wrote at least that.
    assert result.usage.completion_tokens == sum(t.tokens for t in traces)
    assert after["completion_tokens"] - before["completion_tokens"] >= result.usage.completion_tokens
    if window is None:  # some streams were closed midway
        assert after["streams_cut"] - before["streams_cut"] >= 1
    # A trace votes when no window of it fell under the threshold, warm-up or streamed.
    warm = {t.id for t in traces[:8] if t.answer and trace_score(t.confidences or (), logged["window"])
            >= logged["threshold"]}  # fmt: skip
    assert {c.node for c in result.candidates} == warm | {t.id for t in streamed if t.answer is not None}


class Gathering(OpenAIPolicy):
    """Holds each stream at its start until ``expected`` streams are open at once: a
    strategy that streams in waves smaller than that never gets them all going."""

    def __init__(self, *args: Any, expected: int, **options: Any) -> None:
        super().__init__(*args, **options)
        self.expected = expected
        self.opened = 0
        self.all_open = anyio.Event()

    async def stream(self, prefix: Prefix, params: SamplingParams) -> AsyncGenerator[Piece, None]:
        self.opened += 1
        if self.opened == self.expected:
            self.all_open.set()
        with anyio.fail_after(20):  # only a guard against a hang: in waves they never all open
            await self.all_open.wait()
        async with aclosing(super().stream(prefix, params)) as pieces:
            async for piece in pieces:
                yield piece


async def test_online_streams_every_trace_after_the_warmup_at_once(fake_server: Callable[..., str]) -> None:
    policy = Gathering(fake_server(), "fake", expected=36)
    try:
        result = await search(PROBLEMS["a4"], policy, config(n=40, deepconf_warmup=4, deepconf_keep=0.9,
                                                             deepconf_stop=None))  # fmt: skip
    finally:
        await policy.aclose()
    assert result.error is None and policy.opened == 36
    assert result.tree is not None and len(result.tree.children(ROOT)) == 40


def answers_without_logprobs(method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    """A server that ignores ``logprobs``: four choices, none with logprobs."""
    choices = [{"index": i, "text": "Step 1: this points to 7.\n\nThe answer is 7.", "finish_reason": "stop"}
               for i in range(4)]  # fmt: skip
    usage = {"prompt_tokens": 20, "completion_tokens": 44, "total_tokens": 64}
    return 200, {"id": "x", "object": "text_completion", "model": "fake", "choices": choices, "usage": usage}


@pytest.mark.parametrize("warmup", [0, 4], ids=["offline", "online"])
async def test_a_server_without_logprobs_is_refused_at_its_first_answer(
    make_policy: Callable[..., OpenAIPolicy], warmup: int
) -> None:
    with stub_server(answers_without_logprobs) as url:
        policy = make_policy(url)
        result = await search(PROBLEMS["a1"], policy, config(n=8 if warmup else 4, deepconf_warmup=warmup))
    assert result.stopped_by == "error" and result.answer is None
    assert result.error is not None and "logprobs" in result.error and "\n" not in result.error
    assert result.usage.requests == 1


async def test_offline_under_a_budget_for_some_traces_votes_with_those_that_finished(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    policy = make_policy(fake_server())
    limit = 14 * 40  # 14 traces' worst case of 40 tokens; they take about 21
    chosen = config(n=40, deepconf_keep=0.5, step=StepFormat(max_tokens=40),
                    budget=BudgetLimits(tokens=limit, count_prompt=False))  # fmt: skip
    with capture_logs() as events:
        result = await search(PROBLEMS["b3"], policy, chosen)
    assert result.stopped_by == "budget" and result.usage.completion_tokens <= limit
    assert result.tree is not None
    traces = result.tree.children(ROOT)
    assert 14 <= len(traces) < 40
    (logged,) = [e for e in events if e["event"] == "deepconf_threshold"]
    kept = {t.id for t in traces if t.answer is not None and t.scores and t.scores[0] >= logged["threshold"]}
    assert kept and {c.node for c in result.candidates} == kept
    assert result.answer is not None


async def test_online_stops_once_one_answer_holds_the_weight(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    """Warm-up traces that all agree settle it: no stream is opened."""
    policy = make_policy(fake_server())
    result = await search(PROBLEMS["sure3"], policy, config(n=32, deepconf_warmup=4))
    assert result.correct and result.usage.requests == 1
    assert result.tree is not None and len(result.tree.children(ROOT)) == 4


async def test_online_needs_a_streaming_transport(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    policy = make_policy(fake_server(), transport="openai")
    result = await search(PROBLEMS["b1"], policy, config(n=12, deepconf_warmup=4, deepconf_keep=0.1,
                                                         deepconf_stop=None))  # fmt: skip
    assert result.stopped_by == "error"
    assert result.error is not None and "aiohttp transport" in result.error


def test_bad_deepconf_options_are_refused() -> None:
    for options in ({"deepconf_warmup": 8, "n": 8}, {"deepconf_keep": 0.0}, {"trace_score": "median"},
                    {"deepconf_stop": 0.4}):  # fmt: skip
        with pytest.raises(ConfigError):
            config(**options)


@pytest.mark.parametrize("api", ["completions", "chat"])
async def test_a_stream_carries_the_same_text_and_confidences_as_the_whole_answer(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], api: str
) -> None:
    policy = make_policy(fake_server(), api=api)
    prefix = Prefix(problem=PROBLEMS["a7"])
    params = SamplingParams(seed=4, logprobs=20, stop=())
    (whole,) = (await policy.generate(prefix, 1, params)).choices
    pieces = [piece async for piece in policy.stream(prefix, params)]
    assert "".join(piece.text for piece in pieces) == whole.text
    assert tuple(c for piece in pieces for c in piece.confidences) == whole.confidences
    assert sum(piece.tokens or 0 for piece in pieces) == whole.tokens
    assert pieces[-1].completion_tokens == whole.tokens  # the usage chunk closes the stream


async def test_online_under_a_tight_budget_stops_within_it(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    """The budget runs out among the streams: the search stops by budget, never past it,
    and every stream that ran is in the tree, charged."""
    policy = make_policy(fake_server("--token-latency", "0.001"))
    limit = 8 * 21 + 6 * 40  # the warm-up, and a few streams' worst cases
    chosen = config(n=40, deepconf_warmup=8, deepconf_keep=0.9, deepconf_stop=None,
                    step=StepFormat(max_tokens=40),
                    budget=BudgetLimits(tokens=limit, count_prompt=False))  # fmt: skip
    result = await search(PROBLEMS["b6"], policy, chosen)
    assert result.stopped_by == "budget"
    assert result.usage.completion_tokens <= limit
    assert result.tree is not None
    assert result.usage.completion_tokens == sum(t.tokens for t in result.tree.children(ROOT))
    assert 8 < len(result.tree.children(ROOT)) < 40
