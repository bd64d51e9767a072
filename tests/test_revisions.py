"""Revisions: chains split as the ratio says, the last four attempts in each prompt, and a
selector that matters, since revisions turn right answers wrong."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from conftest import PROBLEMS, problems
from hypothesis import given
from hypothesis import strategies as st

from treesearch import ConfigError, Generation, Prefix, SamplingParams, SearchConfig, run, search
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM
from treesearch.engine.budget import Budget, BudgetLimits
from treesearch.engine.config import DEFAULT_REVISION_TEMPLATE
from treesearch.engine.context import SearchContext
from treesearch.engine.steps import StepFormat
from treesearch.engine.tree import ROOT
from treesearch.strategies.revisions import chain_lengths, revision_prompt

pytestmark = pytest.mark.anyio

# Tokens that pay for a chain's first attempt and a few revisions, not all 8 (each request
# reserves its prompt and 1024 tokens); scored only at the end, the attempts would leave too
# little to score them.
BUDGET_MID_REVISIONS = 2600


class RecordingPolicy(OpenAIPolicy):
    """The real policy, keeping the prompt of every request it sends."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.prompts: list[str] = []
        self.seeds: list[int | None] = []

    async def generate(self, prefix: Prefix, n: int, params: SamplingParams) -> Generation:
        self.prompts.append(self.render_prompt(prefix))
        self.seeds.append(params.seed)
        return await super().generate(prefix, n, params)


def test_the_ratio_splits_n_into_chains() -> None:
    assert chain_lengths(64, 0.25) == [4] * 16  # the 16 chains x 4 revisions
    assert chain_lengths(16, 16) == [16]  # fully sequential
    assert chain_lengths(16, 1 / 64) == [1] * 16  # parallel sampling
    assert chain_lengths(8, 1) == [3, 3, 2]


@given(st.integers(1, 300), st.floats(1e-3, 1e3))
def test_chains_hold_exactly_n_attempts(n: int, ratio: float) -> None:
    lengths = chain_lengths(n, ratio)
    assert sum(lengths) == n
    assert max(lengths) - min(lengths) <= 1


def test_bad_revision_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="attempts"):
        SearchConfig(strategy="revisions", revision_template="{question} only")
    with pytest.raises(ConfigError, match="revision_ratio"):
        SearchConfig(strategy="revisions", revision_ratio=0)


async def test_an_attempt_sees_the_last_four_of_its_chain(fake_server: Callable[..., str]) -> None:
    policy = RecordingPolicy(fake_server(), "fake")
    try:
        config = SearchConfig(
            strategy="revisions",
            n=7,
            revision_ratio=7,
            aggregator="majority",
            sampling=SamplingParams(seed=3),
        )
        result = await run([PROBLEMS["rev0"]], policy, config)
    finally:
        await policy.aclose()
    (only,) = result
    tree = only.tree
    assert tree is not None
    attempts = tree.children(ROOT)
    assert len(attempts) == 7 and len(policy.prompts) == 7  # one chain: one request an attempt
    assert tree.chain(attempts[-1].id) == [node.id for node in attempts]
    assert "Attempt" not in policy.prompts[0]
    for k, prompt in enumerate(policy.prompts[1:], start=1):
        shown = attempts[max(0, k - 4) : k]
        assert prompt.count("Attempt ") == len(shown) == min(k, 4)
        blocks = re.split(r"Attempt \d+:\n", prompt)[1:]
        assert [block.split("\n\nWrite a new solution")[0].strip() for block in blocks] == [
            node.text.strip() for node in shown
        ]


