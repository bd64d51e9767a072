"""Accuracy against tokens for every strategy, on synthetic problems of three difficulties.

The synthetic server's problems: the right answer is the likeliest (easy), about
as likely as each wrong one (medium) or less likely (hard); each step may err
(switching the path to a wrong answer), and the PRM scores a step high when it
still points to the right answer, with noise (``--prm-noise``, in logits). The
compute unit is generated (completion) tokens per problem, which counts the
policy's samples, lookahead rollouts and judge generations, not the PRM's
reading of paths. Particle filtering runs twice: its particles weighted by the
PRM's logit (Puri et al.'s code, the default) and by its probability.

    python benchmarks/bench_search.py [--per-level 60] [--prm-noise 3.0]

Writes benchmarks/results/search.json and search.png.
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

from treesearch import Problem, SamplingParams, SearchConfig, StepFormat, run
from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM

RESULTS = Path(__file__).parent / "results"
# name: (P(right answer), wrong answers sharing the rest, per-step error rate)
LEVELS = {"easy": (0.6, 2, 0.05), "medium": (0.34, 2, 0.1), "hard": (0.2, 2, 0.15)}
# label: (strategy, its options)
STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "majority-vote": ("majority-vote", {}),
    "best-of-n": ("best-of-n", {}),
    "weighted-vote": ("weighted-vote", {}),
    "beam": ("beam", {"beam_width": 4}),
    "lookahead": ("lookahead", {"beam_width": 4, "lookahead": 2}),
    "dvts": ("dvts", {"beam_width": 4}),
    "rebase": ("rebase", {"rebase_temperature": 0.1}),
    "mcts": ("mcts", {"beam_width": 4}),
    # Puri et al.'s weights, softmax(logit(score)), against softmax(score), both at T = 1.
    "particles (logit)": ("particle-filter", {"particle_weighting": "logit"}),
    "particles (prob.)": ("particle-filter", {"particle_weighting": "probability"}),
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
        for label, (strategy, options) in STRATEGIES.items():
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
                wall_s = time.perf_counter() - started
                rows += summarise(results, {level: level for level in LEVELS}, strategy=label, n=width,
                                  wall_s=wall_s)  # fmt: skip
                print(f"{label:>17} N={width:<3} " + "  ".join(
                    f"{r['level']} {r['accuracy']:.3f}/{r['completion_tokens']:.0f}"
                    for r in rows[-len(LEVELS) - 1:]), flush=True)  # fmt: skip
    finally:
        await policy.aclose()
        await prm.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=60)
    parser.add_argument("--prm-noise", type=float, default=3.0)
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
    plot(rows, "strategy", "treesearch strategies on the synthetic task (N = 4, 8, 16, 32)",
         RESULTS / "search.png", log_x=True)  # fmt: skip
    print(f"{time.perf_counter() - started:.0f} s; wrote {RESULTS / 'search.json'} and search.png")


if __name__ == "__main__":
    main()
