"""The ``syslrn`` command line.

Each subcommand lives in a module of :mod:`syslrn.commands` that defines
``register(subparsers)``; the parser it adds sets ``func`` to the function
that runs it and returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from syslrn import __version__
from syslrn.errors import SyslrnError

# Modules of syslrn.commands, in the order `syslrn --help` lists them.
COMMAND_MODULES = (
    "record",
    "trace",
    "merge",
    "train",
    "detect",
    "evaluate",
    "report",
    "plan",
    "monitor",
    "campaign",
    "baseline",
    "demo",
)

log = logging.getLogger("syslrn")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; with ``command``, import only that command's module.

    A long-running command such as ``monitor`` then carries no library that
    only the other commands use, which keeps its memory small.
    """
    parser = argparse.ArgumentParser(
        prog="syslrn",
        description=(
            "Learn which OS-level features of an application follow its "
            "workload, and monitor only those with eBPF."
        ),
    )
    parser.add_argument("--version", action="version", version=f"syslrn {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more: -v for progress, -vv for debugging",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        if command is not None and name != command:
            subparsers.add_parser(name)
            continue
        module = importlib.import_module(f"syslrn.commands.{name}")
        module.register(subparsers)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING
    if verbosity == 1:
        level = logging.INFO
    elif verbosity >= 2:
        level = logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _command_of(argv: list[str]) -> str | None:
    """Return the subcommand named in ``argv``, or None (e.g. for --help)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMAND_MODULES else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        # Inside the try: building the parser imports the command's module,
        # which takes long enough for a Ctrl-C to land there.
        parser = build_parser(_command_of(argv))
        args = parser.parse_args(argv)
        _configure_logging(args.verbose)
        return int(args.func(args) or 0)
    except SyslrnError as exc:
        print(f"syslrn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("syslrn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
