"""Client overhead: treesearch against its lower bound, the raw openai client and its_hub.

A self-consistency workload (200 problems, K=31 votes each) against the
synthetic server with a fixed latency, once with the server honouring ``n``
and once ignoring it. For each client, in the same run:

- wall time, and wall time over its lower bound: the latency times the number
  of sequential rounds the concurrency limit allows;
- client CPU per HTTP request (the server runs in its own process).

Clients: treesearch (majority vote, whole solutions); the raw ``openai``
client sending the same requests (n=K, then one request per missing choice),
with its default httpx transport and with aiohttp; its_hub's SelfConsistency
(one chat request per sample: it never sends ``n``).

Two more sections, which need no ``bench`` extra:

- ``beam``: beam search (N=64, M=4) on 4-step problems against the synthetic
  server answering generation and PRM requests after ``--latency`` each, for
  one problem and for eight at once; wall time over the critical path,
  rounds × (generation latency + PRM latency). Each round is one request per
  kept beam and one PRM request, so anything above 1 is the client's and the
  server's own work. A first run opens the connections and is left out.
- ``startup``: wall time of ``treesearch --help`` in a fresh process, and the
  biggest imports of ``treesearch.cli`` by ``python -X importtime``.
- ``replicas``: a latency-bound workload (majority vote, 200 problems, N = 4, one
  request each, ``--latency`` per request) against a pool of 1 to 4 synthetic
  replicas, 8 requests in flight on each (standing for each replica's capacity);
  problems per second and the speed-up over one replica.
- ``proxy``: 200 chat requests one after another with the openai SDK through
  ``treesearch serve`` (majority vote, N = 4: one upstream request of n = 4, the
  synthetic server without latency), each followed by the same request straight
  to the upstream; the median milliseconds the proxy adds.

    python benchmarks/bench_overhead.py [--problems 200] [--k 31] [--latency 0.05]
    python benchmarks/bench_overhead.py --only beam,startup
    python benchmarks/bench_overhead.py --only replicas,proxy

Results go to benchmarks/results/overhead.json; a run of some sections keeps the
others' last results there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import openai

from treesearch import Prefix, Problem, SamplingParams, SearchConfig, StepFormat, run
from treesearch.backends.endpoint import Endpoint
from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM

RESULTS = Path(__file__).parent / "results"
SECTIONS = ("votes", "beam", "startup", "replicas", "proxy")
BEAM_STEPS = 4


def measure(label: str, work: Callable[[], Any]) -> dict[str, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    requests, correct = work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "client": label,
        "requests": requests,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_ms_per_request": 1000 * cpu / max(requests, 1),
        "accuracy": correct,
    }


def treesearch_run(
    url: str, problems: list[Problem], k: int, concurrency: int, transport: str
) -> Callable[[], Any]:
    async def main() -> tuple[int, float]:
        policy = OpenAIPolicy(url, "fake", concurrency=concurrency, transport=transport)  # type: ignore[arg-type]
        config = SearchConfig(strategy="majority-vote", n=k, sampling=SamplingParams(seed=0))
        try:
            results = await run(problems, policy, config, max_problems_in_flight=len(problems))
        finally:
            await policy.aclose()
        correct = sum(bool(r.correct) for r in results) / len(results)
        return sum(r.usage.requests for r in results), correct

    return lambda: anyio.run(main)


def raw_openai_run(
    url: str, problems: list[Problem], k: int, concurrency: int, transport: str
) -> Callable[[], Any]:
    """The same requests treesearch sends, by hand: n=k, then n=1 for each missing choice."""
    render = OpenAIPolicy(url, "fake").render_prompt

    async def main() -> tuple[int, float]:
        http = openai.DefaultAioHttpClient() if transport == "aiohttp" else openai.DefaultAsyncHttpxClient()
        client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, http_client=http)
        gate = asyncio.Semaphore(concurrency)
        sent = 0

        async def ask(prompt: str, n: int) -> list[str]:
            nonlocal sent
            async with gate:
                sent += 1
                response = await client.completions.create(
                    model="fake", prompt=prompt, n=n, max_tokens=1024, temperature=0.8
                )
            return [choice.text for choice in response.choices]

        async def one(problem: Problem) -> bool:
            prompt = render(Prefix(problem=problem))
            texts = await ask(prompt, k)
            if len(texts) < k:
                rest = await asyncio.gather(*(ask(prompt, 1) for _ in range(k - len(texts))))
                texts += [text for batch in rest for text in batch]
            votes: dict[str, int] = {}
            for text in texts:
                found = re.search(r"The answer is (\S+)\.", text)
                if found:
                    votes[found.group(1)] = votes.get(found.group(1), 0) + 1
            return max(votes, key=votes.__getitem__) == problem.answer

        try:
            correct = await asyncio.gather(*(one(p) for p in problems))
        finally:
            await client.close()
        return sent, sum(correct) / len(correct)

    return lambda: asyncio.run(main())


def its_hub_run(url: str, problems: list[Problem], k: int, concurrency: int) -> Callable[[], Any]:
    from its_hub import LMOrchestrator, OpenAICompatibleLanguageModel, SelfConsistency
    from its_hub.core.algorithms.self_consistency import create_regex_projection_function

    async def main() -> tuple[int, float]:
        lm = OpenAICompatibleLanguageModel(
            endpoint=url,
            api_key="x",
            model_name="fake",
            max_completion_tokens=1024,
            temperature=0.8,
        )
        sc = SelfConsistency(
            consistency_space_projection_func=create_regex_projection_function(r"The answer is (\S+)\."),
            orchestrator=LMOrchestrator(max_concurrency=concurrency),
        )
        async with lm:
            results = await asyncio.gather(
                *(sc.ainfer(lm, p.question, k, return_response_only=False) for p in problems)
            )
        correct = [re.search(r"The answer is (\S+)\.", r.the_one["content"] or "") for r in results]
        right = sum(1 for m, p in zip(correct, problems, strict=True) if m and m[1] == p.answer)
        return sum(r.usage.num_calls for r in results), right / len(problems)

    return lambda: asyncio.run(main())


def votes(args: argparse.Namespace) -> dict[str, Any]:
    """The self-consistency table: every client against its lower bound."""
    records = make_problems(args.problems, p_correct=0.6)
    problems = [Problem.from_record(r) for r in records]
    k, c, latency = args.k, args.concurrency, args.latency
    rows: list[dict[str, Any]] = []
    for mode, flags in (("n honoured", []), ("n ignored", ["--ignore-n"])):
        with (
            tempfile.TemporaryDirectory() as tmp,
            spawn(["--latency", str(latency), *flags], records, Path(tmp)) as url,
        ):
            clients: list[tuple[str, Callable[[], Any]]] = [
                ("treesearch", treesearch_run(url, problems, k, c, "aiohttp")),
                ("treesearch (openai sdk)", treesearch_run(url, problems, k, c, "openai")),
                ("openai raw (httpx)", raw_openai_run(url, problems, k, c, "httpx")),
                ("openai raw (aiohttp)", raw_openai_run(url, problems, k, c, "aiohttp")),
                ("its_hub", its_hub_run(url, problems, k, c)),
            ]
            for label, work in clients:
                row = measure(label, work)
                # its_hub sends one request per sample whatever the server does with n.
                first = args.problems if label != "its_hub" and mode == "n ignored" else 0
                rounds = math.ceil(first / c) + math.ceil((row["requests"] - first) / c)
                row.update(
                    server=mode, lower_bound_s=latency * rounds, over_bound=row["wall_s"] / (latency * rounds)
                )
                rows.append(row)
                print(
                    f"{mode:>10}  {label:<24} requests {row['requests']:>5}  "
                    f"wall {row['wall_s']:6.2f}s  bound {row['lower_bound_s']:5.2f}s  "
                    f"x{row['over_bound']:5.2f}  cpu/request {row['cpu_ms_per_request']:5.2f} ms  "
                    f"acc {row['accuracy']:.3f}",
                    flush=True,
                )

    def get(mode: str, label: str) -> dict[str, Any]:
        return next(r for r in rows if r["server"] == mode and r["client"] == label)

    print("\nratios")
    for mode in ("n honoured", "n ignored"):
        ours, hub = get(mode, "treesearch"), get(mode, "its_hub")
        raw = get(mode, "openai raw (aiohttp)")
        print(
            f"  {mode}: its_hub wall / treesearch wall = {hub['wall_s'] / ours['wall_s']:.2f}; "
            f"treesearch wall / lower bound = {ours['over_bound']:.2f}; "
            f"treesearch cpu/request / raw openai (aiohttp) = "
            f"{ours['cpu_ms_per_request'] / raw['cpu_ms_per_request']:.2f}"
        )
    return {"args": vars(args), "rows": rows}


def beam_ratio(latency: float, counts: tuple[int, ...], reps: int) -> dict[str, Any]:
    """Beam search's wall time over its critical path, for each number of concurrent problems."""
    sets = {
        (count, rep): make_problems(count, steps=BEAM_STEPS, prefix=f"c{count}r{rep}-")
        for count in counts
        for rep in range(reps + 1)
    }
    config = SearchConfig(
        strategy="beam",
        n=64,
        beam_width=4,
        whole=False,
        sampling=SamplingParams(seed=1, temperature=1.0),
        step=StepFormat(max_depth=12),
    )

    async def runs(url: str) -> list[dict[str, Any]]:
        policy, prm = OpenAIPolicy(url, "fake"), PoolingPRM(url, "fake-prm")
        rows = []
        try:
            for count in counts:
                walls, cpus = [], []
                for rep in range(reps + 1):  # run 0 opens the connections: left out
                    problems = [Problem.from_record(r) for r in sets[count, rep]]
                    cpu, wall = time.process_time(), time.perf_counter()
                    results = await run(problems, policy, config, verifier=prm, keep_trees=False)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    failed = [r.error for r in results if r.error]
                    if failed:
                        raise RuntimeError(f"beam search failed: {failed[:3]}")
                    if rep:
                        walls.append(wall)
                        cpus.append(cpu)
                critical = BEAM_STEPS * 2 * latency  # a round: generation, then the PRM
                rows.append(
                    {
                        "problems": count,
                        "runs": reps,
                        "critical_path_s": critical,
                        "wall_best_s": min(walls),
                        "wall_median_s": statistics.median(walls),
                        "ratio_best": min(walls) / critical,
                        "ratio_median": statistics.median(walls) / critical,
                        "client_cpu_median_s": statistics.median(cpus),
                    }
                )
                row = rows[-1]
                print(
                    f"beam N=64 M=4, {count} problem(s): critical path {critical:.2f}s, wall median "
                    f"{row['wall_median_s']:.3f}s (best {row['wall_best_s']:.3f}s) = "
                    f"x{row['ratio_median']:.2f} (best x{row['ratio_best']:.2f}); client CPU "
                    f"{row['client_cpu_median_s']:.3f}s a run",
                    flush=True,
                )
        finally:
            await policy.aclose()
            await prm.aclose()
        return rows

    records = [record for batch in sets.values() for record in batch]
    with tempfile.TemporaryDirectory() as tmp, spawn(["--latency", str(latency)], records, Path(tmp)) as url:
        rows = anyio.run(runs, url)
    return {"latency_s": latency, "rounds": BEAM_STEPS, "rows": rows}


