"""Benchmark files as they come: JSONL, JSON, CSV, Parquet and a folder saved by Hugging Face
``datasets``' ``save_to_disk``; which of their fields hold a problem's id, question and gold
(``Fields``); and presets for MATH-500, GSM8K and AIME, which name those fields and the prompt.

A reader yields each record as a dict with its place in the file (a line of JSONL, a row of
the others, counted from 0 as the ids made from rows are), streaming where the format allows:
JSONL and CSV line by line, Parquet in batches, a ``datasets`` folder from its memory-mapped
Arrow files; a JSON file is read whole. ``treesearch.problems`` turns the records into problems.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from treesearch.answers.extract import extract_answer
from treesearch.errors import ConfigError, ProblemFileError

GoldFrom = Literal["answer", "solution"]
_SUFFIXES = {".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
# The two ways a solution states its gold, given to extract_answer as patterns so that its other
# rules (prose such as "The answer is 12", Minerva's "final answer is") take nothing: GSM8K's
# closing "#### 42", and a \boxed{} or \fbox{}, its braces balanced up to eight deep.
_HASHES = re.compile(r"(?:^|\n)####[ \t]*(?P<answer>[^\n]+?)\s*$")
_BRACED = r"[^{}]*"
for _ in range(8):
    _BRACED = rf"(?:[^{{}}]|\{{{_BRACED}\}})*"
_BOXED = re.compile(rf"\\(?:boxed|fbox)\s*\{{(?P<answer>{_BRACED})\}}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Fields:
    """Which fields of a record hold a problem's id, question and gold answer, each None for
    its default: "id" (ids from row numbers, "row-0", "row-1", ..., when the file has no
    such field), "question" (or a ready "prompt", sent as is), "answer" (optional).
    ``gold_from="solution"``: the answer field holds a whole solution and the gold is what it
    concludes (``gold_from_solution``). A name given here must be in the file."""

    id: str | None = None
    question: str | None = None
    answer: str | None = None
    gold_from: GoldFrom = "answer"


@dataclass(frozen=True, kw_only=True, slots=True)
class Preset:
    """A benchmark's layout (its fields) and the prompt its runs are usually asked with."""

    fields: Fields
    system_prompt: str
    prompt_template: str
    about: str


# The system prompt of search-and-learn (huggingface/search-and-learn, src/sal/config.py,
# Config.system_prompt; Beeching, Tunstall & Rush, "Scaling test-time compute with open
# models", 2024), which its_hub reuses as SAL_STEP_BY_STEP_SYSTEM_PROMPT
# (Red-Hat-AI-Innovation-Team/its_hub, its_hub/utils.py) for MATH-500 and AIME 2024: steps
# separated by blank lines (our default step delimiter) and the answer in \boxed{}.
STEP_BY_STEP_SYSTEM_PROMPT = (
    "Solve the following math problem efficiently and clearly:\n\n"
    "- For simple problems (2 steps or fewer):\nProvide a concise solution with minimal explanation.\n\n"
    "- For complex problems (3 steps or more):\nUse this step-by-step format:\n\n"
    "## Step 1: [Concise description]\n[Brief explanation and calculations]\n\n"
    "## Step 2: [Concise description]\n[Brief explanation and calculations]\n\n"
    "...\n\n"
    "Regardless of the approach, always conclude with:\n\n"
    "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct.\n\n"
    "Where [answer] is just the final number or expression that solves the problem."
)
# The same words for --api completions, which sends one raw prompt: the instructions, then
# the problem (braces doubled for str.format).
STEP_BY_STEP_TEMPLATE = (
    STEP_BY_STEP_SYSTEM_PROMPT.replace("{", "{{").replace("}", "}}")
    + "\n\nProblem: {question}\n\nSolution:\n"
)


def _preset(about: str, **fields: Any) -> Preset:
    return Preset(fields=Fields(**fields), system_prompt=STEP_BY_STEP_SYSTEM_PROMPT,
                  prompt_template=STEP_BY_STEP_TEMPLATE, about=about)  # fmt: skip


PRESETS: dict[str, Preset] = {  # layouts checked against the datasets' cards on Hugging Face
    # HuggingFaceH4/MATH-500: problem, solution, answer, subject, level, unique_id (test split).
    "math500": _preset("problem, answer, id unique_id", id="unique_id", question="problem", answer="answer"),
    # openai/gsm8k: question, answer (the worked solution closing with "#### 72"); no ids.
    "gsm8k": _preset("question, the gold after #### in answer", question="question", gold_from="solution"),
    # AI-MO/aimo-validation-aime and HuggingFaceH4/aime_2024: id, problem, solution, answer, url
    # (year); the 2025 sets people use keep problem and answer, ids by row where they have none.
    "aime": _preset("problem, answer", question="problem", answer="answer"),
}


