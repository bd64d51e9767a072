"""Selection rules, without an event loop: beam's top-k, REBASE's widths, UCT."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from treesearch.strategies.select import beam_widths, rebase_widths, softmax, top_k, uct


def test_top_k_breaks_ties_by_order() -> None:
    assert top_k([10, 11, 12, 13], [0.5, 0.9, 0.5, 0.1], 3) == [11, 10, 12]
    assert top_k([1], [0.0], 5) == [1]


def test_beam_widths_keep_n_paths_in_play() -> None:
    assert beam_widths([0.2, 0.9, 0.5, 0.7], 8, 4) == [0, 4, 0, 4]  # the top N/M get M each
    assert beam_widths([0.2, 0.9, 0.5, 0.7], 6, 4) == [0, 6, 0, 0]  # M does not divide N
    assert beam_widths([0.2, 0.9, 0.5, 0.7], 10, 4) == [0, 5, 0, 5]
    assert beam_widths([0.3, 0.9, 0.5], 12, 2) == [4, 4, 4]  # fewer open than N/M
    assert beam_widths([0.4, 0.9], 7, 1) == [3, 4]  # the remainder goes to the best


@given(
    scores=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=40),
    n=st.integers(min_value=1, max_value=128),
    m=st.integers(min_value=1, max_value=16),
)
def test_beam_widths_sum_to_n_over_the_best(scores: list[float], n: int, m: int) -> None:
    widths = beam_widths(scores, n, m)
    assert sum(widths) == n
    kept = [i for i, width in enumerate(widths) if width]
    assert len(kept) == min(len(scores), max(1, n // m), n)
    assert sorted(kept) == sorted(top_k(range(len(scores)), scores, len(kept)))
    assert max(widths) - min(widths[i] for i in kept) <= 1


@given(
    scores=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=40),
    total=st.integers(min_value=0, max_value=300),
    temperature=st.sampled_from([0.05, 0.1, 0.2, 1.0, 10.0]),
)
def test_rebase_widths_follow_the_softmax_and_sum_to_the_total(
    scores: list[float], total: int, temperature: float
) -> None:
    widths = rebase_widths(scores, total, temperature)
    assert sum(widths) == total
    shares = [total * p for p in softmax(scores, temperature)]
    assert all(abs(w - share) < 1 for w, share in zip(widths, shares, strict=True))
    for i in range(len(scores)):
        for j in range(len(scores)):
            if scores[i] > scores[j]:
                assert widths[i] >= widths[j]


def test_rebase_widths_concentrate_at_low_temperature() -> None:
    assert rebase_widths([0.9, 0.2, 0.1], 8, 0.1) == [8, 0, 0]
    assert rebase_widths([0.5, 0.5], 3, 0.1) == [2, 1]


def test_uct_explores_unvisited_first() -> None:
    assert uct(0.0, 0, 10, 1.0) == math.inf
    assert uct(3.0, 4, 16, 1.0) > uct(3.0, 8, 16, 1.0)
