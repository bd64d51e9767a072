"""Answer equivalence: bounded, exact where it should be, and cheap to group."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest
from structlog.testing import capture_logs

from treesearch.answers.equivalence import MathEquivalence, PairwiseEquivalence, default_equivalence
from treesearch.errors import ConfigError

SLOW = "\\sin(9^{9^{9}})"  # its value needs 9**387420489 (mod 2π): one C call no signal stops


@pytest.fixture(scope="module")
def equivalence() -> Iterator[MathEquivalence]:
    with MathEquivalence() as shared:
        yield shared


@pytest.mark.parametrize("gold", ["2", "10^{10^{8}}"])
def test_a_comparison_that_would_hang_is_false_and_logged_once(gold: str) -> None:
    with MathEquivalence(timeout_s=0.5, workers=1) as equivalence, capture_logs() as logs:
        assert equivalence.matches(SLOW, gold) is False
        assert equivalence.matches(SLOW, gold) is False
        assert [event["event"] for event in logs] == ["answer_check_timeout"]
        assert logs[0]["answer"] == SLOW
        assert equivalence.matches("\\frac{x}{2}", "x/2") is True  # a fresh worker took over


def test_an_answer_that_cannot_be_evaluated_in_time_groups_alone() -> None:
    with MathEquivalence(timeout_s=0.5, workers=1) as equivalence, capture_logs() as logs:
        assert equivalence.group([SLOW, "x", SLOW, "x"]) == [0, 1, 0, 1]
        assert equivalence.group([SLOW]) == [0]
    assert [(event["event"], event["answer"]) for event in logs] == [("answer_check_timeout", SLOW)]


def test_a_long_answer_is_logged_truncated() -> None:
    long = SLOW + "+1" * 100
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


MV = "huggingface/Math-Verify tests/"
FIELD_CASES = [  # (source, gold, prediction, the suite's verdict); the full set is in bench_answers
    (MV + "test_all.py::test_number_extraction", "7425000", "7,425,000", True),
    (MV + "test_all.py::test_number_extraction", "1000", "1 000", True),
    (MV + "test_all.py::test_math_extraction_additional_cases", "\\boxed{32349}", "\\boxed{32, 349}", False),
    (
        MV + "test_all.py::test_math_extraction_additional_cases",
        "\\(\\boxed{\\text{C}}\\).",
        "$\\boxed{\\text{(C)}}.$",
        True,
    ),
    (MV + "test_all.py::test_math_extraction_additional_cases", "14{,}916", "14916", True),
    (MV + "test_all.py::test_percent_notation", "$28\\%$", "28 percent", True),
    (MV + "test_all.py::test_percent_notation", "$28\\%$", "$28$ pct", True),
    (MV + "test_all.py::test_latex_notation", "$1/3$", "$k = \\frac{1}{3}$", True),
    (MV + "test_all.py::test_relations_math", "$x = 11$", "$x = 5+5+1 = 7 =11$", True),
    (MV + "test_all.py::test_relations_math", "$2x+4y-3=0$", "$y=-\\frac{1}{2}x+\\frac{3}{4}$", True),
    (MV + "test_all.py::test_relations_math", "$x \\geq 5$", "The solution is $x \\leq 5$", False),
    (MV + "test_all.py::test_relations_math", "$x < 1$", "$x > -1$", False),
    (
        MV + "test_all.py::test_matrix_extraction",
        "$\\begin{bmatrix}0 & 0 \\\\0 & 0\\end{bmatrix}$",
        "Here is a zero matrix: $ \\begin{pmatrix}0 & 0 \\\\0 & 0\\end{pmatrix} $",
        True,
    ),
    (
        MV + "test_all.py::test_matrix_extraction",
        "$\\begin{pmatrix}6 & 8 \\\\ 10 & 12\\end{pmatrix}$",
        "The sum is $\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}"
        " + \\begin{pmatrix}5 & 6 \\\\ 7 & 8\\end{pmatrix}$",
        True,
    ),
    (
        MV + "test_all.py::test_matrix_extraction",
        "$\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}$",
        "The matrix is $\\begin{pmatrix}1 & 2 \\\\ 3 & 5\\end{pmatrix}$",
        False,
    ),
    (MV + "test_all.py::test_sets_handling", "$(0,9)$", "$[0,9)$", False),
    (MV + "test_all.py::test_sqrt_precision", "$4$", "$4\\sqrt{2}$", False),
    (
        MV + "test_numina_cases.py::test_numina_cases",
        "\\(\\boxed{1}\\) and \\(\\boxed{-2}\\).",
        "$\\boxed{-2,1}$.",
        True,
    ),
    (MV + "test_numina_cases.py::test_numina_cases", "$S_{MBCN}:S=7:32$", "$\\boxed{7:32}$", True),
    (
        MV + "test_open_thoughts.py::test_open_thoughts",
        "$$(2, 2), (6, 2)$$",
        "$$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$$",
        True,
    ),
    (MV + "test_open_thoughts.py::test_open_thoughts", "$$f(x)=1$$", "$$1$$", True),
    (MV + "test_open_thoughts.py::test_open_thoughts", "$1$ and $2$ and $3$", "$\\boxed{1,2,3}$", True),
    (MV + "test_yujianll.py::test_string_extraction", "$12:00$", "$1:00$", False),
    (MV + "test_yujianll.py::test_string_extraction", "$12:00$", "$12:00$", True),
    (MV + "test_yujianll.py::test_string_extraction", "$n=2, 3, 4$", "$n=1, 2, 3$", False),
    ("hendrycks/math modeling/math_equivalence_test.py::test_dollars", "10", "\\$10", True),
    ("hendrycks/math modeling/math_equivalence_test.py::test_units2", "10\\text{ units}", "100 ", False),
    (
        "hendrycks/math modeling/math_equivalence_test.py::test_expression",
        "5x - 7y + 11z + 4 = 0",
        "x + y - z + 2 = 0",
        False,
    ),
    (
        "NVIDIA/NeMo-Skills tests/test_math_equal.py::test_correct_examples",
        "\\begin{pmatrix}0&0&0\\\\0&1&0\\\\0&0&1\\end{pmatrix}",
        "\\begin{bmatrix} 0 & 0 & 0 \\\\ 0 & 1 & 0 \\\\ 0 & 0 & 1 \\end{bmatrix}",
        True,
    ),
    ("NVIDIA/NeMo-Skills tests/test_math_equal.py::test_correct_examples", "2x+ 1+x^2", "y = x^2+2x+1", True),
    (
        "NVIDIA/NeMo-Skills tests/test_math_equal.py::test_incorrect_examples",
        "\\sqrt{67}",
        "\\sqrt{67},-\\sqrt{85}",
        False,
    ),
    (
        "QwenLM/Qwen2.5-Math evaluation/grader.py::_test_math_equal",
        "34x+45y-20z+100=0",
        "-34x-45y+20z-100=0",
        True,
    ),
    ("QwenLM/Qwen2.5-Math evaluation/grader.py::_test_math_equal", "x+2n+1", "x+1", False),
]


@pytest.mark.parametrize(("source", "gold", "prediction", "same"), FIELD_CASES)
def test_the_field_s_verdicts_and_one_rule_for_grouping_and_grading(
    equivalence: MathEquivalence, source: str, gold: str, prediction: str, same: bool
) -> None:
    """Cases from other projects' suites (named); a vote groups exactly as grading matches."""
    assert equivalence.matches(prediction, gold) is same, source
    gold_group, predicted_group = equivalence.group([gold, prediction])
    assert (gold_group == predicted_group) is same, source


