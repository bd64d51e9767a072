"""SearchConfig's options are declared once, on its fields: every declared option reaches the
command line, serve's ``treesearch`` object and a row's ``config``, and is refused out of range
in the same words everywhere. Nothing here names an option, so a new one is tested as it is
declared."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from treesearch.answers.aggregate import AGGREGATORS
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.cli.main import parser
from treesearch.cli.setup import search_config
from treesearch.engine.budget import BudgetLimits
from treesearch.engine.config import OPTIONS, Option, SearchConfig
from treesearch.errors import ConfigError
from treesearch.runs.runner import fingerprint
from treesearch.serve import Caps, RequestError, parse_request, request_config
from treesearch.serve.protocol import SearchOptions
from treesearch.strategies import STRATEGIES

RUN = ["run", "--base-url", "http://127.0.0.1:9/v1", "--problems", "p.jsonl", "--output", "o.jsonl"]
# Set by the server (a file it reads), never by a request, and read from a file by the command.
SERVER_ONLY = {"policy_table"}
CHOICES = {"strategy": list(STRATEGIES), "aggregator": list(AGGREGATORS)}
DEFAULTS = SearchConfig()


def other_value(name: str, declared: Option) -> Any:
    """A valid value of the option other than its default, found from its declaration."""
    default = getattr(DEFAULTS, name)
    choices = CHOICES.get(name) or declared.choices
    if isinstance(default, bool):
        return not default
    if choices is not None:
        return next(c for c in choices if c not in (default, "adaptive"))  # adaptive needs a table
    if declared.range is not None:
        bounds = declared.range
        if bounds.kind is int:
            return int(bounds.low) + (1 if bounds.low + 1 != default else 2)
        return (bounds.low + bounds.high) / 2 if bounds.high is not None else bounds.low + 2.5
    assert isinstance(default, str), f"{name}: give the option a range or choices"
    return default + " Be brief."


def out_of_range(declared: Option) -> float:
    assert declared.range is not None
    low = declared.range.low
    return low if declared.range.open_low else low - 1


OPTION_VALUES = [(name, other_value(name, declared)) for name, declared in OPTIONS.items()
                 if name not in SERVER_ONLY]  # fmt: skip
RANGED = [(name, declared) for name, declared in OPTIONS.items() if declared.range is not None]


def run_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--help"])
    return capsys.readouterr().out


def test_every_option_is_a_flag_of_run_and_a_field_serve_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    shown = run_help(capsys)
    for declared in OPTIONS.values():
        assert f"  {declared.flag} " in shown or f"  {declared.flag}\n" in shown, declared.flag
    assert set(OPTIONS) - set(SearchOptions.model_fields) == SERVER_ONLY


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "value"), OPTION_VALUES)
async def test_an_option_travels_from_the_command_line_and_a_request_to_the_row(
    make_policy: Callable[..., OpenAIPolicy], name: str, value: Any
) -> None:
    flag = OPTIONS[name].flag
    asked = [*RUN, flag] if isinstance(value, bool) else [*RUN, flag, str(value)]
    config = search_config(parser().parse_args(asked))
    assert getattr(config, name) == value

    request = parse_request({"model": "fake", "prompt": "x", "treesearch": {name: value}}, chat=False)
    served = request_config(request, DEFAULTS, Caps(budget=BudgetLimits()))
    assert getattr(served, name) == value

    row = fingerprint(config, make_policy("http://127.0.0.1:9/v1"), None)
    assert row[name] == value


@pytest.mark.parametrize(("name", "declared"), RANGED)
def test_a_value_out_of_range_is_refused_in_the_same_words_everywhere(
    capsys: pytest.CaptureFixture[str], name: str, declared: Option
) -> None:
    assert declared.range is not None
    bad = out_of_range(declared)
    said = declared.range.kind(bad)
    with pytest.raises(SystemExit):
        parser().parse_args([*RUN, declared.flag, str(said)])
    refused = f"argument {declared.flag}: must be {declared.range.what()}, got '{said}'"
    assert refused in capsys.readouterr().err
    message = f"{name} {declared.range.said()}, got {said}"
    with pytest.raises(ConfigError, match=re.escape(message)):
        SearchConfig(**{name: said})
    request = parse_request({"model": "fake", "prompt": "x", "treesearch": {name: said}}, chat=False)
    with pytest.raises(RequestError, match=re.escape(f"bad treesearch settings: {message}")):
        request_config(request, DEFAULTS, Caps(budget=BudgetLimits()))


@pytest.mark.parametrize(
    "name", [name for name, declared in OPTIONS.items() if declared.choices is not None]
)
def test_a_name_outside_the_choices_is_refused_naming_the_option(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    declared = OPTIONS[name]
    with pytest.raises(SystemExit):
        parser().parse_args([*RUN, declared.flag, "bogus"])
    assert f"argument {declared.flag}: invalid choice: 'bogus'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=f"unknown {declared.noun()} 'bogus'; choose from"):
        SearchConfig(**{name: "bogus"})


def test_none_is_refused_where_the_field_does_not_take_it() -> None:
    with pytest.raises(TypeError):
        SearchConfig(n=None)  # type: ignore[arg-type]
    assert SearchConfig(aggregator=None, deepconf_stop=None).deepconf_stop is None
