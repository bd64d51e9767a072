"""The compute-optimal choice (Snell et al.), above the strategies: probe a problem, bin its
difficulty, and search it with what the policy table chose for that level and N.

``search`` is the one entry for a problem: a registry strategy goes straight to the
engine (``run_strategy``); ``adaptive`` first probes. The probe is k whole samples in one
request, scored by the verifier for the predicted kind, checked against the gold answer
for the oracle kind; it is charged to the problem's budget like every other call, and the
chosen strategy runs on what is left of that same budget and deadline. The probe grows a
tree of its own and draws its own seeds, so the chosen strategy neither sees its samples
nor repeats them: the table was fitted on each strategy alone, with the probe drawn apart
in the same way. A probe that fails or runs out of budget or time ends the search with no
answer, as a strategy would.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import anyio

from treesearch.answers.equivalence import AnswerEquivalence, default_equivalence
from treesearch.engine.budget import Budget, Tally
from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.policy import Policy
from treesearch.engine.search import (
    SearchResult,
    StopReason,
    check_strategy,
    run_strategy,
    seconds_left,
    stop_cause,
)
from treesearch.engine.taskgroups import most_telling
from treesearch.engine.tree import ROOT, NodeStatus, SearchTree
from treesearch.engine.verify import Verifier
from treesearch.errors import ConfigError
from treesearch.logs import get_logger
from treesearch.optimal.difficulty import Cell
from treesearch.problems import Problem

log = get_logger(__name__)


def apply_cell(cell: Cell, config: SearchConfig) -> SearchConfig:
    """``config`` running ``cell``: its strategy, N and options (M, T_b, ratio, aggregator)."""
    options = dict(cell.options)
    options.setdefault("aggregator", None)
    return replace(config, strategy=cell.strategy, n=cell.n, policy_table=None, **options)


def check_config(config: SearchConfig, verifier: Verifier | None) -> None:
    """Refuse a configuration that cannot run, before any request is sent (for adaptive:
    every choice its table may make)."""
    if config.strategy != "adaptive":
        check_strategy(config, verifier)
        return
    table = config.policy_table
    assert table is not None  # SearchConfig refuses adaptive without one
    if table.bins.kind == "predicted" and verifier is None:
        raise ConfigError("strategy 'adaptive' with predicted difficulty needs a verifier")
    for row in table.choices.values():
        for cell in row.values():
            check_strategy(apply_cell(cell, config), verifier)


async def difficulty(ctx: SearchContext, k: int, kind: str) -> float:
    """The probe: ``k`` whole samples under ``ctx`` (seeded apart from its other requests),
    and the mean of their final verifier scores (``predicted``) or the fraction that reach
    the gold answer (``oracle``); a sample without an answer counts 0."""
    samples = await ctx.expand(ROOT, k, whole=True, stream="probe")
    answered = [node for node in samples if node.status is NodeStatus.ANSWERED]
    if kind == "predicted":
        scores = await ctx.score([node.id for node in answered]) if answered else []
        return sum(scores) / len(samples)
    gold = ctx.problem.answer
    if gold is None:
        raise ConfigError("oracle difficulty needs the problem's gold answer")
    same = ctx.equivalence

    def right() -> list[bool]:
        return [same.matches(node.answer or "", gold) for node in answered]

    return sum(await anyio.to_thread.run_sync(right)) / len(samples)


async def search(
    problem: Problem,
    policy: Policy,
    config: SearchConfig,
    *,
    verifier: Verifier | None = None,
    finish_check: Verifier | None = None,
    equivalence: AnswerEquivalence | None = None,
    tally: Tally | None = None,
) -> SearchResult:
    """Search one problem. Budget and deadline end the search early but never raise;
    a failing endpoint or verifier is reported in ``error`` with what was finished.
    ``equivalence`` decides which answers are the same (math by default); ``tally`` adds up
    what the search spends as it goes (a run's live totals). For ``adaptive``, the result
    records the choice (``choice``) and the chosen strategy's tree and candidates."""
    check_config(config, verifier)
    same = equivalence or default_equivalence()
    parts: dict[str, Any] = {"verifier": verifier, "finish_check": finish_check, "equivalence": same}
    if config.strategy != "adaptive":
        return await run_strategy(problem, policy, config, **parts, tally=tally)
    started = time.perf_counter()
    budget = Budget(config.budget, tally)
    table = config.policy_table
    assert table is not None  # SearchConfig refuses adaptive without one
    probe = SearchContext.for_config(problem, policy, budget, config, **parts)
    value: float | None = None
    failed: tuple[StopReason, str | None, BaseException | None] = (StopReason.DEADLINE, None, None)
    try:
        with anyio.move_on_after(seconds_left(budget)):
            value = await difficulty(probe, table.probe_k, table.bins.kind)
    except Exception as exc:
        failed = (*stop_cause(exc), exc)
    if value is None:
        return _unanswered(problem, config, budget, started, *failed)
    level = table.bins.level(value)
    cell = table.choose(level, config.n)
    result = await run_strategy(problem, policy, apply_cell(cell, config), **parts, budget=budget)
    choice = {
        "difficulty": round(value, 6),
        "level": level,
        "strategy": cell.strategy,
        "n": cell.n,
        "options": dict(cell.options),
    }
    return replace(result, strategy=config.strategy, choice=choice, wall_s=time.perf_counter() - started)


def _unanswered(
    problem: Problem,
    config: SearchConfig,
    budget: Budget,
    started: float,
    stopped_by: StopReason,
    error: str | None,
    caught: BaseException | None,
) -> SearchResult:
    """An adaptive search whose probe ended it: no choice, no candidates, no answer."""
    if error is not None:
        log.warning("problem_failed", problem_id=problem.id, error=error)
    log.info("problem_finished", problem_id=problem.id, answer=None, correct=None, stopped_by=stopped_by,
             aggregated_by="majority", nodes=1, tokens=budget.usage.total_tokens)  # fmt: skip
    return SearchResult(
        problem_id=problem.id,
        strategy=config.strategy,
        answer=None,
        gold=problem.answer,
        correct=None if problem.answer is None else False,
        candidates=(),
        usage=budget.usage,
        stopped_by=stopped_by,
        aggregated_by="majority",
        wall_s=time.perf_counter() - started,
        error=error,
        tree=SearchTree(problem.id, problem.prompt or problem.question),
        failure=None if error is None or caught is None else most_telling(caught),
    )
