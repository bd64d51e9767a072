"""``treesearch report``: what runs did, from their results files: accuracy with its interval,
cost per problem, how the problems ended; split by a problem's field, seeds folded. With
``--curve`` it hands over to ``treesearch.cli.curves`` (a run's scaling curve)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treesearch.cli import curves
from treesearch.cli.options import add_problem_options, number, problems_of

if TYPE_CHECKING:
    from treesearch.evaluate.report import Run

CONFIDENCE = number(float, "a number in (0, 1)", lambda value: 0 < value < 1)

_DESCRIPTION = (
    "Summarise runs from their results files (treesearch run --output): per run, the problems, "
    "accuracy over those with a gold answer and its Wilson interval, tokens per problem (prompt, "
    "completion and the verifier's part), FLOPs where rows record them, requests, wall time p50/p95, "
    "and counts of stopped_by, aggregated_by and errors. Files of one configuration on the same "
    "problems under distinct seeds (their config equal but for the seed) fold into one line: the "
    "mean of per-seed accuracies with a t interval over the seeds, and each count's mean per seed."
)


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``treesearch report`` to the top-level parser's subcommands."""
    parser = commands.add_parser(
        "report", help="accuracy with intervals, costs and outcomes of runs", description=_DESCRIPTION
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN.jsonl", help="results files, one per run")
    parser.add_argument("--by", metavar="FIELD", help="one line per value of this field of the rows, "
                        "or of the problems (--problems), e.g. level or subject "
                        "(default: no split)")  # fmt: skip
    add_problem_options(parser, required=False, prompts=False, help="the problems file, joined on id, "
                        "whose extra fields --by reads (default: none)")  # fmt: skip
    parser.add_argument("--format", choices=("table", "md", "csv", "json"), default="table",
                        help="an aligned text table, Markdown, CSV (raw numbers) or JSON")  # fmt: skip
    parser.add_argument("--confidence", type=CONFIDENCE, default=0.95, help="the intervals' level")
    curves.add_curve_options(parser)
    parser.set_defaults(handler=report_command)


def report_command(args: argparse.Namespace) -> int:
    """``treesearch report``: prints the report (or, with --curve, the scaling curves); the
    exit code."""
    if args.curve:
        return curves.report_curves(args, read_runs(args.runs, "report"))
    from treesearch.evaluate.report import render, summarise

    runs = read_runs(args.runs, "report")
    problems = None if args.problems is None else {p.id: p for p in problems_of(args)}
    lines = summarise(runs, by=args.by, problems=problems, confidence=args.confidence)
    print(render(lines, args.format, args.by))
    return 0


def read_runs(paths: Sequence[Path], command: str) -> list[Run]:
    """The runs in ``paths``, saying in one line on stderr for each that ended in an unfinished
    line (a run cut short by a crash) that the line was skipped."""
    from treesearch.evaluate.report import read_run

    runs = [read_run(path) for path in paths]
    for run in runs:
        if run.cut is not None:
            print(f"treesearch {command}: warning: {run.name}:{run.cut}: skipped an unfinished last line "
                  "(a run cut short)", file=sys.stderr)  # fmt: skip
    return runs
