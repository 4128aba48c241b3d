"""``dnstls`` entry point: one subcommand per module in this package.

Each subcommand module exposes ``add_parser(subparsers)`` which registers its parser and
sets ``func`` (``args -> int``) as the parser default. ``main(argv)`` returns the exit
status; ``run()`` is the console script.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from dnstls.compiled import version_line
from dnstls.errors import DnsTlsError

SUBCOMMANDS = ("serve", "stub", "query", "pin", "control")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnstls", description="DNS over TLS (RFC 7858): resolver, stub, query and pin tools")
    parser.add_argument("--version", action="version",
                        version=version_line())
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"dnstls.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"dnstls.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else (
        logging.INFO if verbosity == 0 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error("unrecognized arguments: " + " ".join(extra))
    args.extra = extra
    configure_logging(args.verbose - getattr(args, "quiet_default", 0))
    try:
        status: int = args.func(args)
    except DnsTlsError as exc:
        print(f"dnstls {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


def run() -> None:
    sys.exit(main())
