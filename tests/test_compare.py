"""``treesearch compare`` on real seeded runs against the synthetic server: the points and the
paired tests against the rows (McNemar and Wilson against scipy), the warnings against the
configurations, the plot as a PNG."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import scipy.stats
from conftest import problems, run_cli, write_problems

from treesearch.runs.loop import read_output

WIDTHS = (2, 4, 8)


@pytest.fixture(scope="module")
def runs(fake_server: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Majority vote at N = 2, 4, 8 and weighted vote at N = 4 (the server's PRM), seeded, on 40
    problems with gold; majority vote at N = 4 at another temperature; one on other problems."""
    folder = tmp_path_factory.mktemp("compare")
    url = fake_server()
    problem_file = write_problems(folder / "problems.jsonl", problems("a", 40))
    elsewhere = write_problems(folder / "other.jsonl", problems("b", 10))
    plans: dict[str, tuple[Path, list[str]]] = {
        **{f"maj{n}": (problem_file, ["--n", str(n)]) for n in WIDTHS},
        "weighted4": (problem_file, ["--n", "4", "--strategy", "weighted-vote", "--prm-url", url,
                                     "--prm-model", "fake-prm"]),
        "hot4": (problem_file, ["--n", "4", "--temperature", "1.2"]),
        "other4": (elsewhere, ["--n", "4"]),
    }  # fmt: skip
    made = {}
    for name, (chosen, options) in plans.items():
        output = folder / f"{name}.jsonl"
        done = run_cli("run", "--base-url", url, "--model", "fake", "--problems", str(chosen), "--output",
                       str(output), "--seed", "3", "--model-params", "1B", *options)  # fmt: skip
        assert done.returncode == 0, done.stderr
        made[name] = output
    return made


def compare(*args: str) -> tuple[Any, str]:
    done = run_cli("compare", *args, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def graded(path: Path) -> dict[str, bool]:
    return {key: row["correct"] is True for key, row in read_output(path).items() if row["gold"] is not None}


def test_points_and_pairs_are_the_rows(runs: dict[str, Path]) -> None:
    names = ["maj2", "maj4", "maj8", "weighted4"]
    found, warnings = compare(*(str(runs[name]) for name in names))
    assert warnings == ""  # these differ only in strategy and N
    for name, point in zip(names, found["points"], strict=True):
        rows = list(read_output(runs[name]).values())
        right = sum(graded(runs[name]).values())
        wilson = scipy.stats.binomtest(right, 40).proportion_ci(0.95, method="wilson")
        assert (point["graded"], point["accuracy"]) == (40, pytest.approx(right / 40))
        assert point["interval"] == pytest.approx([wilson.low, wilson.high], abs=1e-12)
        spent = [row["usage"]["prompt_tokens"] + row["usage"]["completion_tokens"] for row in rows]
        assert point["cost"] == pytest.approx(sum(spent) / len(spent))
        assert (point["line"], point["n"]) == (rows[0]["strategy"], rows[0]["config"]["n"])
    assert len(found["pairs"]) == 6
    for (a, b), pair in zip(itertools.combinations(names, 2), found["pairs"], strict=True):
        first, second = graded(runs[a]), graded(runs[b])
        only_a = sum(first[key] and not second[key] for key in first)
        only_b = sum(second[key] and not first[key] for key in first)
        result = pair["found"]
        assert (pair["a"], pair["b"]) == (str(runs[a]), str(runs[b]))
        assert (result["pairs"], result["only_a"], result["only_b"]) == (40, only_a, only_b)
        assert result["difference"] == pytest.approx((only_a - only_b) / 40)
        expected = scipy.stats.binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
        assert result["p_value"] == pytest.approx(expected, rel=1e-9)
        assert result["interval"][0] <= result["difference"] <= result["interval"][1]
        assert (result["resamples"], result["seed"]) == (10_000, 0)


def test_the_comparison_is_seeded(runs: dict[str, Path]) -> None:
    files = [str(runs["maj2"]), str(runs["maj8"])]
    assert compare(*files) == compare(*files)
    other, _ = compare(*files, "--seed", "7", "--resamples", "500")
    assert other["pairs"][0]["found"]["resamples"] == 500


def test_runs_differing_in_more_than_strategy_and_n_are_warned(runs: dict[str, Path]) -> None:
    _, warnings = compare(str(runs["maj4"]), str(runs["hot4"]), str(runs["maj8"]))
    [line] = warnings.splitlines()
    assert line.startswith("treesearch compare: warning: the runs differ in more than strategy and N: ")
    assert f"sampling.temperature (0.8 in {runs['maj4']}, {runs['maj8']}; 1.2 in {runs['hot4']})" in line


def test_runs_on_other_problems_share_none(runs: dict[str, Path]) -> None:
    found, _ = compare(str(runs["maj4"]), str(runs["other4"]))
    assert found["pairs"][0]["found"] is None
    table = run_cli("compare", str(runs["maj4"]), str(runs["other4"])).stdout
    assert f"{runs['maj4']}  {runs['other4']}  0 " in table


def test_runs_on_partly_other_problems_or_gold_are_warned(runs: dict[str, Path], tmp_path: Path) -> None:
    """Half the problems shared, and a different gold answer to some of those: one warning
    line each, the first saying the runs table's accuracies are over different problems."""
    mine = list(read_output(runs["maj4"]).values())
    theirs = [{**row, "gold": "-1"} if index < 3 else row for index, row in enumerate(mine[:20])]
    theirs += list(read_output(runs["other4"]).values())
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(row) + "\n" for row in theirs))
    found, warnings = compare(str(runs["maj4"]), str(mixed))
    assert found["pairs"][0]["found"]["pairs"] == 20
    ids = ", ".join(row["id"] for row in mine[:3])
    assert warnings.splitlines() == [
        f"treesearch compare: warning: {runs['maj4']} and {mixed} share 20 of their problems (40 and 30): "
        "the runs table's accuracies are over different problems; the pair compares the shared ones",
        f"treesearch compare: warning: {runs['maj4']} and {mixed} give different gold answers to 3 shared "
        f"problems ({ids}): each run is graded against its own",
    ]
    assert compare(str(runs["maj4"]), str(runs["maj8"]))[1] == ""


