"""Task-group helpers: run calls concurrently and report one failure as itself.

A strategy's concurrent calls share one rule: a budget refusal is not a crash (the calls
in flight finish, their steps stay in the tree), any other failure cancels the rest, and
the caller sees the failure itself, never an exception group."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

from treesearch.errors import BudgetExhausted

T = TypeVar("T")


async def gather(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run calls concurrently in one task group and return their results in order.

    A budget refusal lets the calls already in flight finish (their steps are in the
    tree) and is raised after them; any other failure cancels the rest. Either way the
    error surfaces as itself, not as an exception group.
    """
    if len(calls) == 1:
        return [await calls[0]()]
    results: list[T | None] = [None] * len(calls)
    refused: list[BudgetExhausted] = []

    async def run(index: int, call: Callable[[], Awaitable[T]]) -> None:
        try:
            results[index] = await call()
        except BudgetExhausted as exc:
            refused.append(exc)

    try:
        async with anyio.create_task_group() as group:
            for index, call in enumerate(calls):
                group.start_soon(run, index, call)
    except BaseExceptionGroup as failure:
        raise most_telling(failure) from None
    if refused:
        raise refused[0]
    return results  # type: ignore[return-value]


def most_telling(failure: BaseException) -> BaseException:
    """The leaf of a (nested) exception group to report: anything before BudgetExhausted."""
    if not isinstance(failure, BaseExceptionGroup):
        return failure
    leaves = [most_telling(inner) for inner in failure.exceptions]
    return next((leaf for leaf in leaves if not isinstance(leaf, BudgetExhausted)), leaves[0])
