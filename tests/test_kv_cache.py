"""The embedded engine's KV-cache bookkeeping, without a model.

``Cells`` stands in for llama.cpp's unified KV cache: a fixed number of cells,
each holding one position for a set of sequence ids, so a copied prefix shares
its cells as in llama.cpp. The tests drive ``KVCache`` the way the engine does
and check that the memory it drives through its callbacks always matches its
own account of every sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from treesearch.backends.llamacpp.kv import KVCache, Seq, common_prefix


class CacheFull(Exception):
    """No free cell: llama_decode's return code 1."""


@dataclass
class Cell:
    pos: int
    seqs: set[int] = field(default_factory=set)


class Cells:
    """llama.cpp's side: ``size`` cells; ``write`` is a decode of one token (a free cell
    for a sequence's next position), ``copy`` and ``drop`` are the cache's callbacks."""

    def __init__(self, size: int) -> None:
        self.cells = [Cell(pos=-1) for _ in range(size)]
        self.calls: list[tuple[object, ...]] = []

    def copy(self, source: int, target: int, length: int) -> None:
        self.calls.append(("copy", source, target, length))
        for cell in self.cells:
            if source in cell.seqs and cell.pos < length:
                cell.seqs.add(target)

    def drop(self, seq_id: int) -> None:
        self.calls.append(("drop", seq_id))
        for cell in self.cells:
            cell.seqs.discard(seq_id)

    def write(self, seq_id: int, pos: int) -> None:
        free = next((cell for cell in self.cells if not cell.seqs), None)
        if free is None:
            raise CacheFull
        free.pos, free.seqs = pos, {seq_id}

    def positions(self, seq_id: int) -> list[int]:
        return sorted(cell.pos for cell in self.cells if seq_id in cell.seqs)

    def holders(self) -> set[int]:
        return {seq_id for cell in self.cells for seq_id in cell.seqs}

    def used(self) -> int:
        return sum(1 for cell in self.cells if cell.seqs)


def make(capacity: int = 4, cells: int = 64) -> tuple[KVCache[str], Cells]:
    memory = Cells(cells)
    return KVCache(capacity, copy=memory.copy, drop=memory.drop), memory


def decode(kv: KVCache[str], memory: Cells, seq: Seq[str], tokens: list[int], now: float = 0.0) -> None:
    """What one llama_decode of ``tokens`` on ``seq`` does: the cells, then the bookkeeping."""
    for token in tokens:
        memory.write(seq.id, len(seq.tokens))
        kv.record(seq, token, now)


def cached(kv: KVCache[str], memory: Cells, tokens: list[int], now: float = 0.0) -> Seq[str]:
    """A finished sequence that read ``tokens``, kept idle for its prefix."""
    seq = kv.open("done")
    decode(kv, memory, seq, tokens, now)
    kv.release(seq)
    return seq


@settings(derandomize=True)
@given(st.lists(st.integers(0, 2), max_size=40), st.lists(st.integers(0, 2), max_size=40))
def test_common_prefix_agrees_with_a_token_by_token_count(a: list[int], b: list[int]) -> None:
    naive = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    assert common_prefix(a, b) == naive


def test_a_prompt_reuses_the_cells_of_the_longest_cached_prefix() -> None:
    kv, memory = make()
    short = cached(kv, memory, [1, 2, 9])
    long = cached(kv, memory, [1, 2, 3, 4])
    prompt = [1, 2, 3, 7, 8]
    source, shared = kv.longest_prefix(prompt)
    assert (source, shared) == (long, 3)
    before = memory.used()
    seq = kv.open("new")
    kv.copy_prefix(long, seq, shared)
    assert seq.tokens == [1, 2, 3]
    assert memory.used() == before  # shared cells, not copies
    assert memory.positions(seq.id) == [0, 1, 2]
    decode(kv, memory, seq, prompt[shared:])
    assert memory.used() == before + 2  # only what follows the prefix is read
    assert long.tokens == [1, 2, 3, 4] and short.tokens == [1, 2, 9]  # the sources are untouched
    assert kv.longest_prefix([5, 1]) == (None, 0)


def test_a_tie_between_prefixes_goes_to_the_sequence_opened_first() -> None:
    kv, memory = make()
    first = cached(kv, memory, [1, 2, 3])
    cached(kv, memory, [1, 2, 4])
    assert kv.longest_prefix([1, 2, 5]) == (first, 2)


