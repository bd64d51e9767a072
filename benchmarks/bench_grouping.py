"""Grouping cost: 256 answers, 64 distinct symbolic forms of 16 values, by MathEquivalence.

Each of 16 expressions ``(a/b)·x`` is written four ways (``\\frac{ax}{b}``, ``ax/b``,
``0.125x``, ``\\frac{a}{b}x``), each form repeated four times, shuffled with a fixed
seed. Prints the wall time cold (worker start included), warm (the same answers
again: the workers have them parsed) and warm on 64 forms not seen before (the
same in ``y``), the groups found and the math-verify calls made, next to the
comparisons a pairwise grouping makes.

    python benchmarks/bench_grouping.py [--workers 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import time
from fractions import Fraction

from treesearch.answers.equivalence import MathEquivalence

COEFFICIENTS = [Fraction(a, b) for b in (2, 4, 5, 8) for a in (1, 3, 7, 9)]


def forms(value: Fraction, var: str) -> list[str]:
    """Four LaTeX spellings of ``value * var``."""
    a, b = value.numerator, value.denominator
    times = var if a == 1 else f"{a}{var}"
    decimal = f"{a / b:g}"
    return [f"\\frac{{{times}}}{{{b}}}", f"{times}/{b}", f"{decimal}{var}", f"\\frac{{{a}}}{{{b}}}{var}"]


def answers(var: str, seed: int) -> tuple[list[str], list[int]]:
    """256 answers and the true group of each."""
    rows = [(form, group) for group, c in enumerate(COEFFICIENTS) for form in forms(c, var) for _ in range(4)]
    random.Random(seed).shuffle(rows)
    return [form for form, _ in rows], [group for _, group in rows]


def old_pairwise_calls(truth: list[int], texts: list[str]) -> int:
    """The comparisons the old grouping made: each new distinct answer against one
    representative per group until one matches."""
    seen: set[str] = set()
    representatives: list[int] = []
    calls = 0
    for text, group in zip(texts, truth, strict=True):
        if text in seen:
            continue
        seen.add(text)
        if group in representatives:
            calls += representatives.index(group) + 1
        else:
            calls += len(representatives)
            representatives.append(group)
    return calls


def timed(equivalence: MathEquivalence, texts: list[str]) -> tuple[float, list[int], int]:
    before = equivalence.verify_calls
    started = time.perf_counter()
    groups = equivalence.group(texts)
    return time.perf_counter() - started, groups, equivalence.verify_calls - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    texts, truth = answers("x", args.seed)
    fresh, _ = answers("y", args.seed)
    distinct = len(set(texts))
    print(f"{len(texts)} answers, {distinct} distinct forms, {len(set(truth))} true groups")
    print(f"pairwise: all pairs of distinct forms {distinct * (distinct - 1) // 2}, ", end="")
    print(f"old representative scan {old_pairwise_calls(truth, texts)} math-verify calls")
    with MathEquivalence(workers=args.workers) as equivalence:
        for label, batch in (("cold", texts), ("warm", texts), ("warm, new forms", fresh)):
            wall, groups, calls = timed(equivalence, batch)
            print(f"{label:>16}: {wall:6.3f} s  {len(set(groups))} groups  {calls} math-verify calls")
            if label == "cold" and [groups.index(g) for g in groups] != [truth.index(t) for t in truth]:
                print("                  the groups differ from the true ones")


if __name__ == "__main__":
    main()
