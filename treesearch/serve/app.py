"""The aiohttp application of ``treesearch serve``: routes, and the searches behind them.

A request is checked in full before any upstream call: its key, its body (``protocol``),
its model (the upstream's listing or the server's ``--allow-model`` patterns) and a free
search slot. Then its ``n`` searches run at once under one share of the server's caps,
and the results render in pure functions (``render``). Failures map to statuses by type: an upstream
429 is a 429 with its Retry-After, an upstream timeout or a search out of time without an
answer a 504, any other upstream failure a 502; every error is OpenAI-shaped and carries
neither the upstream's URL nor any key.
"""

from __future__ import annotations

import fnmatch
import hmac
import itertools
import json
import math
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from treesearch.engine.budget import Tally
from treesearch.engine.config import SearchConfig
from treesearch.engine.policy import Policy
from treesearch.engine.search import SearchResult
from treesearch.errors import ConfigError
from treesearch.logs import get_logger
from treesearch.optimal.choose import check_config, search
from treesearch.problems import Problem
from treesearch.redaction import redact
from treesearch.serve.protocol import (
    Caps,
    ChatRequest,
    RequestError,
    SearchRequest,
    load_body,
    parse_model,
    parse_request,
    request_config,
)
from treesearch.serve.render import answer, chunks, failure_of

if TYPE_CHECKING:
    from aiohttp import web

    from treesearch.answers.equivalence import AnswerEquivalence
    from treesearch.engine.verify import Verifier

log = get_logger(__name__)

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_BIG_BODY = 1 << 16  # bytes; a body this large is checked and parsed off the event loop
MODELS_REFRESH_S = 60.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Upstream:
    """What every search runs on: the default model's policy, ``policy_for`` another model's
    (on the same endpoint), the verifier, the completion check, the answer equivalence,
    ``models`` (the upstream's listing, None when it gives none) and ``secrets`` (the keys
    sent upstream, never to be echoed to a client)."""

    model: str
    policy: Policy
    policy_for: Callable[[str], Policy]
    verifier: Verifier | None
    finish_check: Verifier | None
    equivalence: AnswerEquivalence
    models: Callable[[], Awaitable[list[str] | None]]
    secrets: tuple[str, ...] = ()


class Catalogue:
    """The upstream models a request may name: the default model, and the upstream's
    listing (read at start and again at most every MODELS_REFRESH_S seconds, when a model
    not on it is asked for) or, when ``patterns`` are given (``--allow-model``), the
    names they match instead."""

    def __init__(self, upstream: Upstream, patterns: Sequence[str]) -> None:
        self._upstream = upstream
        self._patterns = tuple(patterns)
        self._listed: tuple[str, ...] = ()
        self._read_at = -math.inf
        self._lock = anyio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            try:
                listed = await self._upstream.models()
            except Exception as exc:  # the listing failed: keep the last one
                log.warning("models_refresh_failed", error=redact(str(exc), self._upstream.secrets))
                listed = list(self._listed)
            self._listed = tuple(listed or ())
            self._read_at = time.monotonic()

    async def allows(self, model: str) -> bool:
        if self._allowed(model):
            return True
        if not self._patterns and time.monotonic() - self._read_at > MODELS_REFRESH_S:
            await self.refresh()
        return self._allowed(model)

    def listing(self) -> list[str]:
        return list(dict.fromkeys([self._upstream.model, *filter(self._allowed, self._listed)]))

    def _allowed(self, model: str) -> bool:
        if model == self._upstream.model:
            return True
        if self._patterns:
            return any(fnmatch.fnmatchcase(model, pattern) for pattern in self._patterns)
        return model in self._listed


