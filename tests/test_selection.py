"""Generative selection (gen-select) and recursive self-aggregation (rsa), against the
synthetic server, and the synthetic server's model of both."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from conftest import PROBLEMS, problems, run_cli, server_stats, write_problems

from treesearch import BudgetLimits, SamplingParams, SearchConfig, SearchResult, run, search
from treesearch.backends.fake.selection import SelectionModel, selection_reply
from treesearch.backends.fake.tasks import FakeTask
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.engine.tree import ROOT, Node, NodeStatus, SearchTree
from treesearch.strategies.genselect import (
    SELECT_ATTEMPTS,
    knockout_calls,
    parse_choice,
    selection_prompt,
    shown,
)
from treesearch.strategies.rsa import subset

pytestmark = pytest.mark.anyio


def config(strategy: str, **options: Any) -> SearchConfig:
    return SearchConfig(strategy=strategy, sampling=SamplingParams(seed=5), **options)


def tree_of(result: SearchResult) -> SearchTree:
    assert result.tree is not None
    return result.tree


def judgements(tree: SearchTree) -> list[Node]:
    """The selection calls' nodes: those shown a group and asked to choose."""
    return [node for node in tree.nodes() if node.shown is not None]


def samples(tree: SearchTree) -> list[Node]:
    """The solutions sampled from the problem's own prompt (position "0/<request>.<choice>")."""
    return [node for node in tree.children(ROOT) if node.shown is None and "select" not in node.position]


# -- the knock-out -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "k", "calls"),
    # 16 in groups of 4: 4 calls, then the final of the 4 winners. 10: groups 4, 4, 2 (3 calls),
    # then 3 winners in one group. 17: 4 groups and a bye (4), 5 left: a group of 4 and a bye
    # (1), then the last two (1). In pairs, every call knocks one out: n - 1.
    [(16, 4, 5), (10, 4, 4), (17, 4, 6), (8, 8, 1), (9, 2, 8), (2, 4, 1), (1, 4, 0)],
)
def test_the_knockout_makes_a_known_number_of_calls(n: int, k: int, calls: int) -> None:
    assert knockout_calls(n, k) == calls


@pytest.mark.parametrize(("n", "k"), [(16, 4), (10, 4), (17, 4), (9, 2)])
async def test_gen_select_sends_one_request_per_selection_call(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], n: int, k: int
) -> None:
    url = fake_server()
    before = server_stats(url)
    result = await search(PROBLEMS["b3"], make_policy(url), config("gen-select", n=n, select_k=k))
    tree = tree_of(result)
    assert len(samples(tree)) == n and all(node.status is NodeStatus.ANSWERED for node in samples(tree))
    assert len(judgements(tree)) == knockout_calls(n, k)
    # The N samples in one request, then one request a selection call, each charged.
    assert result.usage.requests == 1 + knockout_calls(n, k)
    assert server_stats(url)["ok"] - before["ok"] == result.usage.requests


