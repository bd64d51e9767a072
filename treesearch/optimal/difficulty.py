"""Difficulty and the compute-optimal policy table (Snell et al.).

A problem's difficulty comes from a cheap probe of k samples: the *oracle* kind is
the fraction of them that reach the gold answer, the *predicted* kind the mean of
their final verifier scores (no gold needed); a sample without an answer counts 0.
Five quantile bins fitted on a calibration set turn a value into a level, 1 the
easiest (the highest values) to 5 the hardest, and apply to any other set. The
policy table holds, per level and budget, the strategy that did best on the
calibration set; ``fit-adaptive`` writes it as JSON and ``--strategy adaptive``
reads it back. Plain data: no I/O here but reading and writing that file.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from treesearch.answers.confidence import percentile
from treesearch.errors import ConfigError

KINDS = ("predicted", "oracle")
LEVELS = 5
_VERSION = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class DifficultyBins:
    """Quantile bins of a difficulty value: ``cuts`` are the 20/40/60/80% quantiles of the
    values they were fitted on."""

    kind: str
    cuts: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown difficulty kind {self.kind!r}; choose {' or '.join(KINDS)}")
        if len(self.cuts) != LEVELS - 1 or list(self.cuts) != sorted(self.cuts):
            raise ConfigError(
                f"difficulty bins need {LEVELS - 1} ascending cut points, got {list(self.cuts)}"
            )

    @classmethod
    def fit(cls, values: Sequence[float], kind: str) -> DifficultyBins:
        """The bins of ``values`` (at least one)."""
        if not values:
            raise ConfigError("fitting difficulty bins needs at least one problem")
        ordered = sorted(values)
        cuts = tuple(percentile(ordered, q / LEVELS) for q in range(1, LEVELS))
        return cls(kind=kind, cuts=cuts)

    def level(self, value: float) -> int:
        """1 (easiest: the most right, or the highest scores) to 5 (hardest). A value on a cut
        goes to the easier side, so problems tied on a value share a level."""
        return LEVELS - bisect.bisect_right(self.cuts, value)


@dataclass(frozen=True, kw_only=True, slots=True)
class Cell:
    """One choice: a strategy, its N, the SearchConfig fields it sets (``options``: M, T_b,
    the revision ratio, the aggregator), and how it did on its calibration problems. Which
    fields a cell may set is declared on SearchConfig's, which checks a table's cells (this
    module sits below SearchConfig, which holds a table)."""

    strategy: str
    n: int
    options: Mapping[str, Any] = field(default_factory=dict)
    accuracy: float = 0.0
    tokens: float = 0.0

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ConfigError(f"a cell's N must be positive, got {self.n}")

    def label(self) -> str:
        shown = ", ".join(f"{key}={value}" for key, value in sorted(self.options.items()))
        return f"{self.strategy}({shown})" if shown else self.strategy


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicyTable:
    """Per difficulty level (1-5) and budget N, the cell to run; the probe that measures a
    problem's difficulty (``probe_k`` whole samples); and each budget's cross-validated
    accuracy of choosing this way (held-out folds, bins and choices refitted per fold);
    ``fitted_with``, what it was fitted on (the model, the verifier, how steps were sampled),
    which a run on another can be warned of."""

    bins: DifficultyBins
    probe_k: int
    choices: Mapping[int, Mapping[int, Cell]]
    cv_accuracy: Mapping[int, float] = field(default_factory=dict)
    fitted_with: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.probe_k <= 0:
            raise ConfigError(f"the probe needs at least one sample, got {self.probe_k}")
        missing = [level for level in range(1, LEVELS + 1) if not self.choices.get(level)]
        if missing:
            raise ConfigError(f"the policy table has no choice for difficulty levels {missing}")

    @property
    def budgets(self) -> list[int]:
        return sorted({budget for row in self.choices.values() for budget in row})

    def choose(self, level: int, n: int) -> Cell:
        """The cell for ``level`` at the largest budget the table has that is at most ``n``."""
        row = self.choices[level]
        fitting = [budget for budget in row if budget <= n]
        if not fitting:
            raise ConfigError(
                f"the policy table's budgets are {', '.join(map(str, sorted(row)))}; N={n} is below them"
            )
        return row[max(fitting)]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "difficulty": self.bins.kind,
            "cuts": list(self.bins.cuts),
            "probe_k": self.probe_k,
            "cv_accuracy": {str(budget): value for budget, value in sorted(self.cv_accuracy.items())},
            "fitted_with": dict(self.fitted_with),
            "choices": {
                str(level): {str(budget): asdict(cell) for budget, cell in sorted(row.items())}
                for level, row in sorted(self.choices.items())
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> PolicyTable:
        """A table from its JSON; ConfigError naming what is wrong."""
        try:
            if data.get("version") != _VERSION:
                raise ConfigError(f"version {data.get('version')!r}, expected {_VERSION}")
            return cls(
                bins=DifficultyBins(kind=str(data["difficulty"]), cuts=tuple(float(c) for c in data["cuts"])),
                probe_k=int(data["probe_k"]),
                cv_accuracy={int(b): float(v) for b, v in data.get("cv_accuracy", {}).items()},
                fitted_with=dict(data.get("fitted_with") or {}),
                choices={
                    int(level): {
                        int(budget): Cell(
                            strategy=str(cell["strategy"]),
                            n=int(cell["n"]),
                            options=dict(cell.get("options") or {}),
                            accuracy=float(cell.get("accuracy", 0.0)),
                            tokens=float(cell.get("tokens", 0.0)),
                        )
                        for budget, cell in row.items()
                    }
                    for level, row in data["choices"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"not a policy table: {type(exc).__name__} {exc}") from None

    def differences(self, settings: Mapping[str, Any]) -> list[str]:
        """What of ``settings`` (a run's fingerprint) differs from what the table was fitted
        with: the keys of ``fitted_with`` whose values differ (of a recorded mapping, only the
        keys it holds count)."""

        def same(recorded: Any, now: Any) -> bool:
            if isinstance(recorded, Mapping) and isinstance(now, Mapping):
                return all(now.get(key) == value for key, value in recorded.items())
            return bool(recorded == now)

        return sorted(key for key, value in self.fitted_with.items() if not same(value, settings.get(key)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> PolicyTable:
        """Read a table written by ``save`` (``treesearch fit-adaptive``); one-line errors."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        except OSError as exc:
            raise ConfigError(f"--policy-table {path}: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--policy-table {path}: not JSON ({exc})") from None
        try:
            return cls.from_json(data)
        except ConfigError as exc:
            raise ConfigError(f"--policy-table {path}: {exc}") from None
