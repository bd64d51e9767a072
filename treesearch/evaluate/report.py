"""What runs did, from their rows alone: accuracy with its interval, what it cost, how the
problems ended; split by a problem's field, and folded over seeds.

A run is one results file (``treesearch run --output``). Accuracy counts only problems with a
gold answer (the others are counted apart), with its Wilson interval. Files whose rows'
``config`` is the same but for the sampling seed, on the same problems, each under its own
seed, are one configuration run under several seeds: they fold into one line, the mean of the
per-seed accuracies with a Student t interval over them (see ``stats.seed_interval`` for why
not one pooled interval), and the mean per seed of every count. Files that share a
configuration but not their problems (two benchmarks) or not distinct seeds (the same file
twice, runs without a seed) are not seeds of one experiment: a line each. Costs are means per
problem over every row, failed problems included, since they spent what they spent.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treesearch.errors import ConfigError
from treesearch.evaluate.stats import percentile, seed_interval, wilson_interval
from treesearch.problems import Problem
from treesearch.runs.rows import iter_rows, unfinished_last_line

FORMATS = ("table", "md", "csv", "json")
# No count, score or cost a run records comes near this; a sum of numbers below it cannot
# overflow a float (an integer past a float's range, or sums of 1e308s, would).
_LARGEST = 1e100
_MISSING = "(none)"


@dataclass(frozen=True, kw_only=True, slots=True)
class Run:
    """One results file: its rows (the last row of an id wins, as a resumed run writes them),
    the configuration its first row records (None for rows written without one) and the
    number of an unfinished last line skipped (``cut``; None if there was none)."""

    name: str
    rows: list[dict[str, Any]]
    config: Mapping[str, Any] | None
    cut: int | None = None

    @property
    def strategy(self) -> str | None:
        found = (self.config or {}).get("strategy", self.rows[0].get("strategy"))
        return None if found is None else str(found)

    @property
    def n(self) -> int | None:
        return _integer((self.config or {}).get("n"))

    @property
    def seed(self) -> int | None:
        return _integer(_sampling(self.config or {}).get("seed"))


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _sampling(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """A config's sampling settings ({} where a hand-edited row has none or not an object)."""
    sampling = config.get("sampling")
    return sampling if isinstance(sampling, Mapping) else {}


