"""The options several commands share, and the argparse types that check their ranges.

``run``, ``label`` and ``fit-adaptive`` talk to the same kinds of endpoint and search
the same way, so they take these options from one place; each numeric option refuses
a senseless value naming its flag. The strategy options are SearchConfig's, derived from
the declarations on its fields.
"""

from __future__ import annotations

import argparse
import codecs
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from treesearch.answers.aggregate import AGGREGATORS
from treesearch.engine.budget import BudgetLimits
from treesearch.engine.config import COUNTS, NOT_NEGATIVES, OPTIONS, POSITIVES, SHARES, Range, SearchConfig
from treesearch.strategies import STRATEGIES


def text(value: str) -> str:
    """Command-line text with backslash escapes, so ``--step-delimiter '\\n\\n'`` works."""
    return codecs.decode(value, "unicode_escape")


def number(kind: Callable[[str], float], what: str, ok: Callable[[float], bool]) -> Callable[[str], Any]:
    """An argparse type for a number that makes sense (``ok``), so a senseless value is
    refused naming its flag: "argument --beam-width: must be a positive integer, got '0'"."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not ok(value):  # NaN fails every bound
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def checked(bounds: Range) -> Callable[[str], Any]:
    """An argparse type for a number in ``bounds``, saying the range in its words."""
    return number(bounds.kind, bounds.what(), bounds.holds)


COUNT = checked(COUNTS)
INDEX = checked(Range(int, 0))
POSITIVE = checked(POSITIVES)
NOT_NEGATIVE = checked(NOT_NEGATIVES)
TEMPERATURE = checked(Range(float, 0, 5))
PROBABILITY = checked(SHARES)


_SUFFIXES = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


def parameters(value: str) -> float:
    """A model size: a number, or one with K, M, B or T after it (``270M``, ``7B``)."""
    text = value.strip().upper()
    scale = _SUFFIXES.get(text[-1:], 1.0)
    try:
        size = float(text[:-1] if text[-1:] in _SUFFIXES else text)
    except ValueError:
        size = math.nan
    if not size * scale > 0 or math.isinf(size):
        raise argparse.ArgumentTypeError(
            f"must be a positive number of parameters such as 7B or 270M, got {value!r}"
        )
    return size * scale


def add_size_options(parser: argparse.ArgumentParser) -> None:
    """Model sizes, for inference FLOPs (2 × parameters × tokens) in rows and summaries."""
    parser.add_argument("--model-params", type=parameters, default=None, metavar="P",
                        help="the policy model's parameters (7B, 270M, 1.5e9): rows then carry "
                        "inference FLOPs (default: none)")  # fmt: skip
    parser.add_argument("--prm-params", type=parameters, default=None, metavar="P",
                        help="the verifier model's parameters (default: --model-params, right when "
                        "the verifier is the policy's own model)")  # fmt: skip


# The choices of the options whose registries sit above SearchConfig, which cannot import them.
_REGISTRIES = {"strategy": list(STRATEGIES), "aggregator": list(AGGREGATORS)}


def add_config_options(parser: argparse.ArgumentParser, group: str) -> None:
    """SearchConfig's options of ``group``, each as its field declares it (``option`` in
    treesearch.engine.config): its flag, default and help; a number checked against its
    range, a name against its choices, free text with backslash escapes; True/False a switch."""
    defaults = SearchConfig()
    for name, declared in OPTIONS.items():
        if declared.group != group:
            continue
        default = getattr(defaults, name)
        kwargs: dict[str, Any] = {"dest": name, "default": default, "help": declared.help}
        choices = _REGISTRIES.get(name) or declared.choices
        if isinstance(default, bool):
            kwargs["action"] = "store_true"
        elif choices is not None:
            kwargs["choices"] = list(choices)
        else:
            kwargs["type"] = checked(declared.range) if declared.range else declared.parse or text
        if declared.metavar is not None:
            kwargs["metavar"] = declared.metavar
        parser.add_argument(declared.flag, **kwargs)


def add_strategy_options(parser: argparse.ArgumentParser) -> None:
    """Which strategy, how many paths, and each strategy's own settings (``run``, ``serve``)."""
    add_config_options(parser, "strategy")


