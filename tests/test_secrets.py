"""Keys stay secret: no API key (--api-key, $OPENAI_API_KEY, --prm-api-key) in what a run
prints, logs or writes, whether it succeeds or fails, nor in any repr."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import problems, run_cli, write_problems
from stub_server import stub_server

from treesearch import EndpointError
from treesearch.backends.endpoint import Endpoint
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.retry import RetryPolicy
from treesearch.backends.verifiers import PoolingPRM

KEY = "sk-policy-5ecret-7f3a9c"
PRM_KEY = "sk-prm-5ecret-b41e02"


def assert_no_key(done: subprocess.CompletedProcess[str], *files: Path) -> None:
    texts = {"stdout": done.stdout, "stderr": done.stderr}
    for path in files:
        for found in [path] if path.is_file() else sorted(path.rglob("*")):
            texts[str(found)] = found.read_text(encoding="utf-8")
    for where, text in texts.items():
        for key in (KEY, PRM_KEY):
            assert key not in text, f"{key} in {where}"


def run_args(url: str, tmp_path: Path, *extra: str) -> list[str]:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("sure", 2))
    return ["run", "--base-url", url, "--problems", str(problems_file), "--output",
            str(tmp_path / "out.jsonl"), "--log-json", str(tmp_path / "events.jsonl"),
            "--trees", str(tmp_path / "trees"), "--n", "2", *extra]  # fmt: skip


@pytest.mark.parametrize("key_from", ["flag", "environment"])
def test_a_run_that_succeeds(fake_server: Callable[..., str], tmp_path: Path, key_from: str) -> None:
    url = fake_server()
    key = ["--api-key", KEY] if key_from == "flag" else []
    done = run_cli(
        *run_args(url, tmp_path, "--strategy", "weighted-vote", "--prm-url", url, "--prm-model",
                  "fake-prm", "--prm-api-key", PRM_KEY, *key),
        env={"OPENAI_API_KEY": KEY},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "events.jsonl").read_text()
    assert_no_key(done, tmp_path / "out.jsonl", tmp_path / "events.jsonl", tmp_path / "trees")


def echo_refusal(method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    """A server that refuses the key and, as some proxies do, quotes the header it got."""
    return 401, {"error": {"message": f"invalid credentials: {headers.get('Authorization')}"}}


def test_a_refusal_that_quotes_the_key(tmp_path: Path) -> None:
    with stub_server(echo_refusal) as url:
        done = run_cli(*run_args(url, tmp_path, "--model", "m"), env={"OPENAI_API_KEY": KEY})
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert f"{url} answered 401: " in done.stderr
    assert "invalid credentials: Bearer ***" in done.stderr
    assert_no_key(done, tmp_path / "events.jsonl")


def test_a_run_whose_verifier_refuses_its_key(fake_server: Callable[..., str], tmp_path: Path) -> None:
    sent: list[str | None] = []

    def refuse(method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        sent.append(headers.get("Authorization"))
        return 401, {"error": {"message": "invalid credentials"}}

    with stub_server(refuse) as prm_url:
        done = run_cli(
            *run_args(fake_server(), tmp_path, "--strategy", "best-of-n", "--api-key", KEY,
                      "--prm-url", prm_url, "--prm-api-key", PRM_KEY)
        )  # fmt: skip
    assert done.returncode == 1
    assert "2 problems failed" in done.stderr
    assert "answered 401" in (tmp_path / "out.jsonl").read_text()
    assert sent
    assert set(sent) == {f"Bearer {PRM_KEY}"}  # --prm-api-key, not the policy's key
    assert_no_key(done, tmp_path / "out.jsonl", tmp_path / "events.jsonl", tmp_path / "trees")


def echo_failure(method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    """A server failing for good, quoting the header it got in its 500 body."""
    return 500, {"error": {"message": f"upstream down for {headers.get('Authorization')}"}}


@pytest.mark.anyio
async def test_a_pool_taken_out_whole_names_its_last_error_without_the_key() -> None:
    """Once every replica is taken out, requests fail at once quoting the last failure's
    body, with the key redacted as in any other endpoint error."""
    with stub_server(echo_failure) as first, stub_server(echo_failure) as second:
        endpoint = Endpoint([first, second], api_key=KEY,
                            retry=RetryPolicy(attempts=2, initial_wait_s=0.01, jitter_s=0.0))  # fmt: skip
        errors: list[str] = []
        try:
            for _ in range(4):
                with pytest.raises(EndpointError) as raised:
                    await endpoint.post("/completions", {})
                errors.append(str(raised.value))
        finally:
            await endpoint.aclose()
    out = [error for error in errors if "every replica of the pool is taken out" in error]
    assert out, errors
    assert all(KEY not in error for error in errors)
    assert "for Bearer ***" in out[-1]


def test_help_does_not_show_the_key() -> None:
    done = run_cli("run", "--help", env={"OPENAI_API_KEY": KEY})
    assert done.returncode == 0
    assert "(default: $OPENAI_API_KEY)" in done.stdout
    assert_no_key(done)


def test_reprs() -> None:
    endpoint = Endpoint("http://127.0.0.1:9/v1", api_key=KEY)
    shown = [
        repr(endpoint),
        repr(OpenAIPolicy("http://127.0.0.1:9/v1", "m", api_key=KEY)),
        repr(OpenAIPolicy(endpoint, "m")),
        repr(PoolingPRM("http://127.0.0.1:9", "prm", api_key=PRM_KEY)),
    ]
    assert all(KEY not in text and PRM_KEY not in text for text in shown)
