"""``treesearch serve-fake``: the synthetic OpenAI-compatible task server, for rehearsing
strategies offline and for the tests and benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from treesearch.cli.options import text


def serve_fake(args: argparse.Namespace) -> int:
    from treesearch.backends.fake.app import FakeServerConfig
    from treesearch.backends.fake.faults import parse_faults
    from treesearch.backends.fake.launch import serve
    from treesearch.backends.fake.selection import SelectionModel
    from treesearch.backends.fake.tasks import tasks_from_file, write_problem_set
    from treesearch.backends.fake.thinking import ThinkingModel

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
        selection=SelectionModel.from_args(args),
        thinking=ThinkingModel.from_args(args),
    )
    try:
        asyncio.run(serve(config, args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0




def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``treesearch serve-fake`` to the top-level parser's subcommands."""
    parser = commands.add_parser("serve-fake", help="the synthetic OpenAI-compatible task server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="fake")
    parser.add_argument(
        "--problems", type=Path, default=None, help='JSONL problems whose "fake" field sets their behaviour'
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds from a request's arrival to its "
                      "answer, the server's own work included")  # fmt: skip
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="share of requests answered with a fault (default 0)"
    )
    parser.add_argument(
        "--fault-kinds", default=None, help="comma list of faults to draw from: error statuses (429, 500, "
        "502, 503, ...) and reset, slow, truncated, malformed, fewer (default 429,500,503)"
    )  # fmt: skip
    parser.add_argument("--error-statuses", default=None, help="comma list of error statuses, added to "
                      "--fault-kinds (default 429,500,503 when neither is given)")  # fmt: skip
    parser.add_argument(
        "--slow-s", type=float, default=5.0, help="how late a slow fault answers, in seconds (default 5)"
    )
    parser.add_argument(
        "--retry-after", type=float, default=None, help="Retry-After seconds sent with 429 and 503"
    )
    parser.add_argument("--write-problems", type=Path, default=None, metavar="FILE",
                      help="write a problem set this server understands to FILE and exit")  # fmt: skip
    parser.add_argument("--count", type=int, default=20, help="problems --write-problems writes (default 20)")
    parser.add_argument("--ignore-n", action="store_true", help="answer one choice whatever n says")
    parser.add_argument("--no-usage", action="store_true", help="leave usage out of responses")
    parser.add_argument("--extra-choices", type=int, default=0, help="answer this many more choices than n")
    parser.add_argument("--ignore-max-tokens", action="store_true", help="never cut a choice at max_tokens")
    parser.add_argument("--max-context", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prm-model", default="fake-prm", help="the model name /pooling answers to")
    parser.add_argument("--prm-step-tag", type=text, default="<extra_0>")
    parser.add_argument(
        "--prm-noise", type=float, default=0.0, help="noise (in logits) on the synthetic PRM's step scores"
    )
    parser.add_argument(
        "--judge-accuracy", type=float, default=0.9, help="how often the synthetic filter judge is right"
    )
    parser.add_argument("--confidence-margin", type=float, default=3.0,
                      help="how much lower the token confidence (DeepConf's C, from top "
                      "logprobs) of text heading to a wrong answer is than of text heading to the "
                      "gold one")  # fmt: skip
    parser.add_argument("--token-latency", type=float, default=0.0,
                      help="seconds between the tokens of a streamed answer (default: 0)")  # fmt: skip
    from treesearch.backends.fake.selection import add_arguments as add_selection_arguments

    add_selection_arguments(parser)
    from treesearch.backends.fake.thinking import add_arguments as add_thinking_arguments

    add_thinking_arguments(parser)
    parser.set_defaults(handler=serve_fake)
