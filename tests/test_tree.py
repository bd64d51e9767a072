"""The search tree: structure, paths, and the three export formats."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx

from treesearch.tree import ROOT, NodeStatus, SearchTree


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


def test_node_link_json_round_trips(tmp_path: Path) -> None:
    tree = small_tree()
    tree.write_json(tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())
    graph = nx.node_link_graph(data, edges="edges")
    assert sorted(graph.edges) == [(0, 1), (0, 3), (1, 2)]
    assert graph.nodes[2]["answer"] == "5"
    assert graph.nodes[2]["status"] == "answered"


def test_graphml_and_dot(tmp_path: Path) -> None:
    tree = small_tree()
    tree.write_graphml(tmp_path / "t.graphml")
    graph = nx.read_graphml(tmp_path / "t.graphml")
    assert graph.number_of_nodes() == 4
    assert graph.nodes["2"]["answer"] == "5"
    dot = tree.to_dot()
    assert dot.startswith("digraph search {")
    assert "1 -> 2;" in dot
