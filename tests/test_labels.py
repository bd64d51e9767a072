"""Step labels by rollouts: fractions against the synthetic task's known odds, the budget,
resume, failures, and the command line."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import problems, run_cli, server_stats, write_problems

from treesearch import BudgetLimits, ConfigError, Problem, SamplingParams, SearchConfig, StepFormat
from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.cli.main import main
from treesearch.runs.labels import LabelResult, label, summary_path

pytestmark = pytest.mark.anyio

# Two answers, four-line solutions (three steps, then the answer); every step after the
# first draw switches answer with probability ERROR, so the odds of each prefix are known.
STEPS, ERROR = 4, 0.2
RECORDS = make_problems(4, p_correct=0.5, steps=STEPS, step_error=ERROR, prefix="lab")
TASKS = {record["id"]: Problem.from_record(record) for record in RECORDS}
_POINTS = re.compile(r"this points to (\S+?)\.")


def tasks(count: int) -> list[Problem]:
    return [TASKS[f"lab{index}"] for index in range(count)]


def config(n: int = 4, **budget: Any) -> SearchConfig:
    """Short steps and solutions, so a token budget means a few requests."""
    return SearchConfig(
        n=n,
        sampling=SamplingParams(seed=1),
        step=StepFormat(max_step_tokens=16, max_tokens=64),
        budget=BudgetLimits(**budget),
    )


def reach_gold(points_to_gold: bool, erring_steps_left: int) -> float:
    """P(a path ends at the gold answer) from a step pointing to it (or to the other answer):
    an even number of switches among the steps left keeps where it points."""
    swing = (1 - 2 * ERROR) ** erring_steps_left
    return (1 + swing) / 2 if points_to_gold else (1 - swing) / 2


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of its own: tests here compare its counts with what they were charged."""
    with spawn([], RECORDS, tmp_path_factory.mktemp("labels")) as base_url:
        yield base_url


