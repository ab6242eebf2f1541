"""Input shapes: fix a dimension to a size, free a static one, change the batch.

Fixing a dynamic dimension to a size is always safe: the model computed for every size, it now
computes for one. Freeing a static dimension is the hard direction, and no exporter-independent
tool does it: a model traced at batch 1 carries that 1 in constant shape operands —
``Reshape(x, [1, 128])`` — so relabelling the input is not enough; at batch 3 the model fails, or
worse, runs and mixes samples. :func:`set_input_shapes` therefore

1. infers every tensor's shape at the old size (the reference);
2. makes the dimension symbolic and infers again: the tensors whose dimensions stopped being
   static are the ones that follow it;
3. rewrites the constant shape operand of each node reading such a tensor, but only where the
   rewrite provably gives the reference result at the old size:

   * ``Reshape``: the target entry ``j`` that holds the followed input axis ``k`` whole becomes
     ``0`` (copy axis ``k``) when the leading axes pass through unchanged up to ``j == k``,
     otherwise ``-1`` (the entry is the product of ``k`` and neighbouring static axes, found by
     matching prefix products of the reference input and output shapes; any other ``-1`` becomes
     its reference size);
   * ``Expand``: the target entry broadcast against the followed axis becomes ``1`` (keep the
     input's size);
   * ``Slice`` over the whole followed axis: its end becomes INT64_MAX.

   A constant that hard-codes the size in any other way (``Resize`` sizes, a ``Reshape`` that
   splits the axis or could put it in two places) raises with the node's name;
4. repeats 2–3 until nothing changes (each rewrite lets the dimension flow further);
5. runs the result in ONNX Runtime at two sizes of each freed dimension — the old size and
   another — before touching the caller's model.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.errors import BackendError, ConfigError, InvalidModelError
from modelport.ir.serde import clone
from modelport.ir.serde import infer_shapes as serde_infer_shapes
from modelport.passes.base import add_initializer, const_array

__all__ = [
    "infer_shapes",
    "make_dim_dynamic",
    "set_batch",
    "set_input_shape",
    "set_input_shapes",
]

logger = logging.getLogger(__name__)

#: A dimension as callers give it: a size, a symbolic name, or None (dynamic, unnamed).
Dim = int | str | None
_Reference = dict[str, tuple[int | None, ...] | None]
_INT64_MAX = np.iinfo(np.int64).max


def _node_name(node: ir.Node) -> str:
    return f"{node.op_type} '{node.name}'" if node.name else f"unnamed {node.op_type}"


def infer_shapes(model: ir.Model) -> None:
    """Recompute the shape of every node output (graph outputs and subgraphs included) from the
    graph inputs. Annotations inference cannot recover (custom ops) are left empty."""
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for out in node.outputs:
            out.shape = None
    serde_infer_shapes(model)


def _dims(shape: ir.Shape) -> list[Dim]:
    return [d if isinstance(d, int) else d.value for d in shape]


def _as_ir_dim(dim: Dim) -> int | ir.SymbolicDim:
    return dim if isinstance(dim, int) else ir.SymbolicDim(dim)


# -------------------------------------------------------------------------------- public API


def set_input_shape(model: ir.Model, name: str, shape: Sequence[Dim], *, verify: bool = True) -> None:
    """Set the shape of graph input ``name``: sizes, names for symbolic dims, or None.

    See :func:`set_input_shapes`.
    """
    set_input_shapes(model, {name: shape}, verify=verify)


def make_dim_dynamic(model: ir.Model, input_name: str, axis: int, dim_name: str, *, verify: bool = True) -> None:
    """Turn axis ``axis`` of graph input ``input_name`` into the symbolic dimension ``dim_name``,
    fixing the constants that hard-code its old size (see the module docstring)."""
    value = _input(model, input_name)
    if value.shape is None:
        raise ConfigError(f"input '{input_name}' has unknown rank — set its whole shape with set_input_shape")
    dims = _dims(value.shape)
    if not -len(dims) <= axis < len(dims):
        raise ConfigError(f"input '{input_name}' has rank {len(dims)}; axis {axis} does not exist")
    dims[axis] = dim_name
    set_input_shapes(model, {input_name: dims}, verify=verify)


def set_batch(model: ir.Model, batch: int | str, *, verify: bool = True) -> None:
    """Set axis 0 of every graph input (scalars excepted) to a size or a symbolic name.

    Output and intermediate shapes are inferred again. Freeing a static batch fixes the constants
    that hard-code it and checks the model at two batch sizes (see the module docstring).
    """
    if isinstance(batch, bool) or (isinstance(batch, int) and batch < 1) or batch == "":
        raise ConfigError(f"batch must be >= 1 or a dimension name, got {batch!r}")
    shapes: dict[str, list[Dim]] = {}
    for value in model.graph.inputs:
        if value.shape is None:
            raise ConfigError(
                f"input '{value.name}' has unknown rank, so it has no batch axis to set — give it a shape first "
                f"(set_input_shape, or --input {value.name}=... on the command line)"
            )
        if len(value.shape) == 0 or not value.name:
            logger.debug("input '%s' is a scalar: it has no batch axis", value.name)
            continue
        shapes[value.name] = [batch, *_dims(value.shape)[1:]]
    set_input_shapes(model, shapes, verify=verify)


def set_input_shapes(model: ir.Model, shapes: Mapping[str, Sequence[Dim]], *, verify: bool = True) -> None:
    """Give graph inputs new shapes, then infer every other shape again.

    A dimension that was static and changes (to another size, a name, or None) is freed first:
    constants that hard-code its old size are rewritten and, with ``verify``, the model must run
    in ONNX Runtime at the old size and at another one (the new size when one is given). All of
    that happens on a copy first; ``model`` changes only when it succeeded.
    """
    final, freed = _plan(model, shapes)
    if freed and verify:
        trial = clone(model)
        _free(trial, freed)
        _check_runs(trial, freed)
    if freed:
        _free(model, freed)
    for name, dims in final.items():
        _input(model, name).shape = ir.Shape([_as_ir_dim(d) for d in dims])
    infer_shapes(model)


# -------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Freed:
    """A static dimension that changes: it is freed (made symbolic) before it gets its new value."""

    input: str
    axis: int
    old: int
    #: The symbolic name the dimension carries while constants are fixed.
    label: str
    #: A second size to run the model at, besides ``old``.
    probe: int


def _input(model: ir.Model, name: str) -> ir.Value:
    inputs = {v.name: v for v in model.graph.inputs}
    if name in inputs:
        return inputs[name]
    close = difflib.get_close_matches(name, [n for n in inputs if n], n=3)
    hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"inputs: {', '.join(map(repr, inputs))}"
    raise ConfigError(f"the model has no graph input named '{name}' — {hint}")


def _check_dim(name: str, dim: object) -> Dim:
    if dim is None or (isinstance(dim, str) and dim):
        return dim
    if isinstance(dim, int | np.integer) and not isinstance(dim, bool) and dim >= 1:
        return int(dim)
    raise ConfigError(
        f"dimension {dim!r} of input '{name}' is not a size >= 1, a dimension name or None — e.g. [1, 3, 224, 224] "
        "or ['batch', 3, 224, 224]"
    )


def _plan(model: ir.Model, shapes: Mapping[str, Sequence[Dim]]) -> tuple[dict[str, list[Dim]], list[_Freed]]:
    """The final shape of each named input, and the static dimensions that change."""
    final: dict[str, list[Dim]] = {}
    freed: list[_Freed] = []
    for name, shape in shapes.items():
        value = _input(model, name)
        new = [_check_dim(name, d) for d in shape]
        final[name] = new
        if value.shape is None:
            continue
        old = _dims(value.shape)
        if len(old) != len(new):
            raise ConfigError(
                f"input '{name}' has rank {len(old)} ({old}); the new shape {new} has rank {len(new)} — "
                "give one entry per axis"
            )
        for axis, (before, after) in enumerate(zip(old, new, strict=True)):
            if isinstance(before, int) and before != after:
                label = after if isinstance(after, str) else f"__modelport_{name}_{axis}"
                probe = after if isinstance(after, int) else before + 1
                freed.append(_Freed(name, axis, before, label, probe))
    _check_labels(freed)
    return final, freed


def _check_labels(freed: Sequence[_Freed]) -> None:
    first: dict[str, _Freed] = {}
    for change in freed:
        other = first.setdefault(change.label, change)
        if other.old != change.old:
            raise ConfigError(
                f"dimension '{change.label}' would join axis {other.axis} of '{other.input}' (size {other.old}) and "
                f"axis {change.axis} of '{change.input}' (size {change.old}); one name must mean one size — "
                "use two names"
            )


# ------------------------------------------------------------------------------- freeing a dim


def _reference(model: ir.Model) -> _Reference:
    """Every named tensor's inferred shape at the current (static) input sizes."""
    work = clone(model)
    infer_shapes(work)
    shapes: _Reference = {}
    for node in ir.traversal.RecursiveGraphIterator(work.graph):
        for out in node.outputs:
            if out.name:
                shapes[out.name] = (
                    None if out.shape is None else tuple(d if isinstance(d, int) else None for d in out.shape)
                )
    for value in work.graph.inputs:
        if value.name and value.shape is not None:
            shapes[value.name] = tuple(d if isinstance(d, int) else None for d in value.shape)
    return shapes


