"""No-op elimination: bypass nodes that provably return their input unchanged.

Each op type has one small rule in :data:`_RULES` that returns either the value the node passes
through unchanged (its *source*) or the reason it is not a no-op. A node is a no-op when:

* ``Identity``; ``Dropout`` in inference mode with its mask unused; ``Cast``/``CastLike`` to the
  type the input already has;
* ``Reshape`` whose constant target, after resolving ``0`` (copy the input dim, unless
  ``allowzero=1``) and at most one ``-1``, equals the input shape. With every other dim equal and
  the rank unchanged, ``-1`` can only resolve to the one dim left over;
* ``Flatten`` of a rank-2 input that keeps both dims (``axis=1``, or a static 1 on the side that
  is folded into the other);
* ``Transpose`` with the identity permutation, or ``Transpose(q)`` fed by ``Transpose(p)`` with
  ``p[q[i]] == i`` (the second undoes the first: output axis ``i`` is input axis ``p[q[i]]``);
* ``Slice`` that keeps everything: step 1, start 0 (or ``<= -dim`` on a static dim), end
  ``>= dim`` on a static dim or INT64_MAX on any dim;
* ``Pad`` with all-zero pads (the opset-11 input or the older attribute), any mode;
* ``Concat`` of a single input; ``Tile`` with all-one repeats;
* ``Expand`` whose broadcast cannot grow the input: target rank not above the input rank and each
  target entry either 1 or equal to a *static* input dim (a symbolic input dim could be 1 at run
  time and then grow to the target);
* ``Squeeze(a)`` of ``Unsqueeze(a)`` (the same axes come and go), or ``Unsqueeze(a)`` of
  ``Squeeze(a)`` where the squeezed dims are statically 1.

Shapes come from onnx shape inference (run first, non-strict). No-op-ness that depends on a
run-time value (a symbolic dim, a non-constant parameter) is never assumed. When no rule matches,
``Transpose(q)`` of ``Transpose(p)`` whose first output has no other reader is merged into one
``Transpose(p[q])``. A node whose output is a graph output fed straight by a graph input stays
(see :func:`~modelport.passes.base.bypass`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import onnx_ir as ir

from modelport.ir.serde import infer_shapes
from modelport.passes.base import Pass, bypass, const_array, only_consumer
from modelport.verify.tolerance import EXACT

__all__ = ["NoOpEliminationPass"]

logger = logging.getLogger(__name__)

#: Slice ends at or above this take everything, whatever the dim.
_INT64_MAX = 2**63 - 1

#: A rule's answer: the value the node passes through unchanged, or why it is not a no-op.
_Answer = ir.Value | str


# --- small readers -------------------------------------------------------------------------


def _data(node: ir.Node) -> ir.Value | None:
    return node.inputs[0] if node.inputs else None


def _dims(value: ir.Value | None) -> Sequence[int | ir.SymbolicDim] | None:
    """The value's dims (ints or symbolic), or None when even the rank is unknown."""
    if value is None or value.shape is None:
        return None
    return list(value.shape)


def _has(node: ir.Node, index: int, attr: str) -> bool:
    """Whether the parameter is given, as input ``index`` or as attribute ``attr``."""
    return (len(node.inputs) > index and node.inputs[index] is not None) or attr in node.attributes


def _ints(node: ir.Node, index: int, attr: str) -> list[int] | None:
    """Constant ints from input ``index`` (newer opsets) or attribute ``attr``; None if not constant."""
    if len(node.inputs) > index and node.inputs[index] is not None:
        array = const_array(node.inputs[index])
        return None if array is None or array.dtype.kind not in "iu" else [int(v) for v in array.reshape(-1)]
    if attr in node.attributes:
        return [int(v) for v in node.attributes[attr].value]
    return None


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else int(attr.value)


def _normalize(axes: Sequence[int], rank: int) -> list[int] | None:
    """Axes in [0, rank), or None when one is out of range."""
    out = [a + rank if a < 0 else a for a in axes]
    return out if all(0 <= a < rank for a in out) else None


def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx") else None


# --- one rule per op type -----------------------------------------------------------------


def _identity(node: ir.Node) -> _Answer:
    return _data(node) or "no input"


def _dropout(node: ir.Node) -> _Answer:
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        return "Dropout has a training_mode input"
    if _int_attr(node, "training_mode", 0):
        return "Dropout is in training mode"
    if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
        return "Dropout's mask output is used"
    return _data(node) or "no input"


def _cast(node: ir.Node) -> _Answer:
    source = _data(node)
    to = node.attributes.get("to")
    if source is not None and to is not None and source.dtype is not None and int(to.value) == int(source.dtype):
        return source
    return "Cast changes the type (or the input type is unknown)"


