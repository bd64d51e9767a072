"""``treesearch report`` on real seeded runs against the synthetic server: every number it
prints is checked against the rows the runs wrote (and the intervals against scipy)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats
from conftest import problems, run_cli

from treesearch.evaluate.report import read_run, summarise
from treesearch.runs.loop import read_output

SEEDS = (1, 2, 3)
LEVELS = ("1", "2", "3")


def write_problem_file(path: Path) -> Path:
    """40 graded problems with a level and a subject, and 5 without a gold answer."""
    lines = []
    for index, problem in enumerate(problems("a", 45)):
        record: dict[str, Any] = {"id": problem.id, "question": problem.question}
        record["answer"] = problem.answer if index < 40 else None
        record["level"] = int(LEVELS[index % 3])
        record["subject"] = ("algebra", "geometry")[index % 2]
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_once(url: str, problem_file: Path, output: Path, *extra: str) -> Path:
    done = run_cli("run", "--base-url", url, "--model", "fake", "--problems", str(problem_file),
                   "--output", str(output), "--n", "4", "--model-params", "1B", *extra)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return output


@pytest.fixture(scope="module")
def runs(fake_server: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Majority vote at N=4 under three seeds, and one run whose server fails some requests
    with a 400 (not retried, so those problems end in an error)."""
    folder = tmp_path_factory.mktemp("report")
    problem_file = write_problem_file(folder / "problems.jsonl")
    made = {"problems": problem_file}
    for seed in SEEDS:
        made[f"seed{seed}"] = run_once(
            fake_server(), problem_file, folder / f"maj-s{seed}.jsonl", "--seed", str(seed)
        )
    faulty = fake_server("--error-rate", "0.3", "--error-statuses", "400", "--seed", "4")
    made["faulty"] = run_once(faulty, problem_file, folder / "faulty.jsonl", "--seed", "1")
    return made


