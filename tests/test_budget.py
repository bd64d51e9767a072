"""The budget: reserve/settle arithmetic, and never overrun under 200 concurrent calls."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from conftest import PROBLEMS, server_stats
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from treesearch import (
    Budget,
    BudgetExhausted,
    BudgetLimits,
    ConfigError,
    Problem,
    SamplingParams,
    SearchConfig,
    SearchContext,
    StepFormat,
    run,
    search,
)
from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.retry import RetryPolicy
from treesearch.engine.budget import ModelSizes, Usage, count_attempt
from treesearch.engine.taskgroups import gather
from treesearch.engine.tree import ROOT
from treesearch.errors import DeadlinePassed


@pytest.mark.anyio
async def test_a_reservation_takes_what_fits_and_refuses_when_nothing_is_in_flight() -> None:
    budget = Budget(BudgetLimits(tokens=100))
    held = await budget.reserve(30, 25, choices=4)
    assert held.choices == 2  # 30 + 2 x 25 fits, a third choice would not
    budget.settle(held, prompt_tokens=20, completion_tokens=10, estimated=False)
    assert budget.charged_tokens == 30
    exact = await budget.reserve(10, 60)  # 30 charged + 70 reserved = 100: fits exactly
    assert exact.choices == 1
    budget.settle(exact, prompt_tokens=10, completion_tokens=60, estimated=False)
    with pytest.raises(BudgetExhausted, match="0 of 100 tokens left"):
        await budget.reserve(0, 1)
    free = await budget.reserve(0, 0)  # a call that counts no tokens still fits a spent budget
    assert free.choices == 1


@pytest.mark.anyio
async def test_a_call_that_does_not_fit_waits_for_calls_in_flight() -> None:
    budget = Budget(BudgetLimits(tokens=100))
    first = await budget.reserve(0, 80)
    order: list[str] = []

    async def second() -> None:
        held = await budget.reserve(0, 80)  # fits only once the first gives back its excess
        order.append(f"second got {held.choices}")

    async with anyio.create_task_group() as group:
        group.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        order.append("first settles")
        budget.settle(first, prompt_tokens=0, completion_tokens=5, estimated=False)
    assert order == ["first settles", "second got 1"]


@pytest.mark.anyio
async def test_completion_only_counting_ignores_prompts() -> None:
    budget = Budget(BudgetLimits(tokens=10, count_prompt=False))
    held = await budget.reserve(1000, 10)
    budget.settle(held, prompt_tokens=900, completion_tokens=4, estimated=False)
    assert budget.charged_tokens == 4
    assert budget.usage.prompt_tokens == 900
    assert budget.usage.total_tokens == 904


@pytest.mark.anyio
async def test_request_limit_and_release() -> None:
    budget = Budget(BudgetLimits(requests=2))
    first, second = await budget.reserve(1, 1), await budget.reserve(1, 1)
    budget.release(second)
    budget.settle(first, prompt_tokens=1, completion_tokens=1, estimated=True)
    assert budget.usage.requests == 1
    assert budget.usage.estimated
    last = await budget.reserve(1, 1)
    budget.settle(last, prompt_tokens=1, completion_tokens=1, estimated=False)
    with pytest.raises(BudgetExhausted, match="request limit 2"):
        await budget.reserve(1, 1)
    with pytest.raises(RuntimeError, match="twice"):
        budget.release(second)


@pytest.mark.anyio
async def test_a_passed_deadline_refuses_everything() -> None:
    budget = Budget(BudgetLimits(deadline_s=1e-9))
    with pytest.raises(DeadlinePassed):
        await budget.reserve(0, 0)


@pytest.mark.anyio
async def test_the_deadline_ends_a_wait_for_budget() -> None:
    budget = Budget(BudgetLimits(tokens=100, deadline_s=0.05))
    await budget.reserve(0, 80)  # in flight and never settled: only the deadline ends the wait
    with anyio.fail_after(30), pytest.raises(DeadlinePassed):
        await budget.reserve(0, 80)


@pytest.mark.anyio
async def test_retries_are_requests_taken_from_the_budget() -> None:
    budget = Budget(BudgetLimits(requests=3))
    held = await budget.reserve(1, 1)
    with budget.metered(held):
        count_attempt()  # the first attempt is the reserved request
        count_attempt()  # a retry takes a second
        count_attempt()  # and a third
        with pytest.raises(BudgetExhausted, match="request limit 3 reached while retrying"):
            count_attempt()
    count_attempt()  # outside a metered call nothing is counted
    budget.settle(held, prompt_tokens=1, completion_tokens=1, estimated=False)
    assert budget.usage.requests == 3  # every attempt a server saw; the refused one was not sent
    with pytest.raises(BudgetExhausted):
        await budget.reserve(1, 1)


@pytest.mark.anyio
async def test_after_a_server_overspent_no_retry_is_sent() -> None:
    budget = Budget(BudgetLimits(tokens=1000))
    first, second = await budget.reserve(10, 10), await budget.reserve(10, 10)
    budget.settle(first, prompt_tokens=10, completion_tokens=50, estimated=False)  # asked for 10
    with budget.metered(second), pytest.raises(BudgetExhausted, match="spent more than it was asked"):
        count_attempt()
    budget.release(second)
    with pytest.raises(BudgetExhausted, match="spent more than it was asked"):
        await budget.reserve(10, 10)


@pytest.mark.anyio
async def test_failed_attempts_count_though_the_call_failed() -> None:
    budget = Budget(BudgetLimits(requests=5))
    held = await budget.reserve(1, 1)
    with budget.metered(held):
        count_attempt()
        count_attempt()
    budget.release(held)
    assert budget.usage.requests == 2 and budget.usage.total_tokens == 0


@pytest.mark.anyio
@pytest.mark.parametrize("misbehaviour", [["--ignore-max-tokens"], ["--extra-choices", "2"]])
async def test_a_server_that_overspends_is_charged_once_and_ends_the_search(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy], misbehaviour: list[str]
) -> None:
    url = fake_server(*misbehaviour)
    config = SearchConfig(
        n=4,
        whole=False,
        sampling=SamplingParams(seed=4),
        step=StepFormat(max_step_tokens=4),
        budget=BudgetLimits(tokens=2000),
    )
    before = server_stats(url)
    with capture_logs() as events:
        result = await search(PROBLEMS["sure9"], make_policy(url), config)
    after = server_stats(url)
    assert [e["event"] for e in events].count("server_overran") == 1
    assert result.stopped_by == "budget"
    assert result.usage.requests == 1 == after["ok"] - before["ok"]  # nothing after the overspent response
    served = {key: after[key] - before[key] for key in ("prompt_tokens", "completion_tokens")}
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == tuple(served.values())
    assert result.tree is not None
    assert len(result.tree.children(ROOT)) == 4  # the choices asked for, no more


@pytest.mark.anyio
async def test_budget_requests_count_http_attempts(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    url = fake_server("--error-rate", "0.5", "--error-statuses", "503")
    policy = make_policy(url, retry=RetryPolicy(initial_wait_s=0.001, jitter_s=0.0, attempts=20))
    config = SearchConfig(n=3, whole=False, sampling=SamplingParams(seed=4), budget=BudgetLimits(requests=12))
    before = server_stats(url)
    result = await search(PROBLEMS["sure3"], policy, config)
    after = server_stats(url)
    assert after["errors"] > before["errors"]  # some attempts failed and were retried
    assert result.usage.requests == after["requests"] - before["requests"] <= 12
    assert result.stopped_by == "budget"


@pytest.mark.anyio
async def test_a_request_the_deadline_cuts_in_flight_is_charged_its_worst_case(
    make_policy: Callable[..., OpenAIPolicy], tmp_path: Path
) -> None:
    """Its answer (and the usage in it) is lost, but the server may have served it: charged
    its reservation, the tokens charged are never fewer than the tokens served."""
    records = [*make_problems(1, prefix="quick"), *make_problems(1, prefix="stuck", latency_s=60.0)]
    config = SearchConfig(
        n=4,
        step=StepFormat(max_tokens=50),
        budget=BudgetLimits(deadline_s=2.0),
        sampling=SamplingParams(seed=1),
    )
    with spawn([], records, tmp_path) as url:
        results = await run([Problem.from_record(r) for r in records], make_policy(url), config)
        served = server_stats(url)
    quick, stuck = results
    assert (quick.stopped_by, stuck.stopped_by) == ("done", "deadline")
    # The quick problem's request was served and charged what the server reported.
    assert (quick.usage.prompt_tokens, quick.usage.completion_tokens) == (
        served["prompt_tokens"],
        served["completion_tokens"],
    )
    # The stuck one was sent (the server saw two requests) and cut: charged its worst case.
    assert served["requests"] == 2 and stuck.usage.requests == 1
    assert stuck.usage.completion_tokens == 4 * 50
    assert stuck.usage.prompt_tokens > 0 and stuck.usage.estimated


@pytest.mark.anyio
async def test_a_call_cancelled_before_it_was_sent_costs_nothing() -> None:
    budget = Budget(BudgetLimits(tokens=1000))
    waiting, sent = await budget.reserve(10, 20, choices=2), await budget.reserve(10, 20, choices=2)
    with budget.metered(sent):
        count_attempt()
    budget.abandon(waiting)
    budget.abandon(sent)
    assert (budget.usage.prompt_tokens, budget.usage.completion_tokens, budget.usage.requests) == (10, 40, 1)
    assert budget.usage.estimated and budget.charged_tokens == 50


@pytest.mark.parametrize("field", ["tokens", "requests", "deadline_s"])
@pytest.mark.parametrize("value", [0, -5])
def test_a_zero_or_negative_budget_is_a_config_error(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"budget {field} must be positive"):
        BudgetLimits(**{field: value})


@pytest.mark.parametrize("size", [0.0, -1e9, math.inf, math.nan])
def test_model_sizes_are_positive_finite_numbers(size: float) -> None:
    with pytest.raises(ConfigError, match=f"model parameters must be positive finite numbers, got {size}"):
        ModelSizes(policy=1e9, verifier=size)


@pytest.mark.anyio
async def test_flops_follow_two_n_d() -> None:
    budget = Budget(BudgetLimits())
    held = await budget.reserve(10, 10)
    budget.settle(held, prompt_tokens=10, completion_tokens=5, estimated=False)
    assert budget.usage.flops(1e9) == 2 * 1e9 * 15


@settings(max_examples=20, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=6000),
    concurrency=st.integers(min_value=1, max_value=256),
    n=st.integers(min_value=1, max_value=4),
    max_tokens=st.integers(min_value=1, max_value=48),
    count_prompt=st.booleans(),
)
def test_never_overrun_under_200_concurrent_calls(
    fake_server: Callable[..., str],
    limit: int,
    concurrency: int,
    n: int,
    max_tokens: int,
    count_prompt: bool,
) -> None:
    url = fake_server("--latency", "0.001")

    async def scenario() -> tuple[Budget, dict[str, int]]:
        policy = OpenAIPolicy(url, "fake", concurrency=concurrency)
        budget = Budget(BudgetLimits(tokens=limit, count_prompt=count_prompt))
        ctx = SearchContext(
            PROBLEMS["a3"],
            policy,
            budget,
            sampling=SamplingParams(seed=0),
            step_format=StepFormat(max_tokens=max_tokens),
        )
        before = server_stats(url)
        try:
            await gather([lambda: ctx.expand(ROOT, n, whole=True) for _ in range(200)])
        except BudgetExhausted:
            pass
        finally:
            await policy.aclose()
        after = server_stats(url)
        return budget, {key: after[key] - before[key] for key in after}

    budget, served = anyio.run(scenario)
    assert budget.charged_tokens <= limit
    # What was charged is what the server really served, no more and no less.
    assert budget.usage.requests == served["ok"]
    assert budget.usage.prompt_tokens == served["prompt_tokens"]
    assert budget.usage.completion_tokens == served["completion_tokens"]
    charged = served["completion_tokens"] + (served["prompt_tokens"] if count_prompt else 0)
    assert budget.charged_tokens == charged


@given(
    st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**6), st.booleans(), st.integers(0, 10**9)
)
def test_a_usage_reads_back_as_it_was_written(
    prompt: int, completion: int, requests: int, estimated: bool, verifier: int
) -> None:
    """One place writes a row's usage and one reads it: label's summary once dropped
    verifier_tokens on the way back."""
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, requests=requests,
                  estimated=estimated, verifier_tokens=verifier)  # fmt: skip
    assert Usage.from_record(json.loads(json.dumps(usage.to_record()))) == usage
    assert Usage.from_record(None) == Usage()
