"""Fitting the compute-optimal policy table (Snell et al.) on a calibration set.

Every calibration problem is probed once (its difficulty), then every grid cell
(strategy, options) runs at every budget N over the whole set. The bins are the
quantiles of the probe values; per level and budget the table takes the cell
with the best accuracy on that level's problems (fewer tokens break ties; a level
with no problems takes the best cell over all). ``cv_accuracy`` is the accuracy
of choosing this way on problems the choice did not see: the set is split in
``folds``, and for each fold the bins and choices are refitted on the others and
scored on it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from treesearch.answers.equivalence import AnswerEquivalence, default_equivalence
from treesearch.engine.budget import Budget
from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.policy import Policy
from treesearch.engine.search import SearchResult
from treesearch.engine.verify import Verifier
from treesearch.errors import ConfigError, TreeSearchError
from treesearch.logs import get_logger
from treesearch.optimal.choose import apply_cell, difficulty
from treesearch.optimal.difficulty import LEVELS, Cell, DifficultyBins, PolicyTable
from treesearch.problems import Problem
from treesearch.runs.runner import fingerprint, run

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class GridCell:
    """A strategy and the SearchConfig fields it runs with; N comes from the budget."""

    strategy: str
    options: Mapping[str, Any] = field(default_factory=dict)


# Snell et al.'s candidates: best-of-N weighted, beam at several M, REBASE, revisions at
# several sequential/parallel ratios, and majority vote.
DEFAULT_GRID: tuple[GridCell, ...] = (
    GridCell(strategy="weighted-vote"),
    GridCell(strategy="majority-vote"),
    GridCell(strategy="beam", options={"beam_width": 2}),
    GridCell(strategy="beam", options={"beam_width": 4}),
    GridCell(strategy="rebase", options={"rebase_temperature": 0.1}),
    GridCell(strategy="revisions", options={"revision_ratio": 0.25}),
    GridCell(strategy="revisions", options={"revision_ratio": 4.0}),
)


# What of a run's fingerprint a table depends on: a run on another model, verifier or way of
# sampling steps gets a warning.
FITTED_WITH = ("policy", "verifier", "finish_check", "sampling", "step", "whole", "reduction")


@dataclass(frozen=True, kw_only=True, slots=True)
class Fitted:
    """The table, and what it was fitted from: each problem's probe value and, per
    (cell label, budget), every problem's result; the problems whose probe failed, and why."""

    table: PolicyTable
    difficulty: Mapping[str, float]
    results: Mapping[tuple[str, int], Sequence[SearchResult]]
    failed: Mapping[str, str] = field(default_factory=dict)


async def probe_difficulty(
    problems: Sequence[Problem],
    policy: Policy,
    config: SearchConfig,
    *,
    k: int,
    kind: str,
    verifier: Verifier | None = None,
    finish_check: Verifier | None = None,
    equivalence: AnswerEquivalence | None = None,
    max_problems_in_flight: int = 32,
) -> tuple[dict[str, float], dict[str, str]]:
    """Each problem's difficulty from a probe of ``k`` whole samples under ``config``'s
    sampling, step format and budget, as the adaptive strategy probes; and, apart, why the
    probe failed for the problems it failed for (a refused budget, an endpoint's error)."""
    if kind == "predicted" and verifier is None:
        raise ConfigError("predicted difficulty needs a verifier (--prm-url or --verifier)")
    limiter = anyio.CapacityLimiter(max_problems_in_flight)
    values: dict[str, float] = {}
    failed: dict[str, str] = {}

    async def one(problem: Problem) -> None:
        async with limiter:
            ctx = SearchContext.for_config(
                problem, policy, Budget(config.budget), config,
                verifier=verifier, finish_check=finish_check, equivalence=equivalence,
            )  # fmt: skip
            try:
                values[problem.id] = await difficulty(ctx, k, kind)
            except (TreeSearchError, OSError) as exc:
                failed[problem.id] = str(exc) or type(exc).__name__
                log.warning("probe_failed", problem_id=problem.id, error=failed[problem.id])

    async with anyio.create_task_group() as group:
        for problem in problems:
            group.start_soon(one, problem)
    return values, failed