def _free(model: ir.Model, freed: Sequence[_Freed]) -> None:
    """Make the freed dims symbolic and rewrite constants until the dims flow through the graph."""
    reference = _reference(model)
    for change in freed:
        value = _input(model, change.input)
        assert value.shape is not None
        dims = _dims(value.shape)
        dims[change.axis] = change.label
        value.shape = ir.Shape([_as_ir_dim(d) for d in dims])
    budget = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph)) + 1
    for _ in range(budget):
        infer_shapes(model)
        if not _fix_pass(model, reference):
            return
    raise InvalidModelError("rewriting shape constants did not settle — please report this model")


_FIXERS_BY_OP = ("Reshape", "Expand", "Slice", "Resize")


def _fix_pass(model: ir.Model, reference: _Reference) -> bool:
    changed = False
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if node.domain != "" or node.op_type not in _FIXERS_BY_OP or not node.inputs or node.inputs[0] is None:
            continue
        data = node.inputs[0]
        axes = _followed_axes(data, reference)
        if not axes:
            continue
        if node.op_type == "Reshape":
            changed = _fix_reshape(node, axes, reference) or changed
        elif node.op_type == "Expand":
            changed = _fix_expand(node, axes, reference) or changed
        elif node.op_type == "Slice":
            changed = _fix_slice(node, axes, reference) or changed
        else:
            _refuse_resize(node, axes)
    return changed


