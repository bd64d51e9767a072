"""``treesearch demo``: test-time compute on a real model, offline, on the CPU.

Runs Gemma 3 270M (base) in process through llama.cpp on twenty
arithmetic-chain problems ("Q: 7 + 5 + 3", one line per step) and compares
strategies at the same number of paths: majority vote, best-of-N and the
step-level searches guided by the exact step checker. Needs the ``local``
extra (``make demo`` installs it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from treesearch.arithmetic import STEP_FORMAT, make_problems, step_scores
from treesearch.cli.options import COUNT
from treesearch.engine.config import SearchConfig
from treesearch.engine.policy import SamplingParams
from treesearch.engine.verify import CallableVerifier
from treesearch.runs.runner import run

PATHS = 8
PROBLEMS = 20  # one problem is 0.05: enough for the checker's gain to stand out of the noise
# label: (strategy, step by step, uses the exact checker)
PLAN = {
    "majority vote": ("majority-vote", False, False),
    "best-of-N (exact checker)": ("best-of-n", False, True),
    "beam search (exact PRM)": ("beam", True, True),
    "REBASE (exact PRM)": ("rebase", True, True),
}


def write_problems(path: Path, count: int) -> None:
    """The demo's kind of problems as a JSONL file, each with its few-shot ``prompt``, for
    ``treesearch run --backend llamacpp``."""
    records = [
        {"id": p.id, "question": p.question, "prompt": p.prompt, "answer": p.answer}
        for p in make_problems(count, terms=3, low=1, high=12, prefix="demo")
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


async def demo() -> int:
    from treesearch.backends.llamacpp.endpoint import LlamaCppEndpoint, bundled_model
    from treesearch.backends.openai_compat import OpenAIPolicy

    print(f"model: {bundled_model()} (Gemma 3 270M base, llama.cpp on the CPU)")
    problems = make_problems(PROBLEMS, terms=3, low=1, high=12, prefix="demo")
    print(f"{len(problems)} problems like 'Q: {problems[0].question}', N = {PATHS} paths each\n")
    endpoint = LlamaCppEndpoint(n_ctx=4096)
    policy = OpenAIPolicy(endpoint, "gemma-3-270m")
    exact = CallableVerifier(step_scores)
    try:
        await endpoint.ping()  # load the model before the table: llama.cpp says a line on stderr
        print(f"{'strategy':<28}{'accuracy':>9}{'tokens/problem':>16}{'seconds':>9}")
        accuracies: dict[str, float] = {}
        for label, (strategy, steps, checked) in PLAN.items():
            config = SearchConfig(
                strategy=strategy,
                n=PATHS,
                whole=not steps,
                beam_width=2,
                step=STEP_FORMAT,
                sampling=SamplingParams(temperature=0.7, seed=0),
            )
            started = time.perf_counter()
            # Eight problems at once, their paths decoded in one batch.
            verifier = exact if checked else None
            results = await run(problems, policy, config, verifier=verifier, max_problems_in_flight=8)
            accuracy = accuracies[label] = sum(bool(r.correct) for r in results) / len(results)
            tokens = sum(r.usage.completion_tokens for r in results) / len(results)
            print(f"{label:<28}{accuracy:>9.2f}{tokens:>16.0f}{time.perf_counter() - started:>9.1f}")
    finally:
        await endpoint.aclose()
    right = {label: round(accuracy * len(problems)) for label, accuracy in accuracies.items()}
    guided = ", ".join(f"{label.split(' (')[0]} {right[label]}" for label in PLAN if PLAN[label][2])
    print(
        f"\nRight answers of {len(problems)}: majority vote {right['majority vote']}; "
        f"with the exact checker: {guided}."
    )
    return 0


def demo_command(args: argparse.Namespace) -> int:
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




def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``treesearch demo`` to the top-level parser's subcommands."""
    parser = commands.add_parser("demo", help="see test-time compute work, offline")
    parser.add_argument("--write-problems", type=Path, default=None, metavar="FILE",
                      help="write the demo's kind of arithmetic problems to FILE and exit "
                      "(default: run the demo)")  # fmt: skip
    parser.add_argument("--count", type=COUNT, default=20, help="problems --write-problems writes")
    parser.set_defaults(handler=demo_command)
