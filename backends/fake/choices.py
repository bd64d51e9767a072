"""The OpenAI-shaped pieces of a synthetic answer, as pure functions of the model's text: a
reply cut at its stop strings and token limit, one choice in completions or chat form with
its logprobs, and a finished choice re-cut into the server-sent events of a stream.

Every token has logprob log 0.9 (``GOOD_LOGPROB``); with top logprobs asked for, its
alternatives are placed so that the token's confidence (DeepConf's C, −mean of the top-k
logprobs) is the one the server drew for it, c, and (with k ≥ 3) so that the tokens outside
the top k hold e^−c of the probability: the token's self-certainty estimated from its top k
(``treesearch.answers.certainty``, about −log of that mass for a large vocabulary) is about c
too, and the margin that separates the confidences of right and wrong traces separates their
self-certainties as well.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from typing import Any

from .tasks import TOKEN
from .thinking import REASONING_FIELDS

GOOD_LOGPROB = math.log(0.9)
_STREAMED_LOGPROBS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


def cut(text: str, stops: Sequence[str], max_tokens: int) -> tuple[str, str, str | None]:
    """Apply stop strings and the token limit: (text, finish_reason, stop_reason)."""
    finish, stop_reason = "stop", None
    hits = [(text.find(s), s) for s in stops if s and s in text]
    if hits:
        position, stop_reason = min(hits)
        text = text[:position]
    tokens = list(TOKEN.finditer(text))
    if len(tokens) > max_tokens:
        text = text[: tokens[max_tokens - 1].end()] if max_tokens else ""
        finish, stop_reason = "length", None
    return text, finish, stop_reason


def confident_tops(
    tokens: Sequence[str], k: int, centre: float, spread: float, draws: random.Random
) -> list[dict[str, float]]:
    """Each token's top-k logprobs: the token itself at log 0.9 and k − 1 alternatives below,
    placed so that −mean(top-k) is a confidence drawn around ``centre`` (at least
    ``lowest_confidence(k)``, the least a distribution with the token at 0.9 allows), with e^−c
    left outside the top k (see the module)."""
    least = lowest_confidence(k)
    tops = []
    for token in tokens:
        confidence = max(least, draws.gauss(centre, spread))
        names = (f"<alt{i}>" for i in range(1, k))
        tops.append({token: GOOD_LOGPROB, **dict(zip(names, _alternatives(confidence, k), strict=True))})
    return tops


def lowest_confidence(k: int) -> float:
    """The confidence of top k logprobs whose k − 1 alternatives share 0.04 evenly: below it
    no distribution with the token at 0.9 and e^−c (at most 0.05) outside the top k has
    confidence c."""
    return (-GOOD_LOGPROB - (k - 1) * math.log(0.04 / (k - 1))) / k


def _alternatives(confidence: float, k: int) -> list[float]:
    """The k − 1 alternatives' logprobs of a token of ``confidence``: one at log a, the other
    k − 2 equal at log b, with log a + (k − 2) log b fixing the confidence and a + (k − 2) b =
    0.1 − e^−c (the rest of the vocabulary holding e^−c, at most 0.05). Their share u of the
    mass solves u = (k − 2) exp((total − log(mass − u)) / (k − 2)), a map that climbs from
    u = 0 to its least fixed point (where a is the largest alternative), fast since b ≪ a.
    One alternative alone (k = 2) takes the whole confidence, and the tail what is left."""
    total = -confidence * k - GOOD_LOGPROB  # the alternatives' logprobs add up to this
    if k == 2:
        return [total]
    others = k - 2
    mass = 0.1 - min(math.exp(-confidence), 0.05)
    share = 0.0
    for _ in range(200):
        share, last = others * math.exp((total - math.log(mass - share)) / others), share
        if share - last <= 1e-15 * share:
            break
    first = math.log(mass - share)
    return [first, *[(total - first) / others] * others]


def render_choice(
    index: int,
    text: str,
    finish: str,
    stop_reason: str | None,
    *,
    chat: bool,
    logprobs: Any,
    yes: float | None,
    tops: list[dict[str, float]],
    thinking: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """One choice as the API shapes it, with logprobs when the request's ``logprobs`` asks:
    ``tops`` per token, or for completions of a yes/no question its yes/no distribution. A
    chat choice's ``thinking`` (its field and text) goes in its message apart from ``text``,
    its tokens' logprobs before the reply's (a completion's thinking is in its text, tags
    and all)."""
    choice: dict[str, Any] = {"index": index, "finish_reason": finish, "stop_reason": stop_reason}
    if not chat:
        choice["text"] = text
        choice["logprobs"] = None if logprobs is None else _completion_logprobs(text, yes, tops)
        return choice
    choice["message"] = {"role": "assistant", "content": text}
    shown = TOKEN.findall(text)
    if thinking is not None:
        field, thought = thinking
        choice["message"][field] = thought
        shown = TOKEN.findall(thought) + shown
    if logprobs:
        choice["logprobs"] = {
            "content": [
                {
                    "token": t,
                    "logprob": GOOD_LOGPROB,
                    "bytes": None,
                    "top_logprobs": [{"token": k, "logprob": v} for k, v in top.items()],
                }
                for t, top in zip(shown, tops, strict=True)
            ]
        }
    return choice


def _completion_logprobs(text: str, yes: float | None, tops: list[dict[str, float]]) -> dict[str, Any]:
    """Completions-style logprobs: 0.9 per token with ``tops`` as its top logprobs, or the
    yes/no distribution."""
    tokens = TOKEN.findall(text)
    offsets = [m.start() for m in TOKEN.finditer(text)]
    if yes is not None:
        top = {" Yes": math.log(max(yes, 1e-9)), " No": math.log(max(1.0 - yes, 1e-9))}
        return {"tokens": [text], "token_logprobs": [top[text]], "top_logprobs": [top], "text_offset": [0]}
    return {
        "tokens": tokens,
        "token_logprobs": [GOOD_LOGPROB] * len(tokens),
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def event(data: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``data`` as JSON."""
    return f"data: {json.dumps(data)}\n\n".encode()


