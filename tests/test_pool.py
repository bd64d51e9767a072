"""One Endpoint's slots and replicas: the oldest problem served first, and a pool of
synthetic replicas behind it (least busy first, failover, ejection, all of them dead)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from conftest import RECORDS, problems, run_cli, write_problems

from treesearch import CallableVerifier, Problem, SamplingParams, SearchConfig, run
from treesearch.backends.endpoint import EJECT_AFTER, Endpoint, OldestFirst
from treesearch.backends.fake.launch import spawn
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.retry import RetryPolicy

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def test_a_pool_routes_around_a_dead_replica_and_a_failing_one(tmp_path: Path) -> None:
    """Four replicas, one answering only 500s and one killed between two halves of a run:
    every problem finishes, the failing one is taken out after a few errors, and the
    traffic moves to the live ones."""
    with ExitStack() as stack:
        urls = [stack.enter_context(spawn([], RECORDS, tmp_path))]
        urls.append(stack.enter_context(spawn([], RECORDS, tmp_path)))
        urls.append(stack.enter_context(spawn(["--error-rate", "1", "--fault-kinds", "500"], RECORDS,
                                              tmp_path)))  # fmt: skip
        doomed = ExitStack()
        urls.append(doomed.enter_context(spawn([], RECORDS, tmp_path)))
        stack.callback(doomed.close)
        endpoint = Endpoint(urls, retry=RetryPolicy(attempts=4, initial_wait_s=0.01, jitter_s=0.0))
        policy = OpenAIPolicy(endpoint, "fake")
        config = SearchConfig(strategy="majority-vote", n=4, sampling=SamplingParams(seed=2))
        try:
            first = await run(problems("a", 30), policy, config)
            a, b, bad, dead = endpoint.replicas
            served_before = dead.requests
            doomed.close()  # the fourth replica dies between the halves
            second = await run(problems("c", 30), policy, config)
        finally:
            await policy.aclose()
            await endpoint.aclose()
    assert all(result.error is None for result in [*first, *second])
    # Every request it got failed; it got those sent before it failed EJECT_AFTER times.
    assert bad.errors == bad.requests >= EJECT_AFTER
    assert a.requests + b.requests > 5 * bad.requests
    assert served_before > 5  # the dead one served its share of the first half
    assert dead.errors >= 1 and dead.requests - served_before <= dead.errors
    assert a.tokens > 0 and b.tokens > 0 and bad.tokens == 0


def test_the_run_summary_counts_each_replica(fake_server: Callable[..., str], tmp_path: Path) -> None:
    """Two replicas, one by --base-url and one from --pool-file: both serve, and the run's
    closing lines and events count each one's requests and tokens."""
    first, second = fake_server(), fake_server("--seed", "9")
    problems_file = write_problems(tmp_path / "p.jsonl", problems("a", 12))
    (tmp_path / "pool.txt").write_text(f"# replicas\n{second}\n")
    done = run_cli("run", "--base-url", first, "--pool-file", str(tmp_path / "pool.txt"), "--model", "fake",
                   "--problems", str(problems_file), "--output", str(tmp_path / "o.jsonl"), "--n", "4",
                   "--log-json", str(tmp_path / "events.jsonl"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = {url: line for url in (first, second) for line in done.stderr.splitlines() if url in line}
    assert (
        all(" 0 requests" not in line and "0 errors" in line for line in lines.values()) and len(lines) == 2
    )
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    counted = {e["base_url"]: e["requests"] for e in events if e["event"] == "replica_counts"}
    assert set(counted) == {first, second} and sum(counted.values()) == 12


async def test_a_pool_with_no_live_replica_fails_the_problem_in_one_line() -> None:
    """Every replica refuses connections: each is tried, the retries run out, and the problem
    ends with an error naming a replica, not a crash."""
    endpoint = Endpoint(["http://127.0.0.1:9/v1", "http://127.0.0.1:1/v1"],
                        retry=RetryPolicy(attempts=3, initial_wait_s=0.01, jitter_s=0.0))  # fmt: skip
    policy = OpenAIPolicy(endpoint, "fake")
    try:
        (result,) = await run(problems("a", 1), policy, SearchConfig(n=2))
    finally:
        await endpoint.aclose()
    assert result.stopped_by == "error" and result.error is not None
    assert "127.0.0.1:9/v1" in result.error or "127.0.0.1:1/v1" in result.error
    assert all(replica.requests >= 1 and replica.errors == replica.requests for replica in endpoint.replicas)


async def test_a_freed_slot_goes_to_the_oldest_waiter_first_come_first_served_among_equals() -> None:
    """Waiters get a freed slot lowest priority first (the oldest problem), in arrival order
    among equals; one cancelled while it waits is skipped, and no slot is lost."""
    limiter = OldestFirst(1)
    await limiter.acquire(9)  # the one slot, taken at once
    served: list[str] = []

    async def wait(priority: int, name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await limiter.acquire(priority)
            try:
                served.append(name)
                await anyio.lowlevel.checkpoint()  # hold the slot across a pass through the loop
            finally:
                limiter.release()

    async with anyio.create_task_group() as group:
        gone = anyio.CancelScope()
        for priority, name in [(3, "c"), (1, "a1"), (0, "gone"), (2, "b"), (1, "a2")]:
            group.start_soon(wait, priority, name, gone if name == "gone" else anyio.CancelScope())
            await anyio.wait_all_tasks_blocked()  # each waits before the next arrives
        gone.cancel()
        await anyio.wait_all_tasks_blocked()
        limiter.release()
    assert served == ["a1", "a2", "b", "c"]
    async with anyio.create_task_group() as group:
        group.start_soon(wait, 5, "again", anyio.CancelScope())
        await anyio.wait_all_tasks_blocked()
        assert served[-1] == "again"  # the slot came back: taken without waiting


async def test_a_pool_whose_replicas_all_die_fails_the_rest_at_once_and_keeps_what_finished(
    tmp_path: Path,
) -> None:
    """Both replicas of a pool are killed mid-run (by a verifier, when problem a8 is scored):
    the rows written before are kept, every remaining problem fails at once with one line
    naming the pool, and the attempts after the death are a few per request then in flight,
    not every remaining problem running out its retries."""
    output = tmp_path / "out.jsonl"
    with ExitStack() as servers:
        urls = [servers.enter_context(spawn([], RECORDS, tmp_path)) for _ in range(2)]
        retry = RetryPolicy(attempts=3, initial_wait_s=0.01, jitter_s=0.0)
        endpoint = Endpoint(urls, concurrency=2, retry=retry)
        death: dict[str, object] = {}

        def kill_at_a8(problem: Problem, steps: Sequence[str]) -> float:
            """Run on the event loop: nothing else moves until both servers are gone."""
            if problem.id == "a8" and not death:
                death["kept"] = {row["id"] for row in map(json.loads, output.read_text().splitlines())}
                death["attempts"] = sum(replica.requests for replica in endpoint.replicas)
                servers.close()
            return 1.0

        config = SearchConfig(strategy="best-of-n", n=2, sampling=SamplingParams(seed=2))
        try:
            results = await run(problems("a", 40), OpenAIPolicy(endpoint, "fake"), config, output=output,
                                verifier=CallableVerifier(kill_at_a8), max_problems_in_flight=4)  # fmt: skip
        finally:
            await endpoint.aclose()
    kept, before = death["kept"], death["attempts"]
    assert isinstance(kept, set) and isinstance(before, int) and len(kept) >= 4
    rows = {row["id"]: row for row in map(json.loads, output.read_text().splitlines())}
    assert len(rows) == 40 and all(rows[key]["error"] is None for key in kept)
    failed = [r for r in results if r.error is not None]
    assert len(failed) >= 40 - len(kept) - 4  # all but those in flight when the replicas died
    assert all("\n" not in r.error for r in failed if r.error is not None)
    assert sum("every replica of the pool is taken out" in str(r.error) for r in failed) >= 40 - len(kept) - 8
    # At most 4 requests in flight (2 slots a replica), each trying both replicas and then
    # its 3 retries: the other problems' requests fail without an attempt.
    assert sum(replica.requests for replica in endpoint.replicas) - before <= 4 * (2 + 3)
