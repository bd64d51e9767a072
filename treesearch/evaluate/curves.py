"""Scaling curves from one run: the accuracy k samples would give, for every k up to the N a
sampling run drew, without running again.

A sampling run's N candidates per problem are N independent samples, so any k of them are k
independent samples: the expected accuracy at k is the mean, over the C(N, k) k-subsets of
each problem's candidates, of what an aggregator picks from the subset (an unbiased
estimate, as Chen et al. 2021's pass@k is; drawing k-subsets without replacement, unlike
``treesearch.optimal.votes``, which predicts from estimated answer probabilities). The
columns and how each is computed:

- pass@k: some candidate of the subset is right; closed form 1 − C(N−c, k)/C(N, k) with c
  right candidates.
- best-of-k: the subset's best-scored candidate, ties to the one found first, as
  ``best_of_n``; closed form: sorted by (score descending, position), the candidate ranked r
  wins exactly when it is drawn and none ranked above it is, C(N−r, k−1)/C(N, k); a subset
  with no scored answer is decided by majority vote, as ``aggregate`` falls back (the
  majority column's method on the unscored samples alone).
- majority and weighted vote: the aggregators' own rule (the largest vote total, then score
  sum, then count, then the answer found first in the subset), majority vote without the
  scores, as a majority-vote run decides (ties to the answer found first). When every
  candidate of an answer group has the same score (always so for majority vote), a
  subset's outcome depends only on how many of each group it holds, up to the tie-break by
  first position, which has a closed form too; the expectation is then a sum over those
  count vectors, weighted by the multivariate hypergeometric, exact when there are at most
  ``EXACT_LIMIT`` vectors. Otherwise the aggregator itself runs on k-subsets: on every one
  when there are at most ``samples`` of them, else on ``samples`` seeded random ones (Monte
  Carlo, whose standard error is reported). The aggregator costs microseconds a subset, so
  a few thousand subsets per problem and k is where enumerating stops being cheap.

The winning answer is the first candidate of the winning group in the subset, graded on its
own (``matches`` against the gold once per distinct answer), so a group holding a right and
a wrong spelling of one answer is graded as the run would grade it. A candidate without a
score counts 0 in the weighted sum and never wins best-of-k against a scored one; a subset
none of whose candidates has a score is decided by majority in those columns, as
``aggregate`` falls back; a run with no scores at all has no weighted or best-of-k column. Slots of the N
samples that gave no answer are drawn like the others and never vote.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import io
import itertools
import json
import math
import random
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from treesearch.answers.aggregate import Aggregator, Candidate, majority_vote, weighted_vote
from treesearch.answers.equivalence import AnswerEquivalence
from treesearch.engine.budget import Usage
from treesearch.errors import ConfigError
from treesearch.evaluate.figures import figure
from treesearch.evaluate.report import table

# Exact vote expectations by count vectors up to this many vectors a problem and k: a vector
# costs a few microseconds, so 5,000 cost about what the default Monte Carlo draws do.
EXACT_LIMIT = 5_000
# Monte Carlo draws a problem and k; fewer k-subsets than this are all enumerated instead.
DEFAULT_SAMPLES = 1_000
# The strategies whose candidates are independent samples (the registry's ``sample`` routine).
SAMPLING_STRATEGIES = ("majority-vote", "best-of-n", "weighted-vote")
TOKENS_FROM = (
    "per problem, the policy's prompt once (whole solutions: one request asks for all k samples) "
    "and k/N of the run's other tokens (completions, the verifier's, step-by-step prompts)"
)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Pool:
    """One problem's N samples in position order: its candidates (padded to N with
    unanswered ones), the answer group of each (-1: no answer) and whether each distinct
    answer matches the gold."""

    candidates: tuple[Candidate, ...]
    groups: tuple[int, ...]
    right: Mapping[str, bool]

    @classmethod
    def of(cls, candidates: Sequence[Candidate], n: int, gold: str, same: AnswerEquivalence) -> Pool:
        """Group the answers and grade each distinct one once (the equivalence may run sympy,
        so never per subset)."""
        answered = [c.answer for c in candidates if c.answer is not None]
        groups = iter(same.group(answered))
        padded = (*candidates, *(Candidate(node=-1, answer=None) for _ in range(n - len(candidates))))
        return cls(
            candidates=padded,
            groups=tuple(-1 if c.answer is None else next(groups) for c in padded),
            right={answer: same.matches(answer, gold) for answer in dict.fromkeys(answered)},
        )

    @property
    def n(self) -> int:
        return len(self.candidates)

    def is_right(self, answer: str | None) -> bool:
        return answer is not None and self.right[answer]

    @property
    def scored(self) -> bool:
        return any(c.score is not None for c in self.candidates if c.answer is not None)


@dataclasses.dataclass(frozen=True, slots=True)
class Estimate:
    """An expected accuracy and the variance of its estimate (0 when exact)."""

    value: float
    variance: float = 0.0
    sampled: bool = False


def pass_at_k(pool: Pool, k: int) -> Estimate:
    right = sum(pool.is_right(c.answer) for c in pool.candidates)
    return Estimate(1.0 - math.comb(pool.n - right, k) / math.comb(pool.n, k))


def best_at_k(pool: Pool, k: int, *, samples: int, seed: str) -> Estimate:
    """The best-scored candidate of a random k-subset, in expectation; a subset without a
    scored answer is decided by majority vote, as ``aggregate`` falls back. Sorted by (score
    descending, position), the candidate ranked r wins exactly when it is drawn and none
    ranked above it is, C(N−r, k−1)/C(N, k); the subsets with no scored answer are the
    k-subsets of the other samples, C(N−S, k)/C(N, k) of them, and vote among themselves."""
    ranked = sorted(
        (i for i, c in enumerate(pool.candidates) if c.answer is not None and c.score is not None),
        key=lambda i: (-(pool.candidates[i].score or 0.0), i),
    )
    wins = sum(
        math.comb(pool.n - rank, k - 1)
        for rank, i in enumerate(ranked, start=1)
        if pool.is_right(pool.candidates[i].answer)
    )
    best = wins / math.comb(pool.n, k)
    unscored = sorted(set(range(pool.n)) - set(ranked))
    if len(unscored) < k:
        return Estimate(best)
    share = math.comb(len(unscored), k) / math.comb(pool.n, k)
    rest = dataclasses.replace(
        pool,
        candidates=tuple(pool.candidates[i] for i in unscored),
        groups=tuple(pool.groups[i] for i in unscored),
    )
    fallback = vote_at_k(rest, k, "majority", samples=samples, seed=seed)
    return Estimate(best + share * fallback.value, share * share * fallback.variance, fallback.sampled)


def vote_at_k(pool: Pool, k: int, rule: str, *, samples: int, seed: str) -> Estimate:
    """Majority (``rule`` "majority") or weighted vote over a random k-subset, in expectation.
    Majority vote leaves the scores out, as a majority-vote run has none: its ties go to the
    answer found first, never to the better scored."""
    if rule == "majority":
        pool = dataclasses.replace(
            pool, candidates=tuple(dataclasses.replace(c, score=None) for c in pool.candidates)
        )
    by_counts = _by_counts(pool, k, rule)
    if by_counts is not None:
        return Estimate(by_counts)
    aggregator: Aggregator = majority_vote if rule == "majority" else weighted_vote
    exact = math.comb(pool.n, k) <= samples  # enumerating is no dearer than sampling
    subsets: Iterable[Sequence[int]]
    if exact:
        subsets = itertools.combinations(range(pool.n), k)
    else:
        rng = random.Random(seed)
        subsets = (sorted(rng.sample(range(pool.n), k)) for _ in range(samples))
    outcomes = [
        pool.is_right(aggregator([pool.candidates[i] for i in s], [pool.groups[i] for i in s]))
        for s in subsets
    ]
    mean = statistics.fmean(outcomes)
    if exact:
        return Estimate(mean)
    return Estimate(mean, mean * (1.0 - mean) / (len(outcomes) - 1) if len(outcomes) > 1 else 0.0, True)


@dataclasses.dataclass(frozen=True, slots=True)
class _Group:
    positions: tuple[int, ...]  # ascending
    right: tuple[bool, ...]  # of each member's own answer
    totals: tuple[tuple[float, float], ...]  # per count c: (vote total, score sum), summed as _leading sums

    def first_is(self, j: int, count: int) -> float:
        """P(member ``j`` is the first of ``count`` members drawn): drawn, none before it."""
        size = len(self.positions)
        return math.comb(size - 1 - j, count - 1) / math.comb(size, count)

    def first_right(self, count: int) -> float:
        """P(the first of ``count`` members drawn is right)."""
        return sum(self.first_is(j, count) for j, right in enumerate(self.right) if right)

    def all_after(self, position: int, count: int) -> float:
        """P(all ``count`` members drawn come after ``position``)."""
        later = len(self.positions) - bisect.bisect_right(self.positions, position)
        return math.comb(later, count) / math.comb(len(self.positions), count)


def _by_counts(pool: Pool, k: int, rule: str) -> float | None:
    """The exact vote accuracy by count vectors, or None when a group's scores differ (the
    outcome then depends on which members are drawn) or there are too many vectors."""
    members: dict[int, list[int]] = {}
    for i, label in enumerate(pool.groups):
        if label >= 0:
            members.setdefault(label, []).append(i)
    groups: list[_Group] = []
    for positions in members.values():
        scores = {pool.candidates[i].score or 0.0 for i in positions}
        if len(scores) > 1:
            return None
        score = scores.pop()
        weight = 1.0 if rule == "majority" else score
        totals, vote, score_sum = [(0.0, 0.0)], 0.0, 0.0
        for _ in positions:
            vote, score_sum = vote + weight, score_sum + score
            totals.append((vote, score_sum))
        right = tuple(pool.is_right(pool.candidates[i].answer) for i in positions)
        groups.append(_Group(positions=tuple(positions), right=right, totals=tuple(totals)))
    sizes = [len(g.positions) for g in groups]
    unanswered = pool.n - sum(sizes)
    if _vector_count(sizes, unanswered, k) > EXACT_LIMIT:
        return None
    total = 0.0
    for counts in _count_vectors(sizes, unanswered, k):
        ways = math.comb(unanswered, k - sum(counts))
        for group, count in zip(groups, counts, strict=True):
            ways *= math.comb(len(group.positions), count)
        total += ways * _right_given(groups, counts)
    return total / math.comb(pool.n, k)


def _vector_count(sizes: Sequence[int], unanswered: int, k: int) -> int:
    """How many vectors ``_count_vectors`` yields, without listing them."""
    ways = [1] + [0] * k  # ways[s]: count vectors of the groups so far drawing s samples
    for size in sizes:
        ways = [sum(ways[max(0, s - size) : s + 1]) for s in range(k + 1)]
    return sum(ways[max(0, k - unanswered) :])


def _count_vectors(sizes: Sequence[int], unanswered: int, k: int) -> Iterator[tuple[int, ...]]:
    """Every way to draw k samples as counts per group (the rest unanswered)."""
    room = [*list(itertools.accumulate(reversed(sizes)))[::-1], 0]  # room[i]: members of groups i..

    def walk(i: int, left: int, prefix: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
        if i == len(sizes):
            yield prefix
            return
        for count in range(max(0, left - unanswered - room[i + 1]), min(sizes[i], left) + 1):
            yield from walk(i + 1, left - count, (*prefix, count))

    return walk(0, k, ())


def _right_given(groups: Sequence[_Group], counts: Sequence[int]) -> float:
    """P(the vote is right | these counts): the leading groups by (vote total, score sum,
    count); among several, the one whose first drawn member comes first."""
    keys = {g: (*groups[g].totals[c], c) for g, c in enumerate(counts) if c > 0}
    if not keys:
        return 0.0
    best = max(keys.values())
    tied = [g for g, key in keys.items() if key == best]
    if len(tied) == 1:
        return groups[tied[0]].first_right(counts[tied[0]])
    chance = 0.0
    for g in tied:
        group = groups[g]
        for j, position in enumerate(group.positions):
            if group.right[j]:
                p = group.first_is(j, counts[g])
                for h in tied:
                    if h != g:
                        p *= groups[h].all_after(position, counts[h])
                chance += p
    return chance


# -- a run's curve ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class CurvePoint:
    """The expected accuracies at k samples, over the run's graded problems; ``weighted`` and
    ``best`` are None for a run without scores. ``*_error`` is the Monte Carlo standard error
    (0 where exact), ``sampled`` whether any problem needed Monte Carlo at this k."""

    k: int
    tokens: float
    majority: float
    weighted: float | None
    best: float | None
    pass_at_k: float
    majority_error: float
    weighted_error: float
    best_error: float
    sampled: bool


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Curve:
    """A run's curve: its strategy, N, how many problems it grades and how many rows it left
    out (no gold, or failed), the Monte Carlo settings, and a point per k."""

    run: str
    strategy: str
    n: int
    problems: int
    left_out: int
    samples: int
    seed: int
    points: tuple[CurvePoint, ...]

    def to_record(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "strategy": self.strategy,
            "n": self.n,
            "problems": self.problems,
            "left_out": self.left_out,
            "samples": self.samples,
            "seed": self.seed,
            "exact_limit": EXACT_LIMIT,
            "tokens": TOKENS_FROM,
            "points": [
                {
                    "k": p.k,
                    "tokens": p.tokens,
                    "majority": p.majority,
                    "weighted": p.weighted,
                    "best": p.best,
                    "pass_at_k": p.pass_at_k,
                    "majority_error": p.majority_error,
                    "weighted_error": p.weighted_error,
                    "best_error": p.best_error,
                    "sampled": p.sampled,
                }
                for p in self.points
            ],
        }


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to N, and N itself."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else [*ks, n]


def run_curve(
    run: str | Path,
    rows: Iterable[Mapping[str, Any]],
    same: AnswerEquivalence,
    *,
    ks: Sequence[int] | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> Curve:
    """The curve of one sampling run's ``rows`` (the JSONL rows it wrote; ``run`` names it in
    errors). Rows without a gold answer or with an error are left out. ConfigError for a run
    that is not one sampling configuration, or a k outside 1..N."""
    rows = list(rows)
    if not rows:
        raise ConfigError(f"{run}: no rows")
    strategies = {str(row.get("strategy")) for row in rows}
    ns = {_n(run, row) for row in rows}
    if len(strategies) > 1 or len(ns) > 1:
        kinds = f"{', '.join(sorted(strategies))}; N {', '.join(sorted(map(str, ns)))}"
        raise ConfigError(f"{run}: rows of several configurations ({kinds}): one run per curve")
    strategy, n = strategies.pop(), ns.pop()
    if strategy not in SAMPLING_STRATEGIES:
        raise ConfigError(
            f"{run}: a curve from one run assumes independent samples, and {strategy}'s candidates are not "
            f"(they share steps or were selected); it applies to {', '.join(SAMPLING_STRATEGIES)}"
        )
    ks = sorted(set(default_ks(n) if ks is None else ks))
    if ks[0] < 1 or ks[-1] > n:
        raise ConfigError(f"{run}: k must be in 1..{n} (the run's N), got {ks[0] if ks[0] < 1 else ks[-1]}")
    if samples < 2:
        raise ConfigError(f"samples must be at least 2, got {samples}")
    graded = [row for row in rows if row.get("gold") is not None and row.get("error") is None]
    if not graded:
        raise ConfigError(f"{run}: no row has a gold answer and no error: nothing to grade")
    pools = [Pool.of(_candidates(run, row, n), n, str(row["gold"]), same) for row in graded]
    scored = any(pool.scored for pool in pools)
    once, per_sample = (
        statistics.fmean(part) for part in zip(*(_tokens(run, row) for row in graded), strict=True)
    )
    points = []
    for k in ks:
        votes: dict[str, list[Estimate]] = {"majority": [], "weighted": [], "best": []}
        passes = []
        for row, pool in zip(graded, pools, strict=True):
            draw = f"{seed}:{row['id']}:{k}"
            majority = vote_at_k(pool, k, "majority", samples=samples, seed=f"{draw}:majority")
            votes["majority"].append(majority)
            passes.append(pass_at_k(pool, k))
            if scored:  # weighted vote without scores is majority vote; best-of-k falls back to it
                votes["weighted"].append(
                    vote_at_k(pool, k, "weighted", samples=samples, seed=f"{draw}:weighted")
                )
                votes["best"].append(
                    best_at_k(pool, k, samples=samples, seed=f"{draw}:best") if pool.scored else majority
                )
        points.append(
            CurvePoint(
                k=k,
                tokens=once + per_sample * k / n,
                majority=_mean(votes["majority"]),
                weighted=_mean(votes["weighted"]) if scored else None,
                best=_mean(votes["best"]) if scored else None,
                pass_at_k=_mean(passes),
                majority_error=_error(votes["majority"]),
                weighted_error=_error(votes["weighted"]),
                best_error=_error(votes["best"]),
                sampled=any(e.sampled for column in votes.values() for e in column),
            )
        )
    return Curve(
        run=str(run),
        strategy=strategy,
        n=n,
        problems=len(graded),
        left_out=len(rows) - len(graded),
        samples=samples,
        seed=seed,
        points=tuple(points),
    )


def _config(run: str | Path, row: Mapping[str, Any]) -> Mapping[str, Any]:
    """A row's config ({} for a row without one); ConfigError naming the row for anything else."""
    config = row.get("config")
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"{run}: row {row.get('id')!r} has a config that is not an object")
    return config


