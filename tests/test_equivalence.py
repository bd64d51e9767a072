"""Answer equivalence: bounded, exact where it should be, and cheap to group."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest
from structlog.testing import capture_logs

from treesearch.equivalence import MathEquivalence, PairwiseEquivalence, default_equivalence
from treesearch.errors import ConfigError

HANGS = "9^{9^{9}}"  # sympy evaluates 9**387420489 in one C call


@pytest.fixture(scope="module")
def equivalence() -> Iterator[MathEquivalence]:
    with MathEquivalence() as shared:
        yield shared


@pytest.mark.parametrize("gold", ["2", "10^{10^{8}}"])
def test_a_comparison_that_would_hang_is_false_and_logged_once(gold: str) -> None:
    with MathEquivalence(timeout_s=0.5, workers=1) as equivalence, capture_logs() as logs:
        assert equivalence.matches(HANGS, gold) is False
        assert equivalence.matches(HANGS, gold) is False
        assert [event["event"] for event in logs] == ["answer_check_timeout"]
        assert logs[0]["answer"] == HANGS
        assert equivalence.matches("\\frac{x}{2}", "x/2") is True  # a fresh worker took over


def test_an_answer_that_cannot_be_evaluated_in_time_groups_alone() -> None:
    slow = "\\sin(9^{9^{9}})"  # evaluating it needs the power mod 2π
    with MathEquivalence(timeout_s=0.5, workers=1) as equivalence, capture_logs() as logs:
        assert equivalence.group([slow, "x", slow, "x"]) == [0, 1, 0, 1]
        assert equivalence.group([slow]) == [0]
    assert [(event["event"], event["answer"]) for event in logs] == [("answer_check_timeout", slow)]


def test_a_long_answer_is_logged_truncated() -> None:
    long = "10^{10^{8}}" + "+1" * 100
    with MathEquivalence(timeout_s=0.5, workers=1) as equivalence, capture_logs() as logs:
        assert equivalence.matches(long, "2") is False
    assert len(logs) == 1
    assert long.startswith(logs[0]["answer"][:-1])
    assert len(logs[0]["answer"]) < len(long)


@pytest.mark.parametrize(
    ("prediction", "gold", "same"),
    [
        ("1234567890", "1234567891", False),
        ("9007199254740993", "9007199254740992", False),
        ("3", "3.0000000001", False),
        ("1/3", "0.3333333333", False),
        ("1,000", "1000", True),
        ("-3.50", "-3.5", True),
        ("2.5", "5/2", True),
        ("0.5", "\\frac{1}{2}", True),
        ("-\\frac{1}{2}", "\\frac{-1}{2}", True),
        ("23.", "23", True),
        ("$x = 4$", "4", True),
        ("\\text{Paris}", "paris", True),
        ("Yes", "yes", True),
        ("\\text{Paris}", "Rome", False),
        ("", "0", False),
    ],
)
def test_numbers_and_prose_are_settled_without_a_worker(prediction: str, gold: str, same: bool) -> None:
    equivalence = MathEquivalence()
    assert equivalence.matches(prediction, gold) is same
    assert equivalence.group([prediction, gold, prediction]) == [0, 0 if same else 1, 0]
    assert equivalence.running == 0
    assert equivalence.verify_calls == 0


@pytest.mark.parametrize(
    ("prediction", "gold", "same"),
    [
        ("\\Pi", "\\pi", False),
        ("\\Sigma", "\\sigma", False),  # math-verify alone lower-cases longer symbol names
        ("\\Omega + 1", "\\omega + 1", False),
        ("ABC", "abc", False),  # points or a product of symbols, not a word
        ("50\\%", "50", True),
        ("2A", "2a", False),
        ("x + 1", "X + 1", False),
        ("2A", "A + A", True),
        ("\\frac{x}{2}", "0.5x", True),
        ("\\sqrt{4}", "2", True),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
        ("y = 2x + 1", "2x+1", True),
        ("\\{1, 2\\}", "[1, 2]", False),
    ],
)
def test_symbols_keep_their_case(
    equivalence: MathEquivalence, prediction: str, gold: str, same: bool
) -> None:
    assert equivalence.matches(prediction, gold) is same
    assert equivalence.group([prediction, gold]) == [0, 0 if same else 1]


def test_the_gold_answer_goes_first_to_math_verify(equivalence: MathEquivalence) -> None:
    """math-verify compares a relation with a set only when the prediction is the set."""
    assert equivalence.matches("(1, 2)", "1 < x < 2") is True
    assert equivalence.matches("1 < x < 2", "(1, 2)") is False


def test_groups_are_numbered_in_order_of_first_appearance(equivalence: MathEquivalence) -> None:
    assert equivalence.group([]) == []
    assert equivalence.group(["2", "0.5", "1/2", "2.0", "7"]) == [0, 1, 1, 0, 2]
    answers = ["x/3", "\\frac{x}{2}", "x/2", "0.5x", "\\frac{1}{2}x", "\\sqrt{4}", "2", "\\frac{x}{3}"]
    assert equivalence.group(answers) == [0, 1, 1, 1, 1, 2, 2, 0]
    assert equivalence.group(["[1,2]", "\\{1,2\\}", "1,2", "(1,3]", "\\{2,1\\}"]) == [0, 1, 1, 2, 1]


def _spellings(value: Fraction) -> list[str]:
    a, b = value.numerator, value.denominator
    return [f"\\frac{{{a}x}}{{{b}}}", f"{a}x/{b}", f"{a / b:g}x", f"\\frac{{{a}}}{{{b}}}x"]


def test_grouping_asks_math_verify_less_than_once_per_distinct_answer() -> None:
    values = [Fraction(a, b) for a in (1, 3, 7) for b in (2, 4, 5)]
    answers = [form for value in values for form in _spellings(value)] * 2
    with MathEquivalence() as equivalence:
        groups = equivalence.group(answers)
        assert len(set(groups)) == len(values)
        assert groups == [index // 4 % len(values) for index in range(len(answers))]
        assert 0 < equivalence.verify_calls < len(set(answers))


def test_concurrent_callers_share_the_workers() -> None:
    answers = ["\\frac{x}{2}", "x/2", "x/3", "0.5x", "2A", "2a"]
    with MathEquivalence(workers=2) as equivalence, ThreadPoolExecutor(8) as pool:
        grouped = list(pool.map(equivalence.group, [answers] * 16))
        matched = list(pool.map(equivalence.matches, ["x/2", "x/3"] * 8, ["0.5x"] * 16))
    assert grouped == [[0, 0, 1, 0, 2, 3]] * 16
    assert matched == [True, False] * 8


def test_close_stops_the_workers_and_a_later_call_starts_them_again() -> None:
    equivalence = MathEquivalence(workers=2)
    assert equivalence.matches("x/2", "0.5x") is True
    assert equivalence.running == 1  # one call, one worker
    equivalence.close()
    assert equivalence.running == 0
    assert equivalence.matches("2x", "x+x") is True
    equivalence.close()
    assert equivalence.running == 0


@pytest.mark.parametrize(("timeout_s", "workers"), [(0.0, 2), (1.0, 0)])
def test_settings_that_cannot_work_are_refused(timeout_s: float, workers: int) -> None:
    with pytest.raises(ConfigError, match="answer checks need"):
        MathEquivalence(timeout_s=timeout_s, workers=workers)


def test_the_default_equivalence_is_one_shared_instance() -> None:
    assert isinstance(default_equivalence(), MathEquivalence)
    assert default_equivalence() is default_equivalence()


def test_pairwise_equivalence_asks_same_prediction_first() -> None:
    calls: list[tuple[str, str]] = []

    def same(a: str, b: str) -> bool:
        calls.append((a, b))
        return a.casefold() == b.casefold()

    pairwise = PairwiseEquivalence(same)
    assert pairwise.group(["a", "A", "b", "a", "B"]) == [0, 0, 1, 0, 1]
    assert calls == [("a", "A"), ("a", "b"), ("a", "B"), ("b", "B")]
    assert pairwise.matches("Rome", "rome") is True
    assert calls[-1] == ("Rome", "rome")
    assert pairwise.matches("x", "x") is True
    assert calls[-1] == ("Rome", "rome")
