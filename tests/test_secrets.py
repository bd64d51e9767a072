"""Keys stay secret: no API key (--api-key, $OPENAI_API_KEY, --prm-api-key) in what a run
prints, logs or writes, whether it succeeds or fails, nor in any repr."""

from __future__ import annotations

import json
import socketserver
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import problems, run_cli, write_problems
from stub_server import Script, stub_server

from treesearch import EndpointError
from treesearch.backends.endpoint import Endpoint
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.retry import RetryPolicy
from treesearch.backends.verifiers import PoolingPRM

KEY = "sk-policy-5ecret-7f3a9c"
PRM_KEY = "sk-prm-5ecret-b41e02"
# A key with the characters servers escape; any 17 characters of its start give too much away.
SLASHED_KEY = "sk-proj/AB+cd/5ecret-7f3a9c-0d1e2f"

# How servers quote a key they were sent (as raw text inside their JSON error body).
QUOTED: dict[str, Callable[[str], str]] = {
    "JSON-escaped with \\/": lambda key: json.dumps(key)[1:-1].replace("/", "\\/"),
    "\\u-escaped": lambda key: "".join(f"\\u{ord(c):04x}" for c in key),
    "URL-encoded": lambda key: urllib.parse.quote(key, safe=""),
    "cut to a prefix": lambda key: key[:24] + "...",
}


def forms_of(key: str) -> tuple[str, ...]:
    """The key's shortest hidden prefix, plain and in each quoted form."""
    start = key[:17]
    return (start, *(quote(start).removesuffix("...") for quote in QUOTED.values()))


def assert_no_key(
    done: subprocess.CompletedProcess[str], *files: Path, keys: tuple[str, ...] = (KEY, PRM_KEY)
) -> None:
    texts = {"stdout": done.stdout, "stderr": done.stderr}
    for path in files:
        for found in [path] if path.is_file() else sorted(path.rglob("*")):
            texts[str(found)] = found.read_text(encoding="utf-8")
    for where, text in texts.items():
        for key in keys:
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


def echo_quoted(status: int, quote: Callable[[str], str]) -> Script:
    """A server that fails every request with ``status`` and quotes the key it got, in its
    own escaping, in a body written by hand (no JSON encoder escapes as PHP does)."""

    def script(method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        key = headers["Authorization"].removeprefix("Bearer ")
        return status, f'{{"error": {{"message": "invalid key {quote(key)}"}}}}'.encode()

    return script


@pytest.mark.parametrize("quote", QUOTED.values(), ids=QUOTED)
@pytest.mark.parametrize("status", [401, 500])
def test_a_failure_that_quotes_the_key_escaped(
    tmp_path: Path, status: int, quote: Callable[[str], str]
) -> None:
    """A 401 refuses the run at its start (stderr); a 500, past its retries, fails each
    problem (its row, its event and the summary on stderr)."""
    with stub_server(echo_quoted(status, quote)) as url:
        done = run_cli(*run_args(url, tmp_path, "--model", "m", "--api-key", SLASHED_KEY))
    assert done.returncode == 1
    assert f"answered {status}: " in done.stderr
    assert "invalid key ***" in done.stderr
    if status == 500:
        assert "invalid key ***" in (tmp_path / "out.jsonl").read_text()
        assert "invalid key ***" in (tmp_path / "events.jsonl").read_text()
    assert_no_key(done, tmp_path / "out.jsonl", tmp_path / "events.jsonl", keys=forms_of(SLASHED_KEY))


@contextmanager
def garbled_server(status_line: str) -> Iterator[str]:
    """A server answering every request with ``status_line``, which no HTTP client can
    parse: the client's own error quotes the line."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while self.rfile.readline().strip():
                pass  # the request's head; a GET has no body
            self.wfile.write(f"{status_line}\r\n\r\n".encode())

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_answer_the_client_cannot_parse_quoting_the_key(tmp_path: Path) -> None:
    """The HTTP client's parse error quotes the upstream's bytes, over several lines."""
    with garbled_server(f"HTTP/1.1 2OO denied for {SLASHED_KEY}") as url:
        done = run_cli(*run_args(url, tmp_path, "--model", "m", "--api-key", SLASHED_KEY))
    assert done.returncode == 1
    assert "unreachable" in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert_no_key(done, tmp_path / "events.jsonl", keys=forms_of(SLASHED_KEY))


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


async def pool_errors(script: Script, key: str) -> list[str]:
    """The errors of four requests to a pool of two replicas of ``script`` that fail for good:
    by the last, every replica is taken out."""
    with stub_server(script) as first, stub_server(script) as second:
        endpoint = Endpoint([first, second], api_key=key,
                            retry=RetryPolicy(attempts=2, initial_wait_s=0.01, jitter_s=0.0))  # fmt: skip
        errors: list[str] = []
        try:
            for _ in range(4):
                with pytest.raises(EndpointError) as raised:
                    await endpoint.post("/completions", {})
                errors.append(str(raised.value))
        finally:
            await endpoint.aclose()
    assert "every replica of the pool is taken out" in errors[-1], errors
    return errors


@pytest.mark.anyio
async def test_a_pool_taken_out_whole_names_its_last_error_without_the_key() -> None:
    """Once every replica is taken out, requests fail at once quoting the last failure's
    body, with the key redacted as in any other endpoint error."""
    errors = await pool_errors(echo_failure, KEY)
    assert all(KEY not in error for error in errors)
    assert "for Bearer ***" in errors[-1]


@pytest.mark.anyio
async def test_a_pool_taken_out_whole_hides_a_key_its_last_error_was_cut_through() -> None:
    """A replica's last error is kept whole until the key is blanked out of it: cut first
    (to any length), too short a piece of the key to be recognised would stay."""

    def long_failure(method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        head = '{"error": {"message": "upstream down: '
        padding = "." * (200 - len(head) - len("Bearer ") - 12)  # a cut at 200 leaves 12 of its characters
        return 500, f'{head}{padding}{headers["Authorization"]}"}}}}'.encode()

    errors = await pool_errors(long_failure, SLASHED_KEY)
    assert all(SLASHED_KEY[:10] not in error for error in errors), errors
    assert "Bearer ***" in errors[-1]


def cut_at_100(body: str) -> bytes:
    """``body`` with the key quoted at the 88th character: a cut at 100 leaves 12 of its
    characters, too few to be recognised as the key once cut off."""
    head, tail = body.split("KEY")
    return f"{head}{'.' * (88 - len(head))}{SLASHED_KEY}{tail}".encode()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [cut_at_100("<html>invalid key KEY</html>"), cut_at_100('{"message": "invalid key KEY"}')],
    ids=["not JSON", "JSON without choices"],
)
async def test_an_unusable_200_quoting_the_key(body: bytes) -> None:
    """A 200 that is no answer (a proxy's page) is quoted in the error, with the key
    blanked out before the quote is cut."""
    with stub_server(lambda method, path, headers: (200, body)) as url:
        endpoint = Endpoint(url, api_key=SLASHED_KEY, retry=RetryPolicy(attempts=1))
        try:
            with pytest.raises(EndpointError) as raised:
                await endpoint.post("/completions", {})
        finally:
            await endpoint.aclose()
    assert "...***" in str(raised.value)
    assert SLASHED_KEY[:10] not in str(raised.value)


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
