"""Many problems at once: one task group, results written as each problem finishes.

The output is JSONL, appended and flushed a line per finished problem, so a
crash loses nothing already computed; a rerun with the same output skips the
problems recorded there without an error (failed ones are tried again). Every
problem shares the policy, and so its endpoint's concurrency limit.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import anyio
import structlog

from treesearch.config import SearchConfig
from treesearch.equivalence import AnswerEquivalence
from treesearch.logs import configure_quietly_unless_configured
from treesearch.policy import Policy
from treesearch.problems import Problem
from treesearch.search import SearchResult, check_config, search
from treesearch.verify import Verifier

log = structlog.get_logger(__name__)


def finished_ids(output: str | Path) -> set[str]:
    """Ids recorded in an output file without an error. Unreadable lines (a crash mid-write)
    are skipped: those problems simply run again."""
    path = Path(output)
    if not path.exists():
        return set()
    done: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("error") is None and "id" in record:
                done.add(str(record["id"]))
    return done


async def run(
    problems: Iterable[Problem],
    policy: Policy,
    config: SearchConfig,
    *,
    verifier: Verifier | None = None,
    finish_check: Verifier | None = None,
    output: str | Path | None = None,
    trees_dir: str | Path | None = None,
    keep_trees: bool = True,
    max_problems_in_flight: int = 256,
    progress: bool = False,
    equivalence: AnswerEquivalence | None = None,
) -> list[SearchResult]:
    """Search every problem concurrently and return the results in the problems' order.

    Problems already recorded in ``output`` are skipped (and not returned). With
    ``trees_dir`` each search tree is written there as node-link JSON. ``finish_check``
    is an optional model-judged completion check (see ``SearchContext``).
    """
    configure_quietly_unless_configured()
    check_config(config, verifier)
    problems = list(problems)
    skip = finished_ids(output) if output is not None else set()
    todo = [problem for problem in problems if problem.id not in skip]
    if trees_dir is not None:
        await anyio.Path(trees_dir).mkdir(parents=True, exist_ok=True)
    results: dict[str, SearchResult] = {}
    limiter = anyio.CapacityLimiter(max_problems_in_flight)
    bar = _Progress(len(todo), sys.stderr) if progress else None

    with _open_output(output) as sink:

        async def one(problem: Problem) -> None:
            async with limiter:
                result = await search(
                    problem,
                    policy,
                    config,
                    verifier=verifier,
                    finish_check=finish_check,
                    equivalence=equivalence,
                )
            if sink is not None:
                sink.write(json.dumps(result.to_record()) + "\n")
                sink.flush()
            if trees_dir is not None and result.tree is not None:
                tree_path = Path(trees_dir) / f"{_safe(problem.id)}.json"
                await anyio.to_thread.run_sync(result.tree.write_json, tree_path)
            if not keep_trees:
                result = replace(result, tree=None)
            results[problem.id] = result
            if bar is not None:
                bar.update(result)

        async with anyio.create_task_group() as group:
            for problem in todo:
                group.start_soon(one, problem)
    if bar is not None:
        bar.close()
    return [results[problem.id] for problem in todo]


class _open_output:
    """An append handle that first ends a line a crash may have left unfinished."""

    def __init__(self, output: str | Path | None) -> None:
        self._path = None if output is None else Path(output)
        self._handle: TextIO | None = None

    def __enter__(self) -> TextIO | None:
        if self._path is None:
            return None
        self._path.parent.mkdir(parents=True, exist_ok=True)
        unfinished = False
        if self._path.exists() and self._path.stat().st_size:
            with self._path.open("rb") as handle:
                handle.seek(-1, 2)
                unfinished = handle.read(1) != b"\n"
        self._handle = self._path.open("a", encoding="utf-8")
        if unfinished:
            self._handle.write("\n")
        return self._handle

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()


def _safe(problem_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in problem_id)


class _Progress:
    """A one-line progress bar on a terminal; silent when stderr is not one."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.live = stream.isatty()
        self.done = self.correct = self.graded = self.failed = self.tokens = 0
        self.started = time.perf_counter()

    def update(self, result: SearchResult) -> None:
        self.done += 1
        self.tokens += result.usage.total_tokens
        self.failed += result.error is not None
        if result.correct is not None:
            self.graded += 1
            self.correct += result.correct
        if self.live:
            self.stream.write("\r" + self._line())
            self.stream.flush()

    def _line(self) -> str:
        width = 24
        filled = width * self.done // max(self.total, 1)
        accuracy = f" acc {self.correct / self.graded:.3f}" if self.graded else ""
        failed = f" failed {self.failed}" if self.failed else ""
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
            f"{accuracy}{failed} tokens {self.tokens} {time.perf_counter() - self.started:.1f}s"
        )

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
