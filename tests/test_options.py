"""Options are declared once, on the fields they fill (SearchConfig's and those of its
sampling, step format and budget): every declared option reaches the command line, the
configuration and a row's ``config`` (SearchConfig's own, serve's ``treesearch`` object too),
and is refused out of range in the same words everywhere; serve's caps and what a policy-table
cell may set follow the declarations. Nothing here names an option, so a new one is tested as
it is declared."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from treesearch.answers.aggregate import AGGREGATORS
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.cli.main import parser
from treesearch.cli.options import config_fields
from treesearch.cli.setup import search_config
from treesearch.engine.budget import BudgetLimits
from treesearch.engine.config import CELL_OPTIONS, OPTIONS, SearchConfig
from treesearch.engine.options import Option, declared
from treesearch.engine.policy import SamplingParams
from treesearch.engine.steps import StepFormat
from treesearch.errors import ConfigError
from treesearch.optimal.choose import apply_cell
from treesearch.optimal.difficulty import Cell, DifficultyBins, PolicyTable
from treesearch.runs.runner import fingerprint
from treesearch.serve import Caps, RequestError, parse_request, request_config
from treesearch.serve.protocol import SearchOptions
from treesearch.strategies import STRATEGIES

RUN = ["run", "--base-url", "http://127.0.0.1:9/v1", "--problems", "p.jsonl", "--output", "o.jsonl"]
# Set by the server (a file it reads), never by a request, and read from a file by the command.
SERVER_ONLY = {"policy_table"}
CHOICES = {"strategy": list(STRATEGIES), "aggregator": list(AGGREGATORS)}
DEFAULTS = SearchConfig()
# The parts of a SearchConfig whose fields the search options fill, by its field's name.
PARTS: dict[str, type] = {"sampling": SamplingParams, "step": StepFormat, "budget": BudgetLimits}
# Where each declared option lives: SearchConfig itself (None) or one of its parts.
EVERY = [(None, name, found) for name, found in OPTIONS.items()] + [
    (part, name, found) for part, cls in PARTS.items() for name, found in declared(cls).items()
]


def default_of(part: str | None, name: str) -> Any:
    return getattr(DEFAULTS if part is None else getattr(DEFAULTS, part), name)


def other_value(part: str | None, name: str, found: Option) -> Any:
    """A valid value of the option other than its default, found from its declaration."""
    default = default_of(part, name)
    choices = CHOICES.get(name) or found.choices
    if isinstance(default, bool):
        return not default
    if choices is not None:
        return next(c for c in choices if c not in (default, "adaptive"))  # adaptive needs a table
    if found.range is not None:
        bounds = found.range
        if bounds.kind is int:
            return int(bounds.low) + (1 if bounds.low + 1 != default else 2)
        return (bounds.low + bounds.high) / 2 if bounds.high is not None else bounds.low + 2.5
    if isinstance(default, tuple):
        return ("Be brief.",)
    if default is None and found.parse is not None:
        return found.parse("7")  # a whole number, a regular expression
    assert isinstance(default, str), f"{name}: give the option a range, choices or parse"
    return default + " Be brief."


def argv(found: Option, value: Any) -> list[str]:
    """The command-line words that ask for ``value``."""
    if found.words is not None:
        return [found.flag, found.words[0 if value else 1]]
    if isinstance(value, bool):
        return [found.flag]
    if isinstance(value, tuple):
        return [word for item in value for word in (found.flag, item)]
    return [found.flag, str(value)]


def out_of_range(found: Option) -> float:
    assert found.range is not None
    low = found.range.low
    return low if found.range.open_low else low - 1


def config_with(part: str | None, name: str, value: Any) -> SearchConfig:
    if part is None:
        return SearchConfig(**{name: value})
    return SearchConfig(**{part: PARTS[part](**{name: value})})


OPTION_VALUES = [(part, name, other_value(part, name, found)) for part, name, found in EVERY
                 if name not in SERVER_ONLY]  # fmt: skip
RANGED = [(part, name, found) for part, name, found in EVERY if found.range is not None]


def run_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--help"])
    return capsys.readouterr().out


def test_every_option_is_a_flag_of_run_and_a_field_serve_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    shown = run_help(capsys)
    for _, _, found in EVERY:
        assert f"  {found.flag} " in shown or f"  {found.flag}\n" in shown, found.flag
    served = {found.dest(name) for name, found in OPTIONS.items()}
    assert served - set(SearchOptions.model_fields) == SERVER_ONLY


def test_every_field_the_command_line_fills_is_declared() -> None:
    """A part's field is an option, declared where it is, or one the engine sets per request
    (how long a request may be, where it stops, its logprobs: the step format and the strategy
    decide them). Adding a field to a part is then one edit, its declaration; forgetting it
    fails here."""
    undeclared = {
        part: {f.name for f in dataclasses.fields(cls)} - set(declared(cls)) for part, cls in PARTS.items()
    }
    assert undeclared == {"sampling": {"max_tokens", "stop", "logprobs"}, "step": set(), "budget": set()}
    flags = [found.flag for _, _, found in EVERY]
    dests = [found.dest(name) for _, name, found in EVERY]
    assert len(set(flags)) == len(flags) and len(set(dests)) == len(dests)


@pytest.mark.anyio
@pytest.mark.parametrize(("part", "name", "value"), OPTION_VALUES)
async def test_an_option_travels_from_the_command_line_and_a_request_to_the_row(
    make_policy: Callable[..., OpenAIPolicy], part: str | None, name: str, value: Any
) -> None:
    found = OPTIONS[name] if part is None else declared(PARTS[part])[name]
    args = parser().parse_args([*RUN, *argv(found, value)])
    config = search_config(args)
    assert SearchConfig(**{**config_fields(args), "policy_table": None}) == config  # read as declared
    filled = config if part is None else getattr(config, part)
    assert getattr(filled, name) == value

    row = fingerprint(config, make_policy("http://127.0.0.1:9/v1"), None)
    assert (row if part is None else row[part])[name] == json.loads(json.dumps(value))

    if part is None:  # serve's treesearch object: SearchConfig's options, named as outside it
        asked = found.words[0 if value else 1] if found.words else value
        request = parse_request(
            {"model": "fake", "prompt": "x", "treesearch": {found.dest(name): asked}}, chat=False
        )
        served = request_config(request, DEFAULTS, Caps(budget=BudgetLimits()))
        assert getattr(served, name) == value


@pytest.mark.parametrize(("part", "name", "found"), RANGED)
def test_a_value_out_of_range_is_refused_in_the_same_words_everywhere(
    capsys: pytest.CaptureFixture[str], part: str | None, name: str, found: Option
) -> None:
    assert found.range is not None
    bad = out_of_range(found)
    said = found.range.kind(bad)
    with pytest.raises(SystemExit):
        parser().parse_args([*RUN, found.flag, str(said)])
    refused = f"argument {found.flag}: must be {found.range.what()}, got '{said}'"
    assert refused in capsys.readouterr().err
    message = f"{name} {found.range.said()}, got {said}"
    with pytest.raises(ConfigError, match=re.escape(message)):  # the budget's say "budget tokens"
        config_with(part, name, said)
    if part is None:
        request = parse_request({"model": "fake", "prompt": "x", "treesearch": {name: said}}, chat=False)
        with pytest.raises(RequestError, match=re.escape(f"bad treesearch settings: {message}")):
            request_config(request, DEFAULTS, Caps(budget=BudgetLimits()))


@pytest.mark.parametrize("name", [name for name, found in OPTIONS.items() if found.choices is not None])
def test_a_name_outside_the_choices_is_refused_naming_the_option(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    found = OPTIONS[name]
    with pytest.raises(SystemExit):
        parser().parse_args([*RUN, found.flag, "bogus"])
    assert f"argument {found.flag}: invalid choice: 'bogus'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=f"unknown {found.noun()} 'bogus'; choose from"):
        SearchConfig(**{name: "bogus"})


def test_none_is_refused_where_the_field_does_not_take_it() -> None:
    with pytest.raises(TypeError):
        SearchConfig(n=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        StepFormat(max_depth=None)  # type: ignore[arg-type]
    assert SearchConfig(aggregator=None, deepconf_stop=None).deepconf_stop is None
    assert BudgetLimits(tokens=None).tokens is None


COUNTED = [name for name, found in OPTIONS.items() if found.range is not None and found.range.kind is int]


@pytest.mark.parametrize("name", COUNTED)
def test_serve_caps_the_counts_that_multiply_the_work(name: str) -> None:
    """A count declared ``multiplies`` is at most the server's --max-n; another count (a
    window's tokens, top logprobs) is not."""
    caps = Caps(budget=BudgetLimits(), max_n=4)
    request = parse_request({"model": "fake", "prompt": "x", "treesearch": {"n": 4, name: 5}}, chat=False)
    if OPTIONS[name].multiplies:
        with pytest.raises(RequestError, match=f"{name} must be at most 4 \\(the server's --max-n\\), got 5"):
            request_config(request, DEFAULTS, caps)
    else:
        assert getattr(request_config(request, DEFAULTS, caps), name) == 5


