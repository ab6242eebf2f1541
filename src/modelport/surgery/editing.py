"""Editing helpers over onnx-ir: find, insert, remove and replace nodes, set attributes, rename
tensors, clean up and sort.

onnx-ir already holds the graph the way an edit wants it: a node owns its output values and every
value knows who reads it (``value.uses()``). Every edit here is therefore "build a node, then move
the uses of one value to another", never a search-and-replace over tensor names as with the
protobuf API. Two invariants are kept by every function:

* a graph output keeps its name and its place in the signature when the node behind it changes;
* nothing is silently dropped: a node is bypassed only when its data input can stand in for its
  output (same dtype, compatible shape), otherwise the call raises and says what to do instead.

The GraphSurgeon recipe from the seeds (turn an ``Add`` into a ``LeakyRelu`` with ``alpha`` and
expose its result through an ``Identity``) is then::

    add = find_node(model, op_type="Add")
    leaky = replace_node(add, "LeakyRelu", inputs=[add.inputs[1]], attributes={"alpha": 0.02})
    insert_after(leaky.outputs[0], "Identity", output_name="identity_out")
    cleanup(model)
    toposort(model)
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common

from modelport.errors import ConfigError, InvalidModelError
from modelport.ir.serde import infer_shapes
from modelport.passes.base import add_initializer, bypass, only_consumer

__all__ = [
    "add_outputs",
    "cleanup",
    "describe_node",
    "find_chains",
    "find_node",
    "find_nodes",
    "find_value",
    "insert_after",
    "remove_node",
    "rename_value",
    "replace_node",
    "set_attribute",
    "set_batch_dim",
    "toposort",
]

logger = logging.getLogger(__name__)

#: Ops whose output has the dtype and shape of their first input: an inserted one inherits both.
SAME_TYPE_AND_SHAPE = frozenset(
    {
        "Abs", "Ceil", "Clip", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity",
        "LeakyRelu", "Log", "LogSoftmax", "Mish", "Neg", "Relu", "Round", "Selu", "Sigmoid", "Sign",
        "Softmax", "Softplus", "Softsign", "Sqrt", "Tanh",
    }
)  # fmt: skip


def describe_node(node: ir.Node) -> str:
    """``Conv 'conv1'`` — how error messages name a node (unnamed nodes say so)."""
    return f"{node.op_type} '{node.name}'" if node.name else f"unnamed {node.op_type}"


# ---------------------------------------------------------------------------------------- finding


def find_nodes(
    model: ir.Model,
    *,
    op_type: str | None = None,
    name: str | None = None,
    regex: str | None = None,
) -> Iterator[ir.Node]:
    """Nodes (subgraphs included) matching every criterion given: op type, exact name, name regex."""
    pattern = re.compile(regex) if regex is not None else None
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if op_type is not None and node.op_type != op_type:
            continue
        if name is not None and node.name != name:
            continue
        if pattern is not None and not pattern.search(node.name or ""):
            continue
        yield node


def find_node(
    model: ir.Model,
    *,
    op_type: str | None = None,
    name: str | None = None,
    regex: str | None = None,
) -> ir.Node:
    """The one node matching the criteria of :func:`find_nodes`; raises unless exactly one does."""
    found = list(find_nodes(model, op_type=op_type, name=name, regex=regex))
    criteria = ", ".join(f"{k}={v!r}" for k, v in (("op_type", op_type), ("name", name), ("regex", regex)) if v)
    if len(found) == 1:
        return found[0]
    if not found:
        names = [n.name for n in ir.traversal.RecursiveGraphIterator(model.graph) if n.name]
        close = difflib.get_close_matches(name or "", names, n=3) if name else []
        hint = f" — did you mean {', '.join(map(repr, close))}?" if close else " — list them with `modelport inspect`"
        raise ConfigError(f"no node matches {criteria or 'no criteria'}{hint}")
    shown = ", ".join(describe_node(n) for n in found[:5])
    raise ConfigError(
        f"{len(found)} nodes match {criteria or 'no criteria'} ({shown}{', ...' if len(found) > 5 else ''}) — "
        "narrow the search with name= or regex=, or iterate over find_nodes()"
    )


def find_chains(model: ir.Model, pattern: str, *, sole_consumer: bool = False) -> list[list[ir.Node]]:
    """Chains of nodes matching ``pattern``, e.g. ``"Conv>BatchNormalization>Relu"``.

    Each step names an op type (``"Relu|Clip"`` allows either); the next node of a chain reads
    the first output of the previous one, in the same graph. With ``sole_consumer=True`` that
    output must be read by the next node alone and must not be a graph output — the condition
    under which a chain can be fused. Every chain is returned (a node read by two matching
    consumers starts two chains).
    """
    steps = _parse_pattern(pattern)
    chains: list[list[ir.Node]] = []
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.op_type not in steps[0]:
            continue
        partial = [[node]]
        for step in steps[1:]:
            partial = [[*chain, nxt] for chain in partial for nxt in _next_in_chain(chain[-1], step, sole_consumer)]
        chains.extend(partial)
    return chains


def _parse_pattern(pattern: str) -> list[frozenset[str]]:
    steps = [frozenset(alt.strip() for alt in part.split("|")) for part in pattern.split(">")]
    if any("" in step for step in steps):
        raise ConfigError(
            f"pattern {pattern!r} has an empty step — write op types separated by '>', "
            "with '|' between alternatives, e.g. 'Conv>BatchNormalization>Relu|Clip'"
        )
    return steps


def _next_in_chain(node: ir.Node, step: frozenset[str], sole_consumer: bool) -> list[ir.Node]:
    if not node.outputs:
        return []
    out = node.outputs[0]
    found = []
    for consumer in dict.fromkeys(out.consumers()):
        if consumer.graph is not node.graph or consumer.op_type not in step:
            continue
        if sole_consumer and (reason := only_consumer(out, consumer)):
            logger.debug("chain stops at %s: %s", describe_node(node), reason)
            continue
        found.append(consumer)
    return found


def _all_values(model: ir.Model) -> dict[str, ir.Value]:
    """Named values of every graph (inputs, initializers, node outputs); the main graph wins."""
    values: dict[str, ir.Value] = {}
    for graph in reversed(list(model.graphs())):
        for value in [*graph.inputs, *graph.initializers.values()]:
            if value.name:
                values[value.name] = value
        for node in graph:
            for value in node.outputs:
                if value.name:
                    values[value.name] = value
    return values


def _unknown_tensor(name: str, known: Iterable[str]) -> ConfigError:
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f" — did you mean {', '.join(map(repr, close))}?" if close else " — list them with `modelport inspect`"
    return ConfigError(f"the model has no tensor named '{name}'{hint}")


def find_value(model: ir.Model, name: str) -> ir.Value:
    """The tensor called ``name`` (graph input, initializer or node output, subgraphs included)."""
    values = _all_values(model)
    if name not in values:
        raise _unknown_tensor(name, values)
    return values[name]


# ----------------------------------------------------------------------------------------- naming


def rename_value(model: ir.Model, old: str, new: str) -> None:
    """Rename a graph input, output, initializer or intermediate tensor (subgraphs included)."""
    values = _all_values(model)
    if old not in values:
        raise _unknown_tensor(old, values)
    if new in values:
        raise ConfigError(f"cannot rename '{old}' to '{new}': a tensor named '{new}' already exists")
    value = values[old]
    if value.is_initializer() and value.graph is not None:
        value.graph.initializers.pop(old)
        value.name = new
        value.graph.register_initializer(value)
    else:
        value.name = new


def _unique_name(graph: ir.Graph, base: str) -> str:
    taken = {v.name for v in [*graph.inputs, *graph.initializers.values()]}
    taken.update(v.name for node in ir.traversal.RecursiveGraphIterator(graph) for v in node.outputs)
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def add_outputs(model: ir.Model, names: Sequence[str]) -> list[ir.Value]:
    """Make the named main-graph tensors graph outputs too (e.g. to look at intermediates).

    Their dtypes come from shape inference when the model does not state them.
    """
    values = [find_value(model, name) for name in names]
    for value in values:
        if value.graph is not model.graph:
            raise ConfigError(
                f"'{value.name}' lives inside a subgraph (If/Loop/Scan body) and cannot be a model output — "
                "extract it with modelport.surgery.extract instead"
            )
    if any(v.dtype is None for v in values):
        infer_shapes(model)
    for value in values:
        if value.dtype is None:
            raise ConfigError(
                f"the dtype of '{value.name}' is unknown (shape inference could not type it) — "
                "set value.dtype before making it an output"
            )
        if not value.is_graph_output():
            model.graph.outputs.append(value)
    return values


# --------------------------------------------------------------------------------------- inserting


def _as_input(graph: ir.Graph, item: ir.Value | np.ndarray[Any, Any] | None, base: str) -> ir.Value | None:
    if item is None or isinstance(item, ir.Value):
        return item
    return add_initializer(graph, np.asarray(item), base)


def insert_after(
    value: ir.Value,
    op_type: str,
    *,
    inputs_extra: Sequence[ir.Value | np.ndarray[Any, Any] | None] = (),
    attributes: Mapping[str, Any] | None = None,
    name: str | None = None,
    domain: str = "",
    output_name: str | None = None,
) -> ir.Node:
    """Insert a node that reads ``value`` (then ``inputs_extra``) and give it every reader of ``value``.

    Numpy arrays in ``inputs_extra`` become initializers. When ``value`` is a graph output, the
    new node's output takes its place and its name (unless ``output_name`` says otherwise), so
    the model's signature does not change. The new output inherits dtype and shape for the
    element-wise ops in :data:`SAME_TYPE_AND_SHAPE`; after any other op run
    :func:`modelport.surgery.shapes.infer_shapes`.
    """
    graph = value.graph
    if graph is None:
        raise ConfigError(f"tensor '{value.name}' belongs to no graph — insert after a tensor of the model")
    extras = [_as_input(graph, item, f"{name or op_type}_input{i + 1}") for i, item in enumerate(inputs_extra)]
    uses = list(value.uses())
    node = ir.Node(domain, op_type, [value, *extras], attributes=_attributes(attributes), name=name, num_outputs=1)
    out = node.outputs[0]
    out.name = output_name or _unique_name(graph, f"{value.name}_{op_type.lower()}")
    producer = value.producer()
    if producer is not None and producer.graph is graph:
        graph.insert_after(producer, node)
    elif len(graph) > 0:
        graph.insert_before(graph[0], node)
    else:
        graph.append(node)
    if any(v is not None and v.producer() is not None for v in extras):
        graph.sort()
    if op_type in SAME_TYPE_AND_SHAPE and domain == "":
        out.type, out.shape = value.type, value.shape
    for use in uses:
        use.node.replace_input_with(use.idx, out)
    if value.is_graph_output():
        suffix = f"before_{op_type.lower()}" if output_name is None else None
        _move_graph_outputs(graph, value, out, suffix)
    return node


def _move_graph_outputs(graph: ir.Graph, old: ir.Value, new: ir.Value, rename_suffix: str | None) -> None:
    """Graph outputs that were ``old`` become ``new``. With ``rename_suffix`` the signature keeps
    its names: ``new`` takes ``old``'s name and ``old`` gets the suffix."""
    for i, value in enumerate(graph.outputs):
        if value is old:
            graph.outputs[i] = new
    if rename_suffix is not None:
        kept = old.name
        old.name = _unique_name(graph, f"{kept}_{rename_suffix}")
        new.name = kept


