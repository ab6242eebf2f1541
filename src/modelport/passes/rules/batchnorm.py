"""Standalone inference BatchNormalization as Mul + Add.

In inference mode BN is an affine map per channel (axis 1)::

    y = scale * (x - mean) / sqrt(var + eps) + bias  =  x * s + t
    s = scale / sqrt(var + eps),   t = bias - mean * s

``s`` and ``t`` are computed in float64, rounded once to the input dtype, and stored with shape
``[C, 1, ...]`` (``rank - 2`` trailing ones) so that they broadcast along axis 1; the input rank
must therefore be known. Plain Mul/Add are understood by every engine and quantizer, and other
passes can fold them into neighbouring linear ops (``conv-affine`` folds them into a Conv before
them).

A BN fed by a Conv or ConvTranspose that ``conv-bn`` / ``convtranspose-bn`` would fold is left to
those passes (run them first): folding removes the BN outright, this only rewrites it. The rule
also refuses training mode, used running-statistics outputs, non-constant parameters, an unknown
input rank and dtypes other than float32/float64 (in float16 the rounding of ``s`` and ``t``
would exceed the tolerance).

Two elementwise ops read the tensor twice where one BN kernel reads it once, so on an engine that
does not fuse Mul + Add this can be slower: the pass is marked ``may_slow``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.passes.base import add_initializer
from modelport.passes.rules.base import Rule, RulePass
from modelport.passes.rules.conv_bn import ConvBatchNormRule
from modelport.passes.rules.convtranspose_bn import BatchNormParams, ConvTransposeBatchNormRule, bn_inference_params
from modelport.verify.tolerance import Tolerance

__all__ = ["BatchNormAffineRule", "BatchNormToAffinePass"]

logger = logging.getLogger(__name__)

_FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.DOUBLE)

#: Rules that remove a BN outright; when one of them applies, this rule leaves the BN to it.
_FOLDING_RULES = (ConvBatchNormRule(), ConvTransposeBatchNormRule())


@dataclass
class _Match:
    bn: ir.Node
    x: ir.Value
    rank: int
    dtype: np.dtype[Any]
    params: BatchNormParams


def _input_rank_and_dtype(bn: ir.Node, x: ir.Value, channels: int) -> tuple[int, np.dtype[Any]] | str:
    """The rank and numpy dtype of BN's input (or of its output, which has the same), or why the
    Mul/Add constants cannot be shaped for it.
    """
    y = bn.outputs[0]
    dtype = x.dtype if x.dtype is not None else y.dtype
    shape = x.shape if x.shape is not None else y.shape
    if dtype not in _FLOAT_TYPES:
        return f"input dtype is {dtype}, only float32/float64 are rewritten"
    if shape is None:
        return "input rank is unknown (run shape inference first)"
    if len(shape) < 2:
        return f"input has rank {len(shape)}, BatchNormalization needs [N, C, ...]"
    dim = shape[1]
    if isinstance(dim, int) and dim != channels:
        return f"input has {dim} channels, the parameters {channels}"
    assert dtype is not None
    return len(shape), dtype.numpy()


def _check(bn: ir.Node) -> _Match | str:
    """The match for a BatchNormalization node, or the reason the rule does not apply."""
    for rule in _FOLDING_RULES:
        if not isinstance(rule.check(bn), str):
            return f"{rule.name} folds it into the node before (run that pass first)"
    x = bn.inputs[0]
    if x is None:
        return "BatchNormalization has no input"
    params = bn_inference_params(bn)
    if isinstance(params, str):
        return params
    found = _input_rank_and_dtype(bn, x, params.scale.shape[0])
    if isinstance(found, str):
        return found
    rank, dtype = found
    return _Match(bn, x, rank, dtype, params)


def _rewrite(graph: ir.Graph, m: _Match) -> None:
    s = m.params.factor()
    t = m.params.bias - m.params.mean * s
    shape = (-1,) + (1,) * (m.rank - 2)
    base = m.bn.name or m.bn.outputs[0].name or "batchnorm"
    scale = add_initializer(graph, s.reshape(shape).astype(m.dtype), f"{base}.scale")
    shift = add_initializer(graph, t.reshape(shape).astype(m.dtype), f"{base}.shift")
    mul = ir.node("Mul", inputs=[m.x, scale], name=f"{base}.mul")
    y = m.bn.outputs[0]
    mul.outputs[0].type = m.x.type if m.x.type is not None else y.type
    mul.outputs[0].shape = m.x.shape if m.x.shape is not None else y.shape
    add = ir.node("Add", inputs=[mul.outputs[0], shift], name=f"{base}.add")
    ir.convenience.replace_nodes_and_values(graph, m.bn, [m.bn], [mul, add], [m.bn.outputs[0]], [add.outputs[0]])


class BatchNormAffineRule(Rule[_Match]):
    """BatchNormalization (inference)  =>  Mul(x, s) -> Add(., t)."""

    name = "bn-affine"
    op_types = frozenset({"BatchNormalization"})

    def check(self, node: ir.Node) -> _Match | str:
        return _check(node)

    def rewrite(self, graph: ir.Graph, match: _Match) -> None:
        _rewrite(graph, match)


class BatchNormToAffinePass(RulePass):
    """Rewrite standalone inference-mode BatchNormalization as a per-channel Mul and Add."""

    name = "bn-affine"
    # float64 s and t, rounded once to float32: differences are reassociation noise.
    tolerance = Tolerance(atol=1e-5, rtol=1e-5)
    may_slow = True
    rules = (BatchNormAffineRule(),)
