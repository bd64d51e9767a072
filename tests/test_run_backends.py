"""A BackendSpec describes a run's backends in plain, picklable data (what a Ray task
receives instead of the command line's arguments), and ``open_backends`` opens them."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest
from conftest import PROBLEMS

from treesearch import SearchConfig, search
from treesearch.runs.backends import BackendSpec, open_backends

KEY = "sk-spec-5ecret-1b2c"

pytestmark = pytest.mark.anyio


def test_a_spec_pickles_and_keeps_its_keys_out_of_its_repr() -> None:
    spec = BackendSpec(base_urls=("http://127.0.0.1:9/v1",), api_key=KEY, prm_api_key=KEY, verifier="logprob")
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert KEY not in repr(spec)


async def test_open_backends_checks_the_model_and_builds_what_the_spec_names(
    fake_server: Callable[..., str],
) -> None:
    url = fake_server()
    spec = BackendSpec(base_urls=(url,), verifier="vllm-pooling", prm_urls=(url,), prm_model="fake-prm",
                       completion_check="judge")  # fmt: skip
    async with open_backends(spec) as backends:
        assert backends.model == "fake"  # the only model the server lists
        assert backends.verifier is not None and backends.finish_check is not None
        assert len(backends.servers) == 2  # the policy's endpoint and the PRM's root
        config = SearchConfig(strategy="best-of-n", n=2)
        result = await search(PROBLEMS["sure1"], backends.policy, config, verifier=backends.verifier)
    assert result.correct and result.candidates[0].score is not None
