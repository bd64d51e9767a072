"""A run's progress on stderr: a tqdm bar on a terminal, plain lines otherwise (one every
``every_s`` seconds and one at each tenth of the problems).

Both show the problems done, the accuracy so far and the requests and tokens
spent, the last two live from the first second (every budget of the run adds to
one ``Tally``), so a long beam search shows work before its first problem ends.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Never, TextIO

import anyio

from treesearch.engine.budget import Tally

if TYPE_CHECKING:
    from tqdm import tqdm

    from treesearch.engine.search import SearchResult


class Progress:
    """``watch()`` refreshes until cancelled; ``close()`` ends the line."""

    def __init__(self, total: int, stream: TextIO, tally: Tally, *, every_s: float = 10.0) -> None:
        self.total, self.stream, self.tally = total, stream, tally
        self.every_s = every_s
        self.done = self.correct = self.graded = self.failed = 0
        self.started = time.perf_counter()
        self._bar: tqdm[Never] | None = None
        self._shown = (-1, -1)  # (problems done, requests) of the last plain line
        if stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=stream, unit="problem", dynamic_ncols=True, leave=True)

    def finished(self, result: SearchResult) -> None:
        self.done += 1
        self.failed += result.error is not None
        if result.correct is not None:
            self.graded += 1
            self.correct += result.correct
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(self._counts(), refresh=True)
        elif self.done * 10 // max(self.total, 1) > (self.done - 1) * 10 // max(self.total, 1):
            self._line()  # a tenth of the problems more

    async def watch(self) -> None:
        while True:
            await anyio.sleep(0.5 if self._bar is not None else self.every_s)
            if self._bar is not None:
                self._bar.set_postfix_str(self._counts(), refresh=True)
            else:
                self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._counts(), refresh=True)
            self._bar.close()  # ends the line with a newline
        elif self._shown != (self.done, self.tally.requests):
            self._line()

    def _counts(self) -> str:
        accuracy = f"acc {self.correct / self.graded:.3f} " if self.graded else ""
        failed = f"failed {self.failed} " if self.failed else ""
        return f"{accuracy}{failed}requests {self.tally.requests} tokens {self.tally.tokens}"

    def _line(self) -> None:
        self._shown = (self.done, self.tally.requests)
        elapsed = time.perf_counter() - self.started
        self.stream.write(f"[{self.done}/{self.total}] {self._counts()} {elapsed:.0f}s\n")
        self.stream.flush()
