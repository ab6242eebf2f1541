"""Gemm after a 1x1 feature map becomes a 1x1 Conv, so a classifier head stays NCHW.

The classic head is ``GlobalAveragePool -> x[N, C, 1, 1] -> Flatten -> Gemm(W[K, C], b[K])``.
With every spatial dim of ``x`` equal to 1, ``Flatten(x)[n, c] = x[n, c, 0, 0]``, so::

    Gemm(Flatten(x))[n, k] = alpha * sum_c x[n, c] * W[k, c] + beta * b[k]
                           = Conv(x, alpha * W.reshape(K, C, 1, 1), beta * b)[n, k, 0, 0]

and the rewrite is ``Conv(x, W', b') -> Flatten(axis=1)``: the same [N, K] result, but the
pool/Conv pair is now adjacent in NCHW layout, which engines (TensorRT, OpenVINO, ORT's NCHWc
transformer) can fuse or keep in their blocked layout instead of reordering for a GEMM.
With ``transB=0`` the constant weight is transposed first; alpha and beta are folded into
the weights and bias (float64, rounded once), hence a ~1e-5 tolerance.

It is not always faster (a 1x1 Conv on some CPUs is a slower GEMM), so the pass is marked
``may_slow`` and the manager times it. The rule fires only when:

* the Gemm's A comes from ``Flatten(axis=1)`` or a ``Reshape`` to ``[N, C]`` that is read by the
  Gemm alone and is not a graph output;
* the Flatten input has rank 3 to 5 and all spatial dims are known to be 1 (from its shape, or
  because it comes out of a Global*Pool of known rank);
* ``transA=0``, B is a constant float matrix and C, if present, is a constant per-output bias
  (``[]``, ``[1]``, ``[K]``, ``[1, K]``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.passes.base import add_initializer, const_array, drop_unused_initializers, only_consumer
from modelport.passes.rules.base import Rule, RulePass
from modelport.verify.tolerance import Tolerance

__all__ = ["GemmToConvPass", "GemmToConvRule"]

logger = logging.getLogger(__name__)

_GLOBAL_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})


@dataclass
class _Match:
    gemm: ir.Node
    flatten: ir.Node
    x: ir.Value
    rank: int
    weight: np.ndarray[Any, Any]  # [K, C], alpha folded in
    bias: np.ndarray[Any, Any] | None  # [K], beta folded in


def _attr(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return default if attr is None else float(attr.value)


def _spatial_rank(x: ir.Value) -> int | str:
    """The rank of ``x`` when all its spatial dims are known to be 1, or a reason."""
    if x.shape is not None:
        dims = list(x.shape)
        if not 3 <= len(dims) <= 5:
            return f"'{x.name}' has rank {len(dims)}, not 3 to 5"
        if not all(isinstance(d, int) and d == 1 for d in dims[2:]):
            return f"spatial dims of '{x.name}' are {dims[2:]}, not known to be 1"
        return len(dims)
    pool = x.producer()
    source = pool.inputs[0] if pool is not None and pool.op_type in _GLOBAL_POOLS and pool.domain == "" else None
    if source is not None and source.shape is not None and 3 <= len(source.shape) <= 5:
        return len(source.shape)
    return f"shape of '{x.name}' is unknown"


def _reshape_reason(node: ir.Node, x: ir.Value, channels: int) -> str | None:
    """Why a Reshape does not produce ``[N, channels]`` from ``x`` (None when it does)."""
    target = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if target is None or target.shape != (2,):
        return "Reshape target is not a constant of rank 2"
    n, c = int(target[0]), int(target[1])
    if 0 in (n, c) and _attr(node, "allowzero", 0) != 0:
        return "Reshape has allowzero=1 with a 0 in its target"
    batch = x.shape[0] if x.shape is not None else None
    first_ok = n == 0 or (n == -1 and c != -1) or (n > 0 and batch == n)
    second_ok = c in (0, channels) or (c == -1 and n != -1)
    return None if first_ok and second_ok else f"Reshape target {[n, c]} is not [N, {channels}]"


def _flatten_reason(node: ir.Node, x: ir.Value, rank: int, channels: int) -> str | None:
    if node.op_type == "Flatten":
        axis = int(_attr(node, "axis", 1))
        return None if axis % rank == 1 else f"Flatten axis is {axis}, not 1"
    return _reshape_reason(node, x, channels)


def _weights(gemm: ir.Node) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None] | str:
    """Gemm's B as [K, C] times alpha, and C as [K] times beta; or a reason."""
    w = const_array(gemm.inputs[1])
    if w is None or w.ndim != 2:
        return "Gemm weight is not a constant matrix"
    if w.dtype.kind != "f":
        return f"Gemm weight has dtype {w.dtype}, not floating point"
    if _attr(gemm, "transB", 0) == 0:
        w = w.T
    alpha, beta = _attr(gemm, "alpha", 1.0), _attr(gemm, "beta", 1.0)
    if alpha != 1.0:
        w = (w.astype(np.float64) * alpha).astype(w.dtype)
    has_c = len(gemm.inputs) > 2 and gemm.inputs[2] is not None
    if not has_c:
        return np.ascontiguousarray(w), None
    c = const_array(gemm.inputs[2])
    if c is None:
        return "Gemm bias is not a constant"
    k = w.shape[0]
    if c.shape not in ((), (1,), (k,), (1, k), (1, 1)):
        return f"Gemm bias shape {list(c.shape)} is not per output channel ([{k}])"
    bias = np.broadcast_to(c.reshape(-1), (k,)).astype(w.dtype)
    if beta != 1.0:
        bias = (bias.astype(np.float64) * beta).astype(w.dtype)
    return np.ascontiguousarray(w), bias


