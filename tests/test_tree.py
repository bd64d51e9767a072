"""The search tree: structure, paths, and the three export formats."""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree

import networkx as nx
import pytest

from treesearch.engine.tree import ROOT, NodeStatus, SearchTree


def small_tree() -> SearchTree:
    tree = SearchTree("p1", "What is 2 + 3?")
    a = tree.add_child(ROOT, text="2 + 3 = 5", tokens=5)
    tree.add_child(a.id, text="The answer is 5.", status=NodeStatus.ANSWERED, answer="5")
    tree.add_child(ROOT, text="2 + 3 = 6", tokens=5)
    return tree


def test_paths_leaves_and_terminals() -> None:
    tree = small_tree()
    assert tree.steps(2) == ("2 + 3 = 5", "The answer is 5.")
    assert [n.depth for n in tree.path(2)] == [1, 2]
    assert [n.id for n in tree.open_leaves()] == [3]
    assert [n.id for n in tree.terminals()] == [2]
    assert [n.id for n in tree.children(ROOT)] == [1, 3]
    updated = tree.update(3, scores=(0.2,))
    assert tree.node(3) is updated
    assert updated.scores == (0.2,)


def test_listings_follow_positions_not_arrival() -> None:
    """Children that arrive out of order (the second request's before the first's) are listed
    by their place: the request under the parent, then the choice's index in it."""
    tree = SearchTree("p1", "What is 2 + 3?")
    late = tree.add_child(ROOT, place="10.0", text="late", status=NodeStatus.ANSWERED, answer="5")
    tree.add_child(ROOT, place="2.1", text="b", status=NodeStatus.ANSWERED, answer="6")
    first = tree.add_child(ROOT, place="2.0", text="a")
    tree.add_child(first.id, place="0.0", text="The answer is 5.", status=NodeStatus.ANSWERED, answer="5")
    assert late.position == "0/10.0" and tree.node(4).position == "0/2.0/0.0"
    assert [n.text for n in tree.children(ROOT)] == ["a", "b", "late"]  # 2 before 10, as numbers
    assert [n.id for n in tree.terminals()] == [4, 2, 1]
    assert [n.position for n in small_tree().children(ROOT)] == ["0/0", "0/1"]  # arrival by default


def test_scores_are_finite_numbers() -> None:
    tree = small_tree()
    with pytest.raises(ValueError, match=r"node 3: scores must be finite numbers, got \[0.5, nan\]"):
        tree.update(3, scores=(0.5, float("nan")))
    assert tree.node(3).scores is None


def test_node_link_json_round_trips(tmp_path: Path) -> None:
    tree = small_tree()
    tree.write_json(tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())
    graph = nx.node_link_graph(data, edges="edges")
    assert sorted(graph.edges) == [(0, 1), (0, 3), (1, 2)]
    assert graph.nodes[2]["answer"] == "5"
    assert graph.nodes[2]["status"] == "answered"


def test_graphml_declares_each_attribute_once(tmp_path: Path) -> None:
    tree = small_tree()
    tree.update(2, scores=(0.5, 0.9), prompt_tokens=17, logprob=-1.5)
    tree.write_graphml(tmp_path / "t.graphml")
    keys = ElementTree.parse(tmp_path / "t.graphml").getroot().findall("{*}key")
    declared = [(key.get("for"), key.get("attr.name")) for key in keys]
    assert len(declared) == len(set(declared))
    graph = nx.read_graphml(tmp_path / "t.graphml")
    assert sorted(graph.edges) == [("0", "1"), ("0", "3"), ("1", "2")]
    assert "parent" not in graph.nodes["0"]
    assert (graph.nodes["2"]["parent"], graph.nodes["2"]["prompt_tokens"]) == (1, 17)
    assert "prompt_tokens" not in graph.nodes["1"]
    assert graph.nodes["2"]["answer"] == "5"
    assert json.loads(graph.nodes["2"]["scores"]) == [0.5, 0.9]
    assert graph.graph["problem_id"] == "p1"


def _graphviz_text(label: str) -> str:
    """What Graphviz shows for a quoted DOT label: \\n, \\l and \\r break the line, \\\\ is a
    backslash, \\" a quote, and a backslash before any other character is dropped."""
    shown, chars = [], iter(label)
    for char in chars:
        if char != "\\":
            shown.append(char)
            continue
        escaped = next(chars)
        shown.append("\n" if escaped in "nlr" else escaped)
    return "".join(shown)


def test_dot_labels_show_the_text() -> None:
    tree = SearchTree('p"1', "What is 2 + 3?")
    a = tree.add_child(ROOT, text='2 × 3 = 6\n\\frac{1}{2} is "half"', tokens=5)
    tree.add_child(a.id, text="The answer is 5.", status=NodeStatus.ANSWERED, answer="5")
    dot = tree.to_dot()
    assert dot.startswith("digraph search {")
    assert "1 -> 2;" in dot
    labels = dict(re.findall(r'^  (\d+) \[label="((?:[^"\\]|\\.)*)"\];$', dot, re.MULTILINE))
    assert [_graphviz_text(labels[n]) for n in ("0", "1", "2")] == [
        'problem p"1',
        '2 × 3 = 6\n\\frac{1}{2} is "half"',
        "The answer is 5.\n→ 5",
    ]
