"""Scoring: the verifier's and the completion judge's calls on the tree's paths.

Each call is batched, charged to the budget (``charged``) and its scores checked where
they enter; a path's scores are kept on its last node, and its path score is their
reduction (last, min, prod or mean).
"""

from __future__ import annotations

from collections.abc import Sequence

from treesearch.answers.extract import extract_final_value
from treesearch.engine.budget import Budget
from treesearch.engine.charge import charged
from treesearch.engine.steps import StepFormat
from treesearch.engine.tree import Node, NodeStatus, SearchTree
from treesearch.engine.verify import Verifier, check_scores, reduce_scores, verifier_name
from treesearch.errors import ConfigError, VerifierError
from treesearch.logs import get_logger
from treesearch.problems import Problem

log = get_logger(__name__)


class Scoring:
    """One problem's calls to its verifier and completion judge, and the scores they leave
    in its tree."""

    def __init__(
        self,
        problem: Problem,
        budget: Budget,
        tree: SearchTree,
        *,
        step_format: StepFormat,
        verifier: Verifier | None,
        finish_check: Verifier | None,
        reduction: str,
    ) -> None:
        self.problem = problem
        self.budget = budget
        self.tree = tree
        self.step_format = step_format
        self.verifier = verifier
        self.finish_check = finish_check
        self.reduction = reduction
        self._log = log.bind(problem_id=problem.id)

    async def score(self, node_ids: Sequence[int], *, probabilities: bool = False) -> list[float]:
        """Score the paths ending at ``node_ids`` (see ``SearchContext.score``)."""
        todo = [
            node
            for node in dict.fromkeys(node_ids)
            if (record := self.tree.node(node)).scores is None and record.status is not NodeStatus.DEAD_END
        ]
        if todo:
            if self.verifier is None:
                raise ConfigError("this strategy needs a verifier")
            paths = [self._verifier_steps(node) for node in todo]
            scores = await self._judge(self.verifier, paths, probabilities=probabilities)
            for node, path, values in zip(todo, paths, scores, strict=True):
                self.tree.update(node, scores=self._full_path_scores(node, len(path), values))
                self._log.debug("node_scored", node_id=node, scores=values)
        return [self.path_score(node) or 0.0 for node in node_ids]

    async def check_finished(self, children: list[Node]) -> list[Node]:
        """Ask the completion judge which open children already hold a final answer; those
        become finished, with the value their last line states as the answer (a path the
        judge calls finished that states no value is a dead end, never an answer of prose)."""
        if self.finish_check is None:
            return children
        open_ids = [child.id for child in children if not child.terminal]
        if not open_ids:
            return children
        verdicts = await self._judge(self.finish_check, [self._verifier_steps(node) for node in open_ids])
        for node_id, verdict in zip(open_ids, verdicts, strict=True):
            if verdict[-1] >= 0.5:
                answer = extract_final_value(self.tree.node(node_id).text, self.step_format.answer_pattern)
                status = NodeStatus.DEAD_END if answer is None else NodeStatus.ANSWERED
                self.tree.update(node_id, status=status, answer=answer)
        return [self.tree.node(child.id) for child in children]

    def path_score(self, node_id: int) -> float | None:
        scores = self.tree.node(node_id).scores
        return None if scores is None else reduce_scores(scores, self.reduction)

    async def _judge(
        self, verifier: Verifier, paths: Sequence[Sequence[str]], *, probabilities: bool = False
    ) -> list[list[float]]:
        """The verifier's step scores of ``paths``, charged to the budget; every score checked
        where it enters (see ``check_scores``)."""
        bound = verifier.cost_bound(self.problem, paths)
        is_verifier = verifier is self.verifier
        async with charged(
            self.budget,
            bound.prompt_tokens,
            bound.completion_tokens,
            requests=bound.requests,
            verifier=is_verifier,
            batch=True,
        ) as reservation:
            scored = await verifier.score(self.problem, paths)
            self.budget.settle(
                reservation,
                scored.cost.prompt_tokens,
                scored.cost.completion_tokens,
                estimated=scored.estimated,
                requests=scored.cost.requests,
                verifier=is_verifier,
            )
        if len(scored.scores) != len(paths) or not all(scored.scores):
            raise VerifierError(
                f"verifier {verifier_name(verifier)} returned {len(scored.scores)} scores for"
                f" {len(paths)} paths (or a path without scores)"
            )
        check_scores(verifier, scored.scores, probabilities=probabilities)
        return scored.scores

    def _full_path_scores(self, node_id: int, depth: int, values: Sequence[float]) -> tuple[float, ...]:
        """A verifier that judged only the newest of a path's ``depth`` steps gets the earlier
        ones from the parent."""
        parent = self.tree.node(node_id).parent
        earlier = self.tree.node(parent).scores if parent is not None else None
        if len(values) < depth and earlier is not None:
            return tuple(earlier[: depth - len(values)]) + tuple(values)
        return tuple(values)

    def _verifier_steps(self, node_id: int) -> list[str]:
        """A path's steps for a verifier: a whole solution in one node splits at the delimiter;
        a step within a thinking (no reply) is its thinking. A reply is judged without the
        thinking before it, as a whole solution's is: a process reward model judges the steps
        of a solution, and a long thinking would not fit its context."""
        delimiter = self.step_format.delimiter
        steps: list[str] = []
        for node in self.tree.path(node_id):
            parts = [part for part in node.text.split(delimiter) if part]
            steps += parts or ([node.thinking] if node.thinking else [])
        return steps
