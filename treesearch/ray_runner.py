"""``treesearch run --ray local|ADDRESS``: the problems sharded over Ray tasks.

The driver reads what the output already holds (a rerun continues the run, as
without Ray), cuts the problems left into chunks of ``--problems-in-flight``, and
keeps ``--ray-workers`` chunks running at once. Each chunk is one Ray task that
runs the ordinary ``treesearch run`` engine on its problems against the shared
endpoints, with its share of ``--concurrency``, into a file of its own, and
returns the rows; the driver appends them to the one output as each chunk ends,
so rows stream back a chunk at a time. A worker that dies has its chunk run
again by Ray (``max_retries``); only a chunk that returned is written, so no row
is written twice. Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from treesearch.errors import ConfigError
from treesearch.problems import Problem
from treesearch.rows import check_same_run, drop_rows, open_append
from treesearch.runner import read_output

RETRIES = 3


def _chunk(options: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One Ray task: ``treesearch run`` on ``records`` into a file of its own; its rows."""
    import anyio

    from treesearch.run_command import run_command

    with tempfile.TemporaryDirectory() as folder:
        problems = Path(folder) / "problems.jsonl"
        problems.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
        args = argparse.Namespace(**options)
        args.problems, args.output, args.ray = problems, Path(folder) / "o", None
        args.trees = args.log_json = None
        anyio.run(run_command, args)
        return [json.loads(line) for line in args.output.read_text(encoding="utf-8").splitlines()]


def run_on_ray(args: argparse.Namespace, problems: list[Problem]) -> int:
    """Run ``problems`` on Ray into ``args.output``; the exit code."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the ray extra: pip install 'treesearch[ray]'") from None
    output = Path(args.output)
    ids = {problem.id for problem in problems}
    recorded = {key: row for key, row in read_output(output).items() if key in ids}
    if args.retry_failed:
        failed = {key for key, row in recorded.items() if row.get("error") is not None}
        drop_rows(output, "id", failed)
        recorded = {key: row for key, row in recorded.items() if key not in failed}
    todo = [problem for problem in problems if problem.id not in recorded]
    size = args.problems_in_flight or 32
    chunks = [todo[start : start + size] for start in range(0, len(todo), size)]
    options = dict(vars(args))
    options.pop("handler", None)
    options["concurrency"] = max(1, args.concurrency // args.ray_workers)
    options["force_resume"] = True  # each chunk writes a fresh file; the driver checks the run
    ray.init(address=None if args.ray == "local" else args.ray, log_to_driver=False, include_dashboard=False)
    task = ray.remote(max_retries=RETRIES)(_chunk)
    pending: dict[Any, int] = {}
    written = 0
    try:
        with open_append(output) as sink:
            while chunks or pending:
                while chunks and len(pending) < args.ray_workers:
                    chunk = chunks.pop(0)
                    records = [problem.to_record() for problem in chunk]
                    pending[task.remote(options, records)] = len(chunk)
                (done,), _ = ray.wait(list(pending), num_returns=1)
                pending.pop(done)
                rows = ray.get(done)
                if rows and not args.force_resume:
                    check_same_run(output, recorded, rows[0]["config"])
                for row in rows:
                    sink.write(json.dumps(row) + "\n")
                sink.flush()
                written += len(rows)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.shutdown()
    errors = sum(1 for row in read_output(output).values() if row.get("id") in ids and row.get("error"))
    print(f"treesearch: {written} problems run on Ray now, {len(recorded)} already done", file=sys.stderr)
    return 1 if errors else 0
