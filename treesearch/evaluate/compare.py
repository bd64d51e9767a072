"""Runs against each other: accuracy against cost, one line per strategy, and for each pair of
runs the paired difference on the problems both graded.

Two runs on the same problems are compared problem by problem: the difference of their
accuracies with a paired bootstrap interval and McNemar's exact p-value
(``stats.paired_difference``). That is only a comparison of strategies when the runs differ in
nothing else, so the configurations' other settings (model, prompts, verifier, sampling,
budget...) are checked, and the keys that differ are named.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treesearch.engine.config import SearchConfig
from treesearch.errors import ConfigError
from treesearch.evaluate.figures import figure
from treesearch.evaluate.report import Run, flops_of, table, usage_of
from treesearch.evaluate.stats import DEFAULT_RESAMPLES, PairedDifference, paired_difference, wilson_interval

AXES = {"tokens": "tokens per problem", "flops": "FLOPs per problem"}
FORMATS = ("table", "md", "json")


@dataclass(frozen=True, kw_only=True, slots=True)
class Point:
    """One run on the plot: its ``line`` (the strategy, with the strategy options that tell
    its runs apart), N, accuracy over its graded problems with the Wilson interval, and its
    ``cost`` per problem on the chosen axis."""

    run: str
    line: str
    n: int | None
    graded: int
    accuracy: float | None
    interval: tuple[float, float] | None
    cost: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Pair:
    """Runs ``a`` and ``b`` on the problems both graded; ``found`` is None when they share none."""

    a: str
    b: str
    found: PairedDifference | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Comparison:
    """What ``compare`` shows: the points, the pairs, one warning per configuration key (other
    than strategy, N and the seed) whose value differs between the runs, and per pair of runs
    one if their problems differ and one if their shared problems' gold answers do."""

    x: str
    confidence: float
    points: list[Point]
    pairs: list[Pair]
    warnings: list[str]


