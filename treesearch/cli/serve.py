"""``treesearch serve``: the command that puts ``treesearch.serve`` in front of an upstream."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from treesearch.cli.options import (
    COUNT,
    NOT_NEGATIVE,
    POSITIVE,
    add_endpoint_options,
    add_search_options,
    add_strategy_options,
    add_verifier_options,
)
from treesearch.engine.budget import BudgetLimits
from treesearch.errors import ConfigError

# Caps a server has when its command line gives none (the budget options and --max-n).
SERVE_BUDGET = BudgetLimits(tokens=200_000, deadline_s=300.0)
SERVE_MAX_N = 64
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``treesearch serve`` to the top-level parser's subcommands."""
    parser = commands.add_parser(
        "serve",
        help="an OpenAI-compatible server that runs a search per request",
        description="Serve /v1/chat/completions, /v1/completions and /v1/models, each request "
        "searched with the strategy its model name (STRATEGY:N/MODEL) or its treesearch object "
        "asks for, over these defaults. The budget options and --max-n are caps no request "
        "exceeds. Clients need one of the keys given (--api-key, --keys-file), or --no-auth. "
        "Without --base-url it serves the embedded model.",
    )
    add_endpoint_options(parser, key_flag="--upstream-api-key", timeout_flag="--upstream-timeout")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key", dest="client_keys", action="append", default=[], metavar="KEY",
                        help="a bearer token clients must send (repeat for several)")  # fmt: skip
    parser.add_argument("--keys-file", type=Path, default=None,
                        help="a file of accepted bearer tokens, one a line (# starts a comment)")  # fmt: skip
    parser.add_argument("--no-auth", action="store_true",
                        help="serve anyone without a key (warned about beyond loopback)")  # fmt: skip
    parser.add_argument("--allow-model", dest="allow_models", action="append", default=[], metavar="PATTERN",
                        help="an upstream model requests may name, shell wildcards allowed (repeat "
                        "for several; default: the models the upstream lists, and --model)")  # fmt: skip
    parser.add_argument("--max-n", type=COUNT, default=SERVE_MAX_N,
                        help="the most a request may ask for of n (choices), of N (the strategy's "
                        "samples) and of the other counts (beam_width, wave, ...) (default: "
                        f"{SERVE_MAX_N})")  # fmt: skip
    parser.add_argument("--max-searches", type=COUNT, default=64,
                        help="requests searching at once; more get a 429 (default: 64)")  # fmt: skip
    parser.add_argument("--max-body-bytes", type=COUNT, default=1 << 20,
                        help="the largest request body (default: 1048576)")  # fmt: skip
    parser.add_argument("--keepalive", type=POSITIVE, default=5.0,
                        help="seconds between the comment lines a stream sends while searching")  # fmt: skip
    parser.add_argument("--shutdown-grace", type=NOT_NEGATIVE, default=10.0,
                        help="seconds running searches get to finish on Ctrl-C or SIGTERM before they "
                        "are cancelled; a second signal cancels them at once (default: 10)")  # fmt: skip
    add_strategy_options(parser)
    add_search_options(parser, budget=SERVE_BUDGET, per="request")
    add_verifier_options(parser)
    parser.set_defaults(handler=lambda a: anyio.run(serve_command, a), log_json=None)


def _keys(args: argparse.Namespace) -> frozenset[str]:
    """The accepted bearer tokens. A key option that yields none is refused rather than
    read as "no key needed": an empty ``--api-key`` or a keys file with no key in it
    would otherwise start a server open to anyone, which only --no-auth asks for. Lines of
    a keys file starting with ``#`` are comments."""
    if any(not key.strip() for key in args.client_keys):
        raise ConfigError("--api-key must not be empty")
    keys = {key.strip() for key in args.client_keys}
    if args.keys_file is not None:
        try:
            lines = args.keys_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read --keys-file {args.keys_file}: {reason}") from None
        found = {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}
        if not found:
            raise ConfigError(f"--keys-file {args.keys_file} holds no key (one a line; # starts a comment)")
        keys |= found
    if keys and args.no_auth:
        raise ConfigError("--no-auth serves anyone: drop it, or drop --api-key and --keys-file")
    if not keys and not args.no_auth:
        raise ConfigError("serve needs the keys clients must send (--api-key or --keys-file), "
                          "or --no-auth to serve anyone")  # fmt: skip
    return frozenset(keys)


