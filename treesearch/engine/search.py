"""One problem, one strategy: run it under the budget and aggregate what it finished.

The strategy grows the tree; running out of budget (or time) simply ends the
growing. The finished paths it offers that state an answer are the candidates
(a path that ended without one is never scored or voted on); they are scored if
the aggregator needs scores and a strategy has not scored them already, grouped
by answer equivalence (in a worker thread: it may block) and aggregated into a
SearchResult. Candidates come in tree position order, not arrival order, so
ties break alike however the requests were scheduled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio

from treesearch.answers.aggregate import Candidate, aggregate, get_aggregator
from treesearch.answers.equivalence import AnswerEquivalence, default_equivalence
from treesearch.engine.budget import Budget, ModelSizes, Tally, Usage
from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.policy import Policy
from treesearch.engine.taskgroups import most_telling
from treesearch.engine.tree import Node, NodeStatus, SearchTree, in_order
from treesearch.engine.verify import Verifier
from treesearch.errors import BudgetExhausted, ConfigError, DeadlinePassed
from treesearch.logs import get_logger
from treesearch.problems import Problem
from treesearch.strategies import get_strategy

log = get_logger(__name__)


class StopReason(StrEnum):
    """Why a search or a labelling ended. A row records its value ("done", ...), and the
    reason compares equal to it."""

    DONE = "done"  # the strategy finished
    BUDGET = "budget"  # the token or request budget refused more
    DEADLINE = "deadline"  # the wall-clock deadline passed
    DEPTH = "depth"  # no path reached an answer within the depth limit
    ERROR = "error"  # a failure, which the result's ``error`` names

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> StopReason:
        """The reason a row records. A row without a known one (written by hand, or by a later
        treesearch) reads as ERROR when it records an error, else as DONE."""
        try:
            return cls(str(record.get("stopped_by")))
        except ValueError:
            return cls.ERROR if record.get("error") is not None else cls.DONE


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchResult:
    """``stopped_by`` says why the search ended (a ``StopReason``). ``aggregated_by`` is the rule
    that chose the answer: the configured one, or "majority" when it needed scores and no
    candidate had one. ``choice`` is what the adaptive strategy chose, and from which
    difficulty. ``failure`` is the exception behind ``error`` (an EndpointError, say), for
    edges that map failures to statuses by type; it is not part of the record."""

    problem_id: str
    strategy: str
    answer: str | None
    gold: str | None
    correct: bool | None
    candidates: tuple[Candidate, ...]
    usage: Usage
    stopped_by: StopReason
    aggregated_by: str
    wall_s: float
    error: str | None = None
    tree: SearchTree | None = None
    choice: Mapping[str, Any] | None = None
    failure: BaseException | None = field(default=None, compare=False, repr=False)

    def to_record(self, sizes: ModelSizes | None = None) -> dict[str, Any]:
        """The JSONL output line (without the tree); with ``sizes``, the inference FLOPs too."""
        return {
            "id": self.problem_id,
            "strategy": self.strategy,
            "answer": self.answer,
            "gold": self.gold,
            "correct": self.correct,
            "candidates": [
                {"node": c.node, "answer": c.answer, "score": c.score}
                | ({} if c.chain in (None, c.node) else {"chain": c.chain})
                for c in self.candidates
            ],
            "usage": self.usage.to_record(),
            **({} if sizes is None else {"flops": sizes.flops(self.usage)}),
            "stopped_by": self.stopped_by,
            "aggregated_by": self.aggregated_by,
            "wall_s": round(self.wall_s, 4),
            "error": self.error,
            **({} if self.choice is None else {"choice": dict(self.choice)}),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SearchResult:
        """A result read back from its output line (no tree)."""
        return cls(
            problem_id=str(record["id"]),
            strategy=str(record.get("strategy")),
            answer=record.get("answer"),
            gold=record.get("gold"),
            correct=record.get("correct"),
            candidates=tuple(
                Candidate(
                    node=int(c["node"]),
                    answer=c.get("answer"),
                    score=c.get("score"),
                    chain=int(c.get("chain", c["node"])),  # a row leaves out a chain of one
                )
                for c in record.get("candidates") or ()
            ),
            usage=Usage.from_record(record.get("usage")),
            stopped_by=StopReason.of_record(record),
            aggregated_by=str(record.get("aggregated_by")),
            wall_s=float(record.get("wall_s") or 0.0),
            error=record.get("error"),
            choice=record.get("choice"),
        )


def seconds_left(budget: Budget) -> float:
    seconds = budget.seconds_left()
    return math.inf if seconds is None else seconds


def stop_cause(exc: BaseException) -> tuple[StopReason, str | None]:
    """(BUDGET or DEADLINE, None) for a budget refusal, else (ERROR, its message)."""
    failure = most_telling(exc)
    if isinstance(failure, DeadlinePassed):
        return StopReason.DEADLINE, None
    if isinstance(failure, BudgetExhausted):
        return StopReason.BUDGET, None
    return StopReason.ERROR, str(failure) or type(failure).__name__


async def _complete_best_open_path(ctx: SearchContext) -> list[Node]:
    """Nothing finished: finish the best open path greedily, if the budget still allows."""
    leaves = ctx.tree.open_leaves()
    if not leaves:
        return []
    best = max(leaves, key=lambda n: (ctx.path_score(n.id) or 0.0, n.depth))  # ties: the first by position
    return [await ctx.rollout(best.id, temperature=0.0)]


def check_strategy(config: SearchConfig, verifier: Verifier | None) -> None:
    """Refuse a strategy's configuration that cannot run, before any request is sent."""
    strategy = get_strategy(config.strategy)
    if strategy.run is None:
        raise ConfigError(
            f"strategy {config.strategy!r} chooses a strategy for each problem: search with treesearch.search"
        )
    aggregator = config.aggregator or strategy.aggregator
    get_aggregator(aggregator)
    needs_scores = strategy.needs_verifier or (aggregator != "majority" and not strategy.scores_itself)
    if needs_scores and verifier is None:
        raise ConfigError(f"strategy {config.strategy!r} with {aggregator} aggregation needs a verifier")


