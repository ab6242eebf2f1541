"""The ``modelport`` command: a thin layer over the Python API.

Only argparse and the command modules (which import nothing heavy) load at start-up; each
command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from modelport import __version__
from modelport.cli import (
    analyze,
    batch_infer,
    bench,
    compare,
    debug,
    deploy,
    encrypt,
    export,
    inspect,
    k8s,
    loadtest,
    optimize,
    pack,
    quantize,
    serve,
    surgery,
    verify,
    view,
)

__all__ = ["build_parser", "main"]

_COMMANDS = (
    inspect,
    export,
    optimize,
    surgery,
    quantize,
    compare,
    verify,
    debug,
    bench,
    loadtest,
    analyze,
    serve,
    batch_infer,
    deploy,
    view,
    pack,
    k8s,
    encrypt,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelport",
        description="Take a trained network to a fast, verified, served deployment.",
    )
    parser.add_argument("--version", action="version", version=f"modelport {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(sub)
    encrypt.add_key_file_option(sub)  # every command reads encrypted models
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if level > logging.DEBUG:
        # ONNX Runtime's quantizer prints advice through the root logger on every call.
        logging.getLogger().setLevel(max(level, logging.ERROR) if not verbose else level)
        logging.getLogger("modelport").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.verbose, args.quiet)
    from modelport.errors import ModelportError

    try:
        with encrypt.key_scope(args):
            code: int = args.run(args)
    except ModelportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
