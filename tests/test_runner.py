"""Many problems: JSONL written as problems finish, resume, failures recorded, events."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PROBLEMS, problems, server_stats
from structlog.testing import capture_logs

from treesearch import BudgetLimits, Problem, SamplingParams, SearchConfig, StepFormat, run
from treesearch.backends.openai_compat import OpenAIPolicy

pytestmark = pytest.mark.anyio

CONFIG = SearchConfig(strategy="majority-vote", n=3, sampling=SamplingParams(seed=1))


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_rerun_skips_finished_problems(
    fake_server: Callable[..., str], tmp_path: Path, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    url = fake_server()
    output = tmp_path / "out.jsonl"
    policy = make_policy(url, "fake")
    first = await run(problems("a", 5), policy, CONFIG, output=output)
    assert len(first) == 5
    before = server_stats(url)["requests"]
    second = await run(problems("a", 8), policy, CONFIG, output=output)
    assert [r.problem_id for r in second] == ["a5", "a6", "a7"]
    assert server_stats(url)["requests"] - before == 3  # one request (n=3) per new problem
    records = lines(output)
    assert sorted(r["id"] for r in records) == [f"a{i}" for i in range(8)]
    for record in records:
        assert {
            "id",
            "strategy",
            "answer",
            "correct",
            "candidates",
            "usage",
            "stopped_by",
            "wall_s",
            "error",
        } <= set(record)
        assert record["error"] is None and record["stopped_by"] == "done"


async def test_a_failing_problem_is_recorded_and_the_others_go_on(
    fake_server: Callable[..., str], tmp_path: Path, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    url = fake_server("--max-context", "1500")
    output = tmp_path / "out.jsonl"
    huge = Problem(id="huge", question="word " * 800, answer="1")
    policy = make_policy(url, "fake")
    results = await run([*problems("c", 3), huge], policy, CONFIG, output=output)
    records = {r["id"]: r for r in lines(output)}
    assert records["huge"]["stopped_by"] == "error"
    assert "400" in str(records["huge"]["error"])
    assert all(records[f"c{i}"]["error"] is None for i in range(3))
    assert [r.error is None for r in results] == [True, True, True, False]
    # A rerun tries the failed problem again, and only it.
    before = server_stats(url)["requests"]
    again = await run([*problems("c", 3), huge], policy, CONFIG, output=output)
    assert [r.problem_id for r in again] == ["huge"]
    assert server_stats(url)["requests"] - before == 1


async def test_an_unfinished_last_line_does_not_corrupt_the_next(
    fake_server: Callable[..., str], tmp_path: Path, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text('{"id": "a0", "error": null}\n{"id": "a1", "err')
    policy = make_policy(fake_server(), "fake")
    results = await run(problems("a", 2), policy, CONFIG, output=output)
    assert [r.problem_id for r in results] == ["a1"]
    assert json.loads(output.read_text().splitlines()[-1])["id"] == "a1"


async def test_budget_stops_gracefully_with_the_best_so_far(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    policy = make_policy(fake_server(), "fake", concurrency=1)
    config = SearchConfig(
        strategy="majority-vote",
        n=6,
        sampling=SamplingParams(seed=2),
        step=StepFormat(max_tokens=150),
        budget=BudgetLimits(tokens=400),
    )
    (result,) = await run([PROBLEMS["sure4"]], policy, config)
    assert result.stopped_by == "budget"
    assert result.error is None
    assert result.usage.total_tokens <= 400
    assert 0 < len(result.candidates) < 6
    assert result.answer == "14" and result.correct


async def test_deadline_ends_the_search(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    policy = make_policy(fake_server("--latency", "5"), "fake")
    config = SearchConfig(n=2, budget=BudgetLimits(deadline_s=0.2))
    (result,) = await run([PROBLEMS["a9"]], policy, config)
    assert result.stopped_by == "deadline"
    assert result.answer is None and result.correct is False


async def test_trees_are_written_and_events_emitted(
    fake_server: Callable[..., str], tmp_path: Path, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    policy = make_policy(fake_server(), "fake")
    config = SearchConfig(n=2, whole=False, sampling=SamplingParams(seed=5))
    with capture_logs() as events:
        await run(problems("sure", 2), policy, config, trees_dir=tmp_path)
    tree = json.loads((tmp_path / "sure0.json").read_text())
    assert len(tree["nodes"]) == 1 + 2 * 4  # the root and two paths of four steps
    assert len(tree["edges"]) == 8
    kinds = [event["event"] for event in events]
    assert kinds.count("problem_finished") == 2
    assert kinds.count("request") == 2 * (1 + 2 * 3)  # per problem: n=2 first, then 3 steps each
    assert all(
        event["problem_id"] in {"sure0", "sure1"} for event in events if event["event"] == "node_added"
    )
