"""``treesearch run --ray local``: two Ray workers, resume, a worker killed mid-run, and
Ctrl-C mid-run and while Ray starts (a real local Ray, a real SIGINT)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import problems, run_cli, write_problems

pytest.importorskip("ray", reason="ray is not installed (pip install '.[ray]')")
pytestmark = pytest.mark.timeout(300)
TESTS = str(Path(__file__).parent)


def test_ray_writes_the_rows_of_a_run_without_ray_once_through_a_dead_worker_and_resumes(
    fake_server: Callable[..., str], tmp_path: Path
) -> None:
    chosen = problems("a", 12)
    problems_file = write_problems(tmp_path / "p.jsonl", chosen)
    output, marker = tmp_path / "out.jsonl", tmp_path / "died"
    env = {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]),
           "TREESEARCH_TEST_MARKER": str(marker)}  # fmt: skip
    pool = [fake_server(), fake_server("--seed", "9")]
    command = ["run", "--ray", "local", "--ray-workers", "2", "--problems-in-flight", "4",
               "--base-url", pool[0], "--base-url", pool[1], "--model", "fake", "--strategy", "best-of-n",
               "--n", "3", "--verifier", "ray_helpers:die_once", "--seed", "1",
               "--problems", str(problems_file), "--output", str(output)]  # fmt: skip
    done = run_cli(*command, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    assert marker.exists()  # a worker died on a5's chunk, and Ray ran the chunk again
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == sorted(p.id for p in chosen)  # each once
    assert all(row["error"] is None for row in rows)
    # The closing lines of a run without Ray: accuracy, tokens, and each replica's counts.
    correct = sum(bool(row["correct"]) for row in rows)
    assert f"12 problems run now, 0 already done; accuracy {correct / 12:.3f} over all 12" in done.stderr
    for url in pool:
        (line,) = [line for line in done.stderr.splitlines() if line.startswith(f"treesearch: {url}: ")]
        assert re.search(r": [1-9]\d* requests, [\d,]+ tokens, 0 errors$", line), line
    # The rows of a run without Ray, configuration included (wall times aside).
    alone = tmp_path / "alone.jsonl"
    local = run_cli("run", *command[5:-1], str(alone), env=env)
    assert local.returncode == 0, local.stderr
    assert without_wall_times(output) == without_wall_times(alone)
    # A rerun finds every problem done, writes nothing, and reports the run the same way.
    again = run_cli(*command, env=env, timeout=240)
    assert again.returncode == 0, again.stderr
    assert f"0 problems run now, 12 already done; accuracy {correct / 12:.3f}" in again.stderr
    assert len(output.read_text().splitlines()) == 12
    # As without Ray, a rerun with another configuration is refused, even with nothing left to run.
    other = run_cli(*command[:-2], "--n", "4", *command[-2:], env=env, timeout=240)
    assert other.returncode == 2
    assert "holds rows of another configuration (n: 3 there, 4 now)" in other.stderr.splitlines()[-1]
    assert len(output.read_text().splitlines()) == 12


def without_wall_times(output: Path) -> dict[str, dict[str, object]]:
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    return {row["id"]: {key: value for key, value in row.items() if key != "wall_s"} for row in rows}


def outliving(session: int) -> list[str]:
    """The processes of ``session`` (every Ray process a command started: none starts a
    session of its own) that do not exit within 20 s, waited for through pidfds; killed,
    so a failing test leaves none behind."""
    left = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[3]) != session:
                continue
            handle = os.pidfd_open(int(proc.name))
        except (OSError, ValueError):
            continue  # not a process, or gone already
        try:
            if not select.select([handle], [], [], 20)[0]:
                left.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
                signal.pidfd_send_signal(handle, signal.SIGKILL)
        finally:
            os.close(handle)
    return left


def interrupt_at(command: list[str], ready: str) -> tuple[int, str, int]:
    """Start ``treesearch COMMAND`` in a session of its own, send it SIGINT once a line of
    its stderr starts with ``ready``; its exit code, what it wrote on stderr, its session."""
    process = subprocess.Popen(
        [sys.executable, "-m", "treesearch.cli", *command],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith(ready):
            process.send_signal(signal.SIGINT)
            break
    rest = process.communicate(timeout=120)[1]
    return process.returncode, "".join(seen) + rest, process.pid


def command_for(url: str, tmp_path: Path, count: int, model: str = "fake") -> list[str]:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("a", count))
    return ["run", "--ray", "local", "--ray-workers", "1", "--problems-in-flight", "4", "--base-url", url,
            "--model", model, "--n", "3", "--seed", "1", "--problems", str(problems_file),
            "--output", str(tmp_path / "out.jsonl")]  # fmt: skip


def test_ctrl_c_on_ray_keeps_the_rows_and_says_what_remains(
    fake_server: Callable[..., str], tmp_path: Path
) -> None:
    """SIGINT once the first chunk's rows are in: the rows stay, the run says how many
    problems remain (as without Ray), and Ray is shut down."""
    command = command_for(fake_server("--latency", "1"), tmp_path, 12)
    code, stderr, session = interrupt_at(command, "[4/12] ")
    assert code == 130, stderr
    rows = (tmp_path / "out.jsonl").read_text().splitlines()
    remain = re.search(r"interrupted; (\d+) of 12 problems remain \(rerun the same command", stderr)
    assert remain is not None, stderr
    assert 4 <= len(rows) < 12 and int(remain[1]) == 12 - len(rows)
    assert outliving(session) == []


def test_ctrl_c_while_ray_starts_leaves_no_ray_process_behind(
    fake_server: Callable[..., str], tmp_path: Path
) -> None:
    """SIGINT as Ray starts: it is held until Ray has started, then Ray is shut down whole
    (a start cut halfway left its dashboard and runtime-env agents running for good)."""
    command = command_for(fake_server(), tmp_path, 8)
    code, stderr, session = interrupt_at(command, "treesearch: starting Ray")
    assert code == 130, stderr
    assert "treesearch: interrupted; 8 of 8 problems remain" in stderr
    assert "Traceback" not in stderr
    assert outliving(session) == []


def test_a_setting_a_chunk_fails_on_is_one_line(fake_server: Callable[..., str], tmp_path: Path) -> None:
    """A model the server does not serve is found inside a Ray task (the one asked for the
    rows' configuration): the command still says so in one line, not with the worker's
    traceback."""
    done = run_cli(*command_for(fake_server(), tmp_path, 4, model="nosuch"), timeout=240)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith("does not serve model 'nosuch'; it lists fake")
    assert "Traceback" not in done.stderr and "File " not in done.stderr
