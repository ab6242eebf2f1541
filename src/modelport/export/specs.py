"""Command-line style specs of export inputs: ``NAME:SHAPE[:DTYPE]`` and ``NAME:AXIS=LABEL``.

::

    parse_input_spec("pixel_values:1x3x224x224")   # float32 by default
    parse_input_spec("ids:1x128:int64")
    parse_dynamic_axes(["pixel_values:0=batch", "ids:0=batch,1=seq"])
    # {'pixel_values': {0: 'batch'}, 'ids': {0: 'batch', 1: 'seq'}}
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from modelport.errors import ConfigError
from modelport.ir.specs import TensorSpec

__all__ = [
    "DTYPES",
    "parse_dynamic_axes",
    "parse_dynamic_axis",
    "parse_input_spec",
    "parse_input_specs",
]

#: Element types an input spec may name, with the numpy dtype each one means.
DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype("float32"),
    "fp32": np.dtype("float32"),
    "float16": np.dtype("float16"),
    "fp16": np.dtype("float16"),
    "float64": np.dtype("float64"),
    "fp64": np.dtype("float64"),
    "int64": np.dtype("int64"),
    "int32": np.dtype("int32"),
    "int16": np.dtype("int16"),
    "int8": np.dtype("int8"),
    "uint8": np.dtype("uint8"),
    "bool": np.dtype("bool"),
}

_INPUT_FORM = "NAME:SHAPE[:DTYPE], e.g. pixel_values:1x3x224x224 or ids:1x128:int64"
_AXIS_FORM = "NAME:AXIS=LABEL[,AXIS=LABEL...], e.g. pixel_values:0=batch or ids:0=batch,1=seq"
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUMBER = re.compile(r"[0-9]+\Z")


def parse_input_spec(text: str) -> TensorSpec:
    """Parse ``NAME:SHAPE[:DTYPE]`` into a :class:`TensorSpec` (dtype defaults to float32)."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise ConfigError(f"input spec '{text}' should have the form {_INPUT_FORM}")
    name, shape_text = parts[0].strip(), parts[1].strip()
    if not name:
        raise ConfigError(f"input spec '{text}' has no name — expected {_INPUT_FORM}")
    if not shape_text:
        raise ConfigError(f"input spec '{text}' has no shape — expected {_INPUT_FORM}")
    dims: list[int] = []
    for raw in shape_text.lower().split("x"):
        piece = raw.strip()
        if not _NUMBER.match(piece) or int(piece) == 0:
            raise ConfigError(
                f"dimension '{piece}' in input spec '{text}' is not a positive integer — "
                f"write the shape as sizes joined by 'x' ({_INPUT_FORM}); "
                "make an axis dynamic with a separate NAME:AXIS=LABEL spec"
            )
        dims.append(int(piece))
    dtype = np.dtype("float32")
    if len(parts) == 3:
        dtype_name = parts[2].strip().lower()
        if dtype_name not in DTYPES:
            raise ConfigError(f"unknown dtype '{parts[2]}' in input spec '{text}' — use one of: {', '.join(DTYPES)}")
        dtype = DTYPES[dtype_name]
    return TensorSpec(name=name, dtype=dtype, shape=tuple(dims))


def parse_input_specs(texts: Iterable[str]) -> list[TensorSpec]:
    """Parse several input specs; a name given twice is an error."""
    specs: list[TensorSpec] = []
    seen: set[str] = set()
    for text in texts:
        spec = parse_input_spec(text)
        if spec.name in seen:
            raise ConfigError(f"input '{spec.name}' is given twice — give each input one spec")
        seen.add(spec.name)
        specs.append(spec)
    return specs


def parse_dynamic_axis(text: str) -> tuple[str, dict[int, str]]:
    """Parse ``NAME:AXIS=LABEL[,AXIS=LABEL...]`` into ``(name, {axis: label})``."""
    name, sep, rest = text.strip().partition(":")
    name = name.strip()
    if not sep or not name or not rest.strip():
        raise ConfigError(f"dynamic-axis spec '{text}' should have the form {_AXIS_FORM}")
    axes: dict[int, str] = {}
    for item in rest.split(","):
        axis_text, eq, label = (s.strip() for s in item.partition("="))
        if not eq or not _NUMBER.match(axis_text):
            raise ConfigError(
                f"'{item.strip()}' in dynamic-axis spec '{text}' is not AXIS=LABEL with a "
                f"non-negative integer axis — expected {_AXIS_FORM}"
            )
        if not _LABEL.match(label):
            raise ConfigError(
                f"label '{label}' in dynamic-axis spec '{text}' is not a valid name — use letters, "
                f"digits and '_', starting with a letter (expected {_AXIS_FORM})"
            )
        axis = int(axis_text)
        if axes.get(axis, label) != label:
            raise ConfigError(
                f"axis {axis} of '{name}' is labelled both '{axes[axis]}' and '{label}' in "
                f"'{text}' — give each axis one label"
            )
        axes[axis] = label
    return name, axes


def parse_dynamic_axes(texts: Iterable[str]) -> dict[str, dict[int, str]]:
    """Parse several dynamic-axis specs into ``{name: {axis: label}}``; specs for one name merge."""
    merged: dict[str, dict[int, str]] = {}
    for text in texts:
        name, axes = parse_dynamic_axis(text)
        current = merged.setdefault(name, {})
        for axis, label in axes.items():
            if current.get(axis, label) != label:
                raise ConfigError(
                    f"axis {axis} of '{name}' is labelled both '{current[axis]}' and '{label}' — "
                    "give each axis one label"
                )
            current[axis] = label
    return merged
