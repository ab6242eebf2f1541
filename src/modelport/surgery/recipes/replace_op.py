"""Replace an op by another one in place, and expose an intermediate tensor as a graph output.

These are the two edits of onnx-graphsurgeon's "modifying a model" example: the first ``Add``
becomes ``LeakyRelu(alpha=0.02)`` reading only its first input, and an ``Identity`` node makes
a tensor an extra graph output. In numbers, ``LeakyRelu(x) = x if x > 0 else alpha * x``.

The new node takes over the old node's name and output tensors (same names, types and shapes),
so nothing downstream has to be rewired. When the new op is a standard ONNX op, its schema at the
model's opset is checked up front: the number of kept inputs and outputs, the attribute names,
the required attributes, and the attribute types (``alpha=1`` becomes the float ``1.0`` that
``LeakyRelu`` expects). Custom-domain ops are taken as given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import onnx_ir as ir
import onnx_ir.passes.common

from modelport.errors import ConfigError
from modelport.ir.serde import infer_shapes
from modelport.surgery.editing import find_nodes

__all__ = ["AttrValue", "add_identity_output", "graph_value", "replace_op"]

logger = logging.getLogger(__name__)

#: What an attribute given on the command line or in a config can be.
AttrValue = int | float | str | Sequence[int] | Sequence[float] | Sequence[str]

_SCALARS: dict[str, type] = {"FLOAT": float, "INT": int, "STRING": str}
_LISTS: dict[str, type] = {"FLOATS": float, "INTS": int, "STRINGS": str}


def graph_value(model: ir.Model, name: str, *, infer: bool = False) -> ir.Value:
    """The tensor called ``name`` in the main graph (input, initializer or node output).

    With ``infer``, ONNX shape inference is run once when the tensor's type or shape is unknown,
    so that intermediate tensors of models saved without ``value_info`` get them.
    """
    graph = model.graph
    values = {v.name: v for v in [*graph.inputs, *graph.initializers.values()] if v.name}
    values.update({v.name: v for node in graph for v in node.outputs if v.name})
    if name not in values:
        outputs = ", ".join(repr(v.name) for v in graph.outputs)
        raise ConfigError(f"the model has no tensor named '{name}' (its graph outputs are {outputs})")
    value = values[name]
    if infer and (value.type is None or value.shape is None):
        infer_shapes(model)
    return value


def replace_op(
    model: ir.Model,
    *,
    new_op: str,
    op_type: str | None = None,
    name: str | None = None,
    regex: str | None = None,
    attributes: Mapping[str, AttrValue] | None = None,
    keep_inputs: Sequence[int] | None = None,
    keep_attributes: bool = False,
    limit: int | None = None,
    domain: str = "",
) -> ir.Model:
    """Replace matching nodes by ``new_op`` nodes that keep the same output tensors.

    Nodes are selected like ``find_nodes``: by ``op_type``, exact ``name`` and/or node-name
    ``regex`` (at least one is required), in graph order, subgraphs included; ``limit`` stops
    after that many (``limit=1`` is "the first Add").

    Options:
        new_op: the op type the nodes become, e.g. ``LeakyRelu``.
        attributes: attributes of the new node, e.g. ``{"alpha": 0.02}``; converted to the
            types the op's schema declares.
        keep_inputs: indices of the old node's inputs that the new node reads, in order
            (``[0]`` turns ``Add(x, b)`` into ``LeakyRelu(x)``); default: all of them.
            Initializers no longer read by anything are removed.
        keep_attributes: also copy the old node's attributes (those the new op knows).
        domain: the new op's domain ("" is standard ONNX; other domains skip schema checks).

    Raises ConfigError when nothing matches, an input index is out of range, or the new op's
    schema does not accept the inputs, outputs or attributes.
    """
    if op_type is None and name is None and regex is None:
        raise ConfigError("replace_op needs a node selector: give op_type, name and/or regex")
    nodes = list(find_nodes(model, op_type=op_type, name=name, regex=regex))
    if not nodes:
        present = sorted({n.op_type for n in find_nodes(model)})
        raise ConfigError(
            f"no node matches op_type={op_type!r} name={name!r} regex={regex!r}; the model has ops {present}"
        )
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be >= 1, got {limit}")
        nodes = nodes[:limit]
    opset = model.opset_imports.get(domain or "", 1)
    for node in nodes:
        _replace_one(node, new_op, domain, opset, dict(attributes or {}), keep_inputs, keep_attributes)
    onnx_ir.passes.common.RemoveUnusedNodesPass()(model)
    return model


def _replace_one(
    node: ir.Node,
    new_op: str,
    domain: str,
    opset: int,
    attributes: dict[str, AttrValue],
    keep_inputs: Sequence[int] | None,
    keep_attributes: bool,
) -> None:
    what = f"{node.op_type} '{node.name}'"
    indices = list(range(len(node.inputs))) if keep_inputs is None else list(keep_inputs)
    for i in indices:
        if not 0 <= i < len(node.inputs):
            raise ConfigError(f"keep_inputs index {i} is out of range: {what} has {len(node.inputs)} inputs")
    inputs = [node.inputs[i] for i in indices]
    schema = _schema(new_op, domain, opset)
    if keep_attributes:
        known = None if schema is None else set(schema.attributes)
        for attr_name, attr in node.attributes.items():
            if attr_name not in attributes and (known is None or attr_name in known):
                attributes[attr_name] = attr.value
    attrs = ir.convenience.convert_attributes(attributes)
    if schema is not None:
        _check_arity(schema, what, new_op, len(inputs), len(node.outputs))
        attrs = _typed_attributes(schema, new_op, attributes)
    graph = node.graph
    assert graph is not None
    new = ir.Node(domain, new_op, inputs, attrs, num_outputs=len(node.outputs), name=node.name)
    ir.convenience.replace_nodes_and_values(graph, node, [node], [new], list(node.outputs), list(new.outputs))
    logger.debug("replaced %s by %s", what, new_op)


def _schema(op: str, domain: str, opset: int) -> Any:
    """The ONNX schema of a standard op at ``opset`` (None for custom domains)."""
    if domain not in ("", "ai.onnx"):
        return None
    import onnx.defs

    try:
        return onnx.defs.get_schema(op, opset, "")
    except onnx.defs.SchemaError as e:
        raise ConfigError(
            f"'{op}' is not a standard ONNX op at opset {opset} — check the spelling, or pass domain="
        ) from e


def _check_arity(schema: Any, what: str, op: str, n_inputs: int, n_outputs: int) -> None:
    if not schema.min_input <= n_inputs <= schema.max_input:
        raise ConfigError(
            f"{op} takes {schema.min_input} to {schema.max_input} inputs, but {n_inputs} of {what}'s inputs"
            f" are kept — choose them with keep_inputs (e.g. keep_inputs=[0])"
        )
    if not schema.min_output <= n_outputs <= schema.max_output:
        raise ConfigError(
            f"{op} produces {schema.min_output} to {schema.max_output} outputs, but {what} has {n_outputs}"
        )


def _typed_attributes(schema: Any, op: str, attributes: Mapping[str, AttrValue]) -> list[ir.Attr]:
    """Attributes converted to the types in the op's schema; unknown or missing ones raise."""
    unknown = sorted(set(attributes) - set(schema.attributes))
    if unknown:
        raise ConfigError(f"{op} has no attribute {unknown[0]!r}; its attributes are {sorted(schema.attributes)}")
    missing = sorted(n for n, a in schema.attributes.items() if a.required and n not in attributes)
    if missing:
        raise ConfigError(f"{op} requires attribute {missing[0]!r} — pass it in attributes")
    return [_typed(op, key, value, schema.attributes[key].type.name) for key, value in attributes.items()]


