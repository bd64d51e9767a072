"""The synthetic task server: a real OpenAI-compatible HTTP server with known answers.

Each problem has a known behaviour: how many steps its solutions take, the
probability of each final answer, an optional per-step error rate (a step that
switches the path to a wrong answer) and a latency. A solution looks like

    Step 1: this points to 42.

    Step 2: this points to 42.

    The answer is 42.

and the server continues any prefix of one, in completions or chat mode,
honouring ``n``, ``stop``, ``max_tokens``, ``seed`` and ``logprobs`` and
reporting usage (one token per word or punctuation mark), with vLLM's
``stop_reason``. Fault knobs: a share of requests (``error_rate``) answered with a
fault drawn from ``fault_kinds`` (see ``FAULT_KINDS``: error statuses with an
optional Retry-After, a dropped connection, an answer later than the client
waits, a 200 whose body is cut short or not the JSON asked for, fewer choices
than ``n``), extra latency, ignoring ``n``, leaving usage out, and overspending:
``extra_choices`` more choices than ``n``, ``max_tokens`` ignored. ``GET /stats``
counts what was served: tokens only of answers delivered whole to a client still
waiting, so a client's charges can be compared with them. The server finds a
problem by the ``[task:ID]`` marker its question carries (``make_problems``
writes such questions).

Tests, benchmarks and ``treesearch demo`` start it as a separate process with
``spawn``; users rehearse strategies offline with ``treesearch serve-fake``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from treesearch.errors import ConfigError
from treesearch.problems import Problem, read_problems

_TOKEN = re.compile(r"\w+|[^\w\s]")
_MARKER = re.compile(r"\[task:([^\]\s]+)\]")
_STEP = re.compile(r"Step (\d+): this points to (\S+?)\.")
_CLAIM = re.compile(r"(?:Step \d+: this points to|The answer is) (\S+?)\.")
_FINISHED = re.compile(r"The answer is \S+\.\s*$")
_ANSWER = re.compile(r"The answer is (\S+?)\.")
_ATTEMPT = re.compile(r"Attempt \d+:\n")
_YES_NO = re.compile(r"Answer Yes or No\.\s*Answer:\s*$")
_JUDGE = re.compile(r"\[Answer\]:(.*)Instruction: Review your previous answer", re.DOTALL)
_GOOD_LOGPROB = math.log(0.9)

# Faults besides error statuses (any 4xx or 5xx, given as its number), by what a client sees.
FAULT_KINDS: Mapping[str, str] = {
    "reset": "the connection closed without an answer",
    "slow": "an answer only after slow_s, longer than a client waits",
    "truncated": "a 200 whose JSON body is cut in half",
    "malformed": "a 200 whose body is not JSON, or JSON without choices",
    "fewer": "a 200 with fewer choices than n (from 1 to n - 1)",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class FakeTask:
    """One problem's behaviour. ``answers`` maps each final answer to its probability. A
    revision (a prompt showing earlier "Attempt k:" solutions) starts from the latest
    attempt's answer: a wrong one becomes right with probability ``revise_fix``, a right one
    wrong with ``revise_break``; otherwise it keeps it."""

    steps: int = 3
    answers: Mapping[str, float] = field(default_factory=lambda: {"42": 1.0})
    step_error: float = 0.0
    early: float = 0.0
    latency_s: float = 0.0
    revise_fix: float = 0.0
    revise_break: float = 0.0
    gold: str | None = None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], gold: str | None = None) -> FakeTask:
        spec = metadata.get("fake") or {}
        return cls(
            gold=gold,
            steps=int(spec.get("steps", 3)),
            answers={str(k): float(v) for k, v in spec.get("answers", {"42": 1.0}).items()},
            step_error=float(spec.get("step_error", 0.0)),
            early=float(spec.get("early", 0.0)),
            latency_s=float(spec.get("latency_s", 0.0)),
            revise_fix=float(spec.get("revise_fix", 0.0)),
            revise_break=float(spec.get("revise_break", 0.0)),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class FakeServerConfig:
    """The whole server's behaviour, field for flag of ``treesearch serve-fake``: a share
    ``error_rate`` of completion requests gets a fault drawn evenly from ``fault_kinds``
    (error statuses as numbers, or names of ``FAULT_KINDS``); a slow one answers after
    ``slow_s``. With top logprobs asked for, a token's confidence (−mean of its top-k
    logprobs, DeepConf's C) is drawn around ``confidence`` when the text's last claim is the
    gold answer and ``confidence_margin`` lower when not, with ``confidence_noise`` as the
    spread, from the choice's own seed."""

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

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ConfigError(f"--error-rate must be in [0, 1], got {self.error_rate}")
        if self.error_rate and not self.fault_kinds:
            raise ConfigError("--error-rate needs at least one fault kind")
        for kind in self.fault_kinds:
            _check_fault(kind, "--fault-kinds")
        if self.slow_s <= 0:
            raise ConfigError(f"--slow-s must be positive, got {self.slow_s}")


