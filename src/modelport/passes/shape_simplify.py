"""Shape-subgraph simplification: fold ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chains.

PyTorch exports ``x.view(x.size(0), -1)`` as a small integer program that reads ``x``'s shape at
run time. This pass evaluates such programs *symbolically* over the shapes from onnx shape
inference. Every element of a shape vector is one of

* a static int (``Gather(Shape(x), 1)`` where ``x`` is ``[N, 8, ...]`` is 8),
* "dim ``k`` of value ``v``" (a dim that is only known at run time), or
* unknown (e.g. the product of two run-time dims).

Supported ops: ``Shape`` (with start/end), ``Gather``/``Slice`` on axis 0 with constant indices,
``Unsqueeze``/``Squeeze`` between a scalar and a 1-element vector, ``Concat``, integer
``Cast``, ``Identity``, and elementwise ``Add``/``Sub``/``Mul``/``Div`` (folded when both sides are
static, or one side is the neutral element).

Two rewrites follow:

1. A shape value whose elements are all static becomes a constant, even when the tensor it was
   read from has other, dynamic axes.
2. A ``Reshape`` target with run-time elements becomes a constant when every element is static,
   or is dim ``i`` of the Reshape's own input at position ``i`` (written ``0``, "copy", which needs
   ``allowzero=0``; two dims are the same when they are the same axis of the same value or carry
   the same symbolic name), or is the single element left unknown (written ``-1``). A *new* -1 is
   only written when every other element is a positive static int: ONNX Runtime refuses to infer
   -1 when the other dims multiply to 0, which the original graph would have accepted (a batch of
   0). Two unknown elements cannot both be inferred; the Reshape is then left alone.

Dynamic axes stay dynamic: nothing is assumed about a symbolic dim's value. The chain nodes that
no longer have readers are removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.ir.serde import infer_shapes
from modelport.passes.base import Pass, add_initializer, const_array
from modelport.verify.tolerance import EXACT

__all__ = ["ShapeSimplificationPass"]

logger = logging.getLogger(__name__)

#: Integer constants longer than this are not treated as shape vectors.
_MAX_LENGTH = 64
#: Shape inference + folding rounds before the pass stops (each round needs a fold to continue).
_MAX_ROUNDS = 4
_INTEGER_TYPES = frozenset({ir.DataType.INT64, ir.DataType.INT32})
#: x op n == x for these n on the right (and left) side.
_NEUTRAL_RIGHT = {"Add": 0, "Sub": 0, "Mul": 1, "Div": 1}
_NEUTRAL_LEFT = {"Add": 0, "Mul": 1}


@dataclass(frozen=True)
class _DimOf:
    """The run-time size of axis ``axis`` of ``value``."""

    value: ir.Value
    axis: int

    def symbol(self) -> str | None:
        shape = self.value.shape
        dim = shape[self.axis] if shape is not None else None
        return dim.value if isinstance(dim, ir.SymbolicDim) and dim.value else None


#: One element of a shape vector: static, a run-time dim, or unknown (None).
_Elem = int | _DimOf | None


@dataclass(frozen=True)
class _Vec:
    """A small integer tensor (0-D or 1-D) known element by element."""

    elems: tuple[_Elem, ...]
    scalar: bool
    dtype: ir.DataType
    #: Computed from a Shape (as opposed to a plain constant, which needs no folding).
    from_shape: bool

    def ints(self) -> list[int] | None:
        if all(isinstance(e, int) for e in self.elems):
            return [e for e in self.elems if isinstance(e, int)]
        return None

    def array(self) -> np.ndarray[Any, Any]:
        array = np.array(self.ints(), dtype=self.dtype.numpy())
        return array.reshape(()) if self.scalar else array


_Lookup = Callable[[ir.Value | None], _Vec | None]


def _ints(node: ir.Node, index: int, attr: str, lookup: _Lookup) -> list[int] | None:
    """Static ints from input ``index`` or attribute ``attr``; None when absent or not static."""
    if len(node.inputs) > index and node.inputs[index] is not None:
        vec = lookup(node.inputs[index])
        return vec.ints() if vec is not None else None
    if attr in node.attributes:
        return [int(v) for v in node.attributes[attr].value]
    return None


def _given(node: ir.Node, index: int, attr: str) -> bool:
    return (len(node.inputs) > index and node.inputs[index] is not None) or attr in node.attributes


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else int(attr.value)


# --- symbolic evaluation, one function per op ------------------------------------------------


def _shape(node: ir.Node, lookup: _Lookup) -> _Vec | None:
    x = node.inputs[0]
    if x is None or x.shape is None:
        return None
    elems = tuple(d if isinstance(d, int) else _DimOf(x, axis) for axis, d in enumerate(x.shape))
    start, end = _int_attr(node, "start", 0), node.attributes.get("end")
    # Python slicing clamps negative and out-of-range bounds the way Shape(start, end) does.
    elems = elems[start : int(end.value) if end is not None else None]
    return _Vec(elems, scalar=False, dtype=ir.DataType.INT64, from_shape=True)


def _gather(node: ir.Node, lookup: _Lookup) -> _Vec | None:
    data, indices = lookup(node.inputs[0]), lookup(node.inputs[1])
    picks = indices.ints() if indices is not None else None
    if data is None or data.scalar or picks is None or indices is None or _int_attr(node, "axis", 0) not in (0, -1):
        return None
    n = len(data.elems)
    if any(not -n <= i < n for i in picks):
        return None
    return _Vec(tuple(data.elems[i] for i in picks), indices.scalar, data.dtype, data.from_shape)


def _slice(node: ir.Node, lookup: _Lookup) -> _Vec | None:
    data = lookup(node.inputs[0])
    starts, ends = _ints(node, 1, "starts", lookup), _ints(node, 2, "ends", lookup)
    axes = _ints(node, 3, "axes", lookup) if _given(node, 3, "axes") else [0]
    steps = _ints(node, 4, "steps", lookup) if _given(node, 4, "steps") else [1]
    if data is None or data.scalar or starts is None or ends is None or axes not in ([0], [-1]) or steps is None:
        return None
    if len(starts) != 1 or len(ends) != 1 or len(steps) != 1 or steps[0] <= 0:
        return None  # negative steps clamp differently from Python slicing
    return replace(data, elems=data.elems[starts[0] : ends[0] : steps[0]])


def _unsqueeze(node: ir.Node, lookup: _Lookup) -> _Vec | None:
    data = lookup(node.inputs[0])
    if data is None or not data.scalar or _ints(node, 1, "axes", lookup) not in ([0], [-1]):
        return None
    return replace(data, scalar=False)


def _squeeze(node: ir.Node, lookup: _Lookup) -> _Vec | None:
    data = lookup(node.inputs[0])
    if data is None or data.scalar or len(data.elems) != 1:
        return None
    if _given(node, 1, "axes") and _ints(node, 1, "axes", lookup) not in ([0], [-1]):
        return None
    return replace(data, scalar=True)


def _concat(node: ir.Node, lookup: _Lookup) -> _Vec | None:
    parts = [lookup(v) for v in node.inputs]
    if _int_attr(node, "axis", 0) not in (0, -1) or not parts:
        return None
    vecs = [p for p in parts if p is not None and not p.scalar]
    if len(vecs) != len(parts) or len({v.dtype for v in vecs}) != 1:
        return None
    elems = tuple(e for v in vecs for e in v.elems)
    return _Vec(elems, scalar=False, dtype=vecs[0].dtype, from_shape=any(v.from_shape for v in vecs))


def _cast(node: ir.Node, lookup: _Lookup) -> _Vec | None:
    data = lookup(node.inputs[0])
    to = ir.DataType(_int_attr(node, "to", 0))
    if data is None or data.dtype not in _INTEGER_TYPES or to not in _INTEGER_TYPES:
        return None  # int64 <-> int32 keeps every dim (dims beyond 2**31 do not occur)
    return replace(data, dtype=to)


def _identity(node: ir.Node, lookup: _Lookup) -> _Vec | None:
    return lookup(node.inputs[0])


def _combine(op: str, a: _Elem, b: _Elem) -> _Elem:
    """One element of an elementwise op: exact for two ints, the other side for a neutral one."""
    if isinstance(a, int) and isinstance(b, int):
        if op == "Div":
            return a // b if a >= 0 and b > 0 else None  # ONNX integer Div truncates; agree on >= 0
        return {"Add": a + b, "Sub": a - b, "Mul": a * b}[op]
    if isinstance(b, int) and b == _NEUTRAL_RIGHT[op]:
        return a
    if isinstance(a, int) and op in _NEUTRAL_LEFT and a == _NEUTRAL_LEFT[op]:
        return b
    return None


def _arithmetic(node: ir.Node, lookup: _Lookup) -> _Vec | None:
    a, b = lookup(node.inputs[0]), lookup(node.inputs[1] if len(node.inputs) > 1 else None)
    if a is None or b is None or a.dtype != b.dtype:
        return None
    la, lb = len(a.elems), len(b.elems)
    if la != lb and 1 not in (la, lb):
        return None
    n = max(la, lb)
    left = a.elems * n if la == 1 else a.elems
    right = b.elems * n if lb == 1 else b.elems
    elems = tuple(_combine(node.op_type, x, y) for x, y in zip(left, right, strict=True))
    return _Vec(elems, a.scalar and b.scalar, a.dtype, a.from_shape or b.from_shape)


_EVALUATORS: dict[str, Callable[[ir.Node, _Lookup], _Vec | None]] = {
    "Shape": _shape,
    "Gather": _gather,
    "Slice": _slice,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": _concat,
    "Cast": _cast,
    "Identity": _identity,
    "Add": _arithmetic,
    "Sub": _arithmetic,
    "Mul": _arithmetic,
    "Div": _arithmetic,
}


class _ShapeProgram:
    """The symbolic values of one graph's shape computations."""

    def __init__(self, graph: ir.Graph) -> None:
        self.known: dict[ir.Value, _Vec] = {}
        self.nodes: list[ir.Node] = []
        for node in graph:
            evaluate = _EVALUATORS.get(node.op_type)
            if evaluate is None or node.domain not in ("", "ai.onnx") or not node.inputs:
                continue
            vec = evaluate(node, self.lookup)
            if vec is not None:
                self.known[node.outputs[0]] = vec
                self.nodes.append(node)

    def lookup(self, value: ir.Value | None) -> _Vec | None:
        if value is None:
            return None
        if value in self.known:
            return self.known[value]
        array = const_array(value)
        if array is None or array.dtype.kind != "i" or array.ndim > 1 or array.size > _MAX_LENGTH:
            return None
        elems = tuple(int(v) for v in array.reshape(-1))
        return _Vec(elems, array.ndim == 0, ir.DataType.from_numpy(array.dtype), from_shape=False)

    def is_static(self, value: ir.Value) -> bool:
        vec = self.known.get(value)
        return vec is not None and vec.from_shape and vec.ints() is not None


