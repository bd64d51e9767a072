"""The budget: reserve/settle arithmetic, and never overrun under 200 concurrent calls."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from conftest import PROBLEMS, server_stats
from hypothesis import given, settings
from hypothesis import strategies as st

from treesearch import (
    Budget,
    BudgetExhausted,
    BudgetLimits,
    ConfigError,
    SamplingParams,
    SearchContext,
    StepFormat,
)
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.context import gather
from treesearch.tree import ROOT


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
    with pytest.raises(BudgetExhausted, match="deadline"):
        await budget.reserve(0, 0)


@pytest.mark.parametrize("field", ["tokens", "requests", "deadline_s"])
@pytest.mark.parametrize("value", [0, -5])
def test_a_zero_or_negative_budget_is_a_config_error(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"budget {field} must be positive"):
        BudgetLimits(**{field: value})


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
