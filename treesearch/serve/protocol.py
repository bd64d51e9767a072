"""What ``treesearch serve`` accepts: the request models, the body's limits and the mapping
of a request onto a SearchConfig under the server's caps.

Everything a client sends passes here before any search starts, so a bad field is a 400
by construction (as vLLM's ``protocol.py`` keeps its request models apart from serving).
The body is checked before it is parsed (nesting depth, the digits of a number, NaN and
Infinity), then validated by pydantic models in strict mode: every field typed, numbers
finite, no field the server does not know. OpenAI fields the server cannot honour (tools,
logprobs, response formats, penalties) are a 400 naming them unless they hold their
neutral value (null, false, 0, empty), as clients often send.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)

from treesearch.engine.budget import BudgetLimits
from treesearch.engine.config import OPTIONS, SearchConfig
from treesearch.engine.options import declared
from treesearch.errors import ConfigError
from treesearch.strategies import STRATEGIES

MAX_DEPTH = 32  # arrays and objects inside one another
MAX_DIGITS = 30  # digits of a JSON number
MAX_STOPS = 4  # stop strings, as OpenAI allows
# OpenAI fields the server cannot honour; a request may send them at their neutral value.
UNSUPPORTED = (
    "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "response_format",
    "logprobs", "top_logprobs", "logit_bias", "presence_penalty", "frequency_penalty", "echo",
    "best_of", "suffix", "audio", "modalities", "prediction", "reasoning_effort", "web_search_options",
)  # fmt: skip
_NEUTRAL: tuple[object, ...] = (None, False, 0, "", [], {})
# SearchConfig fields a request's ``treesearch`` object may not set: the server's to decide.
_SERVER_FIELDS = ("sampling", "step", "budget", "policy_table", "whole")
# Counts that multiply the upstream work (declared ``multiplies``); each at most the server's --max-n.
_COUNTS = tuple(name for name, declared in OPTIONS.items() if declared.multiplies)
# A request's budget: BudgetLimits's limits, named as their flags (``budget_tokens``), each at
# most the server's cap; and the sampling mode, named as SearchConfig's ``whole`` is on the
# command line (its two words).
_BUDGETS = {found.dest(name): name for name, found in declared(BudgetLimits).items() if found.range}
_SAMPLING = declared(SearchConfig)["whole"]
_STRATEGY_MODEL = re.compile(r"^(?P<strategy>[a-z][a-z-]*):(?P<n>[^/]*)(?:/(?P<model>.*))?$", re.DOTALL)
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


class RequestError(Exception):
    """A request the server refuses: the HTTP status, OpenAI's error type and code, and any
    headers to send with it (Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The error as OpenAI shapes it."""
        return {"error": {"message": str(self), "type": self.kind, "param": None, "code": self.code}}


# -- the body ---------------------------------------------------------------------


def load_body(raw: bytes) -> dict[str, Any]:
    """The decoded JSON object, or a 400: not JSON, NaN or Infinity, a number over
    MAX_DIGITS digits (Python would spend quadratic time on a huge integer), nesting
    deeper than MAX_DEPTH (checked before parsing: the parser recurses)."""
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        _check_depth(raw)
    try:
        body = json.loads(raw, parse_int=_integer, parse_float=_decimal, parse_constant=_constant)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object")
    return body


def _check_depth(raw: bytes) -> None:
    """Refuse nesting over MAX_DEPTH: strings are skipped whole by the pattern, so only
    brackets outside them count, and the loop runs once per string or bracket."""
    depth = 0
    for token in _TOKEN.finditer(raw):
        bracket = token.group()
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise RequestError(400, f"the body nests arrays and objects over {MAX_DEPTH} deep")
        elif bracket in (b"]", b"}"):
            depth -= 1


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise RequestError(400, f"a number in the body has over {MAX_DIGITS} digits")
    return int(text)


def _decimal(text: str) -> float:
    value = float(text) if len(text) <= 2 * MAX_DIGITS else math.inf
    if not math.isfinite(value):
        raise RequestError(400, f"a number in the body is too large or too long: {text[:40]}")
    return value


def _constant(text: str) -> float:
    raise RequestError(400, f"{text} is not a JSON number; numbers must be finite")


# -- the models -------------------------------------------------------------------


def _encodable(text: str) -> str:
    """Text the upstream can be sent: a lone surrogate (``"\\ud800"`` in JSON) cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("holds a lone surrogate (\\ud800 to \\udfff), which is not text") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


def _options_model() -> type[BaseModel]:
    """The ``treesearch`` object: SearchConfig's fields by name (their types from the
    dataclass, so a new option is accepted without an edit here), the budget and sampling.
    Their ranges and choices are SearchConfig's own, checked as the request's configuration
    is made (in the words a Python caller gets); only the server's caps are added here."""
    # Left out is unset (the default None is never validated); null only where the field
    # takes None (``aggregator``, ``deepconf_stop``).
    hints = typing.get_type_hints(SearchConfig)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], None)
        for f in dataclasses.fields(SearchConfig)
        if f.name not in _SERVER_FIELDS
    }
    fields["deepconf_top_k"] = (Annotated[int, Field(le=20)], None)  # OpenAI's top_logprobs
    fields["confidence_window"] = (Annotated[int, Field(le=1 << 16)] | None, None)
    for key, name in _BUDGETS.items():
        bounds = declared(BudgetLimits)[name].range
        assert bounds is not None
        low = Field(gt=bounds.low) if bounds.open_low else Field(ge=bounds.low)
        fields[key] = (Annotated[bounds.kind, low], None)
    assert _SAMPLING.words is not None
    fields[_SAMPLING.dest("whole")] = (Literal[_SAMPLING.words], None)
    model: type[BaseModel] = create_model("SearchOptions", __base__=_Strict, **fields)
    return model


