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
                                        [--beam-problems 4] [--variants flash-off,repack-on]

``--variants`` adds the engine with one of its llama.cpp load settings turned back
(flash attention off; weight repacking on), measured the same way in the same run.

Writes benchmarks/results/embedded.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from treesearch import CallableVerifier, Prefix, SamplingParams, SearchConfig, run
from treesearch.arithmetic import STEP_FORMAT, make_problems, step_scores
from treesearch.backends.llamacpp.endpoint import LlamaCppEndpoint
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


# Settings of the engine's llama.cpp load that --variants turns back, to measure what each
# buys: (the llama_cpp function the engine loads through, the parameter, its value).
VARIANTS: dict[str, tuple[str, str, Any]] = {
    "flash-off": ("llama_init_from_model", "flash_attn_type", 0),  # LLAMA_FLASH_ATTN_TYPE_DISABLED
    "repack-on": ("llama_model_load_from_file", "use_extra_bufts", True),
}


@contextmanager
def variant(name: str | None) -> Iterator[None]:
    """While open, the engine loads with ``VARIANTS[name]`` in place of its own setting."""
    if name is None:
        yield
        return
    import llama_cpp

    function, field, value = VARIANTS[name]
    original = getattr(llama_cpp, function)

    def load(first: Any, params: Any) -> Any:
        setattr(params, field, value)
        return original(first, params)

    setattr(llama_cpp, function, load)
    try:
        yield
    finally:
        setattr(llama_cpp, function, original)


async def measure(
    tokens: int, concurrency: list[int], repeats: int, beam_problems: int, variants: list[str]
) -> dict[str, Any]:
    ways = [("serial", False, None), ("batching", True, None)]
    ways += [(f"batching {name}", True, name) for name in variants]
    questions = make_problems(sum(concurrency) * repeats + 1, terms=4, low=1, high=9, prefix="rate")
    render = OpenAIPolicy("http://unused", "gemma-3-270m").render_prompt
    prompts = [render(Prefix(problem=problem)) for problem in questions]
    out: dict[str, Any] = {"rate": [], "beam": {}}
    for way, batching, name in ways:
        endpoint = LlamaCppEndpoint(batching=batching)
        try:
            with variant(name):
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
    parser.add_argument("--variants", default="",
                        help=f"engines with one load setting turned back, to compare: {', '.join(VARIANTS)}")
    parser.add_argument("--beam-problems", type=int, default=4)
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    started = time.perf_counter()
    variants = [name for name in args.variants.split(",") if name]
    out = anyio.run(measure, args.tokens, concurrency, args.repeats, args.beam_problems, variants)
    ways = ["batching", *(f"batching {name}" for name in variants)]
    print("\nsequences  serial tok/s  " + "  ".join(f"{way} tok/s (ratio)" for way in ways))
    for count in concurrency:
        rate = {r["way"]: r["tokens_per_s"] for r in out["rate"] if r["sequences"] == count}
        print(f"{count:>9}  {rate['serial']:12.1f}  "
              + "  ".join(f"{rate[way]:8.1f} ({rate[way] / rate['serial']:4.2f}x)" for way in ways))
    serial_s = out["beam"]["serial"]["seconds_per_problem"]
    for way in ways:
        seconds = out["beam"][way]["seconds_per_problem"]
        print(f"beam search N=16 M=4, {way}: {seconds:.1f} s a problem against the serial path's "
              f"{serial_s:.1f} s: {serial_s / seconds:.2f}x faster")  # fmt: skip
    speedup = serial_s / out["beam"]["batching"]["seconds_per_problem"]
    out.update(args=vars(args), seconds=time.perf_counter() - started, beam_speedup=speedup)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embedded.json").write_text(json.dumps(out, indent=1))
    print(f"{out['seconds']:.0f} s in all; wrote {RESULTS / 'embedded.json'}")


if __name__ == "__main__":
    main()
