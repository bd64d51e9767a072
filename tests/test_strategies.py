"""Each search's defining behaviour, read back from the tree it grew and the requests it sent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from conftest import PROBLEMS, problems, server_stats
from structlog.testing import capture_logs

from treesearch import (
    STRATEGIES,
    BudgetLimits,
    SamplingParams,
    SearchConfig,
    SearchResult,
    StepFormat,
    run,
    search,
)
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import (
    ABSTAIN,
    FINISHED_TEMPLATE,
    JudgeVerifier,
    LogprobVerifier,
    PoolingPRM,
)
from treesearch.engine.tree import ROOT, NodeStatus, SearchTree
from treesearch.optimal.difficulty import Cell, DifficultyBins, PolicyTable
from treesearch.strategies.select import rebase_widths, top_k

pytestmark = pytest.mark.anyio


# For adaptive: easier levels vote, harder ones search (probe: 2 samples, cuts on the mean score).
TABLE = PolicyTable(
    bins=DifficultyBins(kind="predicted", cuts=(0.2, 0.4, 0.6, 0.8)),
    probe_k=2,
    choices={
        level: {8: Cell(strategy="weighted-vote", n=8) if level <= 2 else Cell(strategy="beam", n=8,
                options={"beam_width": 2})}
        for level in range(1, 6)
    },
)  # fmt: skip


def config(strategy: str, **options: Any) -> SearchConfig:
    if strategy == "adaptive":
        options["policy_table"] = TABLE
    return SearchConfig(strategy=strategy, sampling=SamplingParams(seed=11), **options)


def expanded(tree: SearchTree, depth: int) -> list[int]:
    return [n.id for n in tree.nodes() if n.depth == depth and tree.graph.out_degree(n.id)]


async def test_beam_keeps_exactly_the_top_n_over_m(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    policy = make_policy(fake_server())
    with capture_logs() as events:
        result = await search(PROBLEMS["s1"], policy, config("beam", n=8, beam_width=4), verifier=prm)
    tree, ctx_scores = result.tree, {}
    assert tree is not None
    frontier = [child.id for child in tree.children(ROOT)]
    assert len(frontier) == 8
    rounds = 0
    while True:
        open_ids = [i for i in frontier if not tree.node(i).terminal]
        kept = expanded(tree, tree.node(frontier[0]).depth)
        if not kept:
            break
        rounds += 1
        for node in open_ids:
            ctx_scores[node] = tree.node(node).scores[-1]
        assert sorted(kept) == sorted(top_k(open_ids, [ctx_scores[i] for i in open_ids], 2))
        assert all(len(tree.children(node)) == 4 for node in kept)
        frontier = [child.id for node in kept for child in tree.children(node)]
    assert rounds >= 2
    requests = Counter(e["path"] for e in events if e["event"] == "request")
    assert requests["/completions"] == 1 + 2 * rounds  # N first steps, then one n=M request per beam
    assert requests["/pooling"] == rounds + 1  # one PRM call per round, one for the finished paths
    assert result.stopped_by == "done"


async def test_rebase_widths_follow_the_softmax_and_sum_to_what_is_left(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    policy = make_policy(fake_server())
    result = await search(
        PROBLEMS["s2"], policy, config("rebase", n=12, rebase_temperature=0.2), verifier=prm
    )
    tree = result.tree
    assert tree is not None
    remaining, depth, checked = 12, 1, 0
    while True:
        level = [n for n in tree.nodes() if n.depth == depth]
        if not level:
            break
        remaining -= sum(n.terminal for n in level)
        open_nodes = [n for n in level if not n.terminal]
        if remaining <= 0 or not open_nodes:
            break
        widths = [len(tree.children(n.id)) for n in open_nodes]
        scores = [n.scores[-1] for n in open_nodes]  # type: ignore[index]
        assert widths == rebase_widths(scores, remaining, 0.2)
        assert sum(widths) == remaining
        checked += 1
        depth += 1
    assert checked >= 2
    assert len(result.candidates) == 12


async def test_lookahead_charges_its_rollouts(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    url = fake_server()
    used = {}
    for strategy in ("beam", "lookahead"):
        before = server_stats(url)
        result = await search(
            PROBLEMS["s3"], make_policy(url), config(strategy, n=4, beam_width=2, lookahead=2), verifier=prm
        )
        after = server_stats(url)
        assert result.usage.requests == after["ok"] - before["ok"]
        served = after["prompt_tokens"] + after["completion_tokens"]
        assert result.usage.total_tokens == served - before["prompt_tokens"] - before["completion_tokens"]
        used[strategy] = result.usage
    assert used["lookahead"].completion_tokens > used["beam"].completion_tokens
    assert used["lookahead"].requests > used["beam"].requests


@pytest.mark.parametrize("problem", ["s4", "early0", "early1"])
async def test_dvts_subtrees_stay_independent(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM, problem: str
) -> None:
    policy = make_policy(fake_server())
    result = await search(PROBLEMS[problem], policy, config("dvts", n=12, beam_width=3), verifier=prm)
    tree = result.tree
    assert tree is not None
    firsts = sorted(child.id for child in tree.children(ROOT))
    assert len(firsts) == 12  # four subtrees, each asking for its own three first steps
    groups = [firsts[i : i + 3] for i in range(0, 12, 3)]
    for group in groups:
        nodes = [tree.node(i) for i in group]
        chosen = [n.id for n in nodes if tree.graph.out_degree(n.id)]
        # Each subtree walks on from its own best step, and only from it; it stops when
        # that step has finished.
        best = top_k(group, [n.scores[-1] for n in nodes], 1)  # type: ignore[index]
        assert chosen == ([] if tree.node(best[0]).terminal else best)
    # A subtree returns the finished children of its last expansion: at most N in all.
    assert 0 < len(result.candidates) <= 12
    assert all(tree.node(c.node).terminal and c.score is not None for c in result.candidates)
    for node in tree.nodes():
        if node.id != ROOT and tree.graph.out_degree(node.id):
            assert len(tree.children(node.id)) == 3
    for depth in range(1, 5):
        assert len(expanded(tree, depth)) <= 4


async def test_filter_vote_falls_back_to_all_answers(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    url = fake_server("--judge-accuracy", "0.0")  # a judge that calls every right answer wrong
    judge = JudgeVerifier(url, "fake")
    result = await search(PROBLEMS["sure5"], make_policy(url), config("filter-vote", n=5), verifier=judge)
    await judge.aclose()
    assert [c.score for c in result.candidates] == [0.0] * 5
    assert result.answer == "15"
    assert result.usage.requests == 1 + 5  # one sampling request, one judge call per answer


async def test_filter_vote_keeps_what_the_judge_keeps(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    url = fake_server("--judge-accuracy", "1.0")
    judge = JudgeVerifier(url, "fake")
    results = await run(problems("b", 30), make_policy(url), config("filter-vote", n=5), verifier=judge)
    await judge.aclose()
    for result in results:
        assert result.correct == any(c.answer == result.gold for c in result.candidates)


async def test_mcts_spends_its_iterations(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    url = fake_server()
    before = server_stats(url)
    with capture_logs() as events:
        result = await search(
            PROBLEMS["s5"], make_policy(url), config("mcts", n=10, beam_width=2), verifier=prm
        )
    after = server_stats(url)
    tree = result.tree
    assert tree is not None
    # An iteration that reaches an open leaf sends one n=2 request and one PRM call for the two
    # children; one that reaches a finished leaf backs its score up without a request.
    expansions = [n.id for n in tree.nodes() if tree.graph.out_degree(n.id)]
    requests = Counter(e["path"] for e in events if e["event"] == "request")
    assert requests == {"/completions": len(expansions), "/pooling": len(expansions)}
    assert 0 < len(expansions) <= 10
    assert all(len(tree.children(node)) == 2 for node in expansions)
    assert result.usage.requests == 2 * len(expansions) == after["ok"] - before["ok"]
    # The candidates are finished paths the walks reached (at most one per iteration), not
    # every answered node in the tree: an answered child that was never the best is left out.
    answered = {n.id for n in tree.nodes() if n.status is NodeStatus.ANSWERED}
    chosen = {c.node for c in result.candidates}
    assert 0 < len(chosen) <= 10
    assert chosen < answered


async def test_mcts_children_keep_their_scores_as_first_visits(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    """With C = 0 (no exploration), the second walk goes to the best-scored first step; a
    child thrown away unvisited would instead be chosen for its infinite bound."""
    for problem in ("s7", "s8", "s9"):
        result = await search(
            PROBLEMS[problem],
            make_policy(fake_server()),
            config("mcts", n=2, beam_width=3, mcts_c=0.0),
            verifier=prm,
        )
        tree = result.tree
        assert tree is not None
        firsts = tree.children(ROOT)
        (best,) = top_k([n.id for n in firsts], [n.scores[-1] for n in firsts], 1)  # type: ignore[index]
        assert [n.id for n in firsts if tree.graph.out_degree(n.id)] == [best]


async def test_beam_keeps_n_paths_in_play_and_returns_exactly_n(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    """N = 6, M = 4: one kept beam gets all six children (M does not divide N); paths that
    finish early leave fewer open than N/M, and the rest still grow N children a round. More
    than N finish; the N best-scored are the candidates."""
    overfull = 0
    for problem in problems("early", 6):
        result = await search(
            problem, make_policy(fake_server()), config("beam", n=6, beam_width=4), verifier=prm
        )
        tree = result.tree
        assert tree is not None
        depth = 1
        while expanded(tree, depth):
            level = expanded(tree, depth)
            assert sum(len(tree.children(node)) for node in level) == 6
            depth += 1
        finished = [n for n in tree.nodes() if n.status is NodeStatus.ANSWERED]
        assert len(result.candidates) == min(6, len(finished))
        if len(finished) > 6:
            overfull += 1
            chosen = sorted((c.score for c in result.candidates), reverse=True)
            assert chosen == sorted((n.scores[-1] for n in finished), reverse=True)[:6]  # type: ignore[index]
    assert overfull > 0


async def test_filter_vote_abstains_on_a_cut_off_verdict(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    url = fake_server("--judge-accuracy", "0.0")
    judge = JudgeVerifier(url, "fake", max_tokens=2)  # every verdict is cut off by the token limit
    result = await search(PROBLEMS["sure7"], make_policy(url), config("filter-vote", n=3), verifier=judge)
    await judge.aclose()
    assert [c.score for c in result.candidates] == [ABSTAIN] * 3


async def test_filter_vote_can_count_its_budget_in_calls(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str]
) -> None:
    url = fake_server()
    judge = JudgeVerifier(url, "fake")
    result = await search(
        PROBLEMS["sure8"],
        make_policy(url),
        config("filter-vote", n=6, n_counts_judgements=True),
        verifier=judge,
    )
    await judge.aclose()
    assert len(result.candidates) == 3  # K = 6 calls: 3 generations (one request) and 3 judgements
    assert result.usage.requests == 1 + 3


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
async def test_every_strategy_finishes_and_honours_a_budget(
    make_policy: Callable[..., OpenAIPolicy],
    fake_server: Callable[..., str],
    prm: PoolingPRM,
    strategy: str,
) -> None:
    url = fake_server()
    verifier = JudgeVerifier(url, "fake") if strategy == "filter-vote" else prm
    free: SearchResult = await search(
        PROBLEMS["s6"], make_policy(url), config(strategy, n=8, beam_width=2), verifier=verifier
    )
    assert free.stopped_by == "done"
    assert free.answer is not None
    limit = free.usage.total_tokens // 2
    tight = await search(
        PROBLEMS["s6"],
        make_policy(url),
        config(strategy, n=8, beam_width=2, step=StepFormat(max_step_tokens=16, max_tokens=64),
               budget=BudgetLimits(tokens=limit)),
        verifier=verifier,
    )  # fmt: skip
    assert tight.stopped_by == "budget"
    assert tight.usage.total_tokens <= limit
    if strategy == "filter-vote":
        await verifier.aclose()


async def test_a_judged_completion_check_is_asked_and_charged(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    url = fake_server()
    policy = make_policy(url)
    check = LogprobVerifier(policy.http, "fake", template=FINISHED_TEMPLATE)
    before = server_stats(url)
    with capture_logs() as events:
        result = await search(
            PROBLEMS["sure6"], policy, config("beam", n=4, beam_width=2), verifier=prm, finish_check=check
        )
    after = server_stats(url)
    # Every request the server answered, the yes/no checks included, is charged to the search.
    assert result.usage.requests == after["ok"] - before["ok"]
    assert result.usage.completion_tokens == after["completion_tokens"] - before["completion_tokens"]
    assert result.usage.prompt_tokens == after["prompt_tokens"] - before["prompt_tokens"]
    assert result.usage.requests == sum(e["event"] == "request" for e in events)
    tree = result.tree
    assert tree is not None
    judged = [e for e in events if e["event"] == "request" and e["path"] == "/completions"]
    opened = [n for n in tree.nodes() if n.id != ROOT and n.answer is None]
    # One yes/no request per step that was still open after its request (all the non-final steps).
    assert len(judged) == len(opened) + 1 + 2 * 3
    assert result.correct
