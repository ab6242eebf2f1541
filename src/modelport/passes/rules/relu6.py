"""Clip fusion: two consecutive clamping ops with constant bounds become one ``Clip(x, lo, hi)``.

Each of these ops clamps its input to an interval (``open`` = the op does not bound that side)::

    Relu(x)         [0, open]          Max(x, c)      [c, open]
    Clip(x, a, b)   [a, b]             Min(x, c)      [open, c]

and clamping to ``[a1, b1]`` then to ``[a2, b2]`` is clamping to ``[max(a1, a2), min(b1, b2)]``
whenever that interval is not empty. So ``Min(Max(x, 0), 6)``, ``Max(Min(x, 6), 0)``,
``Min(Relu(x), 6)``, ``Clip(Relu(x), max=6)`` (ReLU6), HardTanh-like ``Min(Max(x, lo), hi)`` and
two consecutive Clips all become one Clip. The rule fires on the second op of a pair; the rule
pass repeats, so longer chains collapse too. It refuses when the merged range is open on a side
(``Max(Relu(x), 1)`` is not a clip), when it is empty or a single point (``lo >= hi``), or when a
bound is not a finite constant.

A Clip whose ``min``/``max`` is *omitted* is not the same as an open side: ONNX Runtime clamps to
the dtype's finite limits then (``Clip(-inf)`` with no min is ``-3.4e38``). Such an omitted bound
is kept omitted in the result when no constant bounds that side, which reproduces it exactly;
when a constant does, the constant wins (it is finite, hence inside the limits).

Exactness (the pass is EXACT; checked in ONNX Runtime CPU, float16/32/64): every element keeps its
value, boundary values included. NaN propagates through Relu, Min, Max and Clip alike (NaN in,
NaN out), so NaN behaviour is unchanged. One difference is documented rather than refused: ORT's
``Max(-0.0, 0.0)`` is ``+0.0`` for float32/float64 while ``Clip(-0.0, 0, 6)`` (and ``Relu``) keep
``-0.0``; the values compare equal and only the sign of a zero result can change.

Bounds must be single-valued constants (scalars, one-element tensors, or all-equal tensors that do
not broadcast the input to a bigger shape) of the input's float dtype. The fused Clip takes its
bounds as scalar inputs from opset 11; before that as float attributes, which ONNX Runtime
implements for float32 only, so older float16/float64 graphs are left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from modelport.passes.base import add_initializer, const_array, only_consumer
from modelport.passes.rules.base import Rule, RulePass
from modelport.verify.tolerance import EXACT

__all__ = ["ClipFusionPass", "ClipFusionRule"]

logger = logging.getLogger(__name__)

_FLOAT_TYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_CLAMP_OPS = frozenset({"Relu", "Max", "Min", "Clip"})


class _Omitted:
    """A Clip bound that is left out: ONNX Runtime clamps to the dtype's finite limit there."""

    def __repr__(self) -> str:
        return "omitted"


OMITTED = _Omitted()

#: One side of a clamp: a finite constant, an omitted Clip bound, or None for an open side.
Bound = float | _Omitted | None


@dataclass
class _Clamp:
    """A clamping node read as ``clamp(data, lo, hi)``."""

    node: ir.Node
    data: ir.Value
    lo: Bound
    hi: Bound
    dtype: np.dtype[Any] | None  # of the constants, when the node has any


@dataclass
class _Match:
    inner: ir.Node
    outer: ir.Node
    x: ir.Value
    lo: float | _Omitted
    hi: float | _Omitted
    dtype: np.dtype[Any]
    as_attributes: bool  # bounds as Clip-6 attributes, not inputs (opset < 11)


def _scalar(value: ir.Value | None, data: ir.Value) -> tuple[float, np.dtype[Any]] | str:
    """The single value of the constant ``value`` and its dtype, or why it is not one."""
    array = const_array(value)
    if array is None:
        name = value.name if value is not None else "?"
        return f"bound '{name}' is not a constant"
    if array.dtype not in _FLOAT_TYPES:
        return f"bound has dtype {array.dtype}, not a float type"
    if array.size == 0 or not np.all(np.isfinite(array)):
        return f"bound {array.flat[0] if array.size else '(empty)'} is not finite"
    if not np.all(array == array.flat[0]):
        return f"bound has shape {list(array.shape)} and is not single-valued"
    if array.ndim > 0:
        reason = _broadcast_keeps_shape(data, array.shape)
        if reason:
            return reason
    return float(array.flat[0]), array.dtype


