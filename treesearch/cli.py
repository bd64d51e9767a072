"""The command line: ``treesearch run | demo | serve-fake``.

Options mirror SearchConfig one to one. Every error treesearch raises on
purpose is printed as one line with a non-zero exit (2 for bad input, 1 when
some problems failed); a traceback is a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

# The command line is an edge: it may build adapters directly.
from treesearch.backends.endpoint import Endpoint, server_root
from treesearch.backends.verifiers import FINISHED_TEMPLATE
from treesearch.budget import BudgetLimits
from treesearch.config import SearchConfig
from treesearch.context import StepFormat
from treesearch.equivalence import MathEquivalence
from treesearch.errors import ConfigError, EndpointError, TreeSearchError
from treesearch.logs import configure
from treesearch.policy import SamplingParams
from treesearch.problems import load_problems
from treesearch.registry import make_backend
from treesearch.runner import run
from treesearch.search import check_config
from treesearch.strategies import STRATEGIES
from treesearch.verify import CallableVerifier, Verifier


def _text(value: str) -> str:
    """Command-line text with backslash escapes, so ``--step-delimiter '\\n\\n'`` works."""
    return codecs.decode(value, "unicode_escape")


def _add_search_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strategy", default="majority-vote", help=f"one of: {', '.join(STRATEGIES)} (default majority-vote)"
    )
    parser.add_argument("--n", type=int, default=8, help="samples / finished paths (default 8)")
    parser.add_argument(
        "--sampling",
        choices=["whole", "steps"],
        default="whole",
        help="sample each solution in one request or step by step (default whole)",
    )
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-step-tokens", type=int, default=256)
    parser.add_argument(
        "--max-tokens", type=int, default=1024, help="tokens of a whole solution sampled in one request"
    )
    parser.add_argument("--step-delimiter", type=_text, default="\n\n")
    parser.add_argument(
        "--stop",
        type=_text,
        action="append",
        default=[],
        help="a further stop string that ends a solution (repeatable)",
    )
    parser.add_argument(
        "--max-depth",
        type=int,
        default=40,
        help="steps of a path; the last asks for the rest of the solution",
    )
    parser.add_argument(
        "--answer-pattern",
        default=None,
        metavar="REGEX",
        help="how a solution states its final answer (group 'answer', else group 1), in place "
        "of \\boxed{} and 'The answer is X.'",
    )
    parser.add_argument(
        "--answer-timeout",
        type=float,
        default=2.0,
        help="seconds one answer comparison may take (math-verify, in a worker process)",
    )
    parser.add_argument("--budget-tokens", type=int, default=None, help="per problem")
    parser.add_argument("--budget-requests", type=int, default=None, help="per problem")
    parser.add_argument("--budget-seconds", type=float, default=None, help="per problem")
    parser.add_argument(
        "--budget-count",
        choices=["total", "completion"],
        default="total",
        help="count prompt+completion tokens (total) or completion only",
    )
    parser.add_argument("--aggregator", default=None, help="majority, weighted, best or filter")
    parser.add_argument("--score-reduction", default="last", help="last, min, prod or mean")
    parser.add_argument("--beam-width", type=int, default=4, help="M: children per kept beam")
    parser.add_argument("--lookahead", type=int, default=2, help="k: greedy steps valuing a step")
    parser.add_argument("--rebase-temperature", type=float, default=0.1, help="REBASE's T_b")
    parser.add_argument("--mcts-c", type=float, default=1.0, help="UCT's exploration constant")
    parser.add_argument(
        "--n-counts-judgements",
        action="store_true",
        help="filter-vote: N is a number of calls, N/2 generations each judged once (Chen et al.)",
    )
    parser.add_argument(
        "--verifier",
        default=None,
        metavar="KIND",
        help="vllm-pooling, logprob, judge, or MODULE:FUNCTION (a Python function "
        "(problem, steps) -> score(s)); vllm-pooling when --prm-url is given",
    )
    parser.add_argument("--prm-url", default=None, help="the verifier's server (default --base-url)")
    parser.add_argument("--prm-model", default=None, help="the verifier's model (default --model)")
    parser.add_argument("--prm-step-tag", type=_text, default="<extra_0>")
    parser.add_argument("--prm-good-column", type=int, default=1)
    parser.add_argument(
        "--completion-check",
        choices=["pattern", "judge"],
        default="pattern",
        help="decide a path is finished by answer patterns and EOS, or also by asking the "
        "policy's model (yes/no logprobs)",
    )


def _config(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(
        strategy=args.strategy,
        n=args.n,
        whole=args.sampling == "whole",
        sampling=SamplingParams(temperature=args.temperature, top_p=args.top_p, seed=args.seed),
        step=StepFormat(
            delimiter=args.step_delimiter,
            end_stops=tuple(args.stop),
            max_step_tokens=args.max_step_tokens,
            max_depth=args.max_depth,
            max_tokens=args.max_tokens,
            answer_pattern=args.answer_pattern,
        ),
        budget=BudgetLimits(
            tokens=args.budget_tokens,
            requests=args.budget_requests,
            deadline_s=args.budget_seconds,
            count_prompt=args.budget_count == "total",
        ),
        reduction=args.score_reduction,
        aggregator=args.aggregator,
        beam_width=args.beam_width,
        lookahead=args.lookahead,
        rebase_temperature=args.rebase_temperature,
        mcts_c=args.mcts_c,
        n_counts_judgements=args.n_counts_judgements,
    )


def _verifier(args: argparse.Namespace, endpoint: Any, opened: list[Any]) -> Verifier | None:
    """The verifier named by --verifier: a Python function, or a backend on the policy's
    server, or on --prm-url (a new endpoint, added to ``opened`` for the caller to close)."""
    kind = args.verifier or ("vllm-pooling" if args.prm_url else None)
    if kind is None:
        return None
    if ":" in kind:
        module_name, _, function_name = kind.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"cannot load verifier {kind!r}: {exc}") from exc
        return CallableVerifier(function)
    options: dict[str, Any] = {}
    server = endpoint
    if kind == "vllm-pooling":  # vLLM serves /pooling outside /v1: its own endpoint at the root
        options = {"step_tag": args.prm_step_tag, "good_column": args.prm_good_column}
        url = args.prm_url or args.base_url
        if url is None:
            raise ConfigError("--verifier vllm-pooling needs --prm-url (a vLLM server)")
        server = Endpoint(server_root(url), api_key=args.api_key, concurrency=args.concurrency)
        opened.append(server)
    elif args.prm_url is not None:
        server = Endpoint(args.prm_url, api_key=args.api_key, concurrency=args.concurrency)
        opened.append(server)
    verifier: Verifier = make_backend(kind, base_url=server, model=args.prm_model or args.model, **options)
    return verifier


def _endpoint(args: argparse.Namespace) -> Any:
    """The policy's server: an OpenAI-compatible URL, or the embedded llama.cpp model."""
    if args.backend == "llamacpp":
        if args.api != "completions":
            raise ConfigError("the embedded llama.cpp backend serves completions only")
        return make_backend("llamacpp", model_path=args.model_file)
    if args.base_url is None:
        raise ConfigError("--base-url is required (or --backend llamacpp for the embedded model)")
    return Endpoint(args.base_url, api_key=args.api_key, concurrency=args.concurrency)


