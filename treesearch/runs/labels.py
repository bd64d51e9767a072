"""Process-reward labels by rollouts (Math-Shepherd): how often each step leads to the gold answer.

For each problem with a gold answer, ``label`` samples solutions step by step; for
every step of a solution that states an answer, it asks for ``rollouts`` whole
completions of the prefix ending at that step (one request with ``n=rollouts``). A
step's soft label is the share of them whose answer matches the gold one, its hard
label whether any does; the last step (the one stating the answer) is labelled by
the solution's own correctness, without rollouts. Every sample and rollout goes
through one ``SearchContext`` and one ``Budget`` per problem, so the budget is
reserved and charged like any search's and never overrun.

Two files. ``output`` holds one row per labelled solution in TRL's stepwise-
supervision layout (``prompt``, ``completions``, ``labels``; see ``LabelledSolution``),
which a PRM trainer reads as is; ``summary_path(output)`` beside it holds one row per
finished problem (what was spent, how many solutions were cut, any error, the
configuration). A problem's rows are appended and flushed first, its summary after,
so the summary marks it done: a rerun onto the same output skips the problems the
summary holds, and relabels (dropping their rows) those a crash left without one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from treesearch.answers.equivalence import AnswerEquivalence, default_equivalence
from treesearch.engine.budget import Budget, ModelSizes, Tally, Usage
from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.policy import Policy
from treesearch.engine.search import StopReason, seconds_left, stop_cause
from treesearch.engine.taskgroups import gather
from treesearch.engine.tree import ROOT, Node, NodeStatus
from treesearch.engine.verify import Verifier
from treesearch.errors import BudgetExhausted, ConfigError, TreeSearchError
from treesearch.logs import get_logger
from treesearch.problems import Problem
from treesearch.runs.loop import Output, each_problem
from treesearch.runs.runner import fingerprint

log = get_logger(__name__)

# The parts of a run's fingerprint that decide its labels (a strategy or aggregator does not).
_LABEL_SETTINGS = ("n", "sampling", "step", "budget", "policy", "finish_check")


@dataclass(frozen=True, kw_only=True, slots=True)
class LabelledSolution:
    """One sampled solution with a label for every step. ``soft_labels[i]`` is the share of
    ``rollouts[i]`` completions from the prefix ending at step ``i`` that reached the gold
    answer; the last step has 0 rollouts and the solution's own correctness (1.0 or 0.0)."""

    index: int
    steps: tuple[str, ...]
    soft_labels: tuple[float, ...]
    rollouts: tuple[int, ...]
    answer: str
    correct: bool

    @property
    def labels(self) -> tuple[bool, ...]:
        """Hard labels: whether any completion from the step reached the gold answer."""
        return tuple(soft > 0.0 for soft in self.soft_labels)

    def to_row(self, problem: Problem) -> dict[str, Any]:
        """The output line: TRL's stepwise-supervision columns first, then the extras."""
        return {
            "prompt": problem.question,
            "completions": list(self.steps),
            "labels": list(self.labels),
            "soft_labels": list(self.soft_labels),
            "rollouts": list(self.rollouts),
            "problem_id": problem.id,
            "solution": self.index,
            "answer": self.answer,
            "gold": problem.answer,
            "correct": self.correct,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LabelledSolution:
        return cls(
            index=int(row["solution"]),
            steps=tuple(str(step) for step in row["completions"]),
            soft_labels=tuple(float(soft) for soft in row["soft_labels"]),
            rollouts=tuple(int(count) for count in row["rollouts"]),
            answer=str(row["answer"]),
            correct=bool(row["correct"]),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LabelResult:
    """One problem's labels. Of the ``sampled`` solutions, ``solutions`` were labelled at every
    step, ``unanswered`` finished without stating an answer (nothing to label) and ``cut``
    were stopped first; ``stopped_by`` says why the labelling ended (DONE, BUDGET, DEADLINE or
    ERROR, when ``error`` says what failed)."""

    problem_id: str
    gold: str
    solutions: tuple[LabelledSolution, ...]
    sampled: int
    unanswered: int
    cut: int
    usage: Usage
    stopped_by: StopReason
    wall_s: float
    error: str | None = None

    @property
    def steps_labelled(self) -> int:
        return sum(len(solution.steps) for solution in self.solutions)

    def to_record(self, sizes: ModelSizes | None = None) -> dict[str, Any]:
        """The problem's summary line (its solutions are rows of their own); with ``sizes``, the
        inference FLOPs too."""
        return {
            "id": self.problem_id,
            "gold": self.gold,
            "sampled": self.sampled,
            "labelled": len(self.solutions),
            "unanswered": self.unanswered,
            "cut": self.cut,
            "steps_labelled": self.steps_labelled,
            "usage": self.usage.to_record(),
            **({} if sizes is None else {"flops": sizes.flops(self.usage)}),
            "stopped_by": self.stopped_by,
            "wall_s": round(self.wall_s, 4),
            "error": self.error,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> LabelResult:
        """A result read back from its summary line and its solutions' rows."""
        return cls(
            problem_id=str(record["id"]),
            gold=str(record.get("gold")),
            solutions=tuple(sorted((LabelledSolution.from_row(row) for row in rows), key=lambda s: s.index)),
            sampled=int(record.get("sampled") or 0),
            unanswered=int(record.get("unanswered") or 0),
            cut=int(record.get("cut") or 0),
            usage=Usage.from_record(record.get("usage")),
            stopped_by=StopReason.of_record(record),
            wall_s=float(record.get("wall_s") or 0.0),
            error=record.get("error"),
        )


class _AnswerCheckFailed(TreeSearchError):
    """The equivalence raised while comparing an answer with the gold one."""


class _Labeller:
    """One problem's sampling and rollouts on its context; keeps what finished, so a budget
    refusal, a deadline or a failure midway leaves every fully labelled solution."""

    def __init__(self, ctx: SearchContext, same: AnswerEquivalence, gold: str, rollouts: int) -> None:
        self.ctx, self.same, self.gold, self.rollouts = ctx, same, gold, rollouts
        self.solutions: list[LabelledSolution] = []
        self.unanswered = 0
        self.refused: BudgetExhausted | None = None
        self._verdicts: dict[str, bool] = {}

    async def run(self, n: int) -> None:
        try:
            firsts = await self.ctx.expand(ROOT, n)
        except BudgetExhausted as exc:  # the first steps that fitted are in the tree
            self.refused = exc
            firsts = self.ctx.tree.children(ROOT)
        await gather([partial(self._solution, index, node) for index, node in enumerate(firsts)])

    async def _solution(self, index: int, first: Node) -> None:
        try:
            last = await self.ctx.rollout(first.id)
        except BudgetExhausted as exc:
            self.refused = exc
            return
        if last.status is not NodeStatus.ANSWERED or last.answer is None:
            self.unanswered += 1
            return
        path = self.ctx.tree.path(last.id)
        labels = await gather([partial(self._step_label, node.id) for node in path[:-1]])
        steps = [label for label in labels if label is not None]
        if len(steps) < len(labels):
            return  # cut: the budget refused some step's rollouts
        (correct,) = await self._right([last.answer])
        self.solutions.append(
            LabelledSolution(
                index=index,
                steps=tuple(node.text for node in path),
                soft_labels=(*(soft for soft, _ in steps), 1.0 if correct else 0.0),
                rollouts=(*(count for _, count in steps), 0),
                answer=last.answer,
                correct=correct,
            )
        )

    async def _step_label(self, node_id: int) -> tuple[float, int] | None:
        """The share of ``rollouts`` completions from this step that reach the gold answer, and
        their count; None when the budget refused some of them (a label from fewer is noise)."""
        try:
            completions = await self.ctx.expand(node_id, self.rollouts, whole=True)
        except BudgetExhausted as exc:
            self.refused = exc
            return None
        answers = [node.answer if node.status is NodeStatus.ANSWERED else None for node in completions]
        right = await self._right(answers)
        return sum(right) / len(right), len(right)

    async def _right(self, answers: Sequence[str | None]) -> list[bool]:
        """Which answers match the gold one: each distinct answer checked once per problem, in a
        worker thread (the equivalence may block)."""
        new = [
            answer for answer in dict.fromkeys(answers) if answer is not None and answer not in self._verdicts
        ]
        if new:

            def check() -> list[bool]:
                return [self.same.matches(answer, self.gold) for answer in new]

            try:
                verdicts = await anyio.to_thread.run_sync(check)
            except Exception as exc:  # a user's equivalence, or a worker that would not start
                raise _AnswerCheckFailed(f"comparing answers: {exc}") from exc
            self._verdicts.update(zip(new, verdicts, strict=True))
        return [answer is not None and self._verdicts[answer] for answer in answers]


def check_gold(problems: Iterable[Problem]) -> None:
    """Refuse problems without a gold answer (nothing to label against), before any request."""
    missing = [problem.id for problem in problems if problem.answer is None]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConfigError(f"labelling needs a gold answer for every problem; {shown} have none")


async def label_problem(
    problem: Problem,
    policy: Policy,
    config: SearchConfig,
    *,
    rollouts: int,
    equivalence: AnswerEquivalence | None = None,
    finish_check: Verifier | None = None,
    tally: Tally | None = None,
) -> LabelResult:
    """Label one problem's sampled solutions (``config.n`` of them, always step by step:
    ``config.whole`` is ignored). Budget and deadline end the labelling early, keeping the
    solutions labelled in full; a failing endpoint is reported in ``error`` with those."""
    check_gold([problem])
    if rollouts <= 0:
        raise ConfigError(f"rollouts must be positive, got {rollouts}")
    assert problem.answer is not None
    started = time.perf_counter()
    budget = Budget(config.budget, tally)
    ctx = SearchContext.for_config(problem, policy, budget, config, finish_check=finish_check)
    labeller = _Labeller(ctx, equivalence or default_equivalence(), problem.answer, rollouts)
    stopped_by, error = StopReason.DONE, None
    try:
        with anyio.move_on_after(seconds_left(budget)) as scope:
            await labeller.run(config.n)
        if scope.cancelled_caught:
            stopped_by = StopReason.DEADLINE
        elif labeller.refused is not None:
            stopped_by, _ = stop_cause(labeller.refused)
    except Exception as exc:  # a refusal no step caught (a verifier's, say), or a failure
        stopped_by, error = stop_cause(exc)
        if error is not None:
            log.warning("problem_failed", problem_id=problem.id, error=error)
    if stopped_by is StopReason.DONE and budget.overspent:
        stopped_by = StopReason.BUDGET
    solutions = tuple(sorted(labeller.solutions, key=lambda s: s.index))
    result = LabelResult(
        problem_id=problem.id,
        gold=problem.answer,
        solutions=solutions,
        sampled=config.n,
        unanswered=labeller.unanswered,
        cut=config.n - len(solutions) - labeller.unanswered,
        usage=budget.usage,
        stopped_by=stopped_by,
        wall_s=time.perf_counter() - started,
        error=error,
    )
    log.info(
        "problem_labelled",
        problem_id=problem.id,
        solutions=len(solutions),
        cut=result.cut,
        steps=result.steps_labelled,
        stopped_by=stopped_by,
        tokens=budget.usage.total_tokens,
    )
    return result


def summary_path(output: str | Path) -> Path:
    """Where the per-problem summary of ``output`` goes: ``labels.jsonl`` → ``labels.problems.jsonl``."""
    path = Path(output)
    return path.with_name(f"{path.stem}.problems{path.suffix or '.jsonl'}")


def _settings(
    config: SearchConfig, policy: Policy, finish_check: Verifier | None, rollouts: int
) -> dict[str, Any]:
    every = fingerprint(config, policy, None, finish_check)
    return {key: every[key] for key in _LABEL_SETTINGS} | {"rollouts": rollouts}


async def label(
    problems: Iterable[Problem],
    policy: Policy,
    config: SearchConfig,
    *,
    rollouts: int,
    output: str | Path | None = None,
    equivalence: AnswerEquivalence | None = None,
    finish_check: Verifier | None = None,
    max_problems_in_flight: int = 32,
    retry_failed: bool = False,
    force_resume: bool = False,
    on_finished: Callable[[LabelResult], None] | None = None,
    sizes: ModelSizes | None = None,
    tally: Tally | None = None,
) -> list[LabelResult]:
    """Label every problem concurrently (at most ``max_problems_in_flight`` at once, sharing the
    policy's endpoint limit) and return a result for each, in the problems' order.

    ``config.n`` solutions are sampled per problem, step by step; each step gets ``rollouts``
    whole completions; ``config.budget`` holds per problem. Every problem needs a gold answer
    (ConfigError before any request otherwise). With ``output``, each problem's solution rows
    are appended (and flushed) when it finishes, then its line in ``summary_path(output)``;
    problems the summary holds are read back instead of labelled again (those whose line
    holds an error too, unless ``retry_failed``), and a summary written with another
    configuration is refused unless ``force_resume``. ``on_finished`` is called with each
    newly finished problem's result (a progress display, say); every problem's budget adds to
    ``tally`` as it spends (a display's live totals).
    """
    problems = list(problems)
    check_gold(problems)
    if rollouts <= 0:
        raise ConfigError(f"rollouts must be positive, got {rollouts}")

    async def solve(problem: Problem, tally: Tally) -> LabelResult:
        return await label_problem(
            problem,
            policy,
            config,
            rollouts=rollouts,
            equivalence=equivalence,
            finish_check=finish_check,
            tally=tally,
        )

    rows = None
    if output is not None:
        rows = Output(
            done=summary_path(output),
            settings=_settings(config, policy, finish_check, rollouts),
            record=lambda result: result.to_record(sizes),
            read_back=LabelResult.from_record,
            parts=Path(output),
            parts_of=lambda problem, result: [solution.to_row(problem) for solution in result.solutions],
            what="labels",
        )
    return await each_problem(
        problems,
        solve,
        output=rows,
        max_in_flight=max_problems_in_flight,
        retry_failed=retry_failed,
        force_resume=force_resume,
        tally=tally,
        on_finished=on_finished,
    )
