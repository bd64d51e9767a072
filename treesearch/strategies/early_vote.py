"""Early-stopping self-consistency: sample in waves, stop once the leading answer is settled.

Two stopping rules over the answers in the order they finished:

- ``beta`` (Aggarwal et al. 2023; its_hub's BetaSelfConsistency): with v₁ ≥ v₂ the
  counts of the two leading answers, stop when P(p₁ > ½) = 1 − I₀.₅(v₁+1, v₂+1) reaches
  ``stop_confidence`` (0.95: four agreeing answers and none against);
- ``window``: stop when the last ``stop_window`` answers agree.

Samples go out in waves of ``wave`` (one request with ``n``, or ``wave`` step-by-step
rollouts), never more than N in all. The first wave leaves at once; a wave that ends
unsettled sends the next. Step by step, the rule is checked as each rollout finishes and
the wave's other rollouts are cancelled once it holds: their steps so far stay in the
tree, charged, their last marked ``finish_reason="cancelled"``; a request in flight when
cancelled is charged its worst case (its answer, with the usage in it, is lost, though the
server may have served it). Every finished sample is a candidate of the majority vote.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import partial

import anyio

from treesearch.engine.config import STOP_RULES, SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.taskgroups import gather
from treesearch.engine.tree import ROOT
from treesearch.errors import ConfigError


def beta_confidence(leading: int, second: int) -> float:
    """P(p₁ > ½) under Beta(v₁+1, v₂+1): 1 − I₀.₅(v₁+1, v₂+1), exactly. For integers,
    I₀.₅(a, b) = P(Binomial(a+b−1, ½) ≥ a)."""
    a, trials = leading + 1, leading + second + 1
    below = sum(math.comb(trials, j) for j in range(a, trials + 1))
    return 1.0 - below / (1 << trials)


def settled(groups: Sequence[int], rule: str, confidence: float, window: int) -> bool:
    """Whether the answers so far (their equivalence groups, in the order they finished)
    settle the vote by ``rule``."""
    if rule == "beta":
        counts = [count for _, count in Counter(groups).most_common(2)]
        leading, second = [*counts, 0, 0][:2]
        return leading > 0 and beta_confidence(leading, second) >= confidence
    if rule == "window":
        return len(groups) >= window and len(set(groups[-window:])) == 1
    raise ConfigError(f"unknown stop rule {rule!r}; choose from {', '.join(STOP_RULES)}")


def settled_at(groups: Sequence[int], rule: str, confidence: float, window: int) -> int | None:
    """The number of answers after which ``rule`` first holds on this stream, or None."""
    return next(
        (count for count in range(1, len(groups) + 1) if settled(groups[:count], rule, confidence, window)),
        None,
    )


async def early_vote(ctx: SearchContext, config: SearchConfig) -> None:
    """Every finished sample is a candidate, so this leaves ``ctx.candidates`` unset."""
    answers: list[str] = []
    done = False

    async def check(answer: str | None) -> bool:
        if answer is not None:
            answers.append(answer)
        groups = await anyio.to_thread.run_sync(ctx.equivalence.group, answers)
        return settled(groups, config.stop_rule, config.stop_confidence, config.stop_window)

    sent = 0
    while not done and sent < config.n:
        size = min(config.wave, config.n - sent)
        sent += size
        firsts = await ctx.expand(ROOT, size, whole=config.whole)
        for node in firsts:
            if node.terminal and not done:
                done = await check(node.answer)
        rolling = [node.id for node in firsts if not node.terminal]
        if done or not rolling:
            continue
        with anyio.CancelScope() as scope:

            async def roll(node_id: int) -> None:
                nonlocal done
                end = await ctx.rollout(node_id)
                if not done and await check(end.answer):
                    done = True
                    scope.cancel()

            await gather([partial(roll, node) for node in rolling])
        if scope.cancelled_caught:
            ctx.mark_cancelled()