def _attributes(attributes: Mapping[str, Any] | None) -> list[ir.Attr]:
    return [_attribute(key, value) for key, value in (attributes or {}).items()]


def _attribute(name: str, value: Any, existing: ir.Attr | None = None) -> ir.Attr:
    if isinstance(value, np.ndarray):
        value = ir.tensor(value)
    elif isinstance(value, np.generic):
        value = value.item()
    if existing is not None and existing.type == ir.AttributeType.FLOAT and isinstance(value, int):
        value = float(value)
    if existing is not None and existing.type == ir.AttributeType.FLOATS and isinstance(value, list | tuple):
        value = [float(v) for v in value]
    try:
        return ir.convenience.convert_attribute(name, value)
    except TypeError as e:
        raise ConfigError(
            f"attribute '{name}' cannot hold {type(value).__name__} {value!r} — use an int, float, str, "
            "a list of one of those, a numpy array (tensor) or an ir.Graph"
        ) from e


def set_attribute(node: ir.Node, name: str, value: Any) -> None:
    """Set (or with ``value=None`` delete) an attribute. An int given for a float attribute becomes a float."""
    if value is None:
        node.attributes.pop(name, None)
        return
    node.attributes[name] = _attribute(name, value, node.attributes.get(name))


# ------------------------------------------------------------------------------ removing/replacing


