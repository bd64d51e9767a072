"""One search's honest ending: depth limits, deadlines, which paths are candidates, and how
the answer was aggregated."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import PROBLEMS, problems
from structlog.testing import capture_logs

from treesearch import (
    BudgetLimits,
    CallableVerifier,
    ConfigError,
    NodeStatus,
    Problem,
    SamplingParams,
    SearchConfig,
    SearchResult,
    StepFormat,
    run,
    search,
)
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM
from treesearch.engine.search import StopReason
from treesearch.engine.tree import ROOT, SearchTree

pytestmark = pytest.mark.anyio

STEP_STRATEGIES = [
    "beam", "lookahead", "rebase", "dvts", "mcts", "weighted-vote", "majority-vote", "particle-filter",
    "early-vote",
]  # fmt: skip


def config(strategy: str, **options: Any) -> SearchConfig:
    return SearchConfig(strategy=strategy, whole=False, sampling=SamplingParams(seed=7), **options)


def scored_dead_ends(tree: SearchTree) -> list[int]:
    return [n.id for n in tree.nodes() if n.status is NodeStatus.DEAD_END and n.scores is not None]


@pytest.mark.parametrize("strategy", STEP_STRATEGIES)
async def test_the_last_allowed_step_asks_for_the_rest_of_the_solution(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM, strategy: str
) -> None:
    # Six-step solutions under a three-step limit: the third step is the rest in one call.
    policy = make_policy(fake_server())
    result = await search(
        PROBLEMS["deep1"],
        policy,
        config(strategy, n=4, beam_width=2, step=StepFormat(max_depth=3)),
        verifier=prm,
    )
    assert result.stopped_by == "done"
    assert result.answer is not None
    tree = result.tree
    assert tree is not None
    assert max(n.depth for n in tree.nodes()) == 3
    last = [n for n in tree.nodes() if n.depth == 3]
    assert last and all(n.terminal for n in last)
    assert all(n.text.count("Step") == 3 for n in last if n.status is NodeStatus.ANSWERED)
    assert scored_dead_ends(tree) == []


@pytest.mark.parametrize("strategy", ["beam", "rebase", "weighted-vote"])
async def test_no_answer_within_the_depth_limit_says_depth(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM, strategy: str
) -> None:
    # The rest of the solution does not fit in max_tokens: every path ends unanswered.
    step = StepFormat(max_depth=2, max_tokens=5)
    result = await search(
        PROBLEMS["deep2"],
        make_policy(fake_server()),
        config(strategy, n=4, beam_width=2, step=step),
        verifier=prm,
    )
    assert result.answer is None
    assert result.stopped_by == "depth"
    assert result.candidates == ()
    assert result.tree is not None
    assert scored_dead_ends(result.tree) == []  # an unanswered dead end is never sent to the verifier


async def test_a_deadline_reached_before_a_call_reads_deadline(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    result = await search(
        PROBLEMS["a1"],
        make_policy(fake_server()),
        config("majority-vote", n=2, budget=BudgetLimits(deadline_s=1e-6)),
    )
    assert result.stopped_by == "deadline"
    assert result.usage.requests == 0


async def test_finished_paths_are_scored_in_their_rounds_call(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    """A path that finishes during a beam search is scored in that round's verifier call, before
    the search grows deeper, not in a last call that a spent budget would refuse."""
    checked = 0
    for problem in problems("early", 4):
        with capture_logs() as events:
            result = await search(
                problem, make_policy(fake_server()), config("beam", n=8, beam_width=2), verifier=prm
            )
        tree = result.tree
        assert tree is not None
        when = {(e["event"], e["node_id"]): i for i, e in enumerate(events) if "node_id" in e}
        for candidate in result.candidates:
            depth = tree.node(candidate.node).depth
            deeper = [when["node_added", n.id] for n in tree.nodes() if n.depth > depth]
            assert all(when["node_scored", candidate.node] < added for added in deeper)
            checked += bool(deeper)
    assert checked > 0


async def test_a_budget_cut_search_still_aggregates_by_its_own_rule(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    results = await run(
        problems("early", 10),
        make_policy(fake_server()),
        config("beam", n=8, beam_width=2, budget=BudgetLimits(tokens=1500)),
        verifier=prm,
    )
    assert {r.stopped_by for r in results} == {"budget"}
    assert all(r.candidates for r in results)
    assert all(c.score is not None for r in results for c in r.candidates)
    assert {r.aggregated_by for r in results} == {"weighted"}


@pytest.mark.parametrize("strategy", ["beam", "rebase", "dvts"])
async def test_paths_that_finished_in_a_refused_expansion_are_candidates(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM, strategy: str
) -> None:
    """A server that ignores n: the first steps are eight requests, and the budget runs out
    partway through them. The paths that did arrive and answered are still aggregated."""
    step = StepFormat(max_step_tokens=16)
    result = await search(
        PROBLEMS["early5"],
        make_policy(fake_server("--ignore-n")),
        config(strategy, n=8, beam_width=2, step=step, budget=BudgetLimits(tokens=500)),
        verifier=prm,
    )
    assert result.stopped_by == "budget"
    assert result.tree is not None
    assert len(result.tree.children(ROOT)) < 8  # the first expansion itself was cut short
    answered = {n.id for n in result.tree.nodes() if n.status is NodeStatus.ANSWERED}
    assert answered
    assert {c.node for c in result.candidates} == answered
    assert result.answer is not None


async def test_a_judged_completion_stores_a_value_never_prose(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    # A judge that calls every step finished: the answer is the value the step states.
    judge = CallableVerifier(lambda problem, steps: 1.0)
    result = await search(
        PROBLEMS["sure2"], make_policy(fake_server()), config("majority-vote", n=3), finish_check=judge
    )
    assert result.tree is not None
    firsts = result.tree.children(ROOT)
    assert [n.text for n in firsts] == ["Step 1: this points to 12."] * 3
    assert [n.answer for n in firsts] == ["12"] * 3
    assert result.answer == "12" and result.correct


def test_a_step_that_runs_on_into_the_next_question_is_cut_there() -> None:
    fmt = StepFormat(end_stops=("\n\nQ:",))
    assert fmt.answer("2 + 3 = 5\nThe answer is 5.\nQ: 7 + 1\nThe answer is 8.") == (
        "2 + 3 = 5\nThe answer is 5.",
        "5",
        True,
    )
    # The delimiter ended the line before, so a next question may open the step itself.
    assert fmt.answer("Q: 7 + 1\nThe answer is 8.") == ("", None, True)
    assert fmt.answer("We need to check whether the answer is an integer.") == (
        "We need to check whether the answer is an integer.",
        None,
        False,
    )
    own = StepFormat(answer_pattern=r"#### (?P<answer>-?\d+)")
    assert own.answer("so 6 * 7 = 42\n#### 42")[1] == "42"
    assert own.answer("The answer is 41.")[1] is None
    with pytest.raises(ConfigError, match="answer pattern"):
        StepFormat(answer_pattern="(unclosed")


def test_the_library_prints_nothing_and_leaves_the_applications_logging_alone(
    fake_server: Callable[..., str],
) -> None:
    script = (
        "import anyio, treesearch\n"
        "from treesearch.backends.openai_compat import OpenAIPolicy\n"
        "async def main():\n"
        f"    policy = OpenAIPolicy({fake_server()!r}, 'fake')\n"
        "    problem = treesearch.Problem(id='q', question='Synthetic problem [task:sure0].', answer='10')\n"
        "    config = treesearch.SearchConfig(n=2, whole=False)\n"
        "    result = await treesearch.search(problem, policy, config)\n"
        "    await policy.aclose()\n"
        "    assert result.correct, result\n"
        "anyio.run(main)\n"
        "import structlog\n"
        "structlog.get_logger('app').warning('still mine')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    # Nothing from treesearch, and structlog still prints the application's own events.
    assert len(done.stdout.splitlines()) == 1
    assert "still mine" in done.stdout


def refuse(constant: str) -> float:
    raise ValueError(f"not strict JSON: {constant}")


async def nan_for_odd_problems(problem: Problem, steps: Sequence[str]) -> float:
    return math.nan if int(problem.id[1:]) % 2 else 0.5


async def test_output_rows_are_strict_json(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], tmp_path: Path
) -> None:
    """A verifier's NaN once reached the rows as a bare NaN, which JSON does not have: now
    the problem fails naming it, and every row parses with a strict parser."""
    output = tmp_path / "rows.jsonl"
    results = await run(
        problems("s", 4),
        make_policy(fake_server()),
        config("weighted-vote", n=4),
        verifier=CallableVerifier(nan_for_odd_problems),
        output=output,
    )
    rows = [json.loads(line, parse_constant=refuse) for line in output.read_text().splitlines()]
    assert {row["id"]: row["error"] for row in rows} == {
        "s0": None,
        "s1": "verifier test_search:nan_for_odd_problems returned the score nan: not a finite number",
        "s2": None,
        "s3": "verifier test_search:nan_for_odd_problems returned the score nan: not a finite number",
    }
    assert all(c["score"] is None for row in rows if row["error"] for c in row["candidates"])
    assert all(r.answer is not None for r in results)  # a failed problem still votes what it finished


@pytest.mark.parametrize("strategy", ["majority-vote", "particle-filter", "beam"])
async def test_a_seeded_run_repeats_at_any_concurrency(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM, strategy: str
) -> None:
    """Step by step on problems whose steps err: requests are seeded by the position of the
    node they extend, not by node ids handed out as answers arrive, so the same seed gives
    the same candidates (in the same order) and answers whatever the concurrency."""
    url = fake_server("--latency", "0.001")
    seen = []
    for concurrency in (2, 64):
        results = await run(
            problems("s", 12),
            make_policy(url, concurrency=concurrency),
            config(strategy, n=8, beam_width=2),
            verifier=prm,
        )
        seen.append([(r.answer, [(c.answer, c.score) for c in r.candidates]) for r in results])
    assert seen[0] == seen[1]


async def test_the_stop_reason_is_an_enum_that_rows_record_as_its_value(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    policy = make_policy(fake_server())
    done = await search(PROBLEMS["a0"], policy, config("majority-vote", n=2))
    tight = config("beam", n=8, beam_width=2, budget=BudgetLimits(tokens=600))
    cut = await search(PROBLEMS["early1"], policy, tight, verifier=prm)
    for result, reason in ((done, StopReason.DONE), (cut, StopReason.BUDGET)):
        assert result.stopped_by is reason
        line = json.dumps(result.to_record())
        assert json.loads(line)["stopped_by"] == reason.value  # the row holds the plain string
        assert SearchResult.from_record(json.loads(line)).stopped_by is reason
    # A row without a known reason (written by hand) reads as done, or as an error if it has one.
    assert SearchResult.from_record({"id": "x"}).stopped_by is StopReason.DONE
    failed = {"id": "x", "stopped_by": "?", "error": "boom"}
    assert SearchResult.from_record(failed).stopped_by is StopReason.ERROR
