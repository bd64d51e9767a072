"""Answer checking against the field's own test cases: how often we agree with their verdicts.

The cases live in ``benchmarks/data/answer_cases.jsonl``, one per line: ``gold``,
``prediction``, the suite's ``expected`` verdict and the ``source`` (repository at a
commit, file and test) it was transcribed from: huggingface/Math-Verify's tests,
hendrycks/math's ``math_equivalence_test.py``, NVIDIA/NeMo-Skills' ``test_math_equal.py``
(both orders, as that suite asserts) and the commented calls in QwenLM/Qwen2.5-Math's
``evaluation/grader.py`` (which states no verdicts: the ones recorded are what its
``math_equal`` rules give). Math-Verify cases run under a non-default option
(``strict=False``, ``allow_set_relation_comp=True``, ``float_rounding=2``) are left out.

Each side goes through the pipeline a run uses: ``extract_answer`` (the whole text when
it states none), then ``MathEquivalence.matches(prediction, gold)``; ``group([gold,
prediction])`` must put the two together exactly when ``matches`` does. Prints the
agreement per source and overall, the pairs where group and matches differ, and every
disagreement with the suites (``--math-verify`` adds math-verify's own verdict on the
raw texts, for reference).

    python benchmarks/bench_answers.py [--cases benchmarks/data/answer_cases.jsonl] [--math-verify]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from treesearch.answers.equivalence import MathEquivalence
from treesearch.answers.extract import extract_answer

CASES = Path(__file__).parent / "data" / "answer_cases.jsonl"
SHOWN_CHARS = 70
FIELDS = {"source", "gold", "prediction", "expected"}


@dataclass(frozen=True, slots=True)
class Outcome:
    source: str
    gold: str
    prediction: str
    expected: bool
    matched: bool
    grouped: bool
    reference: bool | None  # math-verify's own verdict, when asked for


def answer_of(text: str) -> str:
    """What a run would grade: the stated answer, else the text as it is."""
    return extract_answer(text) or text


def math_verify_alone(gold: str, prediction: str) -> bool:
    """math-verify's own verdict with its default options, a bare answer read as LaTeX."""
    from math_verify import parse, verify

    def parsed(text: str) -> list[object]:
        delimited = any(mark in text for mark in ("$", "\\(", "\\[", "\\boxed"))
        return list(parse(text if delimited else f"${text}$"))

    return bool(verify(parsed(gold), parsed(prediction)))


def run(cases: list[dict[str, object]], with_reference: bool) -> list[Outcome]:
    outcomes = []
    with MathEquivalence(timeout_s=5.0) as equivalence:
        for case in cases:
            gold, prediction = answer_of(str(case["gold"])), answer_of(str(case["prediction"]))
            groups = equivalence.group([gold, prediction])
            outcomes.append(
                Outcome(
                    source=str(case["source"]),
                    gold=gold,
                    prediction=prediction,
                    expected=bool(case["expected"]),
                    matched=equivalence.matches(prediction, gold),
                    grouped=groups[0] == groups[1],
                    reference=(
                        math_verify_alone(str(case["gold"]), str(case["prediction"]))
                        if with_reference
                        else None
                    ),
                )
            )
    return outcomes


def short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def report(outcomes: list[Outcome]) -> None:
    total, agree = Counter[str](), Counter[str]()
    reference = Counter[str]()
    for outcome in outcomes:
        repo = outcome.source.split("@")[0]
        for key in (repo, "overall"):
            total[key] += 1
            agree[key] += outcome.matched == outcome.expected
            reference[key] += outcome.reference == outcome.expected
    with_reference = outcomes and outcomes[0].reference is not None
    print(
        f"{'source':<26} {'cases':>5} {'agree':>6} {'%':>6}"
        + ("  math-verify alone" if with_reference else "")
    )
    for key in sorted(total, key=lambda k: (k == "overall", k)):
        line = f"{key:<26} {total[key]:>5} {agree[key]:>6} {100 * agree[key] / total[key]:>5.1f}%"
        if with_reference:
            line += f"  {reference[key]:>5} {100 * reference[key] / total[key]:>5.1f}%"
        print(line)
    split = [o for o in outcomes if o.grouped != o.matched]
    print(f"\ngroup() and matches() differ on {len(split)} of {len(outcomes)} pairs")
    for outcome in split:
        pair = f"{short(outcome.gold)!r} vs {short(outcome.prediction)!r}"
        print(f"  matches={outcome.matched} grouped={outcome.grouped}  {pair}")
    wrong = [o for o in outcomes if o.matched != o.expected]
    merges = sum(o.matched for o in wrong)
    print(f"\ndisagreements with the suites: {len(wrong)}", end=" ")
    print(f"({merges} false merges, {len(wrong) - merges} missed matches)")
    for outcome in wrong:
        print(f"  {outcome.source}")
        ours = "same" if outcome.matched else "different"
        theirs = "same" if outcome.expected else "different"
        extra = (
            ""
            if outcome.reference is None
            else f", math-verify alone: {'same' if outcome.reference else 'different'}"
        )
        print(f"    gold {short(outcome.gold)!r}  prediction {short(outcome.prediction)!r}")
        print(f"    suite: {theirs}, ours: {ours}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=CASES)
    parser.add_argument(
        "--math-verify", action="store_true", help="also show math-verify's verdict on the raw texts"
    )
    args = parser.parse_args()
    try:
        cases = [
            json.loads(line) for line in args.cases.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    except (OSError, ValueError) as exc:
        sys.exit(f"cannot read the cases: {exc}")
    for number, case in enumerate(cases, start=1):
        missing = FIELDS - set(case) if isinstance(case, dict) else FIELDS
        if missing:
            sys.exit(f"{args.cases}: case {number} lacks {', '.join(sorted(missing))}")
    report(run(cases, args.math_verify))


if __name__ == "__main__":
    main()