def read_run(path: str | Path) -> Run:
    """The run in a results file; ConfigError for a missing file, one without rows or a row
    with a number that is not finite (NaN, Infinity, beyond a float), and ProblemFileError
    naming the line of one that is not a row (no ``id``). An unfinished last line, which a
    run cut short by a crash leaves and skips when it resumes, is skipped here too (``cut``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    by_id = {str(row["id"]): row for row in iter_rows(path, "id", "results", strict=True)}
    cut = unfinished_last_line(path)
    if not by_id:
        raise ConfigError(f"{path} holds no rows")
    for row in by_id.values():
        _check_finite(path, row, row)
    rows = list(by_id.values())
    config = rows[0].get("config")
    return Run(name=str(path), rows=rows, config=config if isinstance(config, Mapping) else None, cut=cut)


def _check_finite(path: Path, row: Mapping[str, Any], value: object, where: str = "") -> None:
    """ConfigError naming the row and field of a NaN, an infinity (JSON allows neither;
    Python's reader takes them) or a number past ``_LARGEST``: every mean, interval and cost
    would be NaN, overflow or fail, and strict JSON could not be written."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(path, row, item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(path, row, item, f"{where}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: row {row.get('id')!r}: {where} is {value!r}, not a finite number")
    elif isinstance(value, float | int) and not isinstance(value, bool) and abs(value) > _LARGEST:
        raise ConfigError(
            f"{path}: row {row.get('id')!r}: {where} is beyond {_LARGEST:g}, larger than any count or cost"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Summary:
    """One line of a report: a run (or the seeds of one configuration, ``seeds`` holding each
    run's seed) on the problems whose ``by`` field is ``group``. ``accuracy`` is correct over
    ``graded`` (the problems with a gold answer; ``no_gold`` lack one) with its Wilson
    ``interval``, or over seeds the mean of per-seed accuracies with a t interval
    (``interval_kind`` says which). Tokens, FLOPs (over the rows that carry them, ``flops_rows``)
    and requests are means per problem; wall times are in seconds. Over seeds, every count
    (problems, graded, correct, no_gold, flops_rows, stopped_by, aggregated_by, errors) is the
    mean per seed, an integer where it is whole."""

    run: str
    strategy: str | None
    n: int | None
    group: str | None
    seeds: tuple[int | None, ...]
    problems: float
    graded: float
    correct: float
    no_gold: float
    accuracy: float | None
    interval: tuple[float, float] | None
    interval_kind: str
    confidence: float
    prompt_tokens: float
    completion_tokens: float
    reasoning_tokens: float
    verifier_tokens: float
    flops: float | None
    flops_rows: float
    requests: float
    wall_p50: float | None
    wall_p95: float | None
    stopped_by: dict[str, float]
    aggregated_by: dict[str, float]
    errors: float


def fold_key(run: Run) -> str | None:
    """What makes runs one configuration: their config without the sampling seed (None, never
    folded, for rows without a config)."""
    if run.config is None:
        return None
    config = {**run.config, "sampling": {**_sampling(run.config), "seed": None}}
    return json.dumps(config, sort_keys=True)


def _folds(runs: Sequence[Run]) -> list[list[int]]:
    """The runs' indices by report line: runs of one configuration (``fold_key``) on the same
    problem ids, each under its own seed, fold into one; every other run is a line of its own
    (the config records neither the problems nor, by default, a seed, so an equal config alone
    does not make seeds of one experiment)."""
    groups: dict[object, list[int]] = {}
    for index, run in enumerate(runs):
        key = fold_key(run)
        ids = frozenset(str(row["id"]) for row in run.rows)
        groups.setdefault(index if key is None else (key, ids), []).append(index)
    folds: list[list[int]] = []
    for indices in groups.values():
        seeds = [runs[index].seed for index in indices]
        distinct = None not in seeds and len(set(seeds)) == len(seeds)
        folds += [indices] if distinct else [[index] for index in indices]
    return folds


def summarise(
    runs: Sequence[Run],
    *,
    by: str | None = None,
    problems: Mapping[str, Problem] | None = None,
    confidence: float = 0.95,
) -> list[Summary]:
    """The report's lines: one per configuration (seeds folded) and, with ``by``, per value of
    that field, taken from the row or else from the problem of its id in ``problems``. A field
    found in no row and no problem is a ConfigError naming the fields there are."""
    values = {} if by is None else _field_values(runs, by, problems or {})
    lines = []
    for indices in _folds(runs):
        split = [_split(runs[index], values, index) for index in indices]
        for group in sorted({value for parts in split for value in parts}, key=_order):
            parts = [parts.get(group, []) for parts in split]
            members = [runs[index] for index in indices]
            lines.append(_summary(members, parts, None if by is None else group, confidence))
    return lines


def _field_values(
    runs: Sequence[Run], by: str, problems: Mapping[str, Problem]
) -> dict[tuple[int, str], str]:
    values: dict[tuple[int, str], str] = {}
    for index, run in enumerate(runs):
        for row in run.rows:
            problem = problems.get(str(row["id"]))
            if by in row:
                values[index, str(row["id"])] = _text(row[by])
            elif problem is not None and by in problem.metadata:
                values[index, str(row["id"])] = _text(problem.metadata[by])
    if not values:
        in_rows = sorted({key for run in runs for row in run.rows for key in row})
        where = f"rows have {', '.join(in_rows)}"
        if problems:
            in_problems = sorted({key for problem in problems.values() for key in problem.metadata})
            where += f"; problems have {', '.join(in_problems) or 'no extra fields'}"
        else:
            where += "; give --problems FILE to split by a problem's field"
        raise ConfigError(f"--by {by}: no row or problem has this field ({where})")
    return values


def _text(value: object) -> str:
    """A field's value as a group's name: text as it is, JSON values as JSON, and anything else
    a problems file can hold (a Parquet date, decimal or bytes) as Python writes it."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | int | float | list | dict):
        return json.dumps(value, default=str)
    return str(value)


def _order(value: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then text, then the problems without the field."""
    if value == _MISSING:
        return 2, 0.0, value
    try:
        return 0, float(value), value
    except ValueError:
        return 1, 0.0, value


def _split(run: Run, values: Mapping[tuple[int, str], str], index: int) -> dict[str, list[dict[str, Any]]]:
    if not values:
        return {_MISSING: run.rows}
    parts: dict[str, list[dict[str, Any]]] = {}
    for row in run.rows:
        parts.setdefault(values.get((index, str(row["id"])), _MISSING), []).append(row)
    return parts


def _summary(
    members: Sequence[Run], parts: Sequence[list[dict[str, Any]]], group: str | None, confidence: float
) -> Summary:
    """The line of ``members`` (one run, or the seeds of one configuration), ``parts`` holding
    each one's rows in ``group``."""
    rows = [row for part in parts for row in part]
    graded = [[row for row in part if row.get("gold") is not None] for part in parts]
    correct = [sum(row.get("correct") is True for row in part) for part in graded]
    if len(members) == 1:
        accuracy = correct[0] / len(graded[0]) if graded[0] else None
        interval, kind = wilson_interval(correct[0], len(graded[0]), confidence), "wilson"
    else:
        per_seed = [right / len(part) for right, part in zip(correct, graded, strict=True) if part]
        spread = seed_interval(per_seed, confidence)
        accuracy = None if spread is None else spread.mean
        interval, kind = (None if spread is None else spread.interval), "t over seeds"
    flops = [value for row in rows if (value := flops_of(row)) is not None]
    walls = [float(row["wall_s"]) for row in rows if isinstance(row.get("wall_s"), int | float)]
    names = [run.name for run in members]
    common = os.path.commonprefix(names)  # noqa: RUF071 (a character prefix: "maj-s*" for maj-s1, maj-s2)
    return Summary(
        run=names[0] if len(names) == 1 else (f"{common}*" if common else " + ".join(names)),
        strategy=members[0].strategy,
        n=members[0].n,
        group=group,
        seeds=tuple(run.seed for run in members),
        problems=_per_seed([len(part) for part in parts]),
        graded=_per_seed([len(part) for part in graded]),
        correct=_per_seed(correct),
        no_gold=_per_seed([len(part) - len(gold) for part, gold in zip(parts, graded, strict=True)]),
        accuracy=accuracy,
        interval=interval,
        interval_kind=kind,
        confidence=confidence,
        prompt_tokens=_mean(usage_of(row, "prompt_tokens") for row in rows),
        completion_tokens=_mean(usage_of(row, "completion_tokens") for row in rows),
        reasoning_tokens=_mean(usage_of(row, "reasoning_tokens") for row in rows),
        verifier_tokens=_mean(usage_of(row, "verifier_tokens") for row in rows),
        flops=_mean(flops) if flops else None,
        flops_rows=_per_seed([sum(flops_of(row) is not None for row in part) for part in parts]),
        requests=_mean(usage_of(row, "requests") for row in rows),
        wall_p50=percentile(walls, 50) if walls else None,
        wall_p95=percentile(walls, 95) if walls else None,
        stopped_by=_count(parts, "stopped_by"),
        aggregated_by=_count(parts, "aggregated_by"),
        errors=_per_seed([sum(row.get("error") is not None for row in part) for part in parts]),
    )


def _per_seed(counts: Sequence[int]) -> float:
    """The mean of per-seed counts (the count itself for one run), an int where it is whole."""
    mean = statistics.fmean(counts)
    return int(mean) if mean.is_integer() else mean


def _count(parts: Sequence[Iterable[Mapping[str, Any]]], key: str) -> dict[str, float]:
    """How many rows have each value of ``key``, per seed, commonest first (a failed problem
    has no aggregation: rows without one are not counted)."""
    counts = [Counter(str(row[key]) for row in part if row.get(key) is not None) for part in parts]
    kinds = sum(counts, Counter()).most_common()
    return {kind: _per_seed([count[kind] for count in counts]) for kind, _ in kinds}


def flops_of(row: Mapping[str, Any]) -> float | None:
    """A row's total FLOPs, or None for a row that records none (a run without --model-params)."""
    flops = row.get("flops")
    total = flops.get("total") if isinstance(flops, Mapping) else None
    return float(total) if isinstance(total, int | float) else None


def usage_of(row: Mapping[str, Any], key: str) -> float:
    """A row's ``usage`` count ``key`` (0 where the row records none)."""
    usage = row.get("usage")
    value = usage.get(key, 0) if isinstance(usage, Mapping) else 0
    return float(value) if isinstance(value, int | float) else 0.0


def _mean(values: Iterable[float]) -> float:
    listed = list(values)
    return statistics.fmean(listed) if listed else 0.0


def render(lines: Sequence[Summary], fmt: str, by: str | None = None) -> str:
    """The report in ``fmt`` (one of FORMATS): an aligned text table, a Markdown table, CSV
    (raw numbers, one column per stop and aggregation kind) or JSON (the summaries)."""
    if fmt == "json":
        return json.dumps([dataclasses.asdict(line) for line in lines], indent=2, allow_nan=False)
    if fmt == "csv":
        return _csv(lines, by)
    level = f"{lines[0].confidence:.0%}" if lines else "95%"
    thought = any(line.reasoning_tokens for line in lines)  # a reasoning column where a model thought
    headers = ["run", "strategy", "N", *([by] if by else []), "seeds", "problems", "no gold", "accuracy",
               f"{level} interval", "prompt", "completion", *(["reasoning"] if thought else []),
               "verifier", "FLOPs", "requests", "wall p50", "wall p95", "stopped_by", "aggregated_by",
               "errors"]  # fmt: skip
    cells = [
        [line.run, line.strategy or "", _cell(line.n), *([line.group or ""] if by else []),
         ",".join(_cell(seed) for seed in line.seeds), _number(line.problems), _number(line.no_gold),
         _cell(line.accuracy, ".3f"), _interval(line), f"{line.prompt_tokens:.1f}",
         f"{line.completion_tokens:.1f}", *([f"{line.reasoning_tokens:.1f}"] if thought else []),
         f"{line.verifier_tokens:.1f}", _cell(line.flops, ".3g"),
         f"{line.requests:.1f}", _cell(line.wall_p50, ".2f"), _cell(line.wall_p95, ".2f"),
         _counts(line.stopped_by), _counts(line.aggregated_by), _number(line.errors)]
        for line in lines
    ]  # fmt: skip
    notes = [
        "tokens, FLOPs and requests are means per problem; wall times in seconds"
        + ("; reasoning: the completion tokens spent thinking" if thought else ""),
        f"accuracy over the problems with a gold answer: Wilson {level} interval, or over seeds the "
        f"mean of per-seed accuracies with a {level} t interval",
    ]
    if any(len(line.seeds) > 1 for line in lines):
        notes.append("over seeds, problems, no gold, stopped_by, aggregated_by and errors are means per seed")
    if any(line.flops is not None and line.flops_rows < line.problems for line in lines):
        notes.append("FLOPs over the rows that record them (runs with --model-params)")
    return table(headers, cells, fmt, notes)


def table(headers: Sequence[str], cells: Sequence[Sequence[str]], fmt: str, notes: Sequence[str] = ()) -> str:
    """An aligned plain-text table (``fmt`` "table") or a Markdown one ("md"), notes after."""
    if fmt == "md":
        escaped = [[cell.replace("|", "\\|") for cell in row] for row in [headers, *cells]]
        body = [f"| {' | '.join(escaped[0])} |", f"|{'---|' * len(headers)}"]
        body += [f"| {' | '.join(row)} |" for row in escaped[1:]]
        return "\n".join(body + ([""] + [f"{note}." for note in notes] if notes else []))
    widths = [max(len(row[i]) for row in [headers, *cells]) for i in range(len(headers))]
    body = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [headers, *cells]]  # fmt: skip
    return "\n".join(body + [f"({note})" for note in notes])


def _cell(value: float | int | None, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def _interval(line: Summary) -> str:
    return "-" if line.interval is None else f"{line.interval[0]:.3f} to {line.interval[1]:.3f}"


def _number(count: float) -> str:
    """A count, or a mean per seed to one decimal."""
    return str(count) if isinstance(count, int) else f"{count:.1f}"


def _counts(counts: Mapping[str, float]) -> str:
    return ", ".join(f"{kind} {_number(count)}" for kind, count in counts.items())


def _csv(lines: Sequence[Summary], by: str | None) -> str:
    stops = list(dict.fromkeys(kind for line in lines for kind in line.stopped_by))
    rules = list(dict.fromkeys(kind for line in lines for kind in line.aggregated_by))
    records = []
    for line in lines:
        record = {key: value for key, value in dataclasses.asdict(line).items()
                  if key not in {"group", "seeds", "interval", "stopped_by", "aggregated_by"}}  # fmt: skip
        if by:
            record = {"run": line.run, f"by:{by}": line.group, **record}  # not a summary column's name
        record["seeds"] = ";".join(_cell(seed) for seed in line.seeds)
        record["interval_low"], record["interval_high"] = line.interval or (None, None)
        record |= {f"stopped_by:{kind}": line.stopped_by.get(kind, 0) for kind in stops}
        record |= {f"aggregated_by:{kind}": line.aggregated_by.get(kind, 0) for kind in rules}
        records.append(record)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else ["run"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().rstrip("\n")
