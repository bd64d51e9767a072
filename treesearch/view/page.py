"""``treesearch view``: a run's rows and search trees as one self-contained HTML page.

The page is ``assets/view.html`` with the script (``view.js``), the style (``view.css``)
and the data inlined: it opens from disk with no network (its Content-Security-Policy
forbids any fetch). The data is every problem's row and tree, so the page weighs about
what the trees folder does. Text in it (steps, answers, questions) comes from a model
and may hold anything: it is embedded as JSON with ``<``, ``>``, ``&`` and the JavaScript
line separators escaped, so nothing in it can close the script element, and the script
shows it with ``textContent``, never as HTML.

A run's trees are found as ``run --trees DIR`` wrote them: ``DIR/ID.json``, with ``DIR``
the ``trees`` folder beside the rows unless given.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from statistics import fmean
from typing import Any

from treesearch.errors import ConfigError
from treesearch.runs.rows import iter_rows
from treesearch.runs.runner import tree_path


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """One problem as the page shows it: its row (None for a tree file without one), the
    nodes its chosen answer came from, and its nodes in id (arrival) order, or a note saying
    why there are none."""

    id: str
    row: dict[str, Any] | None
    chosen: list[int]
    nodes: list[dict[str, Any]]
    note: str | None = None


def tree_file(path: Path) -> bool:
    """Whether ``path`` holds one search tree (node-link JSON) rather than a run's rows."""
    try:
        with path.open("rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "nodes" in data and "id" not in data


def load_tree(path: Path, row: dict[str, Any] | None = None) -> Problem:
    """The tree at ``path`` (as ``run --trees`` writes it); ``row`` overrides the row the
    tree file carries."""
    try:
        data = json.loads(path.read_bytes())
        graph = data.get("graph") or {}
        nodes = [_node(raw) for raw in sorted(data["nodes"], key=lambda raw: raw["id"])]
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ConfigError(f"{path}: not a search tree (the node-link JSON run --trees writes)") from None
    for index, node in enumerate(nodes):
        parent = node["parent"]
        if node["id"] != index or (index > 0 and not (isinstance(parent, int) and 0 <= parent < index)):
            raise ConfigError(
                f"{path}: node {node['id']} breaks the order run writes (0, 1, ..., parents first)"
            )
    row = row if row is not None else graph.get("result")
    problem_id = str(graph.get("problem_id", path.stem))
    chosen = graph.get("chosen")
    if chosen is None:  # a tree written before trees carried their row: same answer text
        answer = (row or {}).get("answer")
        candidates = (row or {}).get("candidates") or ()
        chosen = [c["node"] for c in candidates if answer is not None and c.get("answer") == answer]
    return Problem(id=problem_id, row=row, chosen=[int(node) for node in chosen], nodes=nodes)


def load_run(path: Path, trees: Path | None = None) -> tuple[list[Problem], list[str]]:
    """A run's problems (rows in file order, the last row of an id winning) with their trees
    from ``trees`` (default: the ``trees`` folder beside ``path``), and the ids that had none."""
    rows = {str(row["id"]): row for row in iter_rows(path, "id", "results", strict=True)}
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    if not rows:
        raise ConfigError(f"{path} holds no rows: give a run's --output or a tree from --trees")
    folder = trees if trees is not None else path.parent / "trees"
    problems: list[Problem] = []
    missing: list[str] = []
    for problem_id, row in rows.items():
        row = {key: value for key, value in row.items() if key != "config"}
        where = tree_path(folder, problem_id)
        if where.exists():
            problems.append(load_tree(where, row))
        else:
            missing.append(problem_id)
            note = f"no tree at {where}"
            problems.append(Problem(id=problem_id, row=row, chosen=[], nodes=[], note=note))
    if len(missing) == len(rows):
        raise ConfigError(
            f"no trees for {path}'s problems in {folder}: run with --trees DIR, view with --trees DIR"
        )
    return problems, missing


def render(problems: list[Problem], title: str) -> str:
    """The page: the template with its script, style and data inlined."""
    assets = files("treesearch.view") / "assets"
    data = {"title": title, "problems": [_plain(problem) for problem in problems]}
    page = (assets / "view.html").read_text(encoding="utf-8")
    page = page.replace("/*STYLE*/", (assets / "view.css").read_text(encoding="utf-8"))
    page = page.replace("/*SCRIPT*/", (assets / "view.js").read_text(encoding="utf-8"))
    return page.replace("/*DATA*/", embed_json(data))  # last: the data is never searched again


def embed_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``</script>``, ``<!--`` or ``&`` can
    appear (they are ``\\u`` escapes, which JSON.parse reads back), nor the line separators
    U+2028 and U+2029."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.translate(_SCRIPT_SAFE)


_SCRIPT_SAFE = str.maketrans({char: f"\\u{ord(char):04x}" for char in "<>&\u2028\u2029"})


def _node(raw: dict[str, Any]) -> dict[str, Any]:
    """What the page needs of a node: the path score is the last of its scores, the
    confidence the mean of its tokens' confidences."""
    scores = raw.get("scores") or []
    confidences = raw.get("confidences") or []
    return {
        "id": int(raw["id"]),
        "parent": raw["parent"],
        "depth": int(raw["depth"]),
        "status": str(raw.get("status", "open")),
        "text": str(raw.get("text", "")),
        "answer": raw.get("answer"),
        "tokens": int(raw.get("tokens") or 0),
        "score": scores[-1] if scores else None,
        "scores": scores,
        "confidence": fmean(confidences) if confidences else None,
        "finish": raw.get("finish_reason"),
        "position": str(raw.get("position", "0")),
    }


def _plain(problem: Problem) -> dict[str, Any]:
    return dataclasses.asdict(problem)
