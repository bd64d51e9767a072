"""The arithmetic-chain task: add numbers one line per step, with an exact step checker.

A problem is a sum such as "13 + 4 + 6", solved under a few-shot prompt as

    13 + 4 = 17
    17 + 6 = 23
    The answer is 23.

Difficulty grows with the number of terms and their size. ``step_scores`` is an
exact process reward: step i scores 1 when every line up to it is right (the
arithmetic holds, it adds the next term to the previous result), else 0; it
plugs in as a CallableVerifier. Small models get single steps wrong often
enough that step-level search has something to fix.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from treesearch.engine.steps import StepFormat
from treesearch.problems import Problem

FEW_SHOT = (
    "Add the numbers one step at a time.\n\n"
    "Q: 3 + 5 + 2\n3 + 5 = 8\n8 + 2 = 10\nThe answer is 10.\n\n"
    "Q: 12 + 7 + 4\n12 + 7 = 19\n19 + 4 = 23\nThe answer is 23.\n\n"
    "Q: 25 + 16 + 8 + 31\n25 + 16 = 41\n41 + 8 = 49\n49 + 31 = 80\nThe answer is 80.\n\n"
)
# One line a step; a blank line or a new "Q:" ends a solution.
STEP_FORMAT = StepFormat(
    delimiter="\n", end_stops=("\n\n", "Q:"), max_step_tokens=24, max_depth=10, max_tokens=120
)
JUDGE_TEMPLATE = "Q: {question}\n{steps}\nIs the last line correct? Answer Yes or No.\nAnswer:"

_LINE = re.compile(r"^\s*(-?\d+)\s*\+\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
_FINAL = re.compile(r"^\s*The answer is\s*(-?\d+)\s*\.?\s*$")


def make_problems(
    count: int, *, terms: int = 3, low: int = 1, high: int = 20, seed: int = 0, prefix: str = "t"
) -> list[Problem]:
    """``count`` sums of ``terms`` numbers drawn from [low, high], reproducible by ``seed``."""
    rng = random.Random(f"{seed}:{terms}:{low}:{high}")
    problems = []
    for index in range(count):
        numbers = [rng.randint(low, high) for _ in range(terms)]
        question = " + ".join(map(str, numbers))
        problems.append(
            Problem(
                id=f"{prefix}{index}",
                question=question,
                prompt=f"{FEW_SHOT}Q: {question}\n",
                answer=str(sum(numbers)),
                metadata={"terms": terms, "low": low, "high": high},
            )
        )
    return problems


def step_scores(problem: Problem, steps: Sequence[str]) -> list[float]:
    """1.0 for each step while every line so far is right, 0.0 from the first wrong one."""
    terms = [int(t) for t in problem.question.split("+")]
    total, used = terms[0], 1
    scores: list[float] = []
    right = True
    for step in steps:
        if right:
            right = _check(step, terms, total, used)
            if right and used < len(terms):
                total += terms[used]
                used += 1
        scores.append(1.0 if right else 0.0)
    return scores


def _check(step: str, terms: Sequence[int], total: int, used: int) -> bool:
    line = _LINE.match(step)
    if line is not None:
        a, b, c = (int(g) for g in line.groups())
        return used < len(terms) and a == total and b == terms[used] and c == a + b
    final = _FINAL.match(step)
    return final is not None and used == len(terms) and int(final.group(1)) == total
