"""How a configuration field is declared as an option, once: its flag, help, the range or
choices of its values, and where else it counts.

SearchConfig's fields and those of the parts it holds (SamplingParams, StepFormat,
BudgetLimits) are declared with ``option``. The command line's options, the dataclasses'
own checks, serve's caps and what a policy-table cell may set are read from these
declarations (``declared``), so a new option is one edit. This module sits below every
dataclass it describes and imports none of them.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from treesearch.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Range:
    """The values of a number that make sense, from ``low`` to ``high`` (either end left
    out when ``open_low`` / ``open_high``). Declared once, it is said two ways: the command
    line's "must be a positive integer" and SearchConfig's "n must be positive"."""

    kind: type[int] | type[float]
    low: float
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def holds(self, value: float) -> bool:
        """Whether ``value`` is in range; NaN never is."""
        above = value > self.low if self.open_low else value >= self.low
        if self.high is None:
            return above
        return above and (value < self.high if self.open_high else value <= self.high)

    def _positive(self) -> bool:
        return (self.open_low and self.low == 0) or (self.kind is int and self.low == 1 and not self.open_low)

    def _interval(self) -> str:
        return f"{'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"

    def said(self) -> str:
        """SearchConfig's words: "must be positive", "must be in (0, 1]"."""
        if self.high is not None:
            return f"must be in {self._interval()}"
        if self._positive():
            return "must be positive"
        if self.low == 0 and not self.open_low:
            return "must not be negative"
        return f"must be {'above' if self.open_low else 'at least'} {self.low:g}"

    def what(self) -> str:
        """The command line's words: "a positive integer", "a number in (0, 1]"."""
        noun = "integer" if self.kind is int else "number"
        one = "an" if self.kind is int else "a"
        if self.high is not None:
            if not (self.open_low or self.open_high):
                return f"{one} {noun} from {self.low:g} to {self.high:g}"
            return f"{one} {noun} in {self._interval()}"
        if self._positive():
            return f"a positive {noun}"
        return f"{one} {noun} {'>' if self.open_low else '≥'} {self.low:g}"


COUNTS = Range(int, 1)
POSITIVES = Range(float, 0, open_low=True)
NOT_NEGATIVES = Range(float, 0)
SHARES = Range(float, 0, 1, open_low=True)

# Which options a command shows together: SearchConfig's strategy and verifier options, and
# the search options (how a step is sampled and checked, and the budget) of every part.
Group = Literal["strategy", "verifier", "search"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Option:
    """A field's option: its ``flag`` (``--`` and the field's name, dashed, unless given),
    ``help``, the ``range`` of a number or the ``choices`` of a name, and the ``group`` of
    options it is shown with. ``parse`` reads a command-line value that is not free text (a
    path, a whole number, a regular expression taken as written). Free text takes backslash
    escapes on the command line; a True/False field is a switch, or one of two ``words``
    (True's first: ``--sampling whole|steps``); a tuple field's flag is repeated.

    ``multiplies``: a count that multiplies the upstream work of a search, which serve caps
    with its --max-n. ``cell``: a policy-table cell may set it (M, T_b, the aggregator...)."""

    help: str
    flag: str = ""
    group: Group = "strategy"
    range: Range | None = None
    choices: tuple[str, ...] | None = None
    words: tuple[str, str] | None = None
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    multiplies: bool = False
    cell: bool = False

    def noun(self) -> str:
        """The option's name in words ("stop rule"), for "unknown stop rule 'x'"."""
        return self.flag.removeprefix("--").replace("-", " ")

    def dest(self, name: str) -> str:
        """The option's name outside its dataclass, as a command's argument and a field of
        serve's ``treesearch`` object: a strategy or verifier option keeps its field's
        ``name``; a search option takes its flag's (``budget_tokens``, ``sampling``), since
        a part's field names, such as ``tokens`` or ``whole``, say little outside it."""
        return name if self.group != "search" else self.flag.removeprefix("--").replace("-", "_")


def option(
    default: T,
    help: str,
    *,
    flag: str = "",
    group: Group = "strategy",
    range: Range | None = None,
    choices: tuple[str, ...] | None = None,
    words: tuple[str, str] | None = None,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    multiplies: bool = False,
    cell: bool = False,
) -> T:
    """A dataclass field declared as an option (see ``Option``)."""
    declared = Option(help=help, flag=flag, group=group, range=range, choices=choices, words=words,
                      parse=parse, metavar=metavar, multiplies=multiplies, cell=cell)  # fmt: skip
    chosen: T = field(default=default, metadata={"option": declared})
    return chosen


def declared(cls: type) -> dict[str, Option]:
    """The options of dataclass ``cls`` by field name, in the order of its fields (and of
    --help), each with its flag filled in."""
    found = {}
    for f in dataclasses.fields(cls):
        if "option" in f.metadata:
            given: Option = f.metadata["option"]
            found[f.name] = dataclasses.replace(given, flag=given.flag or "--" + f.name.replace("_", "-"))
    return found


# What a dataclass's checks need of each option with a range or choices: its field's name,
# the range, the choices, whether the field takes None (unset: never checked), and its noun.
Check = tuple[str, Range | None, tuple[str, ...] | None, bool, str]


def checks(cls: type) -> tuple[Check, ...]:
    """The checks of ``cls``'s declared ranges and choices, worked out once (a tuple: they
    run for every configuration serve makes)."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (name, found.range, found.choices, type(None) in typing.get_args(hints[name]), found.noun())
        for name, found in declared(cls).items()
        if found.range is not None or found.choices is not None
    )


def check(instance: object, checked: tuple[Check, ...], what: str = "") -> None:
    """Refuse a value of ``instance`` outside its declared range or choices, naming ``what``
    and the field ("budget tokens must be positive, got 0") or the option ("unknown stop
    rule 'x'"). None where the field does not take it fails the comparison (a TypeError)."""
    for name, bounds, choices, nullable, noun in checked:
        value = getattr(instance, name)
        if value is None and nullable:
            continue
        if bounds is not None and not bounds.holds(value):
            raise ConfigError(f"{what}{name} {bounds.said()}, got {value}")
        if choices is not None and value not in choices:
            raise ConfigError(f"unknown {noun} {value!r}; choose from {', '.join(choices)}")
