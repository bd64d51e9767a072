"""Budgets: tokens, requests and a deadline, never overrun however many calls are in flight.

A call *reserves* its worst case before it is sent and *settles* to what the
server reported after. A reservation takes as many choices as fit; when none
fits it waits for calls in flight to settle, and when none is in flight it is
refused with BudgetExhausted, which ends a search gracefully. The check and the
taking never await in between, so on one event loop they are atomic without a
lock: the total charged plus the total reserved never exceeds the limit.

Two things a reservation cannot foresee are handled here too. A retry is one
more HTTP attempt: the transport calls ``count_attempt()`` before each one, and
an attempt beyond those reserved takes another request from the budget or is
refused. A server that spends more than it was asked to (more tokens than
``max_tokens``, more choices than ``n``) is charged what it reports, once; the
budget then refuses everything after (``server_overran``), so a limit is never
exceeded by more than that one response.

A call cancelled in flight (the deadline passed, or a sibling call failed) never
learns what the server spent: once an HTTP attempt was sent it is charged its
worst case (``abandon``), so the tokens charged are never fewer than the tokens
servers served.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

import anyio

from treesearch.engine.options import COUNTS, POSITIVES, check, checks, option
from treesearch.errors import BudgetExhausted, ConfigError, DeadlinePassed
from treesearch.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetLimits:
    """Per-problem limits; None means unlimited. ``count_prompt`` false counts completion tokens only.
    A command's defaults of the limits, and what they are spent on (a problem, serve's
    request), are its own: the help of the first three says ``{per}``."""

    tokens: int | None = option(
        None, "tokens per {per}", flag="--budget-tokens", group="search", range=COUNTS
    )
    requests: int | None = option(
        None, "requests per {per}", flag="--budget-requests", group="search", range=COUNTS
    )
    deadline_s: float | None = option(
        None, "seconds per {per}", flag="--budget-seconds", group="search", range=POSITIVES
    )
    count_prompt: bool = option(
        True,
        "count prompt+completion tokens (total) or completion only",
        flag="--budget-count",
        group="search",
        words=("total", "completion"),
    )

    def __post_init__(self) -> None:
        check(self, _CHECKS, "budget ")


_CHECKS = checks(BudgetLimits)


@dataclass(frozen=True, kw_only=True, slots=True)
class Usage:
    """What a search spent. ``estimated`` is true when some server gave no usage and counts
    were guessed. ``verifier_tokens`` is the part of the tokens the verifier's calls read and
    wrote (a PRM is often another model, with another size). ``reasoning_tokens`` is the part
    of the completion tokens a reasoning model spent thinking; ``reasoning_estimated`` is
    true when some of it is the thinking's share of a count the server did not split."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    estimated: bool = False
    verifier_tokens: int = 0
    reasoning_tokens: int = 0
    reasoning_estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def policy_tokens(self) -> int:
        return self.total_tokens - self.verifier_tokens

    def to_record(self) -> dict[str, Any]:
        """The ``usage`` object of a row. The reasoning counts appear only when a model
        thought, so a run without thinking writes the rows it always did."""
        record: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "requests": self.requests,
            "estimated": self.estimated,
            "verifier_tokens": self.verifier_tokens,
        }
        if self.reasoning_tokens:
            record["reasoning_tokens"] = self.reasoning_tokens
        if self.reasoning_estimated:
            record["reasoning_estimated"] = True
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Usage:
        """A row's ``usage`` read back (a field it lacks counts 0)."""
        record = record or {}
        return cls(
            prompt_tokens=int(record.get("prompt_tokens", 0)),
            completion_tokens=int(record.get("completion_tokens", 0)),
            requests=int(record.get("requests", 0)),
            estimated=bool(record.get("estimated", False)),
            verifier_tokens=int(record.get("verifier_tokens", 0)),
            reasoning_tokens=int(record.get("reasoning_tokens", 0)),
            reasoning_estimated=bool(record.get("reasoning_estimated", False)),
        )

    def flops(self, parameters: float, verifier_parameters: float | None = None) -> float:
        """Inference FLOPs, 2 × parameters × tokens per model (Snell et al.'s unit): the
        policy's tokens at ``parameters``, the verifier's at ``verifier_parameters`` (default:
        the same model)."""
        verifier = parameters if verifier_parameters is None else verifier_parameters
        return 2.0 * (parameters * self.policy_tokens + verifier * self.verifier_tokens)


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSizes:
    """Parameters of the policy's model and of the verifier's (None: the policy's own model),
    for inference FLOPs: 2 × parameters × tokens, per model."""

    policy: float
    verifier: float | None = None

    def __post_init__(self) -> None:
        for size in (self.policy, self.verifier):
            if size is not None and not 0 < size < math.inf:  # NaN too: FLOPs go into JSON rows
                raise ConfigError(f"model parameters must be positive finite numbers, got {size}")

    def flops(self, usage: Usage) -> dict[str, float]:
        """A row's FLOPs: the policy's, the verifier's and their total."""
        verifier = self.policy if self.verifier is None else self.verifier
        return {
            "policy": 2.0 * self.policy * usage.policy_tokens,
            "verifier": 2.0 * verifier * usage.verifier_tokens,
            "total": usage.flops(self.policy, self.verifier),
        }


