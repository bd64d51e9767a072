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
from pathlib import Path
from typing import Any, TypeVar

import anyio

from treesearch.cli.options import config_fields, prompts_of
from treesearch.engine.budget import ModelSizes
from treesearch.engine.budget_forcing import check_api
from treesearch.engine.config import SearchConfig
from treesearch.engine.taskgroups import most_telling
from treesearch.engine.verify import CallableVerifier, Verifier
from treesearch.errors import ConfigError
from treesearch.logs import configure, get_logger
from treesearch.optimal.choose import check_config
from treesearch.optimal.difficulty import PolicyTable
from treesearch.registry import backend_names
from treesearch.runs.backends import Backends, BackendSpec, open_backends, replica_counts

log = get_logger(__name__)


T = TypeVar("T")


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The SearchConfig of a command's arguments: each option the command takes, read as
    its field declares it (a command without one keeps its default), and the policy table
    its file holds."""
    config = SearchConfig(**{**config_fields(args), "policy_table": _policy_table(args)})
    check_api(config.step, getattr(args, "api", "completions"))  # a thinking budget needs raw text
    return config


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




def api_key(args: argparse.Namespace) -> str | None:
    """--api-key, else $OPENAI_API_KEY: read here rather than as the option's default, so
    ``--help`` (which shows every default) never prints it."""
    key: str | None = args.api_key or os.environ.get("OPENAI_API_KEY")
    return key




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




def backend_spec(args: argparse.Namespace, verifier: Verifier | str | None) -> BackendSpec:
    """The picklable description of a command's backends (``verifier_choice``'s kind, when it
    gave one, built with them); refused on one line when it names no server."""
    if args.backend == "openai" and not base_urls(args):
        raise ConfigError("--base-url is required (or --backend llamacpp for the embedded model)")
    prm: dict[str, Any] = {}  # a command without verifier options never names a verifier kind
    if isinstance(verifier, str):
        prm = {
            "verifier": verifier,
            "prm_urls": None if args.prm_url is None else tuple(args.prm_url),
            "prm_api_key": args.prm_api_key,
            "prm_model": args.prm_model,
            "prm_step_tag": args.prm_step_tag,
            "prm_good_column": args.prm_good_column,
        }
    prompts = prompts_of(args)
    return BackendSpec(
        backend=args.backend,
        base_urls=tuple(base_urls(args)),
        api_key=api_key(args),
        model=args.model,
        model_file=args.model_file,
        api=args.api,
        think_tags=args.think_tags,
        concurrency=args.concurrency,
        timeout_s=args.timeout_s,
        completion_check=args.completion_check,
        answer_timeout=args.answer_timeout,
        system_prompt=prompts.get("system_prompt"),
        prompt_template=prompts.get("prompt_template"),
        **prm,
    )


async def drive(
    args: argparse.Namespace, verifier: Verifier | str | None, work: Callable[[Backends], Awaitable[T]]
) -> T | None:
    """Open the backends of ``args`` (``verifier_choice``'s verifier: a kind to build on the
    endpoints, or one ready) and run ``work`` on them; None when Ctrl-C or SIGTERM ended it.
    From the model check on, a signal ends the work in order: requests in flight are
    cancelled and connections closed (what the work wrote is on disk already); signals
    during the clean-up are taken and ignored, so it always completes."""
    spec = backend_spec(args, verifier)
    log_file = configure(args.log_json)

    async def opened() -> T:
        try:
            async with open_backends(spec, None if isinstance(verifier, str) else verifier) as backends:
                try:
                    return await work(backends)
                finally:
                    report_replicas(replica_counts(backends.servers))
        finally:
            if log_file is not None:
                log_file.close()

    return await until_signal(opened)


async def until_signal(work: Callable[[], Awaitable[T]]) -> T | None:
    """What ``work`` returns; None when Ctrl-C or SIGTERM ended it by cancelling it, so its
    clean-up runs in order (signals during the clean-up are taken and ignored). A failure
    inside surfaces as itself, not as an exception group."""
    outcome: list[T] = []
    async with _unwrapped(), anyio.create_task_group() as watching:
        scope = anyio.CancelScope()
        watching.start_soon(_cancel_on_signal, scope)
        with scope:
            outcome.append(await work())
        watching.cancel_scope.cancel()
    return outcome[0] if outcome else None


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