@pytest.mark.parametrize(
    ("prediction", "gold"),
    [
        ("32, 349", "32349"),
        ("2, 500", "2500"),
        ("2, 500", "2,500"),
        ("\\pi", "3.141593"),
        ("3.141593", "\\pi"),
    ],
)
def test_no_false_merge_math_verify_does_not_make(
    equivalence: MathEquivalence, prediction: str, gold: str
) -> None:
    """A comma before a space is no thousands separator; a decimal is the number it writes."""
    assert equivalence.matches(prediction, gold) is False
    assert equivalence.group([gold, prediction]) == [0, 1]


def test_answers_that_read_as_nonsense_group_by_their_text(equivalence: MathEquivalence) -> None:
    """12:00 parses as 12/0: every such answer would share that one value."""
    assert equivalence.group(["12:00", "1:00", "5:00", "12:00", "\\frac{0}{0}"]) == [0, 1, 2, 0, 3]


def test_an_equation_groups_with_its_value_and_with_other_equations(equivalence: MathEquivalence) -> None:
    answers = ["f(x) = 1", "1", "y = 2x + 1", "2x+1", "2x - y + 1 = 0", "2", "|AB| = 1"]
    # |AB| = 1 states 1, but is another equation than f(x) = 1, the first answer of that group
    assert equivalence.group(answers) == [0, 0, 1, 1, 1, 2, 3]


def test_a_whole_gold_solution_stands_for_the_answer_it_states(equivalence: MathEquivalence) -> None:
    gsm8k = (
        "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 a day.\n#### 18"
    )
    assert equivalence.matches("18", gsm8k) is True
    assert equivalence.matches("\\boxed{18}", gsm8k) is True
    assert equivalence.matches("9", gsm8k) is False


@pytest.mark.parametrize(
    ("prediction", "gold", "same"),
    [
        ("The roots are \\boxed{-2} and \\boxed{1}.", "1, -2", True),
        ("The roots are \\boxed{-2} and \\boxed{1}.", "-2, 1", True),
        ("The roots are \\boxed{-2} and \\boxed{1}.", "-2, 3", False),
        ("The roots are \\boxed{-2} and \\boxed{1}.", "-2, 1, 3", False),
    ],
)
def test_a_solution_boxing_several_answers_states_their_set(
    equivalence: MathEquivalence, prediction: str, gold: str, same: bool
) -> None:
    assert equivalence.matches(prediction, gold) is same
    assert (equivalence.group([gold, prediction])[1] == 0) is same