async def test_label_fractions_match_the_known_step_odds(
    url: str, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    rollouts = 200
    results = await label(tasks(4), make_policy(url), config(n=4), rollouts=rollouts)
    pooled: dict[tuple[bool, int], list[float]] = {}
    shown = []
    for problem, result in zip(tasks(4), results, strict=True):
        assert result.stopped_by == "done" and result.cut == result.unanswered == 0
        assert len(result.solutions) == 4
        # One request of n=4 first steps, two more steps and the answer per solution, and one
        # request of n=rollouts per step: HTTP requests stay few.
        assert result.usage.requests == 1 + 4 * (STEPS - 1) + 4 * (STEPS - 1)
        for solution in result.solutions:
            assert solution.correct == (solution.answer == problem.answer)
            assert solution.rollouts == (rollouts,) * (STEPS - 1) + (0,)
            assert solution.soft_labels[-1] == (1.0 if solution.correct else 0.0)
            assert solution.labels == tuple(soft > 0 for soft in solution.soft_labels)
            for index, (step, soft) in enumerate(
                zip(solution.steps[:-1], solution.soft_labels, strict=False)
            ):
                match = _POINTS.search(step)
                assert match is not None
                key = (match.group(1) == problem.answer, STEPS - 2 - index)
                expected = reach_gold(*key)
                error = math.sqrt(expected * (1 - expected) / rollouts)
                assert abs(soft - expected) <= 4 * error, (problem.id, solution.index, index, soft, expected)
                assert solution.labels[index] == (expected > 0)  # 200 misses in a row: odds < 1e-30
                pooled.setdefault(key, []).append(soft)
    for (to_gold, left), values in sorted(pooled.items()):
        expected = reach_gold(to_gold, left)
        measured = sum(values) / len(values)
        error = math.sqrt(expected * (1 - expected) / (rollouts * len(values)))
        assert abs(measured - expected) <= 3 * error + 1e-12
        shown.append(
            f"points to {'gold ' if to_gold else 'wrong'}, {left} erring steps left: "
            f"measured {measured:.3f} over {len(values)} steps, expected {expected:.3f} ± {error:.3f}"
        )
    print("\n" + "\n".join(shown))
    assert {left for _, left in pooled} == {0, 1, 2}


@pytest.mark.parametrize("tokens", [40, 400, 1500, 4000])
async def test_the_budget_is_charged_and_never_overrun(
    url: str, make_policy: Callable[..., OpenAIPolicy], tmp_path: Path, tokens: int
) -> None:
    output = tmp_path / "labels.jsonl"
    before = server_stats(url)
    results = await label(tasks(3), make_policy(url), config(n=4, tokens=tokens), rollouts=4, output=output)
    after = server_stats(url)
    for result in results:
        assert result.usage.total_tokens <= tokens
        assert result.sampled == len(result.solutions) + result.unanswered + result.cut
        assert result.error is None
        assert result.stopped_by == ("budget" if result.cut else "done")
        for solution in result.solutions:  # only solutions with every step labelled in full
            assert solution.rollouts == (4,) * (STEPS - 1) + (0,)
    # Every token the server served was charged to some problem.
    served = sum(after[k] - before[k] for k in ("prompt_tokens", "completion_tokens"))
    assert served == sum(result.usage.total_tokens for result in results)
    assert after["requests"] - before["requests"] == sum(result.usage.requests for result in results)
    rows, summaries = lines(output), lines(summary_path(output))
    assert len(rows) == sum(len(result.solutions) for result in results)
    assert {s["id"]: s["cut"] for s in summaries} == {r.problem_id: r.cut for r in results}
    assert all(s["usage"]["prompt_tokens"] + s["usage"]["completion_tokens"] <= tokens for s in summaries)
    if tokens == 40:  # not even the first steps fit: all cut, nothing sent
        assert all(r.cut == 4 and r.usage.requests == 0 for r in results) and rows == []
    if tokens == 1500:  # too little for every solution: some are cut (which ones depends on
        # the order the concurrent rollouts were served in, so none may be left whole)
        assert any(r.cut for r in results)
    if tokens == 4000:
        assert all(r.stopped_by == "done" for r in results)


def _same(a: list[LabelResult], b: list[LabelResult]) -> bool:
    keep = [(r.problem_id, r.solutions, r.cut, r.usage, r.stopped_by) for r in a]
    return keep == [(r.problem_id, r.solutions, r.cut, r.usage, r.stopped_by) for r in b]


async def test_a_rerun_labels_only_what_is_not_done(
    url: str, make_policy: Callable[..., OpenAIPolicy], tmp_path: Path
) -> None:
    output = tmp_path / "labels.jsonl"
    policy = make_policy(url)
    first = await label(tasks(2), policy, config(n=2), rollouts=3, output=output)
    before = server_stats(url)["requests"]
    second = await label(tasks(3), policy, config(n=2), rollouts=3, output=output)
    assert server_stats(url)["requests"] - before == second[2].usage.requests > 0
    assert _same(second[:2], first)  # read back from the files
    before = server_stats(url)["requests"]
    third = await label(tasks(3), policy, config(n=2), rollouts=3, output=output)
    assert server_stats(url)["requests"] == before  # nothing left: no request at all
    assert _same(third, second)
    # A crash between a problem's rows and its summary line: that problem alone runs again,
    # its old rows dropped, and a half-written row is ignored.
    summary = summary_path(output)
    kept = summary.read_text().splitlines(keepends=True)
    summary.write_text("".join(kept[:-1]))
    with output.open("a") as handle:
        handle.write('{"prompt": "half a ro')
    lost = json.loads(kept[-1])["id"]
    before = server_stats(url)["requests"]
    fourth = await label(tasks(3), policy, config(n=2), rollouts=3, output=output)
    assert (
        server_stats(url)["requests"] - before
        == next(r for r in fourth if r.problem_id == lost).usage.requests
    )
    rows = lines(output)
    assert sorted((r["problem_id"], r["solution"]) for r in rows) == [
        (f"lab{i}", s) for i in range(3) for s in (0, 1)
    ]
    assert sorted(r["id"] for r in lines(summary)) == ["lab0", "lab1", "lab2"]
    # Another configuration is refused, in one line naming the difference.
    with pytest.raises(ConfigError, match=r"another configuration \(rollouts: 3 there, 5 now\)"):
        await label(tasks(3), policy, config(n=2), rollouts=5, output=output)


async def test_rows_are_in_the_stepwise_supervision_layout(
    url: str, make_policy: Callable[..., OpenAIPolicy], tmp_path: Path
) -> None:
    output = tmp_path / "labels.jsonl"
    (result,) = await label(tasks(1), make_policy(url), config(n=2), rollouts=2, output=output)
    rows = lines(output)
    assert [row["solution"] for row in rows] == [0, 1]
    for row, solution in zip(rows, result.solutions, strict=True):
        assert list(row) == ["prompt", "completions", "labels", "soft_labels", "rollouts",
                             "problem_id", "solution", "answer", "gold", "correct"]  # fmt: skip
        assert row["prompt"] == TASKS["lab0"].question
        assert row["completions"] == list(solution.steps)
        assert row["completions"][-1] == f"The answer is {solution.answer}."
        assert all(isinstance(flag, bool) for flag in row["labels"])
        assert len(row["labels"]) == len(row["soft_labels"]) == len(row["rollouts"]) == STEPS
    (summary,) = lines(summary_path(output))
    assert summary["id"] == "lab0" and summary["labelled"] == 2 and summary["steps_labelled"] == 2 * STEPS
    assert summary["config"]["rollouts"] == 2 and summary["stopped_by"] == "done"


async def test_a_failing_problem_is_recorded_and_the_others_go_on(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy], tmp_path: Path
) -> None:
    output = tmp_path / "labels.jsonl"
    huge = Problem(id="huge", question="word " * 1600, answer="1")
    results = await label(
        [*problems("sure", 2), huge],
        make_policy(fake_server("--max-context", "1500")),
        config(n=2),
        rollouts=2,
        output=output,
    )
    failed = results[2]
    assert failed.stopped_by == "error" and "400" in (failed.error or "")
    assert failed.solutions == () and failed.cut == 2
    assert [r.stopped_by for r in results[:2]] == ["done", "done"]
    assert all(s.soft_labels == (1.0,) * 4 for r in results[:2] for s in r.solutions)
    summaries = {s["id"]: s for s in lines(summary_path(output))}
    assert summaries["huge"]["error"] == failed.error
    assert {row["problem_id"] for row in lines(output)} == {"sure0", "sure1"}
    # Asked to, a rerun tries the failed problem again (alone), replacing its summary line.
    again = await label(
        [*problems("sure", 2), huge],
        make_policy(fake_server("--max-context", "1500")),
        config(n=2),
        rollouts=2,
        output=output,
        retry_failed=True,
    )
    assert _same(again[:2], results[:2]) and again[2].stopped_by == "error"
    assert sorted(s["id"] for s in lines(summary_path(output))) == ["huge", "sure0", "sure1"]
    assert len(lines(output)) == 4


