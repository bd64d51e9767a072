"""Policy over any OpenAI-compatible server: vLLM, SGLang, llama.cpp, Ollama, OpenAI.

Two modes. ``completions`` continues a raw prompt (the default: base models
need it, and an unchanged prefix lets vLLM's prefix cache hit). ``chat`` sends
the problem as a user message and the steps so far as an assistant message the
server continues (vLLM's ``continue_final_message``).

Responses are read as plain JSON rather than SDK models: cheaper per request,
and it keeps vLLM's ``stop_reason``, which tells a step delimiter from the end
of the sequence. An endpoint that returns fewer choices than ``n`` asked is
remembered; the SearchContext then tops up with further requests.

A reasoning model's thinking is read apart from its reply (``treesearch.engine.thinking``):
from ``reasoning_content`` or ``reasoning`` where a reasoning parser sent it apart (whole
and streamed), else from the think tags in the text; the reply alone is the choice's text.
``usage.completion_tokens_details.reasoning_tokens`` is its count, where a server gives it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Literal

from treesearch.answers.certainty import token_certainty
from treesearch.engine.policy import (
    Choice,
    Generation,
    Piece,
    Prefix,
    SamplingParams,
    completion_token_bound,
    token_confidence,
)
from treesearch.engine.policy import token_upper_bound as byte_bound
from treesearch.engine.thinking import ThinkingSplitter, ThinkTags, joined
from treesearch.errors import ConfigError, EndpointError
from treesearch.logs import get_logger

from .endpoint import EndpointClient, JsonEndpoint

log = get_logger(__name__)

DEFAULT_TEMPLATE = (
    "Solve the following problem step by step. Separate the steps with a blank line and end"
    ' with "The answer is X." where X is the final answer.\n\n'
    "Problem: {question}\n\nSolution:\n"
)
DEFAULT_SYSTEM_PROMPT = (
    "Solve the problem step by step. Separate the steps with a blank line and end with"
    ' "The answer is X." where X is the final answer.'
)
Api = Literal["completions", "chat"]


class OpenAIPolicy(EndpointClient):
    """A Policy over one OpenAI-compatible server; its concurrency limit, retries and
    transport live in its Endpoint."""

    def __init__(
        self,
        base_url: str | JsonEndpoint,
        model: str,
        *,
        api: Api = "completions",
        prompt_template: str = DEFAULT_TEMPLATE,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        continue_final_message: bool = True,
        think_tags: ThinkTags | None = None,
        **endpoint_options: Any,
    ) -> None:
        """``base_url`` is a URL (``endpoint_options`` go to its Endpoint: api_key,
        concurrency, timeout_s, retry, transport) or an endpoint shared with others
        (an Endpoint, or the embedded llama.cpp backend); ``think_tags`` mark a thinking in
        raw text (default: ``<think>`` and ``</think>``)."""
        if api not in ("completions", "chat"):
            raise ConfigError(f"unknown api {api!r}; choose completions or chat")
        if "{question}" not in prompt_template:
            raise ConfigError("the prompt template needs a {question} field")
        super().__init__(base_url, endpoint_options)
        self.model = model
        self.api = api
        self.prompt_template = prompt_template
        self.system_prompt = system_prompt
        self.continue_final_message = continue_final_message
        self.think_tags = think_tags or ThinkTags()
        self._max_choices: int | None = None
        self._short: int | None = None  # the choices of the last answer short of n
        self._path = "/completions" if api == "completions" else "/chat/completions"

    @property
    def endpoint(self) -> str:
        return self.http.base_url

    def choices_per_request(self, n: int) -> int:
        return n if self._max_choices is None else min(n, self._max_choices)

    def prompt_token_bound(self, prefix: Prefix) -> int:
        if self.api == "completions":
            return byte_bound(self.render_prompt(prefix)) + 4  # BOS and friends
        messages = self.render_messages(prefix)
        return sum(byte_bound(m["content"]) + 16 for m in messages) + 32  # template overhead

    # -- rendering --------------------------------------------------------------

    def render_prompt(self, prefix: Prefix) -> str:
        problem = prefix.problem
        head = problem.prompt or self.prompt_template.format(question=problem.question)
        return head + prefix.continuation()

    def render_messages(self, prefix: Prefix) -> list[dict[str, str]]:
        """The system message (the problem's own system messages, then the policy's prompt,
        which asks for the answer format the search reads), the problem's earlier turns, the
        question, and the steps so far as the assistant's message to continue."""
        problem = prefix.problem
        earlier = [dict(m) for m in problem.history if m["role"] not in ("system", "developer")]
        system = [m["content"] for m in problem.history if m["role"] in ("system", "developer")]
        system += [] if self.system_prompt is None else [self.system_prompt]
        messages = [{"role": "system", "content": "\n\n".join(system)}] if system else []
        messages += earlier
        messages.append({"role": "user", "content": problem.prompt or problem.question})
        if prefix.steps:
            messages.append({"role": "assistant", "content": prefix.continuation()})
        return messages

    # -- requests ---------------------------------------------------------------

    async def ping(self) -> None:
        await self.http.ping()

    async def generate(self, prefix: Prefix, n: int, params: SamplingParams) -> Generation:
        raw = await self.http.post(self._path, self._body(prefix, n, params))
        return self._parse(raw, prefix, n, params)

    async def stream(self, prefix: Prefix, params: SamplingParams) -> AsyncGenerator[Piece, None]:
        """The pieces of one streamed continuation; a piece's text that may start a think tag
        waits for the next piece, and what still waits at the end comes in a last piece."""
        streaming = getattr(self.http, "stream", None)
        if streaming is None:
            raise ConfigError(f"{self.endpoint} does not stream; streaming needs an HTTP server")
        body = self._body(prefix, 1, params) | {"stream": True, "stream_options": {"include_usage": True}}
        splitter = ThinkingSplitter(self.think_tags, inside=self._inside(prefix))
        counted = False  # the pieces carried token counts (logprobs)
        async with aclosing(streaming(self._path, body)) as events:
            async for event in events:
                try:
                    piece = self._piece(event, splitter, params.vocab_size)
                except (KeyError, TypeError, AttributeError, IndexError) as exc:
                    raise EndpointError(self.endpoint, 200, f"unexpected stream event: {exc!r}") from exc
                counted = counted or piece.tokens is not None
                yield piece
        thinking, text = splitter.flush()
        if thinking or text:  # its tokens came with the pieces before
            yield Piece(text=text, thinking=thinking, tokens=0 if counted else None)

    def _piece(self, event: dict[str, Any], splitter: ThinkingSplitter, vocab_size: int) -> Piece:
        prompt_tokens, completion_tokens, reasoning_tokens = _usage(event.get("usage")) or (None, None, None)
        if not event.get("choices"):
            return Piece(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                reasoning_tokens=reasoning_tokens,
            )
        choice = event["choices"][0]
        logprobs = choice.get("logprobs") or {}
        if self.api == "completions":
            raw, apart = choice.get("text") or "", ""
            entries = logprobs.get("token_logprobs")
            tops = [list((top or {}).values()) for top in logprobs.get("top_logprobs") or ()]
        else:
            delta = choice.get("delta") or {}
            raw, apart = delta.get("content") or "", _reasoning(delta)
            entries = logprobs.get("content")
            tops = [[top["logprob"] for top in t.get("top_logprobs") or ()] for t in entries or ()]
        thinking, text = splitter.feed(raw)
        finish = choice.get("finish_reason")
        if finish == "stop" and "stop_reason" in choice and choice["stop_reason"] is None:
            finish = "eos"  # vLLM: the model ended the sequence
        return Piece(
            text=text,
            thinking=apart + thinking,
            tokens=None if entries is None else len(entries),
            confidences=tuple(token_confidence(top) for top in tops if top),
            certainties=tuple(token_certainty(top, vocab_size) for top in tops if top),
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            reasoning_tokens=reasoning_tokens,
        )

    def _inside(self, prefix: Prefix) -> bool:
        """Whether the text the model continues ends inside a thinking (a template that opens
        one, or steps that stopped within one); a tag the question quotes does not count."""
        if self.api == "chat":  # the question is in a message of its own
            return self.think_tags.opened_in(prefix.continuation())
        return self.think_tags.opened_in(self.render_prompt(prefix), prefix.problem.question)

    def _body(self, prefix: Prefix, n: int, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "n": n,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if self.api == "completions":
            body["prompt"] = self.render_prompt(prefix)
            if params.logprobs is not None:
                body["logprobs"] = params.logprobs
        else:
            body["messages"] = self.render_messages(prefix)
            if params.logprobs is not None:
                body["logprobs"] = True
                body["top_logprobs"] = params.logprobs
            if prefix.steps and self.continue_final_message:
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
        return body

    def _parse(self, raw: Any, prefix: Prefix, n: int, params: SamplingParams) -> Generation:
        try:
            choices = sorted(raw["choices"], key=lambda c: c.get("index", 0))
            inside = self._inside(prefix)
            parsed = tuple(self._choice(c, inside, params.vocab_size) for c in choices)
        except (KeyError, TypeError, AttributeError) as exc:
            raise EndpointError(self.endpoint, 200, f"unexpected response shape: {exc!r}") from exc
        # A limit is what two short answers in a row (to n > 1) agree on: one short answer
        # may be a hiccup, and remembering it would multiply the requests of the whole run.
        if self._max_choices is None and n > 1:  # an answer to n=1 says nothing either way
            short = len(parsed) if 0 < len(parsed) < n else None
            if short is not None and short == self._short:
                self._max_choices = short
                log.info("endpoint_ignores_n", endpoint=self.endpoint, asked=n, got=short)
            self._short = short
        usage = _usage(raw.get("usage"))
        if usage is not None:
            prompt_tokens, completion_tokens, reasoning_tokens = usage
            return Generation(
                choices=parsed,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                reasoning_tokens=reasoning_tokens,
            )
        # No usage (or one whose counts are not counts): charge upper bounds, never guesses,
        # so a budget still holds.
        return Generation(
            choices=parsed,
            prompt_tokens=self.prompt_token_bound(prefix),
            completion_tokens=sum(
                c.tokens or completion_token_bound(self._sent(r), params.max_tokens, params.stop)
                for c, r in zip(parsed, choices, strict=True)
            ),
            estimated=True,
        )

    def _sent(self, raw: dict[str, Any]) -> str:
        """All the text a choice's tokens made: its thinking too, with the tags a reasoning
        parser took out of it (they were tokens as well), for a bound that holds."""
        if self.api == "completions":
            return str(raw["text"])
        apart = _reasoning(raw["message"])
        tags = self.think_tags.open + self.think_tags.close if apart else ""
        return tags + apart + (raw["message"].get("content") or "")

    def _choice(self, raw: dict[str, Any], inside: bool, vocab_size: int) -> Choice:
        """One choice, its thinking apart (``inside``: the text starts within a thinking), and
        its tokens' confidences and self-certainties (over a vocabulary of ``vocab_size``) when
        it came with top logprobs: every token's, the thinking's too, as the logprobs cover it.
        A token listed without top logprobs gives no estimate and is skipped, as it is in a
        stream, so a trace scores the same whole and streamed."""
        apart = None
        if self.api == "completions":
            text = raw["text"]
            logprobs = raw.get("logprobs") or {}
            token_logprobs = logprobs.get("token_logprobs")
            tops = [list((top or {}).values()) for top in logprobs.get("top_logprobs") or ()]
        else:
            text = raw["message"].get("content") or ""
            apart = _reasoning(raw["message"])
            content = (raw.get("logprobs") or {}).get("content")
            token_logprobs = None if content is None else [t["logprob"] for t in content]
            tops = [[top["logprob"] for top in t.get("top_logprobs") or ()] for t in content or ()]
        finish = raw.get("finish_reason") or "stop"
        # vLLM says which stop matched; None there means the model ended the sequence.
        if finish == "stop" and "stop_reason" in raw and raw["stop_reason"] is None:
            finish = "eos"
        closed = bool(text) if apart else self.think_tags.closes(text)
        thinking, text = joined(apart, text) if apart else self.think_tags.split(text, inside=inside)
        return Choice(
            text=text,
            thinking=thinking,
            thinking_closed=thinking is not None and closed,
            finish_reason=finish,
            tokens=None if token_logprobs is None else len(token_logprobs),
            logprob=None
            if token_logprobs is None
            else float(sum(v for v in token_logprobs if v is not None)),
            confidences=tuple(token_confidence(top) for top in tops if top) or None,
            certainties=tuple(token_certainty(top, vocab_size) for top in tops if top) or None,
        )


def _reasoning(message: dict[str, Any]) -> str:
    """The thinking a reasoning parser sent apart in a message or a delta: DeepSeek's and
    older vLLM's ``reasoning_content``, newer vLLM's (gpt-oss) ``reasoning``."""
    return str(message.get("reasoning_content") or message.get("reasoning") or "")


def _usage(usage: Any) -> tuple[int, int, int | None] | None:
    """A usage object's prompt, completion and reasoning tokens (the thinking's, where the
    server counted them apart). None where the prompt or completion count is missing or not
    a count: the request is then charged as one without usage. A reasoning count that is not
    one is ignored (None: the thinking's share is estimated), and one above the completion
    tokens, which include it, is clamped to them."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    details = usage.get("completion_tokens_details")
    reasoning = _count(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    return prompt, completion, None if reasoning is None else min(reasoning, completion)


def _count(value: Any) -> int | None:
    """A count as JSON gave it: a finite number at least 0 (a bool is not one), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return int(value)