def compare(
    runs: Sequence[Run],
    *,
    x: str = "tokens",
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Compare ``runs`` (each one results file) on cost axis ``x`` ("tokens": prompt and
    completion tokens per problem; "flops": total FLOPs per problem, which runs record with
    --model-params)."""
    if x not in AXES:
        raise ConfigError(f"unknown axis {x!r}; choose {' or '.join(AXES)}")
    lines = _line_names(runs)
    points = [
        Point(
            run=run.name,
            line=line,
            n=run.n,
            graded=len(graded := _graded(run)),
            accuracy=sum(graded.values()) / len(graded) if graded else None,
            interval=wilson_interval(sum(graded.values()), len(graded), confidence),
            cost=_cost(run, x),
        )
        for run, line in zip(runs, lines, strict=True)
    ]
    pairs = []
    for first, second in itertools.combinations(runs, 2):
        a, b = _graded(first), _graded(second)
        shared = [key for key in a if key in b]
        found = paired_difference(
            [a[key] for key in shared],
            [b[key] for key in shared],
            confidence=confidence,
            resamples=resamples,
            seed=seed,
        )
        pairs.append(Pair(a=first.name, b=second.name, found=found))
    warnings = differences(runs) + problem_differences(runs)
    return Comparison(x=x, confidence=confidence, points=points, pairs=pairs, warnings=warnings)


def problem_differences(runs: Sequence[Run]) -> list[str]:
    """A warning for each pair of runs on different problems (the runs table's accuracies are
    then over different problems, and the pair compares only the shared ones), and one for
    each pair whose shared problems have different gold answers (each run graded against its
    own, so the same answer can be right in one and wrong in the other)."""
    warnings = []
    for first, second in itertools.combinations(runs, 2):
        a, b = ({str(row["id"]): row.get("gold") for row in run.rows} for run in (first, second))
        shared = [key for key in a if key in b]
        if len(shared) < max(len(a), len(b)):
            warnings.append(
                f"{first.name} and {second.name} share {len(shared)} of their problems ({len(a)} and "
                f"{len(b)}): the runs table's accuracies are over different problems; the pair compares "
                "the shared ones"
            )
        differ = [key for key in shared if a[key] != b[key]]
        if differ:
            warnings.append(
                f"{first.name} and {second.name} give different gold answers to {len(differ)} shared "
                f"problems ({_short(', '.join(differ))}): each run is graded against its own"
            )
    return warnings


def _graded(run: Run) -> dict[str, bool]:
    return {str(row["id"]): row.get("correct") is True for row in run.rows if row.get("gold") is not None}


def _cost(run: Run, x: str) -> float:
    if x == "flops":
        flops = [value for row in run.rows if (value := flops_of(row)) is not None]
        if not flops:
            raise ConfigError(f"--x flops: {run.name} records no FLOPs (run it with --model-params)")
        return sum(flops) / len(flops)
    spent = [usage_of(row, "prompt_tokens") + usage_of(row, "completion_tokens") for row in run.rows]
    return sum(spent) / len(spent)


def _strategy_options() -> set[str]:
    """SearchConfig's strategy options (beam width, lookahead, ...): part of what a strategy
    is, not a confound of the comparison."""
    return {
        f.name
        for f in dataclasses.fields(SearchConfig)
        if "option" in f.metadata and f.metadata["option"].group == "strategy"
    }


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return flat


def _line_names(runs: Sequence[Run]) -> list[str]:
    """Each run's line: its strategy, and where runs of one strategy differ in a strategy
    option other than N (particle weighting, say), those options' values."""
    options = _strategy_options() - {"strategy", "n"}
    flats = [_flat(run.config or {}) for run in runs]
    names = []
    for run, flat in zip(runs, flats, strict=True):
        kin = [other for other, each in zip(flats, runs, strict=True) if each.strategy == run.strategy]
        varying = sorted(key for key in options if len({other.get(key) for other in kin}) > 1)
        shown = ", ".join(f"{key}={json.loads(flat[key])}" for key in varying if key in flat)
        names.append(f"{run.strategy} ({shown})" if shown else str(run.strategy))
    return names


def differences(runs: Sequence[Run]) -> list[str]:
    """One warning per configuration key that differs between the runs, beyond strategy, N,
    the seed and the strategy options; a run without a configuration is one warning too. Only
    the runs that have a setting are compared on it: a run without a verifier (majority vote)
    against one with a PRM differs in strategy, not in which verifier it used."""
    ignored = _strategy_options() | {"strategy", "n", "sampling.seed"}
    warnings = [
        f"{run.name} records no configuration: cannot check it differs only in strategy and N"
        for run in runs
        if run.config is None
    ]
    known = [(run, _flat(run.config)) for run in runs if run.config is not None]
    keys = sorted({key for _, flat in known for key in flat} - ignored)
    for key in keys:
        values: dict[str, list[str]] = {}
        for run, flat in known:
            if key in flat:
                values.setdefault(flat[key], []).append(run.name)
        if len(values) > 1:
            shown = "; ".join(f"{_short(value)} in {', '.join(names)}" for value, names in values.items())
            warnings.append(f"the runs differ in more than strategy and N: {key} ({shown})")
    return warnings


def _short(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def render(comparison: Comparison, fmt: str) -> str:
    """The runs' table and the pairs' table in ``fmt`` (one of FORMATS), or JSON."""
    if fmt == "json":
        return json.dumps(dataclasses.asdict(comparison), indent=2, allow_nan=False)
    first = next((pair.found for pair in comparison.pairs if pair.found is not None), None)
    level = f"{comparison.confidence:.0%}"
    runs = table(
        ["run", "line", "N", "graded", "accuracy", f"{level} Wilson", AXES[comparison.x]],
        [
            [
                point.run,
                point.line,
                _text(point.n),
                str(point.graded),
                _text(point.accuracy, ".3f"),
                _span(point.interval),
                format(point.cost, ".3g" if comparison.x == "flops" else ".0f"),
            ]
            for point in comparison.points
        ],
        fmt,
    )
    cells = []
    for pair in comparison.pairs:
        found = pair.found
        if found is None:
            cells.append([pair.a, pair.b, "0", "-", "-", "-", "-", "-", "-"])
            continue
        cells.append(
            [pair.a, pair.b, str(found.pairs), f"{found.accuracy_a:.3f}", f"{found.accuracy_b:.3f}",
             f"{found.difference:+.3f}", _span(found.interval, "+.3f"), f"{found.only_a}/{found.only_b}",
             f"{found.p_value:.3g}"]
        )  # fmt: skip
    resamples = f"{first.resamples} resamples, seed {first.seed}" if first else "no shared problems"
    pairs = table(
        ["A", "B", "shared", "acc A", "acc B", "A - B", f"{level} interval", "only A/only B", "McNemar p"],
        cells,
        fmt,
        [
            f"on the problems both runs graded; interval: paired bootstrap ({resamples}); McNemar's exact "
            "test on the problems only one run got right"
        ],
    )
    return f"{runs}\n\n{pairs}"


def _text(value: float | None, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def _span(interval: tuple[float, float] | None, spec: str = ".3f") -> str:
    return "-" if interval is None else f"{interval[0]:{spec}} to {interval[1]:{spec}}"


def plot(comparison: Comparison, path: Path) -> str | None:
    """Accuracy (with Wilson error bars) against cost, one line per strategy through its runs
    in order of cost, each point labelled with its N; written in the format ``path``'s suffix
    names (PNG, PDF, SVG: any matplotlib writes). The cost axis is logarithmic, unless a run
    spent nothing, which no log axis can show: then linear, and the returned warning says so.
    Needs matplotlib (the ``plots`` extra)."""
    lines: dict[str, list[Point]] = {}
    for point in comparison.points:
        if point.accuracy is not None:
            lines.setdefault(point.line, []).append(point)
    free = [point.run for point in comparison.points if point.accuracy is not None and point.cost <= 0]
    with figure(path, "compare -o") as axes:
        for name, points in lines.items():
            points.sort(key=lambda point: point.cost)
            accuracy = [point.accuracy or 0.0 for point in points]
            errors = [
                [a - (p.interval or (a, a))[0] for a, p in zip(accuracy, points, strict=True)],
                [(p.interval or (a, a))[1] - a for a, p in zip(accuracy, points, strict=True)],
            ]
            costs = [point.cost for point in points]
            axes.errorbar(costs, accuracy, yerr=errors, marker="o", capsize=3, label=name)
            for cost, value, point in zip(costs, accuracy, points, strict=True):
                if point.n is not None:
                    axes.annotate(f"N={point.n}", (cost, value), textcoords="offset points", xytext=(4, -10),
                                  fontsize=7)  # fmt: skip
        if not free:
            axes.set_xscale("log", base=2)
        axes.set_xlabel(AXES[comparison.x])
        axes.set_ylabel(f"accuracy (Wilson {comparison.confidence:.0%} interval)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    if free:
        return f"{', '.join(free)} spent no {comparison.x}: the plot's cost axis is linear, not logarithmic"
    return None
