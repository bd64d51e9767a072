"""The synthetic server's HTTP app: a real OpenAI-compatible server with known answers.

It continues any prefix of a synthetic solution (see ``tasks``), in completions or chat
mode, honouring ``n``, ``stop``, ``max_tokens``, ``seed`` and ``logprobs`` and reporting
usage (one token per word or punctuation mark), with vLLM's ``stop_reason``; it streams
as server-sent events when asked, and scores steps on vLLM's ``/pooling`` as a process
reward model. Fault knobs: a share of requests (``error_rate``) answered with a fault
drawn from ``fault_kinds`` (see ``faults``: error statuses with an optional Retry-After, a
dropped connection, an answer later than the client waits, a 200 whose body is cut short
or not the JSON asked for, fewer choices than ``n``), extra latency, ignoring ``n``,
leaving usage out, and overspending: ``extra_choices`` more choices than ``n``,
``max_tokens`` ignored. ``GET /stats`` counts what was served: tokens only of answers
delivered whole to a client still waiting, so a client's charges can be compared with them.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from treesearch.errors import ConfigError

from .choices import GOOD_LOGPROB, confident_tops, cut, event, render_choice, token_events
from .faults import FaultDraws, check_fault, withholds_answer
from .selection import SelectionModel, selection_reply
from .tasks import TOKEN, FakeTask, count_tokens, ends_with_gold, marked_id, reply, step_score
from .thinking import TAGS, ThinkingModel, thinking_reply


@dataclass(frozen=True, kw_only=True, slots=True)
class FakeServerConfig:
    """The whole server's behaviour, field for flag of ``treesearch serve-fake``: a share
    ``error_rate`` of completion requests gets a fault drawn evenly from ``fault_kinds``
    (error statuses as numbers, or names of ``FAULT_KINDS``); a slow one answers after
    ``slow_s``. With top logprobs asked for, a token's confidence (−mean of its top-k
    logprobs, DeepConf's C) is drawn around ``confidence`` when the text's last claim is the
    gold answer and ``confidence_margin`` lower when not, with ``confidence_noise`` as the
    spread, from the choice's own seed. ``selection`` answers generative selections and
    aggregations (see ``selection``); ``thinking`` makes tasks think before they answer (see
    ``thinking``)."""

    model: str = "fake"
    latency_s: float = 0.0
    error_rate: float = 0.0
    fault_kinds: tuple[str, ...] = ("429", "500", "503")
    slow_s: float = 5.0
    retry_after_s: float | None = None
    ignore_n: bool = False
    extra_choices: int = 0
    ignore_max_tokens: bool = False
    usage: bool = True
    max_context: int = 8192
    prm_model: str = "fake-prm"
    prm_step_tag: str = "<extra_0>"
    prm_noise: float = 0.0
    judge_accuracy: float = 0.9
    confidence: float = 12.0
    confidence_margin: float = 3.0
    confidence_noise: float = 2.0
    token_latency_s: float = 0.0
    seed: int = 0
    tasks: Mapping[str, FakeTask] = field(default_factory=dict)
    selection: SelectionModel = field(default_factory=SelectionModel)
    thinking: ThinkingModel = field(default_factory=ThinkingModel)

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ConfigError(f"--error-rate must be in [0, 1], got {self.error_rate}")
        if self.error_rate and not self.fault_kinds:
            raise ConfigError("--error-rate needs at least one fault kind")
        for kind in self.fault_kinds:
            check_fault(kind, "--fault-kinds")
        if self.slow_s <= 0:
            raise ConfigError(f"--slow-s must be positive, got {self.slow_s}")


_HICCUP_PAGE = "<html><body>upstream hiccup</body></html>"  # what a malformed fault may send


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, kw_only=True, slots=True)
class _Asked:
    """A completion request that passed its checks: the body, the text the model sees (and
    its tokens), the task it is about, and the ``n`` and ``max_tokens`` it asks for."""

    body: dict[str, Any]
    chat: bool
    context: str
    prompt_tokens: int
    task: FakeTask
    n: int
    max_tokens: int


@dataclass(frozen=True, kw_only=True, slots=True)
class _Answer:
    """A completion made before the request's latency is waited out: its response object,
    that object as JSON, and its completion tokens."""

    response: dict[str, Any]
    text: str
    completion_tokens: int


class FakeServer:
    def __init__(self, config: FakeServerConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._faults = FaultDraws(config.error_rate, config.fault_kinds, config.seed + 1)
        self.stats = {
            "prm_inputs": 0,
            "requests": 0,
            "ok": 0,
            "errors": 0,
            "choices": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            # answers ready after their client had gone (a slow fault, a client's timeout)
            "abandoned": 0,
            # streams the client closed before their end (their tokens written so far count)
            "streams_cut": 0,
            # the most a completion request asked for: what a proxy in front must cap
            "largest_n": 0,
            "largest_max_tokens": 0,
            **{f"fault_{kind}": 0 for kind in config.fault_kinds},
        }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/pooling", self._pooling)
        app.router.add_get("/stats", self._stats)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": self.config.model, "object": "model", "owned_by": "treesearch"}],
            }
        )

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        """A completion request: checked, its fault drawn, its answer made, the latency
        waited out from its arrival, then the answer delivered or the fault served."""
        started = await _arrival()
        self.stats["requests"] += 1
        try:
            asked = self._asked(await request.json(), chat)
        except _BadRequest as exc:
            return self._error(exc.status, str(exc))
        except (ValueError, TypeError) as exc:
            return self._error(400, f"invalid request: {exc}")
        fault = self._draw_fault(asked.n)
        deadline = started + self.config.latency_s + asked.task.latency_s
        if withholds_answer(fault):
            await _answer_at(deadline)
            return self._withhold(request, fault)
        answer = self._answer(asked, fault)
        await _answer_at(deadline)
        return await self._deliver(request, asked, answer, fault)

    def _asked(self, body: Any, chat: bool) -> _Asked:
        """The request ``body`` checked (a _BadRequest when it cannot be served), noting the
        largest ``n`` and ``max_tokens`` asked for."""
        config = self.config
        if not isinstance(body, dict):
            raise _BadRequest(400, "body must be a JSON object")
        if body.get("model") != config.model:
            raise _BadRequest(404, f"The model `{body.get('model')}` does not exist.")
        context, prompt_tokens = _context(body, chat)
        n = int(body.get("n") or 1)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
        if n < 1 or max_tokens < 1:
            raise _BadRequest(400, "n and max_tokens must be at least 1")
        self.stats["largest_n"] = max(self.stats["largest_n"], n)
        self.stats["largest_max_tokens"] = max(self.stats["largest_max_tokens"], max_tokens)
        if prompt_tokens + max_tokens > config.max_context:
            raise _BadRequest(
                400,
                (
                    f"This model's maximum context length is {config.max_context} tokens. "
                    f"However, you requested {prompt_tokens + max_tokens} tokens."
                ),
            )
        return _Asked(body=body, chat=chat, context=context, prompt_tokens=prompt_tokens,
                      task=self._task(marked_id(context)), n=n, max_tokens=max_tokens)  # fmt: skip

    def _task(self, task_id: str) -> FakeTask:
        """The task of that id, or the default one for a text with no known marker."""
        return self.config.tasks.get(task_id) or FakeTask()

    def _draw_fault(self, n: int) -> str | None:
        """This request's fault from the seeded fault stream, counted in ``/stats``, or None."""
        kind = self._faults.draw(n)
        if kind is not None:
            self.stats[f"fault_{kind}"] += 1
        return kind

    def _withhold(self, request: web.Request, fault: str) -> web.Response:
        """A fault that sends no completion: the connection dropped, or an error status."""
        if fault == "reset":
            self.stats["errors"] += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        status = int(fault)
        headers = {}
        if self.config.retry_after_s is not None and status in (429, 503):
            headers["Retry-After"] = str(self.config.retry_after_s)
        return self._error(status, "injected fault", headers)

    def _answer(self, asked: _Asked, fault: str | None) -> _Answer:
        """The completion ``asked`` gets: ``n`` choices, or as many as the server's knobs or a
        ``fewer`` fault make it."""
        config = self.config
        count = 1 if config.ignore_n else asked.n + config.extra_choices
        if fault == "fewer":
            count = self._faults.fewer(asked.n)
        choices, completion_tokens, reasoning_tokens = self._choices(asked, count)
        response: dict[str, Any] = {
            "id": f"fake-{self.stats['requests']}",
            "object": "chat.completion" if asked.chat else "text_completion",
            "created": 0,
            "model": config.model,
            "choices": choices,
        }
        if config.usage:
            response["usage"] = {
                "prompt_tokens": asked.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": asked.prompt_tokens + completion_tokens,
            }
            if reasoning_tokens is not None:
                response["usage"]["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        return _Answer(response=response, text=json.dumps(response), completion_tokens=completion_tokens)

    async def _deliver(
        self, request: web.Request, asked: _Asked, answer: _Answer, fault: str | None
    ) -> web.StreamResponse:
        """Send ``answer`` whole, streamed, or spoilt by ``fault``; a client that has gone by
        then is served nothing."""
        config = self.config
        if fault == "slow":
            await asyncio.sleep(config.slow_s)
        if fault == "truncated":
            self.stats["errors"] += 1
            return web.Response(text=answer.text[: len(answer.text) // 2], content_type="application/json")
        if fault == "malformed":
            self.stats["errors"] += 1
            if self._faults.html():
                return web.Response(text=_HICCUP_PAGE, content_type="text/html")
            return web.json_response({k: v for k, v in answer.response.items() if k != "choices"})
        if request.transport is None or request.transport.is_closing():
            self.stats["abandoned"] += 1  # nobody reads it: nothing was served
            return web.Response()
        if asked.body.get("stream"):
            return await self._stream(request, asked, answer.response)
        self.stats["ok"] += 1
        self.stats["choices"] += len(answer.response["choices"])
        self.stats["prompt_tokens"] += asked.prompt_tokens
        self.stats["completion_tokens"] += answer.completion_tokens
        return web.Response(text=answer.text, content_type="application/json")

    async def _stream(
        self, request: web.Request, asked: _Asked, response: dict[str, Any]
    ) -> web.StreamResponse:
        """Server-sent events, one token of each choice an event (as vLLM streams), a token of
        every choice each ``token_latency_s``, then each choice's finish, the usage when asked
        for, and ``[DONE]``. A client that leaves stops the stream: only the tokens written
        before count in ``/stats``."""
        chat, prompt_tokens = asked.chat, asked.prompt_tokens
        options = asked.body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) and self.config.usage
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await out.prepare(request)
        streams = [token_events(choice, chat) for choice in response["choices"]]
        head = {key: value for key, value in response.items() if key not in ("choices", "usage")}
        head["object"] = "chat.completion.chunk" if chat else "text_completion"
        written = 0
        try:
            for position in range(max((len(events) for events in streams), default=0)):
                for events in streams:
                    if position < len(events):
                        await out.write(event({**head, "choices": [events[position]]}))
                        written += 1 if position < len(events) - 1 else 0
                await asyncio.sleep(self.config.token_latency_s)  # and a client that left is noticed
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError
            if include_usage:
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": written,
                         "total_tokens": prompt_tokens + written}  # fmt: skip
                details = (response.get("usage") or {}).get("completion_tokens_details")
                if details is not None:
                    usage["completion_tokens_details"] = details
                await out.write(event({**head, "choices": [], "usage": usage}))
            await out.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, RuntimeError):  # the client closed the stream
            self.stats["streams_cut"] += 1
        else:
            self.stats["ok"] += 1
            self.stats["choices"] += len(streams)
        self.stats["prompt_tokens"] += prompt_tokens
        self.stats["completion_tokens"] += written
        return out

    def _choices(self, asked: _Asked, count: int) -> tuple[list[dict[str, Any]], int, int | None]:
        """``count`` choices continuing the request's context as its body asks, their
        completion tokens, and their thinking's tokens (None when the task does not think; a
        chat's tokens leave the think tags out, as they are in neither of its fields)."""
        config, body = self.config, asked.body
        stop = body.get("stop") or []
        stops = [stop] if isinstance(stop, str) else list(stop)
        seed = body.get("seed")
        logprobs = body.get("logprobs")
        # How many top logprobs a token shows: completions' logprobs=k, chat's top_logprobs=k.
        top_k = int(body.get("top_logprobs") or 0) if asked.chat else int(logprobs or 0)
        greedy = float(body.get("temperature", 1.0)) == 0.0
        max_tokens = 10**9 if config.ignore_max_tokens else asked.max_tokens
        choices, completion_tokens = [], 0
        thinks = config.thinking.of(asked.task)[0] > 0
        reasoning_tokens = 0 if thinks else None
        inside = thinks and TAGS.opened_in(asked.context)
        for index in range(count):
            rng = self._rng if seed is None else random.Random(f"{seed}:{index}")
            said, yes = selection_reply(asked.task, asked.context, rng, greedy, config.selection), None
            if said is None:
                said = thinking_reply(asked.task, asked.context, rng, greedy, config.thinking)
            if said is None:
                said, yes = reply(
                    asked.task, asked.context, rng, greedy,
                    judge_accuracy=config.judge_accuracy, prm_noise=config.prm_noise,
                )  # fmt: skip
            text, finish, stop_reason = cut(said, stops, max_tokens)
            tokens = TOKEN.findall(text)
            thought, shown = None, text
            if reasoning_tokens is not None:
                thought, answer = TAGS.split(text, inside=inside)
                reasoning_tokens += len(TOKEN.findall(thought or ""))
                if asked.chat:
                    shown = answer
                    tokens = TOKEN.findall((thought or "") + " " + answer)
            completion_tokens += len(tokens)
            tops = [{t: GOOD_LOGPROB} for t in tokens]
            if top_k > 1 and yes is None:
                right = ends_with_gold(asked.task, asked.context + text)
                draws = random.Random(None if seed is None else f"{seed}:{index}:confidence")
                centre = config.confidence - (0.0 if right else config.confidence_margin)
                tops = confident_tops(tokens, top_k, centre, config.confidence_noise, draws)
            chat_thought = (config.thinking.field, thought) if asked.chat and thought is not None else None
            choices.append(render_choice(index, shown, finish, stop_reason, chat=asked.chat,
                                         logprobs=logprobs, yes=yes, tops=tops,
                                         thinking=chat_thought))  # fmt: skip
        return choices, completion_tokens, reasoning_tokens

    async def _pooling(self, request: web.Request) -> web.Response:
        """vLLM's /pooling for a process reward model: per input, [p_bad, p_good] per step tag."""
        started = await _arrival()
        self.stats["requests"] += 1
        config = self.config
        try:
            body = await request.json()
            if body.get("model") != config.prm_model:
                raise _BadRequest(404, f"The model `{body.get('model')}` does not exist.")
            inputs = body.get("input")
            inputs = [inputs] if isinstance(inputs, str) else inputs
            if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
                raise _BadRequest(400, "input must be a string or a list of strings")
        except _BadRequest as exc:
            return self._error(exc.status, str(exc))
        except (ValueError, TypeError, AttributeError) as exc:
            return self._error(400, f"invalid request: {exc}")
        data, prompt_tokens = [], 0
        for index, text in enumerate(inputs):
            task_id = marked_id(text)
            task = self._task(task_id)
            parts = text.split(config.prm_step_tag)[:-1]
            rows = []
            for upto in range(1, len(parts) + 1):
                good = step_score(task, task_id, "".join(parts[:upto]), config.prm_noise)
                rows.append([1.0 - good, good])
            data.append({"index": index, "object": "pooling", "data": rows})
            prompt_tokens += count_tokens(text) + len(parts)
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0}
        text = json.dumps(
            {
                "id": "pool-fake",
                "object": "list",
                "created": 0,
                "model": config.prm_model,
                "data": data,
                "usage": usage,
            }
        )
        await _answer_at(started + config.latency_s)
        self.stats["ok"] += 1
        self.stats["prm_inputs"] += len(inputs)
        self.stats["prompt_tokens"] += prompt_tokens
        return web.Response(text=text, content_type="application/json")

    def _error(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self.stats["errors"] += 1
        body = {"error": {"message": message, "type": "fake_error", "code": status}}
        return web.json_response(body, status=status, headers=headers)


def _context(body: dict[str, Any], chat: bool) -> tuple[str, int]:
    """The text the model sees and its token count."""
    if not chat:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise _BadRequest(400, "prompt must be a string")
        return prompt, count_tokens(prompt)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest(400, "messages must be a non-empty list")
    contents = [str(m.get("content") or "") for m in messages]
    tokens = sum(count_tokens(c) + 4 for c in contents)
    if messages[-1].get("role") == "assistant" and body.get("continue_final_message"):
        return "\n".join(contents), tokens
    return "\n".join(contents), tokens + 3  # the generation prompt's tokens


async def _arrival() -> float:
    """The event-loop time a request arrived at. Requests that arrive together are handled
    one after another: each notes its time and lets the others note theirs (one pass of the
    loop) before it does its work, so no request's latency waits for another's work."""
    arrived = asyncio.get_running_loop().time()
    await asyncio.sleep(0)
    return arrived


async def _answer_at(deadline: float) -> None:
    """Wait until ``deadline`` (event-loop time). A request's latency runs from its arrival
    and covers the server's own work, as a model server's does: the synthetic server
    prepares its answer first and sleeps for what is left, so its CPU time per request
    does not add to the latency a client sees (unless it is busier than the latency)."""
    await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))