def table_setting(options: dict[str, Any]) -> PolicyTable:
    cells = {level: {4: Cell(strategy="beam", n=4, options=options)} for level in range(1, 6)}
    bins = DifficultyBins(kind="predicted", cuts=(0.2, 0.4, 0.6, 0.8))
    return PolicyTable(bins=bins, probe_k=2, choices=cells)


@pytest.mark.parametrize(("name", "found"), list(OPTIONS.items()))
def test_a_cell_sets_the_options_declared_so(name: str, found: Option) -> None:
    value = other_value(None, name, found)
    if not found.cell:
        refused = f"option '{name}' of beam: a cell sets {', '.join(CELL_OPTIONS)}$"
        with pytest.raises(ConfigError, match=refused):
            SearchConfig(strategy="adaptive", n=4, policy_table=table_setting({name: value}))
        return
    config = SearchConfig(strategy="adaptive", n=4, policy_table=table_setting({name: value}))
    assert config.policy_table is not None
    assert getattr(apply_cell(config.policy_table.choose(1, 4), config), name) == value
    wrong = "text" if not isinstance(value, str) else 1
    with pytest.raises(ConfigError, match=f"option {name}={wrong!r} of beam: .* wanted$"):
        SearchConfig(strategy="adaptive", n=4, policy_table=table_setting({name: wrong}))
