"""``charged``: one call's reservation, settled by the call or closed by how the call failed."""

from __future__ import annotations

import anyio
import pytest

from treesearch.engine.budget import Budget, BudgetLimits, Usage, count_attempt
from treesearch.engine.charge import charged
from treesearch.errors import BudgetExhausted

pytestmark = pytest.mark.anyio

# One call: a 10-token prompt, up to 5 tokens for each of 2 choices.
CALL = (10, 5, 2)


def budget() -> Budget:
    return Budget(BudgetLimits(tokens=100, requests=10))


async def failing(spent: Budget, error: Exception, *, attempts: int, batch: bool = False) -> None:
    """A call that sends ``attempts`` HTTP attempts, then fails with ``error``."""
    async with charged(spent, *CALL, batch=batch):
        for _ in range(attempts):
            count_attempt()
        raise error


async def test_a_call_settles_to_what_it_cost_and_frees_its_reservation() -> None:
    spent = budget()
    async with charged(spent, *CALL) as reservation:
        assert (reservation.choices, reservation.tokens) == (2, 20)
        count_attempt()
        spent.settle(reservation, 10, 7, estimated=False)
    assert spent.usage == Usage(prompt_tokens=10, completion_tokens=7, requests=1)
    async with charged(spent, 0, 83, 1) as last:  # the rest of the limit is free again
        spent.settle(last, 0, 0, estimated=False)


@pytest.mark.parametrize(("attempted", "usage"), [
    (False, Usage()),
    (True, Usage(prompt_tokens=10, completion_tokens=10, requests=1, estimated=True, verifier_tokens=20)),
])  # fmt: skip
async def test_a_cancelled_call_is_charged_its_worst_case_once_an_attempt_was_sent(
    attempted: bool, usage: Usage
) -> None:
    spent = budget()
    with anyio.CancelScope() as scope:
        async with charged(spent, *CALL, verifier=True):
            if attempted:
                count_attempt()
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    assert spent.usage == usage


@pytest.mark.parametrize(("batch", "usage"), [
    (False, Usage(requests=1)),
    (True, Usage(prompt_tokens=10, completion_tokens=10, requests=1, estimated=True)),
])  # fmt: skip
async def test_a_refusal_midway_charges_a_batch_its_worst_case_and_releases_a_single_call(
    batch: bool, usage: Usage
) -> None:
    spent = budget()
    with pytest.raises(BudgetExhausted):
        await failing(spent, BudgetExhausted("a retry was refused"), attempts=1, batch=batch)
    assert spent.usage == usage


async def test_a_failed_call_is_released_with_its_attempts_counted_as_requests() -> None:
    spent = budget()
    with pytest.raises(ConnectionError):
        await failing(spent, ConnectionError("reset"), attempts=2)
    assert spent.usage == Usage(requests=2)


async def test_a_call_that_never_settles_is_an_error_and_gives_its_reservation_back() -> None:
    spent = budget()
    with pytest.raises(RuntimeError, match="without settling"):
        async with charged(spent, *CALL):
            pass
    async with charged(spent, 0, 100, 1) as whole:  # nothing is left reserved
        spent.settle(whole, 0, 0, estimated=False)
