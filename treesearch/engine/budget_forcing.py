"""s1's budget forcing (Muennighoff et al. 2025): a whole solution's thinking held between
T0 and T tokens, for every strategy, since the context makes every request.

One trace, request by request (each charged to the budget like any other):

1. the thinking request: the solution asked for as usual, ``max_tokens`` = T (the thinking
   budget) when one is set;
2. while the model ended its thinking (closed it, or stopped) before T0 thinking tokens
   (``min_thinking``), at most k times (``max_waits``): the close tag and what followed are
   dropped, the wait word appended after a blank line, and the thinking continued, its
   ``max_tokens`` what is left of T;
3. with a thinking budget, when the trace has no reply yet (its thinking cut at T, or its
   reply cut short or blank, and no answer in it): the answer request, the thinking closed
   by the end tag and the answer cue, ``max_tokens`` = ``answer_tokens``.

The trace is one node: its thinking is every request's thinking joined, with the wait
words where they were appended; its text the reply of the last request (after the cue when
the answer request made it), the only part its answer is read from; its tokens all the
requests' completion tokens, ``reasoning_tokens`` the thinking's, and ``requests`` how many
requests made it. One node keeps a trace what every strategy expects of a whole solution
(one child, its answer in its own text) and the viewer shows it whole. A budget that
refuses a request midway ends the trace with what was served (no answer unless one came);
the refusal then stops the search as any other does. So does a deadline, a cancellation
or a failed request midway: the trace is recorded as it stood, then the search stops.

A continued thinking is sent as raw text, the think tags written by the client, so budget
forcing needs a completions endpoint: a chat server renders an assistant message to
continue through its chat template, and reasoning models' templates drop or re-render the
thinking of that message (DeepSeek-R1's keeps only what follows ``</think>``, Qwen3's opens
and closes an empty thinking before it), so the model would not see its own thinking.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from treesearch.engine.policy import Choice, Prefix
from treesearch.engine.steps import StepFormat
from treesearch.engine.thinking import ThinkTags
from treesearch.engine.tree import Node
from treesearch.errors import BudgetExhausted, ConfigError


@runtime_checkable
class RawTextPolicy(Protocol):
    """What continuing a thinking needs of a policy: the raw prompt it sends and the tags
    that mark a thinking in it."""

    think_tags: ThinkTags

    @property
    def api(self) -> str: ...

    def render_prompt(self, prefix: Prefix) -> str: ...


def forcing(step_format: StepFormat) -> bool:
    """Whether ``step_format`` holds whole solutions' thinking to a budget."""
    return step_format.thinking_budget is not None or step_format.min_thinking is not None


_NEEDS_COMPLETIONS = (
    "--thinking-budget and --min-thinking continue a thinking as raw text: they need --api "
    "completions (a chat template drops or re-renders an assistant message's thinking)"
)


def check_api(step_format: StepFormat, api: str) -> None:
    """Refuse a thinking budget over the chat API before any search starts (the command line's check)."""
    if forcing(step_format) and api != "completions":
        raise ConfigError(_NEEDS_COMPLETIONS)


def raw_text_policy(policy: object) -> RawTextPolicy:
    """``policy`` as one whose prompts are raw text, or one ConfigError saying why not."""
    if not isinstance(policy, RawTextPolicy) or policy.api != "completions":
        raise ConfigError(_NEEDS_COMPLETIONS)
    return policy


def opened_by(policy: object, problem: Prefix) -> bool:
    """Whether the prompt of ``problem`` (no steps) itself opens the thinking, as DeepSeek-R1
    distills' templates do (a tag the question quotes does not); never for a policy whose
    prompt is not raw text."""
    return isinstance(policy, RawTextPolicy) and policy.think_tags.opened_in(
        policy.render_prompt(problem), problem.problem.question
    )


def think_tags(policy: object) -> ThinkTags:
    return policy.think_tags if isinstance(policy, RawTextPolicy) else ThinkTags()


def raw_steps(path: list[Node], tags: ThinkTags, *, opened: bool, delimiter: str) -> tuple[str, ...]:
    """The steps of ``path`` as the model wrote them, each with what followed it, to
    continue: a step's thinking behind an open tag (unless the prompt or an earlier step
    opened it) and closed before the text that followed it, or where its end was seen
    (``thinking_closed``: a step that stopped at the blank line after the close tag); a step
    with thinking, no text and no end seen leaves the thinking open. A step cut by its
    length inside the thinking (``thinking_step_tokens``) is followed by the next with no
    delimiter, as one sentence goes on."""
    steps: list[str] = []
    inside, cut = opened, False
    for node in path:
        step = ""
        if node.thinking is not None:
            step = node.thinking if inside else f"{tags.open}\n{node.thinking}"
            inside = True
        if inside and (node.text or node.thinking_closed):
            step += f"\n{tags.close}" + (f"\n\n{node.text}" if node.text else "")
            inside = False
        else:
            step += node.text
        step = _glued("", step) if cut else step
        cut = inside and node.finish_reason == "length"
        steps.append(step + ("" if cut else delimiter))
    return tuple(steps)


