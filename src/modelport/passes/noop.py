"""No-op elimination: Identity, inference-mode Dropout, Cast to the type it already has."""

from __future__ import annotations

import logging

import onnx_ir as ir

from modelport.passes.base import Pass, bypass
from modelport.verify.tolerance import EXACT

__all__ = ["NoOpEliminationPass"]

logger = logging.getLogger(__name__)


def _noop_source(node: ir.Node) -> tuple[ir.Value | None, str]:
    """The value ``node`` passes through unchanged, or None and the reason it is not a no-op."""
    if node.domain != "" or not node.inputs or node.inputs[0] is None:
        return None, "not a standard op with an input"
    source = node.inputs[0]
    op = node.op_type
    if op == "Identity":
        return source, ""
    if op == "Dropout":
        mode = node.attributes.get("training_mode")
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            return None, "Dropout has a training_mode input"
        if mode is not None and mode.value:
            return None, "Dropout is in training mode"
        if len(node.outputs) > 1 and node.outputs[1].uses():
            return None, "Dropout's mask output is used"
        return source, ""
    if op == "Cast":
        to = node.attributes.get("to")
        if to is not None and source.dtype is not None and int(to.value) == int(source.dtype):
            return source, ""
        return None, "Cast changes the type (or the input type is unknown)"
    return None, "not a no-op kind"


class NoOpEliminationPass(Pass):
    """Bypass nodes that return their input unchanged."""

    name = "noop"
    tolerance = EXACT

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if node.op_type not in {"Identity", "Dropout", "Cast"}:
                continue
            source, why = _noop_source(node)
            if source is None:
                logger.debug("keep %s '%s': %s", node.op_type, node.name, why)
                continue
            reason = bypass(node, source)
            if reason is None:
                modified = True
            else:
                logger.debug("keep %s '%s': %s", node.op_type, node.name, reason)
        return ir.passes.PassResult(model, modified=modified)
