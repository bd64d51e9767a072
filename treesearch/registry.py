"""Backends by name: ``openai``, and whatever plug-ins declare.

Adapters register under the ``treesearch.backends`` entry-point group (ours in
this project's pyproject.toml), so core code never imports an adapter module
and a third-party backend is a package, not a fork.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from treesearch.errors import ConfigError

GROUP = "treesearch.backends"


def backend_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def make_backend(name: str, /, **options: Any) -> Any:
    """Build the backend registered as ``name`` with ``options``."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise ConfigError(f"unknown backend {name!r}; installed: {', '.join(backend_names())}")
    factory = found[0].load()
    return factory(**options)
