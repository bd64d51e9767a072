"""The command line: ``treesearch run | serve | demo | serve-fake | fit-adaptive | advise | label``:
the parser and ``main``.

Options mirror SearchConfig one to one; every numeric option checks its own
range. Every error treesearch raises on purpose is printed as one line with a
non-zero exit (2 for bad input, 1 when some problems failed); a traceback is a
bug. Each command lives in a module of its own (``run``, ``serve``, ``serve_fake``,
``demo``, ``fit``, ``advise``, ``label``) that adds its parser, with the options they share
in ``options`` and the set-up of a model's endpoints in ``setup``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import metadata, version
from typing import Any, NoReturn

from treesearch.cli import advise, compare, demo, fit, label, report, run, serve, serve_fake, view
from treesearch.errors import EndpointError, TreeSearchError


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; help that already states its default in words
    ("unlimited", "--base-url") keeps them, and a required option has none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or (action.help is not None and "(default" in action.help):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """A parser (and, through add_subparsers, subcommand parser) whose errors are one line
    and whose --help shows every default, even of an option given no help text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.help is None and action.option_strings:
            action.help = "(default: %(default)s)"
        return action

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="treesearch", description=metadata("treesearch")["Summary"])
    top.add_argument("--version", action="version", version=f"%(prog)s {version('treesearch')}")
    commands = top.add_subparsers(dest="command", required=True)

    for command in (run, serve_fake, demo, label, fit, serve, advise, view, report, compare):
        command.add_parser(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except EndpointError as exc:
        print(f"treesearch: error: {exc}", file=sys.stderr)
        return 1
    except TreeSearchError as exc:
        print(f"treesearch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