def _n(run: str | Path, row: Mapping[str, Any]) -> int:
    """A row's N (config.n); ConfigError naming the row where it is not a positive integer."""
    n = _config(run, row).get("n")
    if n is None:
        raise ConfigError(f"{run}: row {row.get('id')!r} carries no N (config.n): is it a run's results?")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"{run}: row {row.get('id')!r}: config.n is {json.dumps(n)}, not an integer ≥ 1")
    return n


def _candidates(run: str | Path, row: Mapping[str, Any], n: int) -> list[Candidate]:
    """A row's candidates; ConfigError naming the row for anything else."""
    found = row.get("candidates")
    try:
        if not isinstance(found, list) or len(found) > n:
            raise TypeError
        candidates = [
            Candidate(
                node=int(c["node"]),
                answer=None if c.get("answer") is None else str(c["answer"]),
                score=None if c.get("score") is None else float(c["score"]),
            )
            for c in found
        ]
    except (TypeError, KeyError, ValueError):
        raise ConfigError(
            f"{run}: row {row.get('id')!r} needs a list of at most N = {n} candidates "
            "({node, answer, score}): is it a sampling run's results?"
        ) from None
    return candidates


def _tokens(run: str | Path, row: Mapping[str, Any]) -> tuple[float, float]:
    """A row's tokens as (read once whatever k, spent per sample). Whole solutions come from
    one request for all the samples, whose prompt the server counts once (vLLM, SGLang and the
    synthetic server honour ``n``; a server that ignores it is sent a request per sample, so
    there this overstates the cost of k < N by the prompts of N − k requests). Completions,
    the verifier's calls and, step by step, each path's own rollout prompts grow with k."""
    whole = bool(_config(run, row).get("whole", True))
    try:
        usage = Usage.from_record(row.get("usage"))
        once = float(max(0, usage.prompt_tokens - usage.verifier_tokens) if whole else 0)
        return once, float(usage.total_tokens) - once
    except (TypeError, ValueError, AttributeError, OverflowError):  # OverflowError: past a float
        raise ConfigError(f"{run}: row {row.get('id')!r} has a usage that is not token counts") from None


