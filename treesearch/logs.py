"""Logging set-up for the edges (the command line, or a run with no set-up of its own).

Library modules only call ``get_logger(__name__)`` from here: silent until the
application (or the command line, through ``configure``) configures structlog. Events are
dictionaries with stable keys: ``request``, ``node_added``, ``node_scored``,
``endpoint_ignores_n``, ``problem_finished``, ``problem_failed``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TextIO

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


class _QuietUntilConfigured:
    """A library logger that stays silent until the application configures structlog (whose
    own default prints every event to stdout), and then logs through that configuration.
    The library never configures structlog itself."""

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}

    def bind(self, **values: Any) -> _QuietUntilConfigured:
        return _QuietUntilConfigured(self._name, self._context | values)

    def _emit(self, level: str, event: str, values: dict[str, Any]) -> None:
        if structlog.is_configured():
            getattr(structlog.get_logger(self._name), level)(event, **self._context, **values)

    def debug(self, event: str, **values: Any) -> None:
        self._emit("debug", event, values)

    def info(self, event: str, **values: Any) -> None:
        self._emit("info", event, values)

    def warning(self, event: str, **values: Any) -> None:
        self._emit("warning", event, values)


def get_logger(name: str) -> _QuietUntilConfigured:
    """What library modules log with: ``log = get_logger(__name__)``."""
    return _QuietUntilConfigured(name)