def test_eviction_takes_the_idle_sequence_decoded_least_recently() -> None:
    kv, memory = make()
    late = cached(kv, memory, [1], now=3.0)
    early = cached(kv, memory, [2], now=1.0)
    middle = cached(kv, memory, [3], now=2.0)
    assert [kv.evict(), kv.evict(), kv.evict()] == [early, middle, late]
    assert kv.evict() is None
    assert memory.used() == 0


def test_eviction_spares_owned_sequences_the_kept_prefix_and_one_just_copied() -> None:
    kv, memory = make(capacity=5)
    old = cached(kv, memory, [1], now=1.0)
    newer = cached(kv, memory, [2], now=2.0)
    newest = cached(kv, memory, [3], now=3.0)
    running = kv.open("running")
    decode(kv, memory, running, [4], now=0.5)  # the oldest, but owned
    kv.touch(old, 4.0)  # its prefix was just copied
    assert kv.evict(keep=newer) is newest  # keep is spared even though it is older
    assert kv.evict() is newer
    assert kv.evict() is old
    assert kv.evict() is None  # only an owned sequence is left
    assert [seq.id for seq in kv] == [running.id]
    assert memory.holders() == {running.id}


def test_idle_sequences_used_at_the_same_time_go_in_the_order_they_were_opened() -> None:
    kv, memory = make()
    first = cached(kv, memory, [1], now=1.0)
    second = cached(kv, memory, [2], now=1.0)
    assert kv.evict() is first
    assert kv.evict() is second


def test_the_capacity_bounds_the_sequences_held_running_or_idle() -> None:
    kv, memory = make(capacity=3)
    idle = cached(kv, memory, [1])
    running = [kv.open("a"), kv.open("b")]
    assert kv.free == 0 and len(kv) == 3
    with pytest.raises(LookupError, match="all 3 sequences"):
        kv.open("c")
    assert kv.make_room(1) == [idle]
    assert kv.free == 1
    assert kv.open("c").id == idle.id  # the id freed last is handed out first
    assert kv.make_room(1) == []  # every sequence is owned: nothing to evict
    assert kv.free == 0
    assert {seq.id for seq in running} | {idle.id} == {0, 1, 2}


def test_a_full_cache_keeps_the_prefix_a_new_sequence_will_copy_while_others_run() -> None:
    kv, memory = make(capacity=3)
    source = cached(kv, memory, [1, 2, 3], now=1.0)
    other = cached(kv, memory, [4, 5], now=2.0)
    kv.open("running")
    assert kv.make_room(2, keep=source) == [other]  # the older source stays
    assert kv.free == 1  # short of 2: wait for the running sequence
    assert source in kv


def test_a_kept_prefix_gives_way_when_no_running_sequence_will_free_one() -> None:
    """With nothing running, waiting frees nothing: a job that needs every sequence gets
    them, the prefix it would have copied included (before, the engine spun forever)."""
    kv, memory = make(capacity=3)
    source = cached(kv, memory, [1, 2, 3], now=1.0)
    other = cached(kv, memory, [4, 5], now=2.0)
    assert kv.make_room(3, keep=source) == [other, source]
    assert kv.free == 3 and source not in kv
    assert memory.used() == 0


def test_release_keeps_the_cells_for_later_prompts_but_an_empty_sequence_goes() -> None:
    kv, memory = make()
    seq = kv.open("job")
    decode(kv, memory, seq, [1, 2])
    kv.release(seq)
    assert seq in kv and seq.owner is None
    assert memory.positions(seq.id) == [0, 1]
    empty = kv.open("judgement")
    kv.release(empty)
    assert empty not in kv
    assert kv.free == 3


def test_remove_frees_the_cells_and_the_id_of_an_owned_sequence() -> None:
    kv, memory = make()
    seq = kv.open("preempted")
    decode(kv, memory, seq, [1, 2, 3])
    kv.remove(seq)
    assert seq not in kv and kv.free == 4
    assert memory.used() == 0
    assert memory.calls == [("drop", seq.id)]


def test_a_stale_sequence_cannot_drop_the_cells_of_the_one_that_took_its_id() -> None:
    kv, memory = make()
    stale = kv.open("old")
    kv.remove(stale)
    fresh = kv.open("new")
    decode(kv, memory, fresh, [1])
    assert fresh.id == stale.id
    with pytest.raises(ValueError, match="not in the KV cache"):
        kv.remove(stale)
    assert memory.positions(fresh.id) == [0]


