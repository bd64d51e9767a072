"""Aggregators: how the finished paths of a search become one answer.

Each is a plain function of the candidates and their answer groups (which
answers are equivalent, computed once by an ``AnswerEquivalence``), so they are
testable without an event loop. Ties go to the larger score sum, then to the
answer given by more paths (so equal scores, all 0 say, leave a weighted vote to
the count), then to the answer found first. The score-based ones use the
candidates that have a score; ``aggregate`` falls back to majority vote when none
has (the budget or deadline ran out before the verifier) and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from treesearch.errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate:
    """A finished path: its last node, its answer (None if it gave none), its score, and the
    revision chain it belongs to (its first attempt's node; None outside revisions)."""

    node: int
    answer: str | None
    score: float | None = None
    chain: int | None = None


Aggregator = Callable[[Sequence[Candidate], Sequence[int]], str | None]


def _leading(
    candidates: Sequence[Candidate], groups: Sequence[int], weight: Callable[[Candidate], float]
) -> tuple[int, float] | None:
    """The winning answer group by the module's rule: the index of its first candidate and
    its total weight (None: no candidate answered)."""
    totals: dict[int, tuple[float, float, int]] = {}
    first: dict[int, int] = {}
    for index, (candidate, group) in enumerate(zip(candidates, groups, strict=True)):
        if candidate.answer is None:
            continue
        first.setdefault(group, index)
        value, score_sum, count = totals.get(group, (0.0, 0.0, 0))
        totals[group] = (value + weight(candidate), score_sum + (candidate.score or 0.0), count + 1)
    if not totals:
        return None
    best = max(first, key=lambda group: (*totals[group], -first[group]))
    return first[best], totals[best][0]


def _tally(
    candidates: Sequence[Candidate], groups: Sequence[int], weight: Callable[[Candidate], float]
) -> str | None:
    lead = _leading(candidates, groups, weight)
    return None if lead is None else candidates[lead[0]].answer


def _score(candidate: Candidate) -> float:
    return candidate.score or 0.0


def majority_vote(candidates: Sequence[Candidate], groups: Sequence[int]) -> str | None:
    """The answer given by the most paths."""
    return _tally(candidates, groups, lambda candidate: 1.0)


def weighted_vote(candidates: Sequence[Candidate], groups: Sequence[int]) -> str | None:
    """The answer whose paths' scores sum highest (Snell et al.'s best-of-N weighted)."""
    return _tally(candidates, groups, _score)


def best_of_n(candidates: Sequence[Candidate], groups: Sequence[int]) -> str | None:
    """The answer of the single best-scored path."""
    scored = [c for c in candidates if c.answer is not None and c.score is not None]
    return max(scored, key=lambda c: c.score or 0.0).answer if scored else None


def hierarchical_vote(candidates: Sequence[Candidate], groups: Sequence[int]) -> str | None:
    """Snell et al.'s hierarchical best-of-N weighted for revision chains: a weighted vote
    within each chain picks the chain's answer, carrying its score sum there; a weighted
    vote of the chains' picks decides. A candidate outside any chain is a chain of its own,
    so without chains this is the weighted vote."""
    chains: dict[int | tuple[None, int], list[int]] = {}
    for index, candidate in enumerate(candidates):
        if candidate.answer is not None:
            chains.setdefault(candidate.chain if candidate.chain is not None else (None, index), []).append(
                index
            )
    picks: list[Candidate] = []
    pick_groups: list[int] = []
    for members in chains.values():
        lead = _leading([candidates[i] for i in members], [groups[i] for i in members], _score)
        assert lead is not None  # every member answered
        first = members[lead[0]]
        picks.append(Candidate(node=candidates[first].node, answer=candidates[first].answer, score=lead[1]))
        pick_groups.append(groups[first])
    return weighted_vote(picks, pick_groups)


def filter_vote(candidates: Sequence[Candidate], groups: Sequence[int]) -> str | None:
    """Chen et al.'s filter-vote: majority over the answers the judge did not reject (score ≥
    0.5: judged correct, or no verdict); when it rejected them all, over all of them."""
    kept = [i for i, c in enumerate(candidates) if c.answer is not None and (c.score or 0.0) >= 0.5]
    if not kept:
        return majority_vote(candidates, groups)
    return majority_vote([candidates[i] for i in kept], [groups[i] for i in kept])


# Kang et al.'s Borda power: the default of --power in their code (backprop07/Self-Certainty,
# src/voting_from_list.py); the paper sweeps p from 0 (majority vote) to about 1.2.
BORDA_POWER = 0.5


def borda_votes(candidates: Sequence[Candidate], power: float = BORDA_POWER) -> dict[int, float]:
    """Each scored candidate's Borda votes by node: ranked by score (r = 1 the highest; equal
    scores in the candidates' order), the one ranked r of N gives (N − r + 1)^p."""
    scored = [c for c in candidates if c.score is not None]
    ranked = sorted(scored, key=lambda c: -(c.score or 0.0))
    return {c.node: float(len(ranked) - rank) ** power for rank, c in enumerate(ranked)}


def borda_vote(
    candidates: Sequence[Candidate], groups: Sequence[int], power: float = BORDA_POWER
) -> str | None:
    """Kang et al.'s Borda voting: the answer whose candidates' ``borda_votes`` sum highest
    (p = 0 is majority vote; a larger p leans toward the best-scored candidates)."""
    votes = borda_votes(candidates, power)
    return _tally(candidates, groups, lambda candidate: votes.get(candidate.node, 0.0))


AGGREGATORS: dict[str, Aggregator] = {
    "majority": majority_vote,
    "weighted": weighted_vote,
    "best": best_of_n,
    "filter": filter_vote,
    "hierarchical": hierarchical_vote,
    "borda": borda_vote,
}


def get_aggregator(name: str) -> Aggregator:
    if name not in AGGREGATORS:
        raise ConfigError(f"unknown aggregator {name!r}; choose from {', '.join(AGGREGATORS)}")
    return AGGREGATORS[name]


def aggregate(
    name: str, candidates: Sequence[Candidate], groups: Sequence[int], *, borda_power: float = BORDA_POWER
) -> tuple[str | None, str]:
    """The answer by aggregator ``name`` (Borda's with power ``borda_power``), and the rule
    that chose it: "majority" when a score-based rule finds no candidate with a score."""
    answered = [c for c in candidates if c.answer is not None]
    if name != "majority" and answered and all(c.score is None for c in answered):
        name = "majority"
    rule = partial(borda_vote, power=borda_power) if name == "borda" else get_aggregator(name)
    return rule(candidates, groups), name
