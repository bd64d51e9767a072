"""The compare plot of docs/evaluate.md: seeded runs of a few strategies at several N on the
synthetic server, then ``treesearch compare`` and ``treesearch report`` over them, exactly as a
user runs them.

The problems are the synthetic server's at three difficulties (as in bench_search.py: the
right answer likeliest, about as likely as each wrong one, or less likely; steps that may
err; the PRM noisy by ``--prm-noise``), with their level as a problem field for ``report
--by level``. Every run is ``treesearch run --seed 1 --model-params 1B``.

    python benchmarks/bench_compare.py [--per-level 40]

Writes benchmarks/results/compare.png (every run) and compare.json (the date, commit and
machine, the commands, compare's tables at the largest N and the report by level, as
Markdown lines).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems

RESULTS = Path(__file__).parent / "results"
# name: (P(right answer), wrong answers sharing the rest, per-step error rate)
LEVELS = {"easy": (0.6, 2, 0.05), "medium": (0.34, 2, 0.1), "hard": (0.2, 2, 0.15)}
# strategy: its options (the PRM-guided ones get the server's PRM)
STRATEGIES = {
    "majority-vote": [],
    "weighted-vote": ["--prm"],
    "best-of-n": ["--prm"],
    "beam": ["--prm", "--beam-width", "4"],
}
WIDTHS = (4, 8, 16, 32)


def treesearch(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "treesearch.cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"treesearch {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )  # fmt: skip
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({model})"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return head + (" (with uncommitted changes)" if git("status", "--porcelain", "--", "treesearch") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=40)
    parser.add_argument("--prm-noise", type=float, default=3.0)
    args = parser.parse_args()
    started = time.perf_counter()
    records = []
    for level, (p, wrong, error) in LEVELS.items():
        for record in make_problems(args.per_level, p_correct=p, wrong=wrong, steps=4, step_error=error,
                                    prefix=level):  # fmt: skip
            records.append({**record, "level": level})
    with (
        tempfile.TemporaryDirectory() as tmp,
        spawn(["--prm-noise", str(args.prm_noise)], records, Path(tmp)) as url,
    ):
        folder = Path(tmp)
        problems = folder / "problems.jsonl"
        problems.write_text("".join(json.dumps(record) + "\n" for record in records))
        runs: dict[tuple[str, int], Path] = {}
        for strategy, options in STRATEGIES.items():
            prm = ["--prm-url", url, "--prm-model", "fake-prm"] if "--prm" in options else []
            extra = [option for option in options if option != "--prm"]
            for n in WIDTHS:
                output = folder / f"{strategy}-n{n}.jsonl"
                treesearch("run", "--base-url", url, "--model", "fake", "--problems", str(problems),
                           "--output", str(output), "--strategy", strategy, "--n", str(n), "--seed", "1",
                           "--model-params", "1B", "--sampling", "steps", *prm, *extra)  # fmt: skip
                runs[strategy, n] = output
                print(f"{strategy} N={n}: done", flush=True)
        everything = [str(path) for path in runs.values()]
        RESULTS.mkdir(exist_ok=True)
        plot = RESULTS / "compare.png"
        treesearch("compare", *everything, "-o", str(plot))
        largest = [str(runs[strategy, WIDTHS[-1]]) for strategy in STRATEGIES]
        tables = treesearch("compare", *largest, "--format", "md")
        report = treesearch(
            "report", *largest, "--by", "level", "--problems", str(problems), "--format", "md"
        )
        names = " ".join(f"{strategy}-n{{{','.join(map(str, WIDTHS))}}}.jsonl" for strategy in STRATEGIES)
    record = {
        "command": "python benchmarks/bench_compare.py "
        f"--per-level {args.per_level} --prm-noise {args.prm_noise}",
        "date": datetime.date.today().isoformat(),
        "commit": commit(),
        "machine": machine(),
        "runs": "treesearch run --seed 1 --model-params 1B --sampling steps --strategy S --n N (N = "
        f"{', '.join(map(str, WIDTHS))}) on {3 * args.per_level} synthetic problems, "
        f"{args.per_level} a level",
        "plot": f"treesearch compare {names} -o compare.png",
        f"compare at N = {WIDTHS[-1]}": tables.replace(str(folder) + "/", "").strip().splitlines(),
        f"report --by level at N = {WIDTHS[-1]}": report.replace(str(folder) + "/", "").strip().splitlines(),
    }
    (RESULTS / "compare.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"{time.perf_counter() - started:.0f} s; wrote {plot} and {RESULTS / 'compare.json'}")


if __name__ == "__main__":
    main()
