"""The OpenAI-compatible policy against the synthetic server, through real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import PROBLEMS, server_stats
from stub_server import stub_server

from treesearch import (
    Budget,
    BudgetLimits,
    EndpointError,
    Prefix,
    Problem,
    SamplingParams,
    SearchContext,
    StepFormat,
)
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.retry import RetryPolicy
from treesearch.engine.tree import ROOT, NodeStatus

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(attempts=8, initial_wait_s=0.001, max_wait_s=0.01, jitter_s=0.001)


def context(policy: OpenAIPolicy, problem: Problem, *, seed: int | None = 1) -> SearchContext:
    return SearchContext(
        problem,
        policy,
        Budget(BudgetLimits()),
        sampling=SamplingParams(seed=seed),
        step_format=StepFormat(),
    )


async def test_n_is_one_request(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    url = fake_server()
    policy = make_policy(url, "fake")
    before = server_stats(url)["requests"]
    generation = await policy.generate(Prefix(problem=PROBLEMS["a0"]), 5, SamplingParams(stop=()))
    assert len(generation.choices) == 5
    assert server_stats(url)["requests"] - before == 1
    assert policy.choices_per_request(5) == 5


@pytest.mark.parametrize("transport", ["aiohttp", "openai"])
async def test_ignored_n_is_topped_up_and_remembered(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy], transport: str
) -> None:
    url = fake_server("--ignore-n")
    policy = make_policy(url, "fake", transport=transport)
    ctx = context(policy, PROBLEMS["a1"])
    before = server_stats(url)["requests"]
    first = await ctx.expand(ROOT, 5, whole=True)
    assert len(first) == 5
    assert server_stats(url)["requests"] - before == 5  # one probe with n=5, then four more
    assert policy.choices_per_request(5) == 1
    second = await ctx.expand(ROOT, 3, whole=True)
    assert len(second) == 3
    assert server_stats(url)["requests"] - before == 8
    assert ctx.budget.usage.requests == 8
    # Top-up requests carry distinct seeds, so they are not copies of one sample.
    assert len({node.text for node in first}) > 1


@pytest.mark.parametrize("transport", ["aiohttp", "openai"])
async def test_injected_faults_are_retried(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy], transport: str
) -> None:
    url = fake_server("--error-rate", "0.5", "--error-statuses", "429,500,503", "--retry-after", "0")
    policy = make_policy(url, "fake", retry=FAST_RETRY, transport=transport)
    before = server_stats(url)
    ctx = context(policy, PROBLEMS["sure0"])
    children = await ctx.expand_many({ROOT: 4})
    for _ in range(10):
        children.update(await ctx.expand_many({ROOT: 2}))
    after = server_stats(url)
    assert after["errors"] - before["errors"] > 0
    assert after["ok"] - before["ok"] == 11
    assert all(node.answer == "10" for node in ctx.tree.terminals())


@pytest.mark.parametrize("transport", ["aiohttp", "openai"])
async def test_bad_request_is_a_clear_error_without_retries(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy], transport: str
) -> None:
    url = fake_server("--max-context", "64")
    policy = make_policy(url, "fake", retry=FAST_RETRY, transport=transport)
    before = server_stats(url)["requests"]
    with pytest.raises(EndpointError) as caught:
        await policy.generate(Prefix(problem=PROBLEMS["a0"]), 1, SamplingParams(max_tokens=100))
    assert caught.value.status == 400
    assert url in str(caught.value)
    assert "maximum context length" in str(caught.value)
    assert server_stats(url)["requests"] - before == 1


async def test_unknown_model_is_a_clear_error(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    policy = make_policy(fake_server(), "no-such-model", retry=FAST_RETRY)
    with pytest.raises(EndpointError, match="404"):
        await policy.generate(Prefix(problem=PROBLEMS["a0"]), 1, SamplingParams())


@pytest.mark.parametrize("transport", ["aiohttp", "openai"])
async def test_unreachable_endpoint(make_policy: Callable[..., OpenAIPolicy], transport: str) -> None:
    policy = make_policy("http://127.0.0.1:9/v1", "fake", retry=RetryPolicy(attempts=1), transport=transport)
    with pytest.raises(EndpointError, match="unreachable") as caught:
        await policy.ping()
    assert caught.value.status is None


@pytest.mark.parametrize("transport", ["aiohttp", "openai"])
async def test_a_timeout_says_so(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy], transport: str
) -> None:
    policy = make_policy(fake_server("--latency", "5"), "fake", retry=RetryPolicy(attempts=1),
                         transport=transport, timeout_s=0.2)  # fmt: skip
    with pytest.raises(EndpointError, match=r"no answer within 0\.2 s") as caught:
        await policy.generate(Prefix(problem=PROBLEMS["a0"]), 1, SamplingParams())
    assert caught.value.status is None


@pytest.mark.parametrize("whole", [True, False])
async def test_missing_usage_is_charged_as_an_upper_bound_and_said(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy], whole: bool
) -> None:
    url = fake_server("--no-usage")
    policy = make_policy(url, "fake")
    ctx = context(policy, PROBLEMS["sure1"])
    before = server_stats(url)
    await ctx.expand(ROOT, 2, whole=whole)
    after = server_stats(url)
    usage = ctx.budget.usage
    assert usage.estimated
    # Never less than the server really spent (its own count, kept out of the responses).
    assert usage.completion_tokens >= after["completion_tokens"] - before["completion_tokens"] > 0
    assert usage.prompt_tokens >= after["prompt_tokens"] - before["prompt_tokens"]


@pytest.mark.parametrize("api", ["completions", "chat"])
async def test_step_by_step_continues_the_prefix(
    fake_server: Callable[..., str], api: str, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    url = fake_server()
    policy = make_policy(url, "fake", api=api)  # type: ignore[arg-type]
    ctx = context(policy, PROBLEMS["sure2"])
    before = server_stats(url)
    leaf = await ctx.rollout(ROOT)
    after = server_stats(url)
    steps = ctx.tree.path(leaf.id)
    assert [node.text for node in steps] == [
        "Step 1: this points to 12.",
        "Step 2: this points to 12.",
        "Step 3: this points to 12.",
        "The answer is 12.",
    ]
    assert leaf.status is NodeStatus.ANSWERED and leaf.answer == "12"
    assert after["requests"] - before["requests"] == 4
    usage = ctx.budget.usage
    assert usage.prompt_tokens == after["prompt_tokens"] - before["prompt_tokens"]
    assert usage.completion_tokens == after["completion_tokens"] - before["completion_tokens"]
    assert sum(node.tokens for node in steps) == usage.completion_tokens


async def test_logprobs_give_per_choice_tokens(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    policy = make_policy(fake_server(), "fake")
    generation = await policy.generate(
        Prefix(problem=PROBLEMS["sure3"]), 3, SamplingParams(stop=(), logprobs=1)
    )
    assert sum(choice.tokens or 0 for choice in generation.choices) == generation.completion_tokens
    assert all(choice.logprob is not None and choice.logprob < 0 for choice in generation.choices)


async def test_eos_is_told_from_the_delimiter(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    policy = make_policy(fake_server(), "fake")
    prefix = Prefix(problem=PROBLEMS["sure0"])
    step = await policy.generate(prefix, 1, SamplingParams())
    whole = await policy.generate(prefix, 1, SamplingParams(stop=()))
    assert step.choices[0].finish_reason == "stop"
    assert whole.choices[0].finish_reason == "eos"


async def test_one_short_answer_does_not_cap_n() -> None:
    """A server that once answers fewer choices than n (a hiccup) is not taken to ignore n;
    two short answers in a row that agree are."""
    counts = iter([1, 4, 1, 1])

    def script(method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        choices = [{"index": i, "text": "x", "finish_reason": "stop"} for i in range(next(counts))]
        return 200, {"choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": len(choices)}}

    with stub_server(script) as url:
        policy = OpenAIPolicy(url, "m")
        prefix = Prefix(problem=PROBLEMS["a0"])
        for expected in (4, 4, 4, 1):
            await policy.generate(prefix, 4, SamplingParams())
            assert policy.choices_per_request(4) == expected
        await policy.aclose()
