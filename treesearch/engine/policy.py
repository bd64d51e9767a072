"""The Policy protocol: what a strategy's proposals come from.

A Policy turns a prefix (the problem and the steps so far) into continuations.
One ``generate`` call is one request to one endpoint; the SearchContext above
it reserves the budget for that request, tops up when an endpoint gives fewer
choices than asked, and records the results in the tree. Adapters (OpenAI-
compatible servers, an embedded llama.cpp model) live in ``treesearch.backends``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from treesearch.answers.certainty import bounded_logprob
from treesearch.engine.options import SHARES, Range, option
from treesearch.problems import Problem


@dataclass(frozen=True, kw_only=True, slots=True)
class SamplingParams:
    """Decoding settings of one request. ``stop`` is empty when a whole solution is wanted.
    The fields declared as options are set on the command line (SearchConfig checks their
    ranges: one of these is made for every request); the rest come from the step format and
    the strategy. ``vocab_size`` is never sent: it says how to read the top logprobs."""

    temperature: float = option(0.8, "sampling temperature", group="search", range=Range(float, 0, 5))
    top_p: float = option(1.0, "nucleus sampling's probability mass", group="search", range=SHARES)
    max_tokens: int = 256
    stop: tuple[str, ...] = ("\n\n",)
    seed: int | None = option(None, "sampling seed (default: none)", group="search", parse=int)
    logprobs: int | None = None
    vocab_size: int = option(
        151_936,
        "V, the vocabulary behind a token's self-certainty estimated from its top logprobs "
        "(default: Qwen2.5's and Qwen3's 151,936; V ≫ k barely matters)",
        group="search",
        range=Range(int, 2),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Prefix:
    """What to continue: the problem and the steps already taken, joined by ``delimiter``."""

    problem: Problem
    steps: tuple[str, ...] = ()
    delimiter: str = "\n\n"

    def continuation(self) -> str:
        """The text after the prompt: every step followed by the delimiter, so the next starts clean."""
        return "".join(step + self.delimiter for step in self.steps)


@dataclass(frozen=True, kw_only=True, slots=True)
class Choice:
    """One continuation. ``stop_reason`` is the stop string matched, when the server says so
    (vLLM does; llama.cpp and OpenAI do not), and None for end-of-sequence or unknown.
    ``confidences`` are its tokens' confidences when top logprobs were asked for (see
    ``token_confidence``), ``certainties`` their self-certainties (``answers.certainty``).

    A reasoning model's continuation comes in two parts: ``thinking`` (None when the model
    did not think), and ``text``, what follows the thinking, the only part an answer is
    read from. ``reasoning_tokens`` is the thinking's share of ``tokens``, when known;
    ``thinking_closed`` whether the thinking's end was seen, which an empty ``text`` cannot
    tell (a step that stopped at the blank line after the close tag)."""

    text: str
    finish_reason: str
    stop_reason: str | None = None
    tokens: int | None = None
    logprob: float | None = None
    confidences: tuple[float, ...] | None = None
    certainties: tuple[float, ...] | None = None
    thinking: str | None = None
    reasoning_tokens: int | None = None
    thinking_closed: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Generation:
    """The choices of one request and what the server charged for it.

    ``estimated`` is true when the server reported no usage and the counts are
    tokenizer-free upper bounds. ``reasoning_tokens`` is the part of the completion tokens
    spent thinking, as the server reported it (``completion_tokens_details``), or None when
    it reported none.
    """

    choices: tuple[Choice, ...]
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    reasoning_tokens: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Piece:
    """A streamed part of one continuation: its new text (``thinking`` when the part is of
    the thinking, ``text`` when of what follows it), how many tokens it carries (its logprob
    entries; None when the server sent none) and their confidences and self-certainties; the
    last piece has the finish reason, and the server's counts when it sent usage
    (``reasoning_tokens`` when the usage counted the thinking apart)."""

    text: str = ""
    thinking: str = ""
    tokens: int | None = None
    confidences: tuple[float, ...] = ()
    certainties: tuple[float, ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None


@runtime_checkable
class Policy(Protocol):
    """Proposes continuations of a prefix. Implementations keep their own endpoint state."""

    @property
    def endpoint(self) -> str:
        """A label for events and errors (a base URL, or a model path)."""
        ...

    def choices_per_request(self, n: int) -> int:
        """How many of ``n`` wanted choices one request should ask for (n, unless the
        endpoint has shown it returns fewer)."""
        ...

    def prompt_token_bound(self, prefix: Prefix) -> int:
        """The most tokens the rendered prompt of ``prefix`` can take (before any usage is known)."""
        ...

    async def generate(self, prefix: Prefix, n: int, params: SamplingParams) -> Generation:
        """One request for up to ``n`` continuations of ``prefix``."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class StreamingPolicy(Policy, Protocol):
    """A Policy that can also stream one continuation, so a strategy can stop it midway."""

    def stream(self, prefix: Prefix, params: SamplingParams) -> AsyncGenerator[Piece, None]:
        """One request for one continuation of ``prefix``, streamed; closing the iterator
        ends the request."""
        ...


def token_confidence(top_logprobs: Sequence[float]) -> float:
    """DeepConf's token confidence C = −(1/k) Σ of the position's top-k logprobs: high where
    the model was sure (one likely token, the rest far below). Each logprob is bounded as
    self-certainty's are (``answers.certainty.bounded_logprob``), so C is finite."""
    return -sum(map(bounded_logprob, top_logprobs)) / len(top_logprobs) if top_logprobs else 0.0


def token_upper_bound(text: str) -> int:
    """A count no tokenizer exceeds for ``text``: every token covers at least one UTF-8 byte."""
    return len(text.encode("utf-8"))


def completion_token_bound(text: str, max_tokens: int, stop: Sequence[str] = ()) -> int:
    """What a server that reports no usage is charged for one choice: an upper bound, not a
    guess. Every token covers a byte of ``text``, plus the stop string or end-of-sequence
    token it generated but did not return; never more than ``max_tokens``."""
    unseen = max((token_upper_bound(s) for s in stop), default=0) + 1
    return min(max_tokens, token_upper_bound(text) + unseen)
