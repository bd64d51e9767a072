"""Starting the synthetic server: ``serve`` runs it in this process (``treesearch serve-fake``),
``spawn`` runs that command as a separate process for tests, benchmarks and the demo, so a
client under test never shares an event loop or a CPU budget with the server it talks to.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from treesearch.errors import ConfigError
from treesearch.problems import Problem

from .app import FakeServer, FakeServerConfig


async def serve(config: FakeServerConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until cancelled; the first stdout line is ``listening on <base URL>``. An
    address that cannot be listened on (a port in use) is a ConfigError."""
    runner = web.AppRunner(FakeServer(config).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            reason = f"port {port} is in use (choose another with --port, or 0 for a free one)"
        else:
            reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from exc
    bound_host, bound_port = runner.addresses[0][:2]
    print(f"listening on http://{bound_host}:{bound_port}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


@contextmanager
def spawn(
    args: Sequence[str] = (),
    problems: Sequence[Problem | dict[str, Any]] | None = None,
    workdir: Path | None = None,
) -> Iterator[str]:
    """Run ``treesearch serve-fake ARGS`` in a separate process; yield its base URL.

    ``problems`` (records or Problems) are written to a file in ``workdir`` and served."""
    command = [sys.executable, "-m", "treesearch.cli", "serve-fake", "--port", "0", *args]
    if problems is not None:
        if workdir is None:
            raise ValueError("problems need a workdir to be written to")
        path = workdir / "fake-problems.jsonl"
        path.write_text("".join(json.dumps(_record(p)) + "\n" for p in problems), encoding="utf-8")
        command += ["--problems", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"fake server did not start (exit code {process.wait()})")
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _record(problem: Problem | dict[str, Any]) -> dict[str, Any]:
    if isinstance(problem, dict):
        return problem
    return problem.to_record()
