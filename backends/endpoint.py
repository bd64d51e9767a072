"""One OpenAI-compatible server as used by every adapter: a transport, a limiter, a retry policy.

A policy and the verifiers that talk to the same server can share one Endpoint,
and so one concurrency limit. Every failure that retries did not cure leaves
here as EndpointError, naming the URL and status.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Protocol

import anyio

from treesearch.budget import count_attempt
from treesearch.errors import ConfigError, EndpointError
from treesearch.logs import get_logger

from .http import TRANSPORTS, ConnectFailure, MalformedAnswer, StatusFailure, Transport, TransportName
from .retry import RetryPolicy, is_retryable

log = get_logger(__name__)

# The field a 200 of each path answers with: one without it (an error passed on as a 200,
# a proxy's page) is a MalformedAnswer, retried like a 5xx rather than failing the problem.
_ANSWERS_WITH = {"/completions": "choices", "/chat/completions": "choices", "/pooling": "data"}


class JsonEndpoint(Protocol):
    """What adapters need of a server: POST a JSON body to a path, get JSON back. Endpoint
    speaks HTTP; the embedded llama.cpp backend answers the same bodies in process."""

    @property
    def base_url(self) -> str: ...

    async def post(self, path: str, body: dict[str, Any]) -> Any: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class EndpointClient:
    """An adapter over one endpoint: a new HTTP Endpoint made from a URL (``options`` go to
    it), which ``aclose`` closes, or a shared endpoint as it is, which its maker closes."""

    def __init__(self, base_url: str | JsonEndpoint, options: dict[str, Any]) -> None:
        self.http: JsonEndpoint
        if isinstance(base_url, str):
            self.http, self._owns_http = Endpoint(base_url, **options), True
            return
        if not callable(getattr(base_url, "post", None)):
            raise ConfigError(f"expected a URL or an endpoint, not {base_url!r}")
        if options:
            raise ConfigError(f"{', '.join(sorted(options))}: settings of a new endpoint, not a shared one")
        self.http, self._owns_http = base_url, False

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()


def _usable(path: str, answer: Any) -> Any:
    """``answer`` if it is a JSON object holding the list ``path`` answers with."""
    if not isinstance(answer, dict):
        raise MalformedAnswer(f"response is not a JSON object: {str(answer)[:100]}")
    field = _ANSWERS_WITH.get(path)
    if field is not None and not isinstance(answer.get(field), list):
        raise MalformedAnswer(f"response has no {field!r} list: {str(answer)[:100]}")
    return answer


def server_root(url: str) -> str:
    """The server's root for a base URL that may end in /v1 (vLLM serves /pooling there)."""
    return url.rstrip("/").removesuffix("/v1")


class Endpoint:
    """``concurrency`` bounds requests in flight across every problem of a run. ``transport``
    is "aiohttp" (lean, the default) or "openai" (through AsyncOpenAI); see ``http.py``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        concurrency: int = 256,
        timeout_s: float = 600.0,
        retry: RetryPolicy | None = None,
        transport: TransportName = "aiohttp",
    ) -> None:
        if transport not in TRANSPORTS:
            raise ConfigError(f"unknown transport {transport!r}; choose {' or '.join(TRANSPORTS)}")
        if concurrency <= 0:
            raise ConfigError(f"concurrency must be positive, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or "EMPTY"
        self._concurrency = concurrency
        self._timeout_s = timeout_s
        self._retrying = (retry or RetryPolicy()).retrying()
        self._transport = transport
        self._http: Transport | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST JSON with retries inside the concurrency limit; the decoded JSON answer.

        A free slot of the limiter is taken without a pass through the event loop: client
        CPU per request is what a search's rounds wait on when many problems run at once."""
        http, limiter = self._connect()
        started = time.perf_counter()
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:
            await limiter.acquire()
        try:
            answer, attempts = await self._attempts(http, path, body)
        except StatusFailure as exc:
            raise EndpointError(self.base_url, exc.status, self._redact(" ".join(exc.body.split()))) from None
        except ConnectFailure as exc:
            raise EndpointError(self.base_url, None, str(exc)) from exc
        finally:
            limiter.release()
        log.debug(
            "request",
            endpoint=self.base_url,
            path=path,
            attempts=attempts,
            latency_s=round(time.perf_counter() - started, 4),
        )
        return answer

    async def _attempts(self, http: Transport, path: str, body: dict[str, Any]) -> tuple[Any, int]:
        """The answer and the HTTP attempts it took. The first attempt is made outside
        tenacity's iteration, which costs about 25 µs a call (a tenth of a request's client
        CPU) and is only needed once something failed; a failure the policy retries enters
        the policy's loop as its first attempt, so waits, Retry-After and the attempt limit
        are the policy's alone."""
        try:
            count_attempt()  # every attempt, a retry too, is one more request against the budget
            return _usable(path, await http.post(path, body)), 1
        except (StatusFailure, ConnectFailure) as exc:
            if not is_retryable(exc):
                raise
            failed: Exception | None = exc
        attempts = 1
        async for attempt in self._retrying.copy():
            with attempt:
                if failed is not None:
                    first, failed = failed, None
                    raise first
                attempts += 1
                count_attempt()
                answer = _usable(path, await http.post(path, body))
        return answer, attempts

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[Any]:
        """POST JSON for a server-sent stream inside the concurrency limit; its decoded events.
        One attempt: a stream is not retried (what it streamed may already be used)."""
        http, limiter = self._connect()
        async with limiter:
            count_attempt()
            try:
                async with aclosing(http.stream(path, body)) as events:
                    async for event in events:
                        yield event
            except StatusFailure as exc:
                detail = self._redact(" ".join(exc.body.split()))
                raise EndpointError(self.base_url, exc.status, detail) from None
            except ConnectFailure as exc:
                raise EndpointError(self.base_url, None, str(exc)) from exc

    async def ping(self) -> None:
        """Fail fast, with one clear error, when the server cannot be reached or refuses us.
        A server without ``/models`` (a 404) passes: only reachability is checked."""
        await self.models()

    async def models(self) -> list[str] | None:
        """The ids of the models the server lists at ``/models``; None when it does not say
        (no such route, or an answer that is no model list). Raises EndpointError as ``ping``
        does; a key the server echoes back in its refusal is blanked out of the message."""
        http, _ = self._connect()
        try:
            with anyio.fail_after(15):
                answer = await http.get("/models")
        except StatusFailure as exc:
            if exc.status in (401, 403):
                detail = self._redact(" ".join(exc.body.split()))
                raise EndpointError(self.base_url, exc.status, detail) from None
            return None
        except (ConnectFailure, TimeoutError) as exc:
            raise EndpointError(self.base_url, None, str(exc) or "timed out") from exc
        listed = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(listed, list):
            return None
        ids = [m["id"] for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)]
        return ids or None

    def _redact(self, text: str) -> str:
        return text if self._api_key == "EMPTY" else text.replace(self._api_key, "***")

    def _connect(self) -> tuple[Transport, anyio.CapacityLimiter]:
        """Made on first use, inside the event loop, once per endpoint."""
        if self._http is None or self._limiter is None:
            self._http = TRANSPORTS[self._transport](
                self.base_url, self._api_key, self._concurrency, self._timeout_s
            )
            self._limiter = anyio.CapacityLimiter(self._concurrency)
        return self._http, self._limiter

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
            self._limiter = None
