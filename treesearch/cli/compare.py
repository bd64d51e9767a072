"""``treesearch compare``: runs against each other: accuracy against cost as a table and a plot,
and each pair's paired difference on shared problems with a bootstrap interval and McNemar's
exact test; a warning for each setting beyond strategy and N that differs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from treesearch.cli.options import number
from treesearch.cli.report import CONFIDENCE
from treesearch.errors import ConfigError

_DESCRIPTION = (
    "Compare runs (results files of treesearch run): a table of accuracy (Wilson interval) against "
    "tokens or FLOPs per problem, with -o a plot of it (one line per strategy through its runs at "
    "different N), and for each pair of runs, on the problems both graded, the accuracy difference "
    "A - B with a paired bootstrap interval and McNemar's exact p-value. Runs that differ in more "
    "than strategy and N (model, prompts, verifier, sampling, budget) are compared all the same, "
    "with a warning naming each setting that differs."
)


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``treesearch compare`` to the top-level parser's subcommands."""
    parser = commands.add_parser(
        "compare", help="accuracy against cost, and paired tests, across runs", description=_DESCRIPTION
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN.jsonl", help="results files, one per run")
    parser.add_argument("-o", "--output", type=Path, metavar="PLOT.png",
                        help="write the plot to this file, in the format its suffix names (.png, .pdf, "
                        ".svg: any matplotlib writes; needs matplotlib: the plots extra) "
                        "(default: none)")  # fmt: skip
    parser.add_argument("--x", choices=("tokens", "flops"), default="tokens",
                        help="the cost axis: prompt and completion tokens, or FLOPs (runs with "
                        "--model-params), per problem")  # fmt: skip
    parser.add_argument("--format", choices=("table", "md", "json"), default="table",
                        help="an aligned text table, Markdown or JSON")  # fmt: skip
    parser.add_argument("--confidence", type=CONFIDENCE, default=0.95, help="the intervals' level")
    parser.add_argument("--resamples", type=number(int, "an integer from 100 to 1000000",
                        lambda v: 100 <= v <= 1_000_000), default=10_000,
                        help="the paired bootstrap's resamples")  # fmt: skip
    parser.add_argument("--seed", type=number(int, "an integer ≥ 0", lambda v: v >= 0), default=0,
                        help="the paired bootstrap's seed")  # fmt: skip
    parser.set_defaults(handler=compare_command)


def compare_command(args: argparse.Namespace) -> int:
    """``treesearch compare``: prints the tables (warnings on stderr), writes the plot; the exit code."""
    from treesearch.cli.report import read_runs
    from treesearch.cli.setup import writable_file
    from treesearch.evaluate.compare import compare, plot, render

    if len(args.runs) < 2:
        raise ConfigError("compare needs at least two runs")
    if args.output is not None:
        writable_file("-o", args.output)
    runs = read_runs(args.runs, "compare")
    comparison = compare(runs, x=args.x, confidence=args.confidence, resamples=args.resamples, seed=args.seed)
    warnings = list(comparison.warnings)
    if args.output is not None:  # before printing: a plot that cannot be written is one error line
        warnings += [note] if (note := plot(comparison, args.output)) else []
    for warning in warnings:
        print(f"treesearch compare: warning: {warning}", file=sys.stderr)
    print(render(comparison, args.format))
    if args.output is not None:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
