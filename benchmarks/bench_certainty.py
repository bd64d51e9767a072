"""Self-certainty from top-k logprobs against the exact value, on a real model's full
next-token distributions.

The bundled Gemma 3 270M (GGUF, through llama-cpp-python on the CPU; V = 262,144) samples
``--n`` continuations of ``--tokens`` tokens for each of a few questions, at temperature
0.8, one token at a time, and at every position its whole distribution gives the exact
KL(U ‖ p) (float64 log-softmax of the logits). The estimate ``token_certainty`` reads only
the top k of them, rounded to float32 as a server sends them, for k in ``--k``. Printed and
written as JSON: per token, the mean shortfall (exact − estimate), its mean relative size
and the correlation of the estimates with the exact values;
per trace (the mean over its tokens), the same, how often the estimate picks the exact
value's best-of-N trace, and the rank correlation of the N traces' estimates with their exact
values; and how much a wrong V (``--vocab-size``'s default, 151,936) moves the estimate.

    python benchmarks/bench_certainty.py [--n 8] [--tokens 48] [--k 1 5 20 100] [--seed 0] [--output F]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from treesearch.answers.certainty import token_certainty, trace_certainty
from treesearch.backends.llamacpp.endpoint import bundled_model, safe_model_defaults
from treesearch.engine.policy import SamplingParams, token_confidence

QUESTIONS = (
    "What is 17 times 23? Think step by step.",
    "A train leaves at 3 pm and travels 120 km at 40 km/h. When does it arrive?",
    "If x + 2x = 18, what is x?",
    "Name the largest planet in the solar system and explain why it is so large.",
    "How many days are there in four weeks and three days?",
    "Write one sentence about why the sky is blue.",
)
OUTPUT = Path(__file__).parent / "results" / "certainty.json"


def exact_certainty(logprobs: np.ndarray) -> float:
    """KL(U ‖ p) = −log V − mean_j log p_j over the whole vocabulary."""
    return float(-math.log(logprobs.size) - logprobs.mean())


def ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0] * len(values)
    for rank, index in enumerate(order):
        out[index] = rank
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb, strict=True)) / (n * (n * n - 1))


def tops_of(trace: list[np.ndarray], most: int) -> list[np.ndarray]:
    """Every position's ``most`` largest logprobs, largest first (a partial sort)."""
    out = []
    for logprobs in trace:
        best = np.argpartition(-logprobs, most)[:most]
        out.append(np.sort(logprobs[best])[::-1])
    return out


def sample_traces(llm: Any, prompt: str, n: int, tokens: int, seed: int) -> list[list[np.ndarray]]:
    """``n`` continuations of ``prompt``: every position's float64 log-softmax."""
    rng = np.random.default_rng(seed)
    start = llm.tokenize(prompt.encode(), add_bos=True)
    traces = []
    for _ in range(n):
        llm.reset()
        llm.eval(start)
        positions = []
        for _ in range(tokens):
            logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            shifted = logits - logits.max()
            logprobs = shifted - math.log(np.exp(shifted).sum())
            positions.append(logprobs)
            tempered = np.exp((logprobs - logprobs.max()) / 0.8)
            token = int(rng.choice(logprobs.size, p=tempered / tempered.sum()))
            if token == llm.token_eos():
                break
            llm.eval([token])
        traces.append(positions)
    return traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5, 20, 100])
    parser.add_argument("--seed", type=int, default=0, help="question i samples with seed + i")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    from llama_cpp import Llama

    with safe_model_defaults():
        llm = Llama(str(bundled_model()), n_ctx=256, logits_all=True, verbose=False, seed=0)
    vocab = llm.n_vocab()
    default_vocab = SamplingParams().vocab_size
    per_k: dict[int, dict[str, list[float]]] = {
        k: {"token": [], "relative": [], "trace": [], "estimate": []} for k in args.k
    }
    picks: dict[int, list[bool]] = {k: [] for k in args.k}
    correlations: dict[int, list[float]] = {k: [] for k in args.k}
    wrong_vocab: list[float] = []
    confidence_picks: list[bool] = []
    confidence_correlations: list[float] = []
    exact_tokens: list[float] = []
    for index, question in enumerate(QUESTIONS):
        prompt = f"Question: {question}\nAnswer:"
        traces = sample_traces(llm, prompt, args.n, args.tokens, seed=args.seed + index)
        exact = [[exact_certainty(p) for p in trace] for trace in traces]
        exact_traces = [trace_certainty(values) for values in exact]
        exact_tokens += [value for values in exact for value in values]
        best = max(range(args.n), key=exact_traces.__getitem__)
        listed = [tops_of(trace, max(args.k)) for trace in traces]
        for k in args.k:
            estimated = []
            for tops_of_trace, truth in zip(listed, exact, strict=True):
                tops = [top[:k].astype(np.float32).tolist() for top in tops_of_trace]
                values = [token_certainty(top, vocab) for top in tops]
                per_k[k]["token"] += [t - v for t, v in zip(truth, values, strict=True)]
                per_k[k]["estimate"] += values
                per_k[k]["relative"] += [(t - v) / t for t, v in zip(truth, values, strict=True)]
                if k == 20:
                    wrong_vocab += [
                        token_certainty(top, default_vocab) - v for top, v in zip(tops, values, strict=True)
                    ]
                estimated.append(trace_certainty(values))
            per_k[k]["trace"] += [t - e for t, e in zip(exact_traces, estimated, strict=True)]
            picks[k].append(max(range(args.n), key=estimated.__getitem__) == best)
            correlations[k].append(spearman(estimated, exact_traces))
        # DeepConf's mean token confidence from the same top 20, for comparison.
        confidence = [
            statistics.fmean(token_confidence(top[:20].tolist()) for top in tops_of_trace)
            for tops_of_trace in listed
        ]
        confidence_picks.append(max(range(args.n), key=confidence.__getitem__) == best)
        confidence_correlations.append(spearman(confidence, exact_traces))
    summary: dict[str, Any] = {
        "model": "gemma-3-270m-q4_k_m",
        "seed": args.seed,
        "vocab_size": vocab,
        "questions": len(QUESTIONS),
        "n": args.n,
        "tokens": len(exact_tokens),
        "exact_token_certainty_mean": statistics.fmean(exact_tokens),
        "by_k": {
            str(k): {
                "token_shortfall_mean": statistics.fmean(per_k[k]["token"]),
                "token_shortfall_max": max(per_k[k]["token"]),
                "token_relative_shortfall_mean": statistics.fmean(per_k[k]["relative"]),
                "token_pearson": statistics.correlation(per_k[k]["estimate"], exact_tokens),
                "trace_shortfall_mean": statistics.fmean(per_k[k]["trace"]),
                "same_best_of_n": sum(picks[k]) / len(picks[k]),
                "spearman_mean": statistics.fmean(correlations[k]),
            }
            for k in args.k
        },
        "k20_default_vocab_shift_max": max(abs(d) for d in wrong_vocab),
        "deepconf_mean_confidence_k20": {
            "same_best_of_n": sum(confidence_picks) / len(confidence_picks),
            "spearman_mean": statistics.fmean(confidence_correlations),
        },
    }
    print(json.dumps(summary, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
