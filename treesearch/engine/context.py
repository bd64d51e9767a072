"""The SearchContext: the only way a strategy reaches the world.

A strategy asks the context to expand nodes and to score them; the context reserves the
budget for every request, tops up when an endpoint gives fewer choices than asked, records
every step in the SearchTree, and emits events. Strategies never see HTTP and never count
tokens. The context composes the parts that do the work: ``Proposals`` (the policy's
requests), ``Scoring`` (the verifier's and the completion judge's), both charging the
budget through ``charged``; it keeps the search's own bookkeeping (the candidates it
offers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from treesearch.answers.equivalence import AnswerEquivalence, default_equivalence
from treesearch.engine.budget import Budget
from treesearch.engine.policy import Policy, SamplingParams
from treesearch.engine.proposals import Proposals
from treesearch.engine.scoring import Scoring
from treesearch.engine.steps import StepFormat
from treesearch.engine.taskgroups import gather
from treesearch.engine.tree import ROOT, Node, NodeStatus, SearchTree
from treesearch.engine.verify import Verifier
from treesearch.problems import Problem

if TYPE_CHECKING:
    from treesearch.engine.config import SearchConfig


class SearchContext:
    """One problem's search: its tree, budget, policy, and optional verifier and
    completion judge (a verifier whose score is P(the path has reached its answer)).
    Its parts are fixed when it is made; a strategy sets only its bookkeeping
    (``candidates``)."""

    def __init__(
        self,
        problem: Problem,
        policy: Policy,
        budget: Budget,
        *,
        sampling: SamplingParams,
        step_format: StepFormat,
        verifier: Verifier | None = None,
        finish_check: Verifier | None = None,
        reduction: str = "last",
        equivalence: AnswerEquivalence | None = None,
    ) -> None:
        self.problem = problem
        self.budget = budget
        self.equivalence = equivalence or default_equivalence()
        self.tree = SearchTree(problem.id, problem.prompt or problem.question)
        self._proposals = Proposals(
            problem, policy, budget, self.tree, sampling=sampling, step_format=step_format
        )
        self._scoring = Scoring(
            problem,
            budget,
            self.tree,
            step_format=step_format,
            verifier=verifier,
            finish_check=finish_check,
            reduction=reduction,
        )
        # The finished paths the strategy offers for aggregation so far (None: every finished
        # path in the tree); kept up to date as the search goes, so a search cut short by its
        # budget still aggregates by its own rule.
        self.candidates: list[int] | None = None

    @classmethod
    def for_config(
        cls, problem: Problem, policy: Policy, budget: Budget, config: SearchConfig, **parts: Any
    ) -> SearchContext:
        """A context searching as ``config`` says (sampling, steps, score reduction); ``parts``
        are the verifier, completion check and equivalence."""
        return cls(
            problem,
            policy,
            budget,
            sampling=config.sampling,
            step_format=config.step,
            reduction=config.reduction,
            **parts,
        )

    @property
    def policy(self) -> Policy:
        return self._proposals.policy

    @property
    def sampling(self) -> SamplingParams:
        return self._proposals.sampling

    @property
    def step_format(self) -> StepFormat:
        return self._proposals.step_format

    @property
    def verifier(self) -> Verifier | None:
        return self._scoring.verifier

    @property
    def finish_check(self) -> Verifier | None:
        return self._scoring.finish_check

    @property
    def reduction(self) -> str:
        return self._scoring.reduction

    # -- proposals --------------------------------------------------------------

    async def expand(
        self,
        node_id: int,
        n: int,
        *,
        whole: bool = False,
        temperature: float | None = None,
        prompt: Problem | None = None,
        revises: int | None = None,
        stream: str = "",
        logprobs: int | None = None,
    ) -> list[Node]:
        """Add ``n`` children under ``node_id``: next steps, or (``whole``) entire solutions.

        One request asks for all ``n`` when the endpoint honours ``n``; when it returns
        fewer, the rest comes from further requests (the policy remembers). Each request
        reserves its own worst case, and each child is in the tree as soon as its request
        returns, so a budget refusal midway loses nothing. A child at the last allowed depth is
        the rest of the solution, asked for in one call. ``prompt`` asks with another rendering
        of the problem (a revision's, which shows earlier attempts) whose children revise the
        attempt ``revises``; verifiers still see the problem itself. ``stream`` names requests
        whose seeds must not follow the node's own (see ``Proposals._request``). ``logprobs``
        asks for that many top logprobs a token, which the children keep as token confidences.
        With a completion judge, the open children it calls finished are finished.
        """
        children = await self._proposals.expand(
            node_id,
            n,
            whole=whole,
            temperature=temperature,
            prompt=prompt,
            revises=revises,
            stream=stream,
            logprobs=logprobs,
        )
        return await self._scoring.check_finished(children)

    async def stream_child(
        self,
        node_id: int,
        *,
        whole: bool = False,
        logprobs: int | None = None,
        keep: Callable[[Sequence[float], bool], bool] | None = None,
    ) -> Node:
        """Add one child under ``node_id``, streamed (a policy that streams: an HTTP server).

        ``keep`` is told each streamed piece's token confidences (ask for ``logprobs`` top
        logprobs to have them), the piece with the finish reason too, and once more, with
        none and ``done`` true, when the stream has ended, so it can judge the whole; when
        it says no, the stream is closed (or the finished child refused) and the child ends
        there, ``finish_reason="low_confidence"``. A stream cancelled from outside ends the
        same way, marked "cancelled". Either way the child is in the tree
        with what it streamed, and the budget charges that: its tokens counted from their
        logprob entries (or bounded by its text's bytes when the server sent none) and the
        prompt at its known count or bound."""
        return await self._proposals.stream_child(node_id, whole=whole, logprobs=logprobs, keep=keep)

    async def expand_many(
        self, widths: Mapping[int, int], *, temperature: float | None = None
    ) -> dict[int, list[Node]]:
        """Expand several nodes concurrently: ``widths`` maps a node to its number of children."""
        items = [(node, width) for node, width in widths.items() if width > 0]
        batches = await gather(
            [partial(self.expand, node, width, temperature=temperature) for node, width in items]
        )
        return {node: batch for (node, _), batch in zip(items, batches, strict=True)}

    async def rollout(
        self, node_id: int, *, temperature: float | None = None, max_steps: int | None = None
    ) -> Node:
        """Extend one path a step at a time until it finishes (or ``max_steps`` more steps);
        return its last node."""
        node = self.tree.node(node_id)
        steps = 0
        while not node.terminal and (max_steps is None or steps < max_steps):
            (node,) = await self.expand(node.id, 1, temperature=temperature)
            steps += 1
        return node

    def mark_cancelled(self) -> list[int]:
        """End every open path where it stands, its last step marked ``finish_reason=
        "cancelled"`` (a strategy that stopped its rollouts); their ids."""
        ended = [node.id for node in self.tree.open_leaves() if node.id != ROOT]
        for node_id in ended:
            self.tree.update(node_id, status=NodeStatus.DEAD_END, finish_reason="cancelled")
        return ended

    # -- scores -----------------------------------------------------------------

    async def score(self, node_ids: Sequence[int], *, probabilities: bool = False) -> list[float]:
        """Score the paths ending at ``node_ids`` (those not scored yet) in one batched
        verifier call, charged to the budget like any request; their path scores. A path
        that ended without an answer is never sent: it scores 0. Paths a strategy scored
        itself (DeepConf's confidences) need no verifier. ``probabilities``: the caller
        needs scores in [0, 1] (a Beta posterior), whatever the verifier promises."""
        return await self._scoring.score(node_ids, probabilities=probabilities)

    def path_score(self, node_id: int) -> float | None:
        return self._scoring.path_score(node_id)
