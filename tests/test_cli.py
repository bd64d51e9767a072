"""The command line as a user runs it: a real process, real files, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import problems, write_problems


def treesearch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "treesearch.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_args(url: str, problems_file: Path, output: Path, *extra: str) -> list[str]:
    return ["run", "--base-url", url, "--model", "fake", "--problems", str(problems_file),
            "--output", str(output), *extra]  # fmt: skip


def test_run_writes_results_and_events(fake_server: Callable[..., str], tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("sure", 3))
    output, events = tmp_path / "out.jsonl", tmp_path / "events.jsonl"
    done = treesearch(
        *run_args(fake_server(), problems_file, output, "--n", "3", "--sampling", "steps",
                  "--seed", "1", "--step-delimiter", "\\n\\n", "--log-json", str(events))
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["correct"] for r in records] == [True, True, True]
    assert all(r["usage"]["requests"] == 1 + 3 * 3 for r in records)
    logged = [json.loads(line) for line in events.read_text().splitlines()]
    assert sum(e["event"] == "problem_finished" for e in logged) == 3
    assert "accuracy 1.000" in done.stderr


def test_a_bad_problems_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "question": "ok"}\n{"id": 2, "question": \n')
    done = treesearch(*run_args("http://127.0.0.1:9/v1", bad, tmp_path / "o.jsonl"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "bad.jsonl:2: not JSON" in done.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strategy", "telepathy"], "unknown strategy 'telepathy'"),
        (["--budget-tokens", "0"], "budget tokens must be positive"),
        (["--budget-requests", "0"], "budget requests must be positive"),
        (["--strategy", "best-of-n"], "needs a verifier"),
        (["--verifier", "no_such_module:f"], "cannot load verifier"),
        (["--verifier", "oracle"], "unknown backend 'oracle'"),
        (["--score-reduction", "median"], "unknown score reduction 'median'"),
        (["--answer-pattern", "(unclosed"], "answer pattern '(unclosed'"),
        (["--answer-timeout", "0"], "--answer-timeout must be positive"),
        (["--strategy", "filter-vote", "--n-counts-judgements", "--n", "1"], "at least 2"),
    ],
)
def test_bad_settings_are_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("a", 1))
    done = treesearch(*run_args("http://127.0.0.1:9/v1", problems_file, tmp_path / "o", *extra))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert message in done.stderr


def test_a_missing_base_url_is_one_line(tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("a", 1))
    done = treesearch("run", "--problems", str(problems_file), "--output", str(tmp_path / "o"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "--base-url is required" in done.stderr


def test_an_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("a", 2))
    done = treesearch(*run_args("http://127.0.0.1:9/v1", problems_file, tmp_path / "o.jsonl"))
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "http://127.0.0.1:9/v1 unreachable" in done.stderr


def test_failed_problems_give_a_non_zero_exit(fake_server: Callable[..., str], tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("a", 2))
    done = treesearch(*run_args(fake_server("--max-context", "100"), problems_file, tmp_path / "o"))
    assert done.returncode == 1
    assert "2 problems failed" in done.stderr
    assert "400" in done.stderr


@pytest.mark.parametrize(
    "extra",
    [
        ["--strategy", "weighted-vote", "--prm-url", "URL", "--prm-model", "fake-prm"],
        ["--strategy", "filter-vote", "--verifier", "judge"],
        ["--strategy", "beam", "--prm-url", "URL", "--prm-model", "fake-prm", "--beam-width", "2"],
        ["--strategy", "lookahead", "--verifier", "logprob", "--lookahead", "1", "--beam-width", "2"],
        ["--strategy", "dvts", "--prm-url", "URL", "--prm-model", "fake-prm", "--prm-step-tag",
         "<extra_0>", "--score-reduction", "min"],
        ["--strategy", "rebase", "--prm-url", "URL", "--prm-model", "fake-prm",
         "--rebase-temperature", "0.2", "--aggregator", "majority"],
        ["--strategy", "mcts", "--prm-url", "URL", "--prm-model", "fake-prm", "--mcts-c", "1.4", "--n", "3"],
        ["--strategy", "beam", "--prm-url", "URL", "--prm-model", "fake-prm",
         "--completion-check", "judge"],
    ],
)  # fmt: skip
def test_every_strategy_from_the_command_line(
    fake_server: Callable[..., str], tmp_path: Path, extra: list[str]
) -> None:
    url = fake_server()
    problems_file = write_problems(tmp_path / "p.jsonl", problems("sure", 2))
    output = tmp_path / "out.jsonl"
    args = [url if arg == "URL" else arg for arg in extra]
    done = treesearch(*run_args(url, problems_file, output, "--n", "4", "--seed", "3", *args))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["correct"] for r in records] == [True, True]
    assert all(r["strategy"] == extra[1] for r in records)
