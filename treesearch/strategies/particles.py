"""Particle filtering (Puri et al. 2025, "Rollout Roulette").

N particles are partial solutions: N first steps to begin with. Each round the
particles' paths are scored in one verifier call, weighted by
``softmax(logit(score) / particle_temperature)`` (as the method's reference code weighs
a PRM's probabilities; ``particle_weighting="probability"`` weighs by
``softmax(score / T)``), and N particles are drawn by the weights with systematic
resampling (one uniform draw, N evenly spaced positions on the cumulative weights); a
particle drawn k times that is still open gets k next steps (one request with ``n`` =
k), a finished one is carried forward k times. It ends when every particle has
finished; the final particles, repeats included, are the candidates of a weighted
vote. The draws are seeded by the sampling seed and the problem, so a run repeats.
"""

from __future__ import annotations

import math
import random
import sys
from collections import Counter
from collections.abc import Sequence

from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.tree import ROOT
from treesearch.logs import get_logger
from treesearch.strategies.select import softmax

log = get_logger(__name__)

# Scores are clipped to [ε, 1 − ε] before their logit, ε the float epsilon as in Puri et al.'s
# code, so a path scored 0 (a dead end) or 1 weighs as a logit of ∓36, not an infinity.
_EPS = sys.float_info.epsilon


def particle_weights(scores: Sequence[float], temperature: float, weighting: str = "logit") -> list[float]:
    """The particles' resampling weights (summing to 1). "logit": softmax(logit(score) / T),
    the reference's rule, under which a PRM's confidence counts: 0.9 weighs 81× 0.1 at T = 1.
    "probability": softmax(score / T), which squeezes the whole [0, 1] range into a factor of
    e^(1/T) (2.2× between 0.9 and 0.1 at T = 1), close to uniform resampling."""
    if weighting == "logit":
        clipped = [min(max(score, _EPS), 1.0 - _EPS) for score in scores]
        scores = [math.log(p) - math.log(1.0 - p) for p in clipped]
    return softmax(scores, temperature)


def systematic_resample(weights: Sequence[float], n: int, u: float) -> list[int]:
    """The indices of ``n`` draws by ``weights`` (any positive scale): the positions
    (u + i) / n for i < n, u in [0, 1), read off the cumulative weights. Index i is drawn
    ⌊n·wᵢ⌋ or ⌈n·wᵢ⌉ times (wᵢ normalised), in order."""
    total = sum(weights)
    drawn: list[int] = []
    index, edge = 0, weights[0] / total
    for i in range(n):
        position = (u + i) / n
        while position >= edge and index < len(weights) - 1:
            index += 1
            edge += weights[index] / total
        drawn.append(index)
    return drawn


async def particle_filter(ctx: SearchContext, config: SearchConfig) -> None:
    seed = config.sampling.seed
    rng = random.Random(None if seed is None else f"{seed}:{ctx.problem.id}")
    particles = [node.id for node in await ctx.expand(ROOT, config.n)]
    while True:
        ctx.candidates = [node for node in particles if ctx.tree.node(node).terminal]
        scores = await ctx.score(particles, probabilities=config.particle_weighting == "logit")
        if len(ctx.candidates) == len(particles):
            return
        weights = particle_weights(scores, config.particle_temperature, config.particle_weighting)
        u = rng.random()
        drawn = [particles[i] for i in systematic_resample(weights, config.n, u)]
        log.debug("particles_resampled", problem_id=ctx.problem.id, particles=particles, scores=scores,
                  u=u, drawn=drawn)  # fmt: skip
        copies = Counter(node for node in drawn if not ctx.tree.node(node).terminal)
        ctx.candidates = [node for node in drawn if ctx.tree.node(node).terminal]
        children = await ctx.expand_many(copies)
        particles = ctx.candidates + [child.id for node in copies for child in children[node]]
