"""A real model: llama.cpp's own OpenAI-compatible server, and the embedded backend.

Both run Gemma 3 270M from PyPI on the CPU. llama.cpp's server ignores ``n``
(the context tops up), returns logprobs in the completions format and
serialises requests; the adapter must work against it unchanged. A recording
proxy on 127.0.0.1 sums the usage the server itself reported, to check our
totals against.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install '.[local]')")

from aiohttp import ClientSession, web

from treesearch import CallableVerifier, SamplingParams, SearchConfig, run
from treesearch.arithmetic import JUDGE_TEMPLATE, STEP_FORMAT, make_problems, step_scores
from treesearch.backends.llamacpp.endpoint import LlamaCppEndpoint, bundled_model
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import LogprobVerifier

# A real model on a CPU shared with other jobs: each test is a few requests, with a limit
# that holds when the machine is busy (pytest's default is 120 s).
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(600)]
PROBLEMS = make_problems(3, terms=3, low=1, high=9, prefix="e2e")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


SERVER = """
import runpy
from treesearch.backends.llamacpp.endpoint import safe_model_defaults
with safe_model_defaults():
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """llama.cpp's server (``python -m llama_cpp.server``) with the bundled model, loading
    it as every embedded load does (no weight repack where it crashes); ready once uvicorn
    says so."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, "--model", str(bundled_model()),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--verbose", "False"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if "Uvicorn running on" in line:
            break
    else:
        raise RuntimeError(f"llama_cpp.server did not start (exit code {process.wait()})")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait()
        process.stderr.close()


@pytest.fixture
async def recording_proxy(llama_server: str) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A loopback proxy to the llama.cpp server that adds up the usage the server reports."""
    seen = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    session = ClientSession()

    async def forward(request: web.Request) -> web.Response:
        async with session.post(
            llama_server + "/completions",
            data=await request.read(),
            headers={"Content-Type": "application/json"},
        ) as answer:
            body: dict[str, Any] = await answer.json()
            if answer.status == 200:
                seen["requests"] += 1
                seen["prompt_tokens"] += body["usage"]["prompt_tokens"]
                seen["completion_tokens"] += body["usage"]["completion_tokens"]
            return web.json_response(body, status=answer.status)

    app = web.Application()
    app.router.add_post("/v1/completions", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/v1", seen
    await runner.cleanup()
    await session.close()


def config(strategy: str, whole: bool) -> SearchConfig:
    return SearchConfig(strategy=strategy, n=4, beam_width=2, whole=whole, step=STEP_FORMAT,
                        sampling=SamplingParams(temperature=0.7, seed=1))  # fmt: skip


@pytest.mark.parametrize(("strategy", "whole"), [("best-of-n", True), ("beam", False)])
async def test_search_over_llama_cpp_server_charges_what_it_reports(
    recording_proxy: tuple[str, dict[str, int]], strategy: str, whole: bool
) -> None:
    url, seen = recording_proxy
    policy = OpenAIPolicy(url, "gemma")
    results = await run(PROBLEMS, policy, config(strategy, whole), verifier=CallableVerifier(step_scores))
    await policy.aclose()
    assert all(r.error is None and r.stopped_by == "done" for r in results)
    assert policy.choices_per_request(4) == 1  # llama.cpp ignores n; the context topped up
    assert sum(r.usage.requests for r in results) == seen["requests"]
    assert sum(r.usage.prompt_tokens for r in results) == seen["prompt_tokens"]
    assert sum(r.usage.completion_tokens for r in results) == seen["completion_tokens"]
    assert not any(r.usage.estimated for r in results)
    for result in results:
        assert result.candidates
        if whole:
            assert len(result.candidates) == 4
        scores = [c.score for c in result.candidates]
        best = max(result.candidates, key=lambda c: c.score or 0.0)
        if strategy == "best-of-n" and max(scores) == 1.0:
            assert result.correct and best.answer == result.gold


async def test_llama_cpp_server_logprobs_feed_the_logprob_verifier(llama_server: str) -> None:
    judge = LogprobVerifier(llama_server, "gemma", template=JUDGE_TEMPLATE, joiner="\n")
    scored = await judge.score(PROBLEMS[0], [["1 + 2 = 3"], ["1 + 2 = 9"]])
    await judge.aclose()
    assert all(0.0 < s[0] < 1.0 for s in scored.scores)
    assert scored.cost.requests == 2
    assert scored.cost.completion_tokens == 2


async def test_embedded_backend_matches_the_server_protocol() -> None:
    endpoint = LlamaCppEndpoint(n_ctx=1024)
    policy = OpenAIPolicy(endpoint, "gemma")
    judge = LogprobVerifier(endpoint, "gemma", template=JUDGE_TEMPLATE, joiner="\n")
    small = replace(config("beam", False), n=2, step=replace(STEP_FORMAT, max_depth=3))
    results = await run(PROBLEMS[:1], policy, small, verifier=judge)
    await endpoint.aclose()
    for result in results:
        assert result.error is None
        assert result.usage.requests > 0
        assert result.tree is not None
        scored = [n for n in result.tree.nodes() if n.scores is not None]
        assert scored
        assert all(0.0 < s < 1.0 for n in scored for s in n.scores or ())
    assert policy.choices_per_request(2) == 2  # the batching engine honours n


def test_the_bundled_model_is_assembled_once() -> None:
    path = bundled_model()
    assert path.stat().st_size > 200_000_000
    assert bundled_model() == path
    assert Path(path).name == "gemma-3-270m-q4_k_m.gguf"


def test_the_command_line_runs_the_embedded_model(tmp_path: Path) -> None:
    problems = tmp_path / "p.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": p.id, "question": p.question, "prompt": p.prompt, "answer": p.answer}) + "\n"
            for p in PROBLEMS[:2]
        )
    )
    output = tmp_path / "out.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "treesearch.cli", "run", "--backend", "llamacpp", "--problems",
         str(problems), "--output", str(output), "--strategy", "beam", "--verifier", "logprob",
         "--n", "2", "--beam-width", "2", "--sampling", "steps", "--step-delimiter", "\\n",
         "--stop", "Q:", "--max-step-tokens", "24", "--max-depth", "4", "--seed", "0"],
        capture_output=True, text=True, timeout=500, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["e2e0", "e2e1"]  # written as they finish
    assert all(r["error"] is None and r["usage"]["requests"] > 0 for r in records)


