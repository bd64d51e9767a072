"""``treesearch serve`` with the real openai SDK as its client and the synthetic server upstream."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest
from conftest import PROBLEMS, server_stats

from treesearch import BudgetLimits, ConfigError, SearchConfig
from treesearch.serve import Caps, request_config

pytestmark = pytest.mark.timeout(120)


@contextmanager
def serving(upstream: str, *flags: str) -> Iterator[str]:
    """``treesearch serve`` in front of ``upstream``; its base URL."""
    command = [sys.executable, "-m", "treesearch.cli", "serve", "--base-url", upstream, "--model", "fake",
               "--port", "0", "--seed", "0", "--prm-url", upstream, "--prm-model", "fake-prm",
               *flags, *([] if {"--api-key", "--keys-file"} & set(flags) else ["--no-auth"])]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"serve did not start: {process.communicate()[1]}")
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture(scope="module")
def proxy(fake_server: Callable[..., str]) -> Iterator[tuple[str, str]]:
    upstream = fake_server()
    with serving(upstream, "--n", "4") as url:
        yield url, upstream


@pytest.fixture
def client() -> Iterator[Callable[..., openai.OpenAI]]:
    """``client(url, key)``: an openai SDK client without retries, closed after the test."""
    made: list[openai.OpenAI] = []

    def make(url: str, key: str = "none") -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=url, api_key=key, max_retries=0))
        return made[-1]

    yield make
    for one in made:
        one.close()


def question(problem_id: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROBLEMS[problem_id].question}]


def test_chat_answers_with_the_chosen_path_and_the_upstream_usage(
    client: Callable[..., openai.OpenAI], proxy: tuple[str, str]
) -> None:
    url, upstream = proxy
    before = server_stats(upstream)
    answer = client(url).chat.completions.create(model="fake", messages=question("sure2"))  # type: ignore[arg-type]
    after = server_stats(upstream)
    summary = (answer.model_extra or {})["treesearch"]
    assert summary["answer"] == PROBLEMS["sure2"].answer and summary["strategy"] == "majority-vote"
    assert answer.choices[0].message.content is not None
    assert answer.choices[0].message.content.endswith(f"The answer is {PROBLEMS['sure2'].answer}.")
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == after["prompt_tokens"] - before["prompt_tokens"]
    assert answer.usage.completion_tokens == after["completion_tokens"] - before["completion_tokens"]
    assert summary["calls"] == after["ok"] - before["ok"]


def test_completions_continue_the_prompt(
    client: Callable[..., openai.OpenAI], proxy: tuple[str, str]
) -> None:
    url, _ = proxy
    answer = client(url).completions.create(model="fake", prompt=PROBLEMS["sure3"].question)
    assert answer.choices[0].text.endswith(f"The answer is {PROBLEMS['sure3'].answer}.")
    assert (answer.model_extra or {})["treesearch"]["answer"] == PROBLEMS["sure3"].answer


def test_a_stream_carries_the_answer_and_the_usage(
    client: Callable[..., openai.OpenAI], proxy: tuple[str, str]
) -> None:
    url, _ = proxy
    whole = client(url).chat.completions.create(model="fake", messages=question("a4"), seed=3)  # type: ignore[arg-type]
    chunks = list(client(url).chat.completions.create(
        model="fake", messages=question("a4"), seed=3, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    ))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and whole.usage is not None
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_the_strategy_comes_from_the_model_name_or_extra_body(
    client: Callable[..., openai.OpenAI], proxy: tuple[str, str]
) -> None:
    url, _ = proxy
    named = client(url).chat.completions.create(model="beam:4/fake", messages=question("s2"))  # type: ignore[arg-type]
    summary = (named.model_extra or {})["treesearch"]
    assert (summary["strategy"], summary["n"]) == ("beam", 4)
    extra = client(url).chat.completions.create(
        model="fake", messages=question("s2"),  # type: ignore[arg-type]
        extra_body={"treesearch": {"strategy": "rebase", "n": 6, "sampling": "steps",
                                   "budget_tokens": 100000}},
    )  # fmt: skip
    summary = (extra.model_extra or {})["treesearch"]
    assert (summary["strategy"], summary["n"]) == ("rebase", 6)
    assert summary["calls"] > 2  # step by step: a request a round, and the PRM's


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("telepathy:4/fake", {}, "unknown strategy 'telepathy'"),
        ("fake", {"treesearch": {"beam_widht": 2}}, "unknown treesearch fields: beam_widht"),
        ("fake", {"treesearch": {"n": 0}}, "n must be positive"),
        ("fake", {"treesearch": {"budget_tokens": -5}}, "a budget must be a positive number"),
    ],
)
def test_bad_requests_are_a_400(
    client: Callable[..., openai.OpenAI],
    proxy: tuple[str, str],
    model: str,
    extra: dict[str, object],
    message: str,
) -> None:
    url, _ = proxy
    with pytest.raises(openai.BadRequestError) as refused:
        client(url).chat.completions.create(model=model, messages=question("a1"), extra_body=extra)  # type: ignore[arg-type]
    assert message in str(refused.value)


def test_a_request_without_messages_is_a_400(
    client: Callable[..., openai.OpenAI], proxy: tuple[str, str]
) -> None:
    url, _ = proxy
    with pytest.raises(openai.BadRequestError, match="no user message"):
        client(url).chat.completions.create(model="fake", messages=[{"role": "system", "content": "hi"}])


def test_keys_budget_caps_and_the_search_limit(
    client: Callable[..., openai.OpenAI], fake_server: Callable[..., str]
) -> None:
    slow = fake_server("--latency", "0.3")
    with serving(slow, "--api-key", "sk-right", "--budget-tokens", "300", "--max-searches", "1") as url:
        with pytest.raises(openai.AuthenticationError):
            client(url, "sk-wrong").chat.completions.create(model="fake", messages=question("a2"))  # type: ignore[arg-type]
        capped = client(url, "sk-right").chat.completions.create(
            model="fake", messages=question("a2"), max_tokens=40,  # type: ignore[arg-type]
            extra_body={"treesearch": {"n": 64, "budget_tokens": 10**6}},
        )  # fmt: skip
        assert capped.usage is not None and 0 < capped.usage.total_tokens <= 300
        assert (capped.model_extra or {})["treesearch"]["stopped_by"] == "budget"
        # A stream's headers come once its search holds the only slot (0.3 s upstream): the
        # next request is a 429.
        running = client(url, "sk-right").chat.completions.create(
            model="fake", messages=question("a3"), max_tokens=40, stream=True,  # type: ignore[arg-type]
            extra_body={"treesearch": {"n": 2}},
        )  # fmt: skip
        with pytest.raises(openai.RateLimitError):
            client(url, "sk-right").chat.completions.create(model="fake", messages=question("a3"))  # type: ignore[arg-type]
        assert "".join(c.choices[0].delta.content or "" for c in running if c.choices)


def status_with(url: str, authorization: bytes) -> int:
    """The status of a models listing sent with this raw ``Authorization`` header."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as connection:
        connection.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                           b"Authorization: " + authorization + b"\r\n\r\n")  # fmt: skip
        return int(connection.makefile("rb").readline().split()[1])


