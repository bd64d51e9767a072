"""Problems and the JSONL files they come in.

A line is one JSON object with ``id``, ``question`` (or a ready ``prompt``) and an
optional gold ``answer``; any other keys are kept as metadata, where backends
such as the synthetic server find their own settings.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from treesearch.errors import ProblemFileError


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
        if "id" not in record:
            raise ValueError('missing "id"')
        question, prompt = record.get("question"), record.get("prompt")
        if not isinstance(question, str) and not isinstance(prompt, str):
            raise ValueError('needs a string "question" or "prompt"')
        answer = record.get("answer")
        known = {"id", "question", "prompt", "answer"}
        return cls(
            id=str(record["id"]),
            question=question if isinstance(question, str) else str(prompt),
            prompt=prompt if isinstance(prompt, str) else None,
            answer=None if answer is None else str(answer),
            metadata={k: v for k, v in record.items() if k not in known},
        )

    def to_record(self) -> dict[str, Any]:
        """The JSONL object ``from_record`` reads back as this problem."""
        record: dict[str, Any] = {"id": self.id, "question": self.question, "answer": self.answer}
        if self.prompt is not None:
            record["prompt"] = self.prompt
        return {**record, **self.metadata}


def read_problems(path: str | Path) -> Iterator[Problem]:
    """Yield the problems of a UTF-8 JSONL file (a byte-order mark is allowed), raising
    ProblemFileError with the line of a bad one."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ProblemFileError(str(path), 0, exc.strerror or str(exc)) from exc
    seen: dict[str, int] = {}
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
            try:
                problem = Problem.from_record(record)
            except ValueError as exc:
                raise ProblemFileError(str(path), number, str(exc)) from exc
            if problem.id in seen:
                reason = f"duplicate id {problem.id!r} (first on line {seen[problem.id]})"
                raise ProblemFileError(str(path), number, reason)
            seen[problem.id] = number
            yield problem


def load_problems(path: str | Path) -> list[Problem]:
    """All problems of a JSONL file, validated before any search starts."""
    problems = list(read_problems(path))
    if not problems:
        raise ProblemFileError(str(path), 0, "no problems in file")
    return problems