class SearchServer:
    """``keys`` (empty: none needed) are the bearer tokens it accepts; ``max_searches``
    requests search at once, more get a 429. ``drain`` ends it gracefully."""

    def __init__(
        self,
        upstream: Upstream,
        defaults: SearchConfig,
        *,
        caps: Caps,
        keys: frozenset[str] = frozenset(),
        allow_models: Sequence[str] = (),
        max_searches: int = 64,
        max_body_bytes: int = 1 << 20,
        keepalive_s: float = 5.0,
    ) -> None:
        self.upstream = upstream
        self.defaults = defaults
        self.caps = caps
        self.keys = keys
        self.models = Catalogue(upstream, allow_models)
        self.max_body_bytes = max_body_bytes
        self.keepalive_s = keepalive_s
        self._limiter = anyio.CapacityLimiter(max_searches)
        self._policies: dict[str, Policy] = {upstream.model: upstream.policy}
        self._ids = itertools.count(1)
        self._running: set[anyio.CancelScope] = set()
        self._idle = anyio.Event()
        self._closing = False

    def app(self) -> web.Application:
        from aiohttp import web

        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[web.middleware(self._errors)])
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        return app

    @property
    def running(self) -> int:
        """Requests searching now."""
        return len(self._running)

    async def drain(self, grace_s: float, now: anyio.Event | None = None) -> int:
        """Refuse new searches (503), give the running ones ``grace_s`` seconds (or until
        ``now`` is set), then cancel the rest, whose clients get a 503; how many were
        cancelled."""
        self._closing = True
        if self._running:
            self._idle = anyio.Event()
            with anyio.move_on_after(grace_s):
                async with anyio.create_task_group() as group:

                    async def hurry() -> None:
                        if now is not None:
                            await now.wait()
                            group.cancel_scope.cancel()

                    group.start_soon(hurry)
                    await self._idle.wait()
                    group.cancel_scope.cancel()
        cancelled = len(self._running)
        for scope in list(self._running):
            scope.cancel()
        return cancelled

    # -- routes -----------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self._authorise(request)
        listed = [{"id": model, "object": "model", "created": 0, "owned_by": "treesearch"}
                  for model in self.models.listing()]  # fmt: skip
        return _json({"object": "list", "data": listed})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        self._authorise(request)
        if self._closing:
            raise RequestError(503, "the server is shutting down", "server_error")
        asked = await self._request(request, chat)
        try:
            config = request_config(asked, self.defaults, self.caps)
            check_config(config, self.upstream.verifier)
        except ConfigError as exc:
            raise RequestError(400, str(exc)) from None
        _, _, model = parse_model(asked.model, self.upstream.model)
        if not await self.models.allows(model):
            raise RequestError(404, f"The model `{model[:200]}` does not exist or you do not have access "
                               "to it.", code="model_not_found")  # fmt: skip
        request_id = f"ts-{next(self._ids)}"
        problems = _problems(asked, request_id)
        policy = self._policy(model)
        try:
            self._limiter.acquire_nowait()
        except anyio.WouldBlock:
            raise RequestError(429, "the server is running its most searches at once; retry shortly",
                               "rate_limit_error", headers={"Retry-After": "1"}) from None  # fmt: skip
        # Known as running from here, before a stream's headers go out: a shutdown that
        # follows them finds it (and cancels it before it starts, if it comes to that).
        scope = anyio.CancelScope()
        self._running.add(scope)
        try:
            tally = Tally()

            async def run() -> list[SearchResult]:
                return await self._search(problems, policy, config, tally, scope)

            head = {"id": request_id, "created": int(time.time()), "model": asked.model or model}
            if asked.stream:
                return await self._stream(request, run, tally, head, config, asked, chat)
            results = await run()
            self._raise_failure(results, config)
            return _json(answer(results, config, head, asked, chat))
        finally:
            self._running.discard(scope)
            if not self._running:
                self._idle.set()
            self._limiter.release()

    async def _search(
        self,
        problems: list[Problem],
        policy: Policy,
        config: SearchConfig,
        tally: Tally,
        scope: anyio.CancelScope,
    ) -> list[SearchResult]:
        """The request's searches at once, each with its own seed (the request's plus its
        index), inside ``scope``: cancelled by ``drain``, they are a 503."""
        results: list[SearchResult | None] = [None] * len(problems)
        seed = config.sampling.seed

        async def one(index: int, problem: Problem) -> None:
            seeded = config
            if seed is not None and index:
                seeded = replace(config, sampling=replace(config.sampling, seed=seed + index))
            results[index] = await search(
                problem, policy, seeded, verifier=self.upstream.verifier,
                finish_check=self.upstream.finish_check, equivalence=self.upstream.equivalence, tally=tally,
            )  # fmt: skip

        with scope:
            if len(problems) == 1:  # the common case, without a task group's cost
                await one(0, problems[0])
            else:
                async with anyio.create_task_group() as group:
                    for index, problem in enumerate(problems):
                        group.start_soon(one, index, problem)
        if scope.cancel_called:
            raise RequestError(503, "the server shut down before the search finished", "server_error")
        return [result for result in results if result is not None]

    # -- rendering --------------------------------------------------------------

    def _raise_failure(self, results: list[SearchResult], config: SearchConfig) -> None:
        for result in results:
            failure = failure_of(result, config)
            if failure is not None:
                raise RequestError(failure.status, self._scrub(str(failure)), failure.kind,
                                   code=failure.code, headers=failure.headers)  # fmt: skip

    async def _stream(
        self,
        request: web.Request,
        run: Callable[[], Awaitable[list[SearchResult]]],
        tally: Tally,
        head: dict[str, Any],
        config: SearchConfig,
        asked: SearchRequest,
        chat: bool,
    ) -> web.StreamResponse:
        """Comment lines every ``keepalive_s`` while the search runs, then the answer as
        chunks; a failure after the headers went out is an ``error`` event."""
        from aiohttp import web

        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await out.prepare(request)
        started = time.monotonic()
        outcome: list[list[SearchResult]] = []
        failed: list[RequestError] = []
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
            try:
                outcome.append(await run())
                self._raise_failure(outcome[0], config)
            except RequestError as exc:
                failed.append(exc)
            group.cancel_scope.cancel()
        if not (failed or outcome):  # the client left
            return out
        if failed:
            await out.write(_event(failed[0].body()))
        else:
            for chunk in chunks(outcome[0], config, head, asked, chat):
                await out.write(_event(chunk))
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
                               "authentication_error", code="invalid_api_key")  # fmt: skip

    async def _request(self, request: web.Request, chat: bool) -> SearchRequest:
        from aiohttp import web

        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestError(413, f"the request body is over {self.max_body_bytes} bytes") from None
        except web.RequestPayloadError:  # not in its Content-Encoding, or cut short
            raise RequestError(400, "the body cannot be read in its Content-Encoding") from None
        if len(raw) > _BIG_BODY:
            return await anyio.to_thread.run_sync(_parsed, raw, chat)
        return _parsed(raw, chat)

    def _policy(self, model: str) -> Policy:
        """The default model's policy, or one for another allowed model on the same endpoint."""
        if model not in self._policies:
            self._policies[model] = self.upstream.policy_for(model)
        return self._policies[model]

    def _scrub(self, text: str) -> str:
        """A message for a client: no key sent upstream, no URL (the upstream's address)."""
        return _URL.sub("the upstream", redact(text, self.upstream.secrets))

    @staticmethod
    async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
        from aiohttp import web

        try:
            response: web.StreamResponse = await handler(request)
        except RequestError as exc:
            return _json(exc.body(), exc.status, exc.headers)
        except web.HTTPException as exc:  # aiohttp's own: 404, 405, 413
            kind = "invalid_request_error" if exc.status < 500 else "server_error"
            error = RequestError(exc.status, exc.reason if exc.status != 404 else
                                 f"no route {request.method} {request.path[:200]}", kind)  # fmt: skip
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return _json(error.body(), exc.status, headers)
        except Exception as exc:  # a bug: one line on the server's stderr, a plain 500 for the client
            print(f"treesearch: serve failed on {request.path}: {exc!r}", file=sys.stderr, flush=True)
            error = RequestError(500, "the server failed; its stderr says why", "server_error")
            return _json(error.body(), 500)
        return response


def _parsed(raw: bytes, chat: bool) -> SearchRequest:
    return parse_request(load_body(raw), chat=chat)


def _problems(asked: SearchRequest, request_id: str) -> list[Problem]:
    """The request's ``n`` problems: the last user message in chat, with the messages before
    it as the history; the prompt as is in completions."""
    if isinstance(asked, ChatRequest):
        *earlier, last = asked.messages
        if last.role != "user":
            raise RequestError(400, "the last message must be the user's: the search answers it")
        question = last.text()
        if not question:
            raise RequestError(400, "the last user message has no text")
        history = tuple({"role": m.role, "content": m.text()} for m in earlier)
        made = [Problem(id=request_id, question=question, history=history)]
    else:
        made = [Problem(id=request_id, question=asked.prompt, prompt=asked.prompt)]
    if asked.n == 1:
        return made
    return [replace(made[0], id=f"{request_id}-{index}") for index in range(asked.n)]


def _event(data: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _json(
    data: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    from aiohttp import web

    return web.json_response(data, status=status, headers=headers)