async def test_the_chosen_candidate_is_recorded_and_wins(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    result = await search(PROBLEMS["b4"], make_policy(fake_server()), config("gen-select", n=16))
    tree = tree_of(result)
    calls = judgements(tree)
    field = {node.id for node in samples(tree)}
    for judgement in calls:
        assert judgement.shown is not None and 2 <= len(judgement.shown) <= 4
        assert judgement.chosen in judgement.shown
        assert set(judgement.shown) <= field  # candidates only, never another judgement
    # The first round's groups are the samples in position order, four by four.
    firsts = sorted(calls, key=lambda node: node.order)[:4]
    assert [list(node.shown or ()) for node in firsts] == [
        [node.id for node in samples(tree)][start : start + 4] for start in range(0, 16, 4)
    ]
    final = max(calls, key=lambda node: node.order)
    assert set(final.shown or ()) == {node.chosen for node in firsts}
    assert [c.node for c in result.candidates] == [final.chosen]
    assert result.answer == tree.node(final.chosen or 0).answer


async def test_an_unparsable_choice_is_retried_then_the_group_abstains(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    url = fake_server("--select-unparsable", "1")
    result = await search(PROBLEMS["b5"], make_policy(url), config("gen-select", n=4, select_k=4))
    tree = tree_of(result)
    calls = judgements(tree)
    assert len(calls) == SELECT_ATTEMPTS  # the first call and its retries, then abstention
    assert all(node.chosen is None for node in calls)
    assert len({node.position for node in calls}) == SELECT_ATTEMPTS  # each a request of its own seed
    assert result.usage.requests == 1 + SELECT_ATTEMPTS
    # The abstaining group advances its majority answer (ties: the answer found first).
    answers = [node.answer for node in samples(tree)]
    counts = Counter(answers)
    majority = max(answers, key=lambda answer: (counts[answer], -answers.index(answer)))
    assert result.answer == majority
    assert len(result.candidates) == 1 and tree.node(result.candidates[0].node).answer == majority


@pytest.mark.parametrize(
    ("text", "count", "choice"),
    [
        ("Solution 2 is best.\n\nJudgment: 2", 4, 2),
        ("Judgment: [1]", 4, 1),
        ("Judgement: 0", 2, 0),
        ("Judgment: 1 ... on reflection, Judgment: 3", 4, 3),  # the last one counts
        ("Judgment: 4", 4, None),  # out of range
        ("The answer is 3.", 4, None),
        ("", 4, None),
    ],
)
def test_a_judgement_is_parsed_from_its_last_judgment_line(text: str, count: int, choice: int | None) -> None:
    assert parse_choice(text, count) == choice


def test_the_selection_prompt_numbers_the_solutions_and_keeps_braces() -> None:
    prompt = selection_prompt(PROBLEMS["a0"], ["x is \\boxed{1}", "{question}"])
    assert prompt.question.startswith(PROBLEMS["a0"].question)
    assert "Solution 0:\nx is \\boxed{1}\n\nSolution 1:\n{question}\n" in prompt.question
    assert prompt.question.rstrip().endswith("from 0 to 1.")


def test_a_long_solution_is_shown_by_its_end_and_never_its_thinking() -> None:
    text = " ".join(f"w{i}" for i in range(100)) + " The answer is 7."
    node = Node(id=1, parent=0, depth=1, text=text, tokens=500, thinking="hmm " * 300, reasoning_tokens=300)
    assert shown(node, 200) == text  # 200 tokens of reply: within the cap (the thinking is not counted)
    cut = shown(node, 20)
    assert cut.startswith("…") and cut.endswith("The answer is 7.") and "w0 " not in cut
    assert len(cut.split()) == 104 * 20 // 200  # the words' share of the kept tokens
    assert "hmm" not in cut


# -- recursive self-aggregation -------------------------------------------------------------


async def test_rsa_makes_t_rounds_of_n_from_k_subsets(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    n, k, rounds = 6, 3, 2
    result = await search(
        PROBLEMS["b6"], make_policy(fake_server()), config("rsa", n=n, rsa_k=k, rsa_rounds=rounds)
    )
    tree = tree_of(result)
    solutions = tree.children(ROOT)
    assert len(solutions) == n * (rounds + 1)  # N × (T + 1) generations
    assert result.usage.requests == 1 + n * rounds  # the first population in one request
    population = {node.id for node in solutions if node.shown is None}
    assert len(population) == n
    for round_ in range(1, rounds + 1):
        made = [node for node in solutions if node.position.startswith(f"0/rsa {round_}.")]
        assert len(made) == n
        for node in made:
            assert node.shown is not None and len(set(node.shown)) == k
            assert set(node.shown) <= population  # drawn from the round before
        population = {node.id for node in made}
    assert {c.node for c in result.candidates} == population  # the last population votes
    assert len(result.candidates) == n


def test_a_subset_is_drawn_from_seed_round_and_place() -> None:
    drawn = subset(3, "p", 2, 5, 16, 4)
    assert len(set(drawn)) == 4 and all(0 <= place < 16 for place in drawn)
    assert subset(3, "p", 2, 5, 16, 4) == drawn
    assert {tuple(subset(3, "p", 2, index, 16, 4)) for index in range(16)} != {tuple(drawn)}
    assert sorted(subset(3, "p", 1, 0, 3, 4)) == [0, 1, 2]  # K at most N


async def test_a_seeded_run_repeats_at_any_concurrency(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    url = fake_server("--latency", "0.001")
    seen = []
    for concurrency in (1, 64):
        found = []
        for strategy in ("rsa", "gen-select"):
            results = await run(
                problems("b", 4),
                make_policy(url, concurrency=concurrency),
                config(strategy, n=8, rsa_k=3, rsa_rounds=2, select_k=3),
            )
            for result in results:
                tree = tree_of(result)
                # Node ids follow arrival order: compare by position.
                place = {node.id: node.position for node in tree.nodes()}
                found.append(
                    (
                        result.answer,
                        sorted(
                            (
                                node.position,
                                node.answer,
                                tuple(place[i] for i in node.shown or ()),
                                node.chosen and place[node.chosen],
                            )
                            for node in tree.nodes()
                        ),
                    )
                )
        seen.append(found)
    assert seen[0] == seen[1]


@pytest.mark.parametrize("strategy", ["rsa", "gen-select"])
@pytest.mark.parametrize("share", [0.3, 0.6, 0.9])
async def test_a_budget_is_never_overrun_and_ends_with_what_finished(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], strategy: str, share: float
) -> None:
    url = fake_server()
    options: dict[str, Any] = {"n": 8, "rsa_k": 3, "rsa_rounds": 3}
    free = await search(PROBLEMS["b7"], make_policy(url), config(strategy, **options))
    limit = int(free.usage.total_tokens * share)
    cut = await search(
        PROBLEMS["b7"], make_policy(url), config(strategy, budget=BudgetLimits(tokens=limit), **options)
    )
    assert cut.stopped_by == "budget"
    assert cut.usage.total_tokens <= limit
    tree = tree_of(cut)
    # The finished samples (a budget's cut may have left one to finish step by step).
    sampled = [node for node in tree.terminals() if node.shown is None and node.status is NodeStatus.ANSWERED]
    if strategy == "rsa":  # every place of the first population (as many as the budget let in)
        places = [node for node in tree.children(ROOT) if node.shown is None]
        assert len(cut.candidates) == len(places) > 0  # votes with its newest solution
    else:  # a knock-out cut short: its survivors vote (the samples, if it never began)
        assert {c.node for c in cut.candidates} <= {node.id for node in sampled}
        assert len(cut.candidates) >= min(2, len(sampled))
    assert (cut.answer is not None) == bool(sampled)


async def test_on_a_hard_problem_selection_and_aggregation_find_a_minority_answer(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    """Problems whose right answer has 0.35 and two wrong ones 0.325 each: majority vote picks
    the right one about half the time; a model that names and keeps a shown right answer
    does better, as the server's settings say it should."""
    url = fake_server("--select-accuracy", "1", "--aggregate-accuracy", "0.9")
    chosen = problems("s", 12)
    policy = make_policy(url)
    right = {}
    for strategy in ("gen-select", "rsa"):
        results = await run(chosen, policy, config(strategy, n=8, rsa_rounds=2))
        right[strategy] = sum(bool(r.correct) for r in results)
    assert right["gen-select"] >= 11  # a right sample among 8 is near certain; it always wins its groups
    assert right["rsa"] >= 10


def test_the_fake_model_selects_and_aggregates_as_set() -> None:
    task = FakeTask(gold="7", answers={"7": 0.2, "8": 0.8}, steps=2)
    shown = "Q [task:x]\n\nSolution 0:\nThe answer is 8.\n\nSolution 1:\nThe answer is 7.\n\n"
    select = shown + "End with\nJudgment: IDX\n"
    aggregate = (
        shown.replace("Solution 0:", "---- Solution 0 ----").replace("Solution 1:", "---- Solution 1 ----")
        + "Aggregate them into one."
    )
    rng = random.Random(0)
    sure = SelectionModel(select_accuracy=1.0, aggregate_accuracy=1.0, aggregate_fix=0.0)
    assert all(selection_reply(task, select, rng, False, sure).endswith("Judgment: 1") for _ in range(50))
    blind = SelectionModel(select_accuracy=0.0)
    picks = Counter(selection_reply(task, select, rng, False, blind)[-1] for _ in range(400))
    assert set(picks) == {"0", "1"} and 150 < picks["0"] < 250  # a shown solution drawn evenly
    assert (
        selection_reply(task, aggregate, rng, False, sure) == "Step 1: this points to 7.\n\nThe answer is 7."
    )
    wrong_only = aggregate.replace("The answer is 7.", "The answer is 8.")
    assert all(
        selection_reply(task, wrong_only, rng, False, sure).endswith("The answer is 8.") for _ in range(50)
    )
    mute = SelectionModel(select_unparsable=1.0)
    assert "Judgment" not in (selection_reply(task, select, rng, False, mute) or "")
    assert selection_reply(task, "Q [task:x]\n\nSolution:\n", rng, False, sure) is None


def test_rsa_runs_from_the_command_line(fake_server: Callable[..., str], tmp_path: Any) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("b", 2))
    done = run_cli(
        "run", "--problems", str(problems_file), "--output", str(tmp_path / "out"), "--base-url",
        fake_server(), "--model", "fake", "--strategy", "rsa", "--n", "4", "--rsa-k", "2",
        "--rsa-rounds", "1", "--seed", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
