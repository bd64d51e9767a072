"""The options several commands share, and the argparse types that check their ranges.

``run``, ``label`` and ``fit-adaptive`` talk to the same kinds of endpoint and search
the same way, so they take these options from one place; each numeric option refuses
a senseless value naming its flag. The strategy, verifier and search options are derived
from the declarations on the fields they fill (SearchConfig's and those of its sampling,
step format and budget), and ``config_fields`` reads them back into those fields.
"""

from __future__ import annotations

import argparse
import codecs
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from treesearch.answers.aggregate import AGGREGATORS
from treesearch.engine.budget import BudgetLimits
from treesearch.engine.config import OPTIONS, SearchConfig
from treesearch.engine.options import COUNTS, NOT_NEGATIVES, POSITIVES, Group, Option, Range, declared
from treesearch.engine.policy import SamplingParams
from treesearch.engine.steps import StepFormat
from treesearch.engine.thinking import ThinkTags
from treesearch.errors import ConfigError
from treesearch.problem_files import PRESETS, Fields
from treesearch.problems import Problem, load_problems
from treesearch.strategies import STRATEGIES


def text(value: str) -> str:
    """Command-line text with backslash escapes, so ``--step-delimiter '\\n\\n'`` works."""
    return codecs.decode(value, "unicode_escape")


def think_tags(value: str) -> ThinkTags:
    """``--think-tags OPEN,CLOSE`` (backslash escapes allowed)."""
    try:
        return ThinkTags.parse(text(value))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
# The parts of a SearchConfig the search options fill, by its field's name.
_PARTS: dict[str, type] = {"sampling": SamplingParams, "step": StepFormat, "budget": BudgetLimits}


def _add(parser: argparse.ArgumentParser, name: str, found: Option, default: Any, help: str) -> None:
    """One declared option: a number checked against its range, a name against its choices,
    True/False a switch or one of its two words, a tuple a repeated flag, else free text
    with backslash escapes (or what its ``parse`` reads)."""
    kwargs: dict[str, Any] = {"dest": found.dest(name), "default": default, "help": help}
    choices = _REGISTRIES.get(name) or found.choices
    if found.words is not None:
        kwargs.update(choices=list(found.words), default=found.words[0 if default else 1])
    elif isinstance(default, bool):
        kwargs["action"] = "store_true"
    elif choices is not None:
        kwargs["choices"] = list(choices)
    elif isinstance(default, tuple):
        kwargs.update(action="append", type=found.parse or text, default=list(default))
    else:
        kwargs["type"] = checked(found.range) if found.range else found.parse or text
    if found.metavar is not None:
        kwargs["metavar"] = found.metavar
    parser.add_argument(found.flag, **kwargs)


def add_config_options(parser: argparse.ArgumentParser, group: Group) -> None:
    """SearchConfig's options of ``group``, each as its field declares it (``option`` in
    treesearch.engine.options): its flag, default and help."""
    defaults = SearchConfig()
    for name, found in OPTIONS.items():
        if found.group == group:
            _add(parser, name, found, getattr(defaults, name), found.help)


def add_strategy_options(parser: argparse.ArgumentParser) -> None:
    """Which strategy, how many paths, and each strategy's own settings (``run``, ``serve``)."""
    add_config_options(parser, "strategy")


def add_search_options(
    parser: argparse.ArgumentParser, *, budget: BudgetLimits | None = None, per: str = "problem"
) -> None:
    """What a step is, how it is sampled and checked, and the budget per problem (``budget``
    its defaults, ``per`` what it is spent on: serve's caps are per request). Each is
    declared on the field it fills, but for two that fill none of SearchConfig's: how long
    an answer comparison may take and the completion check, which choose how the backends
    are opened (``runs.backends.BackendSpec``), not how a problem is searched."""
    add_config_options(parser, "search")
    for part in (SamplingParams, StepFormat):
        defaults = part()
        for name, found in declared(part).items():
            _add(parser, name, found, getattr(defaults, name), found.help)
    parser.add_argument(
        "--answer-timeout",
        type=POSITIVE,
        default=2.0,
        help="seconds one answer comparison may take (math-verify, in a worker process)",
    )
    budget = budget or BudgetLimits()
    for name, found in declared(BudgetLimits).items():
        default = getattr(budget, name)
        help = found.help.format(per=per)
        if not isinstance(default, bool):  # a limit: the command's default, in words
            help += " (default: unlimited)" if default is None else f" (default: {default:g})"
        _add(parser, name, found, default, help)
    parser.add_argument(
        "--completion-check",
        choices=["pattern", "judge"],
        default="pattern",
        help="decide a path is finished by answer patterns and EOS, or also by asking the "
        "policy's model (yes/no logprobs)",
    )


