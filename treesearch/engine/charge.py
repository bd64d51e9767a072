"""Charging one call to the budget: its worst case reserved before it is sent, what it
really cost settled after, and the reservation closed by how the call failed otherwise.
Every policy and verifier call of a search goes through ``charged``, so the rule is
written once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from treesearch.engine.budget import Budget, Reservation
from treesearch.errors import BudgetExhausted


@asynccontextmanager
async def charged(
    budget: Budget,
    prompt_tokens: int,
    tokens_per_choice: int,
    choices: int = 1,
    *,
    requests: int = 1,
    verifier: bool = False,
    batch: bool = False,
) -> AsyncIterator[Reservation]:
    """Reserve one call's worst case (``Budget.reserve``: it may hold fewer choices than
    asked) and count the HTTP attempts made while the block runs (``Budget.metered``).

    The block settles the reservation once the call's cost is known. A block that fails
    before then closes it by the failure: cancelled, it is abandoned (a server may have
    served an attempt whose answer is lost); refused by the budget midway in a ``batch``
    (a call of several requests, some perhaps served), it is charged its worst case;
    otherwise it is released. ``verifier`` marks a verifier's call in the usage."""
    reservation = await budget.reserve(prompt_tokens, tokens_per_choice, choices, requests)
    try:
        with budget.metered(reservation):
            yield reservation
    except BudgetExhausted:
        if reservation.open and batch:
            budget.settle(
                reservation,
                reservation.prompt_tokens,
                reservation.completion_tokens,
                estimated=True,
                verifier=verifier,
            )
        elif reservation.open:
            budget.release(reservation)
        raise
    except anyio.get_cancelled_exc_class():
        if reservation.open:
            budget.abandon(reservation, verifier=verifier)
        raise
    except BaseException:
        if reservation.open:
            budget.release(reservation)
        raise
    if reservation.open:  # a caller's bug: give the reservation back, so no later call waits on it
        budget.release(reservation)
        raise RuntimeError("a charged call ended without settling its reservation")