def _followed_axes(data: ir.Value, reference: _Reference) -> list[int]:
    """Axes of ``data`` that were static in the reference and are not static now."""
    ref = reference.get(data.name or "")
    if data.shape is None or ref is None or len(ref) != len(data.shape):
        return []
    return [k for k, d in enumerate(data.shape) if not isinstance(d, int) and ref[k] is not None]


def _replace_operand(node: ir.Node, index: int, array: np.ndarray[Any, Any], role: str) -> None:
    """Give ``node`` a new constant at input ``index``; drop the old one if nothing else reads it."""
    graph = node.graph
    old = node.inputs[index]
    assert graph is not None and old is not None
    new = add_initializer(graph, array.astype(np.int64), f"{node.name or node.op_type}_{role}")
    node.replace_input_with(index, new)
    logger.debug("%s: operand %d %s -> %s", _node_name(node), index, old.name, array.tolist())
    if old.uses() or old.is_graph_output() or old.is_graph_input():
        return
    producer = old.producer()
    if old.is_initializer() and old.name:
        graph.initializers.pop(old.name)
    elif producer is not None and producer.graph is graph:
        graph.remove(producer, safe=True)


def _fix_reshape(node: ir.Node, axes: Sequence[int], reference: _Reference) -> bool:
    target = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if target is None:
        return False  # a computed target follows the input by itself
    data, out = node.inputs[0], node.outputs[0]
    assert data is not None
    ref_in, ref_out = reference.get(data.name or ""), reference.get(out.name or "")
    allowzero = node.attributes.get_int("allowzero", 0)
    new = [int(t) for t in target.reshape(-1)]
    wanted: dict[int, int] = {}
    for k in axes:
        j, copy = _reshape_entry(node, k, new, ref_in, ref_out)
        wanted[j] = 0 if copy and j == k and not allowzero else -1
    minus_ones = {j for j, v in wanted.items() if v == -1}
    if len(minus_ones) > 1:
        raise ConfigError(
            f"{_node_name(node)} reshapes to the constant {new}, and the freed dimensions land in entries "
            f"{sorted(minus_ones)}; one Reshape can follow only one of them with -1 — make its target computed "
            "(Shape → Gather → Concat) or keep the dimensions static"
        )
    fixed = list(new)
    for j, entry in enumerate(new):
        if entry == -1 and j not in wanted and minus_ones:
            size = ref_out[j] if ref_out is not None else None
            if size is None:
                raise ConfigError(
                    f"{_node_name(node)} reshapes to the constant {new} whose -1 already follows another dynamic "
                    "dimension, and the freed one needs a -1 too — make its target computed (Shape → Gather → "
                    "Concat) or keep the dimension static"
                )
            fixed[j] = size
    for j, v in wanted.items():
        if not (new[j] == v or (new[j] == -1 and v == 0)):
            fixed[j] = v
    if fixed == new:
        return False
    _replace_operand(node, 1, np.array(fixed, dtype=np.int64), "shape")
    return True


