"""``treesearch run --ray local|ADDRESS``: the problems sharded over Ray tasks.

The driver reads what the output already holds (a rerun continues the run, as
without Ray), cuts the problems left into chunks of ``--problems-in-flight``, and
keeps ``--ray-workers`` chunks running at once. Each chunk is one Ray task that
receives a picklable description of the backends and the search (never the command
line's arguments), opens its own backends with its share of ``--concurrency``, runs
the runner on its problems into a file of its own, and returns the rows and its
replica counts; the driver appends the rows to the one
output as each chunk ends, so rows stream back a chunk at a time. A worker that
dies has its chunk run again by Ray (``max_retries``); only a chunk that returned
is written, so no row is written twice.

The driver ends as a run without Ray does: progress as chunks return, then the
same closing lines (accuracy, tokens, each replica's counts), or on Ctrl-C or
SIGTERM the problems that remain. A signal while Ray starts or stops is held
until it has, so no Ray process outlives the command. Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from treesearch.cli.local import closing_lines, interrupted
from treesearch.cli.setup import (
    backend_spec,
    model_sizes,
    problems_in_flight,
    report_replicas,
    search_config,
    verifier_choice,
)
from treesearch.engine.budget import ModelSizes, Tally
from treesearch.engine.config import SearchConfig
from treesearch.engine.search import SearchResult
from treesearch.engine.verify import Verifier
from treesearch.errors import ConfigError, TreeSearchError
from treesearch.problems import Problem
from treesearch.runs.backends import BackendSpec, open_backends, replica_counts
from treesearch.runs.loop import read_output
from treesearch.runs.progress import Progress
from treesearch.runs.rows import check_same_run, drop_rows, open_append
from treesearch.runs.runner import run

RETRIES = 3
Pools = list[list[dict[str, Any]]]


@dataclass(frozen=True, kw_only=True, slots=True)
class _Chunk:
    """What a Ray task needs, all picklable: where the backends are (the verifier built
    already when it is a Python function's), the search's configuration and how the runner
    runs, never the command line's arguments."""

    backends: BackendSpec
    verifier: Verifier | None
    config: SearchConfig
    in_flight: int
    sizes: ModelSizes | None


def _chunk(work: _Chunk, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Pools]:
    """One Ray task: the runner on ``records`` into a file of its own; its rows and each
    server's replica counts."""
    import anyio

    problems = [Problem.from_record(record) for record in records]

    async def chunk(output: Path) -> Pools:
        async with open_backends(work.backends, work.verifier) as backends:
            await run(
                problems,
                backends.policy,
                work.config,
                verifier=backends.verifier,
                finish_check=backends.finish_check,
                output=output,
                keep_trees=False,
                max_problems_in_flight=work.in_flight,
                equivalence=backends.equivalence,
                force_resume=True,
                sizes=work.sizes,
            )
            return replica_counts(backends.servers)

    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "o"
        pools = anyio.run(chunk, output)
        rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
        return rows, pools


def run_on_ray(args: argparse.Namespace, problems: list[Problem]) -> int:
    """Run ``problems`` on Ray into ``args.output``; the exit code."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the ray extra: pip install 'treesearch[ray]'") from None
    output = Path(args.output)
    ids = {problem.id for problem in problems}
    recorded = {key: row for key, row in read_output(output).items() if key in ids}
    if args.retry_failed:
        failed = {key for key, row in recorded.items() if row.get("error") is not None}
        drop_rows(output, "id", failed)
        recorded = {key: row for key, row in recorded.items() if key not in failed}
    todo = [problem for problem in problems if problem.id not in recorded]
    size = args.problems_in_flight or 32
    chunks = [todo[start : start + size] for start in range(0, len(todo), size)]
    config = search_config(args)
    verifier = verifier_choice(args, config)
    spec = backend_spec(args, verifier)
    work = _Chunk(
        backends=replace(spec, concurrency=max(1, args.concurrency // args.ray_workers)),
        verifier=None if isinstance(verifier, str) else verifier,
        config=config,
        in_flight=problems_in_flight(args),
        sizes=model_sizes(args),
    )
    pools: Pools = []
    shown = Progress(len(todo), sys.stderr, Tally())
    stopped = False
    if chunks:
        with _signals_held() as caught:
            print(f"treesearch: {len(todo)} problems in {len(chunks)} chunks on Ray ({args.ray})",
                  file=sys.stderr, flush=True)  # fmt: skip
            ray.init(address=None if args.ray == "local" else args.ray, log_to_driver=False,
                     include_dashboard=False)  # fmt: skip
        task = ray.remote(max_retries=RETRIES)(_chunk)
        pending: dict[Any, int] = {}
        try:
            with _sigterm_interrupts():
                if caught:
                    raise KeyboardInterrupt
                with open_append(output) as sink:
                    while chunks or pending:
                        while chunks and len(pending) < args.ray_workers:
                            chunk = chunks.pop(0)
                            records = [problem.to_record() for problem in chunk]
                            pending[task.remote(work, records)] = len(chunk)
                        (done,), _ = ray.wait(list(pending), num_returns=1)
                        pending.pop(done)
                        rows, counts = _returned(ray, done)
                        if rows and not args.force_resume:
                            check_same_run(output, recorded, rows[0]["config"])
                        for row in rows:
                            sink.write(json.dumps(row) + "\n")
                        sink.flush()
                        pools = _add(pools, counts)
                        for row in rows:
                            result = SearchResult.from_record(row)
                            shown.tally.requests += result.usage.requests
                            shown.tally.tokens += result.usage.total_tokens
                            shown.finished(result)
        except KeyboardInterrupt:
            stopped = True
        finally:
            with _signals_held():
                for ref in pending:
                    ray.cancel(ref, force=True)
                ray.shutdown()
    shown.close()
    report_replicas(pools)
    if stopped:
        return interrupted(args, problems)
    written = read_output(output)
    results = [SearchResult.from_record(written[problem.id]) for problem in problems]
    return closing_lines(results, len(recorded), model_sizes(args))


def _returned(ray: Any, done: Any) -> tuple[list[dict[str, Any]], Pools]:
    """What a chunk returned. A chunk that failed on a setting (a model the server does not
    serve, say) raises that error, which the command line shows as one line, not the
    worker's traceback."""
    try:
        returned: tuple[list[dict[str, Any]], Pools] = ray.get(done)
    except ray.exceptions.RayTaskError as failure:
        if isinstance(failure.cause, TreeSearchError):
            raise failure.cause from None
        raise
    return returned


def _add(total: Pools, counts: Pools) -> Pools:
    """Replica counts summed over chunks: every chunk opens the same servers in one order."""
    if not total:
        return counts
    return [
        [{**mine, **{key: mine[key] + theirs[key] for key in ("requests", "tokens", "errors")}}
         for mine, theirs in zip(pool, other, strict=True)]
        for pool, other in zip(total, counts, strict=True)
    ]  # fmt: skip


@contextmanager
def _signals_held() -> Iterator[list[int]]:
    """SIGINT and SIGTERM noted, not acted on, inside the block (the signals caught): Ray
    started or stopped halfway leaves processes running that nothing will stop."""
    caught: list[int] = []

    def note(number: int, frame: FrameType | None) -> None:
        caught.append(number)

    previous = {number: signal.signal(number, note) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the run as Ctrl-C does (KeyboardInterrupt), as it does without Ray."""

    def interrupt(number: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
