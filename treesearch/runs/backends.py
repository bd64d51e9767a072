"""Where a run's model and verifier are, and opening them: a BackendSpec is a plain,
picklable description (the command line builds one from its options, a Ray task receives
one and opens its own), and ``open_backends`` checks the model against the server's list
and builds the endpoints, policy, verifier and completion check, closing them after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from treesearch.answers.equivalence import MathEquivalence

# Runs open adapters by description, as the command line did before them.
from treesearch.backends.endpoint import Endpoint, server_root
from treesearch.backends.verifiers import FINISHED_TEMPLATE
from treesearch.engine.policy import Policy
from treesearch.engine.thinking import ThinkTags
from treesearch.engine.verify import Verifier
from treesearch.errors import ConfigError
from treesearch.registry import make_backend


@dataclass(frozen=True, kw_only=True, slots=True)
class BackendSpec:
    """``backend`` "openai" (``base_urls``, a pool when several) or "llamacpp" (the embedded
    model, ``model_file`` or the bundled one); ``verifier`` a verifier backend's kind built
    on the policy's server or on ``prm_urls`` (None: no verifier, or one given ready to
    ``open_backends``); ``completion_check`` "judge" adds the policy's own yes/no judge;
    ``system_prompt`` and ``prompt_template`` replace the policy's own when given, as
    ``think_tags`` do the policy's default tags. Keys are kept out of the repr."""

    backend: str = "openai"
    base_urls: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None
    model_file: Path | None = None
    api: str = "completions"
    think_tags: ThinkTags | None = None
    concurrency: int = 256
    timeout_s: float = 600.0
    verifier: str | None = None
    prm_urls: tuple[str, ...] | None = None
    prm_api_key: str | None = field(default=None, repr=False)
    prm_model: str | None = None
    prm_step_tag: str = "<extra_0>"
    prm_good_column: int = 1
    completion_check: str = "pattern"
    answer_timeout: float = 2.0
    system_prompt: str | None = None
    prompt_template: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Backends:
    """What a run works on, opened by ``open_backends`` and closed after it."""

    model: str
    policy: Policy
    verifier: Verifier | None
    finish_check: Verifier | None
    equivalence: MathEquivalence
    endpoint: Any  # the policy's server, for policies of other models on it
    servers: list[Any]  # every endpoint opened (the policy's first), for their replica counts


@asynccontextmanager
async def open_backends(spec: BackendSpec, verifier: Verifier | None = None) -> AsyncIterator[Backends]:
    """The backends ``spec`` describes (``verifier``: one built already, when ``spec`` names
    none), the model checked first; every endpoint and the answer checker are closed after,
    shielded from cancellation."""
    endpoint = _endpoint(spec)
    opened = [endpoint]
    equivalence = MathEquivalence(timeout_s=spec.answer_timeout)
    try:
        model = await _model(spec, endpoint)
        if spec.verifier is not None:
            verifier = _verifier(spec, model, endpoint, opened)
        finish_check = (
            make_backend("logprob", base_url=endpoint, model=model, template=FINISHED_TEMPLATE)
            if spec.completion_check == "judge"
            else None
        )
        prompts = {"system_prompt": spec.system_prompt, "prompt_template": spec.prompt_template}
        prompts = {name: text for name, text in prompts.items() if text is not None}
        policy = make_backend(
            "openai", base_url=endpoint, model=model, api=spec.api, think_tags=spec.think_tags, **prompts
        )
        yield Backends(
            model=model,
            policy=policy,
            verifier=verifier,
            finish_check=finish_check,
            equivalence=equivalence,
            endpoint=endpoint,
            servers=opened,
        )
    finally:
        with anyio.CancelScope(shield=True):
            equivalence.close()
            for server in opened:
                await server.aclose()


def replica_counts(servers: list[Any]) -> list[list[dict[str, Any]]]:
    """Each server's per-replica requests, tokens and errors (a list per server)."""
    return [[replica.counts() for replica in getattr(server, "replicas", ())] for server in servers]


def _endpoint(spec: BackendSpec) -> Any:
    """The policy's server: an OpenAI-compatible URL (or pool), or the embedded llama.cpp model."""
    if spec.backend == "llamacpp":
        if spec.api != "completions":
            raise ConfigError("the embedded llama.cpp backend serves completions only")
        return make_backend("llamacpp", model_path=spec.model_file)
    if not spec.base_urls:
        raise ConfigError("--base-url is required (or --backend llamacpp for the embedded model)")
    return Endpoint(
        list(spec.base_urls), api_key=spec.api_key, concurrency=spec.concurrency, timeout_s=spec.timeout_s
    )


def _verifier(spec: BackendSpec, model: str, endpoint: Any, opened: list[Any]) -> Verifier:
    """The verifier backend ``spec.verifier`` on the policy's server, or on ``prm_urls`` (a
    new endpoint, added to ``opened`` for the caller to close)."""
    assert spec.verifier is not None
    options: dict[str, Any] = {}
    server = endpoint
    key = spec.prm_api_key or spec.api_key
    if spec.verifier == "vllm-pooling":  # vLLM serves /pooling outside /v1: its own endpoint at the root
        options = {"step_tag": spec.prm_step_tag, "good_column": spec.prm_good_column}
        roots = [server_root(url) for url in spec.prm_urls or spec.base_urls]
        server = Endpoint(roots, api_key=key, concurrency=spec.concurrency, timeout_s=spec.timeout_s)
        opened.append(server)
    elif spec.prm_urls is not None:
        urls = list(spec.prm_urls)
        server = Endpoint(urls, api_key=key, concurrency=spec.concurrency, timeout_s=spec.timeout_s)
        opened.append(server)
    made: Verifier = make_backend(spec.verifier, base_url=server, model=spec.prm_model or model, **options)
    return made


async def _model(spec: BackendSpec, endpoint: Any) -> str:
    """The model to ask for, checked before any problem runs. A server that lists its models
    (GET /models) must list ``spec.model``, which may be left out when it lists just one;
    one without the route is taken at its word. The embedded model answers to any name."""
    if spec.backend == "llamacpp":
        await endpoint.ping()  # loads the model
        return str(spec.model or "gemma-3-270m")
    served: list[str] | None = await endpoint.models()
    where = endpoint.base_url
    if served is None:
        if spec.model is None:
            raise ConfigError(f"--model is required: {where} does not list its models")
        return str(spec.model)
    if spec.model is None:
        if len(served) == 1:
            return served[0]
        raise ConfigError(f"--model is required: {where} serves {_names(served)}")
    if spec.model not in served and f"{spec.model}:latest" not in served:  # Ollama's tags
        raise ConfigError(f"{where} does not serve model {spec.model!r}; it lists {_names(served)}")
    return str(spec.model)


def _names(models: list[str]) -> str:
    shown = ", ".join(models[:10])
    return shown if len(models) <= 10 else f"{shown} and {len(models) - 10} more"
