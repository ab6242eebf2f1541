"""Convert a model to another opset of the default ONNX domain.

Operators change signature between opsets — ``Squeeze``/``ReduceSum`` axes moved from an
attribute to an input in opset 13, ``ReduceMean`` and friends in 18, ``Clip`` bounds in 11 — so a
model cannot just be relabelled. onnx's version converter holds one adapter per operator and
signature change and walks the model one opset at a time; it is the reference implementation,
and this module only wraps it (through :func:`modelport.ir.serde.transform_proto`, the one place
protobuf is touched), raises the IR version to what the target opset needs, and turns its
assertion failures into errors that name the operator and the way out.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import onnx_ir as ir

from modelport.errors import ConfigError, InvalidModelError
from modelport.ir.serde import transform_proto

__all__ = ["MIN_OPSET", "convert_opset", "max_opset"]

logger = logging.getLogger(__name__)

#: onnx's converter has adapters from opset 7 up; older models are out of its reach.
MIN_OPSET = 7
_NO_ADAPTER = re.compile(r"No Adapter (?:From|To) Version \$(\d+) for (\w+)")


def max_opset() -> int:
    """The newest default-domain opset the installed onnx package knows."""
    import onnx

    return int(onnx.defs.onnx_opset_version())


def convert_opset(model: ir.Model, target: int) -> ir.Model:
    """A copy of ``model`` whose default-domain opset is ``target``; the input is not changed.

    Other domains (``com.microsoft``, custom ops) are left as they are. Raises
    :class:`ConfigError` for a target out of range and :class:`InvalidModelError` when the
    converter has no adapter for an operator of the model.
    """
    current = model.opset_imports.get("")
    newest = max_opset()
    if current is None:
        raise ConfigError("the model imports no default-domain ONNX opset, so there is nothing to convert")
    if not MIN_OPSET <= target <= newest:
        raise ConfigError(
            f"opset {target} is out of range: the installed onnx converts between opsets {MIN_OPSET} and {newest}"
        )
    if target == current:
        logger.debug("the model is already at opset %d", target)
        result = model.clone()
    else:
        result = transform_proto(model, lambda proto: _convert(proto, current, target))
    result.meta.update(model.meta)
    return result


def _convert(proto: Any, current: int, target: int) -> Any:
    import onnx
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(proto, target)
    except Exception as e:
        raise InvalidModelError(_explain(str(e), current, target)) from e
    needed = onnx.helper.find_min_ir_version_for(list(converted.opset_import), ignore_unknown=True)
    converted.ir_version = max(converted.ir_version, needed)
    return converted


def _explain(message: str, current: int, target: int) -> str:
    direction = "down" if target < current else "up"
    found = _NO_ADAPTER.search(message)
    if found:
        version, op = found.groups()
        reachable = f"opset {version} or later" if target < current else f"an opset below {version}"
        return (
            f"cannot convert the model from opset {current} {direction} to {target}: onnx's version converter has "
            f"no adapter for {op} at opset {version} — convert to {reachable}, or replace the {op} nodes first"
        )
    first_line = message.strip().splitlines()[-1] if message.strip() else type(message).__name__
    return f"cannot convert the model from opset {current} {direction} to {target}: {first_line}"
