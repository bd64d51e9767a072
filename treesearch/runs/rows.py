"""The JSONL files treesearch writes (results, label rows and their summaries): reading
them, checking a rerun continues the same run, rewriting and appending.

A file written a line per finished problem may end in a line a crash cut short;
such lines are skipped (those problems simply run again), unless the file is a
user's input, where a bad line is an error naming it. A file that is not UTF-8 is
never one of ours: one line says so.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from treesearch.errors import ConfigError, ProblemFileError


def iter_rows(path: str | Path, key: str, what: str, *, strict: bool = False) -> Iterator[dict[str, Any]]:
    """The JSON objects with ``key`` in the file at ``path`` (none if it does not exist).
    ``what`` names the kind of file in errors ("results"); ``strict`` makes a line that is
    not such an object a ProblemFileError instead of skipping it, all but an unfinished last
    line (``unfinished_last_line``), which a crash leaves and a rerun replaces."""
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
                    if strict and raw.strip() and raw.endswith(b"\n"):
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


def unfinished_last_line(path: str | Path) -> int | None:
    """The number of the file's last line when a crash cut it short: not ended by a newline
    and not JSON (a run writes whole lines, each with its newline); None otherwise."""
    data = Path(path).read_bytes()
    if not data or data.endswith(b"\n"):
        return None
    last = data.rsplit(b"\n", 1)[-1]
    try:
        json.loads(last.decode("utf-8", errors="replace"))
    except json.JSONDecodeError:
        return data.count(b"\n") + 1
    return None


def check_same_run(
    path: Path, recorded: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any], what: str = "rows"
) -> None:
    """Refuse to add to a file whose rows were written with another configuration than
    ``settings`` (a run's fingerprint), naming what differs. A setting a row lacks (written
    before treesearch had it) counts as its default."""
    for row in recorded.values():
        theirs = row.get("config")
        if theirs is None:
            raise ConfigError(
                f"{path} holds {what} without a configuration (written before treesearch recorded"
                " one); write to a new --output, or --force-resume"
            )
        defaults = _default_settings()
        differ = {
            key: theirs.get(key, defaults.get(key))
            for key in settings.keys() | theirs.keys()
            if settings.get(key) != theirs.get(key, defaults.get(key))
        }
        if differ:
            shown = ", ".join(
                f"{key}: {json.dumps(there)} there, {json.dumps(settings.get(key))} now"
                for key, there in sorted(differ.items())
            )
            raise ConfigError(
                f"{path} holds {what} of another configuration ({shown}); write to a new --output,"
                " or --force-resume"
            )


@functools.cache
def _default_settings() -> dict[str, Any]:
    from treesearch.engine.config import SearchConfig

    settings: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(SearchConfig())))
    return settings


def drop_rows(path: Path, key: str, ids: set[str]) -> None:
    """Rewrite a JSONL file without the rows whose ``key`` is in ``ids`` (and without
    half-written lines); atomically, so a crash leaves the old file or the new one."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and str(row.get(key)) not in ids:
            kept.append(line + "\n")
    partial = path.with_name(path.name + f".part-{os.getpid()}")
    partial.write_text("".join(kept), encoding="utf-8")
    partial.replace(path)


def open_append(path: Path) -> TextIO:
    """An append handle (its folder made) that first ends a line a crash may have left
    unfinished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    unfinished = False
    if path.exists() and path.stat().st_size:
        with path.open("rb") as tail:
            tail.seek(-1, 2)
            unfinished = tail.read(1) != b"\n"
    handle = path.open("a", encoding="utf-8")
    if unfinished:
        handle.write("\n")
    return handle
