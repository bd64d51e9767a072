"""The Verifier protocol, the Python-callable verifier, and path-score reductions.

A verifier scores paths step by step: ``score(problem, paths)`` returns one list
of step scores per path (or only the last steps' scores, for verifiers that
judge the newest step), batched in as few requests as it can, with what the
calls cost. ``cost_bound`` is the worst case of that cost, which the context
reserves in the budget before the call. A path's single score is a reduction of
its step scores: the last one (Snell et al.'s choice, the default), the
minimum, the product or the mean.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Protocol, runtime_checkable

from treesearch.errors import ConfigError
from treesearch.problems import Problem

StepScores = list[float]


@dataclass(frozen=True, kw_only=True, slots=True)
class Cost:
    """Tokens and requests: the worst case a call reserves, or what it spent."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class Scored:
    scores: list[StepScores]
    cost: Cost = Cost()
    estimated: bool = False


@runtime_checkable
class Verifier(Protocol):
    def cost_bound(self, problem: Problem, paths: Sequence[Sequence[str]]) -> Cost:
        """The most that ``score`` on these paths can cost."""
        ...

    async def score(self, problem: Problem, paths: Sequence[Sequence[str]]) -> Scored:
        """Scores in [0, 1] for the steps of each path, batched in as few calls as possible."""
        ...


ScoreFunction = Callable[
    [Problem, Sequence[str]], "float | Sequence[float] | Awaitable[float | Sequence[float]]"
]


class CallableVerifier:
    """A verifier from a Python function of (problem, steps) returning a score for the whole
    path or one per step; sync or async. Exact checkers (a unit test, an arithmetic check)
    plug in this way. A sync function runs on the event loop, so it must be quick."""

    def __init__(self, function: ScoreFunction) -> None:
        self._function = function
        # What a run's fingerprint records of it: the function's import path.
        self.name = (
            f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', repr(function))}"
        )

    def cost_bound(self, problem: Problem, paths: Sequence[Sequence[str]]) -> Cost:
        return Cost()

    async def score(self, problem: Problem, paths: Sequence[Sequence[str]]) -> Scored:
        scored: list[StepScores] = []
        for steps in paths:
            value = self._function(problem, steps)
            if inspect.isawaitable(value):
                value = await value
            scored.append([float(value)] if isinstance(value, int | float) else list(value))
        return Scored(scores=scored)


REDUCTIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "last": lambda scores: scores[-1],
    "min": min,
    "prod": math.prod,
    "mean": fmean,
}


def check_reduction(how: str) -> None:
    if how not in REDUCTIONS:
        raise ConfigError(f"unknown score reduction {how!r}; choose from {', '.join(REDUCTIONS)}")


def reduce_scores(scores: Sequence[float], how: str = "last") -> float:
    """One score for a path from its step scores; an unscored path gets 0."""
    check_reduction(how)
    return REDUCTIONS[how](scores) if scores else 0.0
