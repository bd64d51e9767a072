"""Generative selection (GenSelect): the model reads K candidate solutions and names the best.

N whole solutions are sampled; those that state an answer enter a knock-out: each round
splits the field, in position order, into groups of ``select_k`` (the last one smaller), one
selection call per group of two or more picks its winner, and the winners (with a lone
candidate's bye) make the next round's field, until one remains (``knockout_calls`` counts
the calls). The prompt follows the shape of NeMo-Skills' GenSelect prompt (the problem, the
solutions numbered from 0, and a closing "Judgment: IDX" line to parse); each solution is
shown cut to its last ``shown_tokens`` tokens, where its answer is. A reply naming no number
in range is asked again, with a new seed, up to ``SELECT_ATTEMPTS`` calls in all; then the
group abstains and its majority answer advances (its first candidate by position giving
it; ties to the answer found first).

Every call is an ``expand`` under the root with the selection prompt, so the budget charges
it and the tree keeps it; the judgement node records the solutions it was shown and the one
it chose (``Node.shown``, ``Node.chosen``). ``ctx.candidates`` is always the field as it
stands (decided groups by their winner, undecided ones whole), so a budget that runs out
mid-knock-out ends with a majority vote over the survivors, and a finished knock-out with
its one winner.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import replace
from functools import partial

import anyio

from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.taskgroups import gather
from treesearch.engine.tree import ROOT, Node, NodeStatus
from treesearch.problems import Problem
from treesearch.strategies.sampling import sample

# Calls one group may take before it abstains: the first and two retries.
SELECT_ATTEMPTS = 3

_SELECT_TEMPLATE = (
    "{question}\n\nBelow are {count} candidate solutions to this problem, numbered 0 to {last}; "
    "some may be wrong.\n\n{solutions}\n\nCompare them: where their answers differ, check which "
    "reasoning holds up. Then name the best solution. End your reply with exactly one line\n"
    "Judgment: IDX\nwhere IDX is the number of the best solution, from 0 to {last}."
)
_JUDGMENT = re.compile(r"Judg(?:e)?ment:\s*\[?\s*(\d+)\s*\]?")
_WORD = re.compile(r"\S+\s*")


def knockout_calls(n: int, k: int) -> int:
    """Selection calls a knock-out over ``n`` candidates in groups of ``k`` makes (no retries):
    per round, one per group of two or more."""
    calls = 0
    while n > 1:
        groups, lone = divmod(n, k)
        calls += groups + (1 if lone > 1 else 0)
        n = groups + (1 if lone else 0)
    return calls


def shown(node: Node, tokens: int) -> str:
    """A solution as a prompt shows it: its reply, never its thinking, whole or its last
    ``tokens`` tokens (by the count the server reported, shared out over its words) after an
    ellipsis, which keeps the answer."""
    text = node.text.strip()
    own = node.tokens - (node.reasoning_tokens or 0)
    if own <= tokens:
        return text
    words = _WORD.findall(text)
    keep = max(1, len(words) * tokens // own)
    return "…" + "".join(words[-keep:])


def with_solutions(problem: Problem, template: str, texts: Sequence[str], header: str) -> Problem:
    """The problem asked through ``template``, whose ``{question}``, ``{count}``, ``{last}``
    and ``{solutions}`` (each text under ``header`` with its number) are filled in once, so
    braces in the texts (\\boxed{}) stay as they are."""
    solutions = "\n\n".join(f"{header.format(index)}\n{text}" for index, text in enumerate(texts))
    fields = {
        "question": problem.prompt or problem.question,
        "count": str(len(texts)),
        "last": str(len(texts) - 1),
        "solutions": solutions,
    }
    text = re.sub(r"\{(question|count|last|solutions)\}", lambda m: fields[m.group(1)], template)
    return replace(problem, prompt=text) if problem.prompt is not None else replace(problem, question=text)


def selection_prompt(problem: Problem, texts: Sequence[str]) -> Problem:
    return with_solutions(problem, _SELECT_TEMPLATE, texts, "Solution {}:")


def parse_choice(text: str, count: int) -> int | None:
    """The number a judgement's last "Judgment: IDX" line names, if it is one of ``count``."""
    found = _JUDGMENT.findall(text)
    if not found:
        return None
    choice = int(found[-1])
    return choice if choice < count else None


async def gen_select(ctx: SearchContext, config: SearchConfig) -> None:
    await sample(ctx, config)
    field = [node.id for node in ctx.tree.terminals() if node.status is NodeStatus.ANSWERED]
    ctx.candidates = field
    for round_ in itertools.count():
        if len(field) <= 1:
            return
        field = await _knockout_round(ctx, config, field, round_)


async def _knockout_round(
    ctx: SearchContext, config: SearchConfig, field: list[int], round_: int
) -> list[int]:
    """The winners of one round's groups, in the groups' order."""
    groups = [field[start : start + config.select_k] for start in range(0, len(field), config.select_k)]
    winners: list[int | None] = [group[0] if len(group) == 1 else None for group in groups]

    async def play(index: int) -> None:
        winners[index] = await _select(ctx, config, groups[index], f"select {round_}.{index}:")
        ctx.candidates = [
            member
            for winner, group in zip(winners, groups, strict=True)
            for member in (group if winner is None else [winner])
        ]

    await gather([partial(play, index) for index, group in enumerate(groups) if len(group) > 1])
    return [winner for winner in winners if winner is not None]


async def _select(ctx: SearchContext, config: SearchConfig, group: list[int], stream: str) -> int:
    """The winner of ``group``: the candidate a judgement names, or the group's majority."""
    members = [ctx.tree.node(node) for node in group]
    prompt = selection_prompt(ctx.problem, [shown(node, config.shown_tokens) for node in members])
    for _ in range(SELECT_ATTEMPTS):
        (judgement,) = await ctx.expand(ROOT, 1, whole=True, prompt=prompt, stream=stream)
        choice = parse_choice(judgement.text, len(group))
        chosen = None if choice is None else group[choice]
        ctx.tree.update(judgement.id, shown=tuple(group), chosen=chosen)
        if chosen is not None:
            return chosen
    groups = await anyio.to_thread.run_sync(ctx.equivalence.group, [node.answer or "" for node in members])
    leader = max(groups, key=lambda label: (groups.count(label), -groups.index(label)))
    return group[groups.index(leader)]
