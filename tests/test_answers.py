"""Answer extraction and equivalence."""

from __future__ import annotations

import pytest

from treesearch.answers import extract_answer, group_answers, math_equal


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so \\boxed{\\frac{1}{2}} and later \\boxed{3}", "3"),
        ("\\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^{2}}"),
        ("Step 1.\n\nThe answer is 23.", "23"),
        ("The answer is: $x = 4$. Then more text.", "x = 4"),
        ("the answer is 7\nthe answer is 8.", "8"),
        ("no answer here", None),
        ("\\boxed{unclosed", None),
    ],
)
def test_extract(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("0.5", "\\frac{1}{2}", True), ("x = 4", "4", True), ("23", "23.", True),
     ("1/3", "0.34", False), ("\\text{Paris}", "paris", True), ("12", "13", False)],
)  # fmt: skip
def test_math_equal(a: str, b: str, same: bool) -> None:
    assert math_equal(a, b) is same


def test_group_answers_in_order_of_appearance() -> None:
    assert group_answers(["2", "0.5", "1/2", "2.0", "7"]) == [0, 1, 1, 0, 2]
    assert group_answers(["a", "A", "b"], same=lambda x, y: x == y) == [0, 0, 1]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("1,000", "1000", True), ("-3.50", "-3.5", True), ("3", "3.0000000001", True),
     ("10", "1000", False), ("2.5", "5/2", True)],
)  # fmt: skip
def test_plain_numbers_compare_without_sympy(a: str, b: str, same: bool) -> None:
    assert math_equal(a, b) is same
