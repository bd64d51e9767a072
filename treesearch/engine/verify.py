"""The Verifier protocol, the Python-callable verifier, and path-score reductions.

A verifier scores paths step by step: ``score(problem, paths)`` returns one list
of step scores per path (or only the last steps' scores, for verifiers that
judge the newest step), batched in as few requests as it can, with what the
calls cost. ``cost_bound`` is the worst case of that cost, which the context
reserves in the budget before the call. A path's single score is a reduction of
its step scores: the last one (Snell et al.'s choice, the default), the
minimum, the product or the mean.

A verifier whose scores are probabilities (a PRM, a yes/no judge read from
logprobs, a filter judge) says so with ``probabilities = True``; the context
then refuses a score outside [0, 1], as it refuses any score that is not a
finite number, naming the verifier (``check_scores``). A verifier without the
attribute promises only finite numbers: a Python checker may score on any scale.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Protocol, runtime_checkable

from treesearch.errors import ConfigError, VerifierError
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
        """Scores for the steps of each path (finite numbers; in [0, 1] when the verifier
        sets ``probabilities = True``), batched in as few calls as possible."""
        ...


ScoreFunction = Callable[
    [Problem, Sequence[str]], "float | Sequence[float] | Awaitable[float | Sequence[float]]"
]


class CallableVerifier:
    """A verifier from a Python function of (problem, steps) returning a score for the whole
    path or one per step; sync or async. Exact checkers (a unit test, an arithmetic check)
    plug in this way. A sync function runs on the event loop, so it must be quick.
    ``probabilities`` promises scores in [0, 1] (a score outside is then an error)."""

    def __init__(self, function: ScoreFunction, *, probabilities: bool = False) -> None:
        self._function = function
        self.probabilities = probabilities
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


def verifier_name(verifier: object) -> str:
    """How errors name a verifier: its own name (a Python function's import path), else its
    kind and model."""
    name = getattr(verifier, "name", None)
    if isinstance(name, str):
        return name
    model = getattr(verifier, "model", None)
    return type(verifier).__name__ + (f" ({model})" if isinstance(model, str) else "")


def check_scores(verifier: object, scores: Sequence[Sequence[float]], *, probabilities: bool = False) -> None:
    """Refuse a score that is not a finite number, or (when the verifier promises
    probabilities, or the caller needs them: ``probabilities``) one outside [0, 1]. A NaN
    would otherwise loop a Beta draw forever, collapse particle weights and reach the output
    rows, which are strict JSON."""
    probabilities = probabilities or getattr(verifier, "probabilities", False) is True
    for values in scores:
        for value in values:
            if not isinstance(value, int | float) or not math.isfinite(value):
                problem = "not a finite number"
            elif probabilities and not 0.0 <= value <= 1.0:
                problem = "not a probability in [0, 1]"
            else:
                continue
            raise VerifierError(f"verifier {verifier_name(verifier)} returned the score {value!r}: {problem}")


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
