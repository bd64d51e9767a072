"""The embedded engine's KV-cache bookkeeping: which sequences hold cells, what they hold, which to evict.

llama.cpp's unified KV cache stores cells under sequence ids and knows nothing of
prompts, prefixes or recency. This module keeps that side, in plain Python apart
from the scheduler (as sglang keeps ``mem_cache/`` apart from its scheduler), so
it is tested without a model:

- a sequence's ``tokens`` are the tokens its cells hold (position i holds
  tokens[i]); its ``owner`` is what is generating on it, None once it is idle,
  kept for its prefix;
- a new sequence starts empty, or as a copy of another's first tokens, which
  then share their cells (a prompt re-reads only what follows the longest
  cached prefix of it);
- at most ``capacity`` sequences at once (llama.cpp's ``n_seq_max``), running or
  idle; ids are handed out again last freed first;
- to make room, the least recently used idle sequence goes first.

The cache changes llama.cpp's memory only through its two callbacks, ``copy``
(share a prefix's cells) and ``drop`` (free a sequence's cells), called as the
bookkeeping changes, so the two cannot drift apart. What it does not know is how
many cells are left: llama.cpp says so when a decode fails, and the engine then
evicts and tries again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

Owner = TypeVar("Owner")


def common_prefix(a: list[int], b: list[int]) -> int:
    """The length of the longest common prefix, by slice comparisons (in C) in a binary search."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    high -= 1
    while low < high:
        mid = (low + high + 1) // 2
        if a[low:mid] == b[low:mid]:
            low = mid
        else:
            high = mid - 1
    return low


class Seq(Generic[Owner]):
    """A sequence with cells in the cache. ``used`` is when a decode or a copy last read or
    wrote it, on the caller's clock; the least recently used idle sequence is evicted first."""

    __slots__ = ("id", "owner", "tokens", "used")

    def __init__(self, seq_id: int, owner: Owner) -> None:
        self.id = seq_id
        self.owner: Owner | None = owner
        self.tokens: list[int] = []
        self.used = 0.0


class KVCache(Generic[Owner]):
    """The sequences of one llama.cpp context. ``copy(source, target, length)`` gives
    sequence ``target`` the cells of ``source``'s positions [0, length); ``drop(seq_id)``
    frees every cell of a sequence."""

    def __init__(
        self, capacity: int, *, copy: Callable[[int, int, int], None], drop: Callable[[int], None]
    ) -> None:
        self.capacity = capacity
        self._copy = copy
        self._drop = drop
        self._seqs: dict[int, Seq[Owner]] = {}  # in the order they were opened
        self._free_ids = list(range(capacity - 1, -1, -1))  # popped from the end: 0 first

    @property
    def free(self) -> int:
        """How many more sequences may open before one is removed."""
        return len(self._free_ids)

    def __len__(self) -> int:
        return len(self._seqs)

    def __iter__(self) -> Iterator[Seq[Owner]]:
        return iter(list(self._seqs.values()))

    def __contains__(self, seq: Seq[Owner]) -> bool:
        return self._seqs.get(seq.id) is seq

    def longest_prefix(self, tokens: list[int]) -> tuple[Seq[Owner] | None, int]:
        """The sequence, running or idle, whose tokens share the longest prefix with
        ``tokens`` (the first opened, on a tie) and that length; (None, 0) when none shares one."""
        best: Seq[Owner] | None = None
        shared = 0
        for seq in self._seqs.values():
            length = common_prefix(seq.tokens, tokens)
            if length > shared:
                best, shared = seq, length
        return best, shared

    def open(self, owner: Owner) -> Seq[Owner]:
        """A new sequence for ``owner``, holding nothing yet. Raises LookupError when all
        ``capacity`` are open: make room first (``evict``)."""
        if not self._free_ids:
            raise LookupError(f"all {self.capacity} sequences of the KV cache are in use")
        seq = Seq(self._free_ids.pop(), owner)
        self._seqs[seq.id] = seq
        return seq

    def copy_prefix(self, source: Seq[Owner], target: Seq[Owner], length: int) -> None:
        """``target``, still empty, starts with ``source``'s first ``length`` tokens, sharing their cells."""
        if target.tokens or not 0 <= length <= len(source.tokens):
            raise ValueError(f"cannot copy {length} of {len(source.tokens)} tokens onto a sequence "
                             f"holding {len(target.tokens)}")  # fmt: skip
        self._copy(source.id, target.id, length)
        target.tokens = source.tokens[:length]

    def record(self, seq: Seq[Owner], token: int, now: float) -> None:
        """A decode wrote ``token`` at the sequence's next position."""
        seq.tokens.append(token)
        seq.used = now

    def touch(self, seq: Seq[Owner], now: float) -> None:
        """The sequence was read (its prefix copied): it is evicted later."""
        seq.used = now

    def release(self, seq: Seq[Owner]) -> None:
        """The owner is done: the cells stay, idle, for prompts that share them (a sequence
        that holds none is removed)."""
        seq.owner = None
        if not seq.tokens:
            self.remove(seq)

    def evict(self, keep: Seq[Owner] | None = None) -> Seq[Owner] | None:
        """Remove the least recently used idle sequence other than ``keep`` (the first opened,
        on a tie) and return it; None when every other one has an owner."""
        idle = [seq for seq in self._seqs.values() if seq.owner is None and seq is not keep]
        if not idle:
            return None
        victim = min(idle, key=lambda seq: seq.used)
        self.remove(victim)
        return victim

    def make_room(self, wanted: int, keep: Seq[Owner] | None = None) -> list[Seq[Owner]]:
        """Evict idle sequences other than ``keep`` (the prefix a new job will copy), least
        recently used first, until ``wanted`` more can open; return them. Short of room
        still, the caller waits for an owner to release a sequence; when no sequence has an
        owner, none ever will, and ``keep`` goes too (waiting for it would wait forever)."""
        evicted: list[Seq[Owner]] = []
        while self.free < wanted and (victim := self.evict(keep)) is not None:
            evicted.append(victim)
        if self.free < wanted and keep is not None and all(seq.owner is None for seq in self._seqs.values()):
            self.remove(keep)
            evicted.append(keep)
        return evicted

    def remove(self, seq: Seq[Owner]) -> None:
        """Drop the sequence's cells, owned or idle, and free its id."""
        if seq not in self:
            raise ValueError(f"sequence {seq.id} is not in the KV cache")
        self._drop(seq.id)
        del self._seqs[seq.id]
        self._free_ids.append(seq.id)

    def reset(self) -> None:
        """Forget every sequence without dropping cells: llama.cpp's memory itself was freed."""
        self._seqs.clear()
        self._free_ids = list(range(self.capacity - 1, -1, -1))
