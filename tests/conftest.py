"""Shared fixtures: synthetic servers started once per session as real processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import structlog
from hypothesis import settings

from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM
from treesearch.problems import Problem

# Problems every session server knows: four difficulties, known answer distributions.
RECORDS: list[dict[str, Any]] = [
    *make_problems(300, p_correct=0.6, prefix="a"),
    *make_problems(300, p_correct=0.4, prefix="b"),
    *make_problems(300, p_correct=0.75, prefix="c"),
    *make_problems(20, p_correct=1.0, steps=4, prefix="sure"),
    # For search: wrong answers likelier than the right one, steps that err.
    *make_problems(40, p_correct=0.35, wrong=2, steps=4, step_error=0.2, prefix="s"),
    # Paths that may answer after any step, so finished and open siblings meet.
    *make_problems(10, p_correct=0.5, steps=5, early=0.3, prefix="early"),
    # Six steps: deeper than a tight depth limit.
    *make_problems(10, p_correct=0.7, steps=6, prefix="deep"),
    # Revisions that turn right answers wrong more often than they fix wrong ones.
    *make_problems(40, p_correct=0.8, revise_break=0.6, revise_fix=0.05, prefix="rev"),
]
PROBLEMS = {record["id"]: Problem.from_record(record) for record in RECORDS}


def _drop(logger: object, method: str, event: object) -> Any:
    raise structlog.DropEvent


# Property tests are reproducible: a fixed derandomized seed, and no example database
# carrying failures from one run into the next.
settings.register_profile("treesearch", derandomize=True, database=None)
settings.load_profile("treesearch")

# The test session is an edge: events are dropped unless a test captures them
# (capture_logs swaps the processors, so every level must stay enabled).
structlog.configure(processors=[_drop])


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """``fake_server(*flags)``: the base URL of a synthetic server started with those
    serve-fake flags (one process per distinct set of flags, shared by the session)."""
    servers: dict[tuple[str, ...], str] = {}
    workdir = tmp_path_factory.mktemp("fake")
    with ExitStack() as stack:

        def get(*flags: str) -> str:
            if flags not in servers:
                servers[flags] = stack.enter_context(spawn(list(flags), RECORDS, workdir))
            return servers[flags]

        yield get


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``treesearch ARGS`` in a subprocess (with ``env`` added to the environment)."""
    return subprocess.run(
        [sys.executable, "-m", "treesearch.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
async def prm(fake_server: Callable[..., str]) -> AsyncIterator[PoolingPRM]:
    """The synthetic server's process reward model, through vLLM's /pooling protocol."""
    verifier = PoolingPRM(fake_server(), "fake-prm")
    yield verifier
    await verifier.aclose()


def server_stats(base_url: str) -> dict[str, int]:
    response = httpx2.get(base_url.removesuffix("/v1") + "/stats")
    stats: dict[str, int] = response.json()
    return stats


def problems(prefix: str, count: int) -> list[Problem]:
    return [PROBLEMS[f"{prefix}{index}"] for index in range(count)]


def write_problems(path: Path, chosen: list[Problem]) -> Path:
    lines = [json.dumps({"id": p.id, "question": p.question, "answer": p.answer}) for p in chosen]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
async def make_policy() -> AsyncIterator[Callable[..., OpenAIPolicy]]:
    """``make_policy(url, **options)``: an OpenAIPolicy closed when the test ends, pass or fail."""
    made: list[OpenAIPolicy] = []

    def make(url: str, model: str = "fake", **options: Any) -> OpenAIPolicy:
        made.append(OpenAIPolicy(url, model, **options))
        return made[-1]

    yield make
    for policy in made:
        await policy.aclose()


@contextmanager
def serve_process(upstream: str, *flags: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``treesearch serve`` in front of ``upstream`` (with --no-auth unless ``flags`` give keys):
    its base URL and its process, stopped after."""
    command = [sys.executable, "-m", "treesearch.cli", "serve", "--base-url", upstream, "--model", "fake",
               "--port", "0", "--seed", "0", "--prm-url", upstream, "--prm-model", "fake-prm",
               *flags, *([] if {"--api-key", "--keys-file"} & set(flags) else ["--no-auth"])]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"serve did not start: {process.communicate()[1]}")
        yield line.split()[-1], process
    finally:
        process.terminate()
        process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def serving(upstream: str, *flags: str) -> Iterator[str]:
    """``serve_process``'s base URL alone."""
    with serve_process(upstream, *flags) as (url, _):
        yield url
