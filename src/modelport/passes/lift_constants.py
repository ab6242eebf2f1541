"""Constant nodes become initializers.

A ``Constant`` node is a weight stored as an operator: engines handle both the same way, but it
counts as a node, hides the value from passes that look for initializers, and exporters emit
many of them (shape vectors, scalars, axes). onnx-ir's pass does the lifting; all constants are
lifted whatever their size or attribute form (``value``, ``value_ints``, ``value_float``, ...),
except a Constant that is itself a graph output (an output cannot be an initializer in ONNX
Runtime).
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass

from modelport.passes.base import Pass
from modelport.verify.tolerance import EXACT

__all__ = ["LiftConstantsPass"]


class LiftConstantsPass(Pass):
    """Turn every Constant node (subgraphs included) into an initializer."""

    name = "lift-constants"
    tolerance = EXACT

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        lifted = LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
        return ir.passes.PassResult(model, modified=lifted.modified)
