"""What every optimization pass is: an in-place onnx-ir pass with a name and a tolerance.

The tolerance is the numeric change the pass is allowed to make; the manager verifies every
pass against it and rolls the pass back when it is exceeded. Pure rewiring passes use
:data:`~modelport.verify.tolerance.EXACT`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any, ClassVar

import numpy as np
import onnx_ir as ir
import onnx_ir.passes

from modelport.verify.tolerance import EXACT, Tolerance

__all__ = [
    "Pass",
    "add_initializer",
    "bypass",
    "const_array",
    "drop_unused_initializers",
    "has_subgraph",
    "only_consumer",
]

logger = logging.getLogger(__name__)


class Pass(onnx_ir.passes.InPlacePass):
    """Base class of modelport's optimization passes."""

    #: Registry name, e.g. "conv-bn".
    name: ClassVar[str] = "pass"
    #: What the pass may change numerically, relative to its input.
    tolerance: ClassVar[Tolerance] = EXACT
    #: Targets the pass may run for: "generic" (standard ONNX only) and/or "onnxruntime".
    targets: ClassVar[frozenset[str]] = frozenset({"generic", "onnxruntime"})
    #: True when the rewrite can make some engine slower (e.g. a wider Conv): the manager then
    #: times the result on the target and reverts the pass if it is slower.
    may_slow: ClassVar[bool] = False

    def applicable(self, model: ir.Model) -> bool:
        """Whether the pass may change ``model`` (a cheap look; False lets the manager skip the copy)."""
        del model
        return True


def has_subgraph(node: ir.Node) -> bool:
    """Whether the node carries a graph (If/Loop/Scan body)."""
    return any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values())


def const_array(value: ir.Value | None) -> np.ndarray[Any, Any] | None:
    """The value's constant contents (initializer or Constant node) as numpy, or None."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def add_initializer(graph: ir.Graph, array: np.ndarray[Any, Any], name: str) -> ir.Value:
    """Register ``array`` as a new initializer of ``graph`` under a name not yet used there."""
    taken = set(graph.initializers)
    unique, i = name, 1
    while unique in taken:
        unique, i = f"{name}_{i}", i + 1
    array = np.asarray(array)
    value = ir.Value(
        name=unique,
        const_value=ir.tensor(array, name=unique),
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
    )
    graph.register_initializer(value)
    return value


def only_consumer(value: ir.Value, consumer: ir.Node | Collection[ir.Node]) -> str | None:
    """Why ``value`` may NOT be folded into ``consumer`` (None when it may).

    ``consumer`` is one node or the set of nodes a pattern replaces together. The single place
    where the "no other consumers, not a graph output" invariant lives.
    """
    if value.is_graph_output():
        return f"'{value.name}' is a graph output"
    allowed = {consumer} if isinstance(consumer, ir.Node) else set(consumer)
    others = [n for n in value.consumers() if n not in allowed]
    if others:
        return f"'{value.name}' is also read by {others[0].op_type} '{others[0].name}'"
    return None


def drop_unused_initializers(graph: ir.Graph, values: Collection[ir.Value | None]) -> None:
    """Remove those of ``values`` that are initializers of ``graph`` nobody reads any more.

    For rewrites that replace parameters: the old ones go at once, not only at dead-code time.
    """
    for value in values:
        if value is None or value.name is None or graph.initializers.get(value.name) is not value:
            continue
        if not value.uses() and not value.is_graph_output():
            graph.initializers.pop(value.name)


def bypass(node: ir.Node, source: ir.Value) -> str | None:
    """Remove ``node`` by routing readers of its first output to ``source``.

    Returns a reason and changes nothing when that is not possible: a graph output fed straight
    from a graph input or initializer (or from another graph output) must keep its node.
    """
    output = node.outputs[0]
    graph = node.graph
    if graph is None:
        return "node is not in a graph"
    if output.is_graph_output():
        producer = source.producer()
        if producer is None or producer.graph is not graph or source.is_graph_output():
            # ONNX Runtime rejects a graph (or subgraph) output that is an input, an initializer,
            # another output or an outer-scope value: the node has to stay.
            return f"'{output.name}' is a graph output and '{source.name}' cannot take its place"
    if source.shape is None:
        source.shape = output.shape
    if source.type is None:
        source.type = output.type
    output_name = output.name
    ir.convenience.replace_all_uses_with(output, source, replace_graph_outputs=True)
    if source.is_graph_output():
        source.name = output_name
    graph.remove(node, safe=True)
    logger.debug("removed %s '%s'", node.op_type, node.name)
    return None
