"""What every command that talks to a model sets up from its arguments: the SearchConfig,
the endpoint, policy, verifier and completion check (``drive`` opens and closes them around
the command's work, under a signal watcher so Ctrl-C and SIGTERM end it in order), and the
replica counts and model sizes its closing lines report. Keys are sent, never shown.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

from treesearch.answers.equivalence import MathEquivalence

# The command line is an edge: it may build adapters directly.
from treesearch.backends.endpoint import Endpoint, server_root
from treesearch.backends.verifiers import FINISHED_TEMPLATE
from treesearch.engine.budget import BudgetLimits, ModelSizes
from treesearch.engine.config import OPTIONS, SearchConfig
from treesearch.engine.policy import Policy, SamplingParams
from treesearch.engine.search import check_config
from treesearch.engine.steps import StepFormat
from treesearch.engine.taskgroups import most_telling
from treesearch.engine.verify import CallableVerifier, Verifier
from treesearch.errors import ConfigError
from treesearch.logs import configure, get_logger
from treesearch.optimal.difficulty import PolicyTable
from treesearch.registry import backend_names, make_backend

log = get_logger(__name__)


T = TypeVar("T")


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The SearchConfig of a command's arguments: each of SearchConfig's options the command
    takes (run takes them all; a command without one keeps its default), and the sampling,
    step format and budget of the search options."""
    given = vars(args)
    options = {name: given[name] for name in OPTIONS if name in given}
    options["policy_table"] = _policy_table(args)
    return SearchConfig(
        **options,
        whole=args.sampling == "whole",
        sampling=SamplingParams(temperature=args.temperature, top_p=args.top_p, seed=args.seed),
        step=StepFormat(
            delimiter=args.step_delimiter,
            end_stops=tuple(args.stop),
            max_step_tokens=args.max_step_tokens,
            max_depth=args.max_depth,
            max_tokens=args.max_tokens,
            answer_pattern=args.answer_pattern,
        ),
        budget=BudgetLimits(
            tokens=args.budget_tokens,
            requests=args.budget_requests,
            deadline_s=args.budget_seconds,
            count_prompt=args.budget_count == "total",
        ),
    )


def _policy_table(args: argparse.Namespace) -> PolicyTable | None:
    """--policy-table, read when the strategy is adaptive (which needs it)."""
    if getattr(args, "strategy", None) != "adaptive":
        if getattr(args, "policy_table", None) is not None:
            raise ConfigError("--policy-table is for --strategy adaptive")
        return None
    if args.policy_table is None:
        raise ConfigError(
            "--strategy adaptive needs --policy-table T.json (treesearch fit-adaptive writes one)"
        )
    return PolicyTable.load(args.policy_table)


# Backends that generate rather than score: never a --verifier.
_POLICY_BACKENDS = frozenset({"openai", "llamacpp"})


def _verifier_kinds() -> str:
    kinds = [name for name in backend_names() if name not in _POLICY_BACKENDS]
    return f"{', '.join(kinds)} or MODULE:FUNCTION"


def verifier_choice(args: argparse.Namespace, config: SearchConfig) -> Verifier | str | None:
    """What --verifier (or --prm-url) asks for, checked before any request is sent: a Python
    function's verifier, ready; the name of a verifier backend, built once the model is
    known; or None, which the strategy and aggregator must be able to do without."""
    kind = args.verifier or ("vllm-pooling" if args.prm_url else None)
    if kind is None:
        try:  # --strategy and --aggregator are parser choices: only the verifier can be missing
            check_config(config, None)
        except ConfigError as exc:
            raise ConfigError(
                f"{exc}: give one with --prm-url URL (a PRM served by vLLM) or --verifier KIND"
                f" ({_verifier_kinds()})"
            ) from None
        return None
    if ":" in kind:
        module_name, _, function_name = kind.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"cannot load verifier {kind!r}: {exc}") from exc
        return CallableVerifier(function)
    if kind in _POLICY_BACKENDS or kind not in backend_names():
        raise ConfigError(f"unknown verifier {kind!r}; choose {_verifier_kinds()}")
    if kind == "vllm-pooling" and not (args.prm_url or base_urls(args)):
        raise ConfigError("--verifier vllm-pooling needs --prm-url (a vLLM server)")
    return kind


