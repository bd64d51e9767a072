"""What the synthetic model thinks before it answers, for a task that thinks.

A thinking task (``think`` tokens, the task's own or the server's ``--think``) answers
with a trace between ``<think>`` and ``</think>`` and then "The answer is X.":

    <think>
    First guess: \\boxed{1000}.

    Let me check step 2: it looks like 1000.

    Let me check step 3: it looks like 10.
    </think>

    The answer is 10.

The trace is whole paragraphs of about a dozen tokens each, as many as make ``think``
tokens (at least two). Its first guess is a wrong answer, boxed (a boxed answer that the
client must not read: only the reply states the answer); somewhere after it, at a paragraph
drawn evenly, the trace settles on the answer it ends with, drawn from the task's answers.
So a trace cut short answers right less often than a whole one, and more often the more of
it there is: accuracy against a thinking budget rises, then stays flat once the whole trace
fits (s1's shape). Continuations:

- a prompt that ends inside a thinking continues it: after a paragraph, with the rest of a
  trace; after anything else (the client appended "Wait"), with ", let me check again: it
  looks like X." and one more paragraph, a wrong answer X turning right with probability
  ``wait_fix``; then it ends the thinking and answers;
- a prompt whose thinking was ended by the client (the end tag and an answer cue) is
  answered at once with the trace's last claim (its wrong first guess when it made none).

Chat answers carry the thinking apart, in ``reasoning_content`` (or ``reasoning``, by
``--reasoning-field``), the reply in ``content``; completions carry the tags in the text;
``usage.completion_tokens_details.reasoning_tokens`` counts the thinking's tokens.
"""

from __future__ import annotations

import argparse
import random
import re
from dataclasses import dataclass

from treesearch.engine.thinking import ThinkTags
from treesearch.errors import ConfigError

from .tasks import _FINISHED, _JUDGE, _YES_NO, FakeTask, _another, count_tokens

TAGS = ThinkTags()
REASONING_FIELDS = ("reasoning_content", "reasoning")
_THOUGHT = re.compile(r"(?:First guess: \\boxed\{|it looks like )([^\s{}]+?)\}?\.")
_PARAGRAPH_END = re.compile(r"it looks like \S+\.\s*$|First guess: \\boxed\{\S+\}\.\s*$")
_AFTER_WAIT = 2  # paragraphs a nudged thinking adds before it ends


@dataclass(frozen=True, kw_only=True, slots=True)
class ThinkingModel:
    """The server's thinking defaults: ``think`` tokens for tasks that set none (0: they
    do not think), ``wait_fix`` likewise, and the chat field the thinking goes in."""

    think: int = 0
    wait_fix: float = 0.0
    field: str = "reasoning_content"

    def __post_init__(self) -> None:
        if self.think < 0:
            raise ConfigError(f"--think must be at least 0, got {self.think}")
        if not 0.0 <= self.wait_fix <= 1.0:
            raise ConfigError(f"--wait-fix must be in [0, 1], got {self.wait_fix}")
        if self.field not in REASONING_FIELDS:
            raise ConfigError(f"--reasoning-field must be one of {', '.join(REASONING_FIELDS)}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ThinkingModel:
        return cls(think=args.think, wait_fix=args.wait_fix, field=args.reasoning_field)

    def of(self, task: FakeTask) -> tuple[int, float]:
        """The thinking tokens and the fix after "Wait" of ``task``: its own, else these."""
        return (
            self.think if task.think is None else task.think,
            self.wait_fix if task.wait_fix is None else task.wait_fix,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """serve-fake's flags for the model above."""
    parser.add_argument("--think", type=int, default=0, metavar="TOKENS",
                        help="tokens of thinking before each answer, for tasks that set none "
                        "(default 0: no thinking)")  # fmt: skip
    parser.add_argument("--wait-fix", type=float, default=0.0,
                        help="how often a thinking continued after 'Wait' turns a wrong answer "
                        "right, for tasks that set none (default 0)")  # fmt: skip
    parser.add_argument("--reasoning-field", choices=REASONING_FIELDS, default="reasoning_content",
                        help="the chat message field the thinking goes in (default "
                        "reasoning_content)")  # fmt: skip


def thinking_reply(
    task: FakeTask, context: str, rng: random.Random, greedy: bool, model: ThinkingModel
) -> str | None:
    """The raw reply (tags included) of a thinking task to a request for a solution, or None
    when the task does not think or ``context`` asks a question (a judge's, a yes/no)."""
    think, wait_fix = model.of(task)
    if not think or _JUDGE.search(context) or _YES_NO.search(context) or _FINISHED.search(context):
        return None
    wrong = _wrong(task, rng)
    if TAGS.opened_in(context):
        thought = context[context.rfind(TAGS.open) + len(TAGS.open) :]
        claims = _THOUGHT.findall(thought)
        current = claims[-1] if claims else wrong
        if _PARAGRAPH_END.search(thought) or not thought.strip():
            paragraphs = _plan(task, think, wrong, rng, greedy)[len(claims) :]
        else:  # nudged on ("Wait"): think a little more, perhaps fixing a wrong answer
            if current != task.gold and task.gold is not None and _draw(rng, greedy, wait_fix):
                current = task.gold
            again = f", let me check again: it looks like {current}."
            paragraphs = [again, *(_check(len(claims) + 2 + k, current) for k in range(_AFTER_WAIT - 1))]
        current = _THOUGHT.findall(paragraphs[-1])[-1] if paragraphs else current
        return "\n\n".join(paragraphs) + f"\n{TAGS.close}\n\nThe answer is {current}."
    if TAGS.close in context:  # the client ended the thinking and asks for the answer
        claims = _THOUGHT.findall(context[: context.rfind(TAGS.close)])
        return f"The answer is {claims[-1] if claims else wrong}."
    plan = _plan(task, think, wrong, rng, greedy)
    final = _THOUGHT.findall(plan[-1])[-1]
    return f"{TAGS.open}\n" + "\n\n".join(plan) + f"\n{TAGS.close}\n\nThe answer is {final}."


def _plan(task: FakeTask, think: int, wrong: str, rng: random.Random, greedy: bool) -> list[str]:
    """A whole trace's paragraphs: the wrong first guess, then checks that settle on the
    final answer at a paragraph drawn evenly, until ``think`` tokens (two paragraphs at
    least)."""
    answers, weights = list(task.answers), list(task.answers.values())
    final = max(answers, key=task.answers.__getitem__) if greedy else rng.choices(answers, weights)[0]
    paragraphs = [f"First guess: \\boxed{{{wrong}}}."]
    tokens = count_tokens(paragraphs[0])
    while tokens < think or len(paragraphs) < 2:
        paragraphs.append(_check(len(paragraphs) + 1, wrong))
        tokens += count_tokens(paragraphs[-1])
    settle = len(paragraphs) // 2 if greedy else rng.randrange(1, len(paragraphs))
    return paragraphs[:settle] + [_check(k + 1, final) for k in range(settle, len(paragraphs))]


def _check(number: int, claim: str) -> str:
    return f"Let me check step {number}: it looks like {claim}."


def _wrong(task: FakeTask, rng: random.Random) -> str:
    """The first guess: one of the task's wrong answers (a made-up one when it lists none)."""
    known = task.gold or max(task.answers, key=task.answers.__getitem__)
    others = sorted(a for a in task.answers if a != known) or [_another(known)]
    return others[0] if len(others) == 1 else rng.choice(others)


def _draw(rng: random.Random, greedy: bool, probability: float) -> bool:
    return probability >= 0.5 if greedy else rng.random() < probability
