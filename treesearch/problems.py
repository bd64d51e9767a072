"""Problems and the files they come in.

A record (a line of JSONL, a row of the other formats ``treesearch.problem_files`` reads)
holds ``id``, ``question`` (or a ready ``prompt``) and an optional gold ``answer``, or
fields of other names that ``Fields`` maps to them; any other fields are kept as metadata,
where backends such as the synthetic server find their own settings and ``report --by``
finds a problem's level or subject.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from treesearch.errors import ProblemFileError
from treesearch.problem_files import Fields, check_fields, gold_from_solution, read_records

DEFAULT_FIELDS = Fields()


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """One question to search on. ``prompt``, when given, is sent as is instead of a template.
    ``history`` is the conversation before the question, as chat messages (``role`` and
    ``content``: system messages and earlier turns), for policies that speak chat; serve
    fills it from a request's messages."""

    id: str
    question: str
    prompt: str | None = None
    answer: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[Mapping[str, str], ...] = ()

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Problem:
        """Build a problem from a decoded JSONL object; raise ValueError naming what is wrong."""
        return problem_from(record, Fields())

    def to_record(self) -> dict[str, Any]:
        """The JSONL object ``from_record`` reads back as this problem (a field of the metadata
        named like one of the problem's own, as the "answer" column of a file whose gold came
        from its solution, gives way to it)."""
        record: dict[str, Any] = {"id": self.id, "question": self.question, "answer": self.answer}
        if self.prompt is not None:
            record["prompt"] = self.prompt
        return {**{k: v for k, v in self.metadata.items() if k != "prompt"}, **record}


def problem_from(record: Mapping[str, Any], fields: Fields, row_id: str | None = None) -> Problem:
    """The problem in ``record``, its fields named by ``fields`` (``row_id``: the id when the
    file has none), every other field kept as metadata; ValueError naming what is wrong."""
    id_name, answer_name = fields.id or "id", fields.answer or "answer"
    used = {answer_name} | (set() if row_id is not None else {id_name})
    if row_id is None and record.get(id_name) in (None, ""):  # an empty CSV cell is no id
        raise ValueError(f"missing {json.dumps(id_name)}")
    if fields.question is None:  # "question", or a ready "prompt" (sent as is)
        question, prompt = record.get("question"), record.get("prompt")
        prompt = prompt if isinstance(prompt, str) else None
        question = question if isinstance(question, str) else prompt
        if question is None:
            raise ValueError('needs a string "question" or "prompt"')
        used |= {"question", "prompt"}
    else:
        question, prompt = record.get(fields.question), None
        if not isinstance(question, str):
            raise ValueError(f"needs a string {json.dumps(fields.question)}")
        used.add(fields.question)
    if not (prompt or question).strip():  # an empty CSV cell, say: nothing to ask
        raise ValueError(f"an empty {json.dumps(fields.question or 'question')}")
    gold = record.get(answer_name)
    gold = None if gold is None or gold == "" else str(gold)
    if fields.gold_from == "solution":
        if gold is None:
            raise ValueError(f"no solution in {json.dumps(answer_name)} to take the gold from")
        gold = gold_from_solution(gold)
        if gold is None:
            raise ValueError(
                f"the solution in {json.dumps(answer_name)} concludes with no \\boxed{{}} or ####"
            )
    return Problem(
        id=row_id if row_id is not None else str(record[id_name]),
        question=question,
        prompt=prompt,
        answer=gold,
        metadata={key: value for key, value in record.items() if key not in used},
    )


def read_problems(
    path: str | Path, *, fields: Fields = DEFAULT_FIELDS, split: str | None = None
) -> Iterator[Problem]:
    """Yield the problems of a problems file, one at a time: JSONL (UTF-8, a byte-order mark
    allowed), JSON, CSV, Parquet or a ``datasets`` folder (``split``: which of its splits),
    its fields named by ``fields``. A field ``fields`` names that the file lacks is a
    ConfigError naming the fields it has; a bad record is a ProblemFileError naming its line
    or row. Ids are unique; a file whose first record has no "id" (and ``fields`` names no
    id field) gets ids from row numbers: "row-0", "row-1", ..., stable for a given file."""
    source = read_records(path, split=split)
    first = next(source.records, None)
    if first is None:
        return
    check_fields(source, fields, first[1])
    by_row = fields.id is None and "id" not in (source.columns or first[1])
    seen: dict[str, int] = {}
    for index, (place, record) in enumerate(itertools.chain([first], source.records)):
        try:
            problem = problem_from(record, fields, f"row-{index}" if by_row else None)
        except ValueError as exc:
            raise source.error(place, str(exc)) from None
        if problem.id in seen:
            reason = f"duplicate id {problem.id!r} (first on {source.unit} {seen[problem.id]})"
            raise source.error(place, reason)
        seen[problem.id] = place
        yield problem


def load_problems(
    path: str | Path, *, fields: Fields = DEFAULT_FIELDS, split: str | None = None
) -> list[Problem]:
    """All problems of a problems file (``read_problems``), validated before any search starts."""
    problems = list(read_problems(path, fields=fields, split=split))
    if not problems:
        raise ProblemFileError(str(path), 0, "no problems in file")
    return problems
