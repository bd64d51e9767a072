"""What search buys a 270M model: arithmetic chains on Gemma 3 270M, in process, on the CPU.

Problems like "Q: 7 + 5 + 3" (one line per step, few-shot prompt) at two
difficulty levels (3 or 4 terms). Strategies at N = 2, 4, 8 and 16 paths:
majority vote and best-of-N (exact checker) over whole samples; beam search
(M = 2) and REBASE step by step, each guided by the exact step checker (an
exact PRM), and at N <= 4 by the model's own yes/no judgement of each line (a
noisy, logprob PRM). Accuracy and generated tokens per problem; the judge's
one-token answers count as generated tokens too. The batching engine serves
eight problems at once.

    python benchmarks/bench_real.py [--per-level 20] [--widths 2,4,8,16]

Writes benchmarks/results/real.json and real.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import anyio
from curves import plot, summarise

from treesearch import CallableVerifier, SamplingParams, SearchConfig, run
from treesearch.arithmetic import JUDGE_TEMPLATE, STEP_FORMAT, make_problems, step_scores
from treesearch.backends.llamacpp.endpoint import LlamaCppEndpoint
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import LogprobVerifier

RESULTS = Path(__file__).parent / "results"
LEVELS = {"3 terms": 3, "4 terms": 4}
PREFIXES = {name: f"{terms}t-" for name, terms in LEVELS.items()}
# label: (strategy, step by step, verifier)
PLAN = {
    "majority vote": ("majority-vote", False, None),
    "best-of-N, exact": ("best-of-n", False, "exact"),
    "beam, exact PRM": ("beam", True, "exact"),
    "beam, model judge": ("beam", True, "judge"),
    "REBASE, exact PRM": ("rebase", True, "exact"),
    "REBASE, model judge": ("rebase", True, "judge"),
}
JUDGE_MAX_N = 4  # the model-judge rows stop here: at N = 2 and 4 they measured noise


async def sweep(per_level: int, widths: list[int]) -> list[dict[str, Any]]:
    problems = [
        problem
        for name, terms in LEVELS.items()
        for problem in make_problems(per_level, terms=terms, low=1, high=9, prefix=PREFIXES[name])
    ]
    endpoint = LlamaCppEndpoint(n_ctx=4096)
    policy = OpenAIPolicy(endpoint, "gemma-3-270m")
    verifiers = {
        "exact": CallableVerifier(step_scores),
        "judge": LogprobVerifier(endpoint, "gemma-3-270m", template=JUDGE_TEMPLATE, joiner="\n"),
    }
    rows: list[dict[str, Any]] = []
    try:
        for width in widths:
            for label, (strategy, steps, verifier) in PLAN.items():
                if verifier == "judge" and width > JUDGE_MAX_N:
                    continue
                config = SearchConfig(
                    strategy=strategy, n=width, whole=not steps, beam_width=2, step=STEP_FORMAT,
                    sampling=SamplingParams(temperature=0.7, seed=0),
                )  # fmt: skip
                started = time.perf_counter()
                results = await run(
                    problems, policy, config,
                    verifier=None if verifier is None else verifiers[verifier], keep_trees=False,
                    max_problems_in_flight=8,
                )  # fmt: skip
                seconds = time.perf_counter() - started
                rows += summarise(results, PREFIXES, label=label, n=width, seconds=seconds)
                print(f"N={width} {label:<22} " + "  ".join(
                    f"{r['level']}: {r['accuracy']:.2f} ({r['completion_tokens']:.0f} tok)"
                    for r in rows[-3:]) + f"  {seconds:.0f}s", flush=True)  # fmt: skip
    finally:
        await endpoint.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=20)
    parser.add_argument("--widths", default="2,4,8,16")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = anyio.run(sweep, args.per_level, [int(w) for w in args.widths.split(",")])
    elapsed = time.perf_counter() - started
    RESULTS.mkdir(exist_ok=True)
    payload = {"args": vars(args), "seconds": elapsed, "rows": rows}
    (RESULTS / "real.json").write_text(json.dumps(payload, indent=1))
    title = "Gemma 3 270M on arithmetic chains: search at N = " + args.widths.replace(",", ", ") + " paths"
    plot(rows, "label", title, RESULTS / "real.png")
    print(f"{elapsed:.0f} s in all; wrote {RESULTS / 'real.json'} and real.png")


if __name__ == "__main__":
    main()