def _mean(estimates: Sequence[Estimate]) -> float:
    return statistics.fmean(e.value for e in estimates)


def _error(estimates: Sequence[Estimate]) -> float:
    """The standard error of a mean of independent estimates."""
    return math.sqrt(math.fsum(e.variance for e in estimates)) / len(estimates) if estimates else 0.0


def render(curves: Sequence[Curve], fmt: str) -> str:
    """The curves in ``fmt`` (``report``'s formats): an aligned table or Markdown with notes, CSV
    (one row a run and k, raw numbers) or JSON (``Curve.to_record`` of each)."""
    if fmt == "json":
        return json.dumps([curve.to_record() for curve in curves], indent=2, allow_nan=False)
    records = [
        {"run": c.run, "strategy": c.strategy, "n": c.n, "problems": c.problems, **point}
        for c in curves
        for point in c.to_record()["points"]
    ]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().rstrip("\n")
    headers = ["run", "k", "tokens", "majority", "weighted", "best-of-k", "pass@k", "MC ±"]
    cells = [
        [
            r["run"],
            str(r["k"]),
            f"{r['tokens']:.1f}",
            *(_cell(r[key]) for key in ("majority", "weighted", "best", "pass_at_k")),
            _cell(max(r["majority_error"], r["weighted_error"], r["best_error"]))
            if r["sampled"]
            else "exact",
        ]
        for r in records
    ]
    notes = [
        f"{c.run}: {c.strategy}, N = {c.n}, {c.problems} problems"
        + (f" ({c.left_out} left out: no gold or an error)" if c.left_out else "")
        for c in curves
    ]
    notes += [
        f"expected accuracy over the k-subsets of each problem's N samples; tokens: {TOKENS_FROM}",
        f"MC ±: the standard error where a column drew {curves[0].samples} random k-subsets a problem "
        f"(seed {curves[0].seed}) instead of enumerating them; pass@k is a closed form, and best-of-k "
        "too but for its subsets without a score",
    ]
    if any(c.points[0].weighted is None for c in curves):
        notes.append("weighted and best-of-k need scores: a run without a verifier has none")
    return table(headers, cells, fmt, notes)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def plot_curves(curves: Sequence[Curve], path: str | Path) -> None:
    """Accuracy against k (log scale) for each curve's columns, in the format ``path``'s suffix
    names (PNG, PDF, SVG: any matplotlib writes); each k's tokens per problem under it when
    there is one curve. Needs matplotlib (the ``plots`` extra)."""
    with figure(path, "--plot") as axes:
        for curve in curves:
            name = f"{Path(curve.run).stem}: " if len(curves) > 1 else ""
            columns: dict[str, list[float | None]] = {
                "majority": [p.majority for p in curve.points],
                "weighted": [p.weighted for p in curve.points],
                "best-of-k": [p.best for p in curve.points],
                "pass@k": [p.pass_at_k for p in curve.points],
            }
            for label, column in columns.items():
                values = [v for v in column if v is not None]
                if len(values) == len(curve.points):
                    axes.plot([p.k for p in curve.points], values, marker="o", label=f"{name}{label}")
        axes.set_xscale("log", base=2)
        axes.minorticks_off()
        axes.set_ylabel("expected accuracy")
        if len(curves) == 1:  # each k's tokens under it
            (curve,) = curves
            axes.set_xticks([p.k for p in curve.points], [f"{p.k}\n{p.tokens:,.0f}" for p in curve.points])
            axes.set_xlabel("k (samples per problem) and tokens per problem")
            axes.set_title(f"{curve.strategy}, N = {curve.n}, {curve.problems} problems")
        else:
            ks = sorted({p.k for curve in curves for p in curve.points})
            axes.set_xticks(ks, [str(k) for k in ks])
            axes.set_xlabel("k (samples per problem)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