def config_fields(args: argparse.Namespace) -> dict[str, Any]:
    """SearchConfig's fields as a command's arguments set them, read as each option is
    declared: every option the command takes (a command without one keeps its default),
    and its sampling, step format and budget. ``policy_table`` is the file's path, which
    the caller reads."""
    given = vars(args)

    def filled(options: Mapping[str, Option]) -> dict[str, Any]:
        return {name: _value(found, given[found.dest(name)])
                for name, found in options.items() if found.dest(name) in given}  # fmt: skip

    fields = filled(OPTIONS)
    for name, part in _PARTS.items():
        fields[name] = part(**filled(declared(part)))
    return fields


def _value(found: Option, given: Any) -> Any:
    """A field's value from its option's: one of two words says True or False, and a
    repeated flag's list is a tuple."""
    if found.words is not None:
        return given == found.words[0]
    return tuple(given) if isinstance(given, list) else given


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
    parser.add_argument("--think-tags", type=think_tags, default=None, metavar="OPEN,CLOSE",
                        help="the tags around a reasoning model's thinking in its text, where no "
                        "reasoning parser sends it apart (default: <think>,</think>)")  # fmt: skip
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


def add_problem_options(
    parser: argparse.ArgumentParser, *, help: str, required: bool = True, prompts: bool = True
) -> None:
    """--problems (``help``, and whether it is ``required``) and how to read it: its fields,
    or a benchmark's preset, and the split of a datasets folder; with ``prompts``, the
    policy's prompt, which a preset sets too (``problems_of`` and ``prompts_of`` read them)."""
    parser.add_argument("--problems", required=required, type=Path, metavar="FILE", help=help)
    presets = "; ".join(f"{name}: {preset.about}" for name, preset in PRESETS.items())
    parser.add_argument("--preset", choices=list(PRESETS), default=None,
                        help=f"a benchmark's fields{' and prompt' if prompts else ''}, each "
                        f"overridden by its own option ({presets}) (default: none)")  # fmt: skip
    parser.add_argument("--id-field", default=None, metavar="NAME",
                        help="the field of a problem's id (default: id; ids from row numbers, "
                        "row-0, row-1, ..., when the file has none)")  # fmt: skip
    parser.add_argument("--question-field", default=None, metavar="NAME",
                        help="the field of the question (default: question, or a ready prompt "
                        "sent as is)")  # fmt: skip
    parser.add_argument("--answer-field", default=None, metavar="NAME",
                        help="the field of the gold answer (default: answer)")  # fmt: skip
    parser.add_argument("--gold-from", choices=["answer", "solution"], default=None,
                        help="the gold is the answer field itself, or what the whole solution in "
                        "it concludes: its last \\boxed{} or GSM8K's #### 42 (default: answer)")  # fmt: skip
    parser.add_argument("--split", default=None, metavar="NAME",
                        help="the split of a datasets folder that holds several (default: test, "
                        "else its only split)")  # fmt: skip
    if prompts:
        parser.add_argument("--system-prompt", type=text, default=None, metavar="TEXT",
                            help="the system message of --api chat (default: the preset's, else "
                            "steps separated by blank lines ending with 'The answer is X.')")  # fmt: skip
        parser.add_argument("--prompt-template", type=text, default=None, metavar="TEXT",
                            help="the prompt of --api completions, with a {question} field "
                            "(default: the preset's, else the same request as the system "
                            "message's)")  # fmt: skip


def problem_fields(args: argparse.Namespace) -> Fields:
    """The fields --preset names, each overridden by its own option."""
    preset = PRESETS[args.preset].fields if args.preset else Fields()
    return Fields(
        id=args.id_field or preset.id,
        question=args.question_field or preset.question,
        answer=args.answer_field or preset.answer,
        gold_from=args.gold_from or preset.gold_from,
    )


def problems_of(args: argparse.Namespace) -> list[Problem]:
    """The problems of --problems, read as the problem options say."""
    return load_problems(args.problems, fields=problem_fields(args), split=args.split)


def prompts_of(args: argparse.Namespace) -> dict[str, str]:
    """The policy's system prompt and template: an option's, else --preset's; none of either
    (a command without them included) leaves the policy's own."""
    preset = PRESETS[args.preset] if getattr(args, "preset", None) else None
    chosen = {
        "system_prompt": getattr(args, "system_prompt", None) or (preset and preset.system_prompt),
        "prompt_template": getattr(args, "prompt_template", None) or (preset and preset.prompt_template),
    }
    return {name: value for name, value in chosen.items() if value}