def _broadcast_keeps_shape(data: ir.Value, shape: tuple[int, ...]) -> str | None:
    """Why a bound of ``shape`` could broadcast ``data`` to a bigger shape (None when it cannot)."""
    if data.shape is None:
        return f"input rank is unknown and the bound has shape {list(shape)}"
    if len(shape) > len(data.shape):
        return f"bound of shape {list(shape)} has higher rank than the {len(data.shape)}-D input"
    for dim, size in zip(reversed(data.shape), reversed(shape), strict=False):
        if size not in (1, dim):
            return f"bound of shape {list(shape)} may broadcast input of shape {data.shape}"
    return None


def _min_max(node: ir.Node) -> _Clamp | str:
    """Min or Max with one constant operand as a clamp."""
    if len(node.inputs) != 2 or node.inputs[0] is None or node.inputs[1] is None:
        return f"{node.op_type} does not have two inputs"
    first, second = node.inputs[0], node.inputs[1]
    data, constant = (second, first) if const_array(first) is not None else (first, second)
    if const_array(data) is not None:
        return f"both operands of {node.op_type} are constants (constant folding's job)"
    found = _scalar(constant, data)
    if isinstance(found, str):
        return found
    value, dtype = found
    return _Clamp(node, data, value, None, dtype) if node.op_type == "Max" else _Clamp(node, data, None, value, dtype)


def _clip(node: ir.Node) -> _Clamp | str:
    """Clip (bounds as inputs from opset 11, as attributes before) as a clamp."""
    data = node.inputs[0] if node.inputs else None
    if data is None:
        return "Clip has no input"
    if "min" in node.attributes or "max" in node.attributes:
        bounds: list[Bound] = [
            node.attributes[key].as_float() if key in node.attributes else OMITTED for key in ("min", "max")
        ]
        if any(isinstance(b, float) and not np.isfinite(b) for b in bounds):
            return f"Clip attribute bounds {bounds} are not finite"
        return _Clamp(node, data, bounds[0], bounds[1], None)
    bounds, dtype = [], None
    for i in (1, 2):
        value = node.inputs[i] if len(node.inputs) > i else None
        if value is None:
            bounds.append(OMITTED)
            continue
        found = _scalar(value, data)
        if isinstance(found, str):
            return found
        bounds.append(found[0])
        dtype = found[1]
    return _Clamp(node, data, bounds[0], bounds[1], dtype)


