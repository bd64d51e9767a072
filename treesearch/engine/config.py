"""SearchConfig: everything that decides how one problem is searched.

Each strategy option is declared once, on its field (``option``: flag, help, the range or
choices of its values). The command line's options, the configuration ``search_config``
builds from them, serve's ``treesearch`` request object, a row's ``config`` and the checks
here are all derived from those declarations, so a new option is one edit.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from treesearch.engine.budget import BudgetLimits
from treesearch.engine.policy import SamplingParams
from treesearch.engine.steps import StepFormat
from treesearch.engine.verify import REDUCTIONS
from treesearch.errors import ConfigError
from treesearch.optimal.difficulty import PolicyTable

T = TypeVar("T")

# A revision's question: the problem, then the earlier attempts of its chain.
DEFAULT_REVISION_TEMPLATE = (
    "{question}\n\nEarlier attempts at this problem, which may contain mistakes:\n\n{attempts}\n\n"
    "Write a new solution that corrects their mistakes."
)

# early-vote's stopping rules, particle weights, AB-MCTS's posteriors, DeepConf's trace scores
# (see their modules).
STOP_RULES = ("beta", "window")
PARTICLE_WEIGHTINGS = ("logit", "probability")
POSTERIORS = ("gaussian", "beta")
TRACE_SCORES = ("lowest", "tail", "bottom10", "mean")


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


@dataclass(frozen=True, kw_only=True, slots=True)
class Option:
    """A SearchConfig field's option: its ``flag`` (``--`` and the field's name, dashed,
    unless given), ``help``, the ``range`` of a number or the ``choices`` of a name, and the
    ``group`` of options it is shown with. ``parse`` reads a command-line value that is
    neither a number nor text (a path). Free text takes backslash escapes on the command
    line; a True/False field is a switch."""

    help: str
    flag: str = ""
    group: Literal["strategy", "verifier"] = "strategy"
    range: Range | None = None
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None

    def noun(self) -> str:
        """The option's name in words ("stop rule"), for "unknown stop rule 'x'"."""
        return self.flag.removeprefix("--").replace("-", " ")