def token_events(choice: dict[str, Any], chat: bool) -> list[dict[str, Any]]:
    """A finished choice as stream chunks: one a token (its text up to the next token, and
    its logprobs when the choice has them; a chat's thinking first, in its own field), then
    one with the finish reason."""
    if chat:
        message = choice["message"]
        parts = [(key, message[key]) for key in (*REASONING_FIELDS, "content") if key in message]
    else:
        parts = [("text", choice["text"])]
    pieces = [(key, piece) for key, text in parts for piece in _token_pieces(text)]
    logprobs = choice.get("logprobs")
    events: list[dict[str, Any]] = []
    for position, (key, piece) in enumerate(pieces):
        chunk: dict[str, Any] = {"index": choice["index"], "finish_reason": None}
        if chat:
            chunk["delta"] = {key: piece}
            if logprobs:
                chunk["logprobs"] = {"content": [logprobs["content"][position]]}
        else:
            chunk["text"] = piece
            if logprobs:
                chunk["logprobs"] = {name: [logprobs[name][position]] for name in _STREAMED_LOGPROBS}
        events.append(chunk)
    end: dict[str, Any] = {"index": choice["index"], "finish_reason": choice["finish_reason"],
                           "stop_reason": choice.get("stop_reason")}  # fmt: skip
    if chat:
        end["delta"] = {}
    else:
        end["text"] = ""
    events.append(end)
    return events


def _token_pieces(text: str) -> list[str]:
    """``text`` cut before each token but the first: every piece one token and the space after it."""
    starts = [match.start() for match in TOKEN.finditer(text)]
    bounds = [0, *starts[1:], len(text)] if starts else []
    return [text[bounds[position] : bounds[position + 1]] for position in range(len(starts))]
