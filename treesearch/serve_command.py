"""``treesearch serve``: the command that puts ``treesearch.serve`` in front of an upstream."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio

from treesearch.cli_options import (
    COUNT,
    POSITIVE,
    add_endpoint_options,
    add_search_options,
    add_strategy_options,
    add_verifier_options,
)
from treesearch.errors import ConfigError


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``treesearch serve`` to the top-level parser's subcommands."""
    parser = commands.add_parser(
        "serve",
        help="an OpenAI-compatible server that runs a search per request",
        description="Serve /v1/chat/completions, /v1/completions and /v1/models, each request "
        "searched with the strategy its model name (STRATEGY:N/MODEL) or its treesearch object "
        "asks for, over these defaults. The budget options are caps no request exceeds. Without "
        "--base-url it serves the embedded model.",
    )
    add_endpoint_options(parser, key_flag="--upstream-api-key")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key", dest="client_keys", action="append", default=[], metavar="KEY",
                        help="a bearer token clients must send (repeat for several; default: none "
                        "needed)")  # fmt: skip
    parser.add_argument("--keys-file", type=Path, default=None,
                        help="a file of accepted bearer tokens, one a line")  # fmt: skip
    parser.add_argument("--max-searches", type=COUNT, default=64,
                        help="searches at once; more requests get a 429")  # fmt: skip
    parser.add_argument("--max-body-bytes", type=COUNT, default=1 << 20, help="the largest request body")
    parser.add_argument("--keepalive", type=POSITIVE, default=5.0,
                        help="seconds between the comment lines a stream sends while searching")  # fmt: skip
    add_strategy_options(parser)
    add_search_options(parser)
    add_verifier_options(parser)
    parser.set_defaults(handler=lambda a: anyio.run(serve_command, a), log_json=None)


def _keys(args: argparse.Namespace) -> frozenset[str]:
    """The accepted bearer tokens. A key option that yields none is refused rather than
    read as "no key needed": an empty ``--api-key`` or a keys file with no key in it
    would otherwise start a server open to anyone. Lines of a keys file starting with
    ``#`` are comments."""
    if any(not key.strip() for key in args.client_keys):
        raise ConfigError("--api-key must not be empty (leave the option out to need no key)")
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
    return frozenset(keys)


async def serve_command(args: argparse.Namespace) -> int:
    from aiohttp import web

    from treesearch.run_command import Backends, drive, search_config, verifier_choice
    from treesearch.serve import SearchServer, Upstream

    if args.backend == "openai" and not (args.base_url or args.pool_file):
        args.backend = "llamacpp"  # no upstream given: the embedded model
    defaults = search_config(args)
    keys = _keys(args)
    chosen = verifier_choice(args, defaults)

    async def work(backends: Backends) -> None:
        from treesearch.registry import make_backend

        upstream = Upstream(
            model=backends.model,
            policy=backends.policy,
            policy_for=lambda model: make_backend(
                "openai", base_url=backends.endpoint, model=model, api=args.api
            ),
            verifier=backends.verifier,
            finish_check=backends.finish_check,
            equivalence=backends.equivalence,
        )
        server = SearchServer(
            upstream,
            defaults,
            caps=defaults.budget,
            keys=keys,
            max_searches=args.max_searches,
            max_body_bytes=args.max_body_bytes,
            keepalive_s=args.keepalive,
        )
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port).start()
            host, port = runner.addresses[0][:2]
            print(f"listening on http://{host}:{port}/v1", flush=True)
            print(f"treesearch: serving {backends.model} with {defaults.strategy} N={defaults.n} by default",
                  file=sys.stderr)  # fmt: skip
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()

    await drive(args, chosen, work)
    return 0
