"""Answer extraction: what counts as a stated final answer, and what does not."""

from __future__ import annotations

import re

import pytest

from treesearch.answers.extract import RUN_ON_MARKERS, extract_answer, extract_final_value, split_run_on


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


GSM8K_GOLD = [  # gold solutions as the GSM8K test set writes them
    (
        "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
        "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.\n#### 18",
        "18",
    ),
    (
        "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total is 2+1=<<2+1=3>>3 bolts of fabric\n#### 3",
        "3",
    ),
    (
        "The cost of the house and repairs came out to 80,000+50,000=$<<80000+50000=130000>>130,000\n"
        "He increased the value of the house by 80,000*1.5=<<80000*1.5=120000>>120,000\n"
        "So the new value of the house is 120,000+80,000=$<<120000+80000=200000>>200,000\n"
        "So he made a profit of 200,000-130,000=$<<200000-130000=70000>>70,000\n#### 70000",
        "70000",
    ),
    (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72\n",
        "72",
    ),
]


@pytest.mark.parametrize(("text", "answer"), GSM8K_GOLD)
def test_a_gsm8k_gold_solution_states_its_closing_answer(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("The area is \\fbox{17}.", "17"),
        ("The roots are \\boxed{-2} and \\boxed{1}.", "-2, 1"),
        ("**Final Answer**\nThe integers are \\(\\boxed{-2}\\) and \\(\\boxed{1}\\).", "-2, 1"),
        ("$$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$$", "(2, 2), (6, 2)"),
        ("so $x = \\boxed{1}$, $y = \\boxed{2}$", "1, 2"),
        ("\\boxed{4}\n\n\\boxed{4}", "4"),  # the same answer boxed twice is one answer
        ("first \\boxed{1}, then after more work the total is \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}} so far; the answer is \\boxed{\\frac{1}{2}", None),
        ("The answer is \\boxed{\\frac{1}{2}", None),
    ],
)
def test_boxes(text: str, answer: str | None) -> None:
    """\\fbox is a box; boxes joined by "and" or commas state one answer; an unclosed last box, none."""
    assert extract_answer(text) == answer


MINERVA = "so it is $28\\%$.\nFinal Answer: The final answer is $28 \\%$. I hope it is correct."


@pytest.mark.parametrize(
    "text",
    [
        MINERVA + "<|im_end|>",
        MINERVA + "</s>",
        MINERVA + " Note: The solution provided is incorrect. The correct approach is as follows:",
        "We had \\boxed{255} after six months. " + MINERVA,
    ],
)
def test_minerva_s_final_answer_is_read_wherever_it_stands(text: str) -> None:
    assert extract_answer(text) == "28 \\%"


@pytest.mark.parametrize("end", ["<|im_end|>", "</s>", "<|eot_id|>\n", "<end_of_turn>"])
def test_a_chat_end_token_does_not_hide_a_closing_statement(end: str) -> None:
    assert extract_answer("We add 2 and 3. So the answer is 5." + end) == "5"
