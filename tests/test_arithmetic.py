"""The arithmetic-chain task's generator and its exact step checker."""

from __future__ import annotations

from treesearch import Problem
from treesearch.answers.extract import extract_answer
from treesearch.arithmetic import FEW_SHOT, make_problems, step_scores

PROBLEM = Problem(id="x", question="13 + 4 + 6", answer="23")


def test_problems_are_reproducible_and_well_formed() -> None:
    first, again = make_problems(5, terms=4, seed=3), make_problems(5, terms=4, seed=3)
    assert first == again
    for problem in first:
        numbers = [int(t) for t in problem.question.split(" + ")]
        assert len(numbers) == 4
        assert problem.answer == str(sum(numbers))
        assert problem.prompt == f"{FEW_SHOT}Q: {problem.question}\n"


def test_a_right_solution_scores_one_at_every_step() -> None:
    steps = ["13 + 4 = 17", "17 + 6 = 23", "The answer is 23."]
    assert step_scores(PROBLEM, steps) == [1.0, 1.0, 1.0]
    assert extract_answer(steps[-1]) == "23"


def test_the_first_wrong_step_and_everything_after_it_score_zero() -> None:
    assert step_scores(PROBLEM, ["13 + 4 = 18", "18 + 6 = 24", "The answer is 24."]) == [0, 0, 0]
    assert step_scores(PROBLEM, ["13 + 4 = 17", "17 + 5 = 22"]) == [1.0, 0.0]  # wrong term
    assert step_scores(PROBLEM, ["13 + 4 = 17", "16 + 6 = 22"]) == [1.0, 0.0]  # not the last result
    assert step_scores(PROBLEM, ["13 + 4 = 17", "The answer is 17."]) == [1.0, 0.0]  # too early
    assert step_scores(PROBLEM, ["Let me think"]) == [0.0]
