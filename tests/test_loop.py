"""The problem loop run and label share: admission, resume, flushed rows, failures, tally."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import problems

from treesearch import ConfigError, Problem, SamplingParams, SearchConfig, run, search
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM
from treesearch.engine.budget import Tally
from treesearch.priority import problem_order
from treesearch.runs.loop import Output, each_problem
from treesearch.runs.runner import fingerprint

pytestmark = pytest.mark.anyio

PROBLEMS = [Problem(id=f"p{index}", question=f"question {index}") for index in range(10)]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def output(tmp_path: Path, *, parts: bool = False) -> Output[dict[str, Any]]:
    """Results are plain records; with ``parts``, each problem also gets two rows of its own."""
    return Output(
        done=tmp_path / "done.jsonl",
        settings={"kind": "test"},
        record=lambda result: result,
        read_back=lambda row, rows: {"id": row["id"], "error": row["error"], "read_back": len(rows)},
        parts=tmp_path / "parts.jsonl" if parts else None,
        parts_of=lambda problem, result: [{"problem_id": problem.id, "part": part} for part in range(2)],
    )


class Solver:
    """Solves a problem after a few checkpoints, noting each problem's admission order and the
    most problems in flight at once; a problem in ``failing`` ends with an error, one in
    ``raising`` raises."""

    def __init__(self, failing: frozenset[str] = frozenset(), raising: frozenset[str] = frozenset()) -> None:
        self.failing, self.raising = failing, raising
        self.orders: dict[str, int] = {}
        self.active = self.most = 0

    async def __call__(self, problem: Problem, tally: Tally) -> dict[str, Any]:
        self.active += 1
        self.most = max(self.most, self.active)
        self.orders[problem.id] = problem_order.get()
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        self.active -= 1
        if problem.id in self.raising:
            raise ValueError(f"{problem.id} broke")
        tally.requests += 1
        return {"id": problem.id, "error": "failed" if problem.id in self.failing else None}


async def test_problems_are_admitted_in_order_up_to_the_limit() -> None:
    solver, tally = Solver(), Tally()
    results = await each_problem(PROBLEMS, solver, max_in_flight=3, tally=tally)
    assert [result["id"] for result in results] == [problem.id for problem in PROBLEMS]
    assert solver.most == 3
    assert solver.orders == {problem.id: order for order, problem in enumerate(PROBLEMS)}
    assert tally.requests == len(PROBLEMS)  # one tally, shared by every problem


async def test_a_rerun_solves_only_what_is_not_done_and_retries_failures(tmp_path: Path) -> None:
    await each_problem(PROBLEMS[:4], Solver(failing=frozenset({"p1"})), output=output(tmp_path))
    solver = Solver()
    results = await each_problem(PROBLEMS[:6], solver, output=output(tmp_path))
    assert sorted(solver.orders) == ["p4", "p5"] and solver.orders["p4"] == 0  # orders count new work
    assert [result.get("read_back") for result in results] == [0, 0, 0, 0, None, None]
    solver = Solver()
    results = await each_problem(PROBLEMS[:6], solver, output=output(tmp_path), retry_failed=True)
    assert list(solver.orders) == ["p1"] and results[1] == {"id": "p1", "error": None}
    rows = lines(tmp_path / "done.jsonl")
    assert sorted(row["id"] for row in rows) == [f"p{index}" for index in range(6)]  # p1 replaced
    assert all(row["config"] == {"kind": "test"} for row in rows)


async def test_the_problems_left_are_told_before_the_first_is_admitted(tmp_path: Path) -> None:
    """What the Ray driver cuts into chunks: the problems a rerun still has to solve, in
    admission order, before any of them is solved."""
    await each_problem(PROBLEMS[:4], Solver(failing=frozenset({"p1"})), output=output(tmp_path))
    solver, told = Solver(), []

    def todo(left: list[Problem]) -> None:
        told.append(([problem.id for problem in left], dict(solver.orders)))

    await each_problem(PROBLEMS[:7], solver, output=output(tmp_path), retry_failed=True, on_todo=todo)
    assert told == [(["p1", "p4", "p5", "p6"], {})]
    assert solver.orders == {"p1": 0, "p4": 1, "p5": 2, "p6": 3}


async def test_another_configuration_is_refused_unless_forced(tmp_path: Path) -> None:
    await each_problem(PROBLEMS[:2], Solver(), output=output(tmp_path))
    other = replace(output(tmp_path), settings={})
    with pytest.raises(ConfigError, match="rows of another configuration"):
        await each_problem(PROBLEMS[:2], Solver(), output=other)
    assert len(await each_problem(PROBLEMS[:2], Solver(), output=other, force_resume=True)) == 2


async def test_parts_without_their_done_line_are_dropped_and_solved_again(tmp_path: Path) -> None:
    chosen = output(tmp_path, parts=True)
    await each_problem(PROBLEMS[:2], Solver(), output=chosen)
    assert [row["problem_id"] for row in lines(tmp_path / "parts.jsonl")] == ["p0", "p0", "p1", "p1"]
    # A crash after p2's parts, before its done line:
    with (tmp_path / "parts.jsonl").open("a") as parts:
        parts.write(json.dumps({"problem_id": "p2", "part": 0}) + "\n")
    solver = Solver()
    results = await each_problem(PROBLEMS[:3], solver, output=chosen)
    assert list(solver.orders) == ["p2"] and [result.get("read_back") for result in results] == [2, 2, None]
    written = sorted(row["problem_id"] for row in lines(tmp_path / "parts.jsonl"))
    assert written == ["p0", "p0", "p1", "p1", "p2", "p2"]
    (tmp_path / "done.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"holds rows but .*done\.jsonl is missing"):
        await each_problem(PROBLEMS[:3], Solver(), output=chosen)


async def test_a_failure_is_raised_as_itself_after_the_rows_before_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="p3 broke"):
        await each_problem(
            PROBLEMS, Solver(raising=frozenset({"p3"})), output=output(tmp_path), max_in_flight=1
        )
    assert [row["id"] for row in lines(tmp_path / "done.jsonl")] == ["p0", "p1", "p2"]


async def test_repeated_ids_and_no_room_in_flight_are_refused() -> None:
    with pytest.raises(ConfigError, match="'p0' appears twice"):
        await each_problem([PROBLEMS[0], PROBLEMS[0]], Solver())
    with pytest.raises(ConfigError, match="in flight must be positive"):
        await each_problem(PROBLEMS, Solver(), max_in_flight=0)


async def test_a_display_counts_the_problems_left_and_is_closed(tmp_path: Path) -> None:
    await each_problem(PROBLEMS[:3], Solver(), output=output(tmp_path))
    seen: list[tuple[str, object]] = []

    class Shown:
        def __init__(self, left: int, tally: Tally) -> None:
            seen.append(("left", left))

        def finished(self, result: dict[str, Any]) -> None:
            seen.append(("finished", result["id"]))

        async def watch(self) -> None:
            await anyio.sleep_forever()

        def close(self) -> None:
            seen.append(("closed", None))

    await each_problem(PROBLEMS[:5], Solver(), output=output(tmp_path), display=Shown)
    assert seen[0] == ("left", 2) and seen[-1] == ("closed", None)
    assert sorted(seen[1:-1]) == [("finished", "p3"), ("finished", "p4")]


@pytest.mark.parametrize("strategy", ["majority-vote", "beam", "rebase", "revisions"])
async def test_run_rows_are_each_searchs_record_with_the_configuration(
    strategy: str,
    fake_server: Callable[..., str],
    make_policy: Callable[..., OpenAIPolicy],
    prm: PoolingPRM,
    tmp_path: Path,
) -> None:
    """The loop adds the run's configuration to a row and nothing else: a seeded run writes
    what searching each problem alone records (wall times aside)."""
    config = SearchConfig(strategy=strategy, n=4, sampling=SamplingParams(seed=7))
    policy, chosen = make_policy(fake_server(), "fake"), problems("s", 4)
    await run(chosen, policy, config, verifier=prm, output=tmp_path / "out.jsonl")
    settings = fingerprint(config, policy, prm)
    rows = {row.pop("id"): row for row in lines(tmp_path / "out.jsonl")}
    for problem in chosen:
        alone = (await search(problem, policy, config, verifier=prm)).to_record() | {"config": settings}
        assert alone.pop("id") == problem.id
        assert list(rows[problem.id]) == list(alone)  # the same keys in the same order
        assert rows[problem.id] | {"wall_s": 0} == alone | {"wall_s": 0}


async def test_a_failure_in_run_is_raised_as_itself(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy], tmp_path: Path
) -> None:
    """A tree that cannot be written ends the run with that error, not an exception group."""
    (tmp_path / "trees" / "a0.json").mkdir(parents=True)
    config = SearchConfig(strategy="majority-vote", n=2, sampling=SamplingParams(seed=1))
    with pytest.raises(IsADirectoryError):
        await run(problems("a", 3), make_policy(fake_server(), "fake"), config, trees_dir=tmp_path / "trees")