def _as_clamp(node: ir.Node) -> _Clamp | str:
    """``node`` read as a clamp, or why it is not one."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in _CLAMP_OPS:
        return f"{node.op_type} is not a clamping op"
    if node.op_type == "Relu":
        data = node.inputs[0] if node.inputs else None
        return "Relu has no input" if data is None else _Clamp(node, data, 0.0, None, None)
    return _clip(node) if node.op_type == "Clip" else _min_max(node)


def _merge(side: Literal["lo", "hi"], first: Bound, second: Bound) -> Bound:
    """One side of the composition of two clamps (see the module docstring)."""
    constants = [b for b in (first, second) if isinstance(b, float)]
    if constants:
        return max(constants) if side == "lo" else min(constants)
    return OMITTED if OMITTED in (first, second) else None


def _dtype(inner: _Clamp, outer: _Clamp) -> np.dtype[Any] | str:
    """The float dtype the clamps work in: the input's, else their constants'."""
    known = {d for d in (inner.dtype, outer.dtype) if d is not None}
    if inner.data.dtype is not None:
        known.add(inner.data.dtype.numpy())
    if len(known) != 1:
        return "dtype unknown" if not known else f"dtypes differ: {sorted(str(d) for d in known)}"
    dtype = known.pop()
    return dtype if dtype in _FLOAT_TYPES else f"dtype {dtype} is not float16/float32/float64"


def _bounds_as_attributes(nodes: tuple[ir.Node, ...], graph: ir.Graph | None, dtype: np.dtype[Any]) -> bool | str:
    """Whether the fused Clip takes its bounds as attributes (opset < 11) in this graph, or why no Clip fits."""
    opset = graph.opset_imports.get("", graph.opset_imports.get("ai.onnx")) if graph is not None else None
    versions = [n.version for n in nodes if n.version is not None]
    if opset is None and versions:
        opset = versions[0]
    if opset is None:
        return "the default-domain opset is unknown here (a subgraph)"
    if opset >= 11:
        return False
    if opset < 6:
        return f"opset {opset} predates Clip with min/max attributes"
    if dtype != np.float32:
        return f"opset {opset} Clip takes attributes, which ONNX Runtime runs for float32 only, not {dtype}"
    return True


def _check(outer_node: ir.Node) -> _Match | str:
    """The match for a clamping node fed by another, or the reason the rule does not apply."""
    outer = _as_clamp(outer_node)
    if isinstance(outer, str):
        return outer
    producer = outer.data.producer()
    if producer is None:
        return "input is not produced by a node"
    inner = _as_clamp(producer)
    if isinstance(inner, str):
        return f"input: {inner}"
    reason = only_consumer(outer.data, outer_node)
    if reason:
        return reason
    lo, hi = _merge("lo", inner.lo, outer.lo), _merge("hi", inner.hi, outer.hi)
    if lo is None or hi is None:
        return f"merged range [{lo}, {hi}] is open on one side, not a clip"
    if isinstance(lo, float) and isinstance(hi, float) and not lo < hi:
        return f"merged range [{lo}, {hi}] is empty or a single point"
    dtype = _dtype(inner, outer)
    if isinstance(dtype, str):
        return dtype
    as_attributes = _bounds_as_attributes((producer, outer_node), outer_node.graph, dtype)
    if isinstance(as_attributes, str):
        return as_attributes
    if as_attributes and any(isinstance(b, float) and float(np.float32(b)) != b for b in (lo, hi)):
        return "a bound is not exactly representable as a float32 Clip attribute"
    return _Match(producer, outer_node, inner.data, lo, hi, dtype, as_attributes)


def _bound_value(graph: ir.Graph, bound: float, dtype: np.dtype[Any]) -> ir.Value:
    """A scalar initializer holding ``bound``; every Clip in the graph with that bound shares it."""
    array = np.array(bound, dtype)
    name = f"clip.{dtype.name}.{bound:g}"
    existing = graph.initializers.get(name)
    if existing is not None and not existing.is_graph_input():
        current = const_array(existing)
        if current is not None and current.dtype == dtype and current.shape == () and current == array:
            return existing
    return add_initializer(graph, array, name)


def _rewrite(graph: ir.Graph, m: _Match) -> None:
    attributes: dict[str, float] = {}
    inputs: list[ir.Value | None] = [m.x]
    for key, bound in (("min", m.lo), ("max", m.hi)):
        if m.as_attributes:
            if isinstance(bound, float):
                attributes[key] = bound
        else:
            inputs.append(_bound_value(graph, bound, m.dtype) if isinstance(bound, float) else None)
    while inputs[-1] is None:
        inputs.pop()
    fused = ir.node("Clip", inputs=inputs, attributes=attributes, name=m.outer.name)
    ir.convenience.replace_nodes_and_values(
        graph, m.outer, [m.inner, m.outer], [fused], [m.outer.outputs[0]], [fused.outputs[0]]
    )


class ClipFusionRule(Rule[_Match]):
    """Two consecutive clamps (Relu, Max, Min, Clip) with constant bounds  =>  one Clip."""

    name = "clip-fusion"
    op_types = _CLAMP_OPS

    def check(self, node: ir.Node) -> _Match | str:
        return _check(node)

    def rewrite(self, graph: ir.Graph, match: _Match) -> None:
        _rewrite(graph, match)


class ClipFusionPass(RulePass):
    """Fuse ReLU6 / HardTanh-like Min-Max patterns and consecutive Clips into one Clip."""

    name = "clip-fusion"
    # Value-exact (see the module docstring for the sign of zero).
    tolerance = EXACT
    rules = (ClipFusionRule(),)