# --- rewrites ---------------------------------------------------------------------------------


def _fold_static(graph: ir.Graph, program: _ShapeProgram) -> bool:
    """Replace shape values whose elements are all static by constants, where something else reads them."""
    modified = False
    for value, vec in program.known.items():
        if not program.is_static(value):
            continue
        if all(all(program.is_static(out) for out in consumer.outputs) for consumer in value.consumers()):
            continue  # read only by other static shape values (or nobody): their fold covers it
        const = add_initializer(graph, vec.array(), f"{value.name or 'shape'}_static")
        for user, index in list(value.uses()):  # a graph output keeps its node; its readers move
            user.replace_input_with(index, const)
        logger.debug("shape-simplify: '%s' is the constant %s", value.name, vec.ints())
        modified = True
    return modified


def _same_dim(elem: _DimOf, data: ir.Value, position: int) -> bool:
    """Whether ``elem`` is, provably, dim ``position`` of ``data``."""
    if elem.value is data and elem.axis == position:
        return True
    dim = data.shape[position] if data.shape is not None and position < data.shape.rank() else None
    if isinstance(dim, ir.SymbolicDim) and dim.value is not None and dim.value == elem.symbol():
        return True
    return _traces_to(data, position, elem, _MAX_TRACE)


#: Nodes a provenance walk may visit (see :func:`_traces_to`).
_MAX_TRACE = 64
_UNARY = frozenset(
    {"Sigmoid", "Relu", "Tanh", "Exp", "Log", "Neg", "Abs", "Sqrt", "Erf", "Cast", "Identity", "Clip", "LeakyRelu"}
    | {"HardSigmoid", "HardSwish", "Softplus", "Elu", "Selu", "Gelu", "Mish", "Floor", "Ceil", "Round", "Reciprocal"}
)
_BROADCAST = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where", "PRelu"})


