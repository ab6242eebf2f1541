"""ConvTranspose (+ per-channel bias Add) + BatchNormalization folding into the ConvTranspose.

For BN ``y = scale * (x - mean) / sqrt(var + eps) + bias`` after
``x = ConvTranspose(input, W, b) + t`` (the Add of a per-channel constant ``t`` is optional; some
exporters emit the transposed-conv bias that way)::

    s  = scale / sqrt(var + eps)          (one factor per output channel)
    W' = W scaled per output channel by s
    b' = (b + t - mean) * s + bias

The weight layout is what makes this different from Conv + BN: a ConvTranspose weight is
``[C_in, C_out / group, k...]``, so the output channel sits on axis 1, and with ``group > 1``
output channel ``o = g * (C_out / group) + j`` is produced by ``W[g * C_in/group : (g+1) * C_in/group,
j]``. The weight is therefore viewed as ``[group, C_in/group, C_out/group, k...]`` and multiplied by
``s`` viewed as ``[group, 1, C_out/group, 1...]``.

The rule fires only when every intermediate value is read by the next node alone and is not a
graph output, BN is in inference mode with unused running-statistics outputs, every parameter is
a constant, and the weight is float32/float64 (float64 arithmetic, rounded once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.passes.base import add_initializer, const_array, only_consumer
from modelport.passes.rules.base import Rule, RulePass
from modelport.passes.rules.conv_affine import FOLDABLE_DTYPES, per_channel
from modelport.verify.tolerance import Tolerance

__all__ = ["BatchNormParams", "ConvTransposeBatchNormRule", "FuseConvTransposeBatchNormPass", "bn_inference_params"]

logger = logging.getLogger(__name__)


@dataclass
class BatchNormParams:
    """An inference-mode BatchNormalization's constants, as float64."""

    scale: np.ndarray[Any, Any]
    bias: np.ndarray[Any, Any]
    mean: np.ndarray[Any, Any]
    var: np.ndarray[Any, Any]
    epsilon: float

    def factor(self) -> np.ndarray[Any, Any]:
        """``s = scale / sqrt(var + eps)``: BN is ``x * s + (bias - mean * s)``."""
        return self.scale / np.sqrt(self.var + self.epsilon)


def bn_inference_params(bn: ir.Node) -> BatchNormParams | str:
    """The constants of an inference-mode BatchNormalization, or why it cannot be folded."""
    mode = bn.attributes.get("training_mode")
    if mode is not None and mode.value:
        return "BatchNormalization is in training mode"
    if any(out.uses() or out.is_graph_output() for out in bn.outputs[1:]):
        return "BatchNormalization's running-statistics outputs are used"
    if len(bn.inputs) != 5:
        return "BatchNormalization does not have five inputs"
    params = [const_array(v) for v in bn.inputs[1:5]]
    if any(p is None for p in params):
        return "BatchNormalization parameters are not constants"
    scale, bias, mean, var = (p.astype(np.float64) for p in params if p is not None)
    channels = scale.shape
    if len(channels) != 1 or any(p.shape != channels for p in (bias, mean, var)):
        return f"BatchNormalization parameters have shapes {[list(p.shape) for p in (scale, bias, mean, var)]}"
    eps_attr = bn.attributes.get("epsilon")
    epsilon = float(eps_attr.value) if eps_attr is not None else 1e-5
    return BatchNormParams(scale, bias, mean, var, epsilon)


@dataclass
class _Match:
    convt: ir.Node
    add: ir.Node | None
    bn: ir.Node
    weight: np.ndarray[Any, Any]
    bias: np.ndarray[Any, Any] | None
    add_bias: np.ndarray[Any, Any] | None
    bn_params: BatchNormParams
    group: int


def _producer_chain(bn: ir.Node) -> tuple[ir.Node, ir.Node | None, ir.Value | None] | str:
    """(ConvTranspose, optional Add, the Add's constant operand) feeding ``bn``, or why not."""
    x = bn.inputs[0]
    node = x.producer() if x is not None else None
    if x is None or node is None:
        return "input is not produced by a node"
    reason = only_consumer(x, bn)
    if reason:
        return reason
    if node.op_type == "ConvTranspose" and node.domain in ("", "ai.onnx"):
        return node, None, None
    if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return "input is not produced by a ConvTranspose or an Add"
    first, second = node.inputs[0], node.inputs[1]
    for data, other in ((first, second), (second, first)):
        convt = data.producer() if data is not None else None
        if (
            data is not None
            and convt is not None
            and convt.op_type == "ConvTranspose"
            and convt.domain in ("", "ai.onnx")
        ):
            reason = only_consumer(data, node)
            return reason if reason else (convt, node, other)
    return "Add is not fed by a ConvTranspose"


