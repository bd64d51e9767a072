"""What search buys a 270M model: arithmetic chains on Gemma 3 270M, in process, on the CPU.

Problems like "Q: 7 + 5 + 3" (one line per step, few-shot prompt) at two
difficulty levels (3 or 4 terms). Strategies at N = 2 and 4 paths: majority
vote and best-of-N (exact checker) over whole samples; beam search (M = 2) and
REBASE step by step, each guided by the exact step checker (an exact PRM) and
by the model's own yes/no judgement of each line (a noisy, logprob PRM).
Accuracy and generated tokens per problem; the judge's one-token answers count
as generated tokens too.

    python benchmarks/bench_real.py [--per-level 20] [--widths 2,4]

Writes benchmarks/results/real.json and real.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import anyio

from treesearch import CallableVerifier, SamplingParams, SearchConfig, run
from treesearch.arithmetic import JUDGE_TEMPLATE, STEP_FORMAT, make_problems, step_scores
from treesearch.backends.llamacpp import LlamaCppEndpoint
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import LogprobVerifier

RESULTS = Path(__file__).parent / "results"
LEVELS = {"3 terms": 3, "4 terms": 4}
# label: (strategy, step by step, verifier)
PLAN = {
    "majority vote": ("majority-vote", False, None),
    "best-of-N, exact": ("best-of-n", False, "exact"),
    "beam, exact PRM": ("beam", True, "exact"),
    "beam, model judge": ("beam", True, "judge"),
    "REBASE, exact PRM": ("rebase", True, "exact"),
    "REBASE, model judge": ("rebase", True, "judge"),
}


async def sweep(per_level: int, widths: list[int]) -> list[dict[str, Any]]:
    problems = [
        problem
        for name, terms in LEVELS.items()
        for problem in make_problems(per_level, terms=terms, low=1, high=9, prefix=f"{terms}t-")
    ]
    endpoint = LlamaCppEndpoint(n_ctx=1024)
    policy = OpenAIPolicy(endpoint, "gemma-3-270m")
    verifiers = {
        "exact": CallableVerifier(step_scores),
        "judge": LogprobVerifier(endpoint, "gemma-3-270m", template=JUDGE_TEMPLATE, joiner="\n"),
    }
    rows: list[dict[str, Any]] = []
    try:
        for width in widths:
            for label, (strategy, steps, verifier) in PLAN.items():
                config = SearchConfig(
                    strategy=strategy, n=width, whole=not steps, beam_width=2, step=STEP_FORMAT,
                    sampling=SamplingParams(temperature=0.7, seed=0),
                )  # fmt: skip
                started = time.perf_counter()
                results = await run(
                    problems, policy, config,
                    verifier=None if verifier is None else verifiers[verifier], keep_trees=False,
                )  # fmt: skip
                seconds = time.perf_counter() - started
                for level, terms in [*LEVELS.items(), ("all", 0)]:
                    mine = [r for r in results if not terms or r.problem_id.startswith(f"{terms}t-")]
                    rows.append({
                        "label": label, "n": width, "level": level,
                        "accuracy": sum(bool(r.correct) for r in mine) / len(mine),
                        "completion_tokens": sum(r.usage.completion_tokens for r in mine) / len(mine),
                        "requests": sum(r.usage.requests for r in mine) / len(mine),
                        "seconds": seconds,
                    })  # fmt: skip
                print(f"N={width} {label:<22} " + "  ".join(
                    f"{r['level']}: {r['accuracy']:.2f} ({r['completion_tokens']:.0f} tok)"
                    for r in rows[-3:]) + f"  {seconds:.0f}s", flush=True)  # fmt: skip
    finally:
        await endpoint.aclose()
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [*LEVELS, "all"]
    figure, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4.2), sharey=True)
    for axis, level in zip(axes, levels, strict=True):
        for label in PLAN:
            mine = sorted((r for r in rows if r["label"] == label and r["level"] == level),
                          key=lambda r: r["n"])  # fmt: skip
            axis.plot([r["completion_tokens"] for r in mine], [r["accuracy"] for r in mine],
                      marker="o", label=label)  # fmt: skip
        axis.set_title(level)
        axis.set_xlabel("generated tokens per problem")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8, loc="upper left")
    figure.suptitle("Gemma 3 270M on arithmetic chains: search at N = 2 and 4 paths")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=20)
    parser.add_argument("--widths", default="2,4")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = anyio.run(sweep, args.per_level, [int(w) for w in args.widths.split(",")])
    elapsed = time.perf_counter() - started
    RESULTS.mkdir(exist_ok=True)
    payload = {"args": vars(args), "seconds": elapsed, "rows": rows}
    (RESULTS / "real.json").write_text(json.dumps(payload, indent=1))
    plot(rows, RESULTS / "real.png")
    print(f"{elapsed:.0f} s in all; wrote {RESULTS / 'real.json'} and real.png")


if __name__ == "__main__":
    main()
