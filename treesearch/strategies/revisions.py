"""Sequential revisions (Snell et al.): chains of attempts, each revising the ones before it.

N attempts are split between depth and breadth by ``revision_ratio`` (attempts per
chain over chains, Snell et al.'s sequential-to-parallel ratio): N = 64 at ratio 1/4 is
16 chains of 4 attempts. The chains' first attempts come from one request (with ``n``);
every later attempt is one request whose prompt shows the last ``revision_context``
attempts of its chain (4, as in the paper) through ``revision_template``, and the new
attempt records the one it revises, so the chains live in the tree. The chains advance
in rounds, every chain's next attempt at once, and each round's attempts are scored in
one verifier call before the next round asks for more, as the round loop of beam search
does: a budget that runs out mid-revisions leaves every finished attempt scored, instead
of spending it all on attempts and falling back to a majority vote, which revisions that
turn right answers wrong mislead (Snell et al.'s reason to select with a verifier).
Every attempt that states an answer is a candidate; the hierarchical weighted vote
selects within each chain, then across chains (``aggregate.hierarchical_vote``), and
majority vote over all attempts is the verifier-free choice (nothing is scored then).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import replace
from functools import partial

from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.taskgroups import gather
from treesearch.engine.tree import ROOT, Node
from treesearch.problems import Problem

_FIELD = re.compile(r"\{(question|attempts)\}")


def chain_lengths(n: int, ratio: float) -> list[int]:
    """N attempts as chains: length round(√(N·ratio)) (from 1 to N), as many chains as
    make N with it, the attempts spread over them as evenly as they go (longest first)."""
    length = min(n, max(1, round(math.sqrt(n * ratio))))
    chains = max(1, round(n / length))
    return [n // chains + (1 if index < n % chains else 0) for index in range(chains)]


def revision_prompt(problem: Problem, attempts: list[str], template: str) -> Problem:
    """The problem as a revision asks it: the template with ``{question}`` (the problem's ready
    prompt, when it has one) and ``{attempts}``, each as "Attempt k:" and its text, filled in."""
    shown = "\n\n".join(f"Attempt {index}:\n{text.strip()}" for index, text in enumerate(attempts, 1))
    fields = {"question": problem.prompt or problem.question, "attempts": shown}
    # One pass over the two fields only: other braces (\boxed{}) stay, and neither field's
    # text is searched for the other.
    text = _FIELD.sub(lambda match: fields[match.group(1)], template)
    return replace(problem, prompt=text) if problem.prompt is not None else replace(problem, question=text)


async def revisions(ctx: SearchContext, config: SearchConfig) -> None:
    """Every finished attempt is a candidate, so this leaves ``ctx.candidates`` unset. A
    refusal of the budget mid-round leaves that round's arrived attempts to the search's
    final scoring, which needs only their share of the budget."""
    lengths = chain_lengths(config.n, config.revision_ratio)
    latest = [node.id for node in await ctx.expand(ROOT, len(lengths), whole=True)]
    for done in itertools.count(1):
        if config.aggregator != "majority":
            await ctx.score(latest)  # only the attempts not scored yet are sent
        growing = [chain for chain, length in enumerate(lengths) if length > done]
        if not growing:
            return
        revised = await gather([partial(_revise, ctx, config, latest[chain]) for chain in growing])
        for chain, attempt in zip(growing, revised, strict=True):
            latest[chain] = attempt.id


async def _revise(ctx: SearchContext, config: SearchConfig, latest: int) -> Node:
    """The next attempt of the chain ending at ``latest``."""
    shown = ctx.tree.chain(latest)[-config.revision_context :]
    prompt = revision_prompt(
        ctx.problem, [ctx.tree.node(node).text for node in shown], config.revision_template
    )
    (attempt,) = await ctx.expand(ROOT, 1, whole=True, prompt=prompt, revises=latest)
    return attempt
