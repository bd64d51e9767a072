"""The figures ``report --curve --plot`` and ``compare -o`` draw: matplotlib imported where
used (the ``plots`` extra), and one error line for a missing extra or a file that cannot be
written, in the format its suffix names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from treesearch.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@contextmanager
def figure(path: str | Path, needs: str) -> Iterator[Axes]:
    """Axes to draw on, saved to ``path`` when the block ends (PNG, PDF, SVG: any format
    matplotlib writes). ``needs`` names the option that asked for it in the error a missing
    matplotlib gives ("compare -o needs matplotlib: ...")."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(f"{needs} needs matplotlib: pip install 'treesearch[plots]'") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    drawn, axes = pyplot.subplots(figsize=(7, 4.5))
    try:
        yield axes
        drawn.tight_layout()
        try:
            drawn.savefig(path, dpi=120)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
        except ValueError as exc:  # a suffix matplotlib has no writer for
            raise ConfigError(f"cannot write {path}: {exc}") from None
    finally:
        pyplot.close(drawn)