async def test_first_attempts_share_one_request(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    policy = make_policy(fake_server())
    config = SearchConfig(
        strategy="revisions",
        n=12,
        revision_ratio=1 / 3,
        aggregator="majority",
        sampling=SamplingParams(seed=3),
    )
    result = await search(PROBLEMS["rev1"], policy, config)
    assert result.tree is not None
    assert len(result.tree.children(ROOT)) == 12
    assert result.usage.requests == 1 + 6  # 6 chains of 2: one request of n=6, then a revision each
    assert len({c.chain for c in result.candidates}) == 6


async def test_the_selector_matters_when_revisions_break_right_answers(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    """First attempts are right 80% of the time, but a revision breaks a right answer 60% of the
    time: by the chains' ends most attempts are wrong, so majority over all attempts fails,
    while the verifier's hierarchical selection finds the right attempt in each chain."""
    policy = make_policy(fake_server())
    chosen = problems("rev", 40)

    def accuracy(results: list) -> float:  # type: ignore[type-arg]
        return sum(bool(r.correct) for r in results) / len(results)

    base = {"strategy": "revisions", "n": 8, "revision_ratio": 2.0, "sampling": SamplingParams(seed=5)}
    selected = await run(chosen, policy, SearchConfig(**base), verifier=prm)  # type: ignore[arg-type]
    voted = await run(chosen, policy, SearchConfig(**base, aggregator="majority"))  # type: ignore[arg-type]
    broken = 0
    for result in selected:
        tree = result.tree
        assert tree is not None
        for node in tree.children(ROOT):
            earlier = node.revises
            if earlier is not None and tree.node(earlier).answer == result.gold != node.answer:
                broken += 1
    assert broken > 40  # revisions did turn right answers wrong
    assert all(r.aggregated_by == "hierarchical" for r in selected)
    assert accuracy(selected) >= 0.85
    assert accuracy(voted) <= 0.5


async def test_a_budget_ending_mid_revisions_still_selects_by_the_verifier(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    """Each round's attempts are scored before the next round asks for more, so a token budget
    that runs out mid-revisions leaves every finished attempt scored and the hierarchical vote
    chooses, not the majority vote a search falls back to when nothing has a score."""
    policy = make_policy(fake_server())
    config = SearchConfig(strategy="revisions", n=8, revision_ratio=8.0, sampling=SamplingParams(seed=5),
                          budget=BudgetLimits(tokens=BUDGET_MID_REVISIONS))  # fmt: skip
    result = await search(PROBLEMS["rev3"], policy, config, verifier=prm)
    tree = result.tree
    assert tree is not None and result.error is None
    attempts = tree.children(ROOT)
    assert result.stopped_by == "budget"
    assert 1 < len(attempts) < 8  # one chain of 8: the budget ended it after some revisions
    answered = [node for node in attempts if node.answer is not None]
    assert answered and len(result.candidates) == len(answered)
    assert all(candidate.score is not None for candidate in result.candidates)
    assert result.aggregated_by == "hierarchical"


async def test_a_revision_s_seed_follows_the_attempt_it_revises(fake_server: Callable[..., str]) -> None:
    """Chains revise in whatever order their answers come back; a revision's seed depends on
    the attempt it revises, never on that order."""
    seeds = []
    for order in ((0, 1, 2), (2, 0, 1)):
        policy = RecordingPolicy(fake_server(), "fake")
        try:
            budget = Budget(BudgetLimits())
            ctx = SearchContext(PROBLEMS["rev2"], policy, budget, sampling=SamplingParams(seed=8),
                                step_format=StepFormat())  # fmt: skip
            firsts = await ctx.expand(ROOT, 3, whole=True)
            sent = {}
            for index in order:
                prompt = revision_prompt(ctx.problem, [firsts[index].text], DEFAULT_REVISION_TEMPLATE)
                await ctx.expand(ROOT, 1, whole=True, prompt=prompt, revises=firsts[index].id)
                sent[index] = policy.seeds[-1]
        finally:
            await policy.aclose()
        seeds.append(sent)
    assert seeds[0] == seeds[1]
    assert len(set(seeds[0].values())) == 3


def test_the_template_fills_its_two_fields_and_keeps_other_braces() -> None:
    template = "Solve {question} and put the answer in \\boxed{}.\n{attempts}\nAgain, with {x} as given."
    asked = revision_prompt(PROBLEMS["rev0"], ["Step 1: this points to 3."], template)
    assert asked.question == (
        f"Solve {PROBLEMS['rev0'].question} and put the answer in \\boxed{{}}.\n"
        "Attempt 1:\nStep 1: this points to 3.\nAgain, with {x} as given."
    )
