"""The command line: ``treesearch run | serve | demo | serve-fake | fit-adaptive | advise | label``:
the parser and ``main``.

Options mirror SearchConfig one to one; every numeric option checks its own
range. Every error treesearch raises on purpose is printed as one line with a
non-zero exit (2 for bad input, 1 when some problems failed); a traceback is a
bug. The commands that talk to a model live in modules of their own (``run``, ``fit``,
``label``, ``advise``, ``serve``), with the options they share in ``options``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib.metadata import metadata, version
from pathlib import Path
from typing import Any, NoReturn

import anyio

from treesearch.cli import fit, label, serve
from treesearch.cli.options import (
    COUNT,
    add_endpoint_options,
    add_search_options,
    add_size_options,
    add_strategy_options,
    add_verifier_options,
    text,
)
from treesearch.cli.run import run_command
from treesearch.cli.setup import prepare_outputs, search_config, verifier_choice
from treesearch.errors import ConfigError, EndpointError, TreeSearchError
from treesearch.problems import load_problems


def run_handler(args: argparse.Namespace) -> int:
    """``treesearch run``: on Ray when --ray says so, else in this process."""
    if args.ray is None:
        return anyio.run(run_command, args)
    from treesearch.cli.ray import run_on_ray

    if args.trees is not None or args.log_json is not None:
        raise ConfigError("--trees and --log-json are written by one process; drop them with --ray")
    verifier_choice(args, search_config(args))  # bad settings fail here, before Ray starts
    problems = load_problems(args.problems)
    prepare_outputs(args)
    return run_on_ray(args, problems)


def _serve_fake(args: argparse.Namespace) -> int:
    from treesearch.backends.fake.app import FakeServerConfig
    from treesearch.backends.fake.faults import parse_faults
    from treesearch.backends.fake.launch import serve
    from treesearch.backends.fake.tasks import tasks_from_file, write_problem_set

    if args.write_problems is not None:
        write_problem_set(args.write_problems, args.count)
        print(
            f"wrote {args.count} problems to {args.write_problems}; serve them with "
            f"treesearch serve-fake --problems {args.write_problems}, run with --model {args.model}",
            file=sys.stderr,
        )
        return 0
    faults = parse_faults(args.error_statuses or "", "--error-statuses", statuses_only=True)
    faults += parse_faults(args.fault_kinds or "", "--fault-kinds")
    config = FakeServerConfig(
        model=args.model,
        latency_s=args.latency,
        error_rate=args.error_rate,
        fault_kinds=tuple(dict.fromkeys(faults or ("429", "500", "503"))),
        slow_s=args.slow_s,
        retry_after_s=args.retry_after,
        ignore_n=args.ignore_n,
        extra_choices=args.extra_choices,
        ignore_max_tokens=args.ignore_max_tokens,
        usage=not args.no_usage,
        max_context=args.max_context,
        seed=args.seed,
        prm_model=args.prm_model,
        prm_step_tag=args.prm_step_tag,
        prm_noise=args.prm_noise,
        judge_accuracy=args.judge_accuracy,
        confidence_margin=args.confidence_margin,
        token_latency_s=args.token_latency,
        tasks=tasks_from_file(args.problems) if args.problems else {},
    )
    try:
        asyncio.run(serve(config, args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


def _demo(args: argparse.Namespace) -> int:
    from treesearch.cli.demo import demo, write_problems

    if args.write_problems is not None:
        write_problems(args.write_problems, args.count)
        print(
            f"wrote {args.count} arithmetic problems to {args.write_problems}; run them with "
            f"treesearch run --backend llamacpp --problems {args.write_problems} --output OUT.jsonl "
            "--sampling steps --step-delimiter '\\n' --stop 'Q:' --max-step-tokens 24",
            file=sys.stderr,
        )
        return 0
    return anyio.run(demo)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; help that already states its default in words
    ("unlimited", "--base-url") keeps them, and a required option has none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or (action.help is not None and "(default" in action.help):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """A parser (and, through add_subparsers, subcommand parser) whose errors are one line
    and whose --help shows every default, even of an option given no help text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.help is None and action.option_strings:
            action.help = "(default: %(default)s)"
        return action

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="treesearch", description=metadata("treesearch")["Summary"])
    top.add_argument("--version", action="version", version=f"%(prog)s {version('treesearch')}")
    commands = top.add_subparsers(dest="command", required=True)

    run_parser = commands.add_parser("run", help="one strategy over a JSONL problem set")
    add_endpoint_options(run_parser)
    run_parser.add_argument("--problems", required=True, type=Path, help="a JSONL problems file")
    run_parser.add_argument("--output", required=True, type=Path,
                            help="a JSONL results file; a rerun of the same configuration skips the "
                            "problems it holds")  # fmt: skip
    run_parser.add_argument("--retry-failed", action="store_true",
                            help="also run again the problems whose rows in --output hold an error, "
                            "replacing those rows")  # fmt: skip
    run_parser.add_argument("--force-resume", action="store_true",
                            help="add to an --output written with another configuration")  # fmt: skip
    run_parser.add_argument("--trees", type=Path, default=None, help="write each search tree into "
                            "this folder as node-link JSON (default: none)")  # fmt: skip
    run_parser.add_argument(
        "--log-json", type=Path, default=None, help="append JSON events to this file (default: none)"
    )
    add_strategy_options(run_parser)
    add_search_options(run_parser)
    add_verifier_options(run_parser)
    add_size_options(run_parser)
    run_parser.add_argument("--ray", default=None, metavar="local|ADDRESS",
                            help="shard the problems over Ray tasks: a local Ray instance or a "
                            "cluster's address (needs the ray extra; default: this process)")  # fmt: skip
    run_parser.add_argument("--ray-workers", type=COUNT, default=2,
                            help="Ray tasks running at once, each with its share of "
                            "--concurrency")  # fmt: skip
    run_parser.set_defaults(handler=run_handler)

    fake = commands.add_parser("serve-fake", help="the synthetic OpenAI-compatible task server")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8000)
    fake.add_argument("--model", default="fake")
    fake.add_argument(
        "--problems", type=Path, default=None, help='JSONL problems whose "fake" field sets their behaviour'
    )
    fake.add_argument("--latency", type=float, default=0.0, help="seconds from a request's arrival to its "
                      "answer, the server's own work included")  # fmt: skip
    fake.add_argument(
        "--error-rate", type=float, default=0.0, help="share of requests answered with a fault (default 0)"
    )
    fake.add_argument(
        "--fault-kinds", default=None, help="comma list of faults to draw from: error statuses (429, 500, "
        "502, 503, ...) and reset, slow, truncated, malformed, fewer (default 429,500,503)"
    )  # fmt: skip
    fake.add_argument("--error-statuses", default=None, help="comma list of error statuses, added to "
                      "--fault-kinds (default 429,500,503 when neither is given)")  # fmt: skip
    fake.add_argument(
        "--slow-s", type=float, default=5.0, help="how late a slow fault answers, in seconds (default 5)"
    )
    fake.add_argument(
        "--retry-after", type=float, default=None, help="Retry-After seconds sent with 429 and 503"
    )
    fake.add_argument("--write-problems", type=Path, default=None, metavar="FILE",
                      help="write a problem set this server understands to FILE and exit")  # fmt: skip
    fake.add_argument("--count", type=int, default=20, help="problems --write-problems writes (default 20)")
    fake.add_argument("--ignore-n", action="store_true", help="answer one choice whatever n says")
    fake.add_argument("--no-usage", action="store_true", help="leave usage out of responses")
    fake.add_argument("--extra-choices", type=int, default=0, help="answer this many more choices than n")
    fake.add_argument("--ignore-max-tokens", action="store_true", help="never cut a choice at max_tokens")
    fake.add_argument("--max-context", type=int, default=8192)
    fake.add_argument("--seed", type=int, default=0)
    fake.add_argument("--prm-model", default="fake-prm", help="the model name /pooling answers to")
    fake.add_argument("--prm-step-tag", type=text, default="<extra_0>")
    fake.add_argument(
        "--prm-noise", type=float, default=0.0, help="noise (in logits) on the synthetic PRM's step scores"
    )
    fake.add_argument(
        "--judge-accuracy", type=float, default=0.9, help="how often the synthetic filter judge is right"
    )
    fake.add_argument("--confidence-margin", type=float, default=3.0,
                      help="how much lower the token confidence (DeepConf's C, from top "
                      "logprobs) of text heading to a wrong answer is than of text heading to the "
                      "gold one")  # fmt: skip
    fake.add_argument("--token-latency", type=float, default=0.0,
                      help="seconds between the tokens of a streamed answer (default: 0)")  # fmt: skip
    fake.set_defaults(handler=_serve_fake)

    demo = commands.add_parser("demo", help="see test-time compute work, offline")
    demo.add_argument("--write-problems", type=Path, default=None, metavar="FILE",
                      help="write the demo's kind of arithmetic problems to FILE and exit "
                      "(default: run the demo)")  # fmt: skip
    demo.add_argument("--count", type=COUNT, default=20, help="problems --write-problems writes")
    demo.set_defaults(handler=_demo)
    for command in (label, fit, serve):
        command.add_parser(commands)
    from treesearch.cli import advise

    advise.add_parser(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except EndpointError as exc:
        print(f"treesearch: error: {exc}", file=sys.stderr)
        return 1
    except TreeSearchError as exc:
        print(f"treesearch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
