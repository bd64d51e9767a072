"""``treesearch fit-adaptive``: run the strategy grid on a calibration set, save the table.

The table (JSON) names, per difficulty level and budget N, the strategy that did best
on the calibration problems; ``treesearch run --strategy adaptive --policy-table T``
uses it. The command talks to the same servers and takes the same sampling, step and
budget options as ``run``; the grid sets strategy, N and M itself.
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
    add_verifier_options,
    problems_of,
)
from treesearch.cli.setup import (
    drive,
    problems_in_flight,
    search_config,
    verifier_choice,
    writable_file,
)
from treesearch.errors import ConfigError
from treesearch.optimal.difficulty import KINDS, LEVELS
from treesearch.runs.backends import Backends


def _budgets(text: str) -> list[int]:
    try:
        budgets = sorted({int(item) for item in text.split(",") if item.strip()})
    except ValueError:
        budgets = []
    if not budgets or budgets[0] <= 0:
        raise argparse.ArgumentTypeError(f"must be a comma list of positive integers, got {text!r}")
    return budgets


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``treesearch fit-adaptive`` to the top-level parser's subcommands."""
    parser = commands.add_parser(
        "fit-adaptive",
        help="fit the compute-optimal policy table on a calibration set",
        description="Run the strategy grid on a calibration set at every N of --budgets and "
        "write, per difficulty level and N, the best strategy (JSON) for run --strategy adaptive.",
    )
    add_endpoint_options(parser)
    add_problem_options(parser, help="the calibration problems (JSONL, JSON, CSV, Parquet or a datasets "
                        "folder), every one with its answer")  # fmt: skip
    parser.add_argument("--output", required=True, type=Path, help="where the policy table (JSON) goes")
    parser.add_argument("--budgets", type=_budgets, default=[4, 8, 16, 32],
                        help="the values of N to fit, a comma list")  # fmt: skip
    parser.add_argument("--probe-k", type=COUNT, default=4, help="whole samples in each problem's probe")
    parser.add_argument("--difficulty", choices=KINDS, default="predicted",
                        help="the probe's mean verifier score (predicted) or its share of right "
                        "answers (oracle, needs gold at run time too)")  # fmt: skip
    parser.add_argument("--folds", type=COUNT, default=5, help="folds of the cross-validated accuracy")
    parser.add_argument(
        "--log-json", type=Path, default=None, help="append JSON events to this file (default: none)"
    )
    add_search_options(parser)
    add_verifier_options(parser)
    parser.set_defaults(sampling="steps", handler=lambda a: anyio.run(fit_command, a))


async def fit_command(args: argparse.Namespace) -> int:
    """``treesearch fit-adaptive``: the exit code; prints the table on stderr."""
    from treesearch.optimal.fit import fit_policy_table

    config = search_config(args)
    verifier = verifier_choice(args, config)
    if verifier is None:
        raise ConfigError("fit-adaptive needs a verifier for its grid: give --prm-url URL or --verifier KIND")
    problems = problems_of(args)
    if any(problem.answer is None for problem in problems):
        missing = next(problem.id for problem in problems if problem.answer is None)
        raise ConfigError(
            f"{args.problems}: problem {missing!r} has no answer; calibration needs gold answers"
        )
    if args.folds < 2 or args.folds > len(problems):
        raise ConfigError(
            f"--folds must be from 2 to the number of problems ({len(problems)}), got {args.folds}"
        )
    writable_file("--output", args.output)
    if args.log_json is not None:
        writable_file("--log-json", args.log_json)

    async def work(backends: Backends) -> Any:
        return await fit_policy_table(
            problems,
            backends.policy,
            config,
            budgets=args.budgets,
            probe_k=args.probe_k,
            kind=args.difficulty,
            folds=args.folds,
            verifier=backends.verifier,
            finish_check=backends.finish_check,
            equivalence=backends.equivalence,
            max_problems_in_flight=problems_in_flight(args),
        )

    fitted = await drive(args, verifier, work)
    if fitted is None:
        print("treesearch: interrupted; no table written", file=sys.stderr)
        return 130
    table = fitted.table
    table.save(args.output)
    if fitted.failed:
        first = next(iter(fitted.failed.items()))
        print(f"treesearch: {len(fitted.failed)} problems left out, their probe failed; first: {first[0]}: "
              f"{first[1]}", file=sys.stderr)  # fmt: skip
    print(
        f"difficulty ({table.bins.kind}) cuts: " + ", ".join(f"{c:.3f}" for c in table.bins.cuts),
        file=sys.stderr,
    )
    for level in range(1, LEVELS + 1):
        row = table.choices[level]
        cells = "; ".join(f"N={b}: {cell.label()} {cell.accuracy:.2f}" for b, cell in sorted(row.items()))
        print(f"level {level}: {cells}", file=sys.stderr)
    cv = ", ".join(f"N={b} {v:.3f}" for b, v in sorted(table.cv_accuracy.items()))
    print(f"cross-validated accuracy: {cv}; wrote {args.output}", file=sys.stderr)
    return 0
