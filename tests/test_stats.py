"""The statistics of report and compare, checked against scipy (a dev dependency only: the
package itself never imports it) and on the edges where a naive formula divides by zero."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from treesearch.evaluate.stats import (
    mcnemar_exact,
    paired_difference,
    percentile,
    seed_interval,
    t_quantile,
    wilson_interval,
)

# (successes, trials): 0/n, n/n, 1 trial, halves, the odd and the large.
WILSON_CASES = [(0, 1), (1, 1), (0, 10), (10, 10), (5, 10), (1, 3), (2, 7), (13, 37), (250, 500), (499, 500),
                (1, 500), (0, 500), (3127, 5000)]  # fmt: skip
CONFIDENCES = [0.5, 0.9, 0.95, 0.99, 0.999]


@pytest.mark.parametrize("confidence", CONFIDENCES)
@pytest.mark.parametrize(("successes", "trials"), WILSON_CASES)
def test_wilson_matches_scipy(successes: int, trials: int, confidence: float) -> None:
    ours = wilson_interval(successes, trials, confidence)
    theirs = scipy.stats.binomtest(successes, trials).proportion_ci(confidence, method="wilson")
    assert ours == pytest.approx((theirs.low, theirs.high), abs=1e-12)
    assert 0.0 <= ours[0] <= successes / trials <= ours[1] <= 1.0


def test_wilson_without_trials_is_none_and_bad_counts_are_refused() -> None:
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError, match=r"successes must be in 0\.\.3"):
        wilson_interval(4, 3)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 3, 1.0)


# (only A right, only B right): one pair, ties, lopsided, large (big-integer sums took 43 s at
# 20,300 pairs), tiny p-values.
MCNEMAR_CASES = [(1, 0), (0, 1), (1, 1), (3, 3), (5, 0), (0, 9), (7, 2), (12, 30), (40, 41), (100, 60),
                 (1000, 1100), (0, 1200), (200, 700), (10_000, 10_300), (1_000_000, 1_003_000)]  # fmt: skip


@pytest.mark.parametrize(("only_a", "only_b"), MCNEMAR_CASES)
def test_mcnemar_matches_scipys_binomial_test_on_the_discordant_pairs(only_a: int, only_b: int) -> None:
    theirs = scipy.stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar_exact(only_a, only_b) == pytest.approx(theirs, rel=1e-9, abs=1e-300)
    assert mcnemar_exact(only_a, only_b) == mcnemar_exact(only_b, only_a)


def test_mcnemar_with_no_discordant_pair_is_one() -> None:
    # scipy refuses n = 0; no discordant pair is no evidence of a difference.
    assert mcnemar_exact(0, 0) == 1.0


def test_the_paired_bootstrap_is_the_bootstrap_of_the_problems() -> None:
    """Drawing each resample's counts gives the interval resampling the problems does."""
    rng = random.Random(3)
    a = [rng.random() < 0.6 for _ in range(400)]
    b = [x if rng.random() < 0.7 else rng.random() < 0.5 for x in a]
    found = paired_difference(a, b, resamples=20_000, seed=5)
    assert found is not None
    outcomes = np.array(a, dtype=float) - np.array(b, dtype=float)
    picks = np.random.default_rng(0).integers(0, len(a), size=(20_000, len(a)))
    expected = np.percentile(outcomes[picks].mean(axis=1), [2.5, 97.5])
    assert found.interval == pytest.approx(tuple(expected), abs=0.006)
    assert found.difference == pytest.approx(outcomes.mean())
    assert found.interval[0] < found.difference < found.interval[1]
    assert (found.only_a, found.only_b) == (int((outcomes > 0).sum()), int((outcomes < 0).sum()))
    assert found.p_value == pytest.approx(
        scipy.stats.binomtest(found.only_a, found.only_a + found.only_b).pvalue
    )


