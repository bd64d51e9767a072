"""How ``treesearch serve`` renders search results, in pure functions of data: the error
status a result maps to (by the type of its failure), and the OpenAI completion, chunks,
usage and ``treesearch`` summary of the request's searches.

A reasoning model's thinking on the chosen path passes through as vLLM's reasoning parser
sends it: ``reasoning_content`` beside the text (in a chat message, or a completion's
choice), streamed first as its own deltas, and its tokens in
``usage.completion_tokens_details.reasoning_tokens``. A response without thinking is what
it was before."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from treesearch.engine.config import SearchConfig
from treesearch.engine.search import SearchResult, StopReason
from treesearch.engine.tree import Node
from treesearch.errors import EndpointError, VerifierError
from treesearch.serve.protocol import RequestError, SearchRequest


def failure_of(result: SearchResult, config: SearchConfig) -> RequestError | None:
    """The error status of a search's outcome, by the type of its failure: an upstream 429
    (with its Retry-After), a timeout or a search out of time without an answer (504), any
    other failure (502); None for a search that ended without one."""
    failure = result.failure
    if isinstance(failure, EndpointError):
        if failure.status == 429:
            wait = failure.retry_after_s
            after = {"Retry-After": str(math.ceil(wait) if wait is not None else 1)}
            message = f"the upstream is rate limiting: {failure.detail[:300]}"
            return RequestError(429, message, "rate_limit_error", headers=after)
        if failure.timed_out:
            return RequestError(504, "the upstream did not answer within the server's --upstream-timeout",
                                "timeout_error")  # fmt: skip
        if failure.status is None:
            return RequestError(502, "the upstream could not be reached", "upstream_error")
        return RequestError(502, f"the upstream answered {failure.status}: {failure.detail[:300]}",
                            "upstream_error")  # fmt: skip
    if isinstance(failure, VerifierError):
        return RequestError(502, f"the verifier failed: {failure}", "upstream_error")
    if result.error is not None:
        return RequestError(502, f"the search failed: {result.error}", "upstream_error")
    if result.answer is None and result.stopped_by is StopReason.DEADLINE:
        seconds = config.budget.deadline_s
        return RequestError(504, f"the search found no answer within its {seconds:g} s", "timeout_error")
    return None


def path_text(result: SearchResult, delimiter: str) -> str:
    """The text of the path behind the answer: the best-scored candidate giving it."""
    return delimiter.join(node.text for node in _path(result))


def path_thinking(result: SearchResult) -> str | None:
    """The thinking on the path behind the answer, its steps' apart by blank lines (None
    when none of them thought)."""
    thoughts = [node.thinking for node in _path(result) if node.thinking]
    return "\n\n".join(thoughts) if thoughts else None


def _path(result: SearchResult) -> list[Node]:
    """The path behind the answer: the best-scored candidate giving it (none without one)."""
    giving = [c for c in result.candidates if c.answer == result.answer]
    if result.tree is None or not giving:
        return []
    best = max(giving, key=lambda c: c.score if c.score is not None else -1.0)
    return result.tree.path(best.node)


def content_of(result: SearchResult, config: SearchConfig, stops: Sequence[str]) -> tuple[str, str]:
    """The choice's text and finish reason: the chosen path cut before the first stop string
    (OpenAI's ``stop``); "length" when the search ended without an answer."""
    text = path_text(result, config.step.delimiter)
    cut = min((found for stop in stops if (found := text.find(stop)) >= 0), default=len(text))
    return text[:cut], "stop" if result.answer is not None else "length"


def usage_of(results: Sequence[SearchResult]) -> dict[str, Any]:
    """Every search's tokens; the thinking's among the completion tokens when a model thought."""
    prompt = sum(r.usage.prompt_tokens for r in results)
    completion = sum(r.usage.completion_tokens for r in results)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}  # fmt: skip
    reasoning = sum(r.usage.reasoning_tokens for r in results)
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def summary_of(result: SearchResult, config: SearchConfig) -> dict[str, Any]:
    summary = {
        "answer": result.answer,
        "strategy": result.strategy,
        "n": config.n,
        "stopped_by": result.stopped_by,
        "aggregated_by": result.aggregated_by,
        "calls": result.usage.requests,
        "candidates": [{"answer": c.answer, "score": c.score} for c in result.candidates],
        "error": result.error,
    }
    if result.answer is None:
        summary["message"] = f"the search ended ({result.stopped_by}) before any path gave an answer"
    return summary


def answer(
    results: Sequence[SearchResult],
    config: SearchConfig,
    head: dict[str, Any],
    asked: SearchRequest,
    chat: bool,
) -> dict[str, Any]:
    """The completion: a choice a search, the usage of all; ``treesearch`` sums up the
    first search (each choice carries its own when there are several)."""
    choices = []
    for index, result in enumerate(results):
        text, finish = content_of(result, config, asked.stops())
        choice: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": None}
        choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        thinking = path_thinking(result)
        if thinking is not None:
            (choice["message"] if chat else choice)["reasoning_content"] = thinking
        if len(results) > 1:
            choice["treesearch"] = summary_of(result, config)
        choices.append(choice)
    return {
        **head,
        "object": "chat.completion" if chat else "text_completion",
        "choices": choices,
        "usage": usage_of(results),
        "treesearch": summary_of(results[0], config),
    }


def chunks(
    results: Sequence[SearchResult],
    config: SearchConfig,
    head: dict[str, Any],
    asked: SearchRequest,
    chat: bool,
) -> list[dict[str, Any]]:
    """The stream's chunks: each choice's thinking then its text a line a chunk, its last
    carrying the finish reason and its summary; then the usage when
    ``stream_options.include_usage`` asks."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    out: list[dict[str, Any]] = []
    for index, result in enumerate(results):
        text, finish = content_of(result, config, asked.stops())
        thinking = path_thinking(result) or ""
        pieces = [("reasoning_content", line) for line in _lines(thinking)]
        pieces += [("content", line) for line in _lines(text)] or [("content", "")]
        for number, (key, piece) in enumerate(pieces):
            last = number == len(pieces) - 1
            choice: dict[str, Any] = {"index": index, "finish_reason": finish if last else None}
            if chat:
                choice["delta"] = {key: piece, **({"role": "assistant"} if number == 0 else {})}
            elif key == "content":
                choice["text"] = piece
            else:
                choice.update({"text": "", key: piece})
            chunk = {**head, "object": kind, "choices": [choice]}
            if last:
                chunk["treesearch"] = summary_of(result, config)
            out.append(chunk)
    if asked.stream_options is not None and asked.stream_options.include_usage:
        out.append({**head, "object": kind, "choices": [], "usage": usage_of(results)})
    return out


def _lines(text: str) -> list[str]:
    """``text`` a line a piece, each with its line break."""
    return [line for line in re.split(r"(?<=\n)", text) if line]
