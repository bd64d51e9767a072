"""Rows kept by a run stopped early: `treesearch run` interrupted by Ctrl-C after a few seconds.

100 four-step problems, majority vote with n = 4 sampled step by step, against the
synthetic server with 0.5 s latency and `--concurrency 20`; SIGINT after `--after`
seconds, for each `--problems-in-flight`. Printed: the rows on disk, the requests the
server served, and the run's closing line. Requests served oldest problem first
make rows arrive from the first seconds; served first come, first served by
request, every admitted problem advances a step at a time and none finishes early.

    python benchmarks/bench_interrupt.py [--after 5] [--in-flight 32,100] [--latency 0.5]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", type=float, default=5.0, help="seconds before Ctrl-C")
    parser.add_argument("--in-flight", default="32,100", help="--problems-in-flight values, comma-separated")
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--problems", type=int, default=100)
    args = parser.parse_args()
    records = make_problems(args.problems, steps=4, p_correct=0.7, prefix="i")
    print(f"| --problems-in-flight | rows after {args.after:g} s | requests served | closing line |")
    print("|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        problems = work / "problems.jsonl"
        problems.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        for in_flight in (int(value) for value in args.in_flight.split(",")):
            with spawn(["--latency", str(args.latency)], records, work) as url:
                output = work / f"out-{in_flight}.jsonl"
                command = [sys.executable, "-m", "treesearch.cli", "run", "--base-url", url,
                           "--model", "fake", "--problems", str(problems), "--output", str(output),
                           "--sampling", "steps", "--n", "4", "--concurrency", "20",
                           "--problems-in-flight", str(in_flight), "--seed", "1"]  # fmt: skip
                process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
                time.sleep(args.after)  # a benchmark: the user's Ctrl-C comes after this long
                process.send_signal(signal.SIGINT)
                stderr = process.communicate(timeout=60)[1]
                served = httpx2.get(url.removesuffix("/v1") + "/stats").json()["requests"]
                rows = len(output.read_text().splitlines()) if output.exists() else 0
                closing = stderr.strip().splitlines()[-1]
                print(f"| {in_flight} | {rows} | {served} | {closing} |")


if __name__ == "__main__":
    main()