def _check(gemm: ir.Node) -> _Match | str:
    """The match for a Gemm node, or the reason the rule does not apply."""
    if _attr(gemm, "transA", 0) != 0:
        return "Gemm has transA=1"
    a = gemm.inputs[0]
    flatten = a.producer() if a is not None else None
    if a is None or flatten is None or flatten.op_type not in ("Flatten", "Reshape") or flatten.domain != "":
        return "Gemm input is not produced by Flatten or Reshape"
    reason = only_consumer(a, gemm)
    if reason:
        return reason
    x = flatten.inputs[0]
    if x is None:
        return "Flatten has no input"
    rank = _spatial_rank(x)
    if isinstance(rank, str):
        return rank
    weights = _weights(gemm)
    if isinstance(weights, str):
        return weights
    weight, bias = weights
    channels = weight.shape[1]
    if x.shape is not None and isinstance(x.shape[1], int) and x.shape[1] != channels:
        return f"'{x.name}' has {x.shape[1]} channels, Gemm weight expects {channels}"
    reason = _flatten_reason(flatten, x, rank, channels)
    if reason:
        return reason
    return _Match(gemm, flatten, x, rank, weight, bias)


def _rewrite(graph: ir.Graph, m: _Match) -> None:
    base = m.gemm.name or m.gemm.outputs[0].name or "gemm"
    kernel = [1] * (m.rank - 2)
    weight = m.weight.reshape(m.weight.shape + tuple(kernel))
    inputs = [m.x, add_initializer(graph, weight, f"{base}.conv_weight")]
    if m.bias is not None:
        inputs.append(add_initializer(graph, m.bias, f"{base}.conv_bias"))
    conv = ir.node("Conv", inputs=inputs, attributes={"kernel_shape": kernel}, name=base)
    out = conv.outputs[0]
    out.name = f"{base}.conv_out"
    out.type = m.gemm.outputs[0].type
    batch = m.x.shape[0] if m.x.shape is not None else ir.SymbolicDim(None)
    out.shape = ir.Shape([batch, weight.shape[0], *kernel])
    flat = ir.node("Flatten", inputs=[out], attributes={"axis": 1}, name=f"{base}/flatten")
    replaced = [*m.gemm.inputs[1:], *m.flatten.inputs[1:]]
    ir.convenience.replace_nodes_and_values(
        graph, m.gemm, [m.flatten, m.gemm], [conv, flat], [m.gemm.outputs[0]], [flat.outputs[0]]
    )
    drop_unused_initializers(graph, replaced)


class GemmToConvRule(Rule[_Match]):
    """Flatten(x[N, C, 1, 1]) -> Gemm  =>  Conv 1x1 -> Flatten."""

    name = "gemm-conv"
    op_types = frozenset({"Gemm"})

    def check(self, node: ir.Node) -> _Match | str:
        return _check(node)

    def rewrite(self, graph: ir.Graph, match: _Match) -> None:
        _rewrite(graph, match)


class GemmToConvPass(RulePass):
    """Turn a classifier-head Gemm over a 1x1 feature map into a 1x1 Conv (NCHW throughout)."""

    name = "gemm-conv"
    # alpha/beta folded in float64 and the 1x1 Conv sums in its own order: reassociation noise.
    tolerance = Tolerance(atol=1e-5, rtol=1e-5)
    may_slow = True
    rules = (GemmToConvRule(),)
