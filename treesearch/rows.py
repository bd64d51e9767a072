"""Reading the JSONL files treesearch writes: results, label rows and their summaries.

A file written a line per finished problem may end in a line a crash cut short;
such lines are skipped (those problems simply run again), unless the file is a
user's input, where a bad line is an error naming it. A file that is not UTF-8 is
never one of ours: one line says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from treesearch.errors import ConfigError, ProblemFileError


def iter_rows(path: str | Path, key: str, what: str, *, strict: bool = False) -> Iterator[dict[str, Any]]:
    """The JSON objects with ``key`` in the file at ``path`` (none if it does not exist).
    ``what`` names the kind of file in errors ("results"); ``strict`` makes a line that is
    not such an object a ProblemFileError instead of skipping it."""
    path = Path(path)
    if not path.exists():
        return
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    record = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise ConfigError(f"{path}:{number}: not UTF-8; is it a {what} file?") from None
                except json.JSONDecodeError as exc:
                    if strict and raw.strip():
                        reason = f"not JSON ({exc.msg}); is it a {what} file?"
                        raise ProblemFileError(str(path), number, reason) from None
                    continue
                if isinstance(record, dict) and key in record:
                    yield record
                elif strict:
                    raise ProblemFileError(
                        str(path), number, f'not a {what} row (a JSON object with "{key}")'
                    )
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
