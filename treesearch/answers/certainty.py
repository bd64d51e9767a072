"""Self-certainty (Kang, Zhao, Song 2025, "Scalable Best-of-N Selection for Large Language
Models via Self-Certainty"), as plain functions of top logprobs.

A token's self-certainty is how far the model's next-token distribution p lies from the
uniform one over a vocabulary of V tokens, KL(U ‖ p) = −(1/V) Σ_j log(V p_j); a trace's is
the mean over its tokens, higher meaning more certain. A server sends only the top k
logprobs of each token, so ``token_certainty`` estimates it: the k listed probabilities
exactly, and the mass they leave, R = 1 − Σ_top p, spread evenly over the other V − k tokens.

Given the top k, the estimate never exceeds the true value (−log is convex, so an even
spread of R is the tail that makes Σ log p largest), and it falls short by exactly
((V − k) / V) · KL(uniform ‖ the tail normalised): nothing when the tail is flat, less with
every token listed (it never grows with k), and nothing at k = V, where the formula is exact.
With V ≫ k it is about −log R: the number of listed tokens, their logprobs and V itself move
it by O(k log V / V) only, a few thousandths for k = 20 and V = 150k.

R is floored at ``TAIL_FLOOR`` (float32's ε): logprobs come as float32, so a remainder below
that is rounding noise, and at or below zero (the listed probabilities summing to 1 or more
after rounding) the estimate would be infinite. A listed logprob is first bounded
(``bounded_logprob``): below ``LOGPROB_FLOOR`` (−inf for a masked token, vLLM's −9999 for
one, or not a number) it counts as that floor, above 0 (+inf from a broken server, or a
rounding) as 0, so every estimate is finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

TAIL_FLOOR = 2.0**-23
LOGPROB_FLOOR = -100.0


def bounded_logprob(value: float) -> float:
    """A listed logprob within [``LOGPROB_FLOOR``, 0], where every real one lies: one below
    the floor or not a number counts as the floor, one above 0 as 0. DeepConf's confidences
    read them bounded too, so neither measure is ever infinite and one masked token cannot
    outweigh a window of real ones."""
    if value > 0.0:
        return 0.0
    return value if value >= LOGPROB_FLOOR else LOGPROB_FLOOR


def token_certainty(top_logprobs: Sequence[float], vocab_size: int) -> float:
    """One token's self-certainty estimated from its top logprobs (see the module); exact when
    all ``vocab_size`` tokens are listed. A vocabulary smaller than the list counts as the
    list's size."""
    logs = [bounded_logprob(value) for value in top_logprobs]
    vocab = max(vocab_size, len(logs))
    rest = vocab - len(logs)
    listed = math.fsum(logs)
    if rest == 0:
        return -math.log(vocab) - listed / vocab
    tail = max(1.0 - math.fsum(math.exp(value) for value in logs), TAIL_FLOOR)
    return -math.log(vocab) - (listed + rest * math.log(tail / rest)) / vocab


def trace_certainty(certainties: Sequence[float]) -> float:
    """A trace's self-certainty: the mean of its tokens' (0 for a trace without tokens)."""
    return math.fsum(certainties) / len(certainties) if certainties else 0.0
