"""DeepConf's confidence measures (Fu et al. 2025), as plain functions of token confidences.

A token's confidence C is −(1/k) Σ of its top-k logprobs (``policy.token_confidence``);
a group confidence is the mean C over a sliding window of ``window`` tokens; a trace's
score is one of

- ``lowest``: its lowest group confidence (the paper's default);
- ``tail``: the mean C of its last ``window`` tokens;
- ``bottom10``: the mean of its lowest 10% of group confidences;
- ``mean``: the mean C of all its tokens.

A trace shorter than the window has one group: all of it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """The mean confidence of every window of ``window`` consecutive tokens, in order."""
    if not confidences:
        return []
    if len(confidences) <= window:
        return [sum(confidences) / len(confidences)]
    total = sum(confidences[:window])
    groups = [total / window]
    for end in range(window, len(confidences)):
        total += confidences[end] - confidences[end - window]
        groups.append(total / window)
    return groups


def trace_score(confidences: Sequence[float], window: int, kind: str = "lowest") -> float:
    """A trace's confidence by ``kind`` (see the module); 0 for a trace without tokens."""
    if not confidences:
        return 0.0
    if kind == "mean":
        return sum(confidences) / len(confidences)
    if kind == "tail":
        tail = confidences[-window:]
        return sum(tail) / len(tail)
    groups = group_confidences(confidences, window)
    if kind == "lowest":
        return min(groups)
    if kind == "bottom10":
        lowest = sorted(groups)[: max(1, math.ceil(len(groups) / 10))]
        return sum(lowest) / len(lowest)
    raise ValueError(f"unknown trace score {kind!r}")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) by linear interpolation between order statistics (numpy's
    default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class WindowGuard:
    """Online DeepConf's stopping rule over one streamed trace, fed its token confidences
    piece by piece as ``guard(confidences, done)``: False as soon as the mean of a window of
    ``window`` tokens falls below ``threshold``.

    Every window that ends in a piece is judged, not only the last (a server may send several
    tokens a piece), from a running sum, so a piece costs its own length whatever the window.
    A trace that ends (``done``) shorter than the window has one window, all of it, as in
    ``group_confidences``: a streamed trace it lets through scores at least ``threshold`` by
    the lowest window, as a warm-up trace must to vote."""

    def __init__(self, window: int, threshold: float) -> None:
        self.window = window
        self.threshold = threshold
        self._recent: deque[float] = deque()
        self._sum = 0.0

    def __call__(self, confidences: Sequence[float], done: bool = False) -> bool:
        for value in confidences:
            self._recent.append(value)
            self._sum += value
            if len(self._recent) > self.window:
                self._sum -= self._recent.popleft()
            if len(self._recent) == self.window and self._sum / self.window < self.threshold:
                return False
        short = 0 < len(self._recent) < self.window
        return not (done and short and self._sum / len(self._recent) < self.threshold)