async def test_problems_without_gold_are_refused_before_any_request(
    make_policy: Callable[..., OpenAIPolicy],
) -> None:
    nothing_listens = make_policy("http://127.0.0.1:9/v1")
    ungraded = [*problems("sure", 1), Problem(id="open", question="Why?")]
    with pytest.raises(ConfigError, match="needs a gold answer for every problem; open have none"):
        await label(ungraded, nothing_listens, config(), rollouts=2)


def label_args(url: str, problems_file: Path, output: Path, *extra: str) -> list[str]:
    return ["label", "--base-url", url, "--model", "fake", "--problems", str(problems_file),
            "--output", str(output), *extra]  # fmt: skip


def test_label_from_the_command_line(fake_server: Callable[..., str], tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("sure", 3))
    output, events = tmp_path / "labels.jsonl", tmp_path / "events.jsonl"
    args = label_args(fake_server(), problems_file, output, "--n", "2", "--rollouts", "3", "--seed", "1",
                      "--log-json", str(events), "--model-params", "270M")  # fmt: skip
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    for summary in lines(summary_path(output)):  # each problem's FLOPs: 2 x parameters x tokens
        usage = summary["usage"]
        total = usage["prompt_tokens"] + usage["completion_tokens"]
        assert summary["flops"] == {"policy": 2 * 270e6 * total, "verifier": 0.0, "total": 2 * 270e6 * total}
    rows = lines(output)
    assert len(rows) == 6 and all(row["labels"] == [True] * 4 for row in rows)
    assert all(row["rollouts"] == [3, 3, 3, 0] for row in rows)
    closing = done.stderr.strip().splitlines()[-1]
    assert closing.startswith(
        "3 problems (3 labelled now, 0 already done): 6 solutions, 24 steps labelled, mean soft label 1.000"
    )
    usages = [summary["usage"] for summary in lines(summary_path(output))]
    requests = sum(usage["requests"] for usage in usages)
    tokens = sum(usage["prompt_tokens"] + usage["completion_tokens"] for usage in usages)
    assert f"[3/3] 24 steps labelled; requests {requests} tokens {tokens}" in done.stderr  # the live tally
    assert (
        sum(json.loads(line)["event"] == "problem_labelled" for line in events.read_text().splitlines()) == 3
    )
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "(0 labelled now, 3 already done)" in again.stderr
    assert len(lines(output)) == 6


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ('{"id": "q", "question": "Why?"}\n', [], "needs a gold answer for every problem; q have none"),
        (
            '{"id": "q", "question": "Why?", "answer": "1"}\n',
            ["--sampling", "whole"],
            "label samples step by step",
        ),
        (
            '{"id": "q", "question": "Why?", "answer": "1"}\n',
            ["--rollouts", "0"],
            "argument --rollouts: must be",
        ),
        ('{"id": "q", "question": \n', [], "p.jsonl:1: not JSON"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, content: str, extra: list[str], message: str) -> None:
    problems_file = tmp_path / "p.jsonl"
    problems_file.write_text(content)
    done = run_cli(*label_args("http://127.0.0.1:9/v1", problems_file, tmp_path / "o.jsonl", *extra))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert message in done.stderr


def test_label_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["label", "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: treesearch label")
    for option in ("--rollouts ROLLOUTS", "--n N", "--budget-tokens", "--base-url", "--answer-timeout"):
        assert option in shown
    assert "whole completions run from each step (Snell et al. used 16) (default: 8)" in " ".join(
        shown.split()
    )
