"""SearchConfig: everything that decides how one problem is searched.

The command line builds one from its flags and the Python API takes one, so
the two stay one to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from treesearch.budget import BudgetLimits
from treesearch.context import StepFormat
from treesearch.errors import ConfigError
from treesearch.policy import SamplingParams


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchConfig:
    """``n`` is the number of finished paths a strategy aims for (K samples for voting).
    ``whole`` samples each solution in one request instead of step by step.
    ``aggregator`` None takes the strategy's own (majority for voting, best for best-of-n).
    """

    strategy: str = "majority-vote"
    n: int = 8
    whole: bool = True
    sampling: SamplingParams = field(default_factory=SamplingParams)
    step: StepFormat = field(default_factory=StepFormat)
    budget: BudgetLimits = field(default_factory=BudgetLimits)
    reduction: str = "last"
    aggregator: str | None = None

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ConfigError(f"n must be positive, got {self.n}")
        if not 0.0 <= self.sampling.temperature <= 5.0:
            raise ConfigError(f"temperature must be in [0, 5], got {self.sampling.temperature}")
