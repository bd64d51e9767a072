"""``treesearch run --ray local``: two Ray workers, resume, and a worker killed mid-run."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import problems, run_cli, write_problems

pytest.importorskip("ray", reason="ray is not installed (pip install '.[ray]')")
pytestmark = pytest.mark.timeout(300)
TESTS = str(Path(__file__).parent)


def test_ray_runs_every_problem_once_through_a_dead_worker_and_resumes(
    fake_server: Callable[..., str], tmp_path: Path
) -> None:
    chosen = problems("a", 12)
    problems_file = write_problems(tmp_path / "p.jsonl", chosen)
    output, marker = tmp_path / "out.jsonl", tmp_path / "died"
    env = {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]),
           "TREESEARCH_TEST_MARKER": str(marker)}  # fmt: skip
    command = ["run", "--ray", "local", "--ray-workers", "2", "--problems-in-flight", "4",
               "--base-url", fake_server(), "--model", "fake", "--strategy", "best-of-n", "--n", "3",
               "--verifier", "ray_helpers:die_once", "--seed", "1",
               "--problems", str(problems_file), "--output", str(output)]  # fmt: skip
    done = run_cli(*command, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    assert marker.exists()  # a worker died on a5's chunk, and Ray ran the chunk again
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == sorted(p.id for p in chosen)  # each once
    assert all(row["error"] is None for row in rows)
    # A rerun finds every problem done and writes nothing.
    again = run_cli(*command, env=env, timeout=240)
    assert again.returncode == 0, again.stderr
    assert "0 problems run on Ray now, 12 already done" in again.stderr
    assert len(output.read_text().splitlines()) == 12
