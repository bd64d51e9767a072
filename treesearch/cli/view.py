"""``treesearch view``: a run's search trees (or one tree file) as one self-contained HTML page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from treesearch.cli.setup import writable_file


def view(args: argparse.Namespace) -> int:
    from treesearch.runs.rows import unfinished_last_line
    from treesearch.view.page import load_run, load_tree, render, tree_file

    source: Path = args.source
    problems, missing = ([load_tree(source)], []) if tree_file(source) else load_run(source, args.trees)
    cut = None if tree_file(source) else unfinished_last_line(source)
    if cut is not None:
        print(f"treesearch view: warning: {source}:{cut}: skipped an unfinished last line (a run cut "
              "short)", file=sys.stderr)  # fmt: skip
    output: Path = args.output if args.output is not None else source.with_suffix(".html")
    writable_file("-o", output)
    page = render(problems, source.name)
    output.write_text(page, encoding="utf-8")
    if missing:
        print(f"treesearch view: {len(missing)} of {len(problems)} problems have no tree (first: "
              f"{missing[0]}); the page lists them without one", file=sys.stderr)  # fmt: skip
    noted = [problem for problem in problems if problem.note and problem.nodes]
    if noted:
        print(f"treesearch view: {len(noted)} of {len(problems)} problems have a note on the page "
              f"(first, {noted[0].id}: {noted[0].note})", file=sys.stderr)  # fmt: skip
    nodes = sum(len(problem.nodes) for problem in problems)
    size = len(page.encode("utf-8")) / 1e6
    print(f"wrote {output}: {len(problems)} problems, {nodes} nodes, {size:.1f} MB", file=sys.stderr)
    return 0


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``treesearch view`` to the top-level parser's subcommands."""
    parser = commands.add_parser(
        "view",
        help="a run's search trees as one self-contained HTML page",
        description="Write one HTML page that opens offline and shows each problem's search tree: "
        "nodes coloured by verifier score or confidence, the chosen answer's paths, a node's step "
        "and path text, tokens under each subtree, a replay in arrival order and filters. The page "
        "embeds every tree, so it weighs about what the trees folder does (some 300 bytes a node "
        "plus its step's text).",
    )
    parser.add_argument("source", type=Path, metavar="RUN.jsonl|TREE.json",
                        help="a run's --output rows, or one tree file --trees wrote")  # fmt: skip
    parser.add_argument("--trees", type=Path, default=None, metavar="DIR",
                        help="where the run wrote its trees, as run --trees DIR (default: the "
                        "trees folder beside RUN.jsonl)")  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="HTML",
                        help="the page to write (default: the source's name with .html)")  # fmt: skip
    parser.set_defaults(handler=view)
