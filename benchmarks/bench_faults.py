"""Faults: a run against a server that fails a share of requests, next to a fault-free run.

The same problems (majority vote, N samples each) against the synthetic server
twice: once clean, once with ``--error-rate`` of requests answered by a fault
drawn evenly from every kind it injects (429 with Retry-After, 500, 502, 503,
connection reset, an answer later than the client's timeout, a 200 whose JSON
is cut in half or not the JSON asked for, fewer choices than n). Printed for
each: the share of problems completed, requests sent and retried, tokens
charged against tokens the server reports served, and wall time.

    python benchmarks/bench_faults.py [--problems 100] [--n 8] [--latency 0.02] [--error-rate 0.2]
        [--timeout 1] [--slow-s 3] [--retry-after 0.5] [--transport aiohttp] [--kinds 429,500,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2

from treesearch import Problem, SamplingParams, SearchConfig, run
from treesearch.backends.fake.faults import FAULT_KINDS
from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems
from treesearch.backends.openai_compat import OpenAIPolicy

RESULTS = Path(__file__).parent / "results"
KINDS = ["429", "500", "502", "503", *FAULT_KINDS]


def stats(url: str) -> dict[str, int]:
    answer: dict[str, int] = httpx2.get(url.removesuffix("/v1") + "/stats").json()
    return answer


def measure(url: str, problems: list[Problem], args: argparse.Namespace) -> dict[str, Any]:
    async def main() -> list[Any]:
        policy = OpenAIPolicy(url, "fake", timeout_s=args.timeout, transport=args.transport)
        config = SearchConfig(n=args.n, sampling=SamplingParams(seed=0))
        try:
            return await run(problems, policy, config)
        finally:
            await policy.aclose()

    before = stats(url)
    started = time.perf_counter()
    results = anyio.run(main)
    wall = time.perf_counter() - started
    after = stats(url)
    served = {key: after[key] - before[key] for key in after}
    attempts = sum(r.usage.requests for r in results)
    errors = [r.error for r in results if r.error is not None]
    return {
        "problems": len(results),
        "completed": len(results) - len(errors),
        "one_line_errors": all("\n" not in e for e in errors),
        "accuracy": sum(bool(r.correct) for r in results) / len(results),
        "requests_charged": attempts,
        "requests_seen": served["requests"],
        "answered": served["ok"],
        "retried": attempts - served["ok"] - len(errors),
        "faults": {kind: served.get(f"fault_{kind}", 0) for kind in KINDS},
        "tokens_charged": sum(r.usage.total_tokens for r in results),
        "tokens_served": served["prompt_tokens"] + served["completion_tokens"],
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--error-rate", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=1.0, help="the client's, per attempt")
    parser.add_argument("--slow-s", type=float, default=3.0, help="how late a slow fault answers")
    parser.add_argument("--retry-after", type=float, default=0.5, help="sent with 429 and 503")
    parser.add_argument("--transport", choices=["aiohttp", "openai"], default="aiohttp")
    parser.add_argument("--kinds", default=",".join(KINDS), help="the faults drawn from (default all)")
    args = parser.parse_args()
    records = make_problems(args.problems, p_correct=0.6)
    problems = [Problem.from_record(r) for r in records]
    faulty = ["--error-rate", str(args.error_rate), "--fault-kinds", args.kinds,
              "--slow-s", str(args.slow_s), "--retry-after", str(args.retry_after)]  # fmt: skip
    rows: dict[str, dict[str, Any]] = {}
    for label, flags in (("fault-free", []), (f"{args.error_rate:.0%} faults", faulty)):
        with (
            tempfile.TemporaryDirectory() as tmp,
            spawn(["--latency", str(args.latency), *flags], records, Path(tmp)) as url,
        ):
            row = rows[label] = measure(url, problems, args)
        print(
            f"{label:>11}: completed {row['completed']}/{row['problems']} "
            f"({row['completed'] / row['problems']:.0%})  requests {row['requests_charged']} "
            f"(server saw {row['requests_seen']}, answered {row['answered']}, retried {row['retried']})  "
            f"tokens charged {row['tokens_charged']} / served {row['tokens_served']}  "
            f"wall {row['wall_s']:.2f}s  acc {row['accuracy']:.3f}",
            flush=True,
        )
    clean, faults = rows["fault-free"], rows[f"{args.error_rate:.0%} faults"]
    injected = ", ".join(f"{kind} {count}" for kind, count in faults["faults"].items() if count)
    print(f"\nfaults injected: {injected}")
    print(
        f"wall time with faults / fault-free: {faults['wall_s'] / clean['wall_s']:.2f}; "
        f"tokens charged - served: {faults['tokens_charged'] - faults['tokens_served']}; "
        f"errors one line: {faults['one_line_errors']}"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"\nwritten to {RESULTS / 'faults.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
