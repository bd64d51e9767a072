"""How JSON reaches an OpenAI-compatible server: two transports behind one small seam.

``aiohttp`` (the default) posts JSON on one pooled aiohttp session: chosen by
measurement, it spends a fraction of the client CPU per request of the openai
SDK's stack (see benchmarks/bench_overhead.py), which matters when a search
sends thousands of small requests. ``openai`` goes through ``AsyncOpenAI``
itself (its auth hooks, proxies and headers), for servers that need them.

Both raise the same failures, so the retry policy and the error messages are
one piece of code: StatusFailure (the server answered an error status), its
kind MalformedAnswer (a 200 whose body is not the JSON object asked for: cut
short, not JSON) and ConnectFailure (no answer: refused, reset, timed out).

Each transport imports its client library when it is first made: the openai SDK
alone takes about half a second to import, which every ``treesearch`` command
would otherwise pay before doing anything, and aiohttp a fifth of one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import aiohttp
    import httpx2
    import openai

TransportName = Literal["aiohttp", "openai"]


class StatusFailure(Exception):
    def __init__(self, status: int, body: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"{status}: {body[:200]}")
        self.status = status
        self.body = body
        self.headers = headers


class MalformedAnswer(StatusFailure):
    """A 200 whose body is unusable (cut short, not JSON, without the field the call
    answers with): a server or proxy hiccup, as worth another try as a 5xx."""

    def __init__(self, detail: str) -> None:
        super().__init__(200, detail, {})


class ConnectFailure(Exception):
    """No usable answer: the message is the innermost cause (e.g. "Connect call failed")."""


class TimedOut(ConnectFailure):
    """No answer within the transport's timeout."""


class Transport(Protocol):
    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST JSON to base URL + path and return the decoded JSON answer."""
        ...

    async def get(self, path: str) -> Any:
        """GET base URL + path and return the decoded JSON answer."""
        ...

    def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        """POST JSON and yield the decoded events of the server-sent stream that answers,
        until ``[DONE]``; closing the iterator closes the connection, and the server stops."""
        ...

    async def aclose(self) -> None: ...


class AioHttpTransport:
    def __init__(self, base_url: str, api_key: str, connections: int, timeout_s: float) -> None:
        import aiohttp

        self._base = base_url
        self._timeout_s = timeout_s
        self._failures = (aiohttp.ClientError, OSError)
        self._session: aiohttp.ClientSession = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            headers={"Authorization": f"Bearer {api_key}"},
        )

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await self._call("POST", path, body)

    async def get(self, path: str) -> Any:
        return await self._call("GET", path, None)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        try:
            async with self._session.request(method, self._base + path, json=body) as response:
                text = await response.text()
                if response.status >= 400:
                    raise StatusFailure(response.status, text, dict(response.headers))
        except TimeoutError as exc:
            raise TimedOut(_no_answer(self._timeout_s)) from exc
        except self._failures as exc:
            raise ConnectFailure(_root_cause(exc)) from exc
        return _decode(text, response.status)

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        try:
            async with self._session.post(self._base + path, json=body) as response:
                if response.status >= 400:
                    raise StatusFailure(response.status, await response.text(), dict(response.headers))
                async for line in response.content:
                    data = line.strip()
                    if not data.startswith(b"data:"):
                        continue  # blank separators, comments, other fields
                    data = data[5:].strip()
                    if data == b"[DONE]":
                        return
                    yield _decode(data.decode("utf-8", errors="replace"), response.status)
        except TimeoutError as exc:
            raise TimedOut(_no_answer(self._timeout_s)) from exc
        except self._failures as exc:
            raise ConnectFailure(_root_cause(exc)) from exc

    async def aclose(self) -> None:
        await self._session.close()


class OpenAITransport:
    def __init__(self, base_url: str, api_key: str, connections: int, timeout_s: float) -> None:
        import httpx2
        import openai

        limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._timeout_s = timeout_s
        self._client: openai.AsyncOpenAI = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,  # one retry policy (ours) owns retries
            timeout=timeout_s,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout_s),
        )

    # The imports in the methods below were done by __init__: here they are lookups.

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx2

        # The low-level post: the SDK's connection, headers and errors, without the
        # per-call walk over typed parameters, which costs more CPU than the exchange.
        response = await self._call(self._client.post(path, body=body, cast_to=httpx2.Response))
        return _decode(response.text, response.status_code)

    async def get(self, path: str) -> Any:
        import httpx2

        response = await self._call(self._client.get(path, cast_to=httpx2.Response))
        return _decode(response.text, response.status_code)

    async def _call(self, request: Awaitable[httpx2.Response]) -> httpx2.Response:
        import openai

        try:
            return await request
        except openai.APIStatusError as exc:
            raise StatusFailure(exc.status_code, exc.response.text, exc.response.headers) from exc
        except openai.APITimeoutError as exc:
            raise TimedOut(_no_answer(self._timeout_s)) from exc
        except openai.APIError as exc:
            raise ConnectFailure(_root_cause(exc)) from exc

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        from treesearch.errors import ConfigError

        raise ConfigError("streaming goes through the aiohttp transport; drop transport='openai'")
        yield  # an async generator, like the aiohttp transport's

    async def aclose(self) -> None:
        await self._client.close()


TRANSPORTS: dict[str, type[AioHttpTransport] | type[OpenAITransport]] = {
    "aiohttp": AioHttpTransport,
    "openai": OpenAITransport,
}


def _decode(text: str, status: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedAnswer(f"response is not JSON: {text!r}") from exc  # cut once redacted


def _no_answer(timeout_s: float) -> str:
    return f"no answer within {timeout_s:g} s"


def _root_cause(exc: BaseException) -> str:
    """The innermost cause's message: "Connect call failed" rather than a wrapper's "timed out"."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return str(exc) or type(exc).__name__