def test_a_bad_model_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "a", "question": "1 + 2", "answer": "3"}) + "\n")
    (tmp_path / "bad.gguf").write_bytes(b"not a model")
    done = subprocess.run(
        [sys.executable, "-m", "treesearch.cli", "run", "--backend", "llamacpp", "--model-file",
         str(tmp_path / "bad.gguf"), "--problems", str(tmp_path / "p.jsonl"), "--output",
         str(tmp_path / "o.jsonl")],
        capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "cannot load" in done.stderr


def test_a_signal_stops_the_embedded_model_mid_generation(tmp_path: Path) -> None:
    """The second problem is generating (long answers, one problem at a time) when SIGINT
    comes: the run ends in order, the first problem's row on disk, with no traceback."""
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps({"id": p.id, "question": p.question, "answer": p.answer}) + "\n"
                                for p in PROBLEMS))  # fmt: skip
    output = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "treesearch.cli", "run", "--backend", "llamacpp", "--problems", str(problems),
         "--output", str(output), "--n", "1", "--max-tokens", "1000", "--seed", "0",
         "--problems-in-flight", "1"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    line = process.stderr.readline()
    while not line.startswith("[1/3]"):  # llama.cpp's own start-up lines come first
        assert line, "the run ended before its first problem finished"
        line = process.stderr.readline()
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130
    process.stderr.close()
    assert "Traceback" not in rest
    assert rest.splitlines()[-1].startswith("treesearch: interrupted; 2 of 3 problems remain"), rest
    assert [json.loads(row)["id"] for row in output.read_text().splitlines()] == [PROBLEMS[0].id]


async def test_a_cancelled_generation_stops_at_the_next_token() -> None:
    """On the serial path (``batching=False``), a call cancelled mid-generation returns at
    once, and the generation itself stops at its next token: the model's context then holds
    far fewer than the tokens asked for. (The batching engine's own test is in
    test_embedded_engine.py.)"""
    endpoint = LlamaCppEndpoint(n_ctx=1024, batching=False)
    await endpoint.ping()
    counting = {"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 900, "temperature": 0.0}
    with anyio.move_on_after(0.5):
        await endpoint.post("/completions", counting)
    # The backend's own call seam: it runs once the abandoned generation has let go.
    held = await endpoint._call(lambda model, cancelled: model.n_tokens)
    await endpoint.aclose()
    assert held < 450