def parse_faults(text: str, flag: str, *, statuses_only: bool = False) -> tuple[str, ...]:
    """A comma list of fault kinds (``statuses_only``: of error statuses), or ConfigError
    naming ``flag`` and the item that is neither."""
    kinds = tuple(item.strip() for item in text.split(",") if item.strip())
    for kind in kinds:
        if statuses_only and not _is_status(kind):
            raise ConfigError(f"{flag}: {kind!r} is not an error status (400 to 599)")
        _check_fault(kind, flag)
    return kinds


def _is_status(kind: str) -> bool:
    return kind.isdigit() and 400 <= int(kind) <= 599


def _check_fault(kind: str, flag: str) -> None:
    if kind not in FAULT_KINDS and not _is_status(kind):
        raise ConfigError(
            f"{flag}: {kind!r} is neither an error status (400 to 599) nor one of {', '.join(FAULT_KINDS)}"
        )


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def make_problems(
    count: int,
    *,
    p_correct: float = 0.6,
    steps: int = 3,
    wrong: int = 1,
    prefix: str = "p",
    latency_s: float = 0.0,
    step_error: float = 0.0,
    early: float = 0.0,
    revise_fix: float = 0.0,
    revise_break: float = 0.0,
) -> list[dict[str, Any]]:
    """Problem records whose right answer has probability ``p_correct`` and the rest is spread
    evenly over ``wrong`` wrong answers; ready for a problems JSONL file and for the server."""
    records = []
    for index in range(count):
        gold = str(10 + index)
        answers = {gold: p_correct}
        for k in range(wrong):
            answers[str(1000 + 10 * index + k)] = (1.0 - p_correct) / wrong
        task_id = f"{prefix}{index}"
        records.append(
            {
                "id": task_id,
                "question": f"Synthetic problem [task:{task_id}].",
                "answer": gold,
                "fake": {
                    "steps": steps,
                    "answers": answers,
                    "step_error": step_error,
                    "early": early,
                    "latency_s": latency_s,
                    "revise_fix": revise_fix,
                    "revise_break": revise_break,
                },
            }
        )
    return records