def _verifier(args: argparse.Namespace, kind: str, model: str, endpoint: Any, opened: list[Any]) -> Verifier:
    """The verifier backend ``kind`` on the policy's server, or on --prm-url (a new endpoint,
    added to ``opened`` for the caller to close)."""
    options: dict[str, Any] = {}
    server = endpoint
    key = args.prm_api_key or api_key(args)
    if kind == "vllm-pooling":  # vLLM serves /pooling outside /v1: its own endpoint at the root
        options = {"step_tag": args.prm_step_tag, "good_column": args.prm_good_column}
        roots = [server_root(url) for url in args.prm_url or base_urls(args)]
        server = Endpoint(roots, api_key=key, concurrency=args.concurrency, timeout_s=args.timeout_s)
        opened.append(server)
    elif args.prm_url is not None:
        server = Endpoint(args.prm_url, api_key=key, concurrency=args.concurrency, timeout_s=args.timeout_s)
        opened.append(server)
    verifier: Verifier = make_backend(kind, base_url=server, model=args.prm_model or model, **options)
    return verifier


def api_key(args: argparse.Namespace) -> str | None:
    """--api-key, else $OPENAI_API_KEY: read here rather than as the option's default, so
    ``--help`` (which shows every default) never prints it."""
    key: str | None = args.api_key or os.environ.get("OPENAI_API_KEY")
    return key


def _endpoint(args: argparse.Namespace) -> Any:
    """The policy's server: an OpenAI-compatible URL, or the embedded llama.cpp model."""
    if args.backend == "llamacpp":
        if args.api != "completions":
            raise ConfigError("the embedded llama.cpp backend serves completions only")
        return make_backend("llamacpp", model_path=args.model_file)
    urls = base_urls(args)
    if not urls:
        raise ConfigError("--base-url is required (or --backend llamacpp for the embedded model)")
    return Endpoint(urls, api_key=api_key(args), concurrency=args.concurrency, timeout_s=args.timeout_s)


def base_urls(args: argparse.Namespace) -> list[str]:
    """--base-url's URLs and --pool-file's lines (blank lines and # comments skipped)."""
    urls = list(args.base_url or [])
    if args.pool_file is not None:
        try:
            lines = args.pool_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read --pool-file {args.pool_file}: {exc.strerror}") from None
        urls += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return urls


async def _model(args: argparse.Namespace, endpoint: Any) -> str:
    """The model to ask for, checked before any problem runs. A server that lists its models
    (GET /models) must list --model, which may be left out when it lists just one; one
    without the route is taken at its word. The embedded model answers to any name."""
    if args.backend == "llamacpp":
        await endpoint.ping()  # loads the model
        return str(args.model or "gemma-3-270m")
    served: list[str] | None = await endpoint.models()
    where = endpoint.base_url
    if served is None:
        if args.model is None:
            raise ConfigError(f"--model is required: {where} does not list its models")
        return str(args.model)
    if args.model is None:
        if len(served) == 1:
            return served[0]
        raise ConfigError(f"--model is required: {where} serves {_names(served)}")
    if args.model not in served and f"{args.model}:latest" not in served:  # Ollama's tags
        raise ConfigError(f"{where} does not serve model {args.model!r}; it lists {_names(served)}")
    return str(args.model)


def _names(models: list[str]) -> str:
    shown = ", ".join(models[:10])
    return shown if len(models) <= 10 else f"{shown} and {len(models) - 10} more"


def writable_file(flag: str, path: Path) -> None:
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give the path of a file")
    _make_folder(flag, path, path.parent)
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise ConfigError(f"{flag} {path} cannot be written: permission denied")


def _make_folder(flag: str, path: Path, folder: Path) -> None:
    blocking = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ConfigError(f"{flag} {path}: {blocking} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create the folder {folder}: {exc.strerror}") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class Backends:
    """What a command's work runs on, opened by ``drive`` and closed after it."""

    model: str
    policy: Policy
    verifier: Verifier | None
    finish_check: Verifier | None
    equivalence: MathEquivalence
    endpoint: Any  # the policy's server, for policies of other models on it
    servers: list[Any]  # every endpoint opened (the policy's first), for their replica counts


