"""Problems sharded over Ray tasks, through the one problem loop (``runs.loop``).

The loop does what it does for any run: resume, id checks, rows written and flushed
(the configuration under "config"), progress and the live tally. Only solving differs:
the problems left are cut into chunks, and the first time one of a chunk's problems is
admitted the whole chunk is submitted as one Ray task, which the chunk's problems then
await together. A task receives a picklable description of the work (``RayWork``: where
the backends are, the search's configuration, how the runner runs), never the command
line's arguments; it opens its own backends and runs ``runs.runner.run`` on its problems,
returning their results and its replica counts. With ``workers`` chunks' worth of
problems admitted at once, at most ``workers`` tasks run at a time.

A worker that dies has its chunk run again by Ray (``RETRIES``); the driver writes a
problem's row only when its chunk has returned, so no row is written twice. The rows'
configuration is the fingerprint a task computes on the backends it opens, asked for
once before the loop (a rerun checks it as without Ray, and a setting the servers refuse,
such as an unknown model, fails there). Ray itself is the caller's to start and stop:
the command line holds signals meanwhile, so that no Ray process outlives it. Needs the
``ray`` extra.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from treesearch.engine.budget import ModelSizes, Tally
from treesearch.engine.config import SearchConfig
from treesearch.engine.search import SearchResult
from treesearch.engine.verify import Verifier
from treesearch.errors import TreeSearchError
from treesearch.problems import Problem
from treesearch.runs.backends import BackendSpec, open_backends, replica_counts
from treesearch.runs.loop import Output, each_problem
from treesearch.runs.progress import Progress
from treesearch.runs.runner import fingerprint, run

if TYPE_CHECKING:
    from ray import ObjectRef

RETRIES = 3
Pools = list[list[dict[str, Any]]]
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class RayWork:
    """What a Ray task needs, all picklable: where the backends are (the verifier built
    already when it is a Python function's), the search's configuration and how the runner
    runs a chunk (``in_flight`` problems at once, ``sizes`` for the rows' FLOPs)."""

    backends: BackendSpec
    verifier: Verifier | None
    config: SearchConfig
    in_flight: int
    sizes: ModelSizes | None


def _settings(work: RayWork) -> dict[str, Any]:
    """A Ray task: the fingerprint of the run's backends (the model checked on the way)."""

    async def settings() -> dict[str, Any]:
        async with open_backends(work.backends, work.verifier) as opened:
            return fingerprint(work.config, opened.policy, opened.verifier, opened.finish_check)

    return anyio.run(settings)


def _chunk(work: RayWork, records: list[dict[str, Any]]) -> tuple[list[SearchResult], Pools]:
    """A Ray task: the runner on ``records``' problems; their results (without the exception
    behind an error, which may not pickle: it is not part of the row) and each server's
    replica counts."""

    async def chunk() -> tuple[list[SearchResult], Pools]:
        async with open_backends(work.backends, work.verifier) as opened:
            results = await run(
                [Problem.from_record(record) for record in records],
                opened.policy,
                work.config,
                verifier=opened.verifier,
                finish_check=opened.finish_check,
                keep_trees=False,
                max_problems_in_flight=work.in_flight,
                equivalence=opened.equivalence,
            )
            return [replace(result, failure=None) for result in results], replica_counts(opened.servers)

    return anyio.run(chunk)


class RayRun:
    """One run of ``work`` on Ray (started by the caller), ``chunk`` problems to a task and
    ``workers`` tasks at once. What it has done so far stays readable when a signal cuts it
    short: ``pools`` (each server's replica counts, summed over the chunks returned) and
    ``done_before`` (the problems the output held already)."""

    def __init__(self, work: RayWork, *, chunk: int, workers: int) -> None:
        import ray

        self.work, self.chunk, self.workers = work, chunk, workers
        self.pools: Pools = []
        self.done_before = 0
        self._ray = ray
        self._task = ray.remote(max_retries=RETRIES)(_chunk)
        self._chunks: list[list[Problem]] = []
        self._chunk_of: dict[str, int] = {}
        self._returned: dict[int, anyio.Event] = {}
        self._results: dict[str, SearchResult] = {}
        self._running: set[ObjectRef[Any]] = set()

    async def run(
        self,
        problems: Sequence[Problem],
        output: Path,
        *,
        retry_failed: bool = False,
        force_resume: bool = False,
        progress: bool = False,
    ) -> list[SearchResult]:
        """Every problem's result, in the problems' order, the new ones appended to ``output``
        as their chunks return (``runs.runner.run``'s rows, resume and progress)."""
        settings = await self._get(self._ray.remote(max_retries=RETRIES)(_settings).remote(self.work))
        rows = Output(
            done=output,
            settings=settings,
            record=lambda result: result.to_record(self.work.sizes),
            read_back=lambda row, _: SearchResult.from_record(row),
        )
        try:
            return await each_problem(
                problems,
                self._solve,
                output=rows,
                max_in_flight=self.chunk * self.workers,
                retry_failed=retry_failed,
                force_resume=force_resume,
                display=(lambda left, tally: Progress(left, sys.stderr, tally)) if progress else None,
                on_todo=lambda todo: self._cut(len(problems), todo),
            )
        finally:
            for ref in self._running:  # what a signal or a failure left running
                self._ray.cancel(ref, force=True)

    def _cut(self, total: int, todo: list[Problem]) -> None:
        """The problems left, in admission order, cut into chunks."""
        self.done_before = total - len(todo)
        self._chunks = [todo[start : start + self.chunk] for start in range(0, len(todo), self.chunk)]
        self._chunk_of = {problem.id: index for index, chunk in enumerate(self._chunks) for problem in chunk}

    async def _solve(self, problem: Problem, tally: Tally) -> SearchResult:
        """``problem``'s result: its chunk is submitted when the first of its problems is
        admitted, and the others wait for it to return."""
        index = self._chunk_of[problem.id]
        if index in self._returned:
            await self._returned[index].wait()
        else:
            self._returned[index] = anyio.Event()
            ref = self._task.remote(self.work, [member.to_record() for member in self._chunks[index]])
            self._running.add(ref)
            results, counts = await self._get(ref)
            self._running.discard(ref)
            self._results.update((result.problem_id, result) for result in results)
            self.pools = _add(self.pools, counts)
            self._returned[index].set()
        result = self._results.pop(problem.id)
        tally.requests += result.usage.requests
        tally.tokens += result.usage.total_tokens
        return result

    async def _get(self, ref: ObjectRef[T]) -> T:
        """What a task returned, awaited on the event loop. A task that failed on a setting (a
        model the server does not serve, say) raises that error, which the command line shows
        as one line, not the worker's traceback."""
        try:
            return await ref
        except self._ray.exceptions.RayTaskError as failure:
            if isinstance(failure.cause, TreeSearchError):
                raise failure.cause from None
            raise


def _add(total: Pools, counts: Pools) -> Pools:
    """Replica counts summed over chunks: every chunk opens the same servers in one order."""
    if not total:
        return counts
    return [
        [{**mine, **{key: mine[key] + theirs[key] for key in ("requests", "tokens", "errors")}}
         for mine, theirs in zip(pool, other, strict=True)]
        for pool, other in zip(total, counts, strict=True)
    ]  # fmt: skip