def option(
    default: T,
    help: str,
    *,
    flag: str = "",
    group: Literal["strategy", "verifier"] = "strategy",
    range: Range | None = None,
    choices: tuple[str, ...] | None = None,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
) -> T:
    """A SearchConfig field declared as an option (see ``Option``)."""
    declared = Option(
        help=help, flag=flag, group=group, range=range, choices=choices, parse=parse, metavar=metavar
    )
    chosen: T = field(default=default, metadata={"option": declared})
    return chosen


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchConfig:
    """``n`` is the number of finished paths a strategy aims for (K samples for voting, N for
    beam, DVTS and REBASE; MCTS's number of iterations). ``whole`` samples each solution in
    one request instead of step by step (sampling strategies only). ``beam_width`` is M:
    children per kept beam, per DVTS subtree step and per MCTS expansion. ``lookahead`` is
    k, the greedy steps that value a candidate in lookahead search. ``aggregator`` None
    takes the strategy's own. ``n_counts_judgements`` makes filter-vote's ``n`` a number of
    calls as Chen et al. count them: n/2 generations, each judged once. early-vote samples
    up to ``n`` in waves of ``wave`` and stops by ``stop_rule`` (``stop_confidence`` for
    beta, ``stop_window`` for window); particle-filter weights by softmax(logit(score) /
    ``particle_temperature``) (``particle_weighting`` "probability": softmax(score / T));
    AB-MCTS makes ``n`` attempts, ``ab_mcts_batch`` at a time, with ``ab_mcts_posterior``
    posteriors. DeepConf keeps the share ``deepconf_keep`` of its
    traces by confidence (``trace_score`` over windows of ``confidence_window`` tokens, from
    ``deepconf_top_k`` top logprobs), online after ``deepconf_warmup`` traces (0: offline),
    stopping once one answer holds ``deepconf_stop`` of the weight (None: never).

    The options are shown by ``--help`` in the order of the fields.
    """

    # The strategy's and aggregator's choices are registries above the engine: the command
    # line adds them, and search() checks them.
    strategy: str = option("majority-vote", "how to search")
    n: int = option(8, "samples / finished paths", range=COUNTS)
    whole: bool = True
    sampling: SamplingParams = field(default_factory=SamplingParams)
    step: StepFormat = field(default_factory=StepFormat)
    budget: BudgetLimits = field(default_factory=BudgetLimits)
    reduction: str = option(
        "last",
        "one score from a path's step scores",
        flag="--score-reduction",
        group="verifier",
        choices=tuple(REDUCTIONS),
    )
    aggregator: str | None = option(
        None, "how the finished paths' answers make one (default: the strategy's own)"
    )
    beam_width: int = option(4, "M: children per kept beam", range=COUNTS)
    lookahead: int = option(2, "k: greedy steps valuing a step", range=COUNTS)
    rebase_temperature: float = option(0.1, "REBASE's T_b", range=POSITIVES)
    mcts_c: float = option(1.0, "UCT's exploration constant", range=NOT_NEGATIVES)
    revision_ratio: float = option(
        1.0,
        "revisions: attempts per chain over chains (N=64 at 0.25: 16 chains of 4)",
        range=POSITIVES,
    )
    revision_context: int = option(
        4, "revisions: earlier attempts of its chain an attempt sees", range=COUNTS
    )
    revision_template: str = option(
        DEFAULT_REVISION_TEMPLATE,
        "revisions: the prompt's question, with {question} and {attempts} fields (default: the "
        "problem, its chain's attempts, 'Write a new solution that corrects their mistakes.')",
    )
    wave: int = option(8, "early-vote: samples a wave", range=COUNTS)
    stop_rule: str = option(
        "beta",
        "early-vote: stop when P(the leader is the majority) reaches --stop-confidence (beta), "
        "or when the last --stop-window answers agree (window)",
        choices=STOP_RULES,
    )
    stop_confidence: float = option(
        0.95,
        "early-vote: the beta rule's level, in (0.5, 1)",
        range=Range(float, 0.5, 1, open_low=True, open_high=True),
    )
    stop_window: int = option(4, "early-vote: the window rule's w", range=COUNTS)
    particle_temperature: float = option(
        1.0,
        "particle-filter: T of the weights softmax(logit(score) / T), or softmax(score / T) "
        "under --particle-weighting probability",
        range=POSITIVES,
    )
    particle_weighting: str = option(
        "logit",
        "particle-filter: weigh by the score's logit, as Puri et al.'s code does (scores clipped "
        "to [ε, 1 − ε]), or by the score itself, softmax(score / T)",
        choices=PARTICLE_WEIGHTINGS,
    )
    ab_mcts_posterior: str = option("gaussian", "ab-mcts: the posterior over scores", choices=POSTERIORS)
    ab_mcts_batch: int = option(4, "ab-mcts: selections made before their attempts are scored", range=COUNTS)
    deepconf_warmup: int = option(
        0,
        "deepconf: warm-up traces that set the threshold, the rest streamed and cut below it "
        "(default: 0, offline: filter N finished traces)",
        range=Range(int, 0),
    )
    deepconf_keep: float = option(
        0.9, "deepconf: η, the share of traces kept by confidence (0.1 or 0.9)", range=SHARES
    )
    deepconf_top_k: int = option(
        20, "deepconf: top logprobs a token behind its confidence", range=Range(int, 2)
    )
    deepconf_stop: float | None = option(
        0.95,
        "deepconf online: stop once one answer holds this share of the weight",
        range=Range(float, 0.5, 1, open_low=True),
    )
    confidence_window: int | None = option(
        None,
        "deepconf: tokens of a window (default: an eighth of the median trace length, at least 4)",
        range=COUNTS,
    )
    trace_score: str = option(
        "lowest", "deepconf: a trace's confidence from its windows", choices=TRACE_SCORES
    )
    policy_table: PolicyTable | None = option(  # noqa: RUF009 (option() is dataclasses.field)
        None,
        "adaptive: the table treesearch fit-adaptive wrote (default: none)",
        parse=Path,
        metavar="T.json",
    )
    n_counts_judgements: bool = option(
        False, "filter-vote: N is a number of calls, N/2 generations each judged once (Chen et al.)"
    )

    def __post_init__(self) -> None:
        for name, bounds, choices, nullable in _CHECKED:
            value = getattr(self, name)
            if value is None and nullable:
                continue
            if bounds is not None and not bounds.holds(value):
                raise ConfigError(f"{name} {bounds.said()}, got {value}")
            if choices is not None and value not in choices:
                noun = OPTIONS[name].noun()
                raise ConfigError(f"unknown {noun} {value!r}; choose from {', '.join(choices)}")
        if self.n_counts_judgements and self.n < 2:
            raise ConfigError(f"n counting judgements needs at least 2 calls, got {self.n}")
        if not 0.0 <= self.sampling.temperature <= 5.0:
            raise ConfigError(f"temperature must be in [0, 5], got {self.sampling.temperature}")
        if not 0.0 < self.sampling.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.sampling.top_p}")
        if self.deepconf_warmup and self.deepconf_warmup >= self.n:
            raise ConfigError(
                f"deepconf_warmup must be from 0 (offline) to n - 1, got {self.deepconf_warmup}"
            )
        for field_name in ("{question}", "{attempts}"):
            if field_name not in self.revision_template:
                raise ConfigError(f"the revision template needs a {field_name} field")
        if self.strategy == "adaptive":
            if self.policy_table is None:
                raise ConfigError(
                    "strategy 'adaptive' needs a policy table (treesearch fit-adaptive writes one)"
                )
            if self.aggregator is not None:
                raise ConfigError(
                    "adaptive aggregates by the rule of the strategy its table chose; drop the aggregator"
                )
            for level in self.policy_table.choices:
                self.policy_table.choose(level, self.n)  # N within the table's budgets


def _options() -> dict[str, Option]:
    declared = {}
    for f in dataclasses.fields(SearchConfig):
        if "option" in f.metadata:
            found: Option = f.metadata["option"]
            declared[f.name] = dataclasses.replace(found, flag=found.flag or "--" + f.name.replace("_", "-"))
    return declared


# SearchConfig's options by field name, in the order of the fields (and of --help).
OPTIONS = _options()
# What __post_init__ checks of each option with a range or choices, and whether it may be None
# (the aggregator and deepconf_stop may: unset is the strategy's own, no early stop); a tuple,
# as it runs for every request serve takes.
_HINTS = typing.get_type_hints(SearchConfig)
_CHECKED = tuple(
    (name, declared.range, declared.choices, type(None) in typing.get_args(_HINTS[name]))
    for name, declared in OPTIONS.items()
    if declared.range is not None or declared.choices is not None
)
