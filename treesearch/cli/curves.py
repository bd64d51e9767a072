"""``treesearch report --curve``: a sampling run's accuracy at every k up to its N, from its rows
alone (``treesearch.evaluate.curves``), as a table in the report's formats and a plot.

The report command adds these options with ``add_curve_options`` and hands its parsed
arguments to ``report_curves`` when ``--curve`` is given.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from treesearch.cli.options import number
from treesearch.errors import ConfigError
from treesearch.evaluate.curves import DEFAULT_SAMPLES, plot_curves, render, run_curve

if TYPE_CHECKING:
    from treesearch.evaluate.report import Run

SAMPLES = number(int, "an integer >= 2", lambda value: value >= 2)


def _ks(text: str) -> list[int]:
    try:
        ks = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        ) from None
    if any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return ks


def add_curve_options(parser: argparse.ArgumentParser) -> None:
    """``--curve`` and its options, on the report command's parser."""
    group = parser.add_argument_group(
        "scaling curves (--curve)",
        "The expected accuracy of majority vote, weighted vote, best-of-k and pass@k at k samples, "
        "from one sampling run's N candidates per problem (majority-vote, best-of-n, weighted-vote): "
        "exact over the k-subsets where cheap, else Monte Carlo with its standard error.",
    )
    group.add_argument("--curve", action="store_true", help="report the scaling curve of each run instead")
    group.add_argument("--ks", type=_ks, metavar="K,K,...", help="the k to report (default: 1, 2, 4, ... N)")
    group.add_argument("--samples", type=SAMPLES, default=DEFAULT_SAMPLES, help="Monte Carlo k-subsets a "
                       "problem and k, where there are more than this; fewer are all enumerated")  # fmt: skip
    group.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo draws")
    group.add_argument("--plot", metavar="PLOT.png", help="also draw the curves to this file, in the format "
                       "its suffix names (.png, .pdf, .svg: any matplotlib writes; the plots extra) "
                       "(default: no plot)")  # fmt: skip


def report_curves(args: argparse.Namespace, runs: Sequence[Run]) -> int:
    """Print the curve of each of ``runs`` (``args.runs``, read by the report command) in
    ``args.format`` (and draw ``args.plot``)."""
    from treesearch.answers.equivalence import MathEquivalence

    if getattr(args, "by", None):
        raise ConfigError("--curve takes no --by: a curve is over all of a run's problems")
    with MathEquivalence() as same:
        curves = [
            run_curve(run.name, run.rows, same, ks=args.ks, samples=args.samples, seed=args.seed)
            for run in runs
        ]
    if args.plot:  # before printing: without matplotlib, one error line and no table
        plot_curves(curves, args.plot)
    print(render(curves, args.format))
    return 0