def _sliced_axes(node: ir.Node) -> list[int] | None:
    """The axes a Slice cuts (constant axes input or attribute; all leading axes by default)."""
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        axes = const_array(node.inputs[3])
        return None if axes is None else [int(a) for a in axes.reshape(-1)]
    if "axes" in node.attributes:
        return list(node.attributes["axes"].as_ints())
    starts = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if starts is None:
        starts_attr = node.attributes.get("starts")
        return None if starts_attr is None else list(range(len(starts_attr.as_ints())))
    return list(range(starts.size))


def _traces_to(value: ir.Value, axis: int, target: _DimOf, budget: int) -> bool:
    """Whether axis ``axis`` of ``value`` is, through size-preserving ops, ``target``'s dim.

    Shape inference renames a symbolic dim whenever it cannot match two symbols (a broadcast, a
    Concat), which hides that a detector head's batch is still the batch of the Conv it came
    from. Walking back through ops that carry one axis through unchanged (element-wise ops where
    the other operands are 1 on that axis, Concat/Slice/Split on other axes, Transpose, Reshape
    with a 0 there) recovers it. Every branch that feeds the axis must lead to ``target``.
    """
    if value is target.value and axis == target.axis:
        return True
    node = value.producer()
    if budget <= 0 or node is None or node.domain not in ("", "ai.onnx") or value.shape is None:
        return False
    rank = value.shape.rank()
    sources = _axis_sources(node, axis, rank)
    return bool(sources) and all(_traces_to(v, a, target, budget - 1) for v, a in sources)


