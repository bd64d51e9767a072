"""``treesearch serve``: an OpenAI-compatible server that runs a search behind every request.

An edge like the command line: it parses an OpenAI request into a Problem and a
SearchConfig, calls ``search()``, and renders the result as an ordinary
completion. ``/v1/chat/completions`` searches on the last user message,
``/v1/completions`` continues the prompt as is; ``/v1/models`` lists the
upstream model.

What to run comes per request, over the server's defaults (its command line):

- the model name ``STRATEGY:N/UPSTREAM_MODEL`` (``beam:16/Qwen2.5-1.5B``; the
  upstream part may be left out), for clients that send nothing else;
- a ``treesearch`` object in the body (``extra_body`` in the openai SDK) with
  SearchConfig fields by name (``strategy``, ``n``, ``beam_width``, ...), the
  budget (``budget_tokens``, ``budget_requests``, ``budget_seconds``) and
  ``sampling`` ("whole" or "steps"); ``temperature``, ``top_p``, ``seed`` and
  ``max_tokens`` are read from the request itself.

The server's own budget is a cap no request exceeds. The answer's content is the
chosen path's text; ``usage`` sums every upstream call the search made (policy and
verifier, prompt and completion); ``treesearch`` carries the answer, the
candidates, why the search stopped and its calls. ``stream: true`` sends SSE
comment lines while the search runs (so clients with read timeouts wait), then
the answer as chunks and, when ``stream_options.include_usage`` asks, the usage.

Errors are OpenAI-shaped: 400 for a bad request, 401 without a key the server
accepts, 413 for a body over the limit, 429 when ``max_searches`` are running,
502 when the upstream failed the search and 504 when it did not answer in time.
The upstream key is never sent back: upstream errors come through the endpoint,
which blanks it out.
"""

from __future__ import annotations

import dataclasses
import hmac
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from treesearch.budget import BudgetLimits, Tally
from treesearch.config import SearchConfig
from treesearch.errors import ConfigError
from treesearch.logs import get_logger
from treesearch.policy import Policy
from treesearch.problems import Problem
from treesearch.search import SearchResult, check_config, search
from treesearch.strategies import STRATEGIES

if TYPE_CHECKING:
    from aiohttp import web

    from treesearch.equivalence import AnswerEquivalence
    from treesearch.verify import Verifier

log = get_logger(__name__)

_STRATEGY_MODEL = re.compile(r"^(?P<strategy>[a-z][a-z-]*):(?P<n>\d+)(?:/(?P<model>.+))?$")
# SearchConfig fields a request's ``treesearch`` object may set.
_REQUEST_FIELDS = frozenset(
    field.name
    for field in dataclasses.fields(SearchConfig)
    if field.name not in ("sampling", "step", "budget", "policy_table", "whole")
)
_BUDGET_FIELDS = {"budget_tokens": "tokens", "budget_requests": "requests", "budget_seconds": "deadline_s"}


