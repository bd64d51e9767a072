"""Accuracy against the thinking budget on the synthetic server (s1's budget forcing).

Thinking problems: each trace thinks about ``--think`` tokens (400), in paragraphs; its
first guess is wrong and it settles on its final answer (right with P = 0.7) at a paragraph
drawn evenly, so a thinking cut at T tokens answers right less often the smaller T is. Each
trace is one sample (majority vote of N = 1), answered as s1 does: the thinking cut at T
(``--thinking-budget``), the end tag and "Final Answer:" appended, the answer asked for in one
short request. A second series extends the thinking instead: ``--min-thinking`` above any
trace's length, so the end of each thinking is suppressed k times (``--max-waits``) by
"Wait", after which the synthetic model checks once more and fixes a wrong answer with
P = ``--wait-fix`` (0.15). s1 reports the shape: accuracy rises with the thinking budget,
then flattens; "Wait" adds a little more. Every run is seeded (``--seed 1``).

    python benchmarks/bench_thinking.py [--problems 300]

Writes benchmarks/results/thinking.json (the date, commit, machine, command and rows) and
benchmarks/results/thinking.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import matplotlib
from bench_compare import commit, machine

from treesearch import Problem, SamplingParams, SearchConfig, StepFormat, run
from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems
from treesearch.backends.openai_compat import OpenAIPolicy

matplotlib.use("Agg")

RESULTS = Path(__file__).parent / "results"
THINK, P_RIGHT, WAIT_FIX = 400, 0.7, 0.15
BUDGETS = (25, 50, 100, 150, 200, 300, 400, 600, 800, 1200)
WAITS = (1, 2, 4, 8, 16)
# label: the step format of each point, and the point's x label value
CUT = "cut at T (--thinking-budget T)"
SERIES: dict[str, list[tuple[int, StepFormat]]] = {
    CUT: [(t, StepFormat(thinking_budget=t)) for t in BUDGETS],
    "extended: Wait x k (--min-thinking, --max-waits k)": [
        (k, StepFormat(min_thinking=100 * THINK, max_waits=k)) for k in WAITS
    ],
}


async def measure(url: str, items: list[Problem]) -> list[dict[str, Any]]:
    policy = OpenAIPolicy(url, "fake")
    rows: list[dict[str, Any]] = []
    try:
        for label, points in SERIES.items():
            for setting, step in points:
                config = SearchConfig(
                    strategy="majority-vote", n=1, sampling=SamplingParams(seed=1), step=step
                )
                results = await run(items, policy, config, keep_trees=False)
                count = len(results)
                rows.append({
                    "series": label, "setting": setting,
                    "accuracy": sum(bool(r.correct) for r in results) / count,
                    "reasoning_tokens": sum(r.usage.reasoning_tokens for r in results) / count,
                    "completion_tokens": sum(r.usage.completion_tokens for r in results) / count,
                    "total_tokens": sum(r.usage.total_tokens for r in results) / count,
                    "requests": sum(r.usage.requests for r in results) / count,
                })  # fmt: skip
                row = rows[-1]
                print(f"{label[:24]:>24} {setting:>4}: accuracy {row['accuracy']:.3f}, thinking "
                      f"{row['reasoning_tokens']:.0f}, requests {row['requests']:.2f}")  # fmt: skip
    finally:
        await policy.aclose()
    return rows


def plot(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    """Two panels: accuracy against the thinking budget T (s1's axis: flat once the whole
    trace fits), and both series against the thinking tokens they spent."""
    import matplotlib.pyplot as plt

    figure, (by_budget, by_tokens) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    cut = [r for r in rows if r["series"] == CUT]
    by_budget.plot([r["setting"] for r in cut], [r["accuracy"] for r in cut], marker="o")
    by_budget.axvline(THINK, color="grey", linestyle=":", label=f"a whole trace (about {THINK} tokens)")
    by_budget.set_xlabel("thinking budget T (--thinking-budget)")
    by_budget.set_ylabel("accuracy (one trace)")
    by_budget.legend(fontsize=8, loc="lower right")
    for label in SERIES:
        mine = sorted((r for r in rows if r["series"] == label), key=lambda r: r["reasoning_tokens"])
        by_tokens.plot(
            [r["reasoning_tokens"] for r in mine], [r["accuracy"] for r in mine], marker="o", label=label
        )
    by_tokens.set_xlabel("thinking tokens per problem (mean)")
    by_tokens.legend(fontsize=8, loc="lower right")
    for axis in (by_budget, by_tokens):
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=300)
    args = parser.parse_args()
    made = make_problems(args.problems, p_correct=P_RIGHT, prefix="think", think=THINK, wait_fix=WAIT_FIX)
    items = [Problem.from_record(record) for record in made]
    RESULTS.mkdir(exist_ok=True)
    started, at = time.perf_counter(), commit()
    with tempfile.TemporaryDirectory() as tmp, spawn([], made, Path(tmp)) as url:
        rows = anyio.run(measure, url, items)
    saved = {
        "command": f"python benchmarks/bench_thinking.py --problems {args.problems}",
        "date": datetime.date.today().isoformat(),
        "commit": at,
        "machine": machine(),
        "problems": f"{args.problems} thinking tasks: {THINK} thinking tokens, P(right) {P_RIGHT}, "
        f"wait_fix {WAIT_FIX}",
        "wall_s": round(time.perf_counter() - started),
        "rows": rows,
    }
    (RESULTS / "thinking.json").write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")
    plot(
        rows,
        f"s1's budget forcing on the synthetic server ({args.problems} problems)",
        RESULTS / "thinking.png",
    )
    print(f"{time.perf_counter() - started:.0f} s; wrote thinking.json and thinking.png", flush=True)


if __name__ == "__main__":
    main()