def test_the_paired_bootstrap_scales_to_a_hundred_thousand_problems() -> None:
    """Drawing counts, not problems: 100,000 problems (which took minutes when each distinct
    draw built a table the size of the problem count) give the normal interval of the mean
    difference."""
    rng = random.Random(4)
    a = [rng.random() < 0.6 for _ in range(100_000)]
    b = [x if rng.random() < 0.8 else rng.random() < 0.5 for x in a]
    found = paired_difference(a, b, resamples=4_000, seed=1)
    assert found is not None
    outcomes = np.array(a, dtype=float) - np.array(b, dtype=float)
    half = 1.959964 * outcomes.std() / np.sqrt(len(a))
    assert found.interval == pytest.approx((outcomes.mean() - half, outcomes.mean() + half), abs=4e-4)


def test_the_paired_bootstrap_is_seeded() -> None:
    a, b = [True, False, True, True, False] * 20, [False, False, True, False, True] * 20
    first, again = paired_difference(a, b, seed=1), paired_difference(a, b, seed=1)
    assert first == again
    assert first != paired_difference(a, b, seed=2)


@pytest.mark.parametrize(
    ("a", "b", "difference", "interval", "p_value"),
    [
        ([True], [False], 1.0, (1.0, 1.0), 1.0),  # one pair
        ([True, False, True], [True, False, True], 0.0, (0.0, 0.0), 1.0),  # all concordant
        ([True] * 4, [True] * 4, 0.0, (0.0, 0.0), 1.0),  # n/n both
        ([False] * 4, [True] * 4, -1.0, (-1.0, -1.0), 0.125),  # 0/n against n/n
    ],
)
def test_the_paired_difference_on_its_edges(
    a: list[bool], b: list[bool], difference: float, interval: tuple[float, float], p_value: float
) -> None:
    found = paired_difference(a, b, resamples=500)
    assert found is not None
    assert (found.difference, found.interval, found.p_value) == (difference, interval, p_value)


def test_no_pairs_is_none_and_unequal_lengths_are_refused() -> None:
    assert paired_difference([], []) is None
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([True], [True, False])


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 29, 30, 100])
@pytest.mark.parametrize("probability", [0.75, 0.95, 0.975, 0.995, 0.9995])
def test_t_quantile_matches_scipy(df: int, probability: float) -> None:
    assert t_quantile(probability, df) == pytest.approx(scipy.stats.t.ppf(probability, df), rel=1e-9)


def test_seed_interval_is_scipys_t_interval() -> None:
    accuracies = [0.61, 0.64, 0.58, 0.66]
    found = seed_interval(accuracies, 0.95)
    assert found is not None and found.interval is not None
    expected = scipy.stats.t.interval(0.95, 3, loc=np.mean(accuracies), scale=scipy.stats.sem(accuracies))
    assert found.interval == pytest.approx(expected, rel=1e-9)
    assert (found.mean, found.seeds) == (pytest.approx(0.6225), 4)


def test_seed_interval_edges() -> None:
    assert seed_interval([]) is None
    one = seed_interval([0.5])
    assert one is not None and (one.mean, one.interval) == (0.5, None)
    same = seed_interval([0.5, 0.5, 0.5])
    assert same is not None and same.interval == (0.5, 0.5)
    wide = seed_interval([0.2, 0.9])  # t with 1 degree of freedom: ±4.4, clipped to accuracies
    assert wide is not None and wide.interval == (0.0, 1.0)


def test_percentile_matches_numpy() -> None:
    values = [random.Random(9).random() for _ in range(17)]
    for q in (0, 2.5, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([4.0], 95) == 4.0


def test_the_package_never_imports_scipy_and_these_modules_not_numpy() -> None:
    """scipy and numpy are dev dependencies; the statistics run on a plain install."""
    root = Path(__file__).parent.parent / "treesearch"
    for module in root.rglob("*.py"):
        banned = {"scipy", "numpy"} if module.stem in {"stats", "report", "compare"} else {"scipy"}
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
                )
                assert not any(str(name).split(".")[0] in banned for name in names), module
