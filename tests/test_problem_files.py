"""Benchmark files as they come: each format and preset read from small files written here in
the layouts of MATH-500, GSM8K and AIME; gold from a whole solution; bad fields and missing
extras as one line; a run with a preset against the synthetic server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from hypothesis import given
from hypothesis import strategies as st

from treesearch.cli.main import parser
from treesearch.cli.options import problem_fields, prompts_of
from treesearch.errors import ConfigError, ProblemFileError
from treesearch.problem_files import (
    PRESETS,
    STEP_BY_STEP_SYSTEM_PROMPT,
    STEP_BY_STEP_TEMPLATE,
    Fields,
    gold_from_solution,
)
from treesearch.problems import Problem, load_problems, read_problems

# The layouts of the datasets' cards: HuggingFaceH4/MATH-500, openai/gsm8k (main),
# AI-MO/aimo-validation-aime.
MATH500 = [
    {"problem": "Compute $\\frac{1}{4} + \\frac{1}{4}$.", "solution": "It is $\\boxed{\\frac{1}{2}}$.",
     "answer": "\\frac{1}{2}", "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    {"problem": "What is $2^{10}$?", "solution": "$2^{10} = \\boxed{1024}$.", "answer": "1024",
     "subject": "Algebra", "level": 2, "unique_id": "test/algebra/7.json"},
]  # fmt: skip
GSM8K = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"},
    {"question": "A farm has 1,000 cows and buys 234 more. How many cows?",
     "answer": "1,000 + 234 = 1,234\n#### 1,234"},
]  # fmt: skip
AIME = [
    {"id": 60, "problem": "Find the remainder when 2024 is divided by 1000.", "solution": "... $\\boxed{24}$",
     "answer": "24", "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_1"},
]  # fmt: skip


def parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def preset(name: str, path: Path, split: str | None = None) -> list[Any]:
    return load_problems(path, fields=PRESETS[name].fields, split=split)


def test_math500_parquet_keeps_level_and_subject(tmp_path: Path) -> None:
    first, second = preset("math500", parquet(tmp_path / "test.parquet", MATH500))
    assert (first.id, first.question, first.answer) == ("test/prealgebra/1.json", MATH500[0]["problem"],
                                                        "\\frac{1}{2}")  # fmt: skip
    assert first.metadata == {"solution": MATH500[0]["solution"], "subject": "Prealgebra", "level": 1}
    assert second.metadata["level"] == 2


def test_gsm8k_jsonl_takes_gold_after_the_hashes_and_ids_by_row(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in GSM8K), encoding="utf-8")
    problems = preset("gsm8k", path)
    assert [(p.id, p.answer) for p in problems] == [("row-0", "72"), ("row-1", "1234")]
    assert problems[0].question == GSM8K[0]["question"]
    assert problems[0].metadata == {}


def test_aime_ids_from_the_file_or_by_row(tmp_path: Path) -> None:
    (problem,) = preset("aime", parquet(tmp_path / "aime.parquet", AIME))
    assert (problem.id, problem.answer, problem.metadata["url"]) == ("60", "24", AIME[0]["url"])
    no_ids = [{"problem": "Find x.", "answer": "7"}, {"problem": "Find y.", "answer": "8"}]
    assert [p.id for p in preset("aime", parquet(tmp_path / "aime25.parquet", no_ids))] == ["row-0", "row-1"]


def test_a_json_list_or_an_object_holding_one(tmp_path: Path) -> None:
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(MATH500), encoding="utf-8")
    held = tmp_path / "held.json"
    held.write_text(json.dumps({"version": 1, "data": MATH500}), encoding="utf-8")
    assert preset("math500", listed) == preset("math500", held)
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"train": MATH500, "test": MATH500}), encoding="utf-8")
    with pytest.raises(ProblemFileError, match="exactly one list; this one holds lists: train, test"):
        preset("math500", two)


def test_csv_with_a_byte_order_mark_and_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    text = 'question,answer,level\r\n"Two lines,\nwith a comma?",5,3\r\nplain?,,1\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    first, second = load_problems(path)
    assert (first.id, first.question, first.answer, first.metadata) == (
        "row-0", "Two lines,\nwith a comma?", "5", {"level": "3"})  # fmt: skip
    assert (second.id, second.answer) == ("row-1", None)  # an empty cell is no gold
    path.write_text("id,question\na,q\n,r\n", encoding="utf-8")
    with pytest.raises(ProblemFileError, match=r'p.csv: row 1: missing "id"'):
        load_problems(path)
    path.write_text("question,answer\nq,1,extra\n", encoding="utf-8")
    with pytest.raises(ProblemFileError, match=r"p.csv: row 0: 3 cells under a header of 2"):
        load_problems(path)


def test_a_datasets_folder_and_its_splits(tmp_path: Path) -> None:
    datasets.Dataset.from_list(MATH500).save_to_disk(str(tmp_path / "one"))
    assert [p.id for p in preset("math500", tmp_path / "one")] == [r["unique_id"] for r in MATH500]
    with pytest.raises(ConfigError, match="holds one dataset, not splits"):
        preset("math500", tmp_path / "one", split="test")
    gsm8k = datasets.DatasetDict({"train": datasets.Dataset.from_list(GSM8K[:1]),
                                  "test": datasets.Dataset.from_list(GSM8K[1:])})  # fmt: skip
    gsm8k.save_to_disk(str(tmp_path / "gsm8k"))
    assert [p.answer for p in preset("gsm8k", tmp_path / "gsm8k")] == ["1234"]  # test by default
    assert [p.answer for p in preset("gsm8k", tmp_path / "gsm8k", split="train")] == ["72"]
    two = datasets.DatasetDict({"train": datasets.Dataset.from_list(GSM8K),
                                "validation": datasets.Dataset.from_list(GSM8K)})  # fmt: skip
    two.save_to_disk(str(tmp_path / "two"))
    with pytest.raises(ConfigError, match="holds splits train, validation: choose one with --split"):
        preset("gsm8k", tmp_path / "two")
    with pytest.raises(ConfigError, match="holds no split 'dev'; splits train, validation"):
        preset("gsm8k", tmp_path / "two", split="dev")


def test_duplicate_ids_name_both_rows(tmp_path: Path) -> None:
    path = parquet(tmp_path / "d.parquet", [MATH500[0], MATH500[1], MATH500[0]])
    with pytest.raises(ProblemFileError, match=r"d.parquet: row 2: duplicate id '.*' \(first on row 0\)"):
        preset("math500", path)


@pytest.mark.parametrize(
    ("solution", "gold"),
    [
        ("So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("First \\boxed{3}. That was wrong; in fact the answer is \\boxed{4}.", "4"),
        ("Hence \\fbox{7}", "7"),
        ("1,000 + 234 = 1,234\n#### 1,234", "1234"),
        ("#### -5", "-5"),
        ("no conclusion here", None),
        ("\\boxed{\\dfrac{\\sqrt{3}}{2}}", "\\dfrac{\\sqrt{3}}{2}"),
        # Only a box or the hashes state a gold: prose that states an answer is no gold.
        ("So 3 + 9 = 12.\nThe answer is 12", None),
        ("Final Answer: The final answer is 5. I hope it is correct.", None),
        ("\\boxed{}", None),
        ("\\boxed{12", None),
    ],
)
def test_gold_from_a_solution(solution: str, gold: str | None) -> None:
    assert gold_from_solution(solution) == gold


@given(st.text())
def test_gold_from_any_text_is_none_or_text(text: str) -> None:
    gold = gold_from_solution(text)
    assert gold is None or isinstance(gold, str)


def test_a_solution_without_an_answer_names_its_row(tmp_path: Path) -> None:
    path = parquet(tmp_path / "g.parquet", [*GSM8K, {"question": "q", "answer": "no hashes"}])
    with pytest.raises(ProblemFileError, match=r"g.parquet: row 2: the solution in \"answer\" concludes"):
        preset("gsm8k", path)


def test_a_bad_field_name_is_one_line_naming_the_fields(tmp_path: Path) -> None:
    rows = [{key: value for key, value in row.items() if key != "solution"} for row in MATH500]
    path = parquet(tmp_path / "x.parquet", rows)
    done = run_cli("run", "--base-url", "http://127.0.0.1:9/v1", "--problems", str(path),
                   "--question-field", "problme", "--output", str(tmp_path / "o.jsonl"))  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (f"treesearch: error: --question-field 'problme' is not a column of {path}; "
                           "it has: problem, answer, subject, level, unique_id\n")  # fmt: skip
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text(json.dumps(MATH500[0]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="--id-field 'uid' is not a field of the first record of"):
        load_problems(jsonl, fields=Fields(id="uid", question="problem"))
    with pytest.raises(ConfigError, match=r"--question-field 'question' \(the default\) is not a column"):
        load_problems(path)


@pytest.mark.parametrize(("module", "extra", "suffix"), [("pyarrow", "parquet", ".parquet"),
                                                         ("datasets", "datasets", "")])  # fmt: skip
def test_a_missing_extra_is_one_line(tmp_path: Path, module: str, extra: str, suffix: str) -> None:
    path = tmp_path / f"p{suffix}"
    if suffix:
        parquet(path, MATH500)
    else:
        datasets.Dataset.from_list(MATH500).save_to_disk(str(path))
    command = ["run", "--base-url", "http://127.0.0.1:9/v1", "--problems", str(path), "--preset", "math500",
               "--output", "o.jsonl"]  # fmt: skip
    script = (f"import sys; sys.modules[{module!r}] = None; from treesearch.cli.main import main; "
              f"sys.exit(main({command!r}))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    needs = f"reading {path} needs {module}: pip install 'treesearch[{extra}]'"
    assert done.stderr == f"treesearch: error: {needs}\n"


def test_a_preset_sets_fields_and_prompt_and_options_override_it() -> None:
    args = parser().parse_args(["run", "--problems", "p.parquet", "--output", "o.jsonl", "--preset", "gsm8k",
                                "--answer-field", "solution", "--system-prompt", "Be brief.\\n"])  # fmt: skip
    assert problem_fields(args) == Fields(question="question", answer="solution", gold_from="solution")
    assert prompts_of(args) == {"system_prompt": "Be brief.\n", "prompt_template": STEP_BY_STEP_TEMPLATE}
    plain = parser().parse_args(["run", "--problems", "p.jsonl", "--output", "o.jsonl"])
    assert (problem_fields(plain), prompts_of(plain)) == (Fields(), {})
    # The template is the system prompt's words with the question after them.
    assert STEP_BY_STEP_TEMPLATE.format(question="Q?").startswith(STEP_BY_STEP_SYSTEM_PROMPT)
    assert "\\boxed{answer}" in STEP_BY_STEP_SYSTEM_PROMPT


def test_run_with_the_gsm8k_preset_on_parquet(fake_server: Callable[..., str], tmp_path: Path) -> None:
    # The synthetic server knows its task by the [task:ID] marker in the question; "sure" tasks
    # answer their gold, 10 + index, every time.
    rows = [{"question": f"How many apples? [task:sure{i}]", "answer": f"Count them.\n#### {10 + i}",
             "level": i} for i in range(3)]  # fmt: skip
    path, output = parquet(tmp_path / "gsm8k.parquet", rows), tmp_path / "out.jsonl"
    done = run_cli("run", "--base-url", fake_server(), "--model", "fake", "--problems", str(path),
                   "--preset", "gsm8k", "--output", str(output), "--n", "2", "--seed", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = sorted((json.loads(line) for line in output.read_text().splitlines()), key=lambda r: r["id"])
    assert [(r["id"], r["gold"], r["correct"]) for r in records] == [
        ("row-0", "10", True), ("row-1", "11", True), ("row-2", "12", True)]  # fmt: skip
    assert records[0]["config"]["policy"]["prompt_template"] == STEP_BY_STEP_TEMPLATE
    report = run_cli("report", str(output), "--problems", str(path), "--preset", "gsm8k", "--by", "level",
                     "--format", "csv")  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert len(report.stdout.strip().splitlines()) == 1 + 3  # a header and a line per level


def test_read_problems_streams(tmp_path: Path) -> None:
    path = parquet(tmp_path / "g.parquet", [*GSM8K, {"question": "q", "answer": "no hashes"}])
    problems = read_problems(path, fields=PRESETS["gsm8k"].fields)
    assert next(problems).answer == "72"  # the bad third row is not read yet


def test_a_problem_whose_metadata_shadows_its_fields_reads_back_as_itself(tmp_path: Path) -> None:
    # MATH-500 with the gold from its solution: the file's own "answer" column is metadata, and
    # a record sent to a Ray task must still carry the gold from the solution.
    rows = [{**row, "answer": "a column named answer", "prompt": "a column named prompt"} for row in MATH500]
    fields = Fields(id="unique_id", question="problem", answer="solution", gold_from="solution")
    problem = load_problems(parquet(tmp_path / "m.parquet", rows), fields=fields)[1]
    assert (problem.answer, problem.metadata["answer"]) == ("1024", "a column named answer")
    again = Problem.from_record(problem.to_record())
    assert (again.id, again.question, again.prompt, again.answer) == (
        problem.id, problem.question, None, "1024")  # fmt: skip


def test_split_is_for_datasets_folders_and_missing_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--split is for a folder saved by datasets"):
        load_problems(parquet(tmp_path / "p.parquet", MATH500), split="test")
    with pytest.raises(ProblemFileError, match=r"absent\.parquet:0: No such file"):
        load_problems(tmp_path / "absent.parquet")


def test_two_columns_of_one_name_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("id,question,question\n1,a,b\n", encoding="utf-8")
    with pytest.raises(ProblemFileError, match=r"p.csv:0: two columns are named 'question': rename one"):
        load_problems(path)
    table = pa.Table.from_arrays([pa.array(["q"]), pa.array(["1"]), pa.array(["2"])],
                                 names=["question", "answer", "answer"])  # fmt: skip
    pq.write_table(table, tmp_path / "p.parquet")
    with pytest.raises(ProblemFileError, match=r"p.parquet:0: two columns are named 'answer'"):
        load_problems(tmp_path / "p.parquet")


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("p.jsonl", '{"id": "a", "question": "q"}\n{"id": "b", "question": ""}\n', "p.jsonl:2"),
        ("p.jsonl", '{"id": "a", "question": " \\n "}\n', "p.jsonl:1"),
        ("p.csv", "id,question\na,q\nb,\n", "p.csv: row 1"),
        ("p.json", '[{"problem": ""}]', "p.json: row 0"),
    ],
)
def test_an_empty_question_names_its_row(tmp_path: Path, name: str, text: str, where: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    fields = Fields(question="problem") if name.endswith(".json") else Fields()
    with pytest.raises(ProblemFileError, match=f'{where}: an empty "(question|problem)"'):
        load_problems(path, fields=fields)


def test_an_empty_question_with_a_ready_prompt_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "question": "", "prompt": "Q: 1 + 1?\\nA:"}\n', encoding="utf-8")
    (problem,) = load_problems(path)
    assert (problem.question, problem.prompt) == ("", "Q: 1 + 1?\nA:")


def test_nan_is_a_missing_value(tmp_path: Path) -> None:
    """pandas writes an empty cell as NaN: an answer of NaN is no gold, not the gold "nan"."""
    rows = [{"id": "a", "question": "q", "answer": 1.0, "level": 2.0},
            {"id": "b", "question": "r", "answer": float("nan"), "level": float("nan")}]  # fmt: skip
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")  # bare NaN
    for path in (jsonl, parquet(tmp_path / "p.parquet", rows)):
        first, second = load_problems(path)
        assert (first.answer, second.answer, second.metadata) == ("1.0", None, {"level": None}), path
    gold_from = tmp_path / "g.jsonl"
    gold_from.write_text('{"id": "a", "question": "q", "answer": NaN}\n', encoding="utf-8")
    with pytest.raises(ProblemFileError, match=r'g.jsonl:1: no solution in "answer"'):
        load_problems(gold_from, fields=PRESETS["gsm8k"].fields)
