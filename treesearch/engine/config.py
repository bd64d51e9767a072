"""SearchConfig: everything that decides how one problem is searched.

The command line builds one from its flags and the Python API takes one, so
the two stay one to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from treesearch.engine.budget import BudgetLimits
from treesearch.engine.policy import SamplingParams
from treesearch.engine.steps import StepFormat
from treesearch.engine.verify import check_reduction
from treesearch.errors import ConfigError
from treesearch.optimal.difficulty import PolicyTable

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
    stopping once one answer holds ``deepconf_stop`` of the weight (None: never).
    """

    strategy: str = "majority-vote"
    n: int = 8
    whole: bool = True
    sampling: SamplingParams = field(default_factory=SamplingParams)
    step: StepFormat = field(default_factory=StepFormat)
    budget: BudgetLimits = field(default_factory=BudgetLimits)
    reduction: str = "last"
    aggregator: str | None = None
    beam_width: int = 4
    lookahead: int = 2
    rebase_temperature: float = 0.1
    mcts_c: float = 1.0
    n_counts_judgements: bool = False
    revision_ratio: float = 1.0
    revision_context: int = 4
    revision_template: str = DEFAULT_REVISION_TEMPLATE
    policy_table: PolicyTable | None = None
    wave: int = 8
    stop_rule: str = "beta"
    stop_confidence: float = 0.95
    stop_window: int = 4
    particle_temperature: float = 1.0
    particle_weighting: str = "logit"
    ab_mcts_posterior: str = "gaussian"
    ab_mcts_batch: int = 4
    deepconf_warmup: int = 0
    deepconf_keep: float = 0.9
    deepconf_top_k: int = 20
    deepconf_stop: float | None = 0.95
    confidence_window: int | None = None
    trace_score: str = "lowest"

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ConfigError(f"n must be positive, got {self.n}")
        if self.n_counts_judgements and self.n < 2:
            raise ConfigError(f"n counting judgements needs at least 2 calls, got {self.n}")
        if self.beam_width <= 0:
            raise ConfigError(f"beam_width must be positive, got {self.beam_width}")
        if self.lookahead < 0:
            raise ConfigError(f"lookahead must not be negative, got {self.lookahead}")
        if self.strategy == "lookahead" and self.lookahead == 0:
            raise ConfigError("strategy 'lookahead' needs lookahead of at least 1 (0 is beam search)")
        if self.rebase_temperature <= 0:
            raise ConfigError(f"rebase_temperature must be positive, got {self.rebase_temperature}")
        if self.mcts_c < 0:
            raise ConfigError(f"mcts_c must not be negative, got {self.mcts_c}")
        if not 0.0 <= self.sampling.temperature <= 5.0:
            raise ConfigError(f"temperature must be in [0, 5], got {self.sampling.temperature}")
        if not 0.0 < self.sampling.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.sampling.top_p}")
        if self.wave <= 0 or self.stop_window <= 0 or self.ab_mcts_batch <= 0:
            raise ConfigError("wave, stop_window and ab_mcts_batch must be positive")
        if self.stop_rule not in STOP_RULES:
            raise ConfigError(f"unknown stop rule {self.stop_rule!r}; choose from {', '.join(STOP_RULES)}")
        if not 0.5 < self.stop_confidence < 1.0:
            raise ConfigError(f"stop_confidence must be in (0.5, 1), got {self.stop_confidence}")
        if self.particle_temperature <= 0:
            raise ConfigError(f"particle_temperature must be positive, got {self.particle_temperature}")
        if self.particle_weighting not in PARTICLE_WEIGHTINGS:
            raise ConfigError(
                f"unknown particle weighting {self.particle_weighting!r}; "
                f"choose from {', '.join(PARTICLE_WEIGHTINGS)}"
            )
        if self.ab_mcts_posterior not in POSTERIORS:
            raise ConfigError(
                f"unknown posterior {self.ab_mcts_posterior!r}; choose from {', '.join(POSTERIORS)}"
            )
        if self.deepconf_warmup < 0 or (self.deepconf_warmup and self.deepconf_warmup >= self.n):
            raise ConfigError(
                f"deepconf_warmup must be from 0 (offline) to n - 1, got {self.deepconf_warmup}"
            )
        if not 0.0 < self.deepconf_keep <= 1.0:
            raise ConfigError(f"deepconf_keep must be in (0, 1], got {self.deepconf_keep}")
        if self.deepconf_stop is not None and not 0.5 < self.deepconf_stop <= 1.0:
            raise ConfigError(f"deepconf_stop must be in (0.5, 1], got {self.deepconf_stop}")
        if self.deepconf_top_k < 2 or (self.confidence_window is not None and self.confidence_window < 1):
            raise ConfigError("deepconf_top_k must be at least 2 and confidence_window positive")
        if self.trace_score not in TRACE_SCORES:
            raise ConfigError(
                f"unknown trace score {self.trace_score!r}; choose from {', '.join(TRACE_SCORES)}"
            )
        if self.revision_ratio <= 0:
            raise ConfigError(f"revision_ratio must be positive, got {self.revision_ratio}")
        if self.revision_context <= 0:
            raise ConfigError(f"revision_context must be positive, got {self.revision_context}")
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
        check_reduction(self.reduction)
