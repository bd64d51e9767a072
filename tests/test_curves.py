"""Scaling curves from one run (treesearch.evaluate.curves, report --curve): the exact
expectations against the binomial closed forms and against the aggregators run on every
k-subset, Monte Carlo within its stated error, and a run's curve against separate runs on the
synthetic server."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from conftest import problems, run_cli
from hypothesis import given
from hypothesis import strategies as st

from treesearch.answers.aggregate import Candidate, aggregate, best_of_n, majority_vote, weighted_vote
from treesearch.answers.equivalence import MathEquivalence
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM
from treesearch.cli.curves import add_curve_options, report_curves
from treesearch.cli.report import read_runs
from treesearch.engine.config import SearchConfig
from treesearch.engine.policy import SamplingParams
from treesearch.errors import ConfigError
from treesearch.evaluate import curves
from treesearch.evaluate.curves import Pool, best_at_k, pass_at_k, run_curve, vote_at_k
from treesearch.evaluate.stats import wilson_interval
from treesearch.runs.loop import read_output
from treesearch.runs.runner import run


@pytest.fixture(scope="module")
def same() -> Iterator[MathEquivalence]:
    with MathEquivalence() as equivalence:
        yield equivalence


def pool(answers: list[str | None], same: MathEquivalence, scores: dict[str, float] | None = None,
         gold: str = "1", n: int | None = None) -> Pool:  # fmt: skip
    candidates = [
        Candidate(node=i, answer=a, score=None if scores is None or a is None else scores[a])
        for i, a in enumerate(answers)
    ]
    return Pool.of(candidates, len(answers) if n is None else n, gold, same)


def binomial(k: int, j: int, p: float) -> float:
    return math.comb(k, j) * p**j * (1 - p) ** (k - j)


# -- exact numbers ---------------------------------------------------------------------


def test_hand_built_pool(same: MathEquivalence) -> None:
    """Four samples 1, 2, 1, 3 (gold 1): of the six pairs, (1,2), (1,3) and (1,3) are ties the
    answer found first wins, so the right answer wins 4 of 6; pass@2 misses only (2,3)."""
    four = pool(["1", "2", "1", "3"], same)
    assert vote_at_k(four, 2, "majority", samples=100, seed="").value == pytest.approx(4 / 6)
    assert pass_at_k(four, 2).value == pytest.approx(1 - 1 / 6)
    assert vote_at_k(four, 4, "majority", samples=100, seed="").value == 1.0
    assert vote_at_k(four, 1, "majority", samples=100, seed="").value == 0.5
    # Scores: 2 is scored highest, so best-of-k is right only when it is not drawn.
    scored = pool(["1", "2", "1", "3"], same, {"1": 0.5, "2": 0.9, "3": 0.1})
    assert best_at_k(scored, 2, samples=100, seed="").value == pytest.approx(3 / 6)
    # weighted: 1's 0.5 + 0.5 beats 2's 0.9 only when both 1s are drawn: 2 of the 4 triples
    assert vote_at_k(scored, 3, "weighted", samples=100, seed="").value == pytest.approx(2 / 4)


def test_unanswered_samples_never_vote(same: MathEquivalence) -> None:
    """N = 4 with two answered samples: a 2-subset holding neither has no answer (wrong)."""
    two = pool(["1", "2"], same, n=4)
    assert two.n == 4
    assert vote_at_k(two, 2, "majority", samples=100, seed="").value == pytest.approx(
        3 / 6
    )  # 1 alone or 1 first
    assert pass_at_k(two, 2).value == pytest.approx(3 / 6)


@pytest.mark.parametrize("p", [0.3, 0.6])
def test_binomial_closed_forms(same: MathEquivalence, p: float) -> None:
    """Samples right with probability p, else one wrong answer: averaged over every pool of N = 8
    (weighted by its probability), the curve at k is k independent samples' accuracy: majority
    is right with the binomial tail (a tie of an even k half the time: the answer found first
    wins it, and either is first alike), pass@k = 1 − (1 − p)^k, and weighted vote with scores
    .7 (right) and .4 (wrong) is right when 0.7·j > 0.4·(k − j)."""
    n = 8
    expected: dict[str, list[float]] = {"majority": [0.0] * n, "pass": [0.0] * n, "weighted": [0.0] * n}
    for rights in itertools.product([True, False], repeat=n):
        weight = p ** sum(rights) * (1 - p) ** (n - sum(rights))
        answers: list[str | None] = ["1" if r else "2" for r in rights]
        samples, scored = pool(answers, same), pool(answers, same, {"1": 0.7, "2": 0.4})
        for k in range(1, n + 1):
            votes = vote_at_k(samples, k, "majority", samples=10, seed="").value
            expected["majority"][k - 1] += weight * votes
            expected["weighted"][k - 1] += (
                weight * vote_at_k(scored, k, "weighted", samples=10, seed="").value
            )
            expected["pass"][k - 1] += weight * pass_at_k(samples, k).value
    for k in range(1, n + 1):
        tail = sum(binomial(k, j, p) for j in range(k // 2 + 1, k + 1))
        tie = binomial(k, k // 2, p) / 2 if k % 2 == 0 else 0.0
        assert expected["majority"][k - 1] == pytest.approx(tail + tie, abs=1e-12)
        assert expected["pass"][k - 1] == pytest.approx(1 - (1 - p) ** k, abs=1e-12)
        weighted = sum(binomial(k, j, p) for j in range(k + 1) if 0.7 * j > 0.4 * (k - j))
        assert expected["weighted"][k - 1] == pytest.approx(weighted, abs=1e-12)


def brute_force(samples: Pool, k: int, aggregator: Callable[..., str | None]) -> float:
    subsets = list(itertools.combinations(range(samples.n), k))
    return sum(
        samples.is_right(aggregator([samples.candidates[i] for i in s], [samples.groups[i] for i in s]))
        for s in subsets
    ) / len(subsets)


answer = st.sampled_from(["1", "2", "3", "1.0", None])  # 1.0 is 1: one group, two spellings


@given(
    answers=st.lists(answer, min_size=1, max_size=8),
    scores=st.fixed_dictionaries({a: st.sampled_from([0.25, 0.5, 0.75]) for a in ["1", "2", "3", "1.0"]}),
    spread=st.booleans(),
    unanswered=st.integers(0, 2),
)
def test_exact_expectations_are_the_aggregators_on_every_subset(
    answers: list[str | None], scores: dict[str, float], spread: bool, unanswered: int
) -> None:
    """Whatever the answers, ties, unanswered slots and scores (one per answer, so the count
    vectors decide, or spread over the candidates, so every subset is enumerated), each column
    equals the aggregators themselves run on every k-subset (majority vote on the candidates
    without their scores, as a majority-vote run has none)."""
    if spread:  # every candidate its own score: the vote depends on which members are drawn
        scored = [
            Candidate(node=i, answer=a, score=None if a is None else 0.1 + 0.05 * i)
            for i, a in enumerate(answers)
        ]
    else:
        scored = [
            Candidate(node=i, answer=a, score=None if a is None else scores[a]) for i, a in enumerate(answers)
        ]
    with MathEquivalence() as same:
        samples = Pool.of(scored, len(answers) + unanswered, "1", same)
    unscored = dataclasses.replace(
        samples, candidates=tuple(dataclasses.replace(c, score=None) for c in samples.candidates)
    )
    for k in range(1, samples.n + 1):
        many = math.comb(samples.n, k)
        assert vote_at_k(samples, k, "majority", samples=many, seed="").value == pytest.approx(
            brute_force(unscored, k, majority_vote), abs=1e-12
        )
        assert vote_at_k(samples, k, "weighted", samples=many, seed="").value == pytest.approx(
            brute_force(samples, k, weighted_vote), abs=1e-12
        )
        best = best_at_k(samples, k, samples=many, seed="").value
        assert best == pytest.approx(brute_force(samples, k, best_of_n), abs=1e-12)


def the_best_rule(candidates: list[Candidate], groups: list[int]) -> str | None:
    """A best-of-n run's own rule: majority vote where no candidate has a score."""
    return aggregate("best", candidates, groups)[0]


