"""Verifier backends against the synthetic server, which speaks vLLM's /pooling shapes, and
the check every score passes where it enters a search."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from conftest import PROBLEMS, server_stats

from treesearch import (
    CallableVerifier,
    ConfigError,
    EndpointError,
    Problem,
    SamplingParams,
    SearchConfig,
    search,
)
from treesearch.backends.fake.tasks import FakeTask, step_score
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import (
    FINISHED_TEMPLATE,
    JudgeVerifier,
    LogprobVerifier,
    PoolingPRM,
)

pytestmark = pytest.mark.anyio

GOOD = ["Step 1: this points to 10.", "Step 2: this points to 10.", "The answer is 10."]
BAD = ["Step 1: this points to 10.", "Step 2: this points to 1000.", "The answer is 1000."]
GOLD_10 = FakeTask(gold="10")


async def test_pooling_prm_scores_every_step_of_many_paths_in_one_request(
    fake_server: Callable[..., str],
) -> None:
    url = fake_server()
    prm = PoolingPRM(url, "fake-prm")  # a /v1 URL: /pooling lives at the root
    before = server_stats(url)
    scored = await prm.score(PROBLEMS["a0"], [GOOD, BAD, GOOD[:1]])
    await prm.aclose()
    after = server_stats(url)
    assert after["requests"] - before["requests"] == 1
    assert after["prm_inputs"] - before["prm_inputs"] == 3
    expected = [
        [step_score(GOLD_10, "a0", "\n".join(path[: i + 1]), 0.0) for i in range(len(path))]
        for path in (GOOD, BAD, GOOD[:1])
    ]
    assert [pytest.approx(row) for row in expected] == scored.scores
    assert scored.scores[1][1] < 0.5 < scored.scores[1][0]
    assert scored.cost.requests == 1
    assert scored.cost.prompt_tokens == after["prompt_tokens"] - before["prompt_tokens"]
    assert scored.cost.prompt_tokens <= prm.cost_bound(PROBLEMS["a0"], [GOOD, BAD, GOOD[:1]]).prompt_tokens


async def test_pooling_prm_with_noise_is_deterministic(fake_server: Callable[..., str]) -> None:
    prm = PoolingPRM(fake_server("--prm-noise", "1.0"), "fake-prm")
    first = await prm.score(PROBLEMS["a0"], [GOOD])
    second = await prm.score(PROBLEMS["a0"], [GOOD])
    await prm.aclose()
    assert first.scores == second.scores
    assert first.scores[0] != pytest.approx([0.818, 0.818, 0.818], abs=1e-3)


async def test_unknown_prm_model_is_a_clear_error(fake_server: Callable[..., str]) -> None:
    prm = PoolingPRM(fake_server(), "no-such-prm")
    with pytest.raises(EndpointError, match="404"):
        await prm.score(PROBLEMS["a0"], [GOOD])
    await prm.aclose()


async def test_logprob_verifier_reads_p_yes(fake_server: Callable[..., str]) -> None:
    url = fake_server()
    judge = LogprobVerifier(url, "fake")
    before = server_stats(url)
    scored = await judge.score(PROBLEMS["a0"], [GOOD, BAD[:2]])
    finished = LogprobVerifier(judge.http, "fake", template=FINISHED_TEMPLATE)
    done = await finished.score(PROBLEMS["a0"], [GOOD, GOOD[:2]])
    await judge.aclose()
    after = server_stats(url)
    assert [s[0] for s in scored.scores] == pytest.approx([0.818, 0.182], abs=1e-3)
    assert [s[0] for s in done.scores] == pytest.approx([0.97, 0.03])
    assert after["requests"] - before["requests"] == 4  # one per path
    assert scored.cost.completion_tokens == 2


async def test_filter_judge_verdicts(fake_server: Callable[..., str]) -> None:
    judge = JudgeVerifier(fake_server("--judge-accuracy", "1.0"), "fake")
    scored = await judge.score(PROBLEMS["a0"], [GOOD, BAD])
    await judge.aclose()
    assert scored.scores == [[1.0], [0.0]]
    assert scored.cost.requests == 2


async def test_settings_apply_to_a_new_endpoint_only(fake_server: Callable[..., str]) -> None:
    judge = LogprobVerifier(fake_server(), "fake")
    with pytest.raises(ConfigError, match="concurrency: settings of a new endpoint"):
        LogprobVerifier(judge.http, "fake", concurrency=4)
    with pytest.raises(ConfigError, match="a URL or an endpoint"):
        LogprobVerifier(None, "fake")  # type: ignore[arg-type]
    await judge.aclose()


async def nan_score(problem: Problem, steps: Sequence[str]) -> float:
    return math.nan


async def inf_score(problem: Problem, steps: Sequence[str]) -> list[float]:
    return [0.5] * (len(steps) - 1) + [math.inf]


async def score_two(problem: Problem, steps: Sequence[str]) -> float:
    return 2.0


# ab-mcts drew from Beta(nan, nan) forever, ignoring SIGTERM (hence the timeout), and failed
# every problem on 2.0; the particles collapsed onto one; the votes wrote a bare NaN.
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("strategy", "options"),
    [("ab-mcts", {"ab_mcts_posterior": "beta", "ab_mcts_batch": 2}), ("ab-mcts", {"ab_mcts_batch": 2}),
     ("particle-filter", {}), ("weighted-vote", {"whole": False})],
)  # fmt: skip
@pytest.mark.parametrize(
    ("function", "promise", "shown", "problem"),
    [
        (nan_score, False, "nan", "not a finite number"),
        (inf_score, False, "inf", "not a finite number"),
        (score_two, True, "2.0", "not a probability in [0, 1]"),
    ],
)
async def test_a_score_that_cannot_be_one_fails_the_problem_naming_the_verifier(
    make_policy: Callable[..., OpenAIPolicy],
    fake_server: Callable[..., str],
    strategy: str,
    options: dict[str, object],
    function: Callable[..., object],
    promise: bool,
    shown: str,
    problem: str,
) -> None:
    verifier = CallableVerifier(function, probabilities=promise)
    config = SearchConfig(strategy=strategy, n=4, sampling=SamplingParams(seed=3), **options)
    result = await search(PROBLEMS["s2"], make_policy(fake_server()), config, verifier=verifier)
    assert result.stopped_by == "error"
    assert (
        result.error == f"verifier test_verifiers:{function.__name__} returned the score {shown}: {problem}"
    )
    assert all(c.score is None or 0.0 <= c.score <= 1.0 for c in result.candidates)  # none of its scores


@pytest.mark.parametrize(
    "needs",
    [{"strategy": "ab-mcts", "ab_mcts_posterior": "beta"}, {"strategy": "particle-filter", "whole": False}],
    ids=["ab-mcts-beta", "particle-logit"],
)
async def test_probability_scorers_need_probabilities_whatever_the_verifier_promises(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], needs: dict[str, Any]
) -> None:
    """A Python checker may score on any scale, but AB-MCTS's Beta posterior and the particle
    filter's logit weights take [0, 1] only (a 2.0 clipped to 1 - ε would weigh like any
    other); the Gaussian posterior, probability weights and the other strategies take any
    finite score."""
    verifier = CallableVerifier(score_two)
    policy = make_policy(fake_server())
    config = SearchConfig(n=4, sampling=SamplingParams(seed=3), **needs)
    refused = await search(PROBLEMS["s2"], policy, config, verifier=verifier)
    assert (
        refused.error
        == "verifier test_verifiers:score_two returned the score 2.0: not a probability in [0, 1]"
    )
    for config in (
        SearchConfig(strategy="ab-mcts", n=4, sampling=SamplingParams(seed=3)),
        SearchConfig(
            strategy="particle-filter", n=4, whole=False, particle_weighting="probability",
            sampling=SamplingParams(seed=3),
        ),
        SearchConfig(strategy="beam", n=4, beam_width=2, whole=False, sampling=SamplingParams(seed=3)),
    ):
        result = await search(PROBLEMS["s2"], policy, config, verifier=verifier)
        assert result.error is None and result.answer is not None
        assert {c.score for c in result.candidates} == {2.0}


def test_the_server_verifiers_promise_probabilities() -> None:
    assert PoolingPRM.probabilities and LogprobVerifier.probabilities and JudgeVerifier.probabilities
    assert not CallableVerifier(score_two).probabilities
