"""Tokens to reach majority vote's accuracy: the 2025 methods against voting and search.

On the synthetic server: problems with a clear mode (the right answer at 0.6, two
wrong ones sharing the rest) and hard ones (0.3, three wrong ones), three steps
each with a small per-step error, a PRM with noise, token confidences 3 lower
(``--confidence-margin``) on text heading to a wrong answer, and 0.2 ms between
streamed tokens. Every method runs at N = 8, 16, 32 and 64 with its defaults:
majority vote (the reference), early-vote (Beta rule at 0.95, or the last 6
agreeing; waves of 4), DeepConf offline and online (η = 0.9 and 0.1; online warms
up on a quarter of N, 16 at 64), and, with the noisy PRM, best-of-N, REBASE,
particle filtering and AB-MCTS.

The compute unit is generated tokens per problem (the PRM's reading not counted);
samples are traces begun (requests, for a server that ignores ``n``). For each
method and level, the table takes the cheapest N that reaches majority vote's
accuracy at N = 64 and prints majority vote's tokens and samples over its.

    python benchmarks/bench_adaptive_stop.py [--per-level 50] [--prm-noise 1.0]

Writes benchmarks/results/adaptive_stop.json and adaptive_stop.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from curves import plot, summarise

from treesearch import Problem, SamplingParams, SearchConfig, SearchResult, run
from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM

RESULTS = Path(__file__).parent / "results"
# name: (P(right answer), wrong answers sharing the rest, per-step error rate)
LEVELS = {"clear": (0.6, 2, 0.02), "hard": (0.3, 3, 0.02)}
N = 64
WIDTHS = (8, 16, 32, 64)
# label: (strategy, options, uses the PRM); DeepConf online warms up on a quarter of N (16 at 64).
METHODS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "majority-vote": ("majority-vote", {}, False),
    "early-vote (beta)": ("early-vote", {"wave": 4}, False),
    "early-vote (window 6)": ("early-vote", {"wave": 4, "stop_rule": "window", "stop_window": 6}, False),
    "deepconf offline η=0.9": ("deepconf", {"deepconf_keep": 0.9}, False),
    "deepconf offline η=0.1": ("deepconf", {"deepconf_keep": 0.1}, False),
    "deepconf online η=0.9": ("deepconf", {"deepconf_warmup": 4, "deepconf_keep": 0.9}, False),
    "deepconf online η=0.1": ("deepconf", {"deepconf_warmup": 4, "deepconf_keep": 0.1}, False),
    "best-of-n": ("best-of-n", {}, True),
    "rebase": ("rebase", {"whole": False}, True),
    "particle-filter": ("particle-filter", {"whole": False}, True),
    "ab-mcts": ("ab-mcts", {}, True),
}


def problems(per_level: int) -> tuple[list[dict[str, Any]], list[Problem]]:
    records = [
        record
        for name, (p, wrong, error) in LEVELS.items()
        for record in make_problems(per_level, p_correct=p, wrong=wrong, steps=3, step_error=error,
                                    prefix=name)
    ]  # fmt: skip
    return records, [Problem.from_record(r) for r in records]


def samples(results: list[SearchResult]) -> float:
    """Traces begun per problem: whole samples, or first steps of step-by-step searches."""
    return sum(len(r.tree.children(0)) for r in results if r.tree is not None) / len(results)


async def sweep(url: str, items: list[Problem]) -> list[dict[str, Any]]:
    policy = OpenAIPolicy(url, "fake")
    prm = PoolingPRM(url, "fake-prm")
    levels = {level: level for level in LEVELS}
    rows: list[dict[str, Any]] = []

    async def measure(label: str, strategy: str, n: int, options: dict[str, Any], verified: bool) -> None:
        config = SearchConfig(strategy=strategy, n=n, sampling=SamplingParams(seed=1, temperature=1.0),
                              **options)  # fmt: skip
        started = time.perf_counter()
        results = await run(items, policy, config, verifier=prm if verified else None)
        wall_s = time.perf_counter() - started
        per_level = summarise(results, levels, method=label, n=n, wall_s=wall_s)
        for row in per_level:
            prefix = "" if row["level"] == "all" else row["level"]
            mine = [r for r in results if r.problem_id.startswith(prefix)]
            row["samples"] = samples(mine)
        rows.extend(per_level)
        print(f"{label:>24} N={n:<3} " + "  ".join(
            f"{r['level']} {r['accuracy']:.3f}/{r['completion_tokens']:.0f} tok/{r['samples']:.1f} samples"
            for r in per_level) + f"  {wall_s:.1f}s", flush=True)  # fmt: skip

    try:
        for label, (strategy, options, verified) in METHODS.items():
            for n in WIDTHS:
                mine = {**options, "deepconf_warmup": n // 4} if options.get("deepconf_warmup") else options
                await measure(label, strategy, n, mine, verified)
    finally:
        await policy.aclose()
        await prm.aclose()
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level, each method's cheapest N that reaches majority vote's accuracy at N = 64:
    majority vote's tokens and samples there over the method's (None: no N reached it)."""
    out = []
    for level in [*LEVELS, "all"]:
        (base,) = [r for r in rows if r["method"] == "majority-vote" and r["n"] == N and r["level"] == level]
        for method in METHODS:
            if method == "majority-vote":
                continue
            reached = [r for r in rows if r["method"] == method and r["level"] == level
                       and r["accuracy"] >= base["accuracy"]]  # fmt: skip
            best = min(reached, key=lambda r: r["completion_tokens"], default=None)
            out.append({
                "level": level, "method": method, "majority_accuracy": base["accuracy"],
                "n": None if best is None else best["n"],
                "accuracy": None if best is None else best["accuracy"],
                "token_ratio": None if best is None
                else base["completion_tokens"] / best["completion_tokens"],
                "sample_ratio": None if best is None else base["samples"] / best["samples"],
            })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=50)
    parser.add_argument("--prm-noise", type=float, default=1.0)
    args = parser.parse_args()
    records, items = problems(args.per_level)
    started = time.perf_counter()
    flags = ["--prm-noise", str(args.prm_noise), "--token-latency", "0.0002"]
    with tempfile.TemporaryDirectory() as tmp, spawn(flags, records, Path(tmp)) as url:
        rows = anyio.run(sweep, url, items)
    table = ratios(rows)
    print(f"\n{'level':<6} {'method':>24} {'majority@64':>12} {'at N':>5} {'accuracy':>9} "
          f"{'fewer tokens':>13} {'fewer samples':>14}")  # fmt: skip
    for r in table:
        if r["n"] is None:
            print(f"{r['level']:<6} {r['method']:>24} {r['majority_accuracy']:>12.3f}  never reached it")
            continue
        print(f"{r['level']:<6} {r['method']:>24} {r['majority_accuracy']:>12.3f} {r['n']:>5} "
              f"{r['accuracy']:>9.3f} {r['token_ratio']:>12.2f}x {r['sample_ratio']:>13.2f}x")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    payload = {"args": vars(args), "rows": rows, "ratios": table}
    (RESULTS / "adaptive_stop.json").write_text(json.dumps(payload, indent=1))
    plot(rows, "method", "Accuracy against tokens: the 2025 methods and majority vote (N = 8 to 64)",
         RESULTS / "adaptive_stop.png", log_x=True)  # fmt: skip
    print(f"{time.perf_counter() - started:.0f} s; wrote {RESULTS / 'adaptive_stop.json'} and .png")


if __name__ == "__main__":
    main()
