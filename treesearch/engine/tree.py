"""The search tree: every step any strategy explored, over a networkx DiGraph.

Node 0 is the problem; every other node is one reasoning step. Node records are
immutable; a change (a verifier score, a status) replaces the record. The graph
is the single source of truth for what was explored: strategies keep node ids,
never private copies of paths.

Node ids follow arrival order, which changes with scheduling; a node's
``position`` (the request and choice that made it, from the root down) does
not. Listings (children, open leaves, finished paths) come in position order, so
a seeded search decides alike however its requests were scheduled.

networkx is imported when the first tree is made: importing it takes a tenth of a
second, which ``treesearch --help`` and every command that searches nothing would
pay otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx


class NodeStatus(StrEnum):
    """Where a path stands: still open, finished with an answer, or finished without one."""

    OPEN = "open"
    ANSWERED = "answered"
    DEAD_END = "dead_end"


@dataclass(frozen=True, kw_only=True, slots=True)
class Node:
    """One step (or the problem, at the root).

    ``tokens`` is the step's completion tokens (a proportional share when a server
    reports only a request total); ``prompt_tokens`` the exact token count of the
    prefix ending at this node, when a server reported it; ``scores`` the
    verifier's per-step scores of the path ending here; ``revises`` the earlier attempt
    this one revises (a revision chain: every attempt is a whole solution under the root);
    ``confidences`` its tokens' confidences, when top logprobs were asked for (DeepConf),
    and ``certainties`` their self-certainties (``answers.certainty``);
    ``position`` its place in the tree whatever the arrival order: the parent's position,
    then the request under the parent and the choice's index in it ("0/0.1/0.0": the
    second choice of the root's first request, then its own first request's only choice);
    ``thinking`` a reasoning model's thinking before ``text`` (None when it did not think:
    ``text`` and the answer are only what followed it), ``reasoning_tokens`` its share of
    ``tokens`` and ``thinking_closed`` whether its end was seen (a step may stop right after
    the close tag, with no text yet); ``shown`` the solutions its prompt showed (a
    generative selection's group, an aggregation's subset) and ``chosen`` the one a
    selection named (None: it named none);
    ``requests`` how many requests made it (a thinking budget's continuations and answer
    request join its thinking request's node: ``engine.budget_forcing``).
    Scores are finite numbers, always: a NaN would decide selections at random and break
    the JSON rows.
    """

    id: int
    parent: int | None
    depth: int
    text: str
    status: NodeStatus = NodeStatus.OPEN
    finish_reason: str | None = None
    answer: str | None = None
    tokens: int = 0
    logprob: float | None = None
    prompt_tokens: int | None = None
    scores: tuple[float, ...] | None = None
    revises: int | None = None
    confidences: tuple[float, ...] | None = None
    certainties: tuple[float, ...] | None = None
    position: str = "0"
    thinking: str | None = None
    reasoning_tokens: int | None = None
    thinking_closed: bool = False
    shown: tuple[int, ...] | None = None
    chosen: int | None = None
    requests: int = 1

    def __post_init__(self) -> None:
        if self.scores is not None and not all(math.isfinite(score) for score in self.scores):
            raise ValueError(f"node {self.id}: scores must be finite numbers, got {list(self.scores)}")

    @property
    def terminal(self) -> bool:
        return self.status is not NodeStatus.OPEN

    @property
    def order(self) -> tuple[str | int, ...]:
        """The sort key of ``position``, numbers compared as numbers ("0/0.2" before "0/0.10")."""
        return tuple(int(part) if i % 2 else part for i, part in enumerate(_DIGITS.split(self.position)))


_DIGITS = re.compile(r"(\d+)")


ROOT = 0


class SearchTree:
    """A typed layer over ``networkx.DiGraph`` holding one problem's search."""

    def __init__(self, problem_id: str, prompt: str) -> None:
        import networkx as nx

        self.problem_id = problem_id
        self.graph: nx.DiGraph = nx.DiGraph(problem_id=problem_id)
        self.graph.add_node(ROOT, record=Node(id=ROOT, parent=None, depth=0, text=prompt))

    def __len__(self) -> int:
        return int(self.graph.number_of_nodes())

    def node(self, node_id: int) -> Node:
        record: Node = self.graph.nodes[node_id]["record"]
        return record

    def nodes(self) -> list[Node]:
        return [data["record"] for _, data in self.graph.nodes(data=True)]

    def add_child(self, parent: int, *, place: str | None = None, **fields: Any) -> Node:
        """Add a step under ``parent``; ``fields`` are Node fields other than the ids, depth and
        position. ``place`` is its place under the parent (default: its arrival rank there),
        unique among the parent's children."""
        node_id = self.graph.number_of_nodes()
        if place is None:
            place = str(self.graph.out_degree(parent))
        record = Node(
            id=node_id,
            parent=parent,
            depth=self.node(parent).depth + 1,
            position=f"{self.node(parent).position}/{place}",
            **fields,
        )
        self.graph.add_node(node_id, record=record)
        self.graph.add_edge(parent, node_id)
        return record

    def update(self, node_id: int, **changes: Any) -> Node:
        record = dataclasses.replace(self.node(node_id), **changes)
        self.graph.nodes[node_id]["record"] = record
        return record

    def children(self, node_id: int) -> list[Node]:
        """In position order."""
        return in_order(self.node(child) for child in self.graph.successors(node_id))

    def path(self, node_id: int) -> list[Node]:
        """The steps from the first one down to ``node_id`` (the root excluded)."""
        steps: list[Node] = []
        current: int | None = node_id
        while current is not None and current != ROOT:
            record = self.node(current)
            steps.append(record)
            current = record.parent
        steps.reverse()
        return steps

    def steps(self, node_id: int) -> tuple[str, ...]:
        return tuple(node.text for node in self.path(node_id))

    def chain(self, node_id: int) -> list[int]:
        """The revision chain ending at ``node_id``: the attempts it revises, oldest first,
        then itself (just itself when it revises nothing)."""
        chain = [node_id]
        while (earlier := self.node(chain[-1]).revises) is not None:
            chain.append(earlier)
        return chain[::-1]

    def open_leaves(self) -> list[Node]:
        """In position order."""
        return in_order(
            node
            for node in self.nodes()
            if node.status is NodeStatus.OPEN and self.graph.out_degree(node.id) == 0
        )

    def terminals(self) -> list[Node]:
        """Finished paths, in position order."""
        return in_order(node for node in self.nodes() if node.terminal)

    # -- export ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Node-link JSON: ``{"nodes": [...], "edges": [...]}`` with every Node field."""
        import networkx as nx

        flat = nx.DiGraph(problem_id=self.problem_id)
        for node in self.nodes():
            flat.add_node(node.id, **_plain(node))
        flat.add_edges_from(self.graph.edges)
        data: dict[str, Any] = nx.node_link_data(flat, edges="edges")
        return data

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()), encoding="utf-8")

    def write_graphml(self, path: str | Path) -> None:
        """GraphML, which takes scalars of one type per attribute: a missing value (the root's
        parent, an unreported prompt_tokens) is left out of its node, and scores is a JSON list."""
        import networkx as nx

        flat = nx.DiGraph(problem_id=self.problem_id)
        for node in self.nodes():
            attrs = _plain(node)
            for name in ("scores", "confidences", "certainties", "shown"):
                attrs[name] = None if attrs[name] is None else json.dumps(attrs[name])
            flat.add_node(node.id, **{k: v for k, v in attrs.items() if v is not None})
        flat.add_edges_from(self.graph.edges)
        nx.write_graphml(flat, str(path))

    def to_dot(self) -> str:
        """Graphviz DOT (UTF-8), one box per node labelled with its step text (cut to 60
        characters) and, under it, the answer it reached."""
        lines = ["digraph search {", "  node [shape=box];"]
        for node in self.nodes():
            label = node.text[:60] if node.id != ROOT else f"problem {self.problem_id}"
            if node.answer:
                label += f"\n→ {node.answer}"
            lines.append(f"  {node.id} [label={_dot_string(label)}];")
        lines.extend(f"  {a} -> {b};" for a, b in self.graph.edges)
        lines.append("}")
        return "\n".join(lines)


def in_order(nodes: Iterable[Node]) -> list[Node]:
    """``nodes`` in position order (repeats kept): an order no scheduling changes."""
    return sorted(nodes, key=lambda node: node.order)


def _dot_string(text: str) -> str:
    """A quoted DOT label showing ``text`` as is: backslashes and quotes escaped, line breaks
    as Graphviz's ``\\n``, everything else (arrows, math) left as UTF-8."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "\\n".join(escaped.splitlines()) + '"'


def _plain(node: Node) -> dict[str, Any]:
    attrs = dataclasses.asdict(node)
    attrs["status"] = node.status.value
    attrs["scores"] = None if node.scores is None else list(node.scores)
    attrs["confidences"] = None if node.confidences is None else list(node.confidences)
    attrs["certainties"] = None if node.certainties is None else list(node.certainties)
    attrs["shown"] = None if node.shown is None else list(node.shown)
    return attrs