async def _run(args: argparse.Namespace) -> int:
    config = _config(args)
    endpoint = _endpoint(args)
    opened = [endpoint]
    verifier = _verifier(args, endpoint, opened)
    check_config(config, verifier)
    problems = load_problems(args.problems)
    policy = make_backend("openai", base_url=endpoint, model=args.model, api=args.api)
    finish_check = (
        make_backend("logprob", base_url=endpoint, model=args.model, template=FINISHED_TEMPLATE)
        if args.completion_check == "judge"
        else None
    )
    if args.answer_timeout <= 0:
        raise ConfigError(f"--answer-timeout must be positive, got {args.answer_timeout}")
    equivalence = MathEquivalence(timeout_s=args.answer_timeout)
    log_file = configure(args.log_json)
    try:
        await policy.ping()
        results = await run(
            problems,
            policy,
            config,
            verifier=verifier,
            finish_check=finish_check,
            output=args.output,
            trees_dir=args.trees,
            keep_trees=False,
            max_problems_in_flight=args.concurrency,
            progress=True,
            equivalence=equivalence,
        )
    finally:
        equivalence.close()
        for server in opened:
            await server.aclose()
        if log_file is not None:
            log_file.close()
    failed = [r for r in results if r.error is not None]
    graded = [r for r in results if r.correct is not None]
    summary = f"{len(results)} problems run, {len(problems) - len(results)} already done"
    if graded:
        summary += f", accuracy {sum(bool(r.correct) for r in graded) / len(graded):.3f}"
    print(summary, file=sys.stderr)
    if failed:
        print(f"treesearch: {len(failed)} problems failed; first: {failed[0].error}", file=sys.stderr)
        return 1
    return 0


