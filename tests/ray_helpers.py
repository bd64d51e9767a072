"""A verifier for the Ray test: it kills its worker process the first time it sees one
problem (a marker file, named by $TREESEARCH_TEST_MARKER, says it has), and scores 1."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from treesearch.problems import Problem


def die_once(problem: Problem, steps: Sequence[str]) -> float:
    marker = Path(os.environ["TREESEARCH_TEST_MARKER"])
    if problem.id == "a5" and not marker.exists():
        marker.write_text("died")
        os._exit(1)  # the worker dies mid-chunk, as a lost machine would
    return 1.0