class RequestError(Exception):
    """A request the server refuses, with the HTTP status and OpenAI error type to send."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(frozen=True, kw_only=True, slots=True)
class Upstream:
    """What every search runs on: the default model's policy, ``policy_for`` another model's
    (on the same endpoint), the verifier, the completion check and the answer equivalence."""

    model: str
    policy: Policy
    policy_for: Callable[[str], Policy]
    verifier: Verifier | None
    finish_check: Verifier | None
    equivalence: AnswerEquivalence


def parse_model(name: str, default: str) -> tuple[str | None, int | None, str]:
    """(strategy, n, upstream model) from a request's model name: ``beam:16/Qwen``,
    ``beam:16`` (the default upstream), or an upstream model alone."""
    match = _STRATEGY_MODEL.match(name)
    if match is None:
        return None, None, default if name in ("", "treesearch") else name
    return match["strategy"], int(match["n"]), match["model"] or default


def request_config(body: Mapping[str, Any], defaults: SearchConfig, caps: BudgetLimits) -> SearchConfig:
    """The request's SearchConfig: the server's defaults, the model name's strategy and N,
    the ``treesearch`` object, and the standard sampling fields; its budget capped by the
    server's. Raises ConfigError (a 400) for what does not make a valid configuration."""
    strategy, n, _ = parse_model(str(body.get("model") or ""), "")
    options = body.get("treesearch") or {}
    if not isinstance(options, dict):
        raise ConfigError("treesearch must be an object")
    unknown = sorted(set(options) - _REQUEST_FIELDS - set(_BUDGET_FIELDS) - {"sampling"})
    if unknown:
        raise ConfigError(f"unknown treesearch fields: {', '.join(unknown)}")
    chosen: dict[str, Any] = {key: value for key, value in options.items() if key in _REQUEST_FIELDS}
    if strategy is not None:
        chosen.setdefault("strategy", strategy)
        chosen.setdefault("n", n)
    if chosen.get("strategy", defaults.strategy) not in STRATEGIES:
        raise ConfigError(f"unknown strategy {chosen['strategy']!r}; choose from {', '.join(STRATEGIES)}")
    sampling = {key: body[key] for key in ("temperature", "top_p", "seed") if body.get(key) is not None}
    step = defaults.step
    if body.get("max_tokens") is not None:
        step = replace(step, max_tokens=int(body["max_tokens"]))
    budget = {name: _capped(options.get(key), getattr(caps, name)) for key, name in _BUDGET_FIELDS.items()}
    whole = defaults.whole if "sampling" not in options else options["sampling"] == "whole"
    try:
        return replace(
            defaults,
            **chosen,
            whole=whole,
            step=step,
            sampling=replace(defaults.sampling, **sampling),
            budget=replace(defaults.budget, **budget),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad treesearch settings: {exc}") from None


def _capped(asked: Any, cap: float | None) -> Any:
    """A request's budget under the server's cap. NaN passes every comparison (``min(nan,
    cap)`` is NaN, an unbounded budget), so only finite positive numbers are taken."""
    if asked is None:
        return cap
    if isinstance(asked, bool) or not isinstance(asked, int | float) or not 0 < asked < math.inf:
        raise ConfigError(f"a budget must be a positive number, got {asked!r}")
    return asked if cap is None else min(asked, cap)


def chosen_text(result: SearchResult, delimiter: str) -> str:
    """The text of the path behind the answer: the best-scored candidate giving it."""
    giving = [c for c in result.candidates if c.answer == result.answer]
    if result.tree is None or not giving:
        return ""
    best = max(giving, key=lambda c: c.score if c.score is not None else -1.0)
    return delimiter.join(result.tree.steps(best.node))


def usage_of(result: SearchResult) -> dict[str, int]:
    usage = result.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def summary_of(result: SearchResult, config: SearchConfig) -> dict[str, Any]:
    return {
        "answer": result.answer,
        "strategy": result.strategy,
        "n": config.n,
        "stopped_by": result.stopped_by,
        "aggregated_by": result.aggregated_by,
        "calls": result.usage.requests,
        "candidates": [{"answer": c.answer, "score": c.score} for c in result.candidates],
        "error": result.error,
    }


class SearchServer:
    """The aiohttp application. ``keys`` (empty: none needed) are the bearer tokens it
    accepts; ``max_searches`` run at once, more get a 429."""

    def __init__(
        self,
        upstream: Upstream,
        defaults: SearchConfig,
        *,
        caps: BudgetLimits,
        keys: frozenset[str] = frozenset(),
        max_searches: int = 64,
        max_body_bytes: int = 1 << 20,
        keepalive_s: float = 5.0,
    ) -> None:
        self.upstream = upstream
        self.defaults = defaults
        self.caps = caps
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.keepalive_s = keepalive_s
        self._limiter = anyio.CapacityLimiter(max_searches)
        self._policies: dict[str, Policy] = {upstream.model: upstream.policy}
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        from aiohttp import web

        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[web.middleware(self._errors)])
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        return app

    # -- routes -----------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        self._authorise(request)
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": self.upstream.model, "object": "model", "owned_by": "treesearch"}],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        self._authorise(request)
        body = await self._body(request)
        request_id = f"ts-{next(self._ids)}"
        problem = _problem(body, chat, request_id)
        try:
            config = request_config(body, self.defaults, self.caps)
            check_config(config, self.upstream.verifier)
        except ConfigError as exc:
            raise RequestError(400, str(exc)) from None
        _, _, model = parse_model(str(body.get("model") or ""), self.upstream.model)
        policy = self._policy(model)
        try:
            self._limiter.acquire_nowait()
        except anyio.WouldBlock:
            raise RequestError(
                429, "the server is running its most searches at once", "rate_limit_error"
            ) from None
        try:
            tally = Tally()

            async def run() -> SearchResult:
                return await search(
                    problem, policy, config, verifier=self.upstream.verifier,
                    finish_check=self.upstream.finish_check, equivalence=self.upstream.equivalence,
                    tally=tally,
                )  # fmt: skip

            head = {"id": request_id, "created": int(time.time()), "model": str(body.get("model") or model)}
            if body.get("stream"):
                return await self._stream(request, run, tally, head, config, chat, body)
            result = await run()
            _raise_failure(result)
            return _json(self._answer(result, config, head, chat))
        finally:
            self._limiter.release()

    # -- rendering --------------------------------------------------------------

    def _answer(
        self, result: SearchResult, config: SearchConfig, head: dict[str, Any], chat: bool
    ) -> dict[str, Any]:
        text = chosen_text(result, config.step.delimiter)
        finish = "stop" if result.answer is not None else "length"
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {
            **head,
            "object": "chat.completion" if chat else "text_completion",
            "choices": [choice],
            "usage": usage_of(result),
            "treesearch": summary_of(result, config),
        }

    async def _stream(
        self,
        request: web.Request,
        run: Any,
        tally: Tally,
        head: dict[str, Any],
        config: SearchConfig,
        chat: bool,
        body: Mapping[str, Any],
    ) -> web.StreamResponse:
        """Comment lines every ``keepalive_s`` while the search runs, then the answer as
        chunks; a failure after the headers went out is an ``error`` event."""
        from aiohttp import web

        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await out.prepare(request)
        started = time.monotonic()
        outcome: list[SearchResult] = []
        async with anyio.create_task_group() as group:

            async def keepalive() -> None:
                while True:
                    await anyio.sleep(self.keepalive_s)
                    elapsed = time.monotonic() - started
                    line = f": searching, {elapsed:.0f} s, {tally.requests} calls, {tally.tokens} tokens\n\n"
                    try:
                        await out.write(line.encode())
                    except ConnectionResetError:  # the client left: stop searching for it
                        group.cancel_scope.cancel()
                        return

            group.start_soon(keepalive)
            outcome.append(await run())
            group.cancel_scope.cancel()
        if not outcome:
            return out
        (result,) = outcome
        kind = "chat.completion.chunk" if chat else "text_completion"
        try:
            _raise_failure(result)
        except RequestError as exc:
            await out.write(_event({"error": {"message": str(exc), "type": exc.kind, "code": exc.status}}))
            await out.write(b"data: [DONE]\n\n")
            return out
        text = chosen_text(result, config.step.delimiter)
        pieces = [line for line in re.split(r"(?<=\n)", text) if line] or [""]
        finish = "stop" if result.answer is not None else "length"
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish if last else None}
            if chat:
                choice["delta"] = {"content": piece, **({"role": "assistant"} if index == 0 else {})}
            else:
                choice["text"] = piece
            chunk = {**head, "object": kind, "choices": [choice]}
            if last:
                chunk["treesearch"] = summary_of(result, config)
            await out.write(_event(chunk))
        if (body.get("stream_options") or {}).get("include_usage"):
            await out.write(_event({**head, "object": kind, "choices": [], "usage": usage_of(result)}))
        await out.write(b"data: [DONE]\n\n")
        return out

    # -- checks -----------------------------------------------------------------

    def _authorise(self, request: web.Request) -> None:
        if not self.keys:
            return
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        # The scheme's case is free; any header text encodes, so an odd token is a 401, not a 500.
        given = token.strip().encode("utf-8", "surrogateescape") if scheme.lower() == "bearer" else b""
        if not any(hmac.compare_digest(given, key.encode()) for key in self.keys):
            raise RequestError(401, "a valid API key is required (Authorization: Bearer KEY)",
                               "authentication_error")  # fmt: skip

    async def _body(self, request: web.Request) -> dict[str, Any]:
        from aiohttp import web

        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            raise RequestError(413, f"the request body is over {self.max_body_bytes} bytes") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object")
        return body

    def _policy(self, model: str) -> Policy:
        """The default model's policy, or one for another model on the same endpoint."""
        if model not in self._policies:
            self._policies[model] = self.upstream.policy_for(model)
        return self._policies[model]

    @staticmethod
    async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
        from aiohttp import web

        try:
            response: web.StreamResponse = await handler(request)
        except RequestError as exc:
            return _json({"error": {"message": str(exc), "type": exc.kind, "code": exc.status}}, exc.status)
        except web.HTTPRequestEntityTooLarge as exc:
            return _json({"error": {"message": exc.text, "type": "invalid_request_error", "code": 413}}, 413)
        return response


def _problem(body: Mapping[str, Any], chat: bool, request_id: str) -> Problem:
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "messages must be a non-empty list")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise RequestError(400, "messages hold no user message to answer")
        return Problem(id=request_id, question=_content(users[-1].get("content")))
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise RequestError(400, "prompt must be a non-empty string")
    return Problem(id=request_id, question=prompt, prompt=prompt)


def _content(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str) and content:
        return content
    if isinstance(content, list):
        text = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if text:
            return text
    raise RequestError(400, "the last user message has no text")


def _raise_failure(result: SearchResult) -> None:
    if result.error is None:
        return
    if "no answer within" in result.error:
        raise RequestError(504, f"the upstream did not answer in time: {result.error}", "upstream_error")
    raise RequestError(502, f"the search failed upstream: {result.error}", "upstream_error")


def _event(data: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _json(data: Mapping[str, Any], status: int = 200) -> web.Response:
    from aiohttp import web

    return web.json_response(data, status=status)