def _typed(op: str, name: str, value: Any, kind: str) -> ir.Attr:
    if kind in _SCALARS:
        return ir.Attr(name, ir.AttributeType[kind], _convert(op, name, value, kind, _SCALARS[kind]))
    if kind in _LISTS:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"attribute '{name}' of {op} is a list ({kind}), got {value!r}")
        items = [_convert(op, name, item, kind, _LISTS[kind]) for item in value]
        return ir.Attr(name, ir.AttributeType[kind], items)
    raise ConfigError(f"attribute '{name}' of {op} has type {kind}, which replace_op cannot set")


def _convert(op: str, name: str, value: Any, kind: str, to: type) -> Any:
    ok = {
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[to]
    if not ok:
        raise ConfigError(f"attribute '{name}' of {op} is {kind}, got {value!r} ({type(value).__name__})")
    return to(value)


def add_identity_output(
    model: ir.Model,
    *,
    tensor: str,
    output_name: str | None = None,
    replace_outputs: bool = False,
) -> ir.Model:
    """Make ``tensor`` a graph output through a new ``Identity`` node.

    Options:
        tensor: name of any tensor of the main graph (graph input, initializer or node output).
        output_name: name of the new output (default ``<tensor>_identity``).
        replace_outputs: make it the only graph output and drop the nodes nothing reads any more.

    The output's type and shape are the tensor's; when the model does not record them, ONNX shape
    inference is run to find them. Raises ConfigError for an unknown tensor, a name that is
    already taken, or a tensor whose type cannot be inferred.
    """
    source = graph_value(model, tensor, infer=True)
    out_name = output_name or f"{tensor}_identity"
    taken = {v.name for v in [*model.graph.inputs, *model.graph.initializers.values()]}
    taken.update(v.name for node in model.graph for v in node.outputs)
    if out_name in taken:
        raise ConfigError(f"cannot add output '{out_name}': a tensor with that name exists — pass another output_name")
    if source.type is None:
        raise ConfigError(
            f"the type of tensor '{tensor}' is unknown and shape inference could not find it — "
            "annotate it (value_info) or pick a tensor whose type is known"
        )
    node = ir.node("Identity", [source], name=f"{out_name}/Identity")
    output = node.outputs[0]
    output.name, output.type, output.shape = out_name, source.type, source.shape
    model.graph.append(node)
    if replace_outputs:
        model.graph.outputs.clear()
    model.graph.outputs.append(output)
    if replace_outputs:
        onnx_ir.passes.common.RemoveUnusedNodesPass()(model)
    return model
