"""Reasoning-model benchmarks on the synthetic server, in sections (``--sections``).

``selection``: accuracy against tokens on hard problems for majority vote, generative
selection, recursive self-aggregation, online DeepConf and, where the registry has them,
self-certainty best-of-N and Borda voting. Two kinds of hard problem, 4-step solutions:
"minority" (the right answer has P = 0.3, each of two wrong ones 0.35, so a vote converges
on a wrong one) and "rare" (the right answer has P = 0.25, each of five wrong ones 0.15, so
a vote finds it given enough samples). The server's selection and aggregation model is its
default (``serve-fake --help``: a selection names a shown right solution with P = 0.7, an
aggregation answers right with P = 0.6 when a right solution is shown, 0.05 when none is),
and its token confidences separate right from wrong text by its default margin. Tokens are
total tokens per problem, prompts included: a selection's or aggregation's cost is mostly
the solutions its prompt shows. Every run is seeded (``--seed 1``).

    python benchmarks/bench_reasoning.py [--per-level 100] [--sections selection]

``selection-weak`` repeats it with a weaker selection and aggregation model.

Writes benchmarks/results/reasoning.json (the date, commit, machine and command, and each
section's rows; a section not run keeps its earlier rows) and reasoning-SECTION.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from bench_compare import commit, machine
from curves import plot, summarise

from treesearch import STRATEGIES, Problem, SamplingParams, SearchConfig, run
from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems
from treesearch.backends.openai_compat import OpenAIPolicy

RESULTS = Path(__file__).parent / "results"
OUTPUT = RESULTS / "reasoning.json"
# name: (P(right answer), wrong answers sharing the rest)
LEVELS = {"minority": (0.3, 2), "rare": (0.25, 5)}
STEPS = 4
# label: (strategy, its options, the (N, option changes) points of its curve)
SERIES: dict[str, tuple[str, dict[str, Any], list[tuple[int, dict[str, Any]]]]] = {
    "majority-vote": ("majority-vote", {}, [(n, {}) for n in (4, 8, 16, 32, 64, 128, 256)]),
    "gen-select (K=4)": ("gen-select", {"select_k": 4}, [(n, {}) for n in (4, 8, 16, 32)]),
    "rsa (K=4, T=2)": ("rsa", {"rsa_k": 4, "rsa_rounds": 2}, [(n, {}) for n in (4, 8, 16)]),
    "rsa (K=4, N=8)": ("rsa", {"rsa_k": 4}, [(8, {"rsa_rounds": t}) for t in (1, 2, 4, 8)]),
    "deepconf online": ("deepconf", {}, [(n, {"deepconf_warmup": n // 4}) for n in (8, 16, 32, 64)]),
    "self-certainty": ("self-certainty", {}, [(n, {}) for n in (4, 8, 16, 32)]),
    "borda": ("borda", {}, [(n, {}) for n in (4, 8, 16, 32)]),
}


def records(per_level: int) -> list[dict[str, Any]]:
    return [
        record
        for name, (p, wrong) in LEVELS.items()
        for record in make_problems(per_level, p_correct=p, wrong=wrong, steps=STEPS, prefix=name)
    ]


async def selection(url: str, items: list[Problem]) -> list[dict[str, Any]]:
    """One row per level and point of every series whose strategy the registry has."""
    policy = OpenAIPolicy(url, "fake")
    rows: list[dict[str, Any]] = []
    try:
        for label, (strategy, options, points) in SERIES.items():
            if strategy not in STRATEGIES:
                print(f"{label}: not in this treesearch's registry, left out", flush=True)
                continue
            for n, changes in points:
                config = SearchConfig(
                    strategy=strategy, n=n, sampling=SamplingParams(seed=1), **{**options, **changes}
                )
                results = await run(items, policy, config, keep_trees=False)
                rows += summarise(results, {level: level for level in LEVELS}, strategy=label, n=n, **changes)
                print(f"{label:>17} N={n:<3} {changes or ''} " + "  ".join(
                    f"{r['level']} {r['accuracy']:.3f}/{r['total_tokens']:.0f}"
                    for r in rows[-len(LEVELS) - 1 :]), flush=True)  # fmt: skip
    finally:
        await policy.aclose()
    return rows


Section = Callable[[str, list[Problem]], Awaitable[list[dict[str, Any]]]]
# name: (its routine, its plot's title, the synthetic server's flags)
SECTIONS: dict[str, tuple[Section, str, list[str]]] = {
    "selection": (selection, "Selection without a reward model, hard problems", []),
    # The same with a weaker judge and aggregator: a selection right 0.4 of the time (0.25 is
    # chance among 4), an aggregation right 0.4 / 0.02 of the time.
    "selection-weak": (
        selection,
        "The same, weaker selection and aggregation",
        ["--select-accuracy", "0.4", "--aggregate-accuracy", "0.4", "--aggregate-fix", "0.02"],
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=100)
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args()
    made = records(args.per_level)
    items = [Problem.from_record(record) for record in made]
    saved = json.loads(OUTPUT.read_text()) if OUTPUT.exists() else {"sections": {}}
    RESULTS.mkdir(exist_ok=True)
    for name in args.sections:
        routine, title, flags = SECTIONS[name]
        started, at = time.perf_counter(), commit()  # the code the run starts with
        with tempfile.TemporaryDirectory() as tmp, spawn(flags, made, Path(tmp)) as url:
            rows = anyio.run(routine, url, items)
        saved["sections"][name] = {
            "command": f"python benchmarks/bench_reasoning.py --per-level {args.per_level} --sections {name}",
            "date": datetime.date.today().isoformat(),
            "commit": at,
            "machine": machine(),
            "server": "treesearch serve-fake " + " ".join(flags),
            "wall_s": round(time.perf_counter() - started),
            "rows": rows,
        }
        plot(rows, "strategy", f"{title} ({args.per_level} a level)", RESULTS / f"reasoning-{name}.png",
             log_x=True, tokens="total_tokens")  # fmt: skip
        print(f"{name}: {time.perf_counter() - started:.0f} s; wrote reasoning-{name}.png", flush=True)
    OUTPUT.write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