async def fit_policy_table(
    problems: Sequence[Problem],
    policy: Policy,
    config: SearchConfig,
    *,
    budgets: Sequence[int],
    grid: Sequence[GridCell] = DEFAULT_GRID,
    probe_k: int = 4,
    kind: str = "predicted",
    folds: int = 5,
    verifier: Verifier | None = None,
    finish_check: Verifier | None = None,
    equivalence: AnswerEquivalence | None = None,
    max_problems_in_flight: int = 32,
    seed: int = 0,
) -> Fitted:
    """Run the grid on ``problems`` (which need gold answers) and fit the table. A problem
    whose probe failed is left out of the fit (``Fitted.failed`` says why); so is a grid
    run's failed row, which counts as wrong for its cell."""
    if any(problem.answer is None for problem in problems):
        raise ConfigError("fitting a policy table needs every calibration problem's gold answer")
    if not budgets or min(budgets) <= 0:
        raise ConfigError("fitting a policy table needs positive budgets")
    if folds < 2 or folds > len(problems):
        raise ConfigError(f"folds must be from 2 to the number of problems ({len(problems)}), got {folds}")
    same = equivalence or default_equivalence()
    values, failed = await probe_difficulty(
        problems, policy, config, k=probe_k, kind=kind, verifier=verifier, finish_check=finish_check,
        equivalence=same, max_problems_in_flight=max_problems_in_flight,
    )  # fmt: skip
    problems = [problem for problem in problems if problem.id in values]
    if len(problems) < folds:
        raise ConfigError(f"only {len(problems)} calibration problems could be probed; the fit needs {folds}")
    results, cells = await _run_grid(
        problems, policy, config, budgets=budgets, grid=grid, verifier=verifier, finish_check=finish_check,
        equivalence=same, max_problems_in_flight=max_problems_in_flight,
    )  # fmt: skip
    ids = [problem.id for problem in problems]
    scores = _Scores(
        values=values,
        cells=cells,
        correct={key: {r.problem_id: bool(r.correct) for r in ran} for key, ran in results.items()},
        tokens={key: {r.problem_id: r.usage.total_tokens for r in ran} for key, ran in results.items()},
        budgets=sorted(set(budgets)),
        kind=kind,
    )
    held_out = scores.cross_validate(ids, folds, seed)
    bins, table = scores.choose(ids)
    settings = fingerprint(config, policy, verifier, finish_check)
    settings["sampling"].pop("seed")  # another seed draws from the same distributions
    return Fitted(
        table=PolicyTable(
            bins=bins,
            probe_k=probe_k,
            choices=table,
            cv_accuracy={
                budget: sum(held_out[budget]) / len(held_out[budget]) for budget in dict.fromkeys(budgets)
            },
            fitted_with={key: settings[key] for key in FITTED_WITH},
        ),
        difficulty=values,
        results=results,
        failed=failed,
    )


async def _run_grid(
    problems: Sequence[Problem],
    policy: Policy,
    config: SearchConfig,
    *,
    budgets: Sequence[int],
    grid: Sequence[GridCell],
    verifier: Verifier | None,
    finish_check: Verifier | None,
    equivalence: AnswerEquivalence,
    max_problems_in_flight: int,
) -> tuple[dict[tuple[str, int], list[SearchResult]], dict[tuple[str, int], Cell]]:
    """Every grid cell at every budget run on ``problems``: the results and the cells, by
    (cell label, budget)."""
    results: dict[tuple[str, int], list[SearchResult]] = {}
    cells: dict[tuple[str, int], Cell] = {}
    for budget in sorted(set(budgets)):
        for grid_cell in grid:
            cell = Cell(strategy=grid_cell.strategy, n=budget, options=dict(grid_cell.options))
            results[cell.label(), budget] = await run(
                problems,
                policy,
                apply_cell(cell, config),
                verifier=verifier,
                finish_check=finish_check,
                equivalence=equivalence,
                keep_trees=False,
                max_problems_in_flight=max_problems_in_flight,
            )
            cells[cell.label(), budget] = cell
    return results, cells


@dataclass(frozen=True, kw_only=True, slots=True)
class _Scores:
    """What the grid scored on each problem, by (cell label, budget): right or not, and its
    tokens; with each problem's difficulty ``values``. Choosing and cross-validating the table
    are plain functions of it."""

    values: Mapping[str, float]
    cells: Mapping[tuple[str, int], Cell]
    correct: Mapping[tuple[str, int], Mapping[str, bool]]
    tokens: Mapping[tuple[str, int], Mapping[str, int]]
    budgets: Sequence[int]
    kind: str

    def choose(self, chosen_ids: Sequence[str]) -> tuple[DifficultyBins, dict[int, dict[int, Cell]]]:
        """The bins fitted on ``chosen_ids`` and, for each level and budget, the most accurate
        cell on the level's problems (the fewest tokens breaking ties; an empty level uses
        them all)."""
        bins = DifficultyBins.fit([self.values[i] for i in chosen_ids], self.kind)
        by_level = {
            level: [i for i in chosen_ids if bins.level(self.values[i]) == level] for level in range(1, 6)
        }
        table: dict[int, dict[int, Cell]] = {}
        for level in range(1, LEVELS + 1):
            members = by_level[level] or list(chosen_ids)
            row = {}
            for budget in self.budgets:
                keys = [key for key in self.cells if key[1] == budget]
                best = max(
                    keys,
                    key=lambda key: (
                        sum(self.correct[key][i] for i in members) / len(members),
                        -sum(self.tokens[key][i] for i in members) / len(members),
                    ),
                )
                row[budget] = replace(
                    self.cells[best],
                    accuracy=sum(self.correct[best][i] for i in members) / len(members),
                    tokens=sum(self.tokens[best][i] for i in members) / len(members),
                )
            table[level] = row
        return bins, table

    def cross_validate(self, ids: Sequence[str], folds: int, seed: int) -> dict[int, list[bool]]:
        """Each budget's held-out hits: the table chosen on the other folds, applied to each
        fold in turn (folds drawn by ``seed``)."""
        shuffled = list(ids)
        random.Random(seed).shuffle(shuffled)
        held_out: dict[int, list[bool]] = {budget: [] for budget in self.budgets}
        for fold in range(folds):
            test = shuffled[fold::folds]
            train = [i for i in shuffled if i not in set(test)]
            bins, table = self.choose(train)
            for i in test:
                for budget in self.budgets:
                    cell = table[bins.level(self.values[i])][budget]
                    held_out[budget].append(self.correct[cell.label(), budget][i])
        return held_out