@dataclass(slots=True)
class Tally:
    """Requests and tokens spent so far by every budget that adds to it: a run's live totals."""

    requests: int = 0
    tokens: int = 0


@dataclass(slots=True)
class Reservation:
    """``tokens`` is the worst case counted against the limit, ``prompt_tokens`` and
    ``completion_tokens`` the most the prompt may take and the choices may generate;
    ``attempts`` counts the HTTP attempts made under it (0 for in-process calls)."""

    tokens: int
    requests: int
    choices: int = 1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    open: bool = True
    attempts: int = 0


_metered: ContextVar[tuple[Budget, Reservation] | None] = ContextVar("treesearch_metered", default=None)


def count_attempt() -> None:
    """Called by a transport before each HTTP attempt. Under ``Budget.metered``, an attempt
    beyond the requests reserved takes one more from the budget, or raises BudgetExhausted."""
    metered = _metered.get()
    if metered is not None:
        budget, reservation = metered
        budget.attempt(reservation)


class Budget:
    """The running account of one problem's search against its limits."""

    def __init__(self, limits: BudgetLimits, tally: Tally | None = None) -> None:
        """``tally``, when given, also adds up what this budget spends (a run's totals)."""
        self.limits = limits
        self._tally = tally
        self._deadline = None if limits.deadline_s is None else time.monotonic() + limits.deadline_s
        self._charged_tokens = 0
        self._reserved_tokens = 0
        self._charged_requests = 0
        self._reserved_requests = 0
        self._usage = Usage()
        self._settled: anyio.Event | None = None
        self._in_flight = 0
        self._overran = False

    @property
    def usage(self) -> Usage:
        return self._usage

    @property
    def charged_tokens(self) -> int:
        """Tokens counted against the limit (prompt + completion, or completion only)."""
        return self._charged_tokens

    def seconds_left(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    async def reserve(
        self, prompt_tokens: int, tokens_per_choice: int, choices: int = 1, requests: int = 1
    ) -> Reservation:
        """Hold the worst case of one request for up to ``choices`` choices, or raise BudgetExhausted.

        The reservation may hold fewer choices than asked (as many as fit, at least one):
        the caller asks for the rest later. When not even one fits but other calls are in
        flight, it waits for them to settle, since they usually give most of their worst
        case back; when nothing is in flight, the budget is spent.
        """
        while True:
            left_s = self.seconds_left()
            if left_s is not None and left_s <= 0:
                raise DeadlinePassed()
            if self.overspent:
                raise BudgetExhausted("the server spent more than it was asked to")
            fit = self._choices_that_fit(prompt_tokens, tokens_per_choice, choices, requests)
            if fit:
                tokens = fit * tokens_per_choice + (prompt_tokens if self.limits.count_prompt else 0)
                self._reserved_tokens += tokens
                self._reserved_requests += requests
                self._in_flight += 1
                return Reservation(
                    tokens=tokens,
                    requests=requests,
                    choices=fit,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=fit * tokens_per_choice,
                )
            if not self._in_flight:
                raise BudgetExhausted(self._why(prompt_tokens, tokens_per_choice))
            if self._settled is None:
                self._settled = anyio.Event()
            with anyio.move_on_after(math.inf if left_s is None else left_s):
                await self._settled.wait()

    @property
    def overspent(self) -> bool:
        """A server overspent under a limit: the search was stopped for it."""
        return self._overran and self._limited

    @property
    def _limited(self) -> bool:
        return self.limits.tokens is not None or self.limits.requests is not None

    @contextmanager
    def metered(self, reservation: Reservation) -> Iterator[Reservation]:
        """Count the HTTP attempts made (in this task and those it starts) under ``reservation``."""
        token = _metered.set((self, reservation))
        try:
            yield reservation
        finally:
            _metered.reset(token)

    def attempt(self, reservation: Reservation) -> None:
        """One more HTTP attempt under ``reservation``; past its reserved requests, take one more."""
        if self.overspent:
            raise BudgetExhausted("the server spent more than it was asked to")
        if reservation.attempts >= reservation.requests:
            limit = self.limits.requests
            if limit is not None and self._charged_requests + self._reserved_requests + 1 > limit:
                raise BudgetExhausted(f"request limit {limit} reached while retrying")
            reservation.requests += 1
            self._reserved_requests += 1
        reservation.attempts += 1

    def _choices_that_fit(
        self, prompt_tokens: int, tokens_per_choice: int, choices: int, requests: int
    ) -> int:
        limits = self.limits
        if (
            limits.requests is not None
            and self._charged_requests + self._reserved_requests + requests > limits.requests
        ):
            return 0
        if limits.tokens is None:
            return choices
        left = limits.tokens - self._charged_tokens - self._reserved_tokens
        left -= prompt_tokens if limits.count_prompt else 0
        if left < 0:
            return 0
        return choices if tokens_per_choice == 0 else min(choices, left // tokens_per_choice)

    def _why(self, prompt_tokens: int, tokens_per_choice: int) -> str:
        if self.limits.tokens is None or (
            self.limits.requests is not None and self._charged_requests >= self.limits.requests
        ):
            return f"request limit {self.limits.requests} reached"
        left = self.limits.tokens - self._charged_tokens
        need = prompt_tokens + tokens_per_choice
        return f"{left} of {self.limits.tokens} tokens left, a request needs up to {need}"

    def settle(
        self,
        reservation: Reservation,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        estimated: bool,
        requests: int | None = None,
        verifier: bool = False,
        reasoning_tokens: int = 0,
        reasoning_estimated: bool = False,
    ) -> None:
        """Replace a reservation by what the call really cost: the HTTP attempts it made, or
        else ``requests`` (default: the reserved count); ``verifier`` marks a verifier's call;
        ``reasoning_tokens`` is the part of ``completion_tokens`` spent thinking (already in
        it, so it changes no charge), ``reasoning_estimated`` whether it is a share guessed."""
        self._close(reservation)
        if reservation.attempts:
            requests = reservation.attempts
        elif requests is None:
            requests = reservation.requests
        tokens = completion_tokens + (prompt_tokens if self.limits.count_prompt else 0)
        if completion_tokens > reservation.completion_tokens or tokens > reservation.tokens:
            self.overran(
                f"charged {completion_tokens} completion and {tokens} counted tokens against worst"
                f" cases of {reservation.completion_tokens} and {reservation.tokens}"
            )
        self._charged_tokens += tokens
        self._spend(prompt_tokens, completion_tokens, requests, estimated, verifier)
        if reasoning_tokens or reasoning_estimated:
            self._usage = replace(
                self._usage,
                reasoning_tokens=self._usage.reasoning_tokens + reasoning_tokens,
                reasoning_estimated=self._usage.reasoning_estimated or reasoning_estimated,
            )

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back unused (the call failed or was cancelled). Its HTTP attempts
        still count as requests: a server answered them."""
        self._close(reservation)
        if reservation.attempts:
            self._spend(0, 0, reservation.attempts, False)

    def abandon(self, reservation: Reservation, *, verifier: bool = False) -> None:
        """Close a call cancelled in flight. Once an HTTP attempt was sent, a server may have
        served it whole, and its answer (with its usage) is lost: charge its worst case,
        estimated. A call cancelled before any attempt (waiting for a connection) is released."""
        if not reservation.attempts:
            self.release(reservation)
            return
        self.settle(
            reservation,
            reservation.prompt_tokens,
            reservation.completion_tokens,
            estimated=True,
            verifier=verifier,
        )

    def _spend(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        requests: int,
        estimated: bool,
        verifier: bool = False,
    ) -> None:
        self._charged_requests += requests
        used = self._usage
        self._usage = replace(
            used,
            prompt_tokens=used.prompt_tokens + prompt_tokens,
            completion_tokens=used.completion_tokens + completion_tokens,
            requests=used.requests + requests,
            estimated=used.estimated or estimated,
            verifier_tokens=used.verifier_tokens + (prompt_tokens + completion_tokens if verifier else 0),
        )
        if self._tally is not None:
            self._tally.requests += requests
            self._tally.tokens += prompt_tokens + completion_tokens

    def overran(self, why: str) -> None:
        """A server spent more than a request allowed: say so, and (under a limit) refuse
        every reservation from now on."""
        if not self._overran:
            log.warning("server_overran", why=why, limited=self._limited)
        self._overran = True

    def _close(self, reservation: Reservation) -> None:
        if not reservation.open:
            raise RuntimeError("reservation settled twice")
        reservation.open = False
        self._reserved_tokens -= reservation.tokens
        self._reserved_requests -= reservation.requests
        self._in_flight -= 1
        if self._settled is not None:  # wake the calls waiting for room
            self._settled.set()
            self._settled = None
