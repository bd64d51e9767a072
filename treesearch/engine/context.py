"""The SearchContext: the only way a strategy reaches the world.

A strategy asks the context to expand nodes and to score them; the context
reserves the budget for every request, tops up when an endpoint gives fewer
choices than asked, records every step in the SearchTree, and emits events.
Strategies never see HTTP and never count tokens.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from treesearch.answers.equivalence import AnswerEquivalence, default_equivalence
from treesearch.answers.extract import RUN_ON_MARKERS, extract_answer, extract_final_value, split_run_on
from treesearch.engine.budget import Budget
from treesearch.engine.policy import (
    Choice,
    Generation,
    Policy,
    Prefix,
    SamplingParams,
    StreamingPolicy,
    completion_token_bound,
    token_upper_bound,
)
from treesearch.engine.tree import ROOT, Node, NodeStatus, SearchTree
from treesearch.engine.verify import Verifier, check_scores, reduce_scores, verifier_name
from treesearch.errors import BudgetExhausted, ConfigError, EndpointError, VerifierError
from treesearch.logs import get_logger
from treesearch.problems import Problem

if TYPE_CHECKING:
    from treesearch.engine.config import SearchConfig

log = get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class StepFormat:
    """What a step is: text up to ``delimiter`` (at most ``max_step_tokens``), a path at most
    ``max_depth`` steps deep; the step at the last allowed depth asks for the rest of the
    solution in one call. ``end_stops`` are further stop strings that end a solution (say
    "\\nQ:" after a few-shot prompt); text that runs on into a next question anyway is cut
    there. A whole solution in one call may use ``max_tokens``. ``answer_pattern`` is a
    regular expression that states the final answer (group ``answer``, else group 1), in
    place of the built-in ``\\boxed{}`` / "The answer is" rules."""

    delimiter: str = "\n\n"
    end_stops: tuple[str, ...] = ()
    max_step_tokens: int = 256
    max_depth: int = 40
    max_tokens: int = 1024
    answer_pattern: str | None = None

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise ConfigError("the step delimiter must not be empty")
        if self.max_step_tokens <= 0 or self.max_depth <= 0 or self.max_tokens <= 0:
            raise ConfigError("max step tokens, max depth and max tokens must be positive")
        if self.answer_pattern is not None:
            try:
                re.compile(self.answer_pattern)
            except re.error as exc:
                raise ConfigError(f"answer pattern {self.answer_pattern!r}: {exc}") from None

    def answer(self, text: str) -> tuple[str, str | None, bool]:
        """A step's text cut before any run-on into a next question, its final answer (or
        None), and whether it ran on. A step starts on a new line (its delimiter ended the
        one before), so a next question at its very start is a run-on too."""
        cut, ran_on = split_run_on("\n" + text, (*RUN_ON_MARKERS, *self.end_stops))
        return cut[1:], extract_answer(cut[1:], self.answer_pattern), ran_on


# A prefix the server has tokenized may be re-tokenized a little differently once a
# step is appended; this many tokens per appended step cover that.
_BOUNDARY_SLACK = 2


class SearchContext:
    """One problem's search: its tree, budget, policy, and optional verifier and
    completion judge (a verifier whose score is P(the path has reached its answer))."""

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
        self.policy = policy
        self.budget = budget
        self.sampling = sampling
        self.step_format = step_format
        self.verifier = verifier
        self.finish_check = finish_check
        self.reduction = reduction
        self.equivalence = equivalence or default_equivalence()
        self.tree = SearchTree(problem.id, problem.prompt or problem.question)
        # The finished paths the strategy offers for aggregation so far (None: every finished
        # path in the tree); kept up to date as the search goes, so a search cut short by its
        # budget still aggregates by its own rule.
        self.candidates: list[int] | None = None
        # What the search ran when a strategy chose another for it (adaptive), and why: its
        # configuration decides the aggregation.
        self.chosen: SearchConfig | None = None
        self.choice: dict[str, Any] | None = None
        self._requests_per_node: dict[tuple[int, str], int] = {}
        self._log = log.bind(problem_id=problem.id)

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
        whose seeds must not follow the node's own (see ``_request``). ``logprobs`` asks for that
        many top logprobs a token, which the children keep as token confidences.
        """
        if revises is not None:
            stream = f"{stream}revises {self.tree.node(revises).position}:"
        whole = whole or self.tree.node(node_id).depth + 1 >= self.step_format.max_depth
        params = replace(self._params(whole, temperature), logprobs=logprobs)
        prefix = Prefix(
            problem=prompt or self.problem,
            steps=self.tree.steps(node_id),
            delimiter=self.step_format.delimiter,
        )
        prompt_bound = (
            self._prompt_bound(node_id, prefix) if prompt is None else self.policy.prompt_token_bound(prefix)
        )
        children: list[Node] = []
        wanted = n
        while wanted > 0:
            per_request = max(1, self.policy.choices_per_request(wanted))
            sizes = [per_request] * (wanted // per_request)
            if wanted % per_request:
                sizes.append(wanted % per_request)

            async def one(size: int, request: str, seed: int | None) -> list[Node]:
                reservation = await self.budget.reserve(prompt_bound, params.max_tokens, size)
                try:
                    with self.budget.metered(reservation):
                        generation = await self.policy.generate(
                            prefix, reservation.choices, replace(params, seed=seed)
                        )
                except anyio.get_cancelled_exc_class():
                    self.budget.abandon(reservation)
                    raise
                except BaseException:
                    self.budget.release(reservation)
                    raise
                self.budget.settle(
                    reservation,
                    generation.prompt_tokens,
                    generation.completion_tokens,
                    estimated=generation.estimated,
                )
                if len(generation.choices) > reservation.choices:
                    self.budget.overran(
                        f"{len(generation.choices)} choices for n={reservation.choices}; kept those asked for"
                    )
                    generation = replace(generation, choices=generation.choices[: reservation.choices])
                return self._record(
                    node_id, generation, whole, revises, request=request, own_prompt=prompt is None
                )

            batches = await gather([partial(one, size, *self._request(node_id, stream)) for size in sizes])
            got = [child for batch in batches for child in batch]
            if not got:
                raise EndpointError(self.policy.endpoint, None, "the server returned no choices")
            children.extend(got)
            wanted -= len(got)
        if self.finish_check is not None:
            children = await self._check_finished(children)
        return children

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
        policy = self.policy
        if not isinstance(policy, StreamingPolicy):
            raise ConfigError(f"{policy.endpoint} cannot stream; this strategy needs an HTTP server")
        whole = whole or self.tree.node(node_id).depth + 1 >= self.step_format.max_depth
        request, seed = self._request(node_id)
        params = replace(self._params(whole, None), logprobs=logprobs, seed=seed)
        prefix = Prefix(
            problem=self.problem, steps=self.tree.steps(node_id), delimiter=self.step_format.delimiter
        )
        prompt_bound = self._prompt_bound(node_id, prefix)
        known_prompt = self.tree.node(node_id).prompt_tokens
        reservation = await self.budget.reserve(prompt_bound, params.max_tokens, 1)
        parts: list[str] = []
        confidences: list[float] = []
        counted: int | None = 0
        finish: str | None = None
        reported: tuple[int | None, int | None] = (None, None)

        def record(cut: str | None) -> Node:
            text = "".join(parts)
            prompt_tokens, completion_tokens = reported
            exact = prompt_tokens is not None and completion_tokens is not None and cut is None
            if not exact:  # a stream cut short sends no usage: its counted tokens, a known prompt
                exact = counted is not None and known_prompt is not None
                prompt_tokens = prompt_bound if known_prompt is None else known_prompt
                completion_tokens = (
                    counted
                    if counted is not None
                    else completion_token_bound(text, params.max_tokens, params.stop)
                )
            self.budget.settle(reservation, prompt_tokens or 0, completion_tokens or 0, estimated=not exact)
            choice = Choice(
                text=text,
                finish_reason=cut or finish or "stop",
                tokens=completion_tokens,
                confidences=tuple(confidences) if confidences else None,
            )
            generation = Generation(
                choices=(choice,),
                prompt_tokens=prompt_tokens or 0,
                completion_tokens=completion_tokens or 0,
                estimated=not exact,
            )
            (child,) = self._record(node_id, generation, whole, request=request)
            if cut is not None:
                child = self.tree.update(child.id, status=NodeStatus.DEAD_END, answer=None, finish_reason=cut)
            return child

        try:
            with self.budget.metered(reservation):
                async with aclosing(policy.stream(prefix, params)) as pieces:
                    async for piece in pieces:
                        parts.append(piece.text)
                        confidences.extend(piece.confidences)
                        if piece.tokens is None and piece.text:
                            counted = None
                        elif counted is not None:
                            counted += piece.tokens or 0
                        finish = piece.finish_reason or finish
                        if piece.completion_tokens is not None:
                            reported = (piece.prompt_tokens, piece.completion_tokens)
                        if keep is not None and not keep(piece.confidences, False):
                            break
                    else:
                        if keep is None or keep((), True):
                            return record(None)
        except anyio.get_cancelled_exc_class():
            if parts:
                record("cancelled")
            else:
                self.budget.abandon(reservation)
            raise
        except BaseException:
            self.budget.release(reservation)
            raise
        return record("low_confidence")

    async def _check_finished(self, children: list[Node]) -> list[Node]:
        """Ask the completion judge which open children already hold a final answer; those
        become finished, with the value their last line states as the answer (a path the
        judge calls finished that states no value is a dead end, never an answer of prose)."""
        assert self.finish_check is not None
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

    async def _judge(
        self, verifier: Verifier, paths: Sequence[Sequence[str]], *, probabilities: bool = False
    ) -> list[list[float]]:
        """The verifier's step scores of ``paths``, charged to the budget; every score checked
        where it enters (see ``check_scores``)."""
        bound = verifier.cost_bound(self.problem, paths)
        reservation = await self.budget.reserve(
            bound.prompt_tokens, bound.completion_tokens, requests=bound.requests
        )
        try:
            with self.budget.metered(reservation):
                scored = await verifier.score(self.problem, paths)
        except BudgetExhausted:
            # A retry was refused, but other requests of the call may have been served:
            # charge its worst case rather than nothing.
            self.budget.settle(
                reservation,
                bound.prompt_tokens,
                bound.completion_tokens,
                estimated=True,
                verifier=verifier is self.verifier,
            )
            raise
        except anyio.get_cancelled_exc_class():
            self.budget.abandon(reservation, verifier=verifier is self.verifier)
            raise
        except BaseException:
            self.budget.release(reservation)
            raise
        self.budget.settle(
            reservation,
            scored.cost.prompt_tokens,
            scored.cost.completion_tokens,
            estimated=scored.estimated,
            requests=scored.cost.requests,
            verifier=verifier is self.verifier,
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

    def path_score(self, node_id: int) -> float | None:
        scores = self.tree.node(node_id).scores
        return None if scores is None else reduce_scores(scores, self.reduction)

    # -- internals --------------------------------------------------------------

    def _params(self, whole: bool, temperature: float | None) -> SamplingParams:
        fmt = self.step_format
        return replace(
            self.sampling,
            temperature=self.sampling.temperature if temperature is None else temperature,
            max_tokens=fmt.max_tokens if whole else fmt.max_step_tokens,
            stop=fmt.end_stops if whole else (fmt.delimiter, *fmt.end_stops),
        )

    def _request(self, node_id: int, stream: str = "") -> tuple[str, int | None]:
        """The next request under ``node_id``: its name (its ``stream`` and how many requests
        of that stream the node sent before), which with a choice's index places each child
        in the tree (``Node.position``), and its seed, drawn from the node's position and that
        name. Neither depends on node ids, which follow arrival order, so a seeded search
        repeats under any scheduling, latency or concurrency. Requests of another ``stream``
        (a probe's, a revision's) draw apart from the node's own, so they neither repeat its
        samples nor depend on when they were sent."""
        count = self._requests_per_node.get((node_id, stream), 0)
        self._requests_per_node[node_id, stream] = count + 1
        request = f"{stream}{count}"
        if self.sampling.seed is None:
            return request, None
        key = f"{self.sampling.seed}:{self.problem.id}:{self.tree.node(node_id).position}:{request}"
        return request, zlib.crc32(key.encode())

    def _prompt_bound(self, node_id: int, prefix: Prefix) -> int:
        """The most prompt tokens this prefix can take: the exact count the server reported
        for the nearest ancestor plus a byte bound for the steps after it, or the policy's
        own bound before any count is known."""
        path = [self.tree.node(ROOT), *self.tree.path(node_id)]
        extra = 0
        for node in reversed(path):
            if node.prompt_tokens is not None:
                return node.prompt_tokens + extra
            if node.id != ROOT:
                extra += token_upper_bound(node.text + prefix.delimiter) + _BOUNDARY_SLACK
        return self.policy.prompt_token_bound(prefix)

    def _record(
        self,
        parent_id: int,
        generation: Generation,
        whole: bool,
        revises: int | None = None,
        *,
        request: str,
        own_prompt: bool = True,
    ) -> list[Node]:
        # Another rendering's prompt (a revision's) is not the parent's prefix: its count
        # says nothing of the parent.
        known = self.tree.node(parent_id).prompt_tokens is not None
        if own_prompt and not generation.estimated and not known:
            self.tree.update(parent_id, prompt_tokens=generation.prompt_tokens)
        total_chars = sum(len(choice.text) for choice in generation.choices) or 1
        children = []
        for index, choice in enumerate(generation.choices):
            tokens = choice.tokens
            if tokens is None:
                tokens = round(generation.completion_tokens * len(choice.text) / total_chars)
            text, answer, ran_on = self.step_format.answer(choice.text)
            child = self.tree.add_child(
                parent_id,
                place=f"{request}.{index}",
                text=text,
                status=self._status(choice, answer, whole or ran_on),
                finish_reason=choice.finish_reason,
                answer=answer,
                tokens=tokens,
                logprob=choice.logprob,
                revises=revises,
                confidences=choice.confidences,
            )
            children.append(child)
            self._log.debug(
                "node_added",
                node_id=child.id,
                parent=parent_id,
                depth=child.depth,
                status=child.status.value,
                tokens=tokens,
            )
        return children

    def _status(self, choice: Choice, answer: str | None, ended: bool) -> NodeStatus:
        if answer is not None:
            return NodeStatus.ANSWERED
        ended = ended or choice.finish_reason != "stop" or not choice.text.strip()
        return NodeStatus.DEAD_END if ended else NodeStatus.OPEN

    def _verifier_steps(self, node_id: int) -> list[str]:
        """A path's steps for a verifier: a whole solution in one node splits at the delimiter."""
        delimiter = self.step_format.delimiter
        return [part for node in self.tree.path(node_id) for part in node.text.split(delimiter) if part]


async def gather(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run calls concurrently in one task group and return their results in order.

    A budget refusal lets the calls already in flight finish (their steps are in the
    tree) and is raised after them; any other failure cancels the rest. Either way the
    error surfaces as itself, not as an exception group.
    """
    if len(calls) == 1:
        return [await calls[0]()]
    results: list[T | None] = [None] * len(calls)
    refused: list[BudgetExhausted] = []

    async def run(index: int, call: Callable[[], Awaitable[T]]) -> None:
        try:
            results[index] = await call()
        except BudgetExhausted as exc:
            refused.append(exc)

    try:
        async with anyio.create_task_group() as group:
            for index, call in enumerate(calls):
                group.start_soon(run, index, call)
    except BaseExceptionGroup as failure:
        raise most_telling(failure) from None
    if refused:
        raise refused[0]
    return results  # type: ignore[return-value]


def most_telling(failure: BaseException) -> BaseException:
    """The leaf of a (nested) exception group to report: anything before BudgetExhausted."""
    if not isinstance(failure, BaseExceptionGroup):
        return failure
    leaves = [most_telling(inner) for inner in failure.exceptions]
    return next((leaf for leaf in leaves if not isinstance(leaf, BudgetExhausted)), leaves[0])
