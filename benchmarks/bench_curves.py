"""A scaling curve from one run against separate runs at each N, on the synthetic server.

Problems of three difficulties (the right answer at 0.4, 0.6 and 0.75; one or two wrong
answers sharing the rest; a PRM with noise): one weighted-vote run at N = 16 gives, through
``treesearch.evaluate.curves`` (what ``treesearch report --curve`` prints), the expected
accuracy of majority vote, weighted vote, best-of-k and pass@k at k = 1, 2, 4, 8, 16. Then
majority-vote, weighted-vote and best-of-n each run separately at N = 1, 2, 4, 8 and 16, each
with a seed of its own, and each separate accuracy is set against the curve's value at that
k: the difference, and whether the curve lies in the separate run's Wilson 95% interval;
and the tokens per problem the curve puts at k (k/N of the run's) against the separate run's.

    python benchmarks/bench_curves.py [--per-level 200] [--prm-noise 1.0]

Writes benchmarks/results/curves.json and curves.png (the curve as lines, the separate runs
as points with their Wilson intervals).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import matplotlib  # the bench extra; imported first so a missing one fails before the runs

from treesearch import Problem, SamplingParams, SearchConfig, run
from treesearch.answers.equivalence import MathEquivalence
from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM
from treesearch.evaluate.curves import Curve, render, run_curve
from treesearch.evaluate.stats import wilson_interval
from treesearch.runs.loop import read_output

matplotlib.use("Agg")

RESULTS = Path(__file__).parent / "results"
# name: (P(right answer), wrong answers sharing the rest)
LEVELS = {"hard": (0.4, 2), "mid": (0.6, 1), "easy": (0.75, 2)}
N = 16
KS = (1, 2, 4, 8, 16)
# separate runs: strategy, and the curve's column it is set against
SEPARATE = {"majority-vote": "majority", "weighted-vote": "weighted", "best-of-n": "best"}


def problems(per_level: int) -> list[dict[str, Any]]:
    return [
        record
        for name, (p, wrong) in LEVELS.items()
        for record in make_problems(per_level, p_correct=p, wrong=wrong, prefix=name)
    ]


async def runs(url: str, items: list[Problem], folder: Path) -> dict[tuple[str, int], Path]:
    """The curve's run (weighted-vote, N = 16, seed 1) under ("curve", 16), and every separate
    run under (strategy, N), each with its own seed."""
    policy, prm = OpenAIPolicy(url, "fake"), PoolingPRM(url, "fake-prm")
    plan = [("curve", "weighted-vote", N, 1)]
    plan += [(s, s, k, 100 + 10 * i + j) for i, s in enumerate(SEPARATE) for j, k in enumerate(KS)]
    paths = {}
    try:
        for label, strategy, n, seed in plan:
            path = folder / f"{label}-{n}.jsonl"
            config = SearchConfig(strategy=strategy, n=n, sampling=SamplingParams(seed=seed))
            verifier = None if strategy == "majority-vote" else prm
            await run(items, policy, config, verifier=verifier, output=path, keep_trees=False)
            paths[label, n] = path
    finally:
        await policy.aclose()
        await prm.aclose()
    return paths


def comparison(curve: Curve, paths: dict[tuple[str, int], Path]) -> list[dict[str, Any]]:
    at = {p.k: p for p in curve.points}
    rows = []
    for strategy, column in SEPARATE.items():
        for k in KS:
            graded = list(read_output(paths[strategy, k]).values())
            right = sum(bool(r["correct"]) for r in graded)
            low, high = wilson_interval(right, len(graded)) or (0.0, 1.0)
            predicted = getattr(at[k], column)
            separate = right / len(graded)
            tokens = sum(r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"] for r in graded)
            rows.append({
                "strategy": strategy, "k": k, "curve": predicted, "separate": separate,
                "problems": len(graded), "wilson_95": [low, high], "difference": predicted - separate,
                "curve_inside": low <= predicted <= high,
                "tokens_curve": at[k].tokens, "tokens_separate": tokens / len(graded),
            })  # fmt: skip
    return rows


def plot(curve: Curve, rows: list[dict[str, Any]], path: Path) -> None:
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7.5, 4.8))
    ks = [p.k for p in curve.points]
    colours = {"majority": "C0", "weighted": "C1", "best": "C2"}
    for column, colour in colours.items():
        axes.plot(ks, [getattr(p, column) for p in curve.points], color=colour, marker="o",
                  label=f"{column} (curve from one run)")  # fmt: skip
    axes.plot(ks, [p.pass_at_k for p in curve.points], color="C3", marker="o", label="pass@k (curve)")
    for strategy, column in SEPARATE.items():
        mine = [r for r in rows if r["strategy"] == strategy]
        axes.errorbar([r["k"] * 1.06 for r in mine], [r["separate"] for r in mine],
                      yerr=[[r["separate"] - r["wilson_95"][0] for r in mine],
                            [r["wilson_95"][1] - r["separate"] for r in mine]],
                      fmt="s", color=colours[column], mfc="white", capsize=3,
                      label=f"{strategy}, separate runs (Wilson 95%)")  # fmt: skip
    axes.set_xscale("log", base=2)
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.set_xlabel("k (samples per problem)")
    axes.set_ylabel("accuracy")
    axes.set_title(f"one weighted-vote run at N = {N} against separate runs, {curve.problems} problems")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.machine()
    names = (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    return next(names, platform.machine())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=200)
    parser.add_argument("--prm-noise", type=float, default=1.0)
    args = parser.parse_args()
    records = problems(args.per_level)
    items = [Problem.from_record(r) for r in records]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        folder = Path(workdir)
        with spawn(["--prm-noise", str(args.prm_noise)], records, folder) as url:
            paths = anyio.run(runs, url, items, folder)
        ran = time.perf_counter() - started
        curve_started = time.perf_counter()
        with MathEquivalence() as same:
            curve = run_curve("curve.jsonl", read_output(paths["curve", N]).values(), same)
        curve_s = time.perf_counter() - curve_started
        rows = comparison(curve, paths)
    table = render([curve], "table")
    print(table)
    for r in rows:
        low, high = r["wilson_95"]
        print(f"{r['strategy']:14} k={r['k']:2}  curve {r['curve']:.4f}  separate {r['separate']:.4f}  "
              f"Wilson {low:.4f} to {high:.4f}  inside {r['curve_inside']}  "
              f"tokens {r['tokens_curve']:.0f} / {r['tokens_separate']:.0f}")  # fmt: skip
    inside = sum(r["curve_inside"] for r in rows)
    print(f"{inside} of {len(rows)} separate runs' intervals hold the curve; "
          f"mean |difference| {sum(abs(r['difference']) for r in rows) / len(rows):.4f}; "
          f"runs {ran:.0f} s, curve {curve_s:.2f} s")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()  # fmt: skip
    result = {
        "command": "python benchmarks/bench_curves.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "commit": commit,
        "machine": f"{cpu()}, {os.cpu_count()} cores, {platform.system()}",
        "levels": LEVELS,
        "runs_s": round(ran, 1),
        "curve_s": round(curve_s, 2),
        "curve": curve.to_record() | {"run": f"weighted-vote, N = {N}, seed 1"},
        "separate": rows,
        "inside": f"{inside}/{len(rows)}",
    }
    (RESULTS / "curves.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot(curve, rows, RESULTS / "curves.png")


if __name__ == "__main__":
    main()
