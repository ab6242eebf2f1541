"""Editing helpers over onnx-ir: find nodes, rename tensors, fix or free the batch dimension."""

from __future__ import annotations

import re
from collections.abc import Iterator

import onnx_ir as ir

from modelport.errors import ConfigError

__all__ = ["find_nodes", "rename_value", "set_batch_dim"]


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


def rename_value(model: ir.Model, old: str, new: str) -> None:
    """Rename a graph input, output or intermediate tensor of the main graph."""
    values: dict[str, ir.Value] = {}
    for value in [*model.graph.inputs, *model.graph.initializers.values()]:
        if value.name:
            values[value.name] = value
    for node in model.graph:
        for value in node.outputs:
            if value.name:
                values[value.name] = value
    if old not in values:
        raise ConfigError(f"the model has no tensor named '{old}'")
    if new in values:
        raise ConfigError(f"cannot rename '{old}' to '{new}': a tensor named '{new}' already exists")
    value = values[old]
    if value.is_initializer():
        model.graph.initializers.pop(old)
        value.name = new
        model.graph.register_initializer(value)
    else:
        value.name = new


def set_batch_dim(model: ir.Model, batch: int | str) -> None:
    """Set axis 0 of every graph input and output to a size, or to a named dynamic dimension.

    Intermediate shape annotations are cleared, since they may carry the old batch size; run
    shape inference again if you need them.
    """
    if isinstance(batch, int) and batch < 1:
        raise ConfigError(f"batch must be >= 1 or a dimension name, got {batch}")
    for value in [*model.graph.inputs, *model.graph.outputs]:
        if value.shape is None or len(value.shape) == 0:
            raise ConfigError(f"'{value.name}' has no batch axis (unknown or scalar shape) — fix its shape first")
        dims = list(value.shape)
        dims[0] = batch if isinstance(batch, int) else ir.SymbolicDim(batch)
        value.shape = ir.Shape(dims)
    for node in model.graph:
        for value in node.outputs:
            if not value.is_graph_output():
                value.shape = None
