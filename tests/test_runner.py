"""Many problems: JSONL written as problems finish, resume, failures recorded, events."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import PROBLEMS, problems, server_stats
from structlog.testing import capture_logs

from treesearch import (
    BudgetLimits,
    CallableVerifier,
    ConfigError,
    Problem,
    SamplingParams,
    SearchConfig,
    StepFormat,
    run,
)
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.optimal.difficulty import Cell, DifficultyBins, PolicyTable
from treesearch.runs.runner import fingerprint

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
    # Every problem's result: the first five read back from the file, three new ones run.
    assert [r.problem_id for r in second] == [f"a{i}" for i in range(8)]
    assert [r.tree is None for r in second] == [True] * 5 + [False] * 3
    assert [r.answer for r in second[:5]] == [r.answer for r in first]
    assert server_stats(url)["requests"] - before == 3  # one request (n=3) per new problem
    third = await run(problems("a", 8), policy, CONFIG, output=output)  # nothing left to do
    assert len(third) == 8 and sum(bool(r.correct) for r in third) == sum(bool(r.correct) for r in second)
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
    # A rerun leaves the failed problem alone; --retry-failed runs it again, and only it,
    # replacing its row: the file never holds two rows for one id.
    before = server_stats(url)["requests"]
    again = await run([*problems("c", 3), huge], policy, CONFIG, output=output)
    assert [r.error is None for r in again] == [True, True, True, False]
    assert server_stats(url)["requests"] == before
    retried = await run([*problems("c", 3), huge], policy, CONFIG, output=output, retry_failed=True)
    assert [r.problem_id for r in retried] == ["c0", "c1", "c2", "huge"]
    assert server_stats(url)["requests"] - before == 1
    assert sorted(r["id"] for r in lines(output)) == ["c0", "c1", "c2", "huge"]


async def test_a_rerun_with_another_configuration_is_refused(
    fake_server: Callable[..., str], tmp_path: Path, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    url = fake_server()
    output = tmp_path / "out.jsonl"
    policy = make_policy(url, "fake")
    await run(problems("a", 2), policy, CONFIG, output=output)
    other = SearchConfig(strategy="majority-vote", n=5, sampling=SamplingParams(seed=1))
    before = server_stats(url)["requests"]
    with pytest.raises(ConfigError, match=r"another configuration \(n: 3 there, 5 now\).*--force-resume"):
        await run(problems("a", 3), policy, other, output=output)
    assert server_stats(url)["requests"] == before
    forced = await run(problems("a", 3), policy, other, output=output, force_resume=True)
    assert [r.problem_id for r in forced] == ["a0", "a1", "a2"]
    assert server_stats(url)["requests"] - before == 1  # only the new problem
    assert [r["config"]["n"] for r in lines(output)] == [3, 3, 5]


async def test_rows_from_before_a_setting_existed_continue_the_run(
    fake_server: Callable[..., str], tmp_path: Path, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    """A row written before treesearch had a setting (here the revision settings and the
    policy table) holds its default: a rerun with the default continues the run."""
    url = fake_server()
    output = tmp_path / "out.jsonl"
    policy = make_policy(url, "fake")
    await run(problems("a", 2), policy, CONFIG, output=output)
    old = lines(output)
    for row in old:
        for key in ("revision_ratio", "revision_context", "revision_template", "policy_table"):
            del row["config"][key]  # type: ignore[attr-defined]
    output.write_text("".join(json.dumps(row) + "\n" for row in old))
    before = server_stats(url)["requests"]
    again = await run(problems("a", 3), policy, CONFIG, output=output)
    assert [r.problem_id for r in again] == ["a0", "a1", "a2"]
    assert server_stats(url)["requests"] - before == 1  # only the new problem
    with pytest.raises(ConfigError, match=r"revision_ratio: 1.0 there, 2.0 now"):
        await run(problems("a", 3), policy, SearchConfig(strategy="majority-vote", n=3, revision_ratio=2.0,
                  sampling=SamplingParams(seed=1)), output=output)  # fmt: skip


async def test_revision_chains_survive_a_resume(
    fake_server: Callable[..., str], tmp_path: Path, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    output = tmp_path / "out.jsonl"
    config = SearchConfig(strategy="revisions", n=6, revision_ratio=1.5, aggregator="majority",
                          sampling=SamplingParams(seed=1))  # fmt: skip
    policy = make_policy(fake_server(), "fake")
    (first,) = await run(problems("rev", 1), policy, config, output=output)
    (again,) = await run(problems("rev", 1), policy, config, output=output)  # read back
    assert again.tree is None and first.tree is not None
    assert [c.chain for c in again.candidates] == [c.chain for c in first.candidates]
    assert len({c.chain for c in first.candidates}) == 2  # two chains of three


async def test_problems_are_admitted_as_others_finish(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    """With more problems than may be in flight (32 by default), a later problem starts only
    once an earlier one has finished, so an interrupted run has rows to show."""
    config = SearchConfig(strategy="majority-vote", n=2, whole=False, sampling=SamplingParams(seed=3))
    chosen = problems("b", 40)
    with capture_logs() as events:
        await run(chosen, make_policy(fake_server(), "fake"), config)
    order = [
        (e["event"], e["problem_id"]) for e in events if e["event"] in ("node_added", "problem_finished")
    ]
    first_step = {pid: order.index(("node_added", pid)) for pid in {p for _, p in order}}
    finished = sorted(i for i, (kind, _) in enumerate(order) if kind == "problem_finished")
    starts = sorted(first_step.values())
    assert all(start < finished[0] for start in starts[:32])
    assert all(start > finished[k - 32] for k, start in enumerate(starts) if k >= 32)


async def test_older_problems_are_served_first_so_rows_come_from_the_start(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    """Twelve problems in flight want 48 requests at once from an endpoint with 4 slots: the
    oldest problem's requests take the free slots first, so problems finish one after another
    in about the order they were admitted, rather than all advancing a step at a time and
    finishing together at the end (first come, first served by request)."""
    config = SearchConfig(strategy="majority-vote", n=4, whole=False, sampling=SamplingParams(seed=3))
    policy = make_policy(fake_server(), "fake", concurrency=4)
    with capture_logs() as events:
        await run(problems("sure", 12), policy, config, max_problems_in_flight=12)
    served = [e["event"] for e in events if e["event"] in ("request", "problem_finished")]
    per_problem = 1 + 3 * 4  # four paths of four steps: n=4 at once, then a request per step each
    assert served.count("request") == 12 * per_problem
    assert served.index("problem_finished") <= 3 * per_problem  # not after ~11 problems' worth
    finished = [int(e["problem_id"].removeprefix("sure")) for e in events if e["event"] == "problem_finished"]
    assert all(abs(place - admitted) <= 2 for place, admitted in enumerate(finished)), finished


async def test_an_unfinished_last_line_does_not_corrupt_the_next(
    fake_server: Callable[..., str], tmp_path: Path, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    output = tmp_path / "out.jsonl"
    policy = make_policy(fake_server(), "fake")
    done = {"id": "a0", "answer": "10", "error": None, "config": fingerprint(CONFIG, policy, None)}
    output.write_text(json.dumps(done) + '\n{"id": "a1", "err')
    results = await run(problems("a", 2), policy, CONFIG, output=output)
    assert [(r.problem_id, r.tree is None) for r in results] == [("a0", True), ("a1", False)]
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


async def test_progress_off_a_terminal_is_plain_lines_with_live_totals(
    fake_server: Callable[..., str],
    make_policy: Callable[..., OpenAIPolicy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = await run(problems("sure", 3), make_policy(fake_server(), "fake"), CONFIG, progress=True)
    requests = sum(r.usage.requests for r in results)
    tokens = sum(r.usage.total_tokens for r in results)
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .startswith(f"[3/3] acc 1.000 requests {requests} tokens {tokens} ")
    )


def test_the_readme_snippet_runs_twice(fake_server: Callable[..., str], tmp_path: Path) -> None:
    """The README's Python example, pointed at the synthetic server: the second run finds
    everything done and still reports the accuracy of every problem."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    python_section = readme.split("\n## Python\n", 1)[1]
    snippet = python_section.split("```python\n", 1)[1].split("```", 1)[0]
    snippet = snippet.replace("http://127.0.0.1:8000/v1", fake_server()).replace(
        "Qwen/Qwen2.5-1.5B-Instruct", "fake"
    )
    chosen = [{"id": p.id, "question": p.question, "answer": p.answer} for p in problems("c", 4)]
    (tmp_path / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    printed = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        printed.append(done.stdout)
    assert printed[0] == printed[1] != ""
    assert len(lines(tmp_path / "out.jsonl")) == 4


def score_one(problem: Problem, steps: Sequence[str]) -> float:
    return 1.0


def score_two(problem: Problem, steps: Sequence[str]) -> float:
    return 0.5


def test_the_fingerprint_tells_apart_what_changes_results() -> None:
    url = "http://127.0.0.1:9/v1"
    base = fingerprint(CONFIG, OpenAIPolicy(url, "fake"), None)
    assert base == fingerprint(CONFIG, OpenAIPolicy("http://127.0.0.1:10/v1", "fake"), None)  # a moved server
    others = [
        fingerprint(CONFIG, OpenAIPolicy(url, "fake", api="chat"), None),
        fingerprint(CONFIG, OpenAIPolicy(url, "fake", prompt_template="Q: {question}\nA:"), None),
        fingerprint(CONFIG, OpenAIPolicy(url, "other"), None),
        fingerprint(CONFIG, OpenAIPolicy(url, "fake"), CallableVerifier(score_one)),
        fingerprint(CONFIG, OpenAIPolicy(url, "fake"), CallableVerifier(score_two)),
        fingerprint(CONFIG, OpenAIPolicy(url, "fake"), None, CallableVerifier(score_one)),
    ]
    assert all(other != base for other in others)
    assert len({json.dumps(other, sort_keys=True) for other in others}) == len(others)


def test_rows_carry_a_policy_table_by_its_digest() -> None:
    def table(strategy: str) -> PolicyTable:
        cells = {level: {4: Cell(strategy=strategy, n=4)} for level in range(1, 6)}
        return PolicyTable(bins=DifficultyBins(kind="oracle", cuts=(0.2, 0.4, 0.6, 0.8)), probe_k=2,
                           choices=cells)  # fmt: skip

    policy = OpenAIPolicy("http://127.0.0.1:9/v1", "fake")
    voting, judged = (
        fingerprint(SearchConfig(strategy="adaptive", n=4, policy_table=table(strategy)), policy, None)
        for strategy in ("majority-vote", "weighted-vote")
    )
    assert voting != judged
    assert set(voting["policy_table"]) == {"sha256"}  # not the whole table in every row


async def test_an_unreadable_output_or_a_repeated_id_is_one_error(
    fake_server: Callable[..., str], tmp_path: Path, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    policy = make_policy(fake_server(), "fake")
    output = tmp_path / "out.jsonl"
    output.write_bytes(b'{"id": "a0"}\n\xe9\xff\n')
    with pytest.raises(ConfigError, match=r"out.jsonl:2: not UTF-8"):
        await run(problems("a", 1), policy, CONFIG, output=output)
    with pytest.raises(ConfigError, match="'a0' appears twice"):
        await run([*problems("a", 1), *problems("a", 1)], policy, CONFIG)
