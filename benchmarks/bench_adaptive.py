"""Compute-optimal (adaptive) against each fixed strategy, on synthetic problems of five difficulties.

Two disjoint sets of synthetic problems (calibration and test), each spread over
five levels: the right answer's probability falls from level 1 to 5, steps err
more often, and revisions fix wrong answers less often and break right ones more
(the synthetic server's revise_fix / revise_break, set here to mirror what Snell
et al. found, not discovered by this benchmark). The PRM is the server's noisy one
(``--prm-noise``, in logits). ``fit_policy_table`` runs the grid (best-of-N
weighted, majority vote, beam M=2 and 4, REBASE, revisions at ratios 1/4 and 4) on
the calibration set at every N and fits the table (predicted difficulty from a
probe of ``--probe-k`` samples); the same grid then runs on the test set (the fixed
strategies' curves), and adaptive runs there at every N, its probe included in its
tokens. The headline: the generated tokens adaptive needs to reach best-of-N
weighted's accuracy at its largest N (log-linear between adaptive's points), as a
ratio to what best-of-N weighted spent there.

    python benchmarks/bench_adaptive.py [--per-level 50] [--prm-noise 3.0] [--probe-k 2]

Writes benchmarks/results/adaptive.json and adaptive.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
from curves import plot, summarise

from treesearch import Problem, SamplingParams, SearchConfig, StepFormat, run
from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM
from treesearch.optimal.choose import apply_cell
from treesearch.optimal.difficulty import Cell
from treesearch.optimal.fit import DEFAULT_GRID, fit_policy_table

RESULTS = Path(__file__).parent / "results"
# level: (P(right answer), per-step error, revise_fix, revise_break); two wrong answers share the rest
LEVELS = {
    "level1": (0.7, 0.05, 0.7, 0.02),
    "level2": (0.5, 0.07, 0.5, 0.05),
    "level3": (0.38, 0.1, 0.3, 0.15),
    "level4": (0.28, 0.12, 0.1, 0.35),
    "level5": (0.18, 0.15, 0.0, 0.6),
}
BUDGETS = (2, 4, 8, 16, 32)
STEPS = 5


def problems(per_level: int, split: str) -> tuple[list[dict[str, Any]], list[Problem]]:
    records = [
        record
        for name, (p, error, fix, breaks) in LEVELS.items()
        for record in make_problems(per_level, p_correct=p, wrong=2, steps=STEPS, step_error=error,
                                    revise_fix=fix, revise_break=breaks, prefix=f"{split}-{name}-")
    ]  # fmt: skip
    return records, [Problem.from_record(r) for r in records]


def tokens_to_reach(curve: list[dict[str, Any]], target: float) -> float | None:
    """Generated tokens at which a rising curve first reaches ``target`` (log-linear between
    points); None if it never does."""
    points = sorted((r["completion_tokens"], r["accuracy"]) for r in curve)
    if points[0][1] >= target:
        return points[0][0]
    for (t0, a0), (t1, a1) in itertools.pairwise(points):
        if a0 < target <= a1:
            share = (target - a0) / (a1 - a0)
            return math.exp(math.log(t0) + share * (math.log(t1) - math.log(t0)))
    return None


async def bench(url: str, calibration: list[Problem], test: list[Problem], probe_k: int) -> dict[str, Any]:
    policy = OpenAIPolicy(url, "fake")
    prm = PoolingPRM(url, "fake-prm")
    levels = {name: f"test-{name}-" for name in LEVELS}
    base = SearchConfig(
        whole=False, sampling=SamplingParams(seed=1, temperature=1.0), step=StepFormat(max_depth=12)
    )
    rows: list[dict[str, Any]] = []
    try:
        started = time.perf_counter()
        fitted = await fit_policy_table(
            calibration, policy, base, budgets=BUDGETS, probe_k=probe_k, verifier=prm
        )
        fit_s = time.perf_counter() - started
        print(
            f"fitted on {len(calibration)} problems in {fit_s:.0f} s; cv accuracy {fitted.table.cv_accuracy}"
        )
        for grid_cell in DEFAULT_GRID:
            for budget in BUDGETS:
                cell = Cell(strategy=grid_cell.strategy, n=budget, options=dict(grid_cell.options))
                results = await run(test, policy, apply_cell(cell, base), verifier=prm, keep_trees=False)
                rows += _show(summarise(results, levels, strategy=cell.label(), n=budget))
        for budget in BUDGETS:
            config = replace(base, strategy="adaptive", n=budget, policy_table=fitted.table)
            results = await run(test, policy, config, verifier=prm, keep_trees=False)
            rows += _show(summarise(results, levels, strategy="adaptive", n=budget))
    finally:
        await policy.aclose()
        await prm.aclose()
    return {"table": fitted.table.to_json(), "rows": rows, "fit_s": fit_s}


def _show(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Print one strategy's accuracy/tokens per level at one N; pass the rows on."""
    cells = " ".join(f"{r['accuracy']:.2f}/{r['completion_tokens']:.0f}" for r in rows)
    print(f"{rows[0]['strategy']:>32} N={rows[0]['n']:<3} {cells}", flush=True)
    return rows


def headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    every = [r for r in rows if r["level"] == "all"]
    weighted = max((r for r in every if r["strategy"] == "weighted-vote"), key=lambda r: r["n"])
    adaptive = [r for r in every if r["strategy"] == "adaptive"]
    needed = tokens_to_reach(adaptive, weighted["accuracy"])
    return {
        "weighted_n": weighted["n"],
        "weighted_accuracy": weighted["accuracy"],
        "weighted_tokens": weighted["completion_tokens"],
        "adaptive_tokens_needed": needed,
        "ratio": None if needed is None else weighted["completion_tokens"] / needed,
        "at_least": needed is not None and needed == min(r["completion_tokens"] for r in adaptive),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=50)
    parser.add_argument("--prm-noise", type=float, default=3.0)
    parser.add_argument("--probe-k", type=int, default=2)
    args = parser.parse_args()
    calibration_records, calibration = problems(args.per_level, "calib")
    test_records, test = problems(args.per_level, "test")
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        spawn(["--prm-noise", str(args.prm_noise)], calibration_records + test_records, Path(tmp)) as url,
    ):
        out = anyio.run(bench, url, calibration, test, args.probe_k)
    out["headline"] = headline(out["rows"])
    out["args"] = vars(args)
    out["wall_s"] = time.perf_counter() - started
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "adaptive.json").write_text(json.dumps(out, indent=1))
    plot(out["rows"], "strategy", "adaptive vs fixed strategies on the synthetic task (N = 2 ... 32)",
         RESULTS / "adaptive.png", log_x=True)  # fmt: skip
    h = out["headline"]
    print(json.dumps(h))
    print(f"{out['wall_s']:.0f} s; wrote {RESULTS / 'adaptive.json'} and adaptive.png")


if __name__ == "__main__":
    main()