def test_a_run_that_spent_nothing_is_plotted_on_a_linear_axis(runs: dict[str, Path], tmp_path: Path) -> None:
    """A log cost axis cannot show 0 tokens: a linear one, and one warning line (not
    matplotlib's); any format matplotlib writes, by the suffix; an unknown one is one line."""
    rows = list(read_output(runs["maj4"]).values())
    free = tmp_path / "free.jsonl"
    free.write_text("".join(json.dumps({**row, "usage": None}) + "\n" for row in rows))
    plot = tmp_path / "free.pdf"
    done = run_cli("compare", str(runs["maj4"]), str(free), "-o", str(plot))
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"treesearch compare: warning: {free} spent no tokens: the plot's cost axis is linear, not "
        "logarithmic",
        f"wrote {plot}",
    ]
    assert plot.read_bytes()[:5] == b"%PDF-"
    unknown = run_cli("compare", str(runs["maj4"]), str(free), "-o", str(tmp_path / "free.xyz"))
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.startswith(f"treesearch: error: cannot write {tmp_path / 'free.xyz'}: Format 'xyz'")
    assert unknown.stderr.strip().count("\n") == 0


def test_a_strategy_option_names_its_line(runs: dict[str, Path], tmp_path: Path) -> None:
    rows = list(read_output(runs["maj4"]).values())
    waves = tmp_path / "waves.jsonl"
    waves.write_text(
        "".join(json.dumps({**row, "config": {**row["config"], "wave": 2}}) + "\n" for row in rows)
    )
    found, warnings = compare(str(runs["maj4"]), str(waves), str(runs["weighted4"]))
    assert [point["line"] for point in found["points"]] == [
        "majority-vote (wave=8)",
        "majority-vote (wave=2)",
        "weighted-vote",
    ]
    assert warnings == ""


def test_flops_axis_and_the_plot(runs: dict[str, Path], tmp_path: Path) -> None:
    plot = tmp_path / "plots" / "compare.png"
    files = [str(runs[name]) for name in ("maj2", "maj4", "maj8", "weighted4")]
    done = run_cli("compare", *files, "--x", "flops", "-o", str(plot))
    assert done.returncode == 0, done.stderr
    assert "FLOPs per problem" in done.stdout.splitlines()[0]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    found, _ = compare(*files, "--x", "flops")
    rows = list(read_output(runs["maj4"]).values())
    assert found["points"][1]["cost"] == pytest.approx(sum(r["flops"]["total"] for r in rows) / len(rows))


def test_without_matplotlib_the_plot_is_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    blocked = tmp_path / "blocked" / "matplotlib"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    done = run_cli("compare", str(runs["maj2"]), str(runs["maj4"]), "-o", str(tmp_path / "p.png"),
                   env={"PYTHONPATH": str(blocked.parent)})  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "treesearch: error: compare -o needs matplotlib: pip install 'treesearch[plots]'"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["RUN"], "compare needs at least two runs"),
        (["RUN", "missing.jsonl"], "missing.jsonl: no such file"),
        (["RUN", "RUN", "-o", "FOLDER"], "is a folder; give the path of a file"),
        (["RUN", "NOFLOPS", "--x", "flops"], "records no FLOPs (run it with --model-params)"),
        (["RUN", "RUN", "--resamples", "5"], "argument --resamples: must be an integer from 100"),
    ],
)
def test_bad_input_is_one_line(runs: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    rows = list(read_output(runs["maj2"]).values())
    no_flops = tmp_path / "noflops.jsonl"
    no_flops.write_text("".join(json.dumps({**row, "flops": None}) + "\n" for row in rows))
    names = {"RUN": str(runs["maj2"]), "NOFLOPS": str(no_flops), "FOLDER": str(tmp_path)}
    done = run_cli("compare", *(names.get(arg, arg) for arg in args))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert message in done.stderr
