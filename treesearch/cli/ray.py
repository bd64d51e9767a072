"""``treesearch run --ray local|ADDRESS``: the command line's side of a run sharded over Ray
tasks (``runs.ray``). Its options become a picklable description of the work, each task
getting its share of ``--concurrency``; chunks of ``--problems-in-flight`` problems go to
``--ray-workers`` tasks at once. The run ends as one without Ray does: the same closing
lines (accuracy, tokens, each replica's counts summed over the chunks), or on Ctrl-C or
SIGTERM the problems that remain. A signal while Ray starts or stops is held until it has,
so no Ray process outlives the command. Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from functools import partial
from types import FrameType

import anyio

from treesearch.cli.local import closing_lines, interrupted
from treesearch.cli.setup import (
    backend_spec,
    model_sizes,
    problems_in_flight,
    report_replicas,
    search_config,
    until_signal,
    verifier_choice,
)
from treesearch.engine.search import SearchResult
from treesearch.errors import ConfigError
from treesearch.problems import Problem
from treesearch.runs.ray import RayRun, RayWork


def run_on_ray(args: argparse.Namespace, problems: list[Problem]) -> int:
    """Run ``problems`` on Ray into ``args.output``; the exit code."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the ray extra: pip install 'treesearch[ray]'") from None
    config = search_config(args)
    verifier = verifier_choice(args, config)
    spec = backend_spec(args, verifier)
    work = RayWork(
        backends=replace(spec, concurrency=max(1, args.concurrency // args.ray_workers)),
        verifier=None if isinstance(verifier, str) else verifier,
        config=config,
        in_flight=problems_in_flight(args),
        sizes=model_sizes(args),
    )
    chunk = args.problems_in_flight or 32
    sharded = RayRun(work, chunk=chunk, workers=args.ray_workers)
    with _signals_held() as caught:
        print(f"treesearch: starting Ray ({args.ray}): chunks of {chunk} problems, "
              f"{args.ray_workers} at a time", file=sys.stderr, flush=True)  # fmt: skip
        ray.init(address=None if args.ray == "local" else args.ray, log_to_driver=False,
                 include_dashboard=False)  # fmt: skip
    results: list[SearchResult] | None = None
    try:
        with suppress(KeyboardInterrupt), _sigterm_interrupts():
            if not caught:
                solve = partial(sharded.run, problems, args.output, retry_failed=args.retry_failed,
                                force_resume=args.force_resume, progress=True)  # fmt: skip
                results = anyio.run(until_signal, solve)
    finally:
        with _signals_held():
            ray.shutdown()
    report_replicas(sharded.pools)
    if results is None:
        return interrupted(args, problems)
    return closing_lines(results, sharded.done_before, work.sizes)


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
    """SIGTERM ends the run as Ctrl-C does (KeyboardInterrupt) where no signal watcher runs
    (``until_signal`` cancels the run in order inside): just before and after the loop."""

    def interrupt(number: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
