"""What the synthetic model says to a generative selection's or an aggregation's prompt.

A prompt that numbers solutions ("Solution 0:" lines, or "---- Solution 0 ----") and asks
for a closing "Judgment: IDX" line is a selection (``treesearch.strategies.genselect``); one
that asks to "Aggregate them" is an aggregation (``treesearch.strategies.rsa``). Each shown
solution's answer is its last claim. The model (``SelectionModel``):

- a selection names a right solution with probability ``select_accuracy`` when one is
  shown, else a shown solution drawn evenly (right or wrong); with probability
  ``select_unparsable`` it names none at all;
- an aggregation answers right with probability ``aggregate_accuracy`` when a right
  solution is shown, ``aggregate_fix`` when none is; otherwise it repeats a wrong answer
  drawn evenly from those shown (from the task's wrong answers when none is shown), as a
  whole solution of the task's length.

Greedy decoding takes the likelier outcome of each draw.
"""

from __future__ import annotations

import argparse
import random
import re
from dataclasses import dataclass

from treesearch.errors import ConfigError

from .tasks import _CLAIM, FakeTask, _another

_HEADER = re.compile(r"^(?:Solution (\d+):|---- Solution (\d+) ----)$", re.MULTILINE)
_SELECT = re.compile(r"Judgment: IDX")
_AGGREGATE = re.compile(r"Aggregate them")


@dataclass(frozen=True, kw_only=True, slots=True)
class SelectionModel:
    select_accuracy: float = 0.7
    select_unparsable: float = 0.0
    aggregate_accuracy: float = 0.6
    aggregate_fix: float = 0.05

    def __post_init__(self) -> None:
        for name in ("select_accuracy", "select_unparsable", "aggregate_accuracy", "aggregate_fix"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SelectionModel:
        return cls(
            select_accuracy=args.select_accuracy,
            select_unparsable=args.select_unparsable,
            aggregate_accuracy=args.aggregate_accuracy,
            aggregate_fix=args.aggregate_fix,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """serve-fake's flags for the model above."""
    model = SelectionModel()
    parser.add_argument("--select-accuracy", type=float, default=model.select_accuracy,
                        help="how often a generative selection names a right solution when one is shown "
                        f"(default {model.select_accuracy})")  # fmt: skip
    parser.add_argument("--select-unparsable", type=float, default=model.select_unparsable,
                        help="share of selections that name no solution (default 0)")  # fmt: skip
    parser.add_argument("--aggregate-accuracy", type=float, default=model.aggregate_accuracy,
                        help="how often an aggregation answers right when a right solution is shown "
                        f"(default {model.aggregate_accuracy})")  # fmt: skip
    parser.add_argument("--aggregate-fix", type=float, default=model.aggregate_fix,
                        help="how often an aggregation answers right when no right solution is shown "
                        f"(default {model.aggregate_fix})")  # fmt: skip


def selection_reply(
    task: FakeTask, context: str, rng: random.Random, greedy: bool, model: SelectionModel
) -> str | None:
    """The reply to a selection or aggregation prompt, or None for any other context."""
    selecting = _SELECT.search(context) is not None
    if not selecting and _AGGREGATE.search(context) is None:
        return None
    claims = _shown_claims(context)
    right = [index for index, claim in enumerate(claims) if claim is not None and claim == task.gold]
    if selecting:
        if not claims or _draw(rng, greedy, model.select_unparsable):
            return "These solutions are hard to tell apart."
        if right and _draw(rng, greedy, model.select_accuracy):
            choice = rng.choice(right) if not greedy else right[0]
        else:
            choice = rng.randrange(len(claims)) if not greedy else 0
        return f"Solution {choice} holds up best.\n\nJudgment: {choice}"
    accuracy = model.aggregate_accuracy if right else model.aggregate_fix
    if task.gold is not None and _draw(rng, greedy, accuracy):
        answer = task.gold
    else:
        wrong = [claim for claim in claims if claim is not None and claim != task.gold]
        wrong = wrong or [a for a in task.answers if a != task.gold] or [_another(task.gold or "0")]
        answer = rng.choice(wrong) if not greedy else wrong[0]
    steps = [f"Step {number}: this points to {answer}." for number in range(1, task.steps)]
    return "\n\n".join([*steps, f"The answer is {answer}."])


def _shown_claims(context: str) -> list[str | None]:
    """Each shown solution's last claim (None: it claims nothing), in the order shown."""
    parts = _HEADER.split(context)
    # split() gives the text before the first header, then (number, number, text) per header.
    texts = parts[3::3]
    return [(_CLAIM.findall(text) or [None])[-1] for text in texts]


def _draw(rng: random.Random, greedy: bool, probability: float) -> bool:
    return probability >= 0.5 if greedy else rng.random() < probability
