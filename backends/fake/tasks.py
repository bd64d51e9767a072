"""The synthetic tasks and what the synthetic model says about them, with no HTTP in sight.

Each problem has a known behaviour (``FakeTask``): how many steps its solutions take, the
probability of each final answer, an optional per-step error rate (a step that switches the
path to a wrong answer) and a latency. A solution looks like

    Step 1: this points to 42.

    Step 2: this points to 42.

    The answer is 42.

and ``reply`` continues any prefix of one, revises an earlier attempt, answers a judge's
filter prompt or a yes/no question about a step. The server finds a problem by the
``[task:ID]`` marker its question carries (``make_problems`` writes such questions); a text
is counted in tokens of one word or punctuation mark each (``TOKEN``).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from treesearch.errors import ConfigError
from treesearch.problems import read_problems

TOKEN = re.compile(r"\w+|[^\w\s]")
_MARKER = re.compile(r"\[task:([^\]\s]+)\]")
_STEP = re.compile(r"Step (\d+): this points to (\S+?)\.")
_CLAIM = re.compile(r"(?:Step \d+: this points to|The answer is) (\S+?)\.")
_FINISHED = re.compile(r"The answer is \S+\.\s*$")
_ANSWER = re.compile(r"The answer is (\S+?)\.")
_ATTEMPT = re.compile(r"Attempt \d+:\n")
_YES_NO = re.compile(r"Answer Yes or No\.\s*Answer:\s*$")
_JUDGE = re.compile(r"\[Answer\]:(.*)Instruction: Review your previous answer", re.DOTALL)


@dataclass(frozen=True, kw_only=True, slots=True)
class FakeTask:
    """One problem's behaviour. ``answers`` maps each final answer to its probability. A
    revision (a prompt showing earlier "Attempt k:" solutions) starts from the latest
    attempt's answer: a wrong one becomes right with probability ``revise_fix``, a right one
    wrong with ``revise_break``; otherwise it keeps it. ``think`` tokens of thinking come
    before each answer and ``wait_fix`` is how often more thinking after "Wait" fixes a wrong
    one (see ``thinking``; None: the server's defaults)."""

    steps: int = 3
    answers: Mapping[str, float] = field(default_factory=lambda: {"42": 1.0})
    step_error: float = 0.0
    early: float = 0.0
    latency_s: float = 0.0
    revise_fix: float = 0.0
    revise_break: float = 0.0
    gold: str | None = None
    think: int | None = None
    wait_fix: float | None = None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], gold: str | None = None) -> FakeTask:
        spec = metadata.get("fake") or {}
        return cls(
            gold=gold,
            steps=int(spec.get("steps", 3)),
            answers={str(k): float(v) for k, v in spec.get("answers", {"42": 1.0}).items()},
            step_error=float(spec.get("step_error", 0.0)),
            early=float(spec.get("early", 0.0)),
            latency_s=float(spec.get("latency_s", 0.0)),
            revise_fix=float(spec.get("revise_fix", 0.0)),
            revise_break=float(spec.get("revise_break", 0.0)),
            think=None if spec.get("think") is None else int(spec["think"]),
            wait_fix=None if spec.get("wait_fix") is None else float(spec["wait_fix"]),
        )


def count_tokens(text: str) -> int:
    return len(TOKEN.findall(text))


def marked_id(context: str) -> str:
    """The id in the first ``[task:ID]`` marker of ``context``, or "" without one."""
    marker = _MARKER.search(context)
    return "" if marker is None else marker.group(1)


def make_problems(
    count: int,
    *,
    p_correct: float = 0.6,
    steps: int = 3,
    wrong: int = 1,
    prefix: str = "p",
    latency_s: float = 0.0,
    step_error: float = 0.0,
    early: float = 0.0,
    revise_fix: float = 0.0,
    revise_break: float = 0.0,
    think: int | None = None,
    wait_fix: float | None = None,
) -> list[dict[str, Any]]:
    """Problem records whose right answer has probability ``p_correct`` and the rest is spread
    evenly over ``wrong`` wrong answers; ready for a problems JSONL file and for the server.
    ``think`` and ``wait_fix`` are written only when given (thinking tasks)."""
    records = []
    for index in range(count):
        gold = str(10 + index)
        answers = {gold: p_correct}
        for k in range(wrong):
            answers[str(1000 + 10 * index + k)] = (1.0 - p_correct) / wrong
        task_id = f"{prefix}{index}"
        records.append(
            {
                "id": task_id,
                "question": f"Synthetic problem [task:{task_id}].",
                "answer": gold,
                "fake": {
                    "steps": steps,
                    "answers": answers,
                    "step_error": step_error,
                    "early": early,
                    "latency_s": latency_s,
                    "revise_fix": revise_fix,
                    "revise_break": revise_break,
                    **({} if think is None else {"think": think}),
                    **({} if wait_fix is None else {"wait_fix": wait_fix}),
                },
            }
        )
    return records


