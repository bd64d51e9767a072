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
import math
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


def load_tree(path: Path) -> Problem:
    """The tree at ``path`` (as ``run --trees`` writes it) with the row it carries."""
    return _problem(path, *read_tree(path), None)


def read_tree(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """The graph attributes and the nodes (in id order, what the page needs of each) of the
    tree at ``path``; a ConfigError unless it is a tree: node 0 the root, every other node's
    parent an earlier node of a smaller depth (so following parents always ends at the root,
    which the page does); and how many NaN or infinite numbers it held (Python writes them),
    which are read as None: the page's data is JSON, which has neither,
    and a score that is no number is no score (a failed verifier's NaN shows as unscored)."""
    found: list[str] = []

    def finite(text: str) -> float | None:
        value = float(text)
        if math.isfinite(value):
            return value
        found.append(text)
        return None

    try:
        data = json.loads(path.read_bytes(), parse_float=finite, parse_constant=finite)
        graph = data.get("graph") or {}
        if not isinstance(graph, dict):
            raise TypeError
        nodes = [_node(raw) for raw in sorted(data["nodes"], key=lambda raw: raw["id"])]
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ConfigError(f"{path}: not a search tree (the node-link JSON run --trees writes)") from None
    if not nodes:
        raise ConfigError(f"{path}: a search tree without nodes (node 0 is the problem)")
    for index, node in enumerate(nodes):
        parent = node["parent"]
        if index == 0:
            ok = node["id"] == 0 and parent is None
        else:
            ok = node["id"] == index and _integer(parent) and 0 <= parent < index
            ok = ok and nodes[parent]["depth"] < node["depth"]
        if not ok:
            order = "node 0 the root, ids 0, 1, ... once each, a parent before its children and less deep"
            raise ConfigError(f"{path}: node {node['id']} breaks the order run writes ({order})")
    return graph, nodes, len(found)


def _problem(
    path: Path, graph: dict[str, Any], nodes: list[dict[str, Any]], nonfinite: int, row: dict[str, Any] | None
) -> Problem:
    """The problem a tree shows: ``row`` (else the one the tree carries) and the chosen
    nodes the tree names (else the candidates whose answer the row chose). A part that
    cannot be read (a row that is no object, a chosen id that is no node, a number that is
    no finite number) is left out with a note, since the tree can still be shown."""
    notes: list[str] = []
    if row is None:
        row = graph.get("result")
        if row is not None and not isinstance(row, dict):
            notes.append("the tree's result is not a row: left out")
            row = None
    row = _finite(row, notes)
    chosen = graph.get("chosen")
    if chosen is None:  # a tree written before trees carried their row: same answer text
        answer = (row or {}).get("answer")
        candidates = (row or {}).get("candidates")
        candidates = candidates if isinstance(candidates, list) else []
        chosen = [c.get("node") for c in candidates if isinstance(c, dict) and answer is not None
                  and c.get("answer") == answer]  # fmt: skip
    chosen = chosen if isinstance(chosen, list) else [chosen]
    kept = [node for node in chosen if _integer(node) and 0 <= node < len(nodes)]
    dropped = [node for node in chosen if not (_integer(node) and 0 <= node < len(nodes))]
    if dropped:
        listed = ", ".join(json.dumps(node) for node in dropped[:5])
        notes.append(f"chosen ids that are no node of the tree left out: {listed}")
    problem_id = str(graph.get("problem_id", path.stem))
    if nonfinite:
        notes.append(f"{nonfinite} NaN or infinite numbers in the tree shown as missing")
    return Problem(id=problem_id, row=row, chosen=kept, nodes=nodes, note="; ".join(notes) or None)


def load_run(path: Path, trees: Path | None = None) -> tuple[list[Problem], list[str]]:
    """A run's problems (rows in file order, the last row of an id winning) with their trees
    from ``trees`` (default: the ``trees`` folder beside ``path``), and the ids that had none.
    A tree file of another problem (two ids made one file name, before ``tree_path`` told
    them apart) is no tree of this one."""
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
        if not where.exists() and where.stem != problem_id:  # written before names had a hash
            where = where.with_name(where.stem.rsplit("-", 1)[0] + where.suffix)
        note = f"no tree at {where}"
        if where.exists():
            graph, nodes, nonfinite = read_tree(where)
            owner = str(graph.get("problem_id", problem_id))
            if owner == problem_id:
                problems.append(_problem(where, graph, nodes, nonfinite, row))
                continue
            note = f"the tree at {where} is problem {owner}'s"
        missing.append(problem_id)
        notes = [note]
        row = _finite(row, notes)
        problems.append(Problem(id=problem_id, row=row, chosen=[], nodes=[], note="; ".join(notes)))
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
    confidence the mean of its tokens' confidences; a reasoning model's thinking apart from
    the step's reply."""
    scores = raw.get("scores") or []
    confidences = [value for value in raw.get("confidences") or () if value is not None]
    return {
        "id": int(raw["id"]),
        "parent": raw["parent"],
        "depth": int(raw["depth"]),
        "status": str(raw.get("status", "open")),
        "text": str(raw.get("text", "")),
        "thinking": None if raw.get("thinking") is None else str(raw["thinking"]),
        "reasoning": raw.get("reasoning_tokens"),
        "requests": raw.get("requests"),
        "answer": raw.get("answer"),
        "tokens": int(raw.get("tokens") or 0),
        "score": scores[-1] if scores else None,
        "scores": scores,
        "confidence": fmean(confidences) if confidences else None,
        "finish": raw.get("finish_reason"),
        "position": str(raw.get("position", "0")),
    }


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any, notes: list[str]) -> Any:
    """``value`` (a row) with each NaN or infinity made None, as ``read_tree`` does, and a
    note naming the fields that held one."""
    found: set[str] = set()

    def walk(item: Any, key: str) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            found.add(key)
            return None
        if isinstance(item, dict):
            return {name: walk(inner, str(name)) for name, inner in item.items()}
        if isinstance(item, list):
            return [walk(inner, key) for inner in item]
        return item

    cleaned = walk(value, "")
    if found:
        notes.append(f"NaN or infinite numbers shown as missing in: {', '.join(sorted(found))}")
    return cleaned


def _plain(problem: Problem) -> dict[str, Any]:
    """The problem as JSON data: its fields hold plain data already, so no deep copy
    (``dataclasses.asdict`` took seconds on a tree of 200,000 nodes)."""
    return {field.name: getattr(problem, field.name) for field in dataclasses.fields(problem)}
