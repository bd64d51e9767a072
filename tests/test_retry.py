"""The retry policy as a value: what is retried, how long it waits, how many attempts an endpoint makes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import tenacity
from conftest import server_stats

from treesearch.backends.endpoint import Endpoint
from treesearch.backends.http import ConnectFailure, StatusFailure
from treesearch.backends.retry import RetryPolicy, is_retryable, retry_after
from treesearch.errors import EndpointError


@pytest.mark.parametrize(
    ("failure", "retried"),
    [(ConnectFailure("refused"), True), (StatusFailure(429, "", {}), True),
     (StatusFailure(500, "", {}), True), (StatusFailure(503, "", {}), True),
     (StatusFailure(400, "", {}), False), (StatusFailure(404, "", {}), False),
     (ValueError("bug"), False)],
)  # fmt: skip
def test_what_is_retried(failure: BaseException, retried: bool) -> None:
    assert is_retryable(failure) is retried


def test_retry_after_headers() -> None:
    assert retry_after(StatusFailure(429, "", {"Retry-After": "3"})) == 3.0
    assert retry_after(StatusFailure(429, "", {"retry-after-ms": "250"})) == 0.25
    assert retry_after(StatusFailure(503, "", {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})) is None
    assert retry_after(ConnectFailure("x")) is None


async def fail_with(retrying: tenacity.AsyncRetrying, failure: StatusFailure) -> int:
    """Run a call that always fails under ``retrying``; return how many attempts it got."""
    calls = 0
    try:
        async for attempt in retrying:
            with attempt:
                calls += 1
                raise failure
    except StatusFailure:
        return calls
    raise AssertionError("the last failure was not re-raised")


@pytest.mark.anyio
async def test_the_policy_waits_as_told_and_gives_up() -> None:
    policy = RetryPolicy(attempts=3, initial_wait_s=0.001, max_wait_s=0.002, jitter_s=0.0)
    waits: list[float] = []
    retrying = policy.retrying().copy(before_sleep=lambda state: waits.append(state.upcoming_sleep))
    assert await fail_with(retrying, StatusFailure(429, "slow", {"Retry-After": "0.001"})) == 3
    assert waits == [0.001, 0.001]
    assert await fail_with(policy.retrying().copy(), StatusFailure(400, "bad", {})) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "attempts"), [("500", 3), ("404", 1)])
async def test_an_endpoint_makes_the_policys_attempts(
    fake_server: Callable[..., str], fault: str, attempts: int
) -> None:
    """The first attempt goes outside tenacity's loop, and a retried failure enters it as its
    first attempt: the server sees exactly the attempts the policy allows, no more."""
    url = fake_server("--error-rate", "1", "--fault-kinds", fault)
    endpoint = Endpoint(url, retry=RetryPolicy(attempts=3, initial_wait_s=0.001, jitter_s=0.0))
    body = {"model": "fake", "prompt": "Q: 1 + 1?\n", "max_tokens": 4}
    before = server_stats(url)["requests"]
    try:
        with pytest.raises(EndpointError, match=fault):
            await endpoint.post("/completions", body)
    finally:
        await endpoint.aclose()
    assert server_stats(url)["requests"] - before == attempts
