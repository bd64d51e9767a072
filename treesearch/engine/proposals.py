"""Proposals: the tree grown through the policy.

A node's children come from requests to the policy, each charged to the budget before it
is sent (``charged``), seeded from the node's place in the tree, and recorded in the tree
as soon as it returns. When an endpoint gives fewer choices than asked, further requests
top up; a streamed child can be cut short by the strategy's judgement. A reasoning model's
thinking is kept on the child apart from its text, and never read for an answer.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

import anyio

from treesearch.engine.budget import Budget
from treesearch.engine.budget_forcing import (
    Forced,
    Send,
    force,
    forcing,
    opened_by,
    raw_steps,
    raw_text_policy,
    think_tags,
)
from treesearch.engine.charge import charged
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
from treesearch.engine.steps import StepFormat
from treesearch.engine.taskgroups import gather
from treesearch.engine.thinking import joined
from treesearch.engine.tree import ROOT, Node, NodeStatus, SearchTree
from treesearch.errors import BudgetExhausted, ConfigError, EndpointError
from treesearch.logs import get_logger
from treesearch.problems import Problem

log = get_logger(__name__)

# A prefix the server has tokenized may be re-tokenized a little differently once a
# step is appended; this many tokens per appended step cover that.
_BOUNDARY_SLACK = 2


class Proposals:
    """One problem's requests to its policy, and the children they add to its tree."""

    def __init__(
        self,
        problem: Problem,
        policy: Policy,
        budget: Budget,
        tree: SearchTree,
        *,
        sampling: SamplingParams,
        step_format: StepFormat,
    ) -> None:
        self.problem = problem
        self.policy = policy
        self.budget = budget
        self.tree = tree
        self.sampling = sampling
        self.step_format = step_format
        self._requests_per_node: dict[tuple[int, str], int] = {}
        self._log = log.bind(problem_id=problem.id)

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
        """Add ``n`` children under ``node_id`` (see ``SearchContext.expand``)."""
        if revises is not None:
            stream = f"{stream}revises {self.tree.node(revises).position}:"
        whole = whole or self.tree.node(node_id).depth + 1 >= self.step_format.max_depth
        forced = whole and forcing(self.step_format)
        if forced:
            raw_text_policy(self.policy)
        params = replace(self._params(whole, temperature), logprobs=logprobs)
        prefix = self._prefix(node_id, prompt or self.problem)
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
                asked = replace(params, seed=seed)
                generation, thought = await self._generate(prefix, size, asked, prompt_bound)
                record = partial(self._record, node_id, whole=whole, revises=revises, request=request,
                                 own_prompt=prompt is None)  # fmt: skip
                if forced:
                    return await self._force(prefix, generation, thought, asked, record)
                return record(generation, thought.counts)

            batches = await gather([partial(one, size, *self._request(node_id, stream)) for size in sizes])
            got = [child for batch in batches for child in batch]
            if not got:
                raise EndpointError(self.policy.endpoint, None, "the server returned no choices")
            children.extend(got)
            wanted -= len(got)
        return children

    async def stream_child(
        self,
        node_id: int,
        *,
        whole: bool = False,
        logprobs: int | None = None,
        keep: Callable[[Sequence[float], bool], bool] | None = None,
    ) -> Node:
        """Add one child under ``node_id``, streamed (see ``SearchContext.stream_child``)."""
        policy = self.policy
        if not isinstance(policy, StreamingPolicy):
            raise ConfigError(f"{policy.endpoint} cannot stream; this strategy needs an HTTP server")
        whole = whole or self.tree.node(node_id).depth + 1 >= self.step_format.max_depth
        forced = whole and forcing(self.step_format)
        if forced:
            raw_text_policy(policy)
        request, seed = self._request(node_id)
        params = replace(self._params(whole, None), logprobs=logprobs, seed=seed)
        prefix = self._prefix(node_id, self.problem)
        prompt_bound = self._prompt_bound(node_id, prefix)
        known_prompt = self.tree.node(node_id).prompt_tokens
        parts: list[str] = []
        thinking: list[str] = []
        confidences: list[float] = []
        certainties: list[float] = []
        counted: int | None = 0
        finish: str | None = None
        reported: tuple[int | None, int | None] = (None, None)
        reported_reasoning: int | None = None

        def served(cut: str | None) -> tuple[Generation, _Thought]:
            """What streamed, settled."""
            text = "".join(parts)
            prompt_tokens, completion_tokens = reported
            apart = "".join(thinking)
            exact = prompt_tokens is not None and completion_tokens is not None and cut is None
            if not exact:  # a stream cut short sends no usage: its counted tokens, a known prompt
                exact = counted is not None and known_prompt is not None
                prompt_tokens = prompt_bound if known_prompt is None else known_prompt
                # The bound covers every token the text made: the thinking sent apart too, with
                # the tags a reasoning parser took out of it.
                tags = think_tags(policy)
                sent = tags.open + apart + tags.close + text if apart else text
                completion_tokens = (
                    counted
                    if counted is not None
                    else completion_token_bound(sent, params.max_tokens, params.stop)
                )
            # With no thinking told apart as it streamed, the whole text's rule: a close tag
            # with no open tag before it ends a thinking the server's template opened.
            thought, reply = joined(apart, text) if apart else think_tags(policy).split(text)
            choice = Choice(
                text=reply,
                finish_reason=cut or finish or "stop",
                tokens=completion_tokens,
                confidences=tuple(confidences) if confidences else None,
                certainties=tuple(certainties) if certainties else None,
                thinking=thought,
            )
            generation = Generation(
                choices=(choice,),
                prompt_tokens=prompt_tokens or 0,
                completion_tokens=completion_tokens or 0,
                estimated=not exact,
                reasoning_tokens=reported_reasoning if cut is None else None,
            )
            counts = _reasoning(generation)
            self.budget.settle(
                reservation,
                prompt_tokens or 0,
                completion_tokens or 0,
                estimated=not exact,
                reasoning_tokens=counts.total,
                reasoning_estimated=counts.estimated,
            )
            return generation, counts

        def record(
            cut: str | None,
            generation: Generation,
            counts: Sequence[int | None],
            requests: Sequence[int] = (),
        ) -> Node:
            made = self._record(node_id, generation, counts, whole=whole, request=request, requests=requests)
            (child,) = made
            if cut is not None:
                child = self.tree.update(child.id, status=NodeStatus.DEAD_END, answer=None, finish_reason=cut)
            return child

        # A stream cancelled after it sent something keeps that (settled in ``served``); one
        # cancelled before is abandoned by ``charged``. A whole trace held to a thinking
        # budget goes on once its stream is settled, its further requests asked whole.
        finished: tuple[Generation, _Thought] | None = None
        async with charged(self.budget, prompt_bound, params.max_tokens) as reservation:
            try:
                async with aclosing(policy.stream(prefix, params)) as pieces:
                    async for piece in pieces:
                        parts.append(piece.text)
                        thinking.append(piece.thinking)
                        confidences.extend(piece.confidences)
                        certainties.extend(piece.certainties)
                        if piece.tokens is None and (piece.text or piece.thinking):
                            counted = None
                        elif counted is not None:
                            counted += piece.tokens or 0
                        finish = piece.finish_reason or finish
                        if piece.completion_tokens is not None:
                            reported = (piece.prompt_tokens, piece.completion_tokens)
                            reported_reasoning = piece.reasoning_tokens
                        if keep is not None and not keep(piece.confidences, False):
                            break
                    else:
                        if keep is None or keep((), True):
                            finished = served(None)
            except anyio.get_cancelled_exc_class():
                if any(parts) or any(thinking):
                    record("cancelled", *_counted(served("cancelled")))
                raise
            if finished is None:
                return record("low_confidence", *_counted(served("low_confidence")))
        if not forced:
            return record(None, *_counted(finished))

        def recorded(
            generation: Generation, reasoning: Sequence[int | None], *, requests: Sequence[int] = ()
        ) -> list[Node]:
            return [record(None, generation, reasoning, requests)]

        (child,) = await self._force(prefix, *finished, params, recorded)
        return child

    async def _generate(
        self, prefix: Prefix, size: int, params: SamplingParams, prompt_bound: int
    ) -> tuple[Generation, _Thought]:
        """One request for ``size`` choices, reserved before it is sent and settled after."""
        async with charged(self.budget, prompt_bound, params.max_tokens, size) as reservation:
            generation = await self.policy.generate(prefix, reservation.choices, params)
            thought = _reasoning(generation)
            self.budget.settle(
                reservation,
                generation.prompt_tokens,
                generation.completion_tokens,
                estimated=generation.estimated,
                reasoning_tokens=thought.total,
                reasoning_estimated=thought.estimated,
            )
        if len(generation.choices) > reservation.choices:
            self.budget.overran(
                f"{len(generation.choices)} choices for n={reservation.choices}; kept those asked for"
            )
            generation = replace(generation, choices=generation.choices[: reservation.choices])
        return generation, thought

    async def _force(
        self, prefix: Prefix, generation: Generation, thought: _Thought, params: SamplingParams,
        record: _Record,
    ) -> list[Node]:  # fmt: skip
        """Each choice of a thinking request held to the thinking budget
        (``budget_forcing``), its further requests continuing ``prefix`` with raw text, and
        the traces recorded by ``record``. Every trace is recorded as it stands when a
        deadline, a cancellation or a failed request stops them (its requests were paid
        for), then that stop goes on; a budget refusal once all are recorded."""
        traces = [Forced(choice=replace(choice, reasoning_tokens=count), requests=1)
                  for choice, count in zip(generation.choices, thought.counts, strict=True)]  # fmt: skip

        def recorded() -> list[Node]:
            choices = tuple(trace.choice for trace in traces)
            counts = [choice.reasoning_tokens for choice in choices]
            return record(replace(generation, choices=choices), counts, requests=[t.requests for t in traces])

        try:
            await self._forcing(prefix, generation, thought, params, traces.__setitem__)
        except BaseException:  # a cancellation too: recorded (synchronously), then raised again
            recorded()
            raise
        children = recorded()
        if any(trace.exhausted for trace in traces):
            raise BudgetExhausted("a thinking budget's next request did not fit")
        return children

    async def _forcing(
        self, prefix: Prefix, generation: Generation, thought: _Thought, params: SamplingParams,
        keep: Callable[[int, Forced], None],
    ) -> None:  # fmt: skip
        """``force`` on each choice of ``generation``, ``keep`` told each trace's progress by
        its index."""
        policy = raw_text_policy(self.policy)
        tags, opened = policy.think_tags, opened_by(policy, prefix)
        known = None if generation.estimated else generation.prompt_tokens

        def sender(index: int) -> Send:
            async def send(text: str, max_tokens: int, name: str) -> tuple[Choice, int | None, int]:
                asked = Prefix(problem=prefix.problem, steps=(prefix.continuation() + text,), delimiter="")
                bound = (
                    self.policy.prompt_token_bound(asked) if known is None
                    else known + token_upper_bound(text) + _BOUNDARY_SLACK
                )  # fmt: skip
                seed = None if params.seed is None else zlib.crc32(f"{params.seed}:{index}:{name}".encode())
                more, counted = await self._generate(
                    asked, 1, replace(params, max_tokens=max_tokens, seed=seed), bound
                )
                if not more.choices:
                    raise EndpointError(self.policy.endpoint, None, "the server returned no choices")
                return more.choices[0], counted.counts[0], _tokens(more)[0]

            return send

        served = _tokens(generation)
        await gather([
            partial(force, choice, thought.counts[index], served[index], rules=self.step_format, tags=tags,
                    opened=opened, send=sender(index), keep=partial(keep, index))
            for index, choice in enumerate(generation.choices)
        ])  # fmt: skip

    def _prefix(self, node_id: int, problem: Problem) -> Prefix:
        """What continues the path ending at ``node_id``: its steps' texts joined by the
        delimiter, or where they thought, as the model wrote them (``raw_steps``: the
        thinking in its tags, a step cut inside it continued without a delimiter)."""
        path = self.tree.path(node_id)
        delimiter = self.step_format.delimiter
        if all(node.thinking is None for node in path):
            return Prefix(problem=problem, steps=tuple(node.text for node in path), delimiter=delimiter)
        opened = opened_by(self.policy, Prefix(problem=problem))
        steps = raw_steps(path, think_tags(self.policy), opened=opened, delimiter=delimiter)
        return Prefix(problem=problem, steps=steps, delimiter="")

    def _params(self, whole: bool, temperature: float | None) -> SamplingParams:
        fmt = self.step_format
        return replace(
            self.sampling,
            temperature=self.sampling.temperature if temperature is None else temperature,
            max_tokens=(fmt.thinking_budget or fmt.max_tokens) if whole else fmt.step_tokens,
            stop=fmt.end_stops if whole else fmt.step_stops,
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
        steps = ("", *prefix.steps)  # as sent: a step's thinking in its tags
        extra = 0
        for node, step in zip(reversed(path), reversed(steps), strict=True):
            if node.prompt_tokens is not None:
                return node.prompt_tokens + extra
            if node.id != ROOT:
                extra += token_upper_bound(step + prefix.delimiter) + _BOUNDARY_SLACK
        return self.policy.prompt_token_bound(prefix)

    def _record(
        self,
        parent_id: int,
        generation: Generation,
        reasoning: Sequence[int | None],
        *,
        whole: bool,
        revises: int | None = None,
        request: str,
        own_prompt: bool = True,
        requests: Sequence[int] = (),
    ) -> list[Node]:
        """The children ``generation`` adds under ``parent_id``; ``requests``: how many
        requests made each (one each when not given)."""
        # Another rendering's prompt (a revision's) is not the parent's prefix: its count
        # says nothing of the parent.
        known = self.tree.node(parent_id).prompt_tokens is not None
        if own_prompt and not generation.estimated and not known:
            self.tree.update(parent_id, prompt_tokens=generation.prompt_tokens)
        children = []
        for index, (choice, tokens) in enumerate(zip(generation.choices, _tokens(generation), strict=True)):
            text, answer, ran_on = self.step_format.answer(choice.text)  # the reply: never the thinking
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
                certainties=choice.certainties,
                thinking=choice.thinking,
                reasoning_tokens=reasoning[index],
                thinking_closed=choice.thinking_closed,
                requests=requests[index] if requests else 1,
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
        # A step that stopped within its thinking has more to think, though it has no text yet,
        # and so has one cut by --thinking-step-tokens there.
        capped = self.step_format.thinking_step_tokens is not None and choice.finish_reason == "length"
        within = bool(choice.thinking) and not choice.text.strip()
        ended = ended or (choice.finish_reason != "stop" and not (capped and within)) or not (
            choice.text.strip() or choice.thinking
        )
        return NodeStatus.DEAD_END if ended else NodeStatus.OPEN


class _Record(Protocol):
    """Records a request's children: its generation, each choice's thinking tokens and how
    many requests made each."""

    def __call__(
        self, generation: Generation, reasoning: Sequence[int | None], *, requests: Sequence[int] = ()
    ) -> list[Node]: ...


def _counted(served: tuple[Generation, _Thought]) -> tuple[Generation, tuple[int | None, ...]]:
    generation, thought = served
    return generation, thought.counts


def _tokens(generation: Generation) -> list[int]:
    """Each choice's completion tokens: its own count, or its share by characters (thinking
    included) of the request's total."""
    sizes = [len(choice.text) + len(choice.thinking or "") for choice in generation.choices]
    total = sum(sizes) or 1
    return [
        round(generation.completion_tokens * size / total) if choice.tokens is None else choice.tokens
        for choice, size in zip(generation.choices, sizes, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class _Thought:
    """A request's thinking tokens: each choice's (None where unknown), their total, and
    whether that total is a share estimated by characters."""

    counts: tuple[int | None, ...]
    total: int
    estimated: bool


def _reasoning(generation: Generation) -> _Thought:
    """The thinking tokens of ``generation``'s choices. A server's count is split among the
    choices by the length of their thinking; without one, a choice's count is its thinking's
    share by characters of its completion tokens (estimated), unless the choice knows it. A
    server that counts thinking it does not show (OpenAI's) gives a total no choice claims."""
    choices = generation.choices
    thought = [len(choice.thinking or "") for choice in choices]
    reported = generation.reasoning_tokens
    if reported is not None:
        whole = sum(thought)
        counts = tuple(
            choice.reasoning_tokens if choice.reasoning_tokens is not None
            else round(reported * size / whole) if whole else None
            for choice, size in zip(choices, thought, strict=True)
        )  # fmt: skip
        return _Thought(counts, reported, False)
    counts = tuple(
        choice.reasoning_tokens if choice.reasoning_tokens is not None
        else round(tokens * size / (size + len(choice.text))) if size else None
        for choice, size, tokens in zip(choices, thought, _tokens(generation), strict=True)
    )  # fmt: skip
    estimated = any(size and c.reasoning_tokens is None for c, size in zip(choices, thought, strict=True))
    return _Thought(counts, sum(count or 0 for count in counts), estimated)