async def serve_command(args: argparse.Namespace) -> int:
    from aiohttp import web

    from treesearch.cli.setup import api_key, drive, search_config, verifier_choice
    from treesearch.registry import make_backend
    from treesearch.runs.backends import Backends
    from treesearch.serve import Caps, SearchServer, Upstream

    if args.backend == "openai" and not (args.base_url or args.pool_file):
        args.backend = "llamacpp"  # no upstream given: the embedded model
    defaults = search_config(args)
    keys = _keys(args)
    verifier = verifier_choice(args, defaults)
    secrets = tuple(key for key in (api_key(args), args.prm_api_key) if key)

    async def work(backends: Backends) -> None:
        listing = getattr(backends.endpoint, "models", None)

        async def models() -> list[str] | None:
            return None if listing is None else await listing()

        upstream = Upstream(
            model=backends.model,
            policy=backends.policy,
            policy_for=lambda model: make_backend(
                "openai", base_url=backends.endpoint, model=model, api=args.api, think_tags=args.think_tags
            ),
            verifier=backends.verifier,
            finish_check=backends.finish_check,
            equivalence=backends.equivalence,
            models=models,
            secrets=secrets,
        )
        server = SearchServer(
            upstream,
            defaults,
            caps=Caps(budget=defaults.budget, max_n=args.max_n),
            keys=keys,
            allow_models=args.allow_models,
            max_searches=args.max_searches,
            max_body_bytes=args.max_body_bytes,
            keepalive_s=args.keepalive,
        )
        await server.models.refresh()
        runner = web.AppRunner(server.app(), access_log=None, handle_signals=False, logger=_parser_log())
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        try:
            await site.start()
            host, port = runner.addresses[0][:2]
            print(f"listening on http://{host}:{port}/v1", flush=True)
            print(f"treesearch: serving {backends.model} with {defaults.strategy} N={defaults.n} by default",
                  file=sys.stderr)  # fmt: skip
            if not keys and args.host not in _LOOPBACK:
                print(f"treesearch: warning: --no-auth on {args.host}: anyone who reaches it spends the "
                      "upstream's compute", file=sys.stderr)  # fmt: skip
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await _shut_down(server, runner, site, args.shutdown_grace)

    await drive(args, verifier, work)
    return 0


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        failure = record.exc_info[1] if record.exc_info else None
        return (
            f"treesearch: {record.getMessage()}: {type(failure).__name__ if failure else 'no reason given'}"
        )


def _parser_log() -> logging.Logger:
    """Where aiohttp reports a request its HTTP parser refused (a header over 8 KiB, a NUL
    in one, an encoding it cannot decode): one line on stderr, without the traceback or
    the request's bytes, which may hold a client's key."""
    logger = logging.getLogger("treesearch.serve.http")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLine())
        logger.addHandler(handler)
        logger.propagate = False
    return logger


async def _shut_down(server: Any, runner: Any, site: Any, grace_s: float) -> None:
    """Stop listening, give running searches ``grace_s`` seconds (a second signal ends the
    wait), cancel the rest and close; one line on stderr says what happened."""
    if site in runner.sites:
        await site.stop()
    running = server.running
    now = anyio.Event()

    async def second_signal(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            if running:  # said once the next signal is ours to take
                print(f"treesearch: stopping; {running} running searches get {grace_s:g} s to finish "
                      "(Ctrl-C again cancels them now)", file=sys.stderr, flush=True)  # fmt: skip
            task_status.started()
            async for _ in signals:
                now.set()
                return

    async with anyio.create_task_group() as group:
        await group.start(second_signal)
        cancelled = await server.drain(grace_s, now)
        group.cancel_scope.cancel()
    await runner.cleanup()
    said = f"{cancelled} cancelled, {running - cancelled} finished" if running else "none was running"
    print(f"treesearch: stopped serving ({said})", file=sys.stderr, flush=True)