async def run_strategy(
    problem: Problem,
    policy: Policy,
    config: SearchConfig,
    *,
    verifier: Verifier | None = None,
    finish_check: Verifier | None = None,
    equivalence: AnswerEquivalence | None = None,
    tally: Tally | None = None,
    budget: Budget | None = None,
) -> SearchResult:
    """Search one problem with the registry strategy ``config`` names. Budget and deadline end
    the search early but never raise; a failing endpoint or verifier is reported in ``error``
    with what was finished. ``equivalence`` decides which answers are the same (math by
    default); ``tally`` adds up what the search spends as it goes (a run's live totals).
    ``budget`` is one already running (the compute-optimal chooser's, its probe charged to it),
    else the search opens its own from ``config``. ``treesearch.search`` is the public entry,
    which chooses first for ``adaptive``."""
    check_strategy(config, verifier)
    same = equivalence or default_equivalence()
    started = time.perf_counter()
    budget = Budget(config.budget, tally) if budget is None else budget
    ctx = SearchContext.for_config(
        problem, policy, budget, config, verifier=verifier, finish_check=finish_check, equivalence=same
    )
    strategy = get_strategy(config.strategy)
    routine = strategy.run
    assert routine is not None  # check_strategy refuses a strategy that chooses
    outcome = _Outcome()
    try:
        with anyio.move_on_after(seconds_left(budget)) as scope:
            await routine(ctx, config)
        if scope.cancelled_caught:
            outcome.stopped_by = StopReason.DEADLINE
    except Exception as exc:
        outcome.failed(exc)
    aggregator = config.aggregator or strategy.aggregator
    final = await _finished_paths(ctx, aggregator, outcome)
    if outcome.error is not None:
        log.warning("problem_failed", problem_id=problem.id, error=outcome.error)
    candidates = [
        Candidate(
            node=node.id, answer=node.answer, score=ctx.path_score(node.id), chain=ctx.tree.chain(node.id)[0]
        )
        for node in final
    ]
    if strategy.best_n:
        candidates = _best(candidates, config.n)
    answer, aggregated_by, correct = await _decide(
        problem, candidates, aggregator, same, outcome, borda_power=config.borda_power
    )
    stopped_by = outcome.stopped_by
    if stopped_by is StopReason.DONE and budget.overspent:
        stopped_by = StopReason.BUDGET
    if answer is None and stopped_by is StopReason.DONE and _hit_depth_limit(ctx.tree, config.step.max_depth):
        stopped_by = StopReason.DEPTH
    result = SearchResult(
        problem_id=problem.id,
        strategy=config.strategy,
        answer=answer,
        gold=problem.answer,
        correct=correct,
        candidates=tuple(candidates),
        usage=budget.usage,
        stopped_by=stopped_by,
        aggregated_by=aggregated_by,
        wall_s=time.perf_counter() - started,
        error=outcome.error,
        tree=ctx.tree,
        failure=outcome.failure(),
    )
    log.info(
        "problem_finished",
        problem_id=problem.id,
        answer=answer,
        correct=correct,
        stopped_by=stopped_by,
        aggregated_by=aggregated_by,
        nodes=len(ctx.tree),
        tokens=budget.usage.total_tokens,
    )
    return result


