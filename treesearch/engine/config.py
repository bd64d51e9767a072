"""SearchConfig: everything that decides how one problem is searched.

Each option is declared once, on its field (``option`` in ``engine.options``: flag, help,
the range or choices of its values), here and on the parts a SearchConfig holds (sampling,
step format, budget). The command line's options, the configuration ``search_config``
builds from them, serve's ``treesearch`` request object and caps, what a policy-table cell
may set, a row's ``config`` and the checks here are all derived from those declarations,
so a new option is one edit.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from treesearch.answers.aggregate import BORDA_POWER
from treesearch.engine.budget import BudgetLimits
from treesearch.engine.options import (
    COUNTS,
    NOT_NEGATIVES,
    POSITIVES,
    SHARES,
    Option,
    Range,
    check,
    checks,
    declared,
    option,
)
from treesearch.engine.policy import SamplingParams
from treesearch.engine.steps import StepFormat
from treesearch.engine.verify import REDUCTIONS
from treesearch.errors import ConfigError
from treesearch.optimal.difficulty import Cell, PolicyTable

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
    stopping once one answer holds ``deepconf_stop`` of the weight (None: never). gen-select
    knocks out its N solutions in groups of ``select_k`` and rsa aggregates ``rsa_k`` of them a
    time for ``rsa_rounds`` rounds, each showing a solution's last ``shown_tokens`` tokens.

    The options are shown by ``--help`` in the order of the fields.
    """

    # The strategy's and aggregator's choices are registries above the engine: the command
    # line adds them, and search() checks them.
    strategy: str = option("majority-vote", "how to search")
    n: int = option(8, "samples / finished paths", range=COUNTS, multiplies=True)
    whole: bool = option(
        True,
        "sample each solution in one request or step by step",
        flag="--sampling",
        group="search",
        words=("whole", "steps"),
    )
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
        None, "how the finished paths' answers make one (default: the strategy's own)", cell=True
    )
    beam_width: int = option(4, "M: children per kept beam", range=COUNTS, multiplies=True, cell=True)
    lookahead: int = option(2, "k: greedy steps valuing a step", range=COUNTS, multiplies=True, cell=True)
    rebase_temperature: float = option(0.1, "REBASE's T_b", range=POSITIVES, cell=True)
    mcts_c: float = option(1.0, "UCT's exploration constant", range=NOT_NEGATIVES, cell=True)
    revision_ratio: float = option(
        1.0,
        "revisions: attempts per chain over chains (N=64 at 0.25: 16 chains of 4)",
        range=POSITIVES,
        cell=True,
    )
    revision_context: int = option(
        4,
        "revisions: earlier attempts of its chain an attempt sees",
        range=COUNTS,
        multiplies=True,
        cell=True,
    )
    revision_template: str = option(
        DEFAULT_REVISION_TEMPLATE,
        "revisions: the prompt's question, with {question} and {attempts} fields (default: the "
        "problem, its chain's attempts, 'Write a new solution that corrects their mistakes.')",
    )
    wave: int = option(8, "early-vote: samples a wave", range=COUNTS, multiplies=True)
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
    stop_window: int = option(4, "early-vote: the window rule's w", range=COUNTS, multiplies=True)
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
    ab_mcts_batch: int = option(
        4, "ab-mcts: selections made before their attempts are scored", range=COUNTS, multiplies=True
    )
    deepconf_warmup: int = option(
        0,
        "deepconf: warm-up traces that set the threshold, the rest streamed and cut below it "
        "(default: 0, offline: filter N finished traces)",
        range=Range(int, 0),
        multiplies=True,
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
        "deepconf: tokens of a window (default: 2,048 for traces that think, else an eighth of "
        "the median trace length, at least 4)",
        range=COUNTS,
    )
    trace_score: str = option(
        "lowest", "deepconf: a trace's confidence from its windows", choices=TRACE_SCORES
    )
    certainty_top_k: int = option(
        20, "self-certainty and borda: top logprobs a token behind its self-certainty", range=COUNTS
    )
    borda_power: float = option(
        BORDA_POWER,
        "borda: p, the votes (N - r + 1)^p of the path ranked r by score (0: majority vote; the "
        "default is the one of Kang et al.'s code)",
        range=NOT_NEGATIVES,
        cell=True,
    )
    policy_table: PolicyTable | None = option(  # noqa: RUF009 (option() is dataclasses.field)
        None,
        "adaptive: the table treesearch fit-adaptive wrote (default: none)",
        parse=Path,
        metavar="T.json",
    )
    n_counts_judgements: bool = option(
        False,
        "filter-vote: N is a number of calls, N/2 generations each judged once (Chen et al.)",
        cell=True,
    )
    select_k: int = option(
        4,
        "gen-select: candidates one selection call reads (a knock-out over groups of K)",
        range=Range(int, 2),
    )
    shown_tokens: int = option(
        1024,
        "gen-select and rsa: a shown solution's tokens at most (a longer one keeps its end)",
        range=COUNTS,
    )
    rsa_k: int = option(4, "rsa: solutions an aggregation prompt shows (K)", range=COUNTS, multiplies=True)
    rsa_rounds: int = option(
        9, "rsa: aggregation rounds T after the first population", range=COUNTS, multiplies=True
    )

    def __post_init__(self) -> None:
        check(self, _CHECKS)
        check(self.sampling, _SAMPLING_CHECKS)  # checked here: SamplingParams is made per request
        if self.n_counts_judgements and self.n < 2:
            raise ConfigError(f"n counting judgements needs at least 2 calls, got {self.n}")
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
            for level, row in self.policy_table.choices.items():
                self.policy_table.choose(level, self.n)  # N within the table's budgets
                for cell in row.values():
                    _check_cell(cell)


# SearchConfig's options by field name, in the order of the fields (and of --help).
OPTIONS: Mapping[str, Option] = declared(SearchConfig)
_CHECKS = checks(SearchConfig)
_SAMPLING_CHECKS = checks(SamplingParams)


def _json_kinds(hint: Any) -> tuple[type, ...]:
    """The types a table's JSON value of a field typed ``hint`` may have: an integer too for
    a float, and never None (a cell sets a value)."""
    kinds = tuple(kind for kind in typing.get_args(hint) or (hint,) if kind is not type(None))
    return (*kinds, int) if float in kinds else kinds


# What a policy-table cell may set (the options declared ``cell``), and the types of each.
_HINTS = typing.get_type_hints(SearchConfig)
CELL_OPTIONS: Mapping[str, tuple[type, ...]] = {
    name: _json_kinds(_HINTS[name]) for name, found in OPTIONS.items() if found.cell
}


def _check_cell(cell: Cell) -> None:
    """Refuse a cell (of a table written by hand) setting what a cell may not, or a value of
    the wrong type (never a bool for a number), before any search runs it."""
    for key, value in cell.options.items():
        kinds = CELL_OPTIONS.get(key)
        if kinds is None:
            raise ConfigError(f"option {key!r} of {cell.strategy}: a cell sets {', '.join(CELL_OPTIONS)}")
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = "number" if len(kinds) > 1 else kinds[0].__name__
            raise ConfigError(f"option {key}={value!r} of {cell.strategy}: {wanted} wanted")
