"""``treesearch run``: its options, and the switch between a run in this process (``local``)
and one sharded over Ray (``ray``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import anyio

from treesearch.cli.local import run_command
from treesearch.cli.options import (
    COUNT,
    add_endpoint_options,
    add_problem_options,
    add_search_options,
    add_size_options,
    add_strategy_options,
    add_verifier_options,
    problems_of,
)
from treesearch.cli.setup import prepare_outputs, search_config, verifier_choice
from treesearch.errors import ConfigError


def run_handler(args: argparse.Namespace) -> int:
    """``treesearch run``: on Ray when --ray says so, else in this process."""
    if args.ray is None:
        return anyio.run(run_command, args)
    from treesearch.cli.ray import run_on_ray

    if args.trees is not None or args.log_json is not None:
        raise ConfigError("--trees and --log-json are written by one process; drop them with --ray")
    verifier_choice(args, search_config(args))  # bad settings fail here, before Ray starts
    problems = problems_of(args)
    prepare_outputs(args)
    return run_on_ray(args, problems)


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``treesearch run`` to the top-level parser's subcommands."""
    parser = commands.add_parser("run", help="one strategy over a problem set")
    add_endpoint_options(parser)
    add_problem_options(parser, help="a problems file: JSONL, JSON, CSV, Parquet or a datasets folder")
    parser.add_argument("--output", required=True, type=Path,
                            help="a JSONL results file; a rerun of the same configuration skips the "
                            "problems it holds")  # fmt: skip
    parser.add_argument("--retry-failed", action="store_true",
                            help="also run again the problems whose rows in --output hold an error, "
                            "replacing those rows")  # fmt: skip
    parser.add_argument("--force-resume", action="store_true",
                            help="add to an --output written with another configuration")  # fmt: skip
    parser.add_argument("--trees", type=Path, default=None, help="write each search tree into "
                            "this folder as node-link JSON (default: none)")  # fmt: skip
    parser.add_argument(
        "--log-json", type=Path, default=None, help="append JSON events to this file (default: none)"
    )
    add_strategy_options(parser)
    add_search_options(parser)
    add_verifier_options(parser)
    add_size_options(parser)
    parser.add_argument("--ray", default=None, metavar="local|ADDRESS",
                            help="shard the problems over Ray tasks: a local Ray instance or a "
                            "cluster's address (needs the ray extra; default: this process)")  # fmt: skip
    parser.add_argument("--ray-workers", type=COUNT, default=2,
                            help="Ray tasks running at once, each with its share of "
                            "--concurrency")  # fmt: skip
    parser.set_defaults(handler=run_handler)