def test_keys_are_bearer_tokens_whatever_the_scheme_s_case(
    fake_server: Callable[..., str], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# clients\nsk-client-1\n\n  # sk-not-a-key\n")
    with serving(fake_server(), "--keys-file", str(keys)) as url:
        assert status_with(url, b"Bearer sk-client-1") == 200
        assert status_with(url, b"bearer sk-client-1") == 200  # the scheme is case-insensitive
        assert status_with(url, b"sk-client-1") == 401  # no scheme
        assert status_with(url, b"Basic sk-client-1") == 401
        assert status_with(url, b"Bearer # sk-not-a-key") == 401  # comments are no keys
        assert status_with(url, b"Bearer # clients") == 401
        assert status_with(url, "Bearer sk-cli\u00e9nt".encode()) == 401  # not a 500
        assert status_with(url, b"Bearer \xff\xfe") == 401


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--api-key", ""], "--api-key must not be empty"),
        (["--keys-file", "KEYS"], "holds no key"),
    ],
)
def test_a_key_option_that_gives_no_key_refuses_to_start(
    flags: list[str], said: str, tmp_path: Path
) -> None:
    """Not a server open to anyone: an empty key, or a keys file of comments and blanks."""
    keys = tmp_path / "keys"
    keys.write_text("# nobody yet\n\n   \n")
    command = [sys.executable, "-m", "treesearch.cli", "serve", "--base-url", "http://127.0.0.1:9/v1",
               "--model", "fake", *(str(keys) if flag == "KEYS" else flag for flag in flags)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and said in done.stderr, done.stderr


@pytest.mark.parametrize("asked", [math.nan, math.inf, -math.inf, True, 0, -5, "300"])
@pytest.mark.parametrize("field", ["budget_tokens", "budget_requests", "budget_seconds"])
def test_a_budget_that_is_not_a_finite_positive_number_is_refused(field: str, asked: object) -> None:
    """NaN slipped under the server's cap (min(nan, cap) is NaN: no budget at all)."""
    body = {"model": "fake", "treesearch": {field: asked}}
    caps = BudgetLimits(tokens=300, requests=10, deadline_s=5.0)
    with pytest.raises(ConfigError, match="a budget must be a positive number"):
        request_config(body, SearchConfig(), caps)
    kept = request_config({"model": "fake", "treesearch": {field: 10**9}}, SearchConfig(), caps)
    assert kept.budget == caps  # a finite request over the cap gets the cap


def test_an_upstream_that_fails_is_a_502(
    client: Callable[..., openai.OpenAI], fake_server: Callable[..., str]
) -> None:
    broken = fake_server("--error-rate", "1", "--fault-kinds", "400")
    with serving(broken) as url, pytest.raises(openai.InternalServerError) as failed:
        client(url).chat.completions.create(model="fake", messages=question("a5"))  # type: ignore[arg-type]
    assert failed.value.status_code == 502
    assert "the search failed upstream" in str(failed.value)


def test_the_readme_snippet_runs(fake_server: Callable[..., str]) -> None:
    """The README's Serve example against serve in front of the synthetic server."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("\n## Serve\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    with serving(fake_server(), "--api-key", "sk-mine") as url:
        code = snippet.replace("http://127.0.0.1:8080/v1", url).replace("Qwen2.5-1.5B", "fake")
        code = code.replace("What is 17 * 23?", PROBLEMS["s7"].question)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "The answer is" in done.stdout and "'strategy': 'beam'" in done.stdout