def write_problem_set(path: str | Path, count: int) -> None:
    """Write ``count`` problems of ``make_problems`` to a JSONL file (its folder created):
    a ready set to serve with ``--problems`` and to run against; ConfigError when it cannot."""
    if count <= 0:
        raise ConfigError(f"--count must be positive, got {count}")
    path = Path(path)
    lines = "".join(json.dumps(record) + "\n" for record in make_problems(count))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(lines, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--write-problems {path}: {exc.strerror or exc}") from exc


# -- generation ---------------------------------------------------------------------


def _revising(context: str) -> tuple[str | None, str]:
    """For a revision's prompt, the latest attempt's answer (None if it stated none) and the
    text after that attempt; for any other prompt, (None, the prompt)."""
    attempts = _ATTEMPT.split(context)
    if len(attempts) == 1:
        return None, context
    stated = _ANSWER.search(attempts[-1])
    return (stated.group(1), attempts[-1][stated.end() :]) if stated else (None, attempts[-1])


def _another(answer: str) -> str:
    """A wrong answer for a task that lists only its right one."""
    return str(int(answer) + 1) if answer.isdigit() else f"not {answer}"


def _revise(task: FakeTask, previous: str, rng: random.Random, greedy: bool) -> str:
    """The answer a revision starts from: the previous one, fixed or broken by chance."""
    others = [a for a in task.answers if a != task.gold] or [_another(previous)]
    if previous == task.gold:
        broken = task.revise_break >= 0.5 if greedy else rng.random() < task.revise_break
        return rng.choice(others) if broken else previous
    fixed = task.revise_fix >= 0.5 if greedy else rng.random() < task.revise_fix
    return task.gold if fixed and task.gold is not None else previous


def _continue(task: FakeTask, context: str, rng: random.Random, greedy: bool) -> str:
    """The rest of a solution after ``context``: the path keeps the answer its steps point to,
    unless a step errs; with ``early`` it may answer after fewer steps. Greedy decoding takes
    the likeliest answer, never errs and never stops early. A revision starts from its latest
    attempt's answer (see ``FakeTask``)."""
    previous, context = _revising(context)
    done = _STEP.findall(context)
    answers, weights = list(task.answers), list(task.answers.values())
    if done:
        current = done[-1][1]
    elif previous is not None:
        current = _revise(task, previous, rng, greedy)
    elif greedy:
        current = max(answers, key=task.answers.__getitem__)
    else:
        current = rng.choices(answers, weights)[0]
    taken = int(done[-1][0]) if done else 0
    if _FINISHED.search(context):
        return ""  # already answered: the model ends the sequence
    steps = []
    for number in range(taken + 1, task.steps):
        if task.early and not greedy and rng.random() < task.early:
            break  # this path answers before the usual number of steps
        if task.step_error and not greedy and rng.random() < task.step_error:
            others = [a for a in answers if a != current] or [_another(current)]
            current = rng.choice(others)
        steps.append(f"Step {number}: this points to {current}.")
    steps.append(f"The answer is {current}.")
    return "\n\n".join(steps)


def step_score(task: FakeTask, task_id: str, text: str, noise: float) -> float:
    """The synthetic PRM's P(good) for the last claim in ``text``: high when it points to the
    gold answer, low when not, 0.5 without a claim; ``noise`` (in logits) is a fixed function
    of the step, so the same step always gets the same score."""
    claims = _CLAIM.findall(text)
    if not claims or task.gold is None:
        return 0.5
    logit = 1.5 if claims[-1] == task.gold else -1.5
    if noise:
        logit += noise * random.Random(f"{task_id}:{len(claims)}:{claims[-1]}").gauss(0.0, 1.0)
    return 1.0 / (1.0 + math.exp(-logit))


def _cut(text: str, stops: Sequence[str], max_tokens: int) -> tuple[str, str, str | None]:
    """Apply stop strings and the token limit: (text, finish_reason, stop_reason)."""
    finish, stop_reason = "stop", None
    hits = [(text.find(s), s) for s in stops if s and s in text]
    if hits:
        position, stop_reason = min(hits)
        text = text[:position]
    tokens = list(_TOKEN.finditer(text))
    if len(tokens) > max_tokens:
        text = text[: tokens[max_tokens - 1].end()] if max_tokens else ""
        finish, stop_reason = "length", None
    return text, finish, stop_reason


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FakeServer:
    def __init__(self, config: FakeServerConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._faults = random.Random(config.seed + 1)
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
        started = await _arrival()
        self.stats["requests"] += 1
        config = self.config
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise _BadRequest(400, "body must be a JSON object")
            if body.get("model") != config.model:
                raise _BadRequest(404, f"The model `{body.get('model')}` does not exist.")
            context, prompt_tokens = self._context(body, chat)
            task = self._task(context)
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
        except _BadRequest as exc:
            return self._error(exc.status, str(exc))
        except (ValueError, TypeError) as exc:
            return self._error(400, f"invalid request: {exc}")
        fault = self._draw_fault(n)
        answers = fault is None or not (_is_status(fault) or fault == "reset")
        choices: list[dict[str, Any]] = []
        completion_tokens = 0
        if answers:
            count = 1 if config.ignore_n else n + config.extra_choices
            if fault == "fewer":
                count = self._faults.randint(1, n - 1)
            choices, completion_tokens = self._choices(body, task, context, chat, count)
        response: dict[str, Any] = {
            "id": f"fake-{self.stats['requests']}",
            "object": "chat.completion" if chat else "text_completion",
            "created": 0,
            "model": config.model,
            "choices": choices,
        }
        if config.usage:
            response["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        text = json.dumps(response) if answers else ""
        await _answer_at(started + config.latency_s + task.latency_s)
        if fault is not None and _is_status(fault):
            status = int(fault)
            headers = {}
            if config.retry_after_s is not None and status in (429, 503):
                headers["Retry-After"] = str(config.retry_after_s)
            return self._error(status, "injected fault", headers)
        if fault == "reset":
            self.stats["errors"] += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        if fault == "slow":
            await asyncio.sleep(config.slow_s)
        if fault == "truncated":
            self.stats["errors"] += 1
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        if fault == "malformed":
            self.stats["errors"] += 1
            if self._faults.random() < 0.5:
                return web.Response(
                    text="<html><body>upstream hiccup</body></html>", content_type="text/html"
                )
            return web.json_response({key: value for key, value in response.items() if key != "choices"})
        if request.transport is None or request.transport.is_closing():
            self.stats["abandoned"] += 1  # nobody reads it: nothing was served
            return web.Response()
        if body.get("stream"):
            response.pop("usage", None)
            include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and config.usage
            return await self._stream(request, response, prompt_tokens, include_usage, chat)
        self.stats["ok"] += 1
        self.stats["choices"] += len(choices)
        self.stats["prompt_tokens"] += prompt_tokens
        self.stats["completion_tokens"] += completion_tokens
        return web.Response(text=text, content_type="application/json")

    async def _stream(
        self, request: web.Request, response: dict[str, Any], prompt_tokens: int, include_usage: bool,
        chat: bool,
    ) -> web.StreamResponse:  # fmt: skip
        """Server-sent events, one token of each choice an event (as vLLM streams), a token of
        every choice each ``token_latency_s``, then each choice's finish, the usage when asked
        for, and ``[DONE]``. A client that leaves stops the stream: only the tokens written
        before count in ``/stats``."""
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await out.prepare(request)
        streams = [_token_events(choice, chat) for choice in response["choices"]]
        head = {key: value for key, value in response.items() if key != "choices"}
        head["object"] = "chat.completion.chunk" if chat else "text_completion"
        written = 0
        try:
            for position in range(max((len(events) for events in streams), default=0)):
                for events in streams:
                    if position < len(events):
                        await out.write(_event({**head, "choices": [events[position]]}))
                        written += 1 if position < len(events) - 1 else 0
                await asyncio.sleep(self.config.token_latency_s)  # and a client that left is noticed
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError
            if include_usage:
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": written,
                         "total_tokens": prompt_tokens + written}  # fmt: skip
                await out.write(_event({**head, "choices": [], "usage": usage}))
            await out.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, RuntimeError):  # the client closed the stream
            self.stats["streams_cut"] += 1
        else:
            self.stats["ok"] += 1
            self.stats["choices"] += len(streams)
        self.stats["prompt_tokens"] += prompt_tokens
        self.stats["completion_tokens"] += written
        return out

    def _draw_fault(self, n: int) -> str | None:
        """This request's fault, drawn from the seeded fault stream, or None. ``fewer`` is
        drawn only where it can apply (``n`` above 1)."""
        config = self.config
        if not config.error_rate or self._faults.random() >= config.error_rate:
            return None
        kinds = [kind for kind in config.fault_kinds if kind != "fewer" or n > 1]
        if not kinds:
            return None
        kind = self._faults.choice(kinds)
        self.stats[f"fault_{kind}"] += 1
        return kind

    def _choices(
        self, body: dict[str, Any], task: FakeTask, context: str, chat: bool, count: int
    ) -> tuple[list[dict[str, Any]], int]:
        """``count`` choices continuing ``context`` as ``body`` asks, and their completion tokens."""
        config = self.config
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
        stop = body.get("stop") or []
        stops = [stop] if isinstance(stop, str) else list(stop)
        seed = body.get("seed")
        logprobs = body.get("logprobs")
        # How many top logprobs a token shows: completions' logprobs=k, chat's top_logprobs=k.
        top_k = int(body.get("top_logprobs") or 0) if chat else int(logprobs or 0)
        choices, completion_tokens = [], 0
        greedy = float(body.get("temperature", 1.0)) == 0.0
        for index in range(count):
            rng = self._rng if seed is None else random.Random(f"{seed}:{index}")
            reply, yes = self._reply(task, context, rng, greedy)
            text, finish, stop_reason = _cut(reply, stops, 10**9 if config.ignore_max_tokens else max_tokens)
            tokens = _TOKEN.findall(text)
            completion_tokens += len(tokens)
            choice: dict[str, Any] = {"index": index, "finish_reason": finish, "stop_reason": stop_reason}
            tops = [{t: _GOOD_LOGPROB} for t in tokens]
            if top_k > 1 and yes is None:
                claims = _CLAIM.findall(context + text)
                right = bool(claims) and claims[-1] == task.gold
                draws = random.Random(None if seed is None else f"{seed}:{index}:confidence")
                tops = [self._top(t, top_k, right, draws) for t in tokens]
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
                if logprobs:
                    choice["logprobs"] = {
                        "content": [
                            {
                                "token": t,
                                "logprob": _GOOD_LOGPROB,
                                "bytes": None,
                                "top_logprobs": [{"token": k, "logprob": v} for k, v in top.items()],
                            }
                            for t, top in zip(tokens, tops, strict=True)
                        ]
                    }
            else:
                choice["text"] = text
                choice["logprobs"] = None if logprobs is None else _logprobs(text, yes, tops)
            choices.append(choice)
        return choices, completion_tokens

    def _top(self, token: str, k: int, right: bool, draws: random.Random) -> dict[str, float]:
        """A token's top-k logprobs: the token itself at log 0.9 and k − 1 alternatives far
        below, placed so that −mean(top-k) is the confidence drawn for it."""
        config = self.config
        centre = config.confidence - (0.0 if right else config.confidence_margin)
        confidence = max(1.0, draws.gauss(centre, config.confidence_noise))
        rest = (-confidence * k - _GOOD_LOGPROB) / (k - 1)
        return {token: _GOOD_LOGPROB, **{f"<alt{i}>": rest for i in range(1, k)}}

    def _reply(
        self, task: FakeTask, context: str, rng: random.Random, greedy: bool
    ) -> tuple[str, float | None]:
        """What the model says, and for a yes/no question the probability of "Yes"."""
        task_id = self._task_id(context)
        judged = _JUDGE.search(context)
        if judged is not None:  # Chen et al.'s filter prompt
            claims = _CLAIM.findall(judged.group(1))
            right = bool(claims) and claims[-1] == task.gold
            if rng.random() >= self.config.judge_accuracy:
                right = not right
            return ("The steps check out. [[correct]]" if right else "A step is wrong. [[wrong]]"), None
        if _YES_NO.search(context):
            question = context.rsplit("Question:", 1)
            if "final answer" in question[-1]:
                yes = 0.97 if "The answer is" in question[0].rsplit("Step", 1)[-1] else 0.03
            else:
                yes = step_score(task, task_id, question[0], self.config.prm_noise)
            return (" Yes" if yes >= 0.5 else " No"), yes
        return _continue(task, context, rng, greedy), None

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
            task, task_id = self._task(text), self._task_id(text)
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

    def _context(self, body: dict[str, Any], chat: bool) -> tuple[str, int]:
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

    def _task_id(self, context: str) -> str:
        marker = _MARKER.search(context)
        return "" if marker is None else marker.group(1)

    def _task(self, context: str) -> FakeTask:
        return self.config.tasks.get(self._task_id(context)) or FakeTask()

    def _error(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self.stats["errors"] += 1
        body = {"error": {"message": message, "type": "fake_error", "code": status}}
        return web.json_response(body, status=status, headers=headers)


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


def tasks_from_file(path: str | Path) -> dict[str, FakeTask]:
    return {
        problem.id: FakeTask.from_metadata(problem.metadata, gold=problem.answer)
        for problem in read_problems(path)
    }


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _token_events(choice: dict[str, Any], chat: bool) -> list[dict[str, Any]]:
    """A finished choice as stream chunks: one a token (its text up to the next token, and
    its logprobs when the choice has them), then one with the finish reason."""
    text = choice["message"]["content"] if chat else choice["text"]
    starts = [match.start() for match in _TOKEN.finditer(text)]
    bounds = [0, *starts[1:], len(text)] if starts else []
    logprobs = choice.get("logprobs")
    events: list[dict[str, Any]] = []
    for position in range(len(starts)):
        piece = text[bounds[position] : bounds[position + 1]]
        event: dict[str, Any] = {"index": choice["index"], "finish_reason": None}
        if chat:
            event["delta"] = {"content": piece}
            if logprobs:
                event["logprobs"] = {"content": [logprobs["content"][position]]}
        else:
            event["text"] = piece
            if logprobs:
                event["logprobs"] = {key: [logprobs[key][position]] for key in
                                     ("tokens", "token_logprobs", "top_logprobs", "text_offset")}  # fmt: skip
        events.append(event)
    end: dict[str, Any] = {"index": choice["index"], "finish_reason": choice["finish_reason"],
                           "stop_reason": choice.get("stop_reason")}  # fmt: skip
    if chat:
        end["delta"] = {}
    else:
        end["text"] = ""
    events.append(end)
    return events


def _logprobs(text: str, yes: float | None, tops: list[dict[str, float]]) -> dict[str, Any]:
    """Completions-style logprobs: 0.9 per token with ``tops`` as its top logprobs, or the
    yes/no distribution."""
    tokens = _TOKEN.findall(text)
    offsets = [m.start() for m in _TOKEN.finditer(text)]
    if yes is not None:
        top = {" Yes": math.log(max(yes, 1e-9)), " No": math.log(max(1.0 - yes, 1e-9))}
        return {"tokens": [text], "token_logprobs": [top[text]], "top_logprobs": [top], "text_offset": [0]}
    return {
        "tokens": tokens,
        "token_logprobs": [_GOOD_LOGPROB] * len(tokens),
        "top_logprobs": tops,
        "text_offset": offsets,
    }


async def serve(config: FakeServerConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until cancelled; the first stdout line is ``listening on <base URL>``. An
    address that cannot be listened on (a port in use) is a ConfigError."""
    runner = web.AppRunner(FakeServer(config).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            reason = f"port {port} is in use (choose another with --port, or 0 for a free one)"
        else:
            reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from exc
    bound_host, bound_port = runner.addresses[0][:2]
    print(f"listening on http://{bound_host}:{bound_port}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


@contextmanager
def spawn(
    args: Sequence[str] = (),
    problems: Sequence[Problem | dict[str, Any]] | None = None,
    workdir: Path | None = None,
) -> Iterator[str]:
    """Run ``treesearch serve-fake ARGS`` in a separate process; yield its base URL.

    ``problems`` (records or Problems) are written to a file in ``workdir`` and served."""
    command = [sys.executable, "-m", "treesearch.cli", "serve-fake", "--port", "0", *args]
    if problems is not None:
        if workdir is None:
            raise ValueError("problems need a workdir to be written to")
        path = workdir / "fake-problems.jsonl"
        path.write_text("".join(json.dumps(_record(p)) + "\n" for p in problems), encoding="utf-8")
        command += ["--problems", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"fake server did not start (exit code {process.wait()})")
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _record(problem: Problem | dict[str, Any]) -> dict[str, Any]:
    if isinstance(problem, dict):
        return problem
    return problem.to_record()
