"""Reading problems files: good lines, and bad ones named by line."""

from __future__ import annotations

from pathlib import Path

import pytest

from treesearch import Problem, ProblemFileError, load_problems


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    return path


def test_question_prompt_answer_and_metadata(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"id": 1, "question": "2+2?", "answer": 4, "level": 3}\n\n{"id": "b", "prompt": "Q: 1+1\\nA:"}\n',
    )
    first, second = load_problems(path)
    assert (first.id, first.question, first.answer, first.prompt) == ("1", "2+2?", "4", None)
    assert first.metadata == {"level": 3}
    assert second.prompt == "Q: 1+1\nA:"
    assert second.answer is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": 1, "question": "a"}\n[1, 2]\n', "p.jsonl:2: not a JSON object"),
        ('{"id": 1, "question": "a"}\n{"question": "b"}\n', 'p.jsonl:2: missing "id"'),
        ('{"id": 1}\n', 'p.jsonl:1: needs a string "question" or "prompt"'),
        (
            '{"id": 1, "question": "a"}\n\n{"id": 2, "question": "b"}\n{"id": 1, "question": "c"}\n',
            "p.jsonl:4: duplicate id '1' \\(first on line 1\\)",
        ),
        ("", "no problems in file"),
    ],
)
def test_bad_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ProblemFileError, match=message.replace("[", "\\[")):
        load_problems(write(tmp_path, text))


def test_a_byte_order_mark_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": 1, "question": "caf\xc3\xa9?"}\r\n{"id": 2, "question": "b"}\r\n')
    first, second = load_problems(path)
    assert (first.id, first.question, second.id) == ("1", "café?", "2")


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": 1, "question": "a"}\n{"id": 2, "question": "caf\xe9"}\n')
    with pytest.raises(ProblemFileError) as raised:
        load_problems(path)
    assert (raised.value.line, raised.value.reason) == (2, "not UTF-8 (byte 0xe9 at column 27)")


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProblemFileError, match="No such file"):
        load_problems(tmp_path / "absent.jsonl")


def test_a_problem_reads_back_from_its_record() -> None:
    problem = Problem(id="p1", question="Q: 1 + 2", prompt="few-shot\nQ: 1 + 2\n", answer="3",
                      metadata={"fake": {"steps": 2}})  # fmt: skip
    assert Problem.from_record(problem.to_record()) == problem
    bare = Problem(id="p2", question="Q: 3 + 4")
    assert Problem.from_record(bare.to_record()) == bare