def _reshape_entry(
    node: ir.Node,
    k: int,
    target: list[int],
    ref_in: tuple[int | None, ...] | None,
    ref_out: tuple[int | None, ...] | None,
) -> tuple[int, bool]:
    """The target entry that holds input axis ``k`` whole, and whether it is a plain copy."""
    assert ref_in is not None
    if k < len(target) and all(
        target[i] == 0 or (ref_in[i] is not None and target[i] == ref_in[i]) for i in range(k + 1)
    ):
        return k, True
    if ref_out is None or any(d is None for d in (*ref_in, *ref_out)) or 0 in ref_in:
        raise ConfigError(
            f"{_node_name(node)} reshapes to the constant {target}, which hard-codes the size of the dimension "
            "being freed, and its other dimensions are not all known, so no rewrite can be proved right — make "
            "its target computed (Shape → Gather → Concat), or use 0 / -1 in it"
        )
    pin = np.cumprod([1, *ref_in]).tolist()
    pout = np.cumprod([1, *ref_out]).tolist()
    before, after = set(pin[: k + 1]), set(pin[k + 1 :])
    candidates = [j for j in range(len(ref_out)) if pout[j] in before and pout[j + 1] in after]
    copies = [j for j in candidates if pout[j] == pin[k] and pout[j + 1] == pin[k + 1]]
    if len(candidates) == 1:
        return candidates[0], candidates[0] in copies
    if len(copies) == 1:
        # A size-1 axis fits in several places; the one that keeps it where it was is meant.
        return copies[0], True
    where = "in no single entry (it is split)" if not candidates else f"in entries {candidates} alike"
    raise ConfigError(
        f"{_node_name(node)} reshapes {list(ref_in)} to the constant {target}; axis {k}, which is being freed, "
        f"lands {where}, so the rewrite is ambiguous — make the target computed (Shape → Gather → Concat) "
        "or keep the dimension static"
    )


