"""The strategy registry: a name maps to a search routine and its default aggregator.

A routine is ``async (SearchContext, SearchConfig) -> None``: it grows the tree;
the engine aggregates what it finished. Names are the command line's
``--strategy`` values.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from treesearch.config import SearchConfig
from treesearch.context import SearchContext
from treesearch.errors import ConfigError
from treesearch.strategies.sampling import sample

Routine = Callable[[SearchContext, SearchConfig], Awaitable[None]]


@dataclass(frozen=True, kw_only=True, slots=True)
class Strategy:
    run: Routine
    aggregator: str
    needs_verifier: bool = False


STRATEGIES: dict[str, Strategy] = {
    "majority-vote": Strategy(run=sample, aggregator="majority"),
    "best-of-n": Strategy(run=sample, aggregator="best", needs_verifier=True),
}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