SearchOptions = _options_model()


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: Text | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class _Request(_Strict):
    """What chat and completions share."""

    model: Text = ""
    n: Annotated[int, Field(ge=1)] = 1
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=5)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: Seed | None = None
    stop: Text | list[Text] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = None  # the client's end user, for its own records: taken, not used
    treesearch: SearchOptions | None = None  # type: ignore[valid-type]

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        if stop == "" or (isinstance(stop, list) and "" in stop):
            raise ValueError("a stop string must not be empty")
        return stop

    def stops(self) -> tuple[str, ...]:
        return () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def answer_tokens(self) -> int | None:
        """The tokens the client allows an answer."""
        return self.max_tokens


class ChatRequest(_Request):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None

    def answer_tokens(self) -> int | None:
        if None not in (self.max_tokens, self.max_completion_tokens) and (
            self.max_tokens != self.max_completion_tokens
        ):
            raise RequestError(400, "max_tokens and max_completion_tokens disagree; send one")
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: Annotated[Text, Field(min_length=1)]


SearchRequest = ChatRequest | CompletionRequest


def parse_request(body: dict[str, Any], *, chat: bool) -> SearchRequest:
    """The request, validated; a 400 naming every field that is wrong."""
    unsupported = sorted(key for key in UNSUPPORTED if key in body and body[key] not in _NEUTRAL)
    if unsupported:
        raise RequestError(400, f"not supported by treesearch serve: {', '.join(unsupported)}")
    given = {key: value for key, value in body.items() if key not in UNSUPPORTED}
    try:
        if chat:
            return ChatRequest.model_validate(given)
        return CompletionRequest.model_validate(given)
    except ValidationError as exc:
        raise RequestError(400, _said(exc)) from None


def _said(exc: ValidationError) -> str:
    """One line from pydantic's errors: each field's first complaint, without the input
    (which may be huge or secret) and without pydantic's URLs. A union's members (``str``,
    ``list[TextPart]``) are left out of the field's name."""
    said: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        parts = [str(p) for p in error["loc"] if isinstance(p, int) or re.fullmatch(r"[a-z_]+", str(p))]
        where = ".".join(p for p in parts if p not in ("str", "list")) or "body"
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        message = message.removeprefix("Value error, ")
        said.setdefault(where, f"{where}: {message}")
    shown = list(said.values())
    more = f" (and {len(shown) - 3} more)" if len(shown) > 3 else ""
    return "bad request: " + "; ".join(shown[:3]) + more


