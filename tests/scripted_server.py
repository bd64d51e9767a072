"""An aiohttp server answering each request from a coroutine of the test, for the replies
the synthetic server never gives (a judge that thinks, a failing or stalled follow-up
request, a template that opened the thinking): a real socket on the test's own loop."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

# (path, request body) -> a JSON body, or a list of events streamed as server-sent events;
# an aiohttp HTTPException it raises is the answer's status.
Reply = Callable[[str, dict[str, Any]], Awaitable[Any]]


@asynccontextmanager
async def scripted_server(reply: Reply) -> AsyncIterator[str]:
    """Serve ``reply`` on 127.0.0.1; yield the base URL (ending in /v1). /v1/models lists "m"."""

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def answer(request: web.Request) -> web.StreamResponse:
        out = await reply(request.path, await request.json())
        if not isinstance(out, list):
            return web.json_response(out)
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        for event in [*(json.dumps(event) for event in out), "[DONE]"]:
            await stream.write(f"data: {event}\n\n".encode())
        await stream.write_eof()
        return stream

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", answer)
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        await runner.cleanup()


def completion(*texts: str, finish: str = "stop") -> dict[str, Any]:
    """A completions body of ``texts``, one choice each, 10 tokens a choice."""
    choices = [{"index": i, "text": text, "finish_reason": finish} for i, text in enumerate(texts)]
    return {"choices": choices, "usage": {"prompt_tokens": 20, "completion_tokens": 10 * len(texts)}}
