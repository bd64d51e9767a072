"""The loop over many problems that ``run`` and ``label`` share: ids, resume, admission,
rows flushed as problems finish, exception groups and a live tally.

A run's results go to ``Output.done``, a JSONL file of one line per finished problem
(keyed "id", with the run's settings under "config"). It is what a rerun reads to skip
finished problems, and the last line written for a problem, so a line there means the
problem's other rows (``Output.parts``: label's solutions) are whole. Problems are
admitted at most ``max_in_flight`` at once, each with its admission order
(``treesearch.priority``), so an endpoint serves older problems first and rows arrive
from the start of a run. Every problem's budget adds to one ``Tally``, the live totals a
progress display shows. A failure that escapes a problem surfaces as itself, not as an
exception group. Signals are the edge's business (``cli.setup.drive`` cancels the loop):
what was flushed before stays.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import anyio

from treesearch.engine.budget import Tally
from treesearch.engine.taskgroups import most_telling
from treesearch.errors import ConfigError
from treesearch.priority import problem_order
from treesearch.problems import Problem
from treesearch.runs.rows import check_same_run, drop_rows, iter_rows, open_append

R = TypeVar("R")
R_contra = TypeVar("R_contra", contravariant=True)


def read_output(output: str | Path) -> dict[str, dict[str, Any]]:
    """The rows an output file holds, by problem id (the last row of an id wins). Unreadable
    lines (a crash mid-write) are skipped: those problems simply run again."""
    return {str(record["id"]): record for record in iter_rows(output, "id", "results")}


@dataclass(frozen=True, kw_only=True, slots=True)
class Output(Generic[R]):
    """Where the loop writes and how it reads a result back. ``record`` is a result's line in
    ``done`` (``settings`` is added under "config"); ``read_back`` rebuilds a result from that
    line and the problem's ``parts`` rows. ``parts_of`` gives a result's rows for ``parts``
    (keyed "problem_id"); ``what`` names the rows in errors."""

    done: Path
    settings: dict[str, Any]
    record: Callable[[R], dict[str, Any]]
    read_back: Callable[[dict[str, Any], list[dict[str, Any]]], R]
    parts: Path | None = None
    parts_of: Callable[[Problem, R], Iterable[dict[str, Any]]] | None = None
    what: str = "rows"


class Display(Protocol[R_contra]):
    """A progress display: told of each finished problem, refreshed by ``watch`` (cancelled
    when the loop ends), then closed."""

    def finished(self, result: R_contra) -> None: ...

    async def watch(self) -> None: ...

    def close(self) -> None: ...


async def each_problem(
    problems: Iterable[Problem],
    solve: Callable[[Problem, Tally], Awaitable[R]],
    *,
    output: Output[R] | None = None,
    max_in_flight: int = 32,
    retry_failed: bool = False,
    force_resume: bool = False,
    tally: Tally | None = None,
    display: Callable[[int, Tally], Display[R]] | None = None,
    on_finished: Callable[[R], None] | None = None,
    on_todo: Callable[[list[Problem]], None] | None = None,
) -> list[R]:
    """``solve`` every problem (at most ``max_in_flight`` at once, each given the run's tally)
    and return a result for each, in the problems' order.

    With ``output``, the problems it records are read back instead of solved (those that
    failed too, unless ``retry_failed``, which drops their rows), after checking it was
    written with the same settings (``force_resume`` skips the check); each newly finished
    problem's rows are appended and flushed. ``display(problems left, tally)`` makes a
    progress display; ``on_finished`` is called with each newly finished problem's result,
    ``on_todo`` with the problems to solve, in admission order, before the first is admitted
    (the Ray driver cuts them into the chunks its tasks solve).
    """
    problems = list(problems)
    if max_in_flight <= 0:
        raise ConfigError(f"problems in flight must be positive, got {max_in_flight}")
    seen: set[str] = set()
    for problem in problems:
        if problem.id in seen:
            raise ConfigError(f"problem id {problem.id!r} appears twice: results are kept by id")
        seen.add(problem.id)
    results = {} if output is None else _resume(output, seen, retry_failed, force_resume)
    todo = [problem for problem in problems if problem.id not in results]
    if on_todo is not None:
        on_todo(todo)
    tally = Tally() if tally is None else tally
    shown = None if display is None else display(len(todo), tally)
    limiter = anyio.CapacityLimiter(max_in_flight)
    with ExitStack() as files:
        write = None if output is None else _writer(output, files)

        async def one(order: int, problem: Problem) -> None:
            async with limiter:
                problem_order.set(order)  # this task's own context, copied into its children
                result = await solve(problem, tally)
            if write is not None:
                write(problem, result)
            results[problem.id] = result
            if shown is not None:
                shown.finished(result)
            if on_finished is not None:
                on_finished(result)

        try:
            async with anyio.create_task_group() as displaying:
                if shown is not None:
                    displaying.start_soon(shown.watch)
                async with anyio.create_task_group() as group:
                    for order, problem in enumerate(todo):
                        group.start_soon(one, order, problem)
                displaying.cancel_scope.cancel()
        except BaseExceptionGroup as failure:
            raise most_telling(failure) from None
        finally:
            if shown is not None:
                shown.close()
    return [results[problem.id] for problem in problems]


def _writer(output: Output[R], files: ExitStack) -> Callable[[Problem, R], None]:
    """Appends a finished problem's rows, ``parts`` first, each file flushed at once."""
    parts = None if output.parts is None else files.enter_context(open_append(output.parts))
    done = files.enter_context(open_append(output.done))

    def write(problem: Problem, result: R) -> None:
        if parts is not None and output.parts_of is not None:
            parts.write("".join(json.dumps(row) + "\n" for row in output.parts_of(problem, result)))
            parts.flush()
        done.write(json.dumps({**output.record(result), "config": output.settings}) + "\n")
        done.flush()

    return write


def _resume(output: Output[R], wanted: set[str], retry_failed: bool, force_resume: bool) -> dict[str, R]:
    """The results ``output`` holds for ``wanted`` problems, read back. Rows of the problems
    to solve again (failed ones being retried, or ``parts`` rows a crash left without their
    line in ``done``) are dropped first."""
    parts: dict[str, list[dict[str, Any]]] = {}
    if output.parts is not None:
        for row in iter_rows(output.parts, "problem_id", output.what):
            parts.setdefault(str(row["problem_id"]), []).append(row)
        if parts and not output.done.exists():
            raise ConfigError(
                f"{output.parts} holds rows but {output.done} is missing, so which problems finished "
                "is unknown; write to a new --output"
            )
    written = read_output(output.done)
    recorded = {key: row for key, row in written.items() if key in wanted}
    if not force_resume:
        check_same_run(output.done, recorded, output.settings, output.what)
    if retry_failed:
        recorded = {key: row for key, row in recorded.items() if row.get("error") is None}
    again = wanted - recorded.keys()
    if output.parts is not None and again & parts.keys():
        drop_rows(output.parts, "problem_id", again)
    if again & written.keys():
        drop_rows(output.done, "id", again)
    return {key: output.read_back(row, parts.get(key, [])) for key, row in recorded.items()}
