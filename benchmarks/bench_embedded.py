"""The embedded engine: the batching engine against the serial path, on Gemma 3 270M on the CPU.

Two measurements, both ways in the same run:

- generated tokens per second for 1, 4, 8, 16 and 32 concurrent sequences, each
  a different arithmetic question under the same few-shot prompt (the shared
  prefix), sampled at temperature 0.7 for a fixed number of tokens (no stop
  string, so every sequence generates the same count); the median of
  ``--repeats`` rounds, each round on questions not asked before (a question's
  new text is read, as in a search);
- the wall time of beam search (N = 16, M = 4, the exact step checker as PRM)
  on a few arithmetic problems, one problem at a time, with the prompt tokens
  the engine read and the ones it found cached.

    python benchmarks/bench_embedded.py [--tokens 32] [--concurrency 1,4,8,16,32] [--repeats 3]
                                        [--beam-problems 4]

Writes benchmarks/results/embedded.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import anyio

from treesearch import CallableVerifier, Prefix, SamplingParams, SearchConfig, run
from treesearch.arithmetic import STEP_FORMAT, make_problems, step_scores
from treesearch.backends.llamacpp import LlamaCppEndpoint
from treesearch.backends.openai_compat import OpenAIPolicy

RESULTS = Path(__file__).parent / "results"


async def token_rate(endpoint: LlamaCppEndpoint, prompts: list[str], tokens: int) -> dict[str, Any]:
    """Generated tokens per second for ``prompts`` sent concurrently, one sequence each."""
    generated = 0

    async def one(index: int, prompt: str) -> None:
        nonlocal generated
        body = {"prompt": prompt, "n": 1, "max_tokens": tokens, "temperature": 0.7, "seed": index}
        answer = await endpoint.post("/completions", body)
        generated += answer["usage"]["completion_tokens"]

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index, prompt in enumerate(prompts):
            group.start_soon(one, index, prompt)
    seconds = time.perf_counter() - started
    rate = generated / seconds
    return {"sequences": len(prompts), "tokens": generated, "seconds": seconds, "tokens_per_s": rate}


async def beam_wall(endpoint: LlamaCppEndpoint, count: int) -> dict[str, Any]:
    problems = make_problems(count, terms=3, low=1, high=9, prefix="bench")
    policy = OpenAIPolicy(endpoint, "gemma-3-270m")
    config = SearchConfig(strategy="beam", n=16, beam_width=4, whole=False, step=STEP_FORMAT,
                          sampling=SamplingParams(temperature=0.7, seed=0))  # fmt: skip
    started = time.perf_counter()
    results = await run(problems, policy, config, verifier=CallableVerifier(step_scores),
                        max_problems_in_flight=1, keep_trees=False)  # fmt: skip
    seconds = time.perf_counter() - started
    return {
        "problems": count,
        "seconds": seconds,
        "seconds_per_problem": seconds / count,
        "accuracy": sum(bool(r.correct) for r in results) / count,
        "completion_tokens": sum(r.usage.completion_tokens for r in results),
        "requests": sum(r.usage.requests for r in results),
    }


async def measure(tokens: int, concurrency: list[int], repeats: int, beam_problems: int) -> dict[str, Any]:
    questions = make_problems(sum(concurrency) * repeats + 1, terms=4, low=1, high=9, prefix="rate")
    render = OpenAIPolicy("http://unused", "gemma-3-270m").render_prompt
    prompts = [render(Prefix(problem=problem)) for problem in questions]
    out: dict[str, Any] = {"rate": [], "beam": {}}
    for batching in (False, True):
        way = "batching" if batching else "serial"
        endpoint = LlamaCppEndpoint(batching=batching)
        try:
            await endpoint.ping()
            await token_rate(endpoint, prompts[-1:], 4)  # warm up
            fresh = iter(prompts)
            for count in concurrency:
                rounds = [await token_rate(endpoint, [next(fresh) for _ in range(count)], tokens)
                          for _ in range(repeats)]  # fmt: skip
                row = {**rounds[0], "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rounds),
                       "rounds": [r["tokens_per_s"] for r in rounds]}  # fmt: skip
                out["rate"].append({"way": way, **row})
                print(f"{way:<9} {count:>3} sequences: {row['tokens_per_s']:6.1f} tokens/s "
                      f"({row['tokens']} tokens in {row['seconds']:.1f} s)", flush=True)  # fmt: skip
            beam = out["beam"][way] = await beam_wall(endpoint, beam_problems)
            if endpoint.engine is not None:
                beam["engine"] = dict(endpoint.engine.stats)
            print(f"{way:<9} beam N=16 M=4: {beam['seconds_per_problem']:.1f} s a problem, "
                  f"accuracy {beam['accuracy']:.2f}, {beam['requests']} requests", flush=True)  # fmt: skip
        finally:
            await endpoint.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,4,8,16,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beam-problems", type=int, default=4)
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    started = time.perf_counter()
    out = anyio.run(measure, args.tokens, concurrency, args.repeats, args.beam_problems)
    print("\nsequences  serial tok/s  batching tok/s  ratio")
    for count in concurrency:
        serial, batched = (next(r for r in out["rate"] if r["way"] == way and r["sequences"] == count)
                           for way in ("serial", "batching"))  # fmt: skip
        ratio = batched["tokens_per_s"] / serial["tokens_per_s"]
        print(f"{count:>9}  {serial['tokens_per_s']:12.1f}  {batched['tokens_per_s']:14.1f}  {ratio:5.2f}x")
    speedup = out["beam"]["serial"]["seconds"] / out["beam"]["batching"]["seconds"]
    serial_s, batching_s = (out["beam"][way]["seconds_per_problem"] for way in ("serial", "batching"))
    print(f"beam search N=16 M=4: serial {serial_s:.1f} s, batching {batching_s:.1f} s a problem: "
          f"{speedup:.2f}x faster")  # fmt: skip
    out.update(args=vars(args), seconds=time.perf_counter() - started, beam_speedup=speedup)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embedded.json").write_text(json.dumps(out, indent=1))
    print(f"{out['seconds']:.0f} s in all; wrote {RESULTS / 'embedded.json'}")


if __name__ == "__main__":
    main()
