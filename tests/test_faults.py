"""Runs against a server that fails: every problem completes or records a one-line error,
retries are bounded, and a failed request charges nothing, so the tokens charged are the
tokens the server served and the requests charged are the attempts it saw."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import problems, server_stats

from treesearch import SearchConfig, SearchResult, run
from treesearch.backends.fake.faults import FAULT_KINDS
from treesearch.backends.http import MalformedAnswer, StatusFailure
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.retry import RetryPolicy, is_retryable

pytestmark = pytest.mark.anyio

KINDS = ["429", "500", "502", "503", *FAULT_KINDS]
TRANSPORTS = ["aiohttp", "openai"]
# Ten attempts at a 30% fault rate: a request fails for good about once in 170,000.
RETRY = RetryPolicy(attempts=10, initial_wait_s=0.001, max_wait_s=0.01, jitter_s=0.0)
TIMEOUT_S = 1.0  # the client's; a slow fault answers after 3 s


def faulty(rate: str, kinds: str) -> tuple[str, ...]:
    return ("--error-rate", rate, "--fault-kinds", kinds, "--retry-after", "0.001", "--slow-s", "3")


async def run_against(
    url: str, make_policy: Callable[..., OpenAIPolicy], transport: str, config: SearchConfig, count: int
) -> tuple[list[SearchResult], dict[str, int]]:
    """The results of a run, and what the server counted during it."""
    policy = make_policy(url, "fake", timeout_s=TIMEOUT_S, retry=RETRY, transport=transport)
    before = server_stats(url)
    results = await run(problems("a", count), policy, config)
    after = server_stats(url)
    return results, {key: after[key] - before[key] for key in after}


def assert_charged_as_served(results: list[SearchResult], served: dict[str, int]) -> None:
    assert sum(r.usage.prompt_tokens for r in results) == served["prompt_tokens"]
    assert sum(r.usage.completion_tokens for r in results) == served["completion_tokens"]
    assert sum(r.usage.requests for r in results) == served["requests"]
    assert not any(r.usage.estimated for r in results)


def test_an_unusable_200_is_retried_like_a_5xx() -> None:
    assert is_retryable(MalformedAnswer("response is not JSON: '{\"id\": '"))
    assert not is_retryable(StatusFailure(400, "bad", {}))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", KINDS)
async def test_every_problem_completes_through_each_fault(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy], kind: str, transport: str
) -> None:
    url = fake_server(*faulty("0.3", kind))
    results, served = await run_against(url, make_policy, transport, SearchConfig(n=8), 20)
    assert served[f"fault_{kind}"] > 0
    assert [r.error for r in results] == [None] * 20
    assert all(r.stopped_by == "done" and len(r.candidates) == 8 for r in results)
    assert_charged_as_served(results, served)
    if kind != "fewer":  # a retry per fault; fewer choices are made up by further requests
        assert served["requests"] == 20 + served[f"fault_{kind}"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_mixed_faults_step_by_step(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy], transport: str
) -> None:
    url = fake_server(*faulty("0.3", ",".join(KINDS)))
    config = SearchConfig(n=4, whole=False)
    results, served = await run_against(url, make_policy, transport, config, 10)
    assert sum(served[f"fault_{kind}"] > 0 for kind in KINDS) >= 6
    assert [r.error for r in results] == [None] * 10
    assert_charged_as_served(results, served)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_retries_are_bounded_and_a_failure_charges_nothing(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy], transport: str
) -> None:
    url = fake_server(*faulty("1", "500,502,reset,slow,truncated,malformed"))
    policy = make_policy(
        url, "fake", timeout_s=TIMEOUT_S, retry=RetryPolicy(attempts=3, initial_wait_s=0.001, jitter_s=0.0),
        transport=transport,
    )  # fmt: skip
    before = server_stats(url)
    results = await run(problems("a", 6), policy, SearchConfig(n=8))
    after = server_stats(url)
    for result in results:
        assert result.error is not None and "\n" not in result.error
        assert result.error.startswith(f"{url} ")
        assert result.stopped_by == "error" and result.answer is None
        assert result.usage.requests == 3  # the one request of n=8, tried three times
        assert result.usage.total_tokens == 0
    assert after["requests"] - before["requests"] == 3 * 6
    assert after["prompt_tokens"] == before["prompt_tokens"]
    assert after["completion_tokens"] == before["completion_tokens"]
