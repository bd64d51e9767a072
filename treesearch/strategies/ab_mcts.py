"""AB-MCTS-A (Inoue et al. 2025, Sakana's TreeQuest): adaptive branching by Thompson sampling.

Every node of the search is a whole solution (an attempt). At a node the search
draws once from its GEN posterior and once from its CONT posterior and takes the
larger: GEN makes a new child (at the root a fresh solution; below it a refinement,
an attempt whose prompt shows the node's answer through the revision template),
CONT descends into the existing child whose own posterior gives the largest draw,
and the choice repeats there. A node without children always generates.

A new attempt's verifier score s (in [0, 1]) is backed up: its parent's GEN
posterior and its own posterior take s, and every ancestor above takes s in its
CONT posterior and in the posterior of its child on the path (a child's posterior
holds the scores of its subtree). Posteriors are over scores:

- ``gaussian``: Normal-inverse-gamma, prior m = 0, κ = 1, ν = 1, τ² = 0.1; a draw is
  σ² from the scaled inverse χ² and then the mean from N(mₙ, σ²/κₙ);
- ``beta``: Beta(0.5 + Σs, 0.5 + Σ(1 − s)), which takes scores in [0, 1] only: the context
  refuses any other, whatever the verifier promises.

Selections are made ``ab_mcts_batch`` at a time (each drawn before any of the batch is
scored, as TreeQuest's ask/tell); the batch's attempts are generated concurrently (one
request with ``n`` for the selections that chose the same node) and scored in one
verifier call, until N attempts. In the tree every attempt hangs under the root and records the one it
refines in ``revises``, as revision chains do; every attempt that states an answer is a
candidate, and the best-scored one answers.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial

from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.taskgroups import gather
from treesearch.engine.tree import ROOT
from treesearch.strategies.revisions import revision_prompt

# Normal-inverse-gamma prior over scores (TreeQuest's ABMCTS-A defaults).
PRIOR_MEAN, PRIOR_KAPPA, PRIOR_NU, PRIOR_TAU2 = 0.0, 1.0, 1.0, 0.1
BETA_PRIOR = 0.5


@dataclass(slots=True)
class Posterior:
    """What is known of one action's scores: the scores seen so far."""

    scores: list[float] = field(default_factory=list)

    def gaussian(self) -> tuple[float, float, float, float]:
        """(mₙ, κₙ, νₙ, τₙ²): the Normal-inverse-gamma posterior after ``scores``."""
        n = len(self.scores)
        if n == 0:
            return PRIOR_MEAN, PRIOR_KAPPA, PRIOR_NU, PRIOR_TAU2
        mean = sum(self.scores) / n
        spread = sum((s - mean) ** 2 for s in self.scores)
        kappa, nu = PRIOR_KAPPA + n, PRIOR_NU + n
        m = (PRIOR_KAPPA * PRIOR_MEAN + n * mean) / kappa
        tau2 = (PRIOR_NU * PRIOR_TAU2 + spread + PRIOR_KAPPA * n / kappa * (mean - PRIOR_MEAN) ** 2) / nu
        return m, kappa, nu, tau2

    def beta(self) -> tuple[float, float]:
        """(α, β): the Beta posterior after ``scores``."""
        return BETA_PRIOR + sum(self.scores), BETA_PRIOR + sum(1.0 - s for s in self.scores)

    def draw(self, kind: str, rng: random.Random) -> float:
        if kind == "beta":
            return rng.betavariate(*self.beta())
        m, kappa, nu, tau2 = self.gaussian()
        variance = nu * tau2 / rng.gammavariate(nu / 2, 2.0)  # ν τ² / χ²(ν)
        return rng.gauss(m, math.sqrt(variance / kappa))


@dataclass(slots=True)
class Search:
    """The AB-MCTS tree over attempts (ROOT is the problem) and its posteriors."""

    kind: str
    rng: random.Random
    children: defaultdict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    gen: defaultdict[int, Posterior] = field(default_factory=lambda: defaultdict(Posterior))
    cont: defaultdict[int, Posterior] = field(default_factory=lambda: defaultdict(Posterior))
    via: defaultdict[int, Posterior] = field(default_factory=lambda: defaultdict(Posterior))  # per child

    def select(self) -> list[int]:
        """The path from the root to the node that generates next (the root first)."""
        path = [ROOT]
        while kids := self.children[path[-1]]:
            node = path[-1]
            if self.gen[node].draw(self.kind, self.rng) >= self.cont[node].draw(self.kind, self.rng):
                break
            path.append(max(kids, key=lambda kid: self.via[kid].draw(self.kind, self.rng)))
        return path

    def add(self, path: list[int], child: int, score: float) -> None:
        """Record a new child of ``path[-1]`` and back its score up the path."""
        self.children[path[-1]].append(child)
        self.gen[path[-1]].scores.append(score)
        self.via[child].scores.append(score)
        for ancestor, on_path in itertools.pairwise(path):
            self.cont[ancestor].scores.append(score)
            self.via[on_path].scores.append(score)


async def ab_mcts(ctx: SearchContext, config: SearchConfig) -> None:
    seed = config.sampling.seed
    rng = random.Random(None if seed is None else f"{seed}:{ctx.problem.id}")
    search = Search(config.ab_mcts_posterior, rng)
    attempts: list[int] = []
    ctx.candidates = attempts

    async def generate(parent: int, count: int) -> list[int]:
        """``count`` new children of ``parent`` in one request (selections that agree share it)."""
        if parent == ROOT:
            made = await ctx.expand(ROOT, count, whole=True)
        else:
            prompt = revision_prompt(ctx.problem, [ctx.tree.node(parent).text], config.revision_template)
            made = await ctx.expand(ROOT, count, whole=True, prompt=prompt, revises=parent)
        attempts.extend(node.id for node in made)
        return [node.id for node in made]

    while len(attempts) < config.n:
        groups: dict[int, list[list[int]]] = defaultdict(list)
        for _ in range(min(config.ab_mcts_batch, config.n - len(attempts))):
            path = search.select()
            groups[path[-1]].append(path)
        made = await gather([partial(generate, parent, len(paths)) for parent, paths in groups.items()])
        new = [node for nodes in made for node in nodes]
        scores = await ctx.score(new, probabilities=config.ab_mcts_posterior == "beta")
        paths = [path for group in groups.values() for path in group]
        for path, node, score in zip(paths, new, scores, strict=True):
            search.add(path, node, score)