# send(text after the prompt, max_tokens, a name for the request's seed): the choice of
# that one request, its thinking tokens (None: unknown) and its completion tokens.
Send = Callable[[str, int, str], Awaitable[tuple[Choice, int | None, int]]]


@dataclass(frozen=True, kw_only=True, slots=True)
class Forced:
    """A trace's requests made one: the choice as a node takes it (``tokens`` and
    ``reasoning_tokens`` all its requests'), how many requests, and whether the budget
    refused one."""

    choice: Choice
    requests: int
    exhausted: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class _Trace:
    thinking: str
    spent: int  # thinking tokens
    last: Choice  # the last request's choice
    tokens: int
    requests: int = 1
    waits: int = 0

    def closed(self) -> bool:
        """Whether the last request ended the thinking (the model closed it, or stopped)."""
        return bool(self.last.text.strip()) or self.last.finish_reason != "length"

    def unanswered(self, rules: StepFormat) -> bool:
        """Whether the trace still lacks its reply: the thinking was cut (at T: never closed),
        or the reply was cut by ``max_tokens`` or is blank, and no answer came. A closed
        thinking with a finished reply is kept whatever it says (a judge's "Judgment: 1"
        states no mathematical answer, and is the reply all the same)."""
        last = self.last
        cut = last.finish_reason == "length" or not last.text.strip()
        return cut and rules.answer(last.text)[1] is None

    def then(self, choice: Choice, thought: int | None, tokens: int, thinking: str) -> _Trace:
        return replace(self, thinking=thinking, spent=self.spent + (thought or 0), last=choice,
                       tokens=self.tokens + tokens, requests=self.requests + 1)  # fmt: skip


async def force(
    first: Choice, thought: int | None, tokens: int, *, rules: StepFormat, tags: ThinkTags, opened: bool,
    send: Send, keep: Callable[[Forced], None],
) -> None:  # fmt: skip
    """Hold the thinking of ``first`` (the thinking request's choice, its ``thought`` tokens
    of thinking and ``tokens`` in all) to ``rules``' budget with further requests made by
    ``send``; ``keep`` is told the trace as it stands after each request, so a cancellation
    or a failed request midway leaves the caller every request paid for. A choice without
    thinking is left as it is: the model did not think."""
    if first.thinking is None:
        return
    budget, least = rules.thinking_budget, rules.min_thinking
    head = "" if opened else f"{tags.open}\n"
    trace = _Trace(thinking=first.thinking, spent=thought or 0, last=first, tokens=tokens)
    parts = [first]
    keep(Forced(choice=_joined(trace, parts), requests=trace.requests))
    try:
        while (
            least is not None
            and trace.spent < least
            and trace.waits < rules.max_waits
            and trace.closed()
            and (budget is None or trace.spent < budget)
        ):
            nudged = f"{trace.thinking}\n\n{rules.wait_word}"
            limit = rules.max_tokens if budget is None else budget - trace.spent
            choice, more, served = await send(head + nudged, limit, f"wait{trace.waits}")
            trace = replace(trace.then(choice, more, served, _glued(nudged, choice.thinking or "")),
                            waits=trace.waits + 1)  # fmt: skip
            parts.append(choice)
            keep(Forced(choice=_joined(trace, parts), requests=trace.requests))
        if budget is not None and trace.unanswered(rules):
            ask = f"{head}{trace.thinking}\n{tags.close}\n\n{rules.answer_cue}"
            choice, more, served = await send(ask, rules.answer_tokens, "answer")
            cued = f"{rules.answer_cue} {choice.text.lstrip()}".strip()
            trace = trace.then(replace(choice, text=cued), more, served, trace.thinking)
            parts.append(choice)
            keep(Forced(choice=_joined(trace, parts), requests=trace.requests))
    except BudgetExhausted:
        keep(Forced(choice=_joined(trace, parts), requests=trace.requests, exhausted=True))


def _joined(trace: _Trace, parts: list[Choice]) -> Choice:
    """The trace as one choice: every request's token confidences, certainties and logprob
    in order (None when a request has none)."""

    def chained(values: list[tuple[float, ...] | None]) -> tuple[float, ...] | None:
        return None if any(v is None for v in values) else tuple(x for v in values for x in v or ())

    logprobs = [part.logprob for part in parts]
    return replace(
        trace.last,
        thinking=trace.thinking,
        tokens=trace.tokens,
        reasoning_tokens=trace.spent,
        confidences=chained([part.confidences for part in parts]),
        certainties=chained([part.certainties for part in parts]),
        logprob=None if any(v is None for v in logprobs) else sum(v for v in logprobs if v is not None),
    )


def _glued(thinking: str, more: str) -> str:
    """A continued thinking: the model's continuation after ``thinking``, the space between
    them (which the continuation's parsing stripped) put back unless it starts with
    punctuation."""
    if not more:
        return thinking
    return thinking + ("" if more[0] in ",.;:!?)\n" else " ") + more
