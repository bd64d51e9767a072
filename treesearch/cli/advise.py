"""``treesearch advise``: a probe's results file in, the predicted accuracy against K out.

The probe is one ``treesearch run`` of majority-vote (or filter-vote, whose judge scores
add a filter-vote column) with several samples per problem; ``treesearch.predict_votes``
fits how difficulty spreads over the problems and predicts, exactly, the accuracy of voting
over K samples (Chen et al. 2024), with a bootstrap band. The table goes to stdout; a file
that cannot be read is one line on stderr.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from treesearch.cli.options import number
from treesearch.errors import ConfigError
from treesearch.optimal.votes import MAX_K
from treesearch.runs.rows import iter_rows

_DESCRIPTION = (
    "Predict majority-vote accuracy against the number of samples K (and filter-vote's, against "
    "calls, when a judge scored the probe) from a probe run's results (Chen et al. 2024, 'Are More "
    "LM Calls All You Need?'). More calls can hurt: problems whose likeliest answer is wrong get "
    "worse with K. How often a sample is right is fitted over all problems by maximum likelihood "
    "(a mixture of difficulty classes), not read off each problem's few samples; the vote accuracy "
    "is exact from it, with a bootstrap band over the problems. Probe with e.g. treesearch run "
    "--strategy majority-vote --n 16 --output probe.jsonl."
)


def _ks(text: str) -> list[int]:
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        ks = []
    if not ks or not all(1 <= k <= MAX_K for k in ks):
        raise argparse.ArgumentTypeError(f"must be a comma list of K from 1 to {MAX_K}, got {text!r}")
    return ks


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``treesearch advise`` to the top-level parser's subcommands."""
    parser = commands.add_parser(
        "advise", help="predict accuracy against K from a probe run (Chen et al.)", description=_DESCRIPTION
    )
    parser.add_argument("--results", required=True, type=Path, metavar="FILE.jsonl",
                        help="the probe's results file (treesearch run --output), one row per "
                        "problem, with gold answers")  # fmt: skip
    parser.add_argument(
        "--max-k",
        type=number(int, f"an integer from 1 to {MAX_K}", lambda v: 1 <= v <= MAX_K),
        default=64,
        help="predict K = 1..max-k (the cost grows as K³); the table shows a selection and the best",
    )
    parser.add_argument("--ks", type=_ks, default=None, metavar="K,K,...",
                        help="predict and show exactly these K instead (default: 1..--max-k)")  # fmt: skip
    parser.add_argument(
        "--bootstrap",
        type=number(int, "an integer from 0 to 10000", lambda v: 0 <= v <= 10_000),
        default=200,
        metavar="B",
        help="resample the problems B times, refitting each, for the 90%% bands (0: none; the "
        "cost is B curves: a few seconds at --max-k 64, about a minute at 1000)",
    )
    parser.set_defaults(handler=advise_command)


def advise_command(args: argparse.Namespace) -> int:
    """``treesearch advise``: prints the table; the exit code."""
    from treesearch.optimal.advise import predict_votes

    rows = read_rows(args.results)
    if not rows:
        raise ConfigError(f"{args.results} holds no rows")
    ks = args.ks or range(1, args.max_k + 1)
    prediction = predict_votes(rows, ks, resamples=args.bootstrap)
    if args.ks:
        shown = sorted(set(args.ks))
    else:
        picked = {k for k in range(1, 9)} | {args.max_k, prediction.best_vote_k}
        picked |= {2**i + d for i in range(4, 11) for d in (-1, 0)}
        if prediction.best_filter_k is not None:
            picked.add(prediction.best_filter_k)
        shown = sorted(k for k in picked if k <= args.max_k)
    print(render(prediction, shown))
    return 0


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file (the last row of an id wins, as a resumed run writes them);
    ConfigError or ProblemFileError, naming the line, for what is not one."""
    if not path.is_file():
        raise ConfigError(f"--results {path}: no such file")
    return list({str(row["id"]): row for row in iter_rows(path, "id", "results", strict=True)}.values())


def render(prediction: Any, shown: list[int]) -> str:
    """The table: one line per K of ``shown``, the best K of each column marked, the bootstrap
    band beside the vote."""
    found = prediction.estimate
    samples = found.samples
    low, high = min(samples), max(samples)
    each = (
        f"{low} samples each"
        if low == high
        else f"{low} to {high} samples (median {statistics.median(samples):g})"
    )
    lines = [f"estimated from {len(samples)} problems, {each}"]
    if found.skipped:
        skipped = ", ".join(f"{count} {reason}" for reason, count in found.skipped.items())
        lines[0] += f"; skipped {sum(found.skipped.values())} rows ({skipped})"
    mix = prediction.difficulty
    classes = sorted((p, w) for w, p in zip(mix.weights, mix.rights, strict=True) if w >= 0.005)
    shares = [f"{p:.2f} on {w:.0%}" for p, w in reversed(classes)]
    lines.append(f"difficulty fitted by maximum likelihood: a sample is right with p = {', '.join(shares)}")
    value = dict(zip(prediction.ks, prediction.vote, strict=True))
    band = dict(zip(prediction.ks, prediction.vote_band or (), strict=False))
    filtered = dict(zip(prediction.ks, prediction.filter_vote or (), strict=False))
    level = f"{prediction.level:.0%} band"
    header = f"{'K':>5}  {'vote':>7}" + (f"  {level:<14}" if band else "")
    lines.append((header + ("  filter-vote" if prediction.filter_vote else "")).rstrip())
    for k in shown:
        mark = "*" if k == prediction.best_vote_k else " "
        line = f"{k:>5}  {value[k]:7.3f}{mark}"
        if band:
            line += f" {band[k][0]:.3f} to {band[k][1]:.3f}"
        if prediction.filter_vote and filtered.get(k) is not None:
            mark = "*" if k == prediction.best_filter_k else " "
            line += f"  {filtered[k]:10.3f}{mark}"
        lines.append(line.rstrip())
    best = f"* best: vote at K={prediction.best_vote_k} ({value[prediction.best_vote_k]:.3f})"
    if prediction.best_vote_k_band is not None:
        first, last = prediction.best_vote_k_band
        resamples = f"{prediction.resamples} resamples of the problems"
        span = f"K={first}" if first == last else f"K={first} to {last}"
        best += f", {span} in {prediction.level:.0%} of {resamples}"
    if prediction.best_filter_k is not None:
        k = prediction.best_filter_k
        best += f"; filter-vote at K={k} calls ({k // 2} samples, each judged; {filtered[k]:.3f})"
    lines.append(best)
    if max(shown) > low:
        lines.append(f"K above {low} extrapolates from the fitted difficulty classes")
    return "\n".join(lines)