def startup(runs: int) -> dict[str, Any]:
    """``treesearch --help`` in a fresh process, and the biggest imports behind it."""
    command = [str(Path(sys.executable).with_name("treesearch")), "--help"]
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import treesearch.cli"],
        check=True,
        capture_output=True,
        text=True,
    )
    imports = []  # (cumulative microseconds, package): top-level packages, wherever imported
    for line in traced.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        name = fields[-1].strip()
        top_level = "." not in name and not name.startswith(("treesearch", "site", "encodings", "__editable"))
        if len(fields) == 3 and fields[1].strip().isdigit() and top_level:
            imports.append((int(fields[1]), name))
    top = [{"module": name, "ms": us / 1000} for us, name in sorted(imports, reverse=True)[:6]]
    record = {"runs": runs, "best_s": min(walls), "median_s": statistics.median(walls), "imports": top}
    print(
        f"treesearch --help: best {record['best_s']:.3f}s, median {record['median_s']:.3f}s of {runs}; "
        "biggest imports of treesearch.cli (-X importtime, cumulative): "
        + ", ".join(f"{i['module']} {i['ms']:.0f} ms" for i in top),
        flush=True,
    )
    return record


def replicas(latency: float, count: int) -> dict[str, Any]:
    """Problems per second against pools of 1 to 4 replicas, 8 requests in flight on each."""
    records = make_problems(count, p_correct=0.6, prefix="r")
    items = [Problem.from_record(r) for r in records]
    config = SearchConfig(strategy="majority-vote", n=4, sampling=SamplingParams(seed=0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        urls = [stack.enter_context(spawn(["--latency", str(latency)], records, Path(tmp))) for _ in range(4)]
        for size in (1, 2, 4):

            async def main(pool: list[str]) -> float:
                endpoint = Endpoint(pool, concurrency=8)
                policy = OpenAIPolicy(endpoint, "fake")
                await run(items[:8], policy, config)  # open the connections
                started = time.perf_counter()
                await run(items, policy, config)
                seconds = time.perf_counter() - started
                await endpoint.aclose()
                return seconds

            seconds = anyio.run(main, urls[:size])
            rows.append({"replicas": size, "seconds": seconds, "problems_per_s": count / seconds})
            speedup = rows[-1]["problems_per_s"] / rows[0]["problems_per_s"]
            print(f"replicas {size}: {count / seconds:7.1f} problems/s ({seconds:.2f} s, {speedup:.2f}x one)",
                  flush=True)  # fmt: skip
    return {"latency_s": latency, "problems": count, "in_flight_per_replica": 8, "rows": rows}


def proxy(requests: int) -> dict[str, Any]:
    """The median milliseconds ``treesearch serve`` (majority vote, N = 4: one upstream
    request) adds to a request, over the same openai SDK client asking the upstream for the
    same four samples itself (chat, n = 4)."""
    records = make_problems(requests, p_correct=0.6, prefix="x")
    questions = [Problem.from_record(r).question for r in records]
    with tempfile.TemporaryDirectory() as tmp, spawn([], records, Path(tmp)) as upstream:
        command = [sys.executable, "-m", "treesearch.cli", "serve", "--base-url", upstream, "--model", "fake",
                   "--api", "chat", "--port", "0", "--n", "4", "--seed", "0", "--no-auth"]  # fmt: skip
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split()[-1]
            times: dict[str, list[float]] = {"served": [], "direct": []}
            clients = {"served": openai.OpenAI(base_url=url, api_key="none", max_retries=0),
                       "direct": openai.OpenAI(base_url=upstream, api_key="none", max_retries=0)}  # fmt: skip
            for question in [questions[0], *questions]:  # the first opens the connections
                for way, client in clients.items():
                    # Through serve, N = 4 is the server's strategy (a request's n would be
                    # n searches); straight to the upstream, n = 4 asks the same samples.
                    started = time.perf_counter()
                    client.chat.completions.create(
                        model="fake", n=1 if way == "served" else 4, seed=0,
                        messages=[{"role": "user", "content": question}],
                    )  # fmt: skip
                    times[way].append(time.perf_counter() - started)
            for client in clients.values():
                client.close()
        finally:
            server.terminate()
            server.wait()
    served, direct = times["served"][1:], times["direct"][1:]
    record = {
        "requests": requests,
        "served_ms": statistics.median(served) * 1000,
        "direct_ms": statistics.median(direct) * 1000,
        "added_ms": statistics.median(a - b for a, b in zip(served, direct, strict=True)) * 1000,
    }
    print(f"proxy: {record['served_ms']:.2f} ms through treesearch serve, {record['direct_ms']:.2f} ms "
          f"straight to the upstream: {record['added_ms']:.2f} ms added a request (median)")  # fmt: skip
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--k", type=int, default=31)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--beam-runs", type=int, default=10, help="timed beam searches per problem count")
    parser.add_argument("--startup-runs", type=int, default=10)
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma list of sections to run, of {', '.join(SECTIONS)}"
    )
    args = parser.parse_args()
    only = [section.strip() for section in args.only.split(",") if section.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    path = RESULTS / "overhead.json"
    saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if "votes" in only:
        saved.update(votes(args))
    if "beam" in only:
        saved["beam"] = beam_ratio(args.latency, (1, 8), args.beam_runs)
    if "startup" in only:
        saved["startup"] = startup(args.startup_runs)
    if "replicas" in only:
        saved["replicas"] = replicas(args.latency, args.problems)
    if "proxy" in only:
        saved["proxy"] = proxy(200)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(saved, indent=1))
    print(f"\nwritten to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