def _cast_like(node: ir.Node) -> _Answer:
    source = _data(node)
    like = node.inputs[1] if len(node.inputs) > 1 else None
    if source is not None and like is not None and source.dtype is not None and source.dtype == like.dtype:
        return source
    return "CastLike changes the type (or a type is unknown)"


def _reshape(node: ir.Node) -> _Answer:
    source, dims = _data(node), _dims(_data(node))
    target = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if source is None or dims is None:
        return "input rank is unknown"
    if target is None:
        return "target shape is not a constant"
    if target.size != len(dims):
        return f"Reshape changes the rank from {len(dims)} to {target.size}"
    allowzero = _int_attr(node, "allowzero", 0)
    inferred = 0
    for i, (want, dim) in enumerate(zip((int(t) for t in target.reshape(-1)), dims, strict=True)):
        if want == -1:
            inferred += 1
        elif not (want == 0 and not allowzero) and not (isinstance(dim, int) and dim == want):
            return f"target dim {i} is {want}, input dim is {dim}"
    return source if inferred <= 1 else "target has more than one -1"


def _flatten(node: ir.Node) -> _Answer:
    source, dims = _data(node), _dims(_data(node))
    if source is None or dims is None or len(dims) != 2:
        return "input is not rank 2 (or its rank is unknown)"
    axis = _int_attr(node, "axis", 1)
    axis = axis + 2 if axis < 0 else axis
    # Flatten gives [prod(dims[:axis]), prod(dims[axis:])]: unchanged for axis 1, or when the dim
    # folded into the other side is a static 1.
    if axis == 1 or (axis == 0 and dims[0] == 1) or (axis == 2 and dims[1] == 1):
        return source
    return f"Flatten(axis={axis}) changes the shape {dims}"


def _perm(node: ir.Node) -> list[int] | None:
    """The permutation of a Transpose (default: reversed axes, which needs the rank)."""
    attr = node.attributes.get("perm")
    if attr is not None:
        return [int(p) for p in attr.value]
    dims = _dims(_data(node))
    return None if dims is None else list(reversed(range(len(dims))))


def _transpose(node: ir.Node) -> _Answer:
    source, q = _data(node), _perm(node)
    if source is None or q is None:
        return "permutation unknown (no perm and unknown rank)"
    if q == list(range(len(q))):
        return source
    first = _producer(source, "Transpose")
    p = _perm(first) if first is not None else None
    if first is None or p is None or len(p) != len(q):
        return "not the identity permutation and not fed by a Transpose"
    if any(p[q[i]] != i for i in range(len(q))):
        return f"Transpose(perm={q}) does not undo Transpose(perm={p})"
    return _data(first) or "no input"


def _slice(node: ir.Node) -> _Answer:
    source, dims = _data(node), _dims(_data(node))
    if source is None or dims is None:
        return "input rank is unknown"
    starts, ends = _ints(node, 1, "starts"), _ints(node, 2, "ends")
    axes = _ints(node, 3, "axes") if _has(node, 3, "axes") else list(range(len(starts or [])))
    steps = _ints(node, 4, "steps") if _has(node, 4, "steps") else [1] * len(starts or [])
    if starts is None or ends is None or axes is None or steps is None:
        return "starts, ends, axes or steps are not constants"
    normalized = _normalize(axes, len(dims))
    if normalized is None or not (len(starts) == len(ends) == len(normalized) == len(steps)):
        return "axes out of range or parameters of different lengths"
    for start, end, axis, step in zip(starts, ends, normalized, steps, strict=True):
        dim = dims[axis]
        if step != 1:
            return f"step {step} on axis {axis}"
        if not (start == 0 or (isinstance(dim, int) and start <= -dim)):
            return f"starts at {start} on axis {axis} (dim {dim})"
        if not (end >= _INT64_MAX or (isinstance(dim, int) and end >= dim)):
            return f"ends at {end} on axis {axis} (dim {dim})"
    return source


def _pad(node: ir.Node) -> _Answer:
    pads = _ints(node, 1, "pads")
    if pads is None:
        return "pads are not constant"
    if any(pads):
        return f"pads {pads} are not all zero"
    return _data(node) or "no input"


def _concat(node: ir.Node) -> _Answer:
    if len(node.inputs) != 1 or node.inputs[0] is None:
        return f"Concat of {len(node.inputs)} inputs"
    return node.inputs[0]


def _tile(node: ir.Node) -> _Answer:
    repeats = _ints(node, 1, "repeats")
    if repeats is None or any(r != 1 for r in repeats):
        return f"repeats {repeats} are not constant ones"
    return _data(node) or "no input"