def gold_from_solution(text: str) -> str | None:
    """What a whole solution concludes, or None: the number after GSM8K's closing ``#### ``
    (thousands commas dropped: "#### 1,234" is 1234), else the last ``\\boxed{}`` or
    ``\\fbox{}`` (braces balanced), and nothing else: a gold is stated, never guessed."""
    answer = extract_answer(text, _HASHES)
    if answer is not None:
        return answer.replace(",", "") if _THOUSANDS.fullmatch(answer) else answer
    return extract_answer(text, _BOXED)


@dataclass(frozen=True, kw_only=True, slots=True)
class Records:
    """A file's records, each with its place: ``unit`` says what the place counts (a "line"
    of JSONL, from 1; a "row" of the others, from 0); ``columns`` are the fields every record
    has when the format declares them (None for JSONL and JSON, whose records may differ)."""

    path: str
    unit: Literal["line", "row"]
    columns: list[str] | None
    records: Iterator[tuple[int, dict[str, Any]]]

    def error(self, place: int, reason: str) -> ProblemFileError:
        """A bad record, named by its line or row."""
        return ProblemFileError(self.path, place, reason, unit=self.unit)


def file_format(path: Path) -> str:
    """The format of ``path``: a folder is a ``datasets`` one, else by its suffix; anything
    else (.jsonl, .ndjson, none) is JSONL, as problems files have always been."""
    if path.is_dir():
        return "datasets"
    return _SUFFIXES.get(path.suffix.lower(), "jsonl")


def read_records(path: str | Path, *, split: str | None = None) -> Records:
    """The records of a problems file in any format ``file_format`` tells; ``split`` picks
    one split of a ``datasets`` folder that holds several (a DatasetDict). A NaN is read as
    None: it is pandas' missing value (a DataFrame's empty cell, written to Parquet or JSON),
    so an answer of NaN is no gold, not the gold "nan"."""
    path = Path(path)
    kind = file_format(path)
    if split is not None and kind != "datasets":
        raise ConfigError(f"--split is for a folder saved by datasets; {path} is a {kind} file")
    if kind == "datasets":
        source = _datasets(path, split)
    else:
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise ProblemFileError(str(path), 0, exc.strerror or str(exc)) from exc
        try:  # the records' iterator closes the file once read
            source = _READERS[kind](path, handle)
        except BaseException:
            handle.close()
            raise
    return dataclasses.replace(source, records=_without_nan(source.records))


def _without_nan(records: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, dict[str, Any]]]:
    for place, record in records:
        if any(isinstance(value, float) and math.isnan(value) for value in record.values()):
            record = {key: None if isinstance(value, float) and math.isnan(value) else value
                      for key, value in record.items()}  # fmt: skip
        yield place, record


def _jsonl(path: Path, handle: BinaryIO) -> Records:
    """A UTF-8 JSONL file's objects by line (a byte-order mark is allowed, blank lines skipped)."""

    def lines() -> Iterator[tuple[int, dict[str, Any]]]:
        with handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.removeprefix(codecs.BOM_UTF8 if number == 1 else b"").decode("utf-8")
                except UnicodeDecodeError as exc:
                    reason = f"not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})"
                    raise ProblemFileError(str(path), number, reason) from None
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ProblemFileError(str(path), number, f"not JSON ({exc.msg})") from exc
                if not isinstance(record, dict):
                    raise ProblemFileError(str(path), number, "not a JSON object")
                yield number, record

    return Records(path=str(path), unit="line", columns=None, records=lines())