def report(*args: str) -> Any:
    done = run_cli("report", *args, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rows_of(path: Path) -> list[dict[str, Any]]:
    return list(read_output(path).values())


@pytest.mark.parametrize("name", ["seed1", "faulty"])
def test_a_runs_numbers_are_its_rows(runs: dict[str, Path], name: str) -> None:
    [line] = report(str(runs[name]))
    rows = rows_of(runs[name])
    graded = [row for row in rows if row["gold"] is not None]
    correct = sum(row["correct"] is True for row in graded)
    wilson = scipy.stats.binomtest(correct, len(graded)).proportion_ci(0.95, method="wilson")
    assert (line["problems"], line["graded"], line["correct"], line["no_gold"]) == (45, 40, correct, 5)
    assert line["accuracy"] == pytest.approx(correct / len(graded))
    assert line["interval"] == pytest.approx([wilson.low, wilson.high], abs=1e-12)
    assert line["interval_kind"] == "wilson"
    for key in ("prompt_tokens", "completion_tokens", "verifier_tokens", "requests"):
        assert line[key] == pytest.approx(np.mean([row["usage"].get(key, 0) for row in rows]))
    with_flops = [row["flops"]["total"] for row in rows if row.get("flops")]
    assert line["flops_rows"] == len(with_flops) > 0
    assert line["flops"] == pytest.approx(np.mean(with_flops))
    walls = [row["wall_s"] for row in rows]
    assert [line["wall_p50"], line["wall_p95"]] == pytest.approx(np.percentile(walls, [50, 95]))
    assert line["stopped_by"] == dict(Counter(row["stopped_by"] for row in rows))
    assert line["aggregated_by"] == dict(
        Counter(row["aggregated_by"] for row in rows if row["aggregated_by"])
    )
    assert line["errors"] == sum(row["error"] is not None for row in rows)
    assert (line["strategy"], line["n"], line["seeds"]) == ("majority-vote", 4, [1])


def test_the_faulty_run_reports_its_errors(runs: dict[str, Path]) -> None:
    [line] = report(str(runs["faulty"]))
    assert line["errors"] > 0
    assert line["stopped_by"].get("error") == line["errors"]


def test_seeds_of_one_configuration_fold_into_a_t_interval(runs: dict[str, Path]) -> None:
    files = [str(runs[f"seed{seed}"]) for seed in SEEDS]
    [line] = report(*files, "--confidence", "0.9")
    per_seed = []
    for path in files:
        graded = [row for row in rows_of(Path(path)) if row["gold"] is not None]
        per_seed.append(sum(row["correct"] is True for row in graded) / len(graded))
    low, high = scipy.stats.t.interval(0.9, 2, loc=np.mean(per_seed), scale=scipy.stats.sem(per_seed))
    assert line["seeds"] == list(SEEDS)
    assert line["interval_kind"] == "t over seeds"
    assert line["accuracy"] == pytest.approx(np.mean(per_seed))
    assert line["interval"] == pytest.approx([max(0.0, low), min(1.0, high)])
    assert line["run"].endswith("maj-s*")
    # Every count is per seed: the 45 problems, 40 with gold, each run's stops.
    assert (line["problems"], line["graded"], line["no_gold"]) == (45, 40, 5)
    assert line["stopped_by"] == {"done": 45}
    assert line["correct"] == pytest.approx(np.mean(per_seed) * 40)


def test_runs_of_other_configurations_stay_apart(runs: dict[str, Path]) -> None:
    lines = report(str(runs["seed1"]), str(runs["faulty"]), str(runs["seed2"]))
    # The faulty server's run has seed1's configuration and seed: not another seed, a line each.
    assert [line["seeds"] for line in lines] == [[1], [1], [2]]
    other = runs["seed1"].with_name("maj-n2.jsonl")
    other.write_text(
        "".join(
            json.dumps({**row, "config": {**row["config"], "n": 2}}) + "\n" for row in rows_of(runs["seed1"])
        )
    )
    assert [line["n"] for line in report(str(runs["seed1"]), str(other))] == [4, 2]


def test_by_a_problem_field_splits_each_run(runs: dict[str, Path]) -> None:
    lines = report(str(runs["seed1"]), "--by", "level", "--problems", str(runs["problems"]))
    rows = rows_of(runs["seed1"])
    assert [line["group"] for line in lines] == list(LEVELS)
    for line in lines:
        mine = [row for row in rows if str(int(row["id"][1:]) % 3 + 1) == line["group"]]
        graded = [row for row in mine if row["gold"] is not None]
        assert line["problems"] == len(mine)
        assert line["correct"] == sum(row["correct"] is True for row in graded)
        assert line["graded"] == len(graded)
    assert sum(line["problems"] for line in lines) == 45


def test_by_a_row_field_and_by_subject_across_seeds(runs: dict[str, Path]) -> None:
    lines = report(str(runs["faulty"]), "--by", "stopped_by")
    assert {line["group"] for line in lines} == {row["stopped_by"] for row in rows_of(runs["faulty"])}
    files = [str(runs[f"seed{seed}"]) for seed in SEEDS]
    lines = report(*files, "--by", "subject", "--problems", str(runs["problems"]))
    assert [(line["group"], line["seeds"]) for line in lines] == [
        ("algebra", [1, 2, 3]),
        ("geometry", [1, 2, 3]),
    ]


def test_the_formats_carry_the_same_numbers(runs: dict[str, Path]) -> None:
    path = str(runs["seed1"])
    [line] = report(path)
    table = run_cli("report", path).stdout.splitlines()
    header, values = table[0], table[1]
    assert header.index("accuracy") == values.index(f"{line['accuracy']:.3f}")
    assert f"{line['interval'][0]:.3f} to {line['interval'][1]:.3f}" in values
    markdown = run_cli("report", path, "--format", "md").stdout.splitlines()
    assert markdown[1].startswith("|---|") and markdown[2].count("|") == markdown[0].count("|")
    [record] = csv.DictReader(io.StringIO(run_cli("report", path, "--format", "csv").stdout))
    assert float(record["accuracy"]) == pytest.approx(line["accuracy"])
    assert float(record["interval_low"]) == pytest.approx(line["interval"][0])
    assert int(record["stopped_by:done"]) == line["stopped_by"]["done"]


def test_summarise_in_python(runs: dict[str, Path]) -> None:
    [line] = summarise([read_run(runs["seed1"])], confidence=0.99)
    rows = rows_of(runs["seed1"])
    graded = [row for row in rows if row["gold"] is not None]
    wilson = scipy.stats.binomtest(line.correct, len(graded)).proportion_ci(0.99, method="wilson")
    assert line.interval == pytest.approx((wilson.low, wilson.high))


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "missing.jsonl: no such file"),
        ("", [], "bad.jsonl holds no rows"),
        ('{"strategy": "x"}\n', [], 'bad.jsonl:1: not a results row (a JSON object with "id")'),
        ('{"id": "a0", "gold": "1", "correct": true}\n', ["--by", "colour"],
         "--by colour: no row or problem has this field (rows have correct, gold, id; give --problems"),
        ('{"id": "a0"}\n', ["--problems", "nowhere.jsonl"], "nowhere.jsonl"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(tmp_path: Path, content: str | None, extra: list[str], message: str) -> None:
    path = tmp_path / ("missing.jsonl" if content is None else "bad.jsonl")
    if content is not None:
        path.write_text(content)
    done = run_cli("report", str(path), *extra)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert message in done.stderr


def test_runs_without_gold_or_usage_report_no_accuracy_and_no_nan(tmp_path: Path) -> None:
    path = tmp_path / "nogold.jsonl"
    rows = [{"id": "x", "gold": None, "correct": None, "usage": None, "flops": {"policy": 1.0}},
            {"id": "y", "gold": None, "correct": None, "stopped_by": "done", "wall_s": 0.5}]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    [line] = report(str(path))
    assert (line["accuracy"], line["interval"], line["no_gold"], line["flops"]) == (None, None, 2, None)
    assert (line["prompt_tokens"], line["wall_p50"]) == (0.0, 0.5)
    table = run_cli("report", str(path)).stdout
    assert "nan" not in table.lower()
    header, values = table.splitlines()[:2]
    assert values[header.index("no gold") :].split()[:3] == ["2", "-", "-"]  # no gold, accuracy, interval


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def made_run(ids: range, seed: int | None, **config: Any) -> list[dict[str, Any]]:
    """Majority-vote rows of problems ``ids``, half right, under ``seed`` (None: the default,
    which records null)."""
    return [
        {"id": str(i), "strategy": "majority-vote", "answer": "1", "gold": "1", "correct": i % 2 == 0,
         "candidates": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20}, "stopped_by": "done",
         "config": {"strategy": "majority-vote", "n": 4, "sampling": {"seed": seed}, **config}}
        for i in ids
    ]  # fmt: skip