def test_best_of_k_falls_back_to_majority_in_subsets_without_a_score(same: MathEquivalence) -> None:
    """1 unscored, 1 scored 0.8, 2 unscored and 4 unanswered (gold 1): at k = 1 the scored 1
    wins its 1 of 7 draws, the unscored 1 its own by majority: 2/7, not 1/7."""
    candidates = [Candidate(node=0, answer="1"), Candidate(node=1, answer="1", score=0.8),
                  Candidate(node=2, answer="2")]  # fmt: skip
    samples = Pool.of(candidates, 7, "1", same)
    assert best_at_k(samples, 1, samples=100, seed="").value == pytest.approx(2 / 7)
    assert brute_force(samples, 1, the_best_rule) == pytest.approx(2 / 7)


@given(
    answers=st.lists(answer, min_size=1, max_size=8),
    scores=st.lists(st.sampled_from([None, None, 0.25, 0.5, 0.75]), min_size=8, max_size=8),
    unanswered=st.integers(0, 2),
)
def test_best_of_k_is_the_best_of_n_rule_with_missing_scores(
    answers: list[str | None], scores: list[float | None], unanswered: int
) -> None:
    """Whatever candidates lack a score, best-of-k equals the run's own rule (``aggregate``'s
    best, majority vote in a subset without a score) on every k-subset."""
    candidates = [Candidate(node=i, answer=a, score=None if a is None else s)
                  for i, (a, s) in enumerate(zip(answers, scores, strict=False))]  # fmt: skip
    with MathEquivalence() as same:
        samples = Pool.of(candidates, len(answers) + unanswered, "1", same)
    for k in range(1, samples.n + 1):
        many = math.comb(samples.n, k)
        best = best_at_k(samples, k, samples=many, seed="").value
        assert best == pytest.approx(brute_force(samples, k, the_best_rule), abs=1e-12)