def _is_constant(value: ir.Value) -> bool:
    if value.is_initializer() and not value.is_graph_input():
        return True
    producer = value.producer()
    return producer is not None and producer.op_type == "Constant" and producer.domain == ""


def _shapes_conflict(a: ir.Shape | None, b: ir.Shape | None) -> bool:
    if a is None or b is None:
        return False
    if len(a) != len(b):
        return True
    return any(isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a, b, strict=True))


def remove_node(node: ir.Node) -> None:
    """Remove ``node``: a dead node goes; a node with one data input is bypassed (its readers read
    that input). Raises when that would change what readers see, or the node has several data inputs.
    """
    graph = node.graph
    what = describe_node(node)
    if graph is None:
        raise ConfigError(f"{what} is not in a graph")
    used = [out for out in node.outputs if out.uses() or out.is_graph_output()]
    if not used:
        graph.remove(node, safe=True)
        return
    if used != [node.outputs[0]]:
        raise ConfigError(
            f"cannot remove {what}: {len(used)} of its outputs are read — only a node whose first output "
            "alone is read can be bypassed; rewire the others first (replace_node)"
        )
    data = [v for v in node.inputs if v is not None and not _is_constant(v)]
    if len(data) != 1:
        names = ", ".join(f"'{v.name}'" for v in data) or "none"
        raise ConfigError(
            f"cannot remove {what}: it has {len(data)} non-constant inputs ({names}), so no single tensor "
            "can replace its output — use replace_node to say what should stand in its place"
        )
    source, out = data[0], node.outputs[0]
    if source.dtype is not None and out.dtype is not None and source.dtype != out.dtype:
        raise ConfigError(
            f"cannot remove {what}: its output '{out.name}' is {out.dtype} but its input '{source.name}' is "
            f"{source.dtype}, so readers would get the wrong dtype — keep it or replace it with a Cast"
        )
    if _shapes_conflict(source.shape, out.shape):
        raise ConfigError(
            f"cannot remove {what}: its output '{out.name}' has shape {out.shape} but its input "
            f"'{source.name}' has shape {source.shape} — keep it, or replace it with a Reshape"
        )
    reason = bypass(node, source)
    if reason:
        raise ConfigError(f"cannot remove {what}: {reason} — keep the node")


