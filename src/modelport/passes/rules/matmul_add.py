"""MatMul + Add fusion: a 2-D matrix product followed by a constant bias becomes one Gemm.

``Gemm(A, B, C) = alpha * A @ B + beta * C`` with ``alpha = beta = 1`` is exactly
``Add(MatMul(A, B), C)`` when ``C`` broadcasts *unidirectionally* to ``[M, N]`` (shapes ``[]``,
``[N]``, ``[1, N]``, ``[M, 1]``, ``[M, N]``). The kernel may add the bias inside the GEMM
instead of after it, so results can differ by reassociation noise (tolerance ~1e-5).

The rule fires only when:

* ``A`` is known to be rank 2 and ``B`` is rank 2 — Gemm is strictly 2-D. Rank-3+ MatMuls
  (transformer projections over ``[batch, seq, hidden]``) are left alone: a Gemm there would need
  Reshapes around it, and ONNX Runtime already fuses those MatMul+Add pairs itself;
* the MatMul output is read by the Add alone and is not a graph output;
* the bias is a constant whose shape Gemm's ``C`` accepts;
* the dtype is a floating type (float, double, float16; bfloat16 from opset 13). Gemm also
  accepts integers, but MatMul+Add on integers is kept as is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx_ir as ir

from modelport.passes.base import const_array, only_consumer
from modelport.passes.rules.base import Rule, RulePass
from modelport.verify.tolerance import Tolerance

__all__ = ["FuseMatMulAddPass", "MatMulAddRule"]

logger = logging.getLogger(__name__)

_FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16})


@dataclass
class _Match:
    matmul: ir.Node
    add: ir.Node
    a: ir.Value
    b: ir.Value
    bias: ir.Value


def _opset(node: ir.Node) -> int | None:
    """The default-domain opset of ``node`` (None when unknown, as in most subgraphs)."""
    if node.version is not None:
        return node.version
    if node.graph is None:
        return None
    return node.graph.opset_imports.get("", node.graph.opset_imports.get("ai.onnx"))


def _rank(value: ir.Value) -> int | None:
    """The rank of ``value`` when it is known from its shape, its constant, or a Flatten producer."""
    if value.shape is not None:
        return len(value.shape)
    array = const_array(value)
    if array is not None:
        return array.ndim
    producer = value.producer()
    if producer is not None and producer.op_type == "Flatten" and producer.domain == "":
        return 2
    return None


def _dim(value: ir.Value, axis: int) -> int | None:
    """A static dimension of ``value`` (None when symbolic or unknown)."""
    if value.shape is not None:
        d = value.shape[axis]
        return d if isinstance(d, int) else None
    array = const_array(value)
    return None if array is None else int(array.shape[axis])


def _bias_reason(bias_shape: tuple[int, ...], m: int | None, n: int | None) -> str | None:
    """Why a bias of ``bias_shape`` is not a valid Gemm C for an [m, n] product (None when it is)."""
    if len(bias_shape) > 2:
        return f"bias has rank {len(bias_shape)}; Gemm's C is at most rank 2"
    for b, out in zip(reversed(bias_shape), (n, m), strict=False):
        if b not in (1, out):
            return f"bias shape {list(bias_shape)} does not broadcast to [{m}, {n}] (unknown or different dim)"
    return None


def _dtype_reason(matmul: ir.Node, a: ir.Value, bias: ir.Value) -> str | None:
    dtype = a.dtype or bias.dtype
    if dtype is None:
        return "dtype of the MatMul is unknown"
    if dtype == ir.DataType.BFLOAT16:
        opset = _opset(matmul)
        return None if opset is not None and opset >= 13 else "bfloat16 Gemm needs opset 13 or newer"
    if dtype not in _FLOAT_TYPES:
        return f"dtype {dtype} is not a floating type"
    return None


def _operands(add: ir.Node) -> tuple[ir.Node, ir.Value] | str:
    """The MatMul feeding ``add`` and the constant bias beside it, or a reason."""
    if len(add.inputs) != 2:
        return "Add does not have two inputs"
    for mm_side, bias_side in ((0, 1), (1, 0)):
        value, bias = add.inputs[mm_side], add.inputs[bias_side]
        producer = value.producer() if value is not None else None
        if producer is None or producer.op_type != "MatMul" or producer.domain != "" or bias is None:
            continue
        if const_array(bias) is None:
            continue
        return producer, bias
    return "no input is a MatMul beside a constant bias"


def _check(add: ir.Node) -> _Match | str:
    """The match for an Add node, or the reason the rule does not apply."""
    found = _operands(add)
    if isinstance(found, str):
        return found
    matmul, bias = found
    out = matmul.outputs[0]
    reason = only_consumer(out, add)
    if reason:
        return reason
    a, b = matmul.inputs[0], matmul.inputs[1]
    if a is None or b is None:
        return "MatMul has a missing input"
    rank_a, rank_b = _rank(a), _rank(b)
    if rank_a != 2 or rank_b != 2:
        return f"MatMul operands have ranks {rank_a} and {rank_b}; Gemm needs known rank 2 (ORT fuses N-D itself)"
    bias_array = const_array(bias)
    assert bias_array is not None
    reason = _bias_reason(bias_array.shape, _dim(a, 0), _dim(b, 1)) or _dtype_reason(matmul, a, bias)
    if reason:
        return reason
    opset = _opset(matmul)
    if opset is not None and opset < 7:
        return f"opset {opset} Gemm needs the broadcast attribute; not handled"
    return _Match(matmul, add, a, b, bias)


def _rewrite(graph: ir.Graph, m: _Match) -> None:
    gemm = ir.node("Gemm", inputs=[m.a, m.b, m.bias], name=m.add.name or m.matmul.name)
    ir.convenience.replace_nodes_and_values(
        graph, m.add, [m.matmul, m.add], [gemm], [m.add.outputs[0]], [gemm.outputs[0]]
    )


class MatMulAddRule(Rule[_Match]):
    """MatMul(A, B) -> Add(., bias)  =>  Gemm(A, B, bias), for rank-2 float operands."""

    name = "matmul-add-gemm"
    op_types = frozenset({"Add"})

    def check(self, node: ir.Node) -> _Match | str:
        return _check(node)

    def rewrite(self, graph: ir.Graph, match: _Match) -> None:
        _rewrite(graph, match)


class FuseMatMulAddPass(RulePass):
    """Fuse a rank-2 MatMul and the constant bias Add after it into one Gemm."""

    name = "matmul-add-gemm"
    # The bias may be accumulated inside the GEMM: reassociation noise only.
    tolerance = Tolerance(atol=1e-5, rtol=1e-5)
    rules = (MatMulAddRule(),)