def write_problem_set(path: str | Path, count: int) -> None:
    """Write ``count`` problems of ``make_problems`` to a JSONL file (its folder created):
    a ready set to serve with ``--problems`` and to run against; ConfigError when it cannot."""
    if count <= 0:
        raise ConfigError(f"--count must be positive, got {count}")
    path = Path(path)
    lines = "".join(json.dumps(record) + "\n" for record in make_problems(count))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(lines, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--write-problems {path}: {exc.strerror or exc}") from exc


def tasks_from_file(path: str | Path) -> dict[str, FakeTask]:
    """The tasks of a problems JSONL file by id, each from its ``fake`` field and gold answer."""
    return {
        problem.id: FakeTask.from_metadata(problem.metadata, gold=problem.answer)
        for problem in read_problems(path)
    }


# -- what the model says -------------------------------------------------------------


def reply(
    task: FakeTask, context: str, rng: random.Random, greedy: bool, *, judge_accuracy: float, prm_noise: float
) -> tuple[str, float | None]:
    """What the model says after ``context``, and for a yes/no question the probability of
    "Yes": a judge's verdict (right with probability ``judge_accuracy``), a step's or a final
    answer's yes/no, or else the rest of a solution."""
    judged = _JUDGE.search(context)
    if judged is not None:  # Chen et al.'s filter prompt
        right = ends_with_gold(task, judged.group(1))
        if rng.random() >= judge_accuracy:
            right = not right
        return ("The steps check out. [[correct]]" if right else "A step is wrong. [[wrong]]"), None
    if _YES_NO.search(context):
        question = context.rsplit("Question:", 1)
        if "final answer" in question[-1]:
            yes = 0.97 if "The answer is" in question[0].rsplit("Step", 1)[-1] else 0.03
        else:
            yes = step_score(task, marked_id(context), question[0], prm_noise)
        return (" Yes" if yes >= 0.5 else " No"), yes
    return _continue(task, context, rng, greedy), None


def ends_with_gold(task: FakeTask, text: str) -> bool:
    """Whether the last claim in ``text`` (a step's or the answer's) is the gold answer."""
    claims = _CLAIM.findall(text)
    return bool(claims) and claims[-1] == task.gold


def step_score(task: FakeTask, task_id: str, text: str, noise: float) -> float:
    """The synthetic PRM's P(good) for the last claim in ``text``: high when it points to the
    gold answer, low when not, 0.5 without a claim; ``noise`` (in logits) is a fixed function
    of the step, so the same step always gets the same score."""
    claims = _CLAIM.findall(text)
    if not claims or task.gold is None:
        return 0.5
    logit = 1.5 if claims[-1] == task.gold else -1.5
    if noise:
        logit += noise * random.Random(f"{task_id}:{len(claims)}:{claims[-1]}").gauss(0.0, 1.0)
    return 1.0 / (1.0 + math.exp(-logit))


def _revising(context: str) -> tuple[str | None, str]:
    """For a revision's prompt, the latest attempt's answer (None if it stated none) and the
    text after that attempt; for any other prompt, (None, the prompt)."""
    attempts = _ATTEMPT.split(context)
    if len(attempts) == 1:
        return None, context
    stated = _ANSWER.search(attempts[-1])
    return (stated.group(1), attempts[-1][stated.end() :]) if stated else (None, attempts[-1])


def _another(answer: str) -> str:
    """A wrong answer for a task that lists only its right one."""
    return str(int(answer) + 1) if answer.isdigit() else f"not {answer}"


def _revise(task: FakeTask, previous: str, rng: random.Random, greedy: bool) -> str:
    """The answer a revision starts from: the previous one, fixed or broken by chance."""
    others = [a for a in task.answers if a != task.gold] or [_another(previous)]
    if previous == task.gold:
        broken = task.revise_break >= 0.5 if greedy else rng.random() < task.revise_break
        return rng.choice(others) if broken else previous
    fixed = task.revise_fix >= 0.5 if greedy else rng.random() < task.revise_fix
    return task.gold if fixed and task.gold is not None else previous


def _continue(task: FakeTask, context: str, rng: random.Random, greedy: bool) -> str:
    """The rest of a solution after ``context``: the path keeps the answer its steps point to,
    unless a step errs; with ``early`` it may answer after fewer steps. Greedy decoding takes
    the likeliest answer, never errs and never stops early. A revision starts from its latest
    attempt's answer (see ``FakeTask``)."""
    previous, context = _revising(context)
    done = _STEP.findall(context)
    answers, weights = list(task.answers), list(task.answers.values())
    if done:
        current = done[-1][1]
    elif previous is not None:
        current = _revise(task, previous, rng, greedy)
    elif greedy:
        current = max(answers, key=task.answers.__getitem__)
    else:
        current = rng.choices(answers, weights)[0]
    taken = int(done[-1][0]) if done else 0
    if _FINISHED.search(context):
        return ""  # already answered: the model ends the sequence
    steps = []
    for number in range(taken + 1, task.steps):
        if task.early and not greedy and rng.random() < task.early:
            break  # this path answers before the usual number of steps
        if task.step_error and not greedy and rng.random() < task.step_error:
            others = [a for a in answers if a != current] or [_another(current)]
            current = rng.choice(others)
        steps.append(f"Step {number}: this points to {current}.")
    steps.append(f"The answer is {current}.")
    return "\n\n".join(steps)