def _expand(node: ir.Node) -> _Answer:
    source, dims = _data(node), _dims(_data(node))
    target = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if source is None or dims is None or target is None:
        return "input rank unknown or target shape not constant"
    wanted = [int(t) for t in target.reshape(-1)]
    if len(wanted) > len(dims):
        return f"Expand to rank {len(wanted)} grows rank {len(dims)}"
    # Broadcasting aligns on the right: each target entry meets the input dim below it.
    for want, dim in zip(wanted, dims[len(dims) - len(wanted) :], strict=True):
        if want != 1 and not (isinstance(dim, int) and dim == want):
            return f"target {want} could grow input dim {dim}"
    return source


def _squeeze(node: ir.Node) -> _Answer:
    """Squeeze(a) of Unsqueeze(a): the inserted axes are taken out again."""
    first = _producer(_data(node), "Unsqueeze")
    if first is None:
        return "not fed by an Unsqueeze"
    removed, inserted = _ints(node, 1, "axes"), _ints(first, 1, "axes")
    if removed is None or inserted is None:
        return "axes are absent or not constant"
    rank = _rank_after_unsqueeze(first, inserted)
    if rank is None:
        return "rank unknown"
    a, b = _normalize(removed, rank), _normalize(inserted, rank)
    if a is None or b is None or sorted(a) != sorted(b):
        return f"Squeeze axes {removed} differ from Unsqueeze axes {inserted}"
    return _data(first) or "no input"


def _rank_after_unsqueeze(unsqueeze: ir.Node, axes: list[int]) -> int | None:
    dims = _dims(_data(unsqueeze))
    if dims is not None:
        return len(dims) + len(axes)
    out = _dims(unsqueeze.outputs[0])
    return None if out is None else len(out)


def _unsqueeze(node: ir.Node) -> _Answer:
    """Unsqueeze(a) of Squeeze(a) where the squeezed dims are static ones."""
    first = _producer(_data(node), "Squeeze")
    dims = _dims(_data(first)) if first is not None else None
    if first is None or dims is None:
        return "not fed by a Squeeze of known rank"
    inserted, removed = _ints(node, 1, "axes"), _ints(first, 1, "axes")
    if inserted is None or removed is None:
        return "axes are absent or not constant"
    a, b = _normalize(inserted, len(dims)), _normalize(removed, len(dims))
    if a is None or b is None or sorted(a) != sorted(b):
        return f"Unsqueeze axes {inserted} differ from Squeeze axes {removed}"
    if any(dims[axis] != 1 for axis in b):
        return "a squeezed dim is not statically 1"
    return _data(first) or "no input"


_RULES: dict[str, Callable[[ir.Node], _Answer]] = {
    "Identity": _identity,
    "Dropout": _dropout,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Slice": _slice,
    "Pad": _pad,
    "Concat": _concat,
    "Tile": _tile,
    "Expand": _expand,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
}


# --- rewrites -----------------------------------------------------------------------------


def _compose_transposes(node: ir.Node) -> bool:
    """Turn Transpose(q) of Transpose(p) into one Transpose(p[q]) when p's output has no other use."""
    first = _producer(_data(node), "Transpose")
    q = _perm(node)
    p = _perm(first) if first is not None else None
    if first is None or p is None or q is None or len(p) != len(q) or first.inputs[0] is None:
        return False
    reason = only_consumer(first.outputs[0], node)
    if reason is not None:
        logger.debug("keep Transpose pair at '%s': %s", node.name, reason)
        return False
    node.replace_input_with(0, first.inputs[0])
    node.attributes["perm"] = ir.AttrInt64s("perm", [p[i] for i in q])
    _remove_if_dead(first)
    logger.debug("merged Transpose '%s' into '%s'", first.name, node.name)
    return True


def _remove_if_dead(node: ir.Node | None) -> None:
    """Drop ``node`` when a bypass left every one of its outputs unread (a cancelled pair's first half)."""
    if node is None or node.graph is None:
        return
    if any(out.uses() or out.is_graph_output() for out in node.outputs):
        return
    node.graph.remove(node, safe=True)


class NoOpEliminationPass(Pass):
    """Bypass nodes that return their input unchanged; merge Transpose chains."""

    name = "noop"
    tolerance = EXACT

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        # Shape-dependent rules need the dims of intermediate values.
        infer_shapes(model)
        modified = False
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            rule = _RULES.get(node.op_type)
            if rule is None or node.graph is None or node.domain not in ("", "ai.onnx"):
                continue
            modified |= self._apply(node, rule(node))
        return ir.passes.PassResult(model, modified=modified)

    @staticmethod
    def _apply(node: ir.Node, answer: _Answer) -> bool:
        if isinstance(answer, str):
            if node.op_type == "Transpose" and _compose_transposes(node):
                return True
            logger.debug("keep %s '%s': %s", node.op_type, node.name, answer)
            return False
        data = _data(node)
        feeder = data.producer() if data is not None else None
        reason = bypass(node, answer)
        if reason is not None:
            logger.debug("keep %s '%s': %s", node.op_type, node.name, reason)
            return False
        _remove_if_dead(feeder)
        return True