@dataclass(slots=True)
class _Outcome:
    """How a search is ending, as its phases find out: why it stopped, the error it reports
    and the exception behind that error."""

    stopped_by: StopReason = StopReason.DONE
    error: str | None = None
    caught: BaseException | None = None

    def failed(self, exc: BaseException) -> None:
        self.stopped_by, self.error = stop_cause(exc)
        self.caught = exc

    def failure(self) -> BaseException | None:
        return None if self.error is None or self.caught is None else most_telling(self.caught)


async def _finished_paths(ctx: SearchContext, aggregator: str, outcome: _Outcome) -> list[Node]:
    """The answered paths to aggregate (every finished one when the strategy kept no
    candidates), the best open path finished greedily when there is none, and their scores
    when the aggregator needs them; a failure or refusal on the way is recorded in
    ``outcome`` and keeps what was finished."""
    offered = ctx.tree.terminals() if ctx.candidates is None else in_order(map(ctx.tree.node, ctx.candidates))
    final = _answered(offered)
    if not final and outcome.error is None and outcome.stopped_by is not StopReason.DEADLINE:
        try:
            final = _answered(await _complete_best_open_path(ctx))
        except Exception as exc:
            outcome.failed(exc)
    if aggregator != "majority" and final and outcome.error is None:
        try:
            with anyio.move_on_after(seconds_left(ctx.budget)):
                await ctx.score([node.id for node in final])
        except Exception as exc:
            cause, failure = stop_cause(exc)
            if failure is not None:
                outcome.stopped_by, outcome.error, outcome.caught = cause, failure, exc
            elif outcome.stopped_by is StopReason.DONE:
                outcome.stopped_by = cause
    return final


async def _decide(
    problem: Problem,
    candidates: Sequence[Candidate],
    aggregator: str,
    same: AnswerEquivalence,
    outcome: _Outcome,
    *,
    borda_power: float,
) -> tuple[str | None, str, bool | None]:
    """The answer, the rule that chose it and whether it matches the gold, off the event
    loop (the equivalence may run sympy); an equivalence that fails is the search's error."""

    def decide() -> tuple[str | None, str, bool | None]:
        groups = same.group([c.answer or "" for c in candidates])
        answer, rule = aggregate(aggregator, candidates, groups, borda_power=borda_power)
        if problem.answer is None:
            return answer, rule, None
        return answer, rule, answer is not None and same.matches(answer, problem.answer)

    try:
        return await anyio.to_thread.run_sync(decide)
    except Exception as exc:  # an equivalence that failed (a user's, or a worker that would not start)
        outcome.stopped_by, outcome.error, outcome.caught = StopReason.ERROR, f"comparing answers: {exc}", exc
        log.warning("problem_failed", problem_id=problem.id, error=outcome.error)
        return None, aggregator, None


def _answered(nodes: Iterable[Node]) -> list[Node]:
    return [node for node in nodes if node.status is NodeStatus.ANSWERED]


def _best(candidates: Sequence[Candidate], n: int) -> list[Candidate]:
    """The ``n`` best-scored candidates (unscored ones last), in their order (position order)."""
    order = sorted(
        range(len(candidates)),
        key=lambda i: (candidates[i].score is None, -(candidates[i].score or 0.0), i),
    )
    return [candidates[i] for i in sorted(order[:n])]


def _hit_depth_limit(tree: SearchTree, max_depth: int) -> bool:
    return any(node.status is NodeStatus.DEAD_END and node.depth >= max_depth for node in tree.nodes())
