"""Selection rules as plain functions of scores: which nodes to keep, how wide to grow them.

Beam, lookahead, DVTS, REBASE and MCTS differ mostly here; keeping the rules
apart from the I/O makes them testable without an event loop or a server.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def top_k(node_ids: Sequence[int], scores: Sequence[float], k: int) -> list[int]:
    """The ``k`` best-scored nodes, best first; a tie goes to the node found first."""
    order = sorted(range(len(node_ids)), key=lambda i: (-scores[i], i))
    return [node_ids[i] for i in order[:k]]


def beam_widths(scores: Sequence[float], n: int, m: int) -> list[int]:
    """Beam search's children per open node: the top ``max(1, n // m)`` get ``n`` between them,
    evenly, the remainder going to the best; the rest get none. Fewer open nodes than beams,
    or ``m`` not dividing ``n``, still keep ``n`` paths in play (search-and-learn duplicates
    its best beams the same way)."""
    if not scores or n <= 0:
        return [0] * len(scores)
    kept = top_k(range(len(scores)), scores, max(1, n // m))
    widths = [0] * len(scores)
    for rank, index in enumerate(kept):
        widths[index] = n // len(kept) + (rank < n % len(kept))
    return widths


def softmax(scores: Sequence[float], temperature: float) -> list[float]:
    scaled = [score / temperature for score in scores]
    top = max(scaled)
    weights = [math.exp(value - top) for value in scaled]
    total = sum(weights)
    return [weight / total for weight in weights]


def rebase_widths(scores: Sequence[float], total: int, temperature: float) -> list[int]:
    """REBASE's children per node: ``total · softmax(score / T)``, rounded so the widths sum to
    ``total`` exactly (largest remainders round up; ties to the better score, then the first)."""
    if not scores or total <= 0:
        return [0] * len(scores)
    shares = [total * p for p in softmax(scores, temperature)]
    widths = [math.floor(share) for share in shares]
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - widths[i]), -scores[i], i))
    for i in order[: total - sum(widths)]:
        widths[i] += 1
    return widths


def uct(value_sum: float, visits: int, parent_visits: int, c: float) -> float:
    """Upper confidence bound for trees; an unvisited child comes first."""
    if visits == 0:
        return math.inf
    return value_sum / visits + c * math.sqrt(math.log(max(parent_visits, 1)) / visits)
