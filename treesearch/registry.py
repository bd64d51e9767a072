"""Backends by name: ``openai``, and whatever plug-ins declare.

Adapters register under the ``treesearch.backends`` entry-point group (ours in
this project's pyproject.toml), so core code never imports an adapter module
and a third-party backend is a package, not a fork.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal, overload

from treesearch.errors import ConfigError

if TYPE_CHECKING:
    from treesearch.engine.policy import Policy
    from treesearch.engine.verify import Verifier

GROUP = "treesearch.backends"


def backend_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


@overload
def make_backend(name: Literal["openai"], /, **options: Any) -> Policy: ...
@overload
def make_backend(name: Literal["vllm-pooling", "logprob", "judge"], /, **options: Any) -> Verifier: ...
@overload
def make_backend(name: str, /, **options: Any) -> Any: ...


def make_backend(name: str, /, **options: Any) -> Any:
    """Build the backend registered as ``name`` with ``options``: ours are typed by name (a
    Policy, a Verifier); a plug-in's, or the embedded endpoint (``llamacpp``), is what its
    factory returns."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise ConfigError(f"unknown backend {name!r}; installed: {', '.join(backend_names())}")
    factory = found[0].load()
    return factory(**options)
