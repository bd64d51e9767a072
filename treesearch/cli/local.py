"""``treesearch run`` in this process: its arguments in, one ``treesearch.runs.runner.run`` out
(a Ray task runs the same on its chunk).

Checks what it can before the first request (values, files, paths, the verifier), then
runs the problems through ``setup.drive`` and closes with the summary lines.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from treesearch.cli.options import problems_of
from treesearch.cli.setup import (
    drive,
    model_sizes,
    prepare_outputs,
    problems_in_flight,
    search_config,
    verifier_choice,
)
from treesearch.engine.budget import ModelSizes
from treesearch.engine.search import SearchResult
from treesearch.problems import Problem

# The command line is an edge: it may build adapters directly.
from treesearch.runs.backends import Backends, replica_counts
from treesearch.runs.loop import read_output
from treesearch.runs.runner import fingerprint, run


@dataclass(frozen=True, kw_only=True, slots=True)
class Ran:
    """One ``treesearch run`` in this process: its problems, every problem's result (None when
    a signal ended it), how many were done before it, and each server's replica counts."""

    problems: list[Problem]
    results: list[SearchResult] | None
    done_before: int
    pools: list[list[dict[str, Any]]]


async def run_command(args: argparse.Namespace) -> int:
    """``treesearch run``: the exit code; prints its closing lines on stderr."""
    ran = await run_problems(args)
    if ran.results is None:
        return interrupted(args, ran.problems)
    return closing_lines(ran.results, ran.done_before, model_sizes(args))


async def run_problems(args: argparse.Namespace) -> Ran:
    """Run the problems of ``args`` into ``args.output``, printing nothing but progress (and
    each pool's counts): the part of ``treesearch run`` a Ray task runs on its chunk."""
    config = search_config(args)
    verifier = verifier_choice(args, config)
    sizes = model_sizes(args)
    problems = problems_of(args)
    prepare_outputs(args)
    ids = {problem.id for problem in problems}
    before = {key: row for key, row in read_output(args.output).items() if key in ids}
    done_before = sum(1 for row in before.values() if not (args.retry_failed and row.get("error")))
    used: list[Backends] = []

    async def work(backends: Backends) -> list[SearchResult]:
        used.append(backends)
        if config.policy_table is not None:
            settings = fingerprint(config, backends.policy, backends.verifier, backends.finish_check)
            differ = config.policy_table.differences(settings)
            if differ:
                print(
                    f"treesearch: warning: {args.policy_table} was fitted with another "
                    f"{', '.join(differ)}; its choices may not hold here",
                    file=sys.stderr,
                )
        return await run(
            problems,
            backends.policy,
            config,
            verifier=backends.verifier,
            finish_check=backends.finish_check,
            output=args.output,
            trees_dir=args.trees,
            keep_trees=False,
            max_problems_in_flight=problems_in_flight(args),
            progress=True,
            equivalence=backends.equivalence,
            retry_failed=args.retry_failed,
            force_resume=args.force_resume,
            sizes=sizes,
        )

    results = await drive(args, verifier, work)
    pools = replica_counts(used[0].servers) if used else []
    return Ran(problems=problems, results=results, done_before=done_before, pools=pools)


def interrupted(args: argparse.Namespace, problems: list[Problem]) -> int:
    """The line a run ended by Ctrl-C or SIGTERM closes with (how many problems remain, and how
    to go on); its exit code."""
    recorded = read_output(args.output)
    left = sum(1 for problem in problems if problem.id not in recorded)
    print(
        f"treesearch: interrupted; {left} of {len(problems)} problems remain"
        f" (rerun the same command to continue into {args.output})",
        file=sys.stderr,
    )
    return 130


def closing_lines(results: list[SearchResult], done_before: int, sizes: ModelSizes | None) -> int:
    """The lines a finished run closes with, from every problem's result (those run now and
    ``done_before`` read back): problems run, accuracy, tokens (and FLOPs) per problem, and the
    failures; the exit code."""
    failed = [r for r in results if r.error is not None]
    graded = [r for r in results if r.correct is not None]
    summary = f"{len(results) - done_before} problems run now, {done_before} already done"
    if graded:
        accuracy = sum(bool(r.correct) for r in graded) / len(graded)
        summary += f"; accuracy {accuracy:.3f} over all {len(graded)} graded problems, earlier ones included"
    ran = [r for r in results if r.error is None]
    if ran:
        tokens = sum(r.usage.total_tokens for r in ran) / len(ran)
        summary += f"; {tokens:,.0f} tokens per problem"
        if sizes is not None:
            flops = sum(sizes.flops(r.usage)["total"] for r in ran) / len(ran)
            summary += f", {flops:.3g} inference FLOPs"
    print(summary, file=sys.stderr)
    if failed:
        print(
            f"treesearch: {len(failed)} problems failed (--retry-failed runs them again); "
            f"first: {failed[0].error}",
            file=sys.stderr,
        )
        return 1
    return 0
