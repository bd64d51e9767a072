"""The 2025 methods' defining behaviour: early-stopping votes, particle filtering, AB-MCTS.

Pure rules against hand-computed values; the strategies against the synthetic server,
read back from the trees they grew and the events they logged.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import PROBLEMS
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from treesearch import SamplingParams, SearchConfig, search
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM
from treesearch.cli.main import parser
from treesearch.cli.setup import search_config
from treesearch.engine.tree import ROOT, NodeStatus
from treesearch.errors import ConfigError
from treesearch.strategies.ab_mcts import Posterior, Search
from treesearch.strategies.early_vote import beta_confidence, settled_at
from treesearch.strategies.particles import particle_weights, systematic_resample

pytestmark = pytest.mark.anyio


def config(strategy: str, **options: object) -> SearchConfig:
    return SearchConfig(strategy=strategy, sampling=SamplingParams(seed=5), **options)  # type: ignore[arg-type]


# -- early-stopping votes ------------------------------------------------------------


def test_the_beta_rule_is_the_binomial_tail() -> None:
    # 1 − I₀.₅(a, b) with I₀.₅(a, b) = P(Binomial(a + b − 1, ½) ≥ a).
    assert beta_confidence(3, 0) == 1 - 1 / 16
    assert beta_confidence(4, 0) == 1 - 1 / 32
    assert beta_confidence(5, 1) == 1 - 8 / 128
    assert beta_confidence(6, 1) == 1 - 9 / 256
    assert beta_confidence(2, 2) == 0.5


def test_the_rules_stop_at_the_predicted_count() -> None:
    unanimous = [0] * 20
    assert settled_at(unanimous, "beta", 0.95, 4) == 4  # 0.969 after four, 0.9375 after three
    one_against = [0, 1, 0, 0, 0, 0, 0, 0]
    assert settled_at(one_against, "beta", 0.95, 4) == 7  # 6 to 1: 0.965; 5 to 1: 0.9375
    assert settled_at([0, 1] * 10, "beta", 0.95, 4) is None
    assert settled_at([0, 1, 0, 0, 0], "window", 0.95, 3) == 5
    assert settled_at([0, 1, 0, 1, 1], "window", 0.95, 3) is None


async def test_early_vote_stops_after_four_agreeing_samples(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    """A problem with one answer: one sample a wave stops at the fourth (four requests);
    waves of eight stop after the first."""
    policy = make_policy(fake_server())
    one = await search(PROBLEMS["sure0"], policy, config("early-vote", n=64, wave=1))
    eight = await search(PROBLEMS["sure0"], policy, config("early-vote", n=64, wave=8))
    assert one.correct and eight.correct
    assert (len(one.candidates), one.usage.requests) == (4, 4)
    assert (len(eight.candidates), eight.usage.requests) == (8, 1)


@pytest.mark.parametrize(("rule", "wave"), [("beta", 3), ("window", 2), ("beta", 5)])
async def test_early_vote_samples_whole_waves_until_the_rule_holds_never_past_n(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], rule: str, wave: int
) -> None:
    policy = make_policy(fake_server())
    for problem in [PROBLEMS[f"a{i}"] for i in range(6)]:
        result = await search(problem, policy, config("early-vote", n=16, wave=wave, stop_rule=rule,
                                                      stop_window=3))  # fmt: skip
        assert result.tree is not None
        answers = [node.answer for node in result.tree.children(ROOT)]
        assert None not in answers
        groups = [sorted(set(answers)).index(answer) for answer in answers]
        at = settled_at(groups, rule, 0.95, 3)
        expected = 16 if at is None else min(16, wave * math.ceil(at / wave))
        assert len(answers) == expected
        assert result.usage.requests == math.ceil(expected / wave)


async def test_early_vote_step_by_step_cancels_the_wave_once_settled(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    """Rollouts of one wave: once four have agreed the others stop where they stand, their
    last steps marked cancelled; none is left open."""
    policy = make_policy(fake_server())
    result = await search(PROBLEMS["sure1"], policy, config("early-vote", n=64, wave=16, whole=False))
    assert result.tree is not None and result.correct
    answered = [node for node in result.tree.nodes() if node.status is NodeStatus.ANSWERED]
    assert 4 <= len(answered) <= 16
    assert not result.tree.open_leaves()
    ended = [node for node in result.tree.nodes() if node.status is NodeStatus.DEAD_END]
    assert all(node.finish_reason == "cancelled" for node in ended)
    assert len(result.tree.children(ROOT)) == 16


def test_bad_stopping_options_are_refused() -> None:
    for options in ({"stop_rule": "majority"}, {"stop_confidence": 1.0}, {"wave": 0}):
        with pytest.raises(ConfigError):
            config("early-vote", **options)


# -- particle filtering ----------------------------------------------------------------


def test_systematic_resampling_by_hand() -> None:
    # Positions (0.5 + i) / 8 against the cumulative weights 0.5, 0.75, 0.875, 1.
    assert systematic_resample([0.5, 0.25, 0.125, 0.125], 8, 0.5) == [0, 0, 0, 0, 1, 1, 2, 3]
    assert systematic_resample([4, 2, 1, 1], 8, 0.99) == [0, 0, 0, 0, 1, 1, 2, 3]
    assert systematic_resample([1, 0, 3], 4, 0.0) == [0, 2, 2, 2]


@given(
    weights=st.lists(st.floats(min_value=0.01, max_value=10.0), min_size=1, max_size=12),
    n=st.integers(min_value=1, max_value=40),
    u=st.floats(min_value=0.0, max_value=0.999),
)
def test_each_particle_is_drawn_its_share_rounded_up_or_down(weights: list[float], n: int, u: float) -> None:
    drawn = systematic_resample(weights, n, u)
    assert len(drawn) == n and drawn == sorted(drawn)
    total = sum(weights)
    for index, weight in enumerate(weights):
        share = n * weight / total
        assert math.floor(share) - 1e-9 <= Counter(drawn)[index] <= math.ceil(share) + 1e-9


def test_particle_weights_by_hand() -> None:
    # The reference's weights: softmax(logit(score) / T); logit 0.9 − logit 0.1 = 2 ln 9.
    high, low = particle_weights([0.9, 0.1], 1.0)
    assert high / low == pytest.approx(81)
    high, low = particle_weights([0.9, 0.1], 2.0)
    assert high / low == pytest.approx(9)
    assert sum(particle_weights([0.9, 0.1, 0.5], 1.0)) == pytest.approx(1)
    # softmax(score / T): e^0.8 = 2.2x between 0.9 and 0.1, e = 2.7x between 1 and 0.
    high, low = particle_weights([0.9, 0.1], 1.0, "probability")
    assert high / low == pytest.approx(math.exp(0.8))
    one, zero = particle_weights([1.0, 0.0], 1.0, "probability")
    assert one / zero == pytest.approx(math.e)
    # 0 and 1 are clipped to [ε, 1 − ε] (ε the float epsilon, as the reference does): finite
    # logits ±ln((1 − ε) / ε), about ±36, never an infinity or a NaN.
    one, zero, half = particle_weights([1.0, 0.0, 0.5], 1.0)
    eps = 2.0**-52
    assert one / half == pytest.approx((1 - eps) / eps) and half / zero == pytest.approx((1 - eps) / eps)
    assert zero > 0 and math.isfinite(one)


def test_particle_weights_follow_the_reference_by_default() -> None:
    assert SearchConfig().particle_weighting == "logit"
    assert config("particle-filter", particle_weighting="probability").particle_weighting == "probability"
    asked = ["run", "--base-url", "http://127.0.0.1:1/v1", "--problems", "p.jsonl", "--output", "o.jsonl"]
    assert search_config(parser().parse_args(asked)).particle_weighting == "logit"
    chosen = parser().parse_args([*asked, "--particle-weighting", "probability"])
    assert search_config(chosen).particle_weighting == "probability"
    with pytest.raises(ConfigError, match="particle weighting 'softmax'"):
        config("particle-filter", particle_weighting="softmax")


@pytest.mark.parametrize("weighting", [None, "logit", "probability"])
async def test_particle_filter_resamples_n_by_its_weights(
    make_policy: Callable[..., OpenAIPolicy],
    fake_server: Callable[..., str],
    prm: PoolingPRM,
    weighting: str | None,
) -> None:
    """Every round: N particles drawn by systematic resampling of the weights (by default the
    logit's, the reference's) at the logged uniform draw; the other weighting would have
    drawn otherwise in some round; an open particle drawn k times gets exactly k next steps."""
    policy = make_policy(fake_server())
    options = {} if weighting is None else {"particle_weighting": weighting}
    chosen = config("particle-filter", n=8, whole=False, **options)
    used = weighting or "logit"
    other = "probability" if used == "logit" else "logit"
    with capture_logs() as events:
        result = await search(PROBLEMS["s3"], policy, chosen, verifier=prm)
    assert result.tree is not None and result.error is None
    rounds = [event for event in events if event["event"] == "particles_resampled"]
    assert rounds
    differs = False
    for event in rounds:
        indices = systematic_resample(particle_weights(event["scores"], 1.0, used), 8, event["u"])
        assert event["drawn"] == [event["particles"][i] for i in indices]
        otherwise = systematic_resample(particle_weights(event["scores"], 1.0, other), 8, event["u"])
        differs |= indices != otherwise
        for node, copies in Counter(event["drawn"]).items():
            if not result.tree.node(node).terminal:
                assert len(result.tree.children(node)) == copies
    assert differs
    final = [c.node for c in result.candidates]
    assert len(final) <= 8 and all(result.tree.node(node).answer for node in final)


async def test_particle_filter_repeats_under_a_seed(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    policy = make_policy(fake_server())
    chosen = config("particle-filter", n=6, whole=False)
    first = await search(PROBLEMS["s4"], policy, chosen, verifier=prm)
    again = await search(PROBLEMS["s4"], policy, chosen, verifier=prm)
    assert first.tree is not None and again.tree is not None
    assert [n.text for n in first.tree.nodes()] == [n.text for n in again.tree.nodes()]


# -- AB-MCTS ---------------------------------------------------------------------------------


def test_posteriors_by_hand() -> None:
    seen = Posterior([1.0, 0.0])
    m, kappa, nu, tau2 = seen.gaussian()
    # n = 2, mean ½, spread ½: κ = 3, ν = 3, m = 1/3, τ² = (0.1 + ½ + (2/3)(¼)) / 3.
    assert (kappa, nu) == (3.0, 3.0)
    assert m == pytest.approx(1 / 3)
    assert tau2 == pytest.approx((0.1 + 0.5 + 2 / 3 * 0.25) / 3)
    assert Posterior([0.9, 0.1]).beta() == pytest.approx((1.5, 1.5))
    assert Posterior().gaussian() == (0.0, 1.0, 1.0, 0.1)


def test_scores_back_up_along_the_path() -> None:
    tree = Search("beta", random.Random(0))
    tree.add([ROOT], 1, 0.9)
    tree.add([ROOT], 2, 0.1)
    tree.add([ROOT, 1], 3, 0.7)
    assert tree.gen[ROOT].scores == [0.9, 0.1] and tree.gen[1].scores == [0.7]
    assert tree.cont[ROOT].scores == [0.7] and not tree.cont[1].scores
    assert tree.via[1].scores == [0.9, 0.7] and tree.via[2].scores == [0.1] and tree.via[3].scores == [0.7]


@pytest.mark.parametrize("seed", range(12))
def test_gen_or_cont_follows_the_thompson_draws(seed: int) -> None:
    """The choice at each node replayed with the same random stream: GEN from Beta(0.5 + Σs,
    0.5 + Σ(1 − s)) against CONT, then the child with the largest draw."""
    tree = Search("beta", random.Random(seed))
    tree.add([ROOT], 1, 0.9)
    tree.add([ROOT], 2, 0.2)
    tree.add([ROOT, 1], 3, 0.8)
    replay = random.Random(seed)
    expected = [ROOT]
    gen, cont = replay.betavariate(1.6, 1.4), replay.betavariate(1.3, 0.7)
    if gen < cont:
        via = {1: replay.betavariate(2.2, 0.8), 2: replay.betavariate(0.7, 1.3)}
        expected.append(max(via, key=lambda kid: via[kid]))
        if expected[-1] == 1 and replay.betavariate(1.3, 0.7) < replay.betavariate(0.5, 0.5):
            expected.append(3)
    assert tree.select() == expected


async def test_ab_mcts_makes_n_attempts_in_batches(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    policy = make_policy(fake_server())
    with capture_logs() as events:
        result = await search(
            PROBLEMS["rev2"], policy, config("ab-mcts", n=10, ab_mcts_batch=4), verifier=prm
        )
    assert result.tree is not None and result.error is None
    attempts = result.tree.children(ROOT)
    assert len(attempts) == 10
    assert all(node.revises is None or node.revises < node.id for node in attempts)
    assert any(node.revises is not None for node in attempts)  # some GEN below the root
    assert sum(event["event"] == "node_scored" for event in events) == 10
    best = max(result.candidates, key=lambda c: c.score or 0.0)
    assert result.answer == best.answer and result.aggregated_by == "best"
