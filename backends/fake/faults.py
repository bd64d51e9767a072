"""The synthetic server's faults: what kinds there are, how a flag names them, and the seeded
stream that decides which request gets which.

A fault is an error status (any 4xx or 5xx, given as its number) or one of ``FAULT_KINDS``.
Every decision about faults (whether a request gets one, which, how many choices a ``fewer``
keeps, which body a ``malformed`` sends) comes from one random stream seeded apart from the
model's, so a run with faults answers the same requests the same way every time, and turning
faults on does not change what the model says.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TypeGuard

from treesearch.errors import ConfigError

# Faults besides error statuses, by what a client sees.
FAULT_KINDS: Mapping[str, str] = {
    "reset": "the connection closed without an answer",
    "slow": "an answer only after slow_s, longer than a client waits",
    "truncated": "a 200 whose JSON body is cut in half",
    "malformed": "a 200 whose body is not JSON, or JSON without choices",
    "fewer": "a 200 with fewer choices than n (from 1 to n - 1)",
}


def parse_faults(text: str, flag: str, *, statuses_only: bool = False) -> tuple[str, ...]:
    """A comma list of fault kinds (``statuses_only``: of error statuses), or ConfigError
    naming ``flag`` and the item that is neither."""
    kinds = tuple(item.strip() for item in text.split(",") if item.strip())
    for kind in kinds:
        if statuses_only and not is_status(kind):
            raise ConfigError(f"{flag}: {kind!r} is not an error status (400 to 599)")
        check_fault(kind, flag)
    return kinds


def is_status(kind: str) -> bool:
    return kind.isdigit() and 400 <= int(kind) <= 599


def check_fault(kind: str, flag: str) -> None:
    """ConfigError naming ``flag`` unless ``kind`` is an error status or one of FAULT_KINDS."""
    if kind not in FAULT_KINDS and not is_status(kind):
        raise ConfigError(
            f"{flag}: {kind!r} is neither an error status (400 to 599) nor one of {', '.join(FAULT_KINDS)}"
        )


def withholds_answer(kind: str | None) -> TypeGuard[str]:
    """Whether a fault sends no completion at all (an error status, a reset): the server then
    makes none, so the model's random stream is not drawn from."""
    return kind is not None and (is_status(kind) or kind == "reset")


class FaultDraws:
    """The seeded stream of fault decisions: a share ``rate`` of requests gets a fault drawn
    evenly from ``kinds``."""

    def __init__(self, rate: float, kinds: Sequence[str], seed: int) -> None:
        self._rate = rate
        self._kinds = tuple(kinds)
        self._rng = random.Random(seed)

    def draw(self, n: int) -> str | None:
        """This request's fault, or None. ``fewer`` is drawn only where it can apply (``n``
        above 1)."""
        if not self._rate or self._rng.random() >= self._rate:
            return None
        kinds = [kind for kind in self._kinds if kind != "fewer" or n > 1]
        return self._rng.choice(kinds) if kinds else None

    def fewer(self, n: int) -> int:
        """How many of ``n`` choices a ``fewer`` fault answers: from 1 to n - 1."""
        return self._rng.randint(1, n - 1)

    def html(self) -> bool:
        """Whether a ``malformed`` fault sends an HTML page (else JSON without choices)."""
        return self._rng.random() < 0.5
