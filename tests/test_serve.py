"""``treesearch serve`` with the real openai SDK as its client and the synthetic server upstream."""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import openai
import pytest
from conftest import PROBLEMS, serve_process, server_stats, serving
from stub_server import stub_server

from treesearch import BudgetLimits, SearchConfig
from treesearch.serve import Caps, RequestError, parse_request, request_config

pytestmark = pytest.mark.timeout(120)


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
        ("fake", {"treesearch": {"beam_widht": 2}}, "treesearch.beam_widht: unknown field"),
        ("fake", {"treesearch": {"n": 0}}, "n must be positive"),
        ("fake", {"treesearch": {"budget_tokens": -5}}, "treesearch.budget_tokens: Input should be greater"),
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


def test_a_request_that_does_not_end_with_the_user_s_message_is_a_400(
    client: Callable[..., openai.OpenAI], proxy: tuple[str, str]
) -> None:
    url, _ = proxy
    with pytest.raises(openai.BadRequestError, match="the last message must be the user's"):
        client(url).chat.completions.create(model="fake", messages=[{"role": "system", "content": "hi"}])


def post(url: str, body: bytes | dict[str, object], path: str = "/chat/completions",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, object], httpx2.Headers]:  # fmt: skip
    """Raw HTTP: the status, the JSON answer and the headers of a POST to ``url + path``."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    response = httpx2.post(url + path, content=data, headers=sent, timeout=60)
    return response.status_code, response.json(), response.headers


def openai_error(answer: dict[str, object]) -> dict[str, object]:
    """The error of an OpenAI-shaped error body, checked for its shape and for internals."""
    error = answer["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, answer
    message = str(error["message"])
    for internal in ("Traceback", 'File "', "http://", "pydantic.dev", "<class"):
        assert internal not in message, message
    return error


ASK = {"model": "fake", "messages": [{"role": "user", "content": "What is 2 + 2? [task:sure2]"}]}
DEEP = b'{"model": "fake", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (DEEP, "nests arrays and objects over 32 deep"),
        (b'{"model": "fake", "n": 1' + b"0" * 5000 + b"}", "over 30 digits"),
        (json.dumps(ASK).encode()[:-1] + b', "temperature": NaN}', "NaN is not a JSON number"),
        (json.dumps(ASK).encode()[:-1] + b', "temperature": 1e999}', "too large"),
        (b'{"model": "fake", "messages": [{"role": "user", "content": "\\ud800"}]}', "lone surrogate"),
        (b"\xff\xfe{", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        ({**ASK, "max_tokens": "x"}, "max_tokens: Input should be a valid integer"),
        ({**ASK, "max_tokens": []}, "max_tokens: Input should be a valid integer"),
        ({**ASK, "max_tokens": {}}, "max_tokens: Input should be a valid integer"),
        ({**ASK, "max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        (
            {"model": "fake", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "messages.0.content",
        ),
        (
            {"model": "fake", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages.0.content",
        ),
        ({"model": "fake", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"model": "fake", "messages": []}, "messages: List should have at least 1 item"),
        (
            {**ASK, "treesearch": {"strategy": ["beam"]}},
            "treesearch.strategy: Input should be a valid string",
        ),
        ({**ASK, "treesearch": []}, "treesearch: Input should be"),
        ({**ASK, "treesearch": {"n": 2.5}}, "treesearch.n: Input should be a valid integer"),
        ({**ASK, "treesearch": {"n": True}}, "treesearch.n: Input should be a valid integer"),
        ({**ASK, "treesearch": {"sampling": "bogus"}}, "treesearch.sampling: Input should be 'whole' or"),
        ({**ASK, "treesearch": {"budget_seconds": "5"}}, "treesearch.budget_seconds"),
        ({**ASK, "model": "majority-vote:-3/fake"}, "N in STRATEGY:N must be a positive whole number"),
        ({**ASK, "model": "majority-vote:abc/fake"}, "N in STRATEGY:N must be a positive whole number"),
        ({**ASK, "model": "beam:0"}, "N in STRATEGY:N must be a positive whole number"),
        ({**ASK, "model": 5}, "model: Input should be a valid string"),
        ({**ASK, "n": 0}, "n: Input should be greater than or equal to 1"),
        ({**ASK, "stop": ["a", "b", "c", "d", "e"]}, "at most 4 stop strings"),
        ({**ASK, "temperature": 9}, "temperature: Input should be less than or equal to 5"),
        ({**ASK, "max_tokens": 5, "max_completion_tokens": 6}, "disagree"),
        ({**ASK, "tools": [{"type": "function"}]}, "not supported by treesearch serve: tools"),
        (
            {**ASK, "logprobs": True, "response_format": {"type": "json_object"}},
            "not supported by treesearch serve: logprobs, response_format",
        ),
        ({**ASK, "frobnicate": 1}, "frobnicate: unknown field"),
    ],
)
def test_a_malformed_request_is_a_400_that_names_what_is_wrong(
    proxy: tuple[str, str], body: bytes | dict[str, object], said: str
) -> None:
    """Each of these was a 500 with a traceback, a 502, or taken without a word."""
    url, _ = proxy
    status, answer, _ = post(url, body)
    assert status == 400, answer
    error = openai_error(answer)
    assert said in str(error["message"]) and error["type"] == "invalid_request_error"


def test_neutral_values_of_unsupported_fields_are_taken(proxy: tuple[str, str]) -> None:
    """Clients send defaults they do not mean (logprobs false, penalties 0, user)."""
    url, _ = proxy
    body = {**ASK, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0.0, "tools": [],
            "user": "someone", "n": 1, "stream": False}  # fmt: skip
    status, answer, _ = post(url, body)
    assert status == 200, answer


def test_unknown_routes_and_methods_are_openai_shaped(proxy: tuple[str, str]) -> None:
    url, _ = proxy
    missing = httpx2.get(url + "/embeddings")
    assert missing.status_code == 404 and "no route GET" in str(openai_error(missing.json())["message"])
    wrong = httpx2.get(url + "/chat/completions")
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    openai_error(wrong.json())
    status, answer, _ = post(url, {**ASK, "user": "x" * (1 << 20)})
    assert status == 413 and "over 1048576 bytes" in str(openai_error(answer)["message"])


def test_answers_and_errors_are_what_openai_s_own_types_expect(proxy: tuple[str, str]) -> None:
    """Every shape serve sends, validated strictly by the openai SDK's models of OpenAI's API
    (generated from its OpenAPI spec): completions, chunks, the model list and errors."""
    from openai.types import Completion, Model
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    from openai.types.shared import ErrorObject

    url, _ = proxy
    status, chat, _ = post(url, {**ASK, "n": 2, "seed": 1})
    assert status == 200 and len(ChatCompletion.model_validate(chat, strict=True).choices) == 2
    status, text, _ = post(url, {"model": "fake", "prompt": PROBLEMS["sure1"].question}, "/completions")
    assert status == 200 and Completion.model_validate(text, strict=True).choices[0].text
    streamed = httpx2.post(url + "/chat/completions", json={**ASK, "stream": True,
                           "stream_options": {"include_usage": True}}, timeout=60)  # fmt: skip
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and len(events) > 2
    chunks = [ChatCompletionChunk.model_validate(json.loads(event), strict=True) for event in events[:-1]]
    assert chunks[-1].usage is not None and chunks[-2].choices[0].finish_reason == "stop"
    listed = httpx2.get(url + "/models").json()
    assert listed["object"] == "list" and [Model.model_validate(m, strict=True).id for m in listed["data"]]
    for body, path in [({**ASK, "model": "nope"}, "/chat/completions"), (b"{", "/completions")]:
        status, answer, _ = post(url, body, path)
        assert status in (400, 404)
        ErrorObject.model_validate(openai_error(answer), strict=True)


def test_caps_hold_whatever_the_request_asks(fake_server: Callable[..., str]) -> None:
    """N, n, the other counts, the budgets and max_tokens stay within the server's caps:
    this upstream once got n = 100,000,000 in one request."""
    upstream = fake_server("--seed", "21")
    with serving(upstream, "--max-n", "8", "--max-tokens", "64") as url:
        over = [
            {**ASK, "model": "majority-vote:100000000/fake"},
            {**ASK, "model": "majority-vote:9"},
            {**ASK, "treesearch": {"n": 9}},
            {**ASK, "treesearch": {"beam_width": 10**6}},
            {**ASK, "treesearch": {"wave": 100}},
            {**ASK, "n": 9},
        ]
        for body in over:
            status, answer, _ = post(url, body)
            assert status == 400 and "(the server's --max-n)" in str(openai_error(answer)["message"])
        assert server_stats(upstream)["requests"] == 0
        status, answer, _ = post(url, {**ASK, "model": "majority-vote:8", "max_tokens": 10**6})
        assert status == 200, answer
    stats = server_stats(upstream)
    assert stats["largest_n"] == 8 and stats["largest_max_tokens"] == 64


def test_the_server_has_caps_when_none_are_given() -> None:
    said = subprocess.run([sys.executable, "-m", "treesearch.cli", "serve", "--help"], capture_output=True,
                          text=True, timeout=60).stdout  # fmt: skip
    flat = " ".join(said.split())
    for cap in ("tokens per request (default: 200000)", "seconds per request (default: 300)",
                "(default: 64)", "--upstream-timeout", "--shutdown-grace"):  # fmt: skip
        assert cap in flat, cap


@pytest.mark.parametrize("model", ["gpt-4o-expensive", "majority-vote:2/o1-pro", "../../admin"])
def test_a_model_the_upstream_does_not_list_is_a_404(
    client: Callable[..., openai.OpenAI], fake_server: Callable[..., str], model: str
) -> None:
    upstream = fake_server("--seed", "22")
    with serving(upstream) as url:
        with pytest.raises(openai.NotFoundError) as refused:
            client(url).chat.completions.create(model=model, messages=question("a1"))  # type: ignore[arg-type]
        assert refused.value.code == "model_not_found"
        assert [m.id for m in client(url).models.list()] == ["fake"]
    assert server_stats(upstream)["requests"] == 0


def test_allow_model_patterns_name_the_models_instead(
    client: Callable[..., openai.OpenAI], fake_server: Callable[..., str]
) -> None:
    upstream = fake_server("--seed", "23")
    with serving(upstream, "--allow-model", "other-*") as url:
        with pytest.raises(openai.InternalServerError) as failed:  # forwarded: the upstream has no such model
            client(url).chat.completions.create(model="beam:2/other-1", messages=question("a1"))  # type: ignore[arg-type]
        assert failed.value.status_code == 502 and "the upstream answered 404" in str(failed.value)
        with pytest.raises(openai.NotFoundError):
            client(url).chat.completions.create(model="another", messages=question("a1"))  # type: ignore[arg-type]
        assert client(url).chat.completions.create(model="fake", messages=question("sure1")).choices  # type: ignore[arg-type]
    assert server_stats(upstream)["requests"] == 2


def test_n_choices_are_n_independent_searches(
    client: Callable[..., openai.OpenAI], fake_server: Callable[..., str]
) -> None:
    upstream = fake_server("--seed", "24")
    with serving(upstream, "--n", "4") as url:
        answer = client(url).chat.completions.create(model="fake", messages=question("a6"), n=3, seed=5)  # type: ignore[arg-type]
    stats = server_stats(upstream)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert all((c.model_extra or {})["treesearch"]["n"] == 4 for c in answer.choices)
    assert stats["requests"] == 3 and stats["choices"] == 12  # a request of n = 4 a search
    assert answer.usage is not None and answer.usage.completion_tokens == stats["completion_tokens"]


def test_stop_and_max_completion_tokens_are_honoured(
    client: Callable[..., openai.OpenAI], fake_server: Callable[..., str]
) -> None:
    upstream = fake_server("--seed", "25")
    with serving(upstream, "--n", "2") as url:
        whole = client(url).chat.completions.create(model="fake", messages=question("sure4"), seed=1)  # type: ignore[arg-type]
        cut = client(url).chat.completions.create(
            model="fake", messages=question("sure4"), seed=1, stop=["Step 2"]
        )  # type: ignore[arg-type]
        assert whole.choices[0].message.content is not None and "Step 2" in whole.choices[0].message.content
        assert cut.choices[0].message.content == whole.choices[0].message.content.split("Step 2")[0]
        short = client(url).chat.completions.create(
            model="fake",
            messages=question("sure5"),
            max_completion_tokens=5,  # type: ignore[arg-type]
        )
    assert short.usage is not None and short.usage.completion_tokens <= 2 * 5
    assert server_stats(upstream)["largest_max_tokens"] == 1024  # before: the whole solution's own
    assert short.choices[0].finish_reason == "length"  # five tokens give no answer


def test_the_system_message_and_earlier_turns_reach_a_chat_policy(
    client: Callable[..., openai.OpenAI], fake_server: Callable[..., str]
) -> None:
    """The synthetic upstream finds its task by the [task:ID] marker anywhere in what it is
    sent: a marker only in the system message or in an earlier turn must reach it."""
    with serving(fake_server(), "--api", "chat", "--n", "2") as url:
        system = client(url).chat.completions.create(model="fake", messages=[  # type: ignore[arg-type]
            {"role": "system", "content": "Context: [task:sure2]"},
            {"role": "user", "content": "What is the answer?"},
        ])  # fmt: skip
        earlier = client(url).chat.completions.create(model="fake", messages=[  # type: ignore[arg-type]
            {"role": "user", "content": PROBLEMS["sure3"].question},
            {"role": "assistant", "content": "Let me think."},
            {"role": "user", "content": [{"type": "text", "text": "Go on."}]},
        ])  # fmt: skip
    assert (system.model_extra or {})["treesearch"]["answer"] == PROBLEMS["sure2"].answer
    assert (earlier.model_extra or {})["treesearch"]["answer"] == PROBLEMS["sure3"].answer


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
        # next request is a 429 that says when to come back.
        running = client(url, "sk-right").chat.completions.create(
            model="fake", messages=question("a3"), max_tokens=40, stream=True,  # type: ignore[arg-type]
            extra_body={"treesearch": {"n": 2}},
        )  # fmt: skip
        with pytest.raises(openai.RateLimitError) as refused:
            client(url, "sk-right").chat.completions.create(model="fake", messages=question("a3"))  # type: ignore[arg-type]
        assert refused.value.response.headers["Retry-After"] == "1"
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


def test_a_request_the_http_parser_refuses_is_one_line_on_stderr(fake_server: Callable[..., str]) -> None:
    """aiohttp answers these itself; its log wrote a traceback holding the header's bytes."""
    with serve_process(fake_server()) as (url, process):
        assert status_with(url, b"Bearer sk-sec\x00ret") == 400
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0 and process.stderr is not None
        said = process.stderr.read()
    assert "Traceback" not in said and "sk-sec" not in said, said
    assert "treesearch: Error handling request from 127.0.0.1: BadHttpMessage" in said, said


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--api-key", ""], "--api-key must not be empty"),
        (["--keys-file", "KEYS"], "holds no key"),
        ([], "or --no-auth to serve anyone"),
        (["--api-key", "sk-1", "--no-auth"], "--no-auth serves anyone: drop it"),
    ],
)
def test_a_server_open_to_anyone_must_be_asked_for(flags: list[str], said: str, tmp_path: Path) -> None:
    """Not a server open to anyone by mistake: no key option, an empty key, or a keys file
    of comments and blanks refuse to start; only --no-auth serves without keys."""
    keys = tmp_path / "keys"
    keys.write_text("# nobody yet\n\n   \n")
    command = [sys.executable, "-m", "treesearch.cli", "serve", "--base-url", "http://127.0.0.1:9/v1",
               "--model", "fake", *(str(keys) if flag == "KEYS" else flag for flag in flags)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and said in done.stderr, done.stderr


def test_no_auth_beyond_loopback_is_warned_about(fake_server: Callable[..., str]) -> None:
    with serve_process(fake_server(), "--host", "0.0.0.0") as (_, process):
        assert process.stderr is not None
        process.stderr.readline()  # what it serves
        assert "warning: --no-auth on 0.0.0.0" in process.stderr.readline()


@pytest.mark.parametrize("asked", [math.nan, math.inf, -math.inf, True, 0, -5, "300"])
@pytest.mark.parametrize("field", ["budget_tokens", "budget_requests", "budget_seconds"])
def test_a_budget_that_is_not_a_finite_positive_number_is_refused(field: str, asked: object) -> None:
    """NaN slipped under the server's cap (min(nan, cap) is NaN: no budget at all)."""
    caps = Caps(budget=BudgetLimits(tokens=300, requests=10, deadline_s=5.0))
    with pytest.raises(RequestError, match=f"treesearch.{field}"):
        parse_request({**ASK, "treesearch": {field: asked}}, chat=True)
    kept = request_config(
        parse_request({**ASK, "treesearch": {field: 10**9}}, chat=True), SearchConfig(), caps
    )
    assert kept.budget == caps.budget  # a finite request over the cap gets the cap
    shared = request_config(parse_request({**ASK, "n": 4}, chat=True), SearchConfig(), caps)
    assert (shared.budget.tokens, shared.budget.requests) == (75, 2)  # n searches share the cap


def test_an_upstream_that_fails_is_a_502_without_its_address(
    client: Callable[..., openai.OpenAI], fake_server: Callable[..., str]
) -> None:
    broken = fake_server("--error-rate", "1", "--fault-kinds", "400")
    with serving(broken) as url, pytest.raises(openai.InternalServerError) as failed:
        client(url).chat.completions.create(model="fake", messages=question("a5"))  # type: ignore[arg-type]
    assert failed.value.status_code == 502
    assert "the upstream answered 400: " in str(failed.value) and "127.0.0.1" not in str(failed.value)


UPSTREAM_KEY = "sk-proj/AB+cd/SECRET-7f3a9c"


@pytest.mark.parametrize(
    "echoed",
    [
        UPSTREAM_KEY.replace("/", "\\/").encode(),  # JSON with escaped slashes, as PHP writes it
        "".join(f"\\u{ord(c):04x}" for c in UPSTREAM_KEY).encode(),  # every character \\u-escaped
        UPSTREAM_KEY.replace("/", "%2F").replace("+", "%2B").encode(),  # URL-encoded
        UPSTREAM_KEY[:18].encode() + b"...",  # cut short
    ],
)
def test_a_key_the_upstream_echoes_never_reaches_the_client(
    client: Callable[..., openai.OpenAI], echoed: bytes
) -> None:
    def refuse(method: str, path: str, headers: dict[str, str]) -> tuple[int, object]:
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": "fake", "object": "model"}]}
        return 401, b'{"error": {"message": "invalid key ' + echoed + b'"}}'

    with (
        stub_server(refuse) as upstream,
        serving(upstream, "--upstream-api-key", UPSTREAM_KEY) as url,
        pytest.raises(openai.InternalServerError) as failed,
    ):
        client(url).chat.completions.create(model="fake", messages=question("a5"))  # type: ignore[arg-type]
    said = str(failed.value)
    assert "the upstream answered 401: " in said and "invalid key ***" in said, said
    for part in ("SECRET", "7f3a9c", "sk-proj", upstream.split("/v1")[0]):
        assert part not in said, said


def test_an_upstream_429_is_a_429_with_its_retry_after(
    client: Callable[..., openai.OpenAI], fake_server: Callable[..., str]
) -> None:
    limited = fake_server("--error-rate", "1", "--fault-kinds", "429", "--retry-after", "0.2")
    with serving(limited) as url, pytest.raises(openai.RateLimitError) as refused:
        client(url).chat.completions.create(model="fake", messages=question("a5"))  # type: ignore[arg-type]
    assert "the upstream is rate limiting" in str(refused.value)
    assert refused.value.response.headers["Retry-After"] == "1"  # 0.2 s, in whole seconds


def test_out_of_time_is_a_504(client: Callable[..., openai.OpenAI], fake_server: Callable[..., str]) -> None:
    """A search whose deadline passes before any answer, and an upstream that does not
    answer within --upstream-timeout: both 504s, as documented (the first was a 200 with
    empty content)."""
    slow = fake_server("--latency", "5")
    with serving(slow, "--upstream-timeout", "0.2", "--budget-seconds", "60") as url:
        with pytest.raises(openai.APIStatusError) as late:
            client(url).chat.completions.create(
                model="fake", messages=question("a6"),  # type: ignore[arg-type]
                extra_body={"treesearch": {"budget_seconds": 0.5}},
            )  # fmt: skip
        assert late.value.status_code == 504 and "no answer within its 0.5 s" in str(late.value)
        with pytest.raises(openai.APIStatusError) as timed_out:
            client(url).chat.completions.create(model="fake", messages=question("a6"))  # type: ignore[arg-type]
        assert timed_out.value.status_code == 504 and "--upstream-timeout" in str(timed_out.value)


def test_a_search_without_an_answer_says_so(
    client: Callable[..., openai.OpenAI], proxy: tuple[str, str]
) -> None:
    url, _ = proxy
    answer = client(url).chat.completions.create(model="fake", messages=question("a7"), max_tokens=3)  # type: ignore[arg-type]
    summary = (answer.model_extra or {})["treesearch"]
    assert answer.choices[0].finish_reason == "length" and summary["answer"] is None
    assert "before any path gave an answer" in summary["message"]


def test_shutdown_gives_running_searches_their_grace(fake_server: Callable[..., str]) -> None:
    with serve_process(fake_server("--latency", "1"), "--shutdown-grace", "60") as (url, process), \
            openai.OpenAI(base_url=url, api_key="none", max_retries=0) as client:  # fmt: skip
        stream = client.chat.completions.create(model="fake", messages=question("sure6"), stream=True)  # type: ignore[arg-type]
        process.send_signal(signal.SIGTERM)  # the search is running: its headers came
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text.endswith(f"The answer is {PROBLEMS['sure6'].answer}.")
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        said = process.stderr.read()
    assert "1 running searches get 60 s to finish" in said
    assert said.rstrip().endswith("stopped serving (0 cancelled, 1 finished)")


def test_a_second_signal_cancels_running_searches_at_once(fake_server: Callable[..., str]) -> None:
    with serve_process(fake_server("--latency", "60"), "--shutdown-grace", "600") as (url, process), \
            openai.OpenAI(base_url=url, api_key="none", max_retries=0) as client:  # fmt: skip
        stream = client.chat.completions.create(model="fake", messages=question("sure7"), stream=True)  # type: ignore[arg-type]
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        while "running searches get" not in process.stderr.readline():
            pass
        process.send_signal(signal.SIGINT)
        with pytest.raises(openai.APIError, match="the server shut down before the search finished"):
            list(stream)
        assert process.wait(timeout=60) == 0
        said = process.stderr.read()
    assert said.rstrip().endswith("stopped serving (1 cancelled, 0 finished)")


def test_the_serve_page_snippet_runs(fake_server: Callable[..., str]) -> None:
    """The Serve page's example (docs/serve.md) against serve in front of the synthetic server."""
    page = (Path(__file__).parent.parent / "docs" / "serve.md").read_text(encoding="utf-8")
    snippet = page.split("```python\n", 1)[1].split("```", 1)[0]
    with serving(fake_server(), "--api-key", "sk-mine") as url:
        code = snippet.replace("http://127.0.0.1:8080/v1", url).replace("Qwen2.5-1.5B", "fake")
        code = code.replace("What is 17 * 23?", PROBLEMS["s7"].question)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "The answer is" in done.stdout and "'strategy': 'beam'" in done.stdout


@pytest.fixture(scope="module", params=["completions", "chat"])
def thinking_proxy(request: pytest.FixtureRequest, fake_server: Callable[..., str]) -> Iterator[str]:
    """serve before a model that thinks 40 tokens, read from its tags or its reasoning_content."""
    with serving(fake_server("--think", "40"), "--n", "4", "--api", request.param) as url:
        yield url


def test_the_chosen_path_s_thinking_passes_through(
    client: Callable[..., openai.OpenAI], thinking_proxy: str
) -> None:
    from treesearch.backends.fake.tasks import count_tokens

    answer = client(thinking_proxy).chat.completions.create(model="fake", messages=question("sure2"), seed=2)  # type: ignore[arg-type]
    message = answer.choices[0].message
    thinking = (message.model_extra or {})["reasoning_content"]
    assert thinking.startswith("First guess: \\boxed{") and "</think>" not in thinking
    assert message.content == f"The answer is {PROBLEMS['sure2'].answer}."
    assert answer.usage is not None and answer.usage.completion_tokens_details is not None
    # four traces of one length, each counted by the upstream
    assert answer.usage.completion_tokens_details.reasoning_tokens == 4 * count_tokens(thinking)
    chunks = list(client(thinking_proxy).chat.completions.create(
        model="fake", messages=question("sure2"), seed=2, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    ))  # fmt: skip
    deltas = [(c.choices[0].delta.model_extra or {}, c.choices[0].delta.content) for c in chunks if c.choices]
    streamed = [extra["reasoning_content"] for extra, _ in deltas if "reasoning_content" in extra]
    said = [content for _, content in deltas if content]
    assert "".join(streamed) == thinking and "".join(said) == message.content
    assert all("reasoning_content" in extra for extra, _ in deltas[: len(streamed)])  # the thinking first
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens_details is not None
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 4 * count_tokens(thinking)


def test_raw_answers_carry_the_thinking_and_stay_openai_shaped(thinking_proxy: str) -> None:
    from openai.types import Completion
    from openai.types.chat import ChatCompletion

    status, chat, _ = post(thinking_proxy, {**ASK, "seed": 1})
    assert status == 200 and ChatCompletion.model_validate(chat, strict=True)
    assert str(chat["choices"][0]["message"]["reasoning_content"]).startswith("First guess")  # type: ignore[index]
    prompt: dict[str, object] = {"model": "fake", "prompt": PROBLEMS["sure1"].question}
    status, text, _ = post(thinking_proxy, prompt, "/completions")
    assert status == 200 and Completion.model_validate(text, strict=True)
    choice = text["choices"][0]  # type: ignore[index]
    assert str(choice["reasoning_content"]).startswith("First guess") and "<think>" not in choice["text"]


def test_an_answer_without_thinking_carries_no_reasoning_fields(proxy: tuple[str, str]) -> None:
    status, chat, _ = post(proxy[0], {**ASK, "seed": 1})
    assert status == 200 and set(chat["choices"][0]["message"]) == {"role", "content"}  # type: ignore[index]
    assert set(chat["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}  # type: ignore[call-overload]