# -- the request's search ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Caps:
    """What no request exceeds: ``budget`` per request (split among its ``n`` searches),
    ``max_n`` for the request's ``n``, the strategy's N and the other counts that multiply
    the work. A request's ``max_tokens`` is capped by the server's own step settings."""

    budget: BudgetLimits
    max_n: int = 64


def parse_model(name: str, default: str) -> tuple[str | None, int | None, str]:
    """(strategy, N, upstream model) from a request's model name: ``beam:16/Qwen``,
    ``beam:16`` (the default upstream), or an upstream model alone (``llama3:8b`` too).
    A known strategy with a malformed N (``beam:-3``, ``beam:abc``) is a 400."""
    match = _STRATEGY_MODEL.match(name)
    if match is None or (match["strategy"] not in STRATEGIES and not match["n"].isdecimal()):
        return None, None, default if name in ("", "treesearch") else name
    if match["strategy"] not in STRATEGIES:
        raise RequestError(
            400, f"unknown strategy {match['strategy']!r}; choose from {', '.join(STRATEGIES)}", code="model"
        )
    count = match["n"]
    if not (count.isascii() and count.isdecimal() and 0 < len(count) <= 9 and int(count) > 0):
        raise RequestError(400, f"model {name[:80]!r}: N in STRATEGY:N must be a positive whole number")
    return match["strategy"], int(count), match["model"] or default


def request_config(request: SearchRequest, defaults: SearchConfig, caps: Caps) -> SearchConfig:
    """The SearchConfig of each of the request's ``n`` searches: the server's defaults, the
    model name's strategy and N, the ``treesearch`` object and the standard sampling fields,
    within the caps. Raises RequestError (a 400) for what does not make a valid
    configuration or asks for more than the caps allow."""
    strategy, count, _ = parse_model(request.model, "")
    given: dict[str, Any] = (
        {} if request.treesearch is None else request.treesearch.model_dump(exclude_unset=True)
    )
    mode = _SAMPLING.dest("whole")
    fields = {key: value for key, value in given.items() if key not in _BUDGETS and key != mode}
    if strategy is not None:
        fields.setdefault("strategy", strategy)
        fields.setdefault("n", count)
    if fields.get("strategy", defaults.strategy) not in STRATEGIES:
        raise RequestError(
            400, f"unknown strategy {fields['strategy']!r}; choose from {', '.join(STRATEGIES)}"
        )
    if request.n > caps.max_n:
        raise RequestError(400, f"n must be at most {caps.max_n} (the server's --max-n), got {request.n}")
    for name in _COUNTS:
        if fields.get(name, 0) > caps.max_n:
            raise RequestError(
                400, f"{name} must be at most {caps.max_n} (the server's --max-n), got {fields[name]}"
            )
    # Only what differs from the defaults is replaced: each replace validates anew, and this
    # runs for every request.
    asked = {"temperature": request.temperature, "top_p": request.top_p, "seed": request.seed}
    sampling: dict[str, Any] = {key: value for key, value in asked.items() if value is not None}
    if sampling:
        fields["sampling"] = replace(defaults.sampling, **sampling)
    tokens = request.answer_tokens()
    if tokens is not None:  # the server's own lengths are caps
        step = defaults.step
        fields["step"] = replace(step, max_tokens=min(tokens, step.max_tokens),
                                 max_step_tokens=min(tokens, step.max_step_tokens))  # fmt: skip
    budget = {
        name: _share(given.get(key), getattr(caps.budget, name), request.n) for key, name in _BUDGETS.items()
    }
    if any(getattr(defaults.budget, name) != value for name, value in budget.items()):
        fields["budget"] = replace(defaults.budget, **budget)
    if mode in given:
        assert _SAMPLING.words is not None
        fields["whole"] = given[mode] == _SAMPLING.words[0]
    try:
        return replace(defaults, **fields) if fields else defaults
    except (ConfigError, TypeError, ValueError) as exc:
        raise RequestError(400, f"bad treesearch settings: {exc}") from None


def _share(asked: float | None, cap: float | None, searches: int) -> Any:
    """A request's budget under the server's cap; counts are split among its searches,
    which run at once (a deadline is shared as it is)."""
    limit = cap if asked is None else asked if cap is None else min(asked, cap)
    if limit is None or isinstance(limit, float):
        return limit
    return max(1, int(limit) // searches)
