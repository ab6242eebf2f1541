"""Conv followed by Mul / Add by per-channel constants: the affine step moves into the Conv.

For ``c = W * x + b`` (one filter ``W[o]`` and one bias ``b[o]`` per output channel ``o``)::

    c * s  =  (W * s[o]) * x + b * s[o]        (Mul by s)
    c + t  =  W * x + (b + t[o])               (Add by t)

The constant must broadcast *per output channel*: right-aligned against the Conv output
``[N, C, spatial...]`` it may only vary along the channel axis, so shapes like ``[]``, ``[1]``,
``[C, 1, 1]`` and ``[1, C, 1, 1]`` fold, while ``[C]`` against a 4-D output (it would align with
the width axis), anything varying over batch or space, or anything of higher rank than the
output (it would broadcast the output to a bigger shape) does not. Each firing folds one Mul or
Add into the Conv directly before it; the rule pass repeats until the fixed point, so
``Conv -> Mul -> Add`` becomes one Conv. Either operand order (``Mul(c, s)``/``Mul(s, c)``) works.

The rule fires only when the Conv output is read by the Mul/Add alone and is not a graph output,
the Conv weight (and bias, if any) are constants, and everything is float32/float64: folding is
done in float64 and rounded once, which differs from the unfused graph by reassociation noise
only; in float16 that rounding would exceed the pass tolerance, so float16 is left alone. Non-
finite constants are refused (``inf * 0`` in the fused weights would differ from the original).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.passes.base import add_initializer, const_array, only_consumer
from modelport.passes.rules.base import Rule, RulePass
from modelport.verify.tolerance import Tolerance

__all__ = ["FOLDABLE_DTYPES", "ConvAffineRule", "FoldConvAffinePass", "per_channel"]

logger = logging.getLogger(__name__)

#: Dtypes whose float64 folding, rounded once, stays within a 1e-5 tolerance.
FOLDABLE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def per_channel(array: np.ndarray[Any, Any], rank: int, channels: int) -> np.ndarray[Any, Any] | str:
    """``array`` as one value per channel (shape ``[channels]``) when, broadcast against a tensor of
    shape ``[N, channels, spatial...]`` of the given rank, it varies along the channel axis only
    and does not enlarge the tensor; otherwise the reason it is not per-channel.
    """
    if array.ndim > rank:
        return f"constant of shape {list(array.shape)} has higher rank than the {rank}-D output"
    padded = (1,) * (rank - array.ndim) + tuple(array.shape)
    if padded[0] != 1 or any(d != 1 for d in padded[2:]):
        return f"constant of shape {list(array.shape)} varies along the batch or spatial axes"
    if padded[1] not in (1, channels):
        return f"constant of shape {list(array.shape)} does not broadcast over {channels} channels"
    if not np.all(np.isfinite(array)):
        return "constant is not finite"
    return np.broadcast_to(array.reshape(-1), (channels,))


@dataclass
class _Match:
    conv: ir.Node
    affine: ir.Node
    weight: np.ndarray[Any, Any]
    bias: np.ndarray[Any, Any] | None
    factor: np.ndarray[Any, Any]  # one value per output channel


def _conv_and_constant(node: ir.Node) -> tuple[ir.Node, ir.Value, np.ndarray[Any, Any]] | str:
    """The Conv feeding ``node``, the value it feeds through, and ``node``'s other (constant) operand."""
    if len(node.inputs) != 2 or node.inputs[0] is None or node.inputs[1] is None:
        return f"{node.op_type} does not have two inputs"
    first, second = node.inputs[0], node.inputs[1]
    for data, other in ((first, second), (second, first)):
        producer = data.producer()
        if producer is None or producer.op_type != "Conv" or producer.domain not in ("", "ai.onnx"):
            continue
        constant = const_array(other)
        if constant is None:
            return f"{node.op_type}'s other operand '{other.name}' is not a constant"
        return producer, data, constant
    return "no operand is produced by a Conv"


def _conv_params(conv: ir.Node) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None] | str:
    """The Conv's constant weight and bias (None when it has none), or why they are unusable."""
    weight = const_array(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if weight is None:
        return "Conv weight is not a constant"
    has_bias = len(conv.inputs) > 2 and conv.inputs[2] is not None
    bias = const_array(conv.inputs[2]) if has_bias else None
    if has_bias and bias is None:
        return "Conv bias is not a constant"
    if weight.dtype not in FOLDABLE_DTYPES:
        return f"Conv weight has dtype {weight.dtype}, only float32/float64 are folded"
    return weight, bias


def _check(node: ir.Node) -> _Match | str:
    """The match for a Mul or Add node, or the reason the rule does not apply."""
    found = _conv_and_constant(node)
    if isinstance(found, str):
        return found
    conv, conv_out, constant = found
    reason = only_consumer(conv_out, node)
    if reason:
        return reason
    params = _conv_params(conv)
    if isinstance(params, str):
        return params
    weight, bias = params
    if constant.dtype != weight.dtype:
        return f"constant has dtype {constant.dtype}, the Conv {weight.dtype}"
    factor = per_channel(constant, weight.ndim, weight.shape[0])
    if isinstance(factor, str):
        return factor
    return _Match(conv, node, weight, bias, factor)


def _folded(m: _Match) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
    """The Conv's new weight and bias (float64 arithmetic, rounded once to the weight dtype)."""
    dtype = m.weight.dtype
    factor = m.factor.astype(np.float64)
    bias = m.bias.astype(np.float64) if m.bias is not None else None
    if m.affine.op_type == "Add":
        new_bias = factor if bias is None else bias + factor
        return m.weight, new_bias.astype(dtype)
    weight = m.weight.astype(np.float64) * factor.reshape((-1,) + (1,) * (m.weight.ndim - 1))
    return weight.astype(dtype), None if bias is None else (bias * factor).astype(dtype)


def _rewrite(graph: ir.Graph, m: _Match) -> None:
    weight, bias = _folded(m)
    base = m.conv.name or m.affine.outputs[0].name or "conv"
    suffix = "mul" if m.affine.op_type == "Mul" else "add"
    assert m.conv.inputs[0] is not None and m.conv.inputs[1] is not None
    w_value = m.conv.inputs[1] if weight is m.weight else add_initializer(graph, weight, f"{base}.weight_{suffix}")
    inputs = [m.conv.inputs[0], w_value]
    if bias is not None:
        inputs.append(add_initializer(graph, bias, f"{base}.bias_{suffix}"))
    fused = ir.node("Conv", inputs=inputs, attributes=dict(m.conv.attributes), name=m.conv.name)
    ir.convenience.replace_nodes_and_values(
        graph, m.affine, [m.conv, m.affine], [fused], [m.affine.outputs[0]], [fused.outputs[0]]
    )


class ConvAffineRule(Rule[_Match]):
    """Conv -> Mul/Add by a per-channel constant  =>  Conv with folded weights and bias."""

    name = "conv-affine"
    op_types = frozenset({"Mul", "Add"})

    def check(self, node: ir.Node) -> _Match | str:
        return _check(node)

    def rewrite(self, graph: ir.Graph, match: _Match) -> None:
        _rewrite(graph, match)


class FoldConvAffinePass(RulePass):
    """Fold per-output-channel Mul and Add constants into the Conv that feeds them."""

    name = "conv-affine"
    # float64 folding, rounded once to float32: differences are reassociation noise.
    tolerance = Tolerance(atol=1e-5, rtol=1e-5)
    rules = (ConvAffineRule(),)