def _fix_expand(node: ir.Node, axes: Sequence[int], reference: _Reference) -> bool:
    target = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    data = node.inputs[0]
    if target is None or data is None or data.shape is None:
        return False
    ref_in = reference.get(data.name or "")
    assert ref_in is not None
    new = [int(t) for t in target.reshape(-1)]
    fixed = list(new)
    for k in axes:
        j = k + len(new) - len(data.shape)
        if j < 0 or new[j] == 1:
            continue
        if new[j] != ref_in[k]:
            raise ConfigError(
                f"{_node_name(node)} broadcasts axis {k} (size {ref_in[k]} before) to {new[j]}; that axis is being "
                "freed, and the broadcast cannot follow it — compute the Expand shape from the input "
                "(Shape → Concat) or keep the dimension static"
            )
        fixed[j] = 1
    if fixed == new:
        return False
    _replace_operand(node, 1, np.array(fixed, dtype=np.int64), "shape")
    return True


def _operand(node: ir.Node, index: int) -> np.ndarray[Any, Any] | None:
    value = node.inputs[index] if index < len(node.inputs) else None
    return const_array(value)


def _fix_slice(node: ir.Node, axes: Sequence[int], reference: _Reference) -> bool:
    starts, ends, slice_axes, steps = (_operand(node, i) for i in range(1, 5))
    given = [i < len(node.inputs) and node.inputs[i] is not None for i in range(5)]
    data = node.inputs[0]
    if starts is None or ends is None or data is None or data.shape is None:
        return False
    if (given[3] and slice_axes is None) or (given[4] and steps is None):
        return False  # computed axes or steps: nothing constant to fix
    rank = len(data.shape)
    ref_in = reference.get(data.name or "")
    assert ref_in is not None
    axis_list = [int(a) % rank for a in (slice_axes if slice_axes is not None else range(len(starts)))]
    fixed = [int(e) for e in ends]
    for k in axes:
        if k not in axis_list:
            continue
        p = axis_list.index(k)
        size = ref_in[k]
        assert size is not None
        whole = (steps is None or int(steps[p]) == 1) and (int(starts[p]) == 0 or int(starts[p]) <= -size)
        if whole and size <= fixed[p] < _INT64_MAX:
            fixed[p] = int(_INT64_MAX)
        elif not whole:
            logger.debug("%s slices part of axis %d being freed; left as it is", _node_name(node), k)
    if fixed == [int(e) for e in ends]:
        return False
    _replace_operand(node, 2, np.array(fixed, dtype=np.int64), "ends")
    return True


def _refuse_resize(node: ir.Node, axes: Sequence[int]) -> None:
    sizes = const_array(node.inputs[3]) if len(node.inputs) > 3 else None
    if sizes is None:
        return
    raise ConfigError(
        f"{_node_name(node)} resizes to the constant sizes {sizes.tolist()}, which fix axis {list(axes)} being "
        "freed — give the Resize scales instead of sizes, or keep the dimension static"
    )


# ------------------------------------------------------------------------------------ verification


def _check_runs(model: ir.Model, freed: Sequence[_Freed]) -> None:
    """Run ``model`` at the old size and at the probe size of every freed dimension."""
    from modelport.ir.specs import specs_of
    from modelport.runners.onnxruntime import OrtRunner
    from modelport.verify.inputs import InputPlan, generate_feeds, integer_input_ranges

    specs = specs_of(model.graph.inputs)
    ranges = integer_input_ranges(model)
    for sizes in ({c.label: c.old for c in freed}, {c.label: c.probe for c in freed}):
        dims = dict(sizes)
        try:
            with OrtRunner(model, graph_optimization="disable") as runner:
                runner.infer(generate_feeds(specs, InputPlan(dims=dims, int_ranges=ranges)))
        except BackendError as e:
            shown = ", ".join(f"{c.input}[{c.axis}]={dims[c.label]}" for c in freed)
            raise InvalidModelError(
                f"after freeing {', '.join(f'{c.input}[{c.axis}]' for c in freed)} the model does not run at "
                f"{shown}: {e} — a node still hard-codes the old size (e.g. a ConstantOfShape, or a custom op); "
                "fix it by hand or keep the dimension static"
            ) from e