async def drive(
    args: argparse.Namespace, verifier: Verifier | str | None, work: Callable[[Backends], Awaitable[T]]
) -> T | None:
    """Check the model, build the policy, the verifier (``verifier_choice``'s: a kind to build
    on the endpoints, or one ready) and completion check, and run ``work`` on them; None
    when Ctrl-C or SIGTERM ended it. From the model check on, a signal ends the work in
    order: requests in flight are cancelled and connections closed (what the work wrote is
    on disk already); signals during the clean-up are taken and ignored, so it always
    completes."""
    endpoint = _endpoint(args)
    opened = [endpoint]
    log_file = configure(args.log_json)
    equivalence = MathEquivalence(timeout_s=args.answer_timeout)
    outcome: list[T] = []
    async with _unwrapped(), anyio.create_task_group() as watching:
        scope = anyio.CancelScope()
        watching.start_soon(_cancel_on_signal, scope)
        with scope:
            try:
                model = await _model(args, endpoint)
                if isinstance(verifier, str):
                    verifier = _verifier(args, verifier, model, endpoint, opened)
                policy = make_backend("openai", base_url=endpoint, model=model, api=args.api)
                finish_check = (
                    make_backend("logprob", base_url=endpoint, model=model, template=FINISHED_TEMPLATE)
                    if args.completion_check == "judge"
                    else None
                )
                backends = Backends(
                    model=model,
                    policy=policy,
                    verifier=verifier,
                    finish_check=finish_check,
                    equivalence=equivalence,
                    endpoint=endpoint,
                    servers=opened,
                )
                outcome.append(await work(backends))
            finally:
                with anyio.CancelScope(shield=True):
                    equivalence.close()
                    report_replicas(replica_counts(opened))
                    for server in opened:
                        await server.aclose()
                    if log_file is not None:
                        log_file.close()
        watching.cancel_scope.cancel()
    return outcome[0] if outcome else None


def replica_counts(servers: list[Any]) -> list[list[dict[str, Any]]]:
    """Each server's per-replica requests, tokens and errors (a list per server)."""
    return [[replica.counts() for replica in getattr(server, "replicas", ())] for server in servers]


def report_replicas(pools: list[list[dict[str, Any]]]) -> None:
    """Each pool's per-replica counts (``replica_counts``): a line each on stderr, and an event.
    A server of one replica has no line: the run's summary counts its work."""
    for pool in pools:
        if len(pool) < 2:
            continue
        for counts in pool:
            log.info("replica_counts", **counts)
            print(f"treesearch: {counts['base_url']}: {counts['requests']} requests, "
                  f"{counts['tokens']:,} tokens, {counts['errors']} errors", file=sys.stderr)  # fmt: skip


def model_sizes(args: argparse.Namespace) -> ModelSizes | None:
    """--model-params and --prm-params, or None when the policy's size is not given."""
    if args.model_params is None:
        if args.prm_params is not None:
            raise ConfigError("--prm-params needs --model-params (the policy's size)")
        return None
    return ModelSizes(policy=args.model_params, verifier=args.prm_params)


def problems_in_flight(args: argparse.Namespace) -> int:
    return int(args.problems_in_flight or (8 if args.backend == "llamacpp" else 32))


@asynccontextmanager
async def _unwrapped() -> AsyncIterator[None]:
    """A failure inside a task group surfaces as itself, not as an exception group."""
    try:
        yield
    except BaseExceptionGroup as failure:
        raise most_telling(failure) from None


async def _cancel_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()


def prepare_outputs(args: argparse.Namespace) -> None:
    """Make the folders the run writes into, or say on one line why a path cannot be written,
    before any request is sent."""
    writable_file("--output", args.output)
    if args.log_json is not None:
        writable_file("--log-json", args.log_json)
    if args.trees is not None:
        if args.trees.exists() and not args.trees.is_dir():
            raise ConfigError(f"--trees {args.trees} is a file; --trees names the folder trees go into")
        _make_folder("--trees", args.trees, args.trees)
        if not os.access(args.trees, os.W_OK):
            raise ConfigError(f"--trees {args.trees} cannot be written: permission denied")
