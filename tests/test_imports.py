"""The layout keeps its layers: no module imports one that imports it back, however far round
and however late (an import inside a function counts; one under ``TYPE_CHECKING`` does not)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).parent.parent
# The folders of the wheel's packages: backends/ ships as treesearch.backends.
FOLDERS = {"treesearch": ROOT / "treesearch", "treesearch.backends": ROOT / "backends"}


def modules() -> dict[str, Path]:
    """Every module by its dotted name (a package by its ``__init__``)."""
    found: dict[str, Path] = {}
    for prefix, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] in ("__init__", "__main__"):
                parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((prefix, *parts))] = path
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The imports that run: all of them but those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> nx.DiGraph:
    """Module -> each treesearch module it imports (``from package import module`` names the
    module; importing a package's member names the package)."""
    known = modules()
    graph = nx.DiGraph()
    for name, path in known.items():
        graph.add_node(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in targets:
                if target in known and target != name:
                    graph.add_edge(name, target)
    return graph


def test_the_graph_sees_the_imports_it_should() -> None:
    graph = import_graph()
    assert ("treesearch.engine.search", "treesearch.engine.budget") in graph.edges
    assert ("treesearch.backends.openai_compat", "treesearch.backends.endpoint") in graph.edges  # relative
    assert ("treesearch.cli.main", "treesearch.cli.demo") in graph.edges  # inside a function


def test_no_module_imports_itself_round_a_cycle() -> None:
    cycles = sorted(sorted(component) for component in nx.strongly_connected_components(import_graph())
                    if len(component) > 1)  # fmt: skip
    assert cycles == [], "\n".join(" <-> ".join(cycle) for cycle in cycles)


def test_the_engine_and_the_strategies_stand_below_the_chooser_and_the_edges() -> None:
    """DESIGN's layers: the compute-optimal chooser calls the engine's search, never the other
    way round, and nothing below the runs knows of runs, serve or the command line. (A
    SearchConfig carries its policy table, data that ``optimal.difficulty`` defines.)"""
    graph = import_graph()
    below = ("treesearch.engine", "treesearch.strategies", "treesearch.answers")
    above = ("treesearch.optimal.choose", "treesearch.optimal.fit", "treesearch.optimal.advise",
             "treesearch.runs", "treesearch.serve", "treesearch.cli")  # fmt: skip
    wrong = sorted(
        (module, reached)
        for module in graph
        if module.startswith(below)
        for reached in nx.descendants(graph, module)
        if reached.startswith(above)
    )
    assert wrong == [], "\n".join(f"{module} -> {reached}" for module, reached in wrong)
    chooser = [(a, b) for a, b in graph.edges if a.startswith("treesearch.strategies") and b.startswith(
        "treesearch.optimal")]  # fmt: skip
    assert chooser == [] and ("treesearch.optimal.choose", "treesearch.engine.search") in graph.edges
