"""Many problems searched at once, through the loop ``label`` shares (``runs.loop``).

The output is JSONL, appended and flushed a line per finished problem, so a
crash loses nothing already computed. A rerun with the same output continues
the same run: it checks the configuration stored in the rows, skips the
problems recorded there (failed ones too, unless asked to retry them, which
replaces their rows) and returns every problem's result. Every problem shares
the policy, and so its endpoint's concurrency limit; each problem's requests carry its
admission order (``treesearch.priority``), so the endpoint serves older problems first
and rows arrive one after another from the start of a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from treesearch.answers.equivalence import AnswerEquivalence, default_equivalence
from treesearch.engine.budget import ModelSizes, Tally
from treesearch.engine.config import SearchConfig
from treesearch.engine.policy import Policy
from treesearch.engine.search import SearchResult
from treesearch.engine.thinking import ThinkTags
from treesearch.engine.verify import Verifier
from treesearch.errors import ConfigError
from treesearch.logs import get_logger
from treesearch.optimal.choose import check_config, search
from treesearch.problems import Problem
from treesearch.runs.loop import Output, each_problem
from treesearch.runs.progress import Progress

log = get_logger(__name__)


def fingerprint(
    config: SearchConfig, policy: Policy, verifier: Verifier | None, finish_check: Verifier | None = None
) -> dict[str, Any]:
    """What decides a run's results: the search configuration, the model and how it is
    prompted, the verifier and the completion check. Stored in every output row, so a rerun
    onto the file can check it continues the same run. A server's URL is left out (it may
    move); an in-process model's file is kept."""
    settings: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))
    if settings["policy_table"] is not None:  # a table is long: rows carry its digest
        text = json.dumps(settings["policy_table"], sort_keys=True)
        settings["policy_table"] = {"sha256": hashlib.sha256(text.encode()).hexdigest()}
    settings["policy"] = _describe(policy)
    if not policy.endpoint.startswith(("http://", "https://")):
        settings["policy"]["endpoint"] = policy.endpoint
    settings["verifier"] = None if verifier is None else _describe(verifier)
    settings["finish_check"] = None if finish_check is None else _describe(finish_check)
    return settings


_DESCRIBED = (
    "model",
    "name",
    "api",
    "prompt_template",
    "system_prompt",
    "template",
    "step_tag",
    "good_column",
)


def _describe(part: object) -> dict[str, Any]:
    """A policy's or verifier's kind and the public settings that change what it answers; its
    think tags only where they are not the default, so rows written before they were recorded
    still resume."""
    settings = {
        key: getattr(part, key) for key in _DESCRIBED if isinstance(getattr(part, key, None), str | int)
    }
    tags = getattr(part, "think_tags", None)
    if isinstance(tags, ThinkTags) and tags != ThinkTags():
        settings["think_tags"] = f"{tags.open},{tags.close}"
    return {"kind": type(part).__name__, **settings}


async def run(
    problems: Iterable[Problem],
    policy: Policy,
    config: SearchConfig,
    *,
    verifier: Verifier | None = None,
    finish_check: Verifier | None = None,
    output: str | Path | None = None,
    trees_dir: str | Path | None = None,
    keep_trees: bool = True,
    max_problems_in_flight: int = 32,
    progress: bool = False,
    equivalence: AnswerEquivalence | None = None,
    retry_failed: bool = False,
    force_resume: bool = False,
    sizes: ModelSizes | None = None,
) -> list[SearchResult]:
    """Search every problem concurrently and return a result for each, in the problems' order.

    With ``output``, each result is appended as a JSON line when its problem finishes,
    with the run's configuration (``fingerprint``). Problems the file already holds are
    not run again: their results are read back (no tree). A file written with another
    configuration is refused (``force_resume`` adds to it anyway). ``retry_failed`` runs
    the problems whose rows hold an error again, replacing those rows. At most
    ``max_problems_in_flight`` problems run at once, so finished rows accumulate steadily.
    With ``trees_dir`` each search tree is written there as node-link JSON, its row and
    chosen nodes in the graph's attributes (``_write_tree``).
    ``finish_check`` is an optional model-judged completion check (see ``SearchContext``).
    With ``sizes`` (the models' parameters) every row carries its inference FLOPs.
    """
    check_config(config, verifier)
    problems = list(problems)
    table = config.policy_table if config.strategy == "adaptive" else None
    if table is not None and table.bins.kind == "oracle":
        missing = next((problem.id for problem in problems if problem.answer is None), None)
        if missing is not None:
            raise ConfigError(f"oracle difficulty needs gold answers; problem {missing!r} has none")
    if trees_dir is not None:
        await anyio.Path(trees_dir).mkdir(parents=True, exist_ok=True)

    async def solve(problem: Problem, tally: Tally) -> SearchResult:
        result = await search(
            problem,
            policy,
            config,
            verifier=verifier,
            finish_check=finish_check,
            equivalence=equivalence,
            tally=tally,
        )
        if trees_dir is not None and result.tree is not None:
            same = equivalence or default_equivalence()
            await anyio.to_thread.run_sync(_write_tree, result, tree_path(trees_dir, problem.id), same, sizes)
        return result if keep_trees else replace(result, tree=None)

    rows = None
    if output is not None:
        rows = Output(
            done=Path(output),
            settings=fingerprint(config, policy, verifier, finish_check),
            record=lambda result: result.to_record(sizes),
            read_back=lambda row, _: SearchResult.from_record(row),
        )
    return await each_problem(
        problems,
        solve,
        output=rows,
        max_in_flight=max_problems_in_flight,
        retry_failed=retry_failed,
        force_resume=force_resume,
        display=(lambda left, tally: Progress(left, sys.stderr, tally)) if progress else None,
    )


def _write_tree(result: SearchResult, path: Path, same: AnswerEquivalence, sizes: ModelSizes | None) -> None:
    """The tree's node-link JSON with, as graph attributes, the problem's row (``result``, less
    the run's config) and ``chosen``: the nodes of the candidates whose answer the row chose,
    grouped by the run's equivalence. So a tree file alone shows which paths won
    (``treesearch view``)."""
    assert result.tree is not None
    data = result.tree.to_json()
    answered = [c for c in result.candidates if c.answer is not None]
    chosen: list[int] = []
    if result.answer is not None and answered:
        groups = same.group([result.answer, *(c.answer or "" for c in answered)])
        chosen = [c.node for c, group in zip(answered, groups[1:], strict=True) if group == groups[0]]
    data["graph"] |= {"result": result.to_record(sizes), "chosen": chosen}
    path.write_text(json.dumps(data), encoding="utf-8")


def tree_path(trees_dir: str | Path, problem_id: str) -> Path:
    """Where ``run`` writes a problem's tree (and ``treesearch view`` looks for it): its id, any
    character but letters, digits and ``-_.`` made ``_``, as a JSON file in ``trees_dir``. An
    id so changed gets 8 hex digits of its SHA-256 after a ``-`` ("a/b" is ``a_b-c14cddc0.json``),
    so it cannot take the file of an id spelled that way ("a_b" is ``a_b.json``)."""
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in problem_id)
    if name != problem_id:
        name += "-" + hashlib.sha256(problem_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return Path(trees_dir) / f"{name}.json"