def _json(path: Path, handle: BinaryIO) -> Records:
    """A JSON file's problems: a list of objects, or an object holding exactly one list (as
    ``{"data": [...]}``, ``{"rows": [...]}``); read whole, JSON has no records to stream."""
    with handle:
        try:
            document = json.loads(handle.read().decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise ProblemFileError(str(path), 0, f"not UTF-8 (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise ProblemFileError(str(path), exc.lineno, f"not JSON ({exc.msg})") from None
    if isinstance(document, dict):
        lists = [key for key, value in document.items() if isinstance(value, list)]
        if len(lists) != 1:
            held = ", ".join(lists) or "none"
            raise ProblemFileError(str(path), 0, "a JSON problems file is a list of objects, or an object "
                                   f"holding exactly one list; this one holds lists: {held}")  # fmt: skip
        document = document[lists[0]]
    if not isinstance(document, list):
        raise ProblemFileError(str(path), 0, "a JSON problems file is a list of objects")
    for index, record in enumerate(document):
        if not isinstance(record, dict):
            raise ProblemFileError(str(path), index, "not a JSON object", unit="row")
    return Records(path=str(path), unit="row", columns=None, records=enumerate(document))


def _csv(path: Path, handle: BinaryIO) -> Records:
    """A CSV file with a header row (UTF-8, a byte-order mark allowed, quoted cells may hold
    newlines); every cell is text."""
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader, None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ProblemFileError(str(path), 1, f"not a UTF-8 CSV header ({exc})") from None
    if header is None:
        raise ProblemFileError(str(path), 0, "no problems in file")

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        with text:
            index = 0
            while True:
                try:
                    cells = next(reader, None)
                except (UnicodeDecodeError, csv.Error) as exc:
                    raise ProblemFileError(str(path), index, f"not UTF-8 CSV ({exc})", unit="row") from None
                if cells is None:
                    return
                if not any(cells):  # a blank line
                    continue
                if len(cells) != len(header):
                    reason = f"{len(cells)} cells under a header of {len(header)}"
                    raise ProblemFileError(str(path), index, reason, unit="row")
                yield index, dict(zip(header, cells, strict=True))
                index += 1

    return Records(path=str(path), unit="row", columns=_columns(path, header), records=rows())


def _parquet(path: Path, handle: BinaryIO) -> Records:
    """A Parquet file, read in batches of rows."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"reading {path} needs pyarrow: pip install 'treesearch[parquet]'") from None
    try:
        table = pq.ParquetFile(handle)
    except Exception as exc:  # pyarrow's errors have no common base but Exception
        raise ProblemFileError(str(path), 0, f"not a Parquet file ({exc})") from None

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        with handle:
            index = 0
            for batch in table.iter_batches(batch_size=1024):
                for record in batch.to_pylist():
                    yield index, record
                    index += 1

    columns = _columns(path, table.schema_arrow.names)
    return Records(path=str(path), unit="row", columns=columns, records=rows())


def _columns(path: Path, names: list[str]) -> list[str]:
    """A file's column names, refused when two are the same: a record keeps only one of them."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ProblemFileError(str(path), 0, f"two columns are named {name!r}: rename one")
        seen.add(name)
    return list(names)


_READERS: dict[str, Callable[[Path, BinaryIO], Records]] = {
    "jsonl": _jsonl,
    "json": _json,
    "csv": _csv,
    "parquet": _parquet,
}


def _datasets(path: Path, split: str | None) -> Records:
    """A folder saved by ``datasets``' ``save_to_disk``: a Dataset, or one split of a
    DatasetDict (``split``; else "test" when it has one, else its only split)."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"reading {path} needs datasets: pip install 'treesearch[datasets]'") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise ProblemFileError(
            str(path), 0, f"not a folder saved by datasets' save_to_disk ({exc})"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        chosen = split or ("test" if "test" in splits else splits[0] if len(splits) == 1 else None)
        if chosen not in splits:
            asked = "" if split is None else f"no split {split!r}; "
            raise ConfigError(f"{path} holds {asked}splits {', '.join(splits)}: choose one with --split")
        loaded = loaded[chosen]
    elif split is not None:
        raise ConfigError(f"--split {split}: {path} holds one dataset, not splits")
    dataset = loaded
    return Records(path=str(path), unit="row", columns=list(dataset.column_names),
                   records=enumerate(dataset))  # fmt: skip


def check_fields(source: Records, fields: Fields, first: dict[str, Any]) -> None:
    """Refuse, on one line naming the fields the file has, a field ``fields`` names that the
    file lacks: one of its columns, or of its first record where the format declares no
    columns (JSONL, JSON). A default the file lacks is refused where it is needed and the
    columns are declared: the question (or a ready prompt); and the solution to take the gold
    from, in any format."""
    have = source.columns if source.columns is not None else list(first)
    where = "a column of" if source.columns is not None else "a field of the first record of"

    def refuse(flag: str, name: str, default: str = "") -> ConfigError:
        listed = ", ".join(have) or "no fields"
        return ConfigError(f"{flag} {name!r}{default} is not {where} {source.path}; it has: {listed}")

    named = (
        ("--id-field", fields.id),
        ("--question-field", fields.question),
        ("--answer-field", fields.answer),
    )
    for flag, name in named:
        if name is not None and name not in have:
            raise refuse(flag, name)
    if source.columns is not None and fields.question is None and not {"question", "prompt"} & set(have):
        raise refuse("--question-field", "question", " (the default)")
    if fields.gold_from == "solution" and fields.answer is None and "answer" not in have:
        raise refuse("--answer-field", "answer", " (the default)")
