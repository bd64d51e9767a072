"""Accuracy against tokens for every strategy, on synthetic problems of three difficulties.

The synthetic server's problems: the right answer is the likeliest (easy), about
as likely as each wrong one (medium) or less likely (hard); each step may err
(switching the path to a wrong answer), and the PRM scores a step high when it
still points to the right answer, with noise (``--prm-noise``, in logits). The
compute unit is generated (completion) tokens per problem, which counts the
policy's samples, lookahead rollouts and judge generations, not the PRM's
reading of paths.

    python benchmarks/bench_search.py [--per-level 60] [--prm-noise 1.0]

Writes benchmarks/results/search.json and search.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from treesearch import Problem, SamplingParams, SearchConfig, SearchResult, StepFormat, run
from treesearch.backends.fake_server import make_problems, spawn
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM

RESULTS = Path(__file__).parent / "results"
# name: (P(right answer), wrong answers sharing the rest, per-step error rate)
LEVELS = {"easy": (0.6, 2, 0.05), "medium": (0.34, 2, 0.1), "hard": (0.2, 2, 0.15)}
STRATEGIES: dict[str, dict[str, Any]] = {
    "majority-vote": {},
    "best-of-n": {},
    "weighted-vote": {},
    "beam": {"beam_width": 4},
    "lookahead": {"beam_width": 4, "lookahead": 2},
    "dvts": {"beam_width": 4},
    "rebase": {"rebase_temperature": 0.1},
    "mcts": {"beam_width": 4},
}
WIDTHS = (4, 8, 16, 32)
STEPS = 5


def problems(per_level: int) -> tuple[list[dict[str, Any]], list[Problem]]:
    records = [
        record
        for name, (p, wrong, error) in LEVELS.items()
        for record in make_problems(per_level, p_correct=p, wrong=wrong, steps=STEPS,
                                    step_error=error, prefix=name)
    ]  # fmt: skip
    return records, [Problem.from_record(r) for r in records]


async def sweep(url: str, items: list[Problem]) -> list[dict[str, Any]]:
    policy = OpenAIPolicy(url, "fake")
    prm = PoolingPRM(url, "fake-prm")
    rows = []
    try:
        for strategy, options in STRATEGIES.items():
            for width in WIDTHS:
                config = SearchConfig(
                    strategy=strategy,
                    n=width,
                    whole=False,
                    sampling=SamplingParams(seed=1, temperature=1.0),
                    step=StepFormat(max_depth=12),
                    **options,
                )
                started = time.perf_counter()
                verifier = None if strategy == "majority-vote" else prm
                results = await run(items, policy, config, verifier=verifier, keep_trees=False)
                rows += summarise(strategy, width, results, time.perf_counter() - started)
                print(f"{strategy:>14} N={width:<3} " + "  ".join(
                    f"{r['level']} {r['accuracy']:.3f}/{r['completion_tokens']:.0f}"
                    for r in rows[-len(LEVELS) - 1:]), flush=True)  # fmt: skip
    finally:
        await policy.aclose()
        await prm.http.aclose()
    return rows


def summarise(
    strategy: str, width: int, results: Sequence[SearchResult], wall_s: float
) -> list[dict[str, Any]]:
    rows = []
    for level in [*LEVELS, "all"]:
        mine = [r for r in results if level == "all" or r.problem_id.startswith(level)]
        rows.append({
            "strategy": strategy, "n": width, "level": level,
            "accuracy": sum(bool(r.correct) for r in mine) / len(mine),
            "completion_tokens": sum(r.usage.completion_tokens for r in mine) / len(mine),
            "total_tokens": sum(r.usage.total_tokens for r in mine) / len(mine),
            "requests": sum(r.usage.requests for r in mine) / len(mine),
            "wall_s": wall_s,
        })  # fmt: skip
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [*LEVELS, "all"]
    figure, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4.2), sharey=True)
    for axis, level in zip(axes, levels, strict=True):
        for strategy in STRATEGIES:
            mine = sorted((r for r in rows if r["strategy"] == strategy and r["level"] == level),
                          key=lambda r: r["completion_tokens"])  # fmt: skip
            axis.plot([r["completion_tokens"] for r in mine], [r["accuracy"] for r in mine],
                      marker="o", label=strategy)  # fmt: skip
        axis.set_xscale("log")
        axis.set_title(level)
        axis.set_xlabel("generated tokens per problem")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[-1].legend(fontsize=8)
    figure.suptitle("treesearch strategies on the synthetic task (N = 4, 8, 16, 32)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=60)
    parser.add_argument("--prm-noise", type=float, default=1.0)
    args = parser.parse_args()
    records, items = problems(args.per_level)
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        spawn(["--prm-noise", str(args.prm_noise)], records, Path(tmp)) as url,
    ):
        rows = anyio.run(sweep, url, items)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "search.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    plot(rows, RESULTS / "search.png")
    print(f"{time.perf_counter() - started:.0f} s; wrote {RESULTS / 'search.json'} and search.png")


if __name__ == "__main__":
    main()
