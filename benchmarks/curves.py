"""What the accuracy benchmarks share: per-level rows of results, and the accuracy-against-tokens plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib  # the bench extra; imported here so a missing one fails before a long run

from treesearch import SearchResult

matplotlib.use("Agg")


def summarise(
    results: Sequence[SearchResult], levels: Mapping[str, str], **keys: Any
) -> list[dict[str, Any]]:
    """One row per level (``levels`` maps its name to its problems' id prefix) and one for all,
    each carrying ``keys`` and the mean accuracy, tokens and requests per problem."""
    rows = []
    for level, prefix in [*levels.items(), ("all", "")]:
        mine = [r for r in results if r.problem_id.startswith(prefix)]
        rows.append({
            **keys, "level": level,
            "accuracy": sum(bool(r.correct) for r in mine) / len(mine),
            "completion_tokens": sum(r.usage.completion_tokens for r in mine) / len(mine),
            "total_tokens": sum(r.usage.total_tokens for r in mine) / len(mine),
            "requests": sum(r.usage.requests for r in mine) / len(mine),
        })  # fmt: skip
    return rows


def plot(
    rows: Sequence[dict[str, Any]],
    key: str,
    title: str,
    path: Path,
    *,
    log_x: bool = False,
    tokens: str = "completion_tokens",
) -> None:
    """Accuracy against generated tokens (``tokens``: "total_tokens", prompts included), a panel
    per level, a line per value of ``rows[i][key]``."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    levels = list(dict.fromkeys(r["level"] for r in rows))
    series = list(dict.fromkeys(r[key] for r in rows))
    columns = len(levels) if len(levels) <= 4 else 3  # more panels wrap onto rows of three
    lines = -(-len(levels) // columns)
    figure, grid = plt.subplots(
        lines, columns, figsize=(5 * columns, 4.2 * lines), sharey=True, squeeze=False
    )
    axes = [axis for row in grid for axis in row]
    for spare in axes[len(levels) :]:
        spare.set_visible(False)
    for axis, level in zip(axes, levels, strict=False):
        for name in series:
            mine = sorted((r for r in rows if r[key] == name and r["level"] == level),
                          key=lambda r: r[tokens])  # fmt: skip
            axis.plot([r[tokens] for r in mine], [r["accuracy"] for r in mine],
                      marker="o", label=name)  # fmt: skip
        if log_x:
            axis.set_xscale("log")
            axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.xaxis.set_major_formatter(ScalarFormatter())
            axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_title(level)
        axis.set_xlabel("tokens per problem" if tokens == "total_tokens" else "generated tokens per problem")
        axis.grid(alpha=0.3)
    for row in grid:
        row[0].set_ylabel("accuracy")
    axes[len(levels) - 1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