def test_only_seeds_on_the_same_problems_fold(tmp_path: Path) -> None:
    """Two benchmarks run with the same settings and no seed, or one file twice, are not seeds
    of one experiment (a line each); distinct seeds on the same problems are."""
    math500 = write_rows(tmp_path / "math500.jsonl", made_run(range(100), None))
    aime = write_rows(tmp_path / "aime.jsonl", made_run(range(100, 130), None))
    assert [line["problems"] for line in report(str(math500), str(aime))] == [100, 30]
    seeded = write_rows(tmp_path / "s0.jsonl", made_run(range(10), 0))
    twice = report(str(seeded), str(seeded))
    assert [(line["seeds"], line["interval_kind"]) for line in twice] == [([0], "wilson")] * 2
    other = write_rows(tmp_path / "s1.jsonl", made_run(range(10), 1))
    elsewhere = write_rows(tmp_path / "s2.jsonl", made_run(range(5, 15), 2))
    lines = report(str(seeded), str(other), str(elsewhere))
    assert [line["seeds"] for line in lines] == [[0, 1], [2]]
    # A hand-edited row without sampling settings is a run without a seed, not a traceback;
    # an N of true is no N.
    bare = write_rows(tmp_path / "bare.jsonl", [{**made_run(range(1), 0)[0], "config": {"sampling": None}}])
    assert report(str(bare), str(bare))[0]["seeds"] == [None]
    true = write_rows(tmp_path / "true.jsonl", made_run(range(1), 0, n=True))
    assert report(str(true))[0]["n"] is None


