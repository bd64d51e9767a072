"""Tokens to reach majority vote's accuracy: the 2025 methods against voting and search.

On the synthetic server: problems with a clear mode (the right answer at 0.7, two
wrong ones sharing the rest) and hard ones (0.45, three wrong ones), three steps
each with a small per-step error, a PRM with noise, token confidences 3 lower
(``--confidence-margin``) on text heading to a wrong answer, and 0.2 ms between
streamed tokens. Majority vote at N = 8 to 64 draws the reference curve; at N = 64
(16 warm-up traces for DeepConf online) the methods run with their defaults:

- early-vote (Beta rule at 0.95, waves of 4), DeepConf offline and online (η = 0.9
  and 0.1), particle filtering and AB-MCTS (the noisy PRM), best-of-N and REBASE.

The compute unit is generated tokens per problem (the PRM's reading not counted);
samples are whole traces begun (each one request for early-vote waves of one, or a
server that ignores ``n``). Ratios are majority vote's tokens at N = 64 over the
method's, printed with the accuracy each reached.

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
from treesearch.backends.fake_server import make_problems, spawn
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM

RESULTS = Path(__file__).parent / "results"
# name: (P(right answer), wrong answers sharing the rest, per-step error rate)
LEVELS = {"clear": (0.7, 2, 0.02), "hard": (0.45, 3, 0.02)}
N = 64
# label: (strategy, options, uses the PRM)
METHODS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "early-vote (beta)": ("early-vote", {"wave": 4}, False),
    "early-vote (window 6)": ("early-vote", {"wave": 4, "stop_rule": "window", "stop_window": 6}, False),
    "deepconf offline η=0.9": ("deepconf", {"deepconf_keep": 0.9}, False),
    "deepconf offline η=0.1": ("deepconf", {"deepconf_keep": 0.1}, False),
    "deepconf online η=0.9": ("deepconf", {"deepconf_warmup": 16, "deepconf_keep": 0.9}, False),
    "deepconf online η=0.1": ("deepconf", {"deepconf_warmup": 16, "deepconf_keep": 0.1}, False),
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
        for n in (8, 16, 32, N):
            await measure("majority-vote", "majority-vote", n, {}, False)
        for label, (strategy, options, verified) in METHODS.items():
            await measure(label, strategy, N, options, verified)
    finally:
        await policy.aclose()
        await prm.aclose()
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each method against majority vote at N = 64, per level: tokens and samples saved, and
    the accuracy each reached."""
    out = []
    for level in [*LEVELS, "all"]:
        (base,) = [r for r in rows if r["method"] == "majority-vote" and r["n"] == N and r["level"] == level]
        for row in rows:
            if row["level"] != level or row["method"] == "majority-vote":
                continue
            out.append({
                "level": level, "method": row["method"],
                "accuracy": row["accuracy"], "majority_accuracy": base["accuracy"],
                "token_ratio": base["completion_tokens"] / max(row["completion_tokens"], 1e-9),
                "sample_ratio": base["samples"] / max(row["samples"], 1e-9),
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
    print(f"\n{'level':<6} {'method':>24} {'accuracy':>9} {'majority@64':>12} {'fewer tokens':>13} "
          f"{'fewer samples':>14}")  # fmt: skip
    for r in table:
        print(f"{r['level']:<6} {r['method']:>24} {r['accuracy']:>9.3f} {r['majority_accuracy']:>12.3f} "
              f"{r['token_ratio']:>12.2f}x {r['sample_ratio']:>13.2f}x")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    payload = {"args": vars(args), "rows": rows, "ratios": table}
    (RESULTS / "adaptive_stop.json").write_text(json.dumps(payload, indent=1))
    plot(rows, "method", "Accuracy against tokens: the 2025 methods and majority vote (N = 8 to 64)",
         RESULTS / "adaptive_stop.png", log_x=True)  # fmt: skip
    print(f"{time.perf_counter() - started:.0f} s; wrote {RESULTS / 'adaptive_stop.json'} and .png")


if __name__ == "__main__":
    main()