def test_monte_carlo_within_its_error(same: MathEquivalence, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weighted vote with spread scores over 3,432 subsets, and majority vote over 12 answers
    given twice each (73,789 count vectors at k = 12): with 400 draws the estimate is Monte
    Carlo, flagged, and within four standard errors of the exact value (majority's with a
    higher vector limit); the same seed draws the same subsets."""
    rng = random.Random(5)
    spread = [Candidate(node=i, answer=rng.choice(["1", "2", "3"]), score=rng.random()) for i in range(14)]
    pairs = [Candidate(node=i, answer=str(1 + i % 12)) for i in range(24)]
    cases = {"weighted": (Pool.of(spread, 14, "1", same), 7), "majority": (Pool.of(pairs, 24, "1", same), 12)}
    for rule, (samples, k) in cases.items():
        drawn = vote_at_k(samples, k, rule, samples=400, seed="s")
        with monkeypatch.context() as patched:
            patched.setattr(curves, "EXACT_LIMIT", 10**6)
            exact = vote_at_k(samples, k, rule, samples=5000, seed="")
        assert not exact.sampled and drawn.sampled and drawn.variance > 0
        assert abs(drawn.value - exact.value) <= 4 * math.sqrt(drawn.variance), rule
        assert vote_at_k(samples, k, rule, samples=400, seed="s") == drawn


def test_tree_strategies_are_refused(same: MathEquivalence) -> None:
    with pytest.raises(ConfigError, match="assumes independent samples, and beam's candidates are not"):
        run_curve("r.jsonl", [row(strategy="beam")], same)


def row(**fields: object) -> dict[str, object]:
    return {
        "id": "a",
        "strategy": "majority-vote",
        "gold": "1",
        "candidates": [],
        "config": {"n": 4},
        **fields,
    }


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([row(candidates="x")], "row 'a' needs a list of at most N = 4 candidates"),
        ([row(candidates=[{"answer": "1"}])], "row 'a' needs a list of at most N = 4 candidates"),
        ([row(candidates=[{"node": i, "answer": "1"} for i in range(5)])], "at most N = 4 candidates"),
        ([row(config={})], r"row 'a' carries no N \(config.n\)"),
        ([row(config=[4])], "row 'a' has a config that is not an object"),
        ([row(config={"n": [4]})], r"row 'a': config.n is \[4\], not an integer ≥ 1"),
        ([row(config={"n": True})], "row 'a': config.n is true, not an integer ≥ 1"),
        ([row(usage={"prompt_tokens": 10**400})], "row 'a' has a usage that is not token counts"),
        (
            [row(), row(id="b", config={"n": 8})],
            r"several configurations \(majority-vote; N 4, 8\): one run per",
        ),
        ([row(gold=None)], "no row has a gold answer and no error"),
        ([row(usage={"prompt_tokens": "many"})], "row 'a' has a usage that is not token counts"),
    ],
)
def test_rows_that_are_not_a_sampling_run_are_one_error(
    rows: list[dict[str, object]], message: str, same: MathEquivalence
) -> None:
    with pytest.raises(ConfigError, match=message):
        run_curve("r.jsonl", rows, same)


def test_k_beyond_n_is_refused(same: MathEquivalence) -> None:
    with pytest.raises(ConfigError, match=r"k must be in 1\.\.4 \(the run's N\), got 8"):
        run_curve("r.jsonl", [row()], same, ks=[1, 8])


# -- a run's curve against separate runs on the synthetic server --------------------------

CURVE_N, SEPARATE = 16, {4: 2, 8: 3, 16: 4}  # N of a separate run: its seed
PER_LEVEL = 80


@dataclass(frozen=True)
class Runs:
    folder: Path
    curve: Path
    separate: dict[int, Path]
    weighted: Path
    best: Path


@pytest.fixture(scope="module")
def runs(fake_server: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """240 problems of three difficulties (right with .4, .6 and .75, one wrong answer): majority
    vote at N = 16 (seed 1) for the curve, and separate runs at N = 4, 8 and 16 (other seeds);
    weighted vote and best-of-N at N = 8 with the synthetic PRM, one seed (the same samples)."""
    chosen = [*problems("a", PER_LEVEL), *problems("b", PER_LEVEL), *problems("c", PER_LEVEL)]
    folder = tmp_path_factory.mktemp("curves")
    url = fake_server()

    async def all_runs() -> None:
        policy, prm = OpenAIPolicy(url, "fake"), PoolingPRM(url, "fake-prm")
        try:
            for n, seed, name in ((CURVE_N, 1, "curve"), *((n, s, f"n{n}") for n, s in SEPARATE.items())):
                config = SearchConfig(strategy="majority-vote", n=n, sampling=SamplingParams(seed=seed))
                await run(chosen, policy, config, output=folder / f"{name}.jsonl", keep_trees=False)
            for strategy in ("weighted-vote", "best-of-n"):
                config = SearchConfig(strategy=strategy, n=8, sampling=SamplingParams(seed=5))
                await run(
                    chosen,
                    policy,
                    config,
                    verifier=prm,
                    output=folder / f"{strategy}.jsonl",
                    keep_trees=False,
                )
        finally:
            await policy.aclose()
            await prm.aclose()

    anyio.run(all_runs)
    return Runs(
        folder=folder,
        curve=folder / "curve.jsonl",
        separate={n: folder / f"n{n}.jsonl" for n in SEPARATE},
        weighted=folder / "weighted-vote.jsonl",
        best=folder / "best-of-n.jsonl",
    )


def accuracy(path: Path) -> tuple[int, int]:
    rows = list(read_output(path).values())
    return sum(bool(row["correct"]) for row in rows), len(rows)


def mean_tokens(path: Path) -> float:
    rows = list(read_output(path).values())
    return sum(r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"] for r in rows) / len(rows)


def test_one_run_curve_within_the_separate_runs_intervals(runs: Runs, same: MathEquivalence) -> None:
    """The curve of one N = 16 run at k = 4, 8, 16 lies in the Wilson 95% interval of a separate
    run at N = k, and puts there the tokens that run spent (one request for the k samples, its
    prompt read once); at k = N it is the run's own accuracy (the only subset is the whole)."""
    curve = run_curve(runs.curve, read_output(runs.curve).values(), same)
    assert [p.k for p in curve.points] == [1, 2, 4, 8, 16] and not any(p.sampled for p in curve.points)
    assert curve.problems == 3 * PER_LEVEL and curve.points[0].weighted is None
    at = {p.k: p for p in curve.points}
    right, total = accuracy(runs.curve)
    assert at[16].majority == pytest.approx(right / total, abs=1e-12)
    for k, path in runs.separate.items():
        right, total = accuracy(path)
        low, high = wilson_interval(right, total) or (0.0, 1.0)
        print(f"k={k}: curve {at[k].majority:.4f}, separate run {right}/{total} = {right / total:.4f}, "
              f"Wilson 95% {low:.4f} to {high:.4f}")  # fmt: skip
        assert low <= at[k].majority <= high
        assert at[k].tokens == pytest.approx(mean_tokens(path), rel=0.01)
    assert at[1].pass_at_k == at[1].majority  # one sample: every rule is that sample
    assert all(a.pass_at_k <= b.pass_at_k for a, b in itertools.pairwise(curve.points))


def test_weighted_and_best_at_n_are_the_runs_own(runs: Runs, same: MathEquivalence) -> None:
    """A weighted-vote run and a best-of-N run on the same seeded samples: the curve of the first
    at k = N gives each run's own accuracy in its column."""
    curve = run_curve(runs.weighted, read_output(runs.weighted).values(), same)
    last = curve.points[-1]
    assert last.k == 8 and last.weighted is not None and last.best is not None
    assert last.weighted == pytest.approx(accuracy(runs.weighted)[0] / (3 * PER_LEVEL), abs=1e-12)
    assert last.best == pytest.approx(accuracy(runs.best)[0] / (3 * PER_LEVEL), abs=1e-12)
    assert last.tokens == pytest.approx(mean_tokens(runs.weighted))


# -- the command-line edge -----------------------------------------------------------------


def report_parser() -> argparse.ArgumentParser:
    """The report command's positional runs and --format, with the curve options added."""
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--format", default="table")
    add_curve_options(parser)
    return parser


def test_report_curves_prints_each_format_and_plots(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "curve.png"
    args = report_parser().parse_args([str(runs.weighted), "--curve", "--ks", "1,3,8", "--plot", str(png)])
    assert report_curves(args, read_runs(args.runs, "report")) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "run",
        "k",
        "tokens",
        "majority",
        "weighted",
        "best-of-k",
        "pass@k",
        "MC",
        "±",
    ]
    assert len([line for line in out.splitlines() if line.startswith(str(runs.weighted))]) == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    args = report_parser().parse_args([str(runs.curve), "--curve", "--format", "json"])
    assert report_curves(args, read_runs(args.runs, "report")) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["n"] == 16 and [p["k"] for p in record["points"]] == [1, 2, 4, 8, 16]
    assert record["points"][0]["weighted"] is None
    args = report_parser().parse_args([str(runs.curve), "--curve", "--format", "csv", "--ks", "2"])
    assert report_curves(args, read_runs(args.runs, "report")) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.startswith("run,strategy,n,problems,k,tokens,majority,") and row.split(",")[4] == "2"


@pytest.mark.parametrize("bad", ["0", "1,x", ""])
def test_bad_ks_are_one_line(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        report_parser().parse_args(["r.jsonl", "--curve", "--ks", bad])
    assert "expected comma-separated positive integers" in capsys.readouterr().err


def test_report_curve_command(runs: Runs) -> None:
    done = run_cli("report", str(runs.curve), "--curve", "--format", "md", "--ks", "1,16")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "| run | k | tokens | majority | weighted | best-of-k | pass@k | MC ± |"
    assert [line.split(" | ")[1] for line in lines[2:4]] == ["1", "16"]


def test_a_tree_strategy_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "beam.jsonl"
    path.write_text(json.dumps(row(strategy="beam")) + "\n", encoding="utf-8")
    done = run_cli("report", str(path), "--curve")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "assumes independent samples" in done.stderr


def test_plot_without_matplotlib_names_the_extra(runs: Runs, tmp_path: Path) -> None:
    """A matplotlib that fails to import (a shadowing package): one line naming the extra."""
    (tmp_path / "shadow" / "matplotlib").mkdir(parents=True)
    (tmp_path / "shadow" / "matplotlib" / "__init__.py").write_text("raise ImportError('absent')\n")
    png = tmp_path / "curve.png"
    done = run_cli(
        "report", str(runs.curve), "--curve", "--plot", str(png), env={"PYTHONPATH": str(tmp_path / "shadow")}
    )
    assert done.returncode == 2 and done.stdout == "" and not png.exists()
    assert done.stderr == "treesearch: error: --plot needs matplotlib: pip install 'treesearch[plots]'\n"