def _broadcast_sources(node: ir.Node, axis: int, rank: int) -> list[tuple[ir.Value, int]]:
    """Inputs of an element-wise op that set the output's size on ``axis`` (not broadcast there)."""
    sources = []
    for v in node.inputs:
        if v is None or v.shape is None:
            return []
        a = axis - (rank - v.shape.rank())
        if a < 0 or v.shape[a] == 1:
            continue  # broadcast over this axis: it does not set the size
        sources.append((v, a))
    return sources


def _axis_sources(node: ir.Node, axis: int, rank: int) -> list[tuple[ir.Value, int]]:
    """The (input, axis) pairs that determine axis ``axis`` of ``node``'s output (empty: unknown)."""
    op = node.op_type
    first = node.inputs[0] if node.inputs else None
    if first is None:
        return []
    if op in _UNARY:
        return [(first, axis)]
    if op in _BROADCAST:
        return _broadcast_sources(node, axis, rank)
    if op == "Concat":
        cat = _int_attr(node, "axis", 0) % rank
        return [] if cat == axis else [(v, axis) for v in node.inputs if v is not None]
    if op in ("Slice", "Split"):
        axes = _sliced_axes(node) if op == "Slice" else [_int_attr(node, "axis", 0)]
        if axes is None or any(a % rank == axis for a in axes):
            return []
        return [(first, axis)]
    if op == "Transpose":
        perm = node.attributes.get("perm")
        return [] if perm is None else [(first, int(perm.as_ints()[axis]))]
    if op == "Reshape" and not _int_attr(node, "allowzero", 0):
        shape = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if shape is not None and axis < shape.size and int(shape.reshape(-1)[axis]) == 0:
            return [(first, axis)]
    return []


def _reshape_target(node: ir.Node, vec: _Vec) -> np.ndarray[Any, Any] | str:
    """A constant target equivalent to ``vec`` for this Reshape, or why there is none."""
    data = node.inputs[0]
    allowzero = _int_attr(node, "allowzero", 0)
    target: list[int] = []
    unknown: list[int] = []
    for i, elem in enumerate(vec.elems):
        if isinstance(elem, int):
            target.append(elem)
        elif isinstance(elem, _DimOf) and data is not None and not allowzero and _same_dim(elem, data, i):
            target.append(0)
        else:
            unknown.append(i)
            target.append(-1)
    if len(unknown) > 1:
        return f"target elements {unknown} are unknown; at most one can become -1"
    if unknown and target.count(-1) > 1:
        return f"target element {unknown[0]} is unknown and the target already has a -1"
    if unknown and any(t <= 0 for i, t in enumerate(target) if i != unknown[0]):
        return f"a new -1 at {unknown[0]} would fail when another target dim is 0 at run time"
    return np.array(target, dtype=np.int64)


def _fold_reshape_targets(graph: ir.Graph, program: _ShapeProgram) -> bool:
    modified = False
    for node in list(graph):
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        vec = program.known.get(node.inputs[1]) if node.inputs[1] is not None else None
        if vec is None or vec.ints() is not None or not vec.from_shape:
            continue
        target = _reshape_target(node, vec)
        if isinstance(target, str):
            logger.debug("shape-simplify: keep Reshape '%s' target: %s", node.name, target)
            continue
        node.replace_input_with(1, add_initializer(graph, target, f"{node.name or 'reshape'}_target"))
        logger.debug("shape-simplify: Reshape '%s' target is the constant %s", node.name, target.tolist())
        modified = True
    return modified


def _remove_dead(graph: ir.Graph, program: _ShapeProgram) -> None:
    """Remove the shape-program nodes (and Constants feeding them) that nobody reads any more."""
    candidates = set(program.nodes)
    for node in program.nodes:
        candidates.update(p for v in node.inputs if v is not None and (p := v.producer()) and p.op_type == "Constant")
    for node in reversed(list(graph)):
        if node in candidates and not any(out.uses() or out.is_graph_output() for out in node.outputs):
            graph.remove(node, safe=True)


class ShapeSimplificationPass(Pass):
    """Turn run-time shape computations into constants where symbolic shapes allow."""

    name = "shape-simplify"
    tolerance = EXACT

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        # A folded target lets shape inference name more dims (e.g. carry the batch dim through a
        # Reshape), which can prove the next chain: repeat while something folds.
        for _ in range(_MAX_ROUNDS):
            if not self._round(model):
                break
            modified = True
        return ir.passes.PassResult(model, modified=modified)

    @staticmethod
    def _round(model: ir.Model) -> bool:
        infer_shapes(model)
        modified = False
        for graph in model.graphs():
            program = _ShapeProgram(graph)
            changed = _fold_static(graph, program)
            changed |= _fold_reshape_targets(graph, program)
            if changed:
                _remove_dead(graph, program)
            modified |= changed
        return modified