def _convt_params(convt: ir.Node) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None, int] | str:
    """The ConvTranspose's constant weight, bias (None when absent) and group count, or why not."""
    weight = const_array(convt.inputs[1]) if len(convt.inputs) > 1 else None
    if weight is None:
        return "ConvTranspose weight is not a constant"
    has_bias = len(convt.inputs) > 2 and convt.inputs[2] is not None
    bias = const_array(convt.inputs[2]) if has_bias else None
    if has_bias and bias is None:
        return "ConvTranspose bias is not a constant"
    if weight.dtype not in FOLDABLE_DTYPES:
        return f"ConvTranspose weight has dtype {weight.dtype}, only float32/float64 are folded"
    group_attr = convt.attributes.get("group")
    group = int(group_attr.value) if group_attr is not None else 1
    if group < 1 or weight.shape[0] % group:
        return f"ConvTranspose group={group} does not divide its {weight.shape[0]} input channels"
    return weight, bias, group


def _add_bias(operand: ir.Value | None, weight: np.ndarray[Any, Any], channels: int) -> np.ndarray[Any, Any] | str:
    """The per-channel bias the Add between ConvTranspose and BN adds, or why it cannot be folded."""
    constant = const_array(operand)
    if constant is None:
        return "the Add's other operand is not a constant"
    if constant.dtype != weight.dtype:
        return f"the Add's constant has dtype {constant.dtype}, the ConvTranspose {weight.dtype}"
    bias = per_channel(constant, weight.ndim, channels)
    return f"the Add's {bias}" if isinstance(bias, str) else bias


def _check(bn: ir.Node) -> _Match | str:
    """The match for a BatchNormalization node, or the reason the rule does not apply."""
    chain = _producer_chain(bn)
    if isinstance(chain, str):
        return chain
    convt, add, add_operand = chain
    params = _convt_params(convt)
    if isinstance(params, str):
        return params
    weight, bias, group = params
    bn_params = bn_inference_params(bn)
    if isinstance(bn_params, str):
        return bn_params
    channels = weight.shape[1] * group
    if bn_params.scale.shape != (channels,):
        return f"BatchNormalization has {bn_params.scale.shape} scale for {channels} ConvTranspose output channels"
    add_bias = _add_bias(add_operand, weight, channels) if add is not None else None
    if isinstance(add_bias, str):
        return add_bias
    return _Match(convt, add, bn, weight, bias, add_bias, bn_params, group)


def _folded(m: _Match) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The new weight and bias: float64 arithmetic, rounded once to the weight dtype."""
    s = m.bn_params.factor()
    c_in, c_out_g, *kernel = m.weight.shape
    grouped = m.weight.astype(np.float64).reshape(m.group, c_in // m.group, c_out_g, *kernel)
    weight = (grouped * s.reshape(m.group, 1, c_out_g, *(1 for _ in kernel))).reshape(m.weight.shape)
    bias = np.zeros_like(s)
    for part in (m.bias, m.add_bias):
        if part is not None:
            bias = bias + part.astype(np.float64)
    bias = (bias - m.bn_params.mean) * s + m.bn_params.bias
    return weight.astype(m.weight.dtype), bias.astype(m.weight.dtype)


def _rewrite(graph: ir.Graph, m: _Match) -> None:
    weight, bias = _folded(m)
    base = m.convt.name or m.bn.outputs[0].name or "convtranspose"
    assert m.convt.inputs[0] is not None
    fused = ir.node(
        "ConvTranspose",
        inputs=[
            m.convt.inputs[0],
            add_initializer(graph, weight, f"{base}.weight_bn"),
            add_initializer(graph, bias, f"{base}.bias_bn"),
        ],
        attributes=dict(m.convt.attributes),
        name=m.convt.name,
    )
    old = [m.convt, m.bn] if m.add is None else [m.convt, m.add, m.bn]
    ir.convenience.replace_nodes_and_values(graph, m.bn, old, [fused], [m.bn.outputs[0]], [fused.outputs[0]])


class ConvTransposeBatchNormRule(Rule[_Match]):
    """ConvTranspose [-> Add bias] -> BatchNormalization  =>  ConvTranspose with folded weights and bias."""

    name = "convtranspose-bn"
    op_types = frozenset({"BatchNormalization"})

    def check(self, node: ir.Node) -> _Match | str:
        return _check(node)

    def rewrite(self, graph: ir.Graph, match: _Match) -> None:
        _rewrite(graph, match)


class FuseConvTransposeBatchNormPass(RulePass):
    """Fold inference-mode BatchNormalization into the ConvTranspose that feeds it."""

    name = "convtranspose-bn"
    # float64 folding, rounded once to float32: differences are reassociation noise.
    tolerance = Tolerance(atol=1e-5, rtol=1e-5)
    rules = (ConvTransposeBatchNormRule(),)
