"""``treesearch label``: command-line arguments in, one run of ``treesearch.runs.labels.label`` out.

It talks to the same servers and takes the same step, sampling and budget options as
``run``; ``--n`` is the number of solutions sampled per problem and ``--rollouts`` the
completions run from each of their steps. Everything is checked before the first request
(values, files, gold answers, paths); ``drive`` then checks the model and runs the
labelling under the signal watcher. The closing line goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio

from treesearch.cli.options import (
    COUNT,
    add_endpoint_options,
    add_problem_options,
    add_search_options,
    add_size_options,
    problems_of,
)
from treesearch.cli.setup import (
    drive,
    model_sizes,
    problems_in_flight,
    search_config,
    writable_file,
)
from treesearch.engine.budget import Tally
from treesearch.errors import ConfigError
from treesearch.runs.backends import Backends
from treesearch.runs.labels import LabelResult, check_gold, label, summary_path
from treesearch.runs.loop import read_output

_DESCRIPTION = (
    "Sample --n solutions per problem step by step; from each step run --rollouts whole "
    "completions. A step's soft label is the share reaching the gold answer, its hard label "
    "whether any does (Math-Shepherd). One row per labelled solution goes to --output in TRL's "
    "stepwise-supervision layout (prompt, completions, labels, soft_labels, rollouts, ...); one "
    "row per problem to OUTPUT's .problems.jsonl beside it, so a rerun skips finished problems."
)


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``treesearch label`` to the top-level parser's subcommands."""
    parser = commands.add_parser(
        "label", help="PRM step labels by rollouts (Math-Shepherd)", description=_DESCRIPTION
    )
    add_endpoint_options(parser)
    add_problem_options(parser, help="a problems file (JSONL, JSON, CSV, Parquet or a datasets folder); "
                        "every problem needs an answer")  # fmt: skip
    parser.add_argument("--output", required=True, type=Path,
                        help="a JSONL file of labelled solutions; a rerun of the same configuration "
                        "skips the problems already labelled")  # fmt: skip
    parser.add_argument("--rollouts", type=COUNT, default=8,
                        help="whole completions run from each step (Snell et al. used 16)")  # fmt: skip
    parser.add_argument("--retry-failed", action="store_true",
                        help="also label again the problems that failed before, replacing their "
                        "rows")  # fmt: skip
    parser.add_argument("--force-resume", action="store_true",
                        help="add to an --output written with another configuration")  # fmt: skip
    parser.add_argument(
        "--log-json", type=Path, default=None, help="append JSON events to this file (default: none)"
    )
    parser.add_argument("--n", type=COUNT, default=8, help="solutions sampled per problem")
    add_search_options(parser)
    add_size_options(parser)
    parser.set_defaults(sampling="steps", handler=lambda a: anyio.run(label_command, a))


class _Progress:
    """A line on stderr at each tenth of the problems labelled, with the requests and tokens
    spent so far (every problem's budget adds to ``tally``)."""

    def __init__(self, total: int, tally: Tally) -> None:
        self.total, self.tally, self.done, self.steps, self.failed = total, tally, 0, 0, 0

    def finished(self, result: LabelResult) -> None:
        self.done += 1
        self.steps += result.steps_labelled
        self.failed += result.error is not None
        if self.done * 10 // self.total > (self.done - 1) * 10 // self.total:
            failed = f", {self.failed} failed" if self.failed else ""
            print(
                f"[{self.done}/{self.total}] {self.steps} steps labelled{failed}; "
                f"requests {self.tally.requests} tokens {self.tally.tokens}",
                file=sys.stderr,
                flush=True,
            )


async def label_command(args: argparse.Namespace) -> int:
    """``treesearch label``: the exit code; prints its closing lines on stderr."""
    if args.sampling == "whole":
        raise ConfigError("label samples step by step: --sampling whole gives no steps to label")
    config = search_config(args)
    sizes = model_sizes(args)
    problems = problems_of(args)
    check_gold(problems)
    summary = summary_path(args.output)
    writable_file("--output", args.output)
    writable_file("--output", summary)
    if args.log_json is not None:
        writable_file("--log-json", args.log_json)
    ids = {problem.id for problem in problems}
    before = {key: row for key, row in read_output(summary).items() if key in ids}
    done_before = sum(1 for row in before.values() if not (args.retry_failed and row.get("error")))
    progress = _Progress(max(len(problems) - done_before, 1), Tally())

    async def work(backends: Backends) -> list[LabelResult]:
        return await label(
            problems,
            backends.policy,
            config,
            rollouts=args.rollouts,
            output=args.output,
            equivalence=backends.equivalence,
            finish_check=backends.finish_check,
            max_problems_in_flight=problems_in_flight(args),
            retry_failed=args.retry_failed,
            force_resume=args.force_resume,
            on_finished=progress.finished,
            sizes=sizes,
            tally=progress.tally,
        )

    results = await drive(args, None, work)
    if results is None:
        left = sum(1 for key in ids if key not in read_output(summary))
        print(
            f"treesearch: interrupted; {left} of {len(problems)} problems remain"
            f" (rerun the same command to continue into {args.output})",
            file=sys.stderr,
        )
        return 130
    print(_closing_line(results, done_before, args.output), file=sys.stderr)
    failed = [result for result in results if result.error is not None]
    if failed:
        print(
            f"treesearch: {len(failed)} problems failed (--retry-failed labels them again); "
            f"first: {failed[0].error}",
            file=sys.stderr,
        )
        return 1
    return 0


def _closing_line(results: list[LabelResult], done_before: int, output: Path) -> str:
    solutions = [solution for result in results for solution in result.solutions]
    soft = [value for solution in solutions for value in solution.soft_labels]
    line = (
        f"{len(results)} problems ({len(results) - done_before} labelled now, {done_before} already done): "
        f"{len(solutions)} solutions, {len(soft)} steps labelled"
    )
    if soft:
        line += f", mean soft label {sum(soft) / len(soft):.3f}"
    cut = sum(result.cut for result in results)
    if cut:
        line += f"; {cut} solutions cut short (budget, deadline or error)"
    return line + f"; rows in {output}"