def test_an_unfinished_last_line_is_skipped_and_said(tmp_path: Path) -> None:
    """A crash leaves a cut last line, which the run itself skips: so do report, --curve and
    compare, in one warning line; a bad line anywhere else is still an error."""
    path = write_rows(tmp_path / "cut.jsonl", made_run(range(10), 0))
    with path.open("a") as handle:
        handle.write('{"id": "99", "strategy": "maj')
    done = run_cli("report", str(path), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["problems"] == 10
    assert done.stderr.strip() == (
        f"treesearch report: warning: {path}:11: skipped an unfinished last line (a run cut short)"
    )
    compared = run_cli("compare", str(path), str(path))
    assert compared.returncode == 0 and "skipped an unfinished last line" in compared.stderr
    middle = tmp_path / "middle.jsonl"
    middle.write_text('{"id": "99", "strategy": "maj\n' + path.read_text().split("\n", 1)[1])
    refused = run_cli("report", str(middle))
    assert refused.returncode == 2 and f"{middle}:1: not JSON" in refused.stderr
    ended = tmp_path / "ended.jsonl"
    ended.write_text(path.read_text() + "\n")  # a newline after it: not a line a crash cut
    assert run_cli("report", str(ended)).returncode == 2


@pytest.mark.parametrize(
    ("field", "text", "shown"),
    [
        ("wall_s", "NaN", "wall_s is nan"),
        ("usage", '{"prompt_tokens": Infinity}', "usage.prompt_tokens is inf"),
        ("usage", f'{{"prompt_tokens": {10**400}}}', "usage.prompt_tokens is beyond 1e+100"),
        ("wall_s", "1.5e308", "wall_s is beyond 1e+100"),  # two of them overflow a sum
        ("candidates", '[{"node": 1, "answer": "1", "score": -Infinity}]', "candidates[0].score is -inf"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_row(
    tmp_path: Path, field: str, text: str, shown: str
) -> None:
    """NaN, Infinity (Python's JSON reader takes them) and numbers whose sums would overflow are
    refused in one line naming the row and field, by report, --curve and compare alike."""
    rows = made_run(range(3), 0)
    lines = [json.dumps(row) for row in rows]
    lines[1] = lines[1][:-1] + f', "{field}": {text}}}'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    for command in (["report"], ["report", "--curve"], ["compare", str(path)]):
        done = run_cli(*command, str(path), "--format", "json")
        assert done.returncode == 2
        assert done.stderr.startswith(f"treesearch: error: {path}: row '1': {shown}")
        assert done.stderr.strip().count("\n") == 0


def test_by_a_parquet_date_decimal_or_bytes(tmp_path: Path) -> None:
    """A Parquet problems file's dates, decimals and bytes name groups as Python writes them."""
    import datetime
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": ["0", "1"], "question": ["q", "q"],
                      "when": [datetime.datetime(2024, 1, 1), datetime.datetime(2025, 6, 1)],
                      "dec": [decimal.Decimal("1.5"), decimal.Decimal("2.5")],
                      "blob": [b"\x00", b"x"]})  # fmt: skip
    pq.write_table(table, tmp_path / "problems.parquet")
    path = write_rows(tmp_path / "run.jsonl", made_run(range(2), 0))
    expected = {"when": ["2024-01-01 00:00:00", "2025-06-01 00:00:00"], "dec": ["1.5", "2.5"],
                "blob": ["b'\\x00'", "b'x'"]}  # fmt: skip
    for field, groups in expected.items():
        lines = report(str(path), "--by", field, "--problems", str(tmp_path / "problems.parquet"))
        assert [line["group"] for line in lines] == groups


@pytest.mark.parametrize("by", ["strategy", "correct"])
def test_csv_by_a_summary_column_keeps_the_group(tmp_path: Path, by: str) -> None:
    path = write_rows(tmp_path / "run.jsonl", made_run(range(4), 0))
    done = run_cli("report", str(path), "--by", by, "--format", "csv")
    records = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [record[f"by:{by}"] for record in records] == (
        ["majority-vote"] if by == "strategy" else ["false", "true"]
    )
    assert all(record["strategy"] == "majority-vote" for record in records)
