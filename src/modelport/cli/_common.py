"""Argument groups shared between commands, and output helpers. Imports nothing heavy."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from modelport.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from modelport.verify.inputs import InputPlan

__all__ = [
    "add_json",
    "add_output",
    "add_plan",
    "console",
    "emit_json",
    "parse_csv_ints",
    "parse_dims",
    "plan_from_args",
]


#: Width of tables written to a pipe or file (a terminal, or $COLUMNS, sets its own): wide enough that
#: tensor names and numbers are not cut to "…".
PIPE_WIDTH = 160


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    own_width = stream.isatty() or "COLUMNS" in os.environ
    return Console(stderr=stderr, highlight=False, width=None if own_width else PIPE_WIDTH)


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def add_output(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("-o", "--output", required=required, help="where to write the result (.onnx)")
    parser.add_argument("--in-place", action="store_true", help="allow overwriting the input model")


def add_plan(parser: argparse.ArgumentParser, *, batch_default: str = "1") -> None:
    group = parser.add_argument_group("generated inputs")
    group.add_argument(
        "--batch",
        default=batch_default,
        help="batch size(s), comma separated (default %(default)s)",
    )
    group.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="LABEL=SIZE",
        help="size of a named dynamic dimension (repeatable); others get 32",
    )
    group.add_argument(
        "--int-range",
        action="append",
        default=[],
        metavar="INPUT=LO:HI",
        help="value range [LO, HI) of an integer input (repeatable)",
    )
    group.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")


def _pairs(items: list[str], flag: str, form: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} '{item}' is not of the form {form}")
        out[key] = value
    return out


def parse_csv_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} '{text}' must be integers separated by commas, e.g. 1,8") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{flag} '{text}' must list sizes >= 1")
    return values


def parse_dims(items: list[str]) -> dict[str, int]:
    """``--dim LABEL=SIZE`` options as a mapping."""
    dims = {k: int(v) for k, v in _pairs(items, "--dim", "LABEL=SIZE").items() if v.isdigit()}
    if len(dims) != len(items):
        raise ConfigError("--dim sizes must be positive integers, e.g. --dim seq=128")
    return dims


def plan_from_args(args: argparse.Namespace) -> InputPlan:
    from modelport.verify.inputs import InputPlan

    dims = parse_dims(args.dim)
    ranges: dict[str, tuple[int, int]] = {}
    for name, value in _pairs(args.int_range, "--int-range", "INPUT=LO:HI").items():
        lo, sep, hi = value.partition(":")
        try:
            ranges[name] = (int(lo), int(hi))
        except ValueError:
            raise ConfigError(f"--int-range {name}={value} must be INPUT=LO:HI with integers") from None
        if not sep or ranges[name][0] >= ranges[name][1]:
            raise ConfigError(f"--int-range {name}={value} needs LO < HI")
    return InputPlan(dims=dims, int_ranges=ranges, seed=args.seed)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