def replace_node(
    node: ir.Node,
    op_type: str,
    *,
    inputs: Sequence[ir.Value | np.ndarray[Any, Any] | None] | None = None,
    attributes: Mapping[str, Any] | None = None,
    domain: str = "",
) -> ir.Node:
    """Put a new ``op_type`` node where ``node`` was, with the same name and output tensors.

    ``inputs`` default to the old node's; numpy arrays become initializers. ``attributes`` are
    the new node's only attributes (the old ones belong to another op). Readers, graph outputs
    and output names stay as they were; so do output annotations — after an op that changes
    dtype or shape run :func:`modelport.surgery.shapes.infer_shapes`.
    """
    graph = node.graph
    if graph is None:
        raise ConfigError(f"{describe_node(node)} is not in a graph")
    new_inputs = (
        list(node.inputs)
        if inputs is None
        else [_as_input(graph, item, f"{node.name or op_type}_input{i}") for i, item in enumerate(inputs)]
    )
    new = ir.Node(domain, op_type, new_inputs, attributes=_attributes(attributes), num_outputs=len(node.outputs))
    name = node.name
    ir.convenience.replace_nodes_and_values(graph, node, [node], [new], list(node.outputs), list(new.outputs))
    new.name = name
    return new


# ---------------------------------------------------------------------------------- whole-model


def set_batch_dim(model: ir.Model, batch: int | str) -> None:
    """The former name of :func:`modelport.surgery.shapes.set_batch` (same behaviour)."""
    from modelport.surgery.shapes import set_batch

    set_batch(model, batch)


def cleanup(model: ir.Model, *, remove_unused_inputs: bool = False) -> bool:
    """Remove nodes nobody reads, unused initializers, functions and opsets (and, when asked,
    graph inputs nothing reads). Returns whether anything changed."""
    modified = common.RemoveUnusedNodesPass()(model).modified
    # onnx-ir leaves this pass's __init__ unannotated.
    modified = common.RemoveUnusedFunctionsPass()(model).modified or modified  # type: ignore[no-untyped-call]
    modified = common.RemoveUnusedOpsetsPass()(model).modified or modified
    if remove_unused_inputs:
        unused = [v for v in model.graph.inputs if not v.uses() and not v.is_graph_output()]
        for value in unused:
            model.graph.inputs.remove(value)
            logger.debug("removed unused graph input '%s'", value.name)
        modified = modified or bool(unused)
    return modified


def toposort(model: ir.Model) -> None:
    """Order the nodes of every graph (and function) so each comes after what it reads; stable."""
    try:
        common.TopologicalSortPass()(model)
    except ValueError as e:
        raise InvalidModelError(
            f"the graph cannot be sorted: {e} — it has a cycle; an edit probably made a node read its own output"
        ) from e
