"""Answer extraction: what counts as a stated final answer, and what does not."""

from __future__ import annotations

import re

import pytest

from treesearch.answers import RUN_ON_MARKERS, extract_answer, extract_final_value, split_run_on


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so \\boxed{\\frac{1}{2}} and later \\boxed{3}", "3"),
        ("\\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^{2}}"),
        ("\\boxed{x = 4}", "x = 4"),
        ("So it is $\\boxed 5$.", "5"),
        ("the total is \\boxed 12.", "12"),
        ("\\boxed {7} at last", "7"),
        ("\\boxed{unclosed", None),
        ("\\boxed{}", None),
        ("Step 1.\n\nThe answer is 23.", "23"),
        ("Thus, the answer is $x = 4$.", "x = 4"),
        ("So the final answer is 3.5", "3.5"),
        ("We get 2.5 + 1. The answer is 3.5.", "3.5"),
        ("Therefore, the answer is: $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("Therefore, the answer is \\(\\frac{1}{2}\\).", "\\frac{1}{2}"),
        ("Hence the answer is 7!", "7"),
        ("We add 2 and 3. So the answer is 5.", "5"),
        ("Answer: 12", "12"),
        ("Final answer: 12", "12"),
        ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
        ("the answer is 7\nthe answer is 8.", "8"),
        ("no answer here", None),
    ],
)
def test_extract(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "text",
    [
        "We need to check whether the answer is an integer.",
        "To verify the answer is correct, plug in x=2.",
        "The answer is: $x = 4$. Then more text.",
        "The answer is 5.\nLet me double-check that.",
        "Is the answer 5?",
    ],
)
def test_an_answer_mentioned_in_passing_is_no_answer(text: str) -> None:
    assert extract_answer(text) is None


def test_split_run_on_cuts_at_the_first_marker() -> None:
    assert RUN_ON_MARKERS == ("\nQ:", "\nProblem:", "\nQuestion:")
    assert split_run_on("4 apples.\nQuestion: more?\nQ: again") == ("4 apples.", True)
    assert split_run_on("nothing to cut") == ("nothing to cut", False)
    assert split_run_on("a\n###b\nQ: c", ("\n###",)) == ("a", True)
    assert split_run_on("a\nQ: b", ()) == ("a\nQ: b", False)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("The answer is 4.\nQ: What is 2+3?\nA: The answer is 5.", "4"),
        ("\\boxed{4}\nProblem: next one. \\boxed{9}", "4"),
        ("So 2+2 = 4.\nQuestion: What is 3+3? The answer is 6.", None),
    ],
)
def test_extraction_ignores_a_run_on_into_the_next_question(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


TEXT = "#### 12\nwork \\boxed{3}\n#### 18\n"


@pytest.mark.parametrize(
    ("pattern", "answer"),
    [
        (r"#### (?P<answer>\d+)", "18"),
        (r"(#+) (?P<answer>\d+)", "18"),
        (r"#### (\d+)", "18"),
        (r"#### \d+", "#### 18"),
        (re.compile(r"work (\S+)"), "\\boxed{3}"),
        (r"ANSWER=(\d+)", None),
    ],
)
def test_a_user_pattern_replaces_the_built_in_rules(
    pattern: str | re.Pattern[str], answer: str | None
) -> None:
    assert extract_answer(TEXT, pattern) == answer


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("We find \\boxed{7}", "7"),
        ("Adding gives 3 + 4 = 7", "7"),
        ("Each box holds 2.5 kg.\nSo two boxes hold 5.0", "5.0"),
        ("x = 1/2\n\n", "1/2"),
        ("so we get \\frac{3}{4}", "\\frac{3}{4}"),
        ("The change is -4.", "-4"),
        ("In total 1,250", "1,250"),
        ("In total 1,250 people", None),  # the number must close the line
        ("Step 3: the total is large.", None),  # a step's label is no value
        ("12 + 5 = 17.", "17"),
        ("The answer is 7.\nQ: and 9?", "7"),
        ("Step 1: 12 eggs\nWe are done", None),
        ("The total is twelve.", None),
        ("", None),
    ],
)
def test_extract_final_value(text: str, value: str | None) -> None:
    assert extract_final_value(text) == value
