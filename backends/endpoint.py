"""One OpenAI-compatible server as used by every adapter: a transport, a limiter, a retry policy.

A policy and the verifiers that talk to the same server can share one Endpoint,
and so one concurrency limit. Every failure that retries did not cure leaves
here as EndpointError, naming the URL and status.

An Endpoint may stand for a pool of replicas serving the same model (several base
URLs). Each request goes to the available replica with the fewest requests in
flight; a failure worth retrying is retried at once on another replica, and only
when every replica failed does the retry policy's backoff apply. A replica that
fails ``EJECT_AFTER`` times in a row is taken out for a back-off period (1 s,
doubling to 60 s); when it ends, one request at a time probes it until one
succeeds. When every replica of a pool is out, a request fails at once rather than
running out its retries: a run whose servers all died fails its remaining problems in
a moment, keeping what finished. Each replica's requests, tokens and errors are counted
(``replicas``).

Requests wait for a slot oldest problem first (``treesearch.priority``): when the
slots are contended, a problem admitted earlier is served before a later one, so a
run's problems finish one after another instead of all at the end.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from treesearch.engine.budget import count_attempt
from treesearch.errors import ConfigError, EndpointError
from treesearch.logs import get_logger
from treesearch.priority import problem_order
from treesearch.redaction import redact

from .http import (
    TRANSPORTS,
    ConnectFailure,
    MalformedAnswer,
    StatusFailure,
    TimedOut,
    Transport,
    TransportName,
)
from .retry import RetryPolicy, is_retryable, retry_after

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
        raise MalformedAnswer(f"response is not a JSON object: {answer}")  # cut once redacted
    field = _ANSWERS_WITH.get(path)
    if field is not None and not isinstance(answer.get(field), list):
        raise MalformedAnswer(f"response has no {field!r} list: {answer}")
    return answer


@dataclass(order=True, slots=True)
class _Waiter:
    priority: int
    arrival: int
    turn: anyio.Event = field(compare=False, default_factory=anyio.Event)
    gone: bool = field(compare=False, default=False)  # cancelled while it waited


class OldestFirst:
    """A capacity limiter that hands each slot freed while requests wait to the waiter of
    lowest ``priority`` (the oldest problem's), first come, first served among equals.

    A free slot is taken without a pass through the event loop: client CPU per request is
    what a search's rounds wait on when many problems run at once. A freed slot goes
    straight to the next waiter, so no later arrival can take it in between."""

    def __init__(self, total: int) -> None:
        self._free = total
        self._waiting: list[_Waiter] = []
        self._arrivals = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self._free:
            self._free -= 1
            return
        waiter = _Waiter(priority, next(self._arrivals))
        heapq.heappush(self._waiting, waiter)
        try:
            await waiter.turn.wait()
        except BaseException:
            if waiter.turn.is_set():
                self.release()  # handed a slot as it was cancelled: it goes to the next
            else:
                waiter.gone = True  # left in the heap, skipped when it comes up
            raise

    def release(self) -> None:
        while self._waiting:
            waiter = heapq.heappop(self._waiting)
            if not waiter.gone:
                waiter.turn.set()
                return
        self._free += 1


EJECT_AFTER = 3
_FIRST_BACKOFF_S, _MAX_BACKOFF_S = 1.0, 60.0


@dataclass(slots=True)
class Replica:
    """One base URL of an endpoint, with its transport once connected and its health."""

    base_url: str
    http: Transport | None = None
    in_flight: int = 0
    requests: int = 0
    tokens: int = 0
    errors: int = 0
    failures_in_a_row: int = 0
    out_until: float = 0.0  # taken out until this monotonic time
    backoff_s: float = _FIRST_BACKOFF_S
    probing: bool = False  # back from an outage: one request at a time until one succeeds
    last_error: str = ""

    def available(self, now: float) -> bool:
        return now >= self.out_until and not (self.probing and self.in_flight)

    def failed(self, now: float, error: str) -> None:
        self.errors += 1
        self.last_error = error
        self.failures_in_a_row += 1
        if now >= self.out_until and (self.failures_in_a_row >= EJECT_AFTER or self.probing):
            self.out_until = now + self.backoff_s
            log.warning("replica_out", endpoint=self.base_url, for_s=self.backoff_s, errors=self.errors)
            self.backoff_s = min(self.backoff_s * 2, _MAX_BACKOFF_S)
            self.probing = True

    def served(self, answer: Any) -> None:
        usage = answer.get("usage") if isinstance(answer, dict) else None
        self.tokens += int((usage or {}).get("total_tokens") or 0)
        if self.probing:
            log.info("replica_back", endpoint=self.base_url)
        self.failures_in_a_row, self.backoff_s, self.probing = 0, _FIRST_BACKOFF_S, False

    def counts(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "requests": self.requests,
            "tokens": self.tokens,
            "errors": self.errors,
        }


def server_root(url: str) -> str:
    """The server's root for a base URL that may end in /v1 (vLLM serves /pooling there)."""
    return url.rstrip("/").removesuffix("/v1")


class Endpoint:
    """``concurrency`` bounds requests in flight across every problem of a run (for a pool,
    on each replica). ``transport`` is "aiohttp" (lean, the default) or "openai" (through
    AsyncOpenAI); see ``http.py``. ``base_url`` may be several URLs: a pool of replicas."""

    def __init__(
        self,
        base_url: str | Sequence[str],
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
        urls = [base_url] if isinstance(base_url, str) else list(dict.fromkeys(base_url))
        if not urls:
            raise ConfigError("an endpoint needs a base URL")
        self.replicas = [Replica(url.rstrip("/")) for url in urls]
        self.base_url = self.replicas[0].base_url
        self._api_key = api_key or "EMPTY"
        self._concurrency = concurrency
        self._timeout_s = timeout_s
        self._retrying = (retry or RetryPolicy()).retrying()
        self._transport = transport
        self._limiter: OldestFirst | None = None
        self._turn = 0

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST JSON with retries inside the concurrency limit; the decoded JSON answer.

        When every slot is taken, the oldest problem's request gets the next one."""
        limiter = self._connect()
        started = time.perf_counter()
        await limiter.acquire(problem_order.get())
        try:
            answer, replica, attempts = await self._attempts(path, body)
        except _Failed as failed:
            exc = failed.cause
            if isinstance(exc, StatusFailure):
                detail = self._redact(exc.body)
                raise EndpointError(
                    failed.replica.base_url, exc.status, detail, retry_after_s=retry_after(exc)
                ) from None
            raise EndpointError(
                failed.replica.base_url, None, self._redact(str(exc)), timed_out=isinstance(exc, TimedOut)
            ) from exc
        finally:
            limiter.release()
        log.debug(
            "request",
            endpoint=replica.base_url,
            path=path,
            attempts=attempts,
            latency_s=round(time.perf_counter() - started, 4),
        )
        return answer

    async def _attempts(self, path: str, body: dict[str, Any]) -> tuple[Any, Replica, int]:
        """The answer, the replica that gave it and the HTTP attempts it took. The first
        round tries each replica once, at once, least busy first; only then does the retry
        policy take over (its waits, Retry-After and attempt limit), each attempt on the
        least busy replica. The first round is made outside tenacity's iteration, which
        costs about 25 µs a call and is only needed once something failed."""
        attempts = 0
        failed: _Failed | None = None
        for _ in self.replicas:
            attempts += 1
            try:
                answer, replica = await self._attempt(path, body)
                return answer, replica, attempts
            except _Failed as exc:
                if not is_retryable(exc.cause):
                    raise
                failed = exc
        async for attempt in self._retrying.copy():
            with attempt:
                if failed is not None:
                    first, failed = failed, None
                    raise first
                attempts += 1
                answer, replica = await self._attempt(path, body)
        return answer, replica, attempts

    async def _attempt(self, path: str, body: dict[str, Any]) -> tuple[Any, Replica]:
        """One HTTP attempt on the least busy available replica."""
        replica = self._pick()
        http = self._http(replica)
        count_attempt()  # every attempt, a retry too, is one more request against the budget
        replica.in_flight += 1
        replica.requests += 1
        try:
            answer = _usable(path, await http.post(path, body))
        except (StatusFailure, ConnectFailure) as exc:
            if is_retryable(exc) and not _busy(exc):
                whole = f"{exc.status}: {exc.body}" if isinstance(exc, StatusFailure) else str(exc)
                replica.failed(time.monotonic(), self._redact(whole))
            else:
                replica.errors += 1
            raise _Failed(exc, replica) from exc
        finally:
            replica.in_flight -= 1
        replica.served(answer)
        return answer, replica

    def _pick(self) -> Replica:
        """The available replica with the fewest requests in flight (ties in turn); with none
        available, the one back soonest (a probe in flight on it). A pool whose replicas are
        all taken out raises EndpointError, which no retry waits on: with every server gone,
        each request would otherwise run out its own retries against them."""
        if len(self.replicas) == 1:
            return self.replicas[0]
        now = time.monotonic()
        self._turn += 1
        count = len(self.replicas)
        order = [self.replicas[(self._turn + i) % count] for i in range(count)]
        ready = [replica for replica in order if replica.available(now)]
        if ready:
            return min(ready, key=lambda replica: replica.in_flight)
        soonest = min(order, key=lambda replica: replica.out_until)
        if soonest.out_until <= now:
            return soonest
        shown = ", ".join(replica.base_url for replica in self.replicas[:3])
        more = f" and {count - 3} more" if count > 3 else ""
        raise EndpointError(f"{shown}{more}", None, f"every replica of the pool is taken out after "
                            f"failing; the last error: {soonest.last_error}")  # fmt: skip

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[Any]:
        """POST JSON for a server-sent stream inside the concurrency limit; its decoded events.
        One attempt on the least busy replica: a stream is not retried (what it streamed may
        already be used)."""
        limiter = self._connect()
        replica = self._pick()
        await limiter.acquire(problem_order.get())
        try:
            count_attempt()
            replica.requests += 1
            replica.in_flight += 1
            try:
                async with aclosing(self._http(replica).stream(path, body)) as events:
                    async for event in events:
                        yield event
            except StatusFailure as exc:
                replica.errors += 1
                raise EndpointError(replica.base_url, exc.status, self._redact(exc.body)) from None
            except ConnectFailure as exc:
                said = self._redact(str(exc))
                replica.failed(time.monotonic(), said)
                raise EndpointError(
                    replica.base_url, None, said, timed_out=isinstance(exc, TimedOut)
                ) from exc
            finally:
                replica.in_flight -= 1
        finally:
            limiter.release()

    async def ping(self) -> None:
        """Fail fast, with one clear error, when the server cannot be reached or refuses us.
        A server without ``/models`` (a 404) passes: only reachability is checked."""
        await self.models()

    async def models(self) -> list[str] | None:
        """The ids of the models the server lists at ``/models``; None when it does not say
        (no such route, or an answer that is no model list). Raises EndpointError as ``ping``
        does; a key the server echoes back in its refusal is blanked out of the message. A
        pool answers with the first replica that does: a run goes on while one is up."""
        failure: EndpointError | None = None
        for replica in self.replicas:
            try:
                return await self._models(replica)
            except EndpointError as exc:
                if exc.status in (401, 403):
                    raise
                failure = failure or exc
        assert failure is not None
        raise failure

    async def _models(self, replica: Replica) -> list[str] | None:
        try:
            with anyio.fail_after(15):
                answer = await self._http(replica).get("/models")
        except StatusFailure as exc:
            if exc.status in (401, 403):
                raise EndpointError(replica.base_url, exc.status, self._redact(exc.body)) from None
            return None
        except (ConnectFailure, TimeoutError) as exc:
            raise EndpointError(replica.base_url, None, self._redact(str(exc)) or "timed out") from exc
        listed = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(listed, list):
            return None
        ids = [m["id"] for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)]
        return ids or None

    def _redact(self, text: str) -> str:
        """A server's body or a client's error (which may quote the server's bytes) on one line,
        the key blanked out in any form the server may have quoted it in; before anything
        folds or cuts the text, which would hide the key from ``redact`` but not from a reader."""
        return " ".join(redact(text, [self._api_key]).split())

    def _connect(self) -> OldestFirst:
        """The limiter, made on first use (for a pool, ``concurrency`` on each replica)."""
        if self._limiter is None:
            self._limiter = OldestFirst(self._concurrency * len(self.replicas))
        return self._limiter

    def _http(self, replica: Replica) -> Transport:
        """The replica's transport, made on first use inside the event loop."""
        if replica.http is None:
            replica.http = TRANSPORTS[self._transport](
                replica.base_url, self._api_key, self._concurrency, self._timeout_s
            )
        return replica.http

    async def aclose(self) -> None:
        for replica in self.replicas:
            if replica.http is not None:
                await replica.http.aclose()
                replica.http = None
        self._limiter = None


def _busy(failure: StatusFailure | ConnectFailure) -> bool:
    """A 429: the replica is up and has said when to come back, so it is not taken out
    (a pool of busy replicas must not look like a dead one)."""
    return isinstance(failure, StatusFailure) and failure.status == 429


class _Failed(Exception):
    """An attempt's failure and the replica it happened on."""

    def __init__(self, cause: StatusFailure | ConnectFailure, replica: Replica) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.replica = replica
