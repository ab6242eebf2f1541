"""Dead-node, unused-initializer and unused-opset removal."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import common

from modelport.passes.base import Pass
from modelport.verify.tolerance import EXACT

__all__ = ["DeadCodeEliminationPass"]


class DeadCodeEliminationPass(Pass):
    """Remove nodes whose outputs nobody reads, initializers nobody uses, opsets nobody needs."""

    name = "dead-code"
    tolerance = EXACT

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        nodes = common.RemoveUnusedNodesPass()(model).modified
        opsets = common.RemoveUnusedOpsetsPass()(model).modified
        return ir.passes.PassResult(model, modified=nodes or opsets)