def _serve_fake(args: argparse.Namespace) -> int:
    from treesearch.backends.fake_server import FakeServerConfig, serve, tasks_from_file

    config = FakeServerConfig(
        model=args.model,
        latency_s=args.latency,
        error_rate=args.error_rate,
        error_statuses=tuple(int(s) for s in args.error_statuses.split(",")),
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
        tasks=tasks_from_file(args.problems) if args.problems else {},
    )
    try:
        asyncio.run(serve(config, args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


def _demo(args: argparse.Namespace) -> int:
    from treesearch.demo import demo

    return anyio.run(demo)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="treesearch", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)

    run_parser = commands.add_parser("run", help="one strategy over a JSONL problem set")
    run_parser.add_argument("--backend", choices=["openai", "llamacpp"], default="openai",
                            help="an OpenAI-compatible server (--base-url) or the embedded "
                            "llama.cpp model (needs the local extra)")  # fmt: skip
    run_parser.add_argument("--base-url", default=None)
    run_parser.add_argument("--model", default="gemma-3-270m", help="the model name to ask for")
    run_parser.add_argument("--model-file", default=None, type=Path,
                            help="a GGUF file for --backend llamacpp (default: the bundled Gemma "
                            "3 270M)")  # fmt: skip
    run_parser.add_argument("--api", choices=["completions", "chat"], default="completions")
    run_parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    run_parser.add_argument(
        "--concurrency", type=int, default=256, help="requests in flight to the endpoint (default 256)"
    )
    run_parser.add_argument("--problems", required=True, type=Path)
    run_parser.add_argument("--output", required=True, type=Path)
    run_parser.add_argument(
        "--trees", type=Path, default=None, help="write each search tree here as node-link JSON"
    )
    run_parser.add_argument("--log-json", type=Path, default=None)
    _add_search_options(run_parser)
    run_parser.set_defaults(handler=lambda a: anyio.run(_run, a))

    fake = commands.add_parser("serve-fake", help="the synthetic OpenAI-compatible task server")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8000)
    fake.add_argument("--model", default="fake")
    fake.add_argument(
        "--problems", type=Path, default=None, help='JSONL problems whose "fake" field sets their behaviour'
    )
    fake.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    fake.add_argument("--error-rate", type=float, default=0.0)
    fake.add_argument("--error-statuses", default="429,500,503")
    fake.add_argument("--retry-after", type=float, default=None)
    fake.add_argument("--ignore-n", action="store_true", help="answer one choice whatever n says")
    fake.add_argument("--no-usage", action="store_true", help="leave usage out of responses")
    fake.add_argument("--extra-choices", type=int, default=0, help="answer this many more choices than n")
    fake.add_argument("--ignore-max-tokens", action="store_true", help="never cut a choice at max_tokens")
    fake.add_argument("--max-context", type=int, default=8192)
    fake.add_argument("--seed", type=int, default=0)
    fake.add_argument("--prm-model", default="fake-prm", help="the model name /pooling answers to")
    fake.add_argument("--prm-step-tag", type=_text, default="<extra_0>")
    fake.add_argument(
        "--prm-noise", type=float, default=0.0, help="noise (in logits) on the synthetic PRM's step scores"
    )
    fake.add_argument(
        "--judge-accuracy", type=float, default=0.9, help="how often the synthetic filter judge is right"
    )
    fake.set_defaults(handler=_serve_fake)

    demo = commands.add_parser("demo", help="see test-time compute work, offline")
    demo.set_defaults(handler=_demo)
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


if __name__ == "__main__":
    sys.exit(main())