def add_search_options(
    parser: argparse.ArgumentParser, *, budget: BudgetLimits | None = None, per: str = "problem"
) -> None:
    """What a step is, how it is sampled and checked, and the budget per problem (``budget``
    its defaults, ``per`` what it is spent on: serve's caps are per request)."""
    parser.add_argument(
        "--sampling",
        choices=["whole", "steps"],
        default="whole",
        help="sample each solution in one request or step by step",
    )
    parser.add_argument("--temperature", type=TEMPERATURE, default=0.8, help="sampling temperature")
    parser.add_argument("--top-p", type=PROBABILITY, default=1.0, help="nucleus sampling's probability mass")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: none)")
    parser.add_argument("--max-step-tokens", type=COUNT, default=256, help="tokens of one step")
    parser.add_argument(
        "--max-tokens", type=COUNT, default=1024, help="tokens of a whole solution sampled in one request"
    )
    parser.add_argument(
        "--step-delimiter",
        type=text,
        default="\n\n",
        help="the text that ends a step, backslash escapes allowed (default: '\\n\\n')",
    )
    parser.add_argument(
        "--stop",
        type=text,
        action="append",
        default=[],
        help="a further stop string that ends a solution, repeatable (default: none)",
    )
    parser.add_argument(
        "--max-depth",
        type=COUNT,
        default=40,
        help="steps of a path; the last asks for the rest of the solution",
    )
    parser.add_argument(
        "--answer-pattern",
        default=None,
        metavar="REGEX",
        help="how a solution states its final answer (group 'answer', else group 1) (default: "
        "\\boxed{} and 'The answer is X.')",
    )
    parser.add_argument(
        "--answer-timeout",
        type=POSITIVE,
        default=2.0,
        help="seconds one answer comparison may take (math-verify, in a worker process)",
    )
    budget = budget or BudgetLimits()
    for flag, kind, default in (("tokens", COUNT, budget.tokens), ("requests", COUNT, budget.requests),
                                ("seconds", POSITIVE, budget.deadline_s)):  # fmt: skip
        shown = "unlimited" if default is None else f"{default:g}"
        parser.add_argument(f"--budget-{flag}", type=kind, default=default,
                            help=f"{flag} per {per} (default: {shown})")  # fmt: skip
    parser.add_argument(
        "--budget-count",
        choices=["total", "completion"],
        default="total",
        help="count prompt+completion tokens (total) or completion only",
    )
    parser.add_argument(
        "--completion-check",
        choices=["pattern", "judge"],
        default="pattern",
        help="decide a path is finished by answer patterns and EOS, or also by asking the "
        "policy's model (yes/no logprobs)",
    )


def add_verifier_options(parser: argparse.ArgumentParser) -> None:
    """Which verifier scores paths, where it is served, and how its step scores reduce."""
    parser.add_argument(
        "--verifier",
        default=None,
        metavar="KIND",
        help="vllm-pooling, logprob, judge, or MODULE:FUNCTION (a Python function "
        "(problem, steps) -> score(s)) (default: vllm-pooling when --prm-url is given, else none)",
    )
    parser.add_argument("--prm-url", action="append", default=None,
                        help="the verifier's server; repeat it for a pool of replicas (default: "
                        "--base-url)")  # fmt: skip
    parser.add_argument(
        "--prm-api-key", default=None, help="the key sent to --prm-url (default: the policy's key)"
    )
    parser.add_argument("--prm-model", default=None, help="the verifier's model (default: the policy's)")
    parser.add_argument("--prm-step-tag", type=text, default="<extra_0>", help="the PRM's step tag")
    parser.add_argument(
        "--prm-good-column", type=INDEX, default=1, help="the column of P(good step) in the PRM's output"
    )
    add_config_options(parser, "verifier")


def add_endpoint_options(
    parser: argparse.ArgumentParser, *, key_flag: str = "--api-key", timeout_flag: str = "--timeout"
) -> None:
    """Where the policy comes from: an OpenAI-compatible server or the embedded model.
    ``key_flag`` and ``timeout_flag`` name the options of the key sent to it and of the
    seconds an answer may take (``serve`` takes --api-key for its own clients' keys)."""
    parser.add_argument("--backend", choices=["openai", "llamacpp"], default="openai",
                        help="an OpenAI-compatible server (--base-url) or the embedded "
                        "llama.cpp model (needs the local extra)")  # fmt: skip
    parser.add_argument("--base-url", action="append", default=None,
                        help="the server's OpenAI-compatible base URL, e.g. http://localhost:8000/v1; "
                        "repeat it for a pool of replicas of one model (default: none)")  # fmt: skip
    parser.add_argument("--pool-file", type=Path, default=None,
                        help="a file of base URLs, one a line, added to --base-url's")  # fmt: skip
    parser.add_argument("--model", default=None, help="the model to ask for, which the server must "
                        "list at /models (default: the only model it lists)")  # fmt: skip
    parser.add_argument("--model-file", default=None, type=Path,
                        help="a GGUF file for --backend llamacpp (default: the bundled Gemma "
                        "3 270M)")  # fmt: skip
    parser.add_argument(
        "--api", choices=["completions", "chat"], default="completions", help="the endpoint's API"
    )
    parser.add_argument(key_flag, dest="api_key", default=None, help="the key sent to the server, "
                        "never printed or logged (default: $OPENAI_API_KEY)")  # fmt: skip
    parser.add_argument(timeout_flag, dest="timeout_s", type=POSITIVE, default=600.0,
                        help="seconds one request to the server may take before it is retried "
                        "(default: 600)")  # fmt: skip
    parser.add_argument("--concurrency", type=COUNT, default=256, help="requests in flight to the endpoint")
    parser.add_argument("--problems-in-flight", type=COUNT, default=None,
                        help="problems searched at once, so finished rows accumulate steadily "
                        "(default: 32; 8 for --backend llamacpp, whose batch gains little "
                        "beyond that on a CPU)")  # fmt: skip
