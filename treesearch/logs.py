"""Logging set-up for the edges (the command line, or a run with no set-up of its own).

Library modules only call ``structlog.get_logger(__name__)``. Events are
dictionaries with stable keys: ``request``, ``node_added``, ``node_scored``,
``endpoint_ignores_n``, ``problem_finished``, ``problem_failed``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TextIO

import structlog


def configure(json_path: str | Path | None) -> TextIO | None:
    """JSON events, one a line, appended to ``json_path``; with no path, only errors are kept
    (and dropped), so a run prints nothing but its progress. Returns the open file, if any."""
    if json_path is None:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
        return None
    handle = Path(json_path).open("a", encoding="utf-8")  # noqa: SIM115 - the caller closes it
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.WriteLoggerFactory(file=handle),
        cache_logger_on_first_use=True,
    )
    return handle


def configure_quietly_unless_configured() -> None:
    """A library call made by an application that never set structlog up stays silent,
    rather than printing every event to stdout (structlog's own default)."""
    if not structlog.is_configured():
        configure(None)