def test_a_prefix_is_copied_only_onto_an_empty_sequence_and_only_as_far_as_it_goes() -> None:
    kv, memory = make()
    source = cached(kv, memory, [1, 2])
    target = kv.open("job")
    with pytest.raises(ValueError, match="cannot copy 3 of 2"):
        kv.copy_prefix(source, target, 3)
    decode(kv, memory, target, [7])
    with pytest.raises(ValueError, match="holding 1"):
        kv.copy_prefix(source, target, 1)
    assert memory.calls == []


def test_reset_forgets_every_sequence_without_touching_the_freed_memory() -> None:
    kv, memory = make(capacity=2)
    cached(kv, memory, [1])
    kv.open("running")
    kv.reset()
    assert len(kv) == 0 and kv.free == 2
    assert memory.calls == []


class Engine(RuleBasedStateMachine):
    """Random admissions, decodes, finishes, preemptions and evictions, as the engine makes
    them, over a small alphabet so that prompts share prefixes."""

    def __init__(self) -> None:
        super().__init__()
        self.kv, self.memory = make(capacity=4, cells=24)
        self.clock = 0.0
        self.opened = 0

    def now(self) -> float:
        self.clock += 1.0
        return self.clock

    def owned(self) -> list[Seq[str]]:
        return [seq for seq in self.kv if seq.owner is not None]

    def write(self, seq: Seq[str], tokens: list[int]) -> bool:
        """Decode ``tokens`` one by one, evicting idle sequences while the cells are full;
        False when nothing is left to evict."""
        for token in tokens:
            while True:
                try:
                    decode(self.kv, self.memory, seq, [token], self.now())
                    break
                except CacheFull:
                    if self.kv.evict() is None:
                        return False
        return True

    @rule(prompt=st.lists(st.integers(0, 2), min_size=1, max_size=8), wanted=st.integers(1, 4))
    def admit(self, prompt: list[int], wanted: int) -> None:
        source, shared = self.kv.longest_prefix(prompt[:-1])
        best = max((common_prefix(seq.tokens, prompt[:-1]) for seq in self.kv), default=0)
        assert shared == best
        idle = [seq for seq in self.kv if seq.owner is None and seq is not source]
        lru = sorted(idle, key=lambda seq: seq.used)
        evicted = self.kv.make_room(wanted, keep=source)
        assert evicted[: len(lru)] == lru[: len(evicted)]  # least recently used first
        if self.kv.free < wanted:
            assert self.owned()  # short only while a running sequence may free one
            return
        if source is not None and source not in self.kv:
            source, shared = None, 0
        seqs = [self.kv.open(f"job{index}") for index in range(wanted)]
        self.opened += wanted
        if source is not None and shared:
            self.kv.copy_prefix(source, seqs[0], shared)
            self.kv.touch(source, self.now())
        if not self.write(seqs[0], prompt[shared:]):
            for seq in seqs:  # preempted: the job gives its cells back
                self.kv.remove(seq)
            return
        for seq in seqs[1:]:
            self.kv.copy_prefix(seqs[0], seq, len(seqs[0].tokens))

    @precondition(lambda self: self.owned())
    @rule(pick=st.integers(0, 10**6), token=st.integers(0, 2))
    def generate(self, pick: int, token: int) -> None:
        owned = self.owned()
        seq = owned[pick % len(owned)]
        if not self.write(seq, [token]):
            self.kv.remove(seq)

    @precondition(lambda self: self.owned())
    @rule(pick=st.integers(0, 10**6))
    def finish(self, pick: int) -> None:
        owned = self.owned()
        self.kv.release(owned[pick % len(owned)])

    @rule()
    def evict(self) -> None:
        idle = [seq for seq in self.kv if seq.owner is None]
        victim = self.kv.evict()
        if not idle:
            assert victim is None
            return
        assert victim is min(idle, key=lambda seq: seq.used)

    @invariant()
    def every_id_is_held_once_or_free(self) -> None:
        held = [seq.id for seq in self.kv]
        assert len(held) == len(set(held))
        assert len(held) + self.kv.free == self.kv.capacity
        assert all(0 <= seq_id < self.kv.capacity for seq_id in held)

    @invariant()
    def the_memory_holds_what_the_bookkeeping_says(self) -> None:
        for seq in self.kv:
            assert self.memory.positions(seq.id) == list(range(len(seq.tokens)))  # one cell a position
        assert self.memory.holders() <= {seq.id for seq in self.kv}

    @invariant()
    def every_sequence_opened_is_held_or_was_dropped_once(self) -> None:
        drops = sum(1 for call in self.memory.calls if call[0] == "drop")
        assert len(self.kv) == self.opened - drops


TestEngine = Engine.TestCase
TestEngine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None, derandomize=True)
