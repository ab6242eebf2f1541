"""Extract a sub-model between named tensors, through If / Loop / Scan bodies too.

The region is found by walking back from the requested outputs: a tensor named among the inputs
stops the walk and becomes a model input, a constant is copied, a node's inputs are walked in
turn. Nodes come out in dependency order (a depth-first post-order), so the result needs no sort.

Subgraphs. A node with a body (If, Loop, Scan) reads, besides its inputs, the outer-scope tensors
its body names; the walk follows those too. A requested tensor may also live *inside* a body: its
nodes are then lifted into the extracted graph, which is exact — a node computes the same thing
wherever it sits as long as what it reads is fed. What an inner node reads from outer scopes is
computed from the model's inputs like any other tensor (or cut there when named among the
inputs). A body's own formal inputs — Loop's iteration number, condition and carried state, Scan's
slices — have a value per iteration, so only the caller can say which: they must be named among
the inputs, and the error says so.

Shape inference runs first, so the new inputs and outputs keep dtype and shape.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import onnx_ir as ir
from onnx_ir.passes import common

from modelport.errors import ConfigError
from modelport.ir.serde import clone, infer_shapes
from modelport.surgery.editing import describe_node, find_value

__all__ = ["extract"]

logger = logging.getLogger(__name__)


def extract(model: ir.Model, inputs: Sequence[str] | None, outputs: Sequence[str]) -> ir.Model:
    """A new model computing ``outputs`` from ``inputs`` (tensor names); ``model`` is not changed.

    ``inputs=None`` takes the model inputs the outputs need. Raises :class:`ConfigError` for an
    unknown name (with close matches), outputs that need a tensor not among the inputs (naming
    it), an input no output needs, or a tensor whose dtype cannot be inferred.
    """
    if not outputs:
        raise ConfigError("name at least one output tensor to extract")
    both = sorted(set(inputs or ()) & set(outputs))
    if both:
        raise ConfigError(f"{', '.join(map(repr, both))} is named both as an input and an output — name it once")
    work = clone(model)
    infer_shapes(work)
    out_values = [find_value(work, name) for name in outputs]
    in_values = [find_value(work, name) for name in inputs] if inputs is not None else []
    region = _walk(out_values, set(in_values))
    owners = _subgraph_owners(work)
    if inputs is None:
        needed = set(region.missing)
        in_values = [v for v in work.graph.inputs if v in needed]
        region.missing = [v for v in region.missing if v not in needed]
        region.reached.update(in_values)
    _check_bounded(region, in_values, outputs, owners, work.graph)
    _check_not_nested(region.nodes, owners)
    for value in [*in_values, *out_values]:
        if value.type is None:
            raise ConfigError(
                f"the dtype of '{value.name}' is unknown (shape inference could not type it, e.g. after a custom "
                "op) — cut at a tensor whose dtype is known"
            )
    view = ir.GraphView(
        in_values,
        out_values,
        nodes=region.nodes,
        initializers=region.initializers,
        opset_imports=dict(work.graph.opset_imports),
        name=work.graph.name,
    )
    graph = view.clone()
    for value in graph.inputs:
        value.const_value = None  # an initializer cut as an input is fed, not stored
    result = ir.Model(
        graph,
        ir_version=work.ir_version,
        producer_name=work.producer_name,
        producer_version=work.producer_version,
        functions=list(work.functions.values()),
    )
    common.RemoveUnusedFunctionsPass()(result)  # type: ignore[no-untyped-call]  # onnx-ir leaves it unannotated
    result.meta.update(model.meta)
    logger.debug("extracted %d nodes for %s", len(region.nodes), list(outputs))
    return result


@dataclass
class _Region:
    nodes: list[ir.Node] = field(default_factory=list)
    initializers: list[ir.Value] = field(default_factory=list)
    reached: set[ir.Value] = field(default_factory=set)
    missing: list[ir.Value] = field(default_factory=list)


def _walk(outputs: Sequence[ir.Value], inputs: set[ir.Value]) -> _Region:
    """Nodes needed for ``outputs`` when ``inputs`` are fed, in dependency order."""
    region = _Region()
    leaves: set[ir.Value] = set()
    finished: set[ir.Node] = set()
    stack: list[tuple[ir.Node, bool]] = []

    def reach(value: ir.Value) -> None:
        producer = value.producer()
        if value in inputs:
            region.reached.add(value)
        elif producer is not None:
            if producer not in finished:
                stack.append((producer, False))
        elif value not in leaves:
            leaves.add(value)
            is_constant = value.is_initializer() or value.const_value is not None
            (region.initializers if is_constant else region.missing).append(value)

    for value in reversed(outputs):
        reach(value)
    while stack:
        node, done = stack.pop()
        if done:
            if node not in finished:
                finished.add(node)
                region.nodes.append(node)
            continue
        if node in finished:
            continue
        stack.append((node, True))
        for value in reversed(_reads(node)):
            reach(value)
    return region


def _attribute_graphs(node: ir.Node) -> list[ir.Graph]:
    graphs: list[ir.Graph] = []
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            graphs.append(attr.as_graph())
        elif attr.type == ir.AttributeType.GRAPHS:
            graphs.extend(attr.as_graphs())
    return graphs


def _reads(node: ir.Node) -> list[ir.Value]:
    """The node's inputs, then the outer-scope tensors its bodies read."""
    reads = [v for v in node.inputs if v is not None]
    bodies = _attribute_graphs(node)
    if not bodies:
        return reads
    nested: set[ir.Graph] = set(bodies)
    inner: list[ir.Node] = []
    for body in bodies:
        for n in ir.traversal.RecursiveGraphIterator(body):
            inner.append(n)
            nested.update(_attribute_graphs(n))
    used = [v for n in inner for v in n.inputs if v is not None]
    used += [v for body in bodies for v in body.outputs]
    reads += [v for v in dict.fromkeys(used) if v.graph not in nested]
    return reads


def _subgraph_owners(model: ir.Model) -> dict[ir.Graph, tuple[ir.Node, str]]:
    """Each subgraph's owning node and attribute name."""
    owners: dict[ir.Graph, tuple[ir.Node, str]] = {}
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for name, attr in node.attributes.items():
            if attr.type == ir.AttributeType.GRAPH:
                owners[attr.as_graph()] = (node, name)
            elif attr.type == ir.AttributeType.GRAPHS:
                for graph in attr.as_graphs():
                    owners[graph] = (node, name)
    return owners


def _describe_source(value: ir.Value, owners: dict[ir.Graph, tuple[ir.Node, str]], main: ir.Graph) -> str:
    if value.graph is main:
        return f"'{value.name}' (a model input)"
    if value.graph in owners:
        node, attr = owners[value.graph]
        return f"'{value.name}' (an input of the {attr} of {describe_node(node)}: one value per iteration)"
    return f"'{value.name}' (produced by nothing)"


def _check_bounded(
    region: _Region,
    inputs: Sequence[ir.Value],
    outputs: Sequence[str],
    owners: dict[ir.Graph, tuple[ir.Node, str]],
    main: ir.Graph,
) -> None:
    if region.missing:
        needed = ", ".join(_describe_source(v, owners, main) for v in region.missing)
        suggestion = [*(v.name for v in inputs), *(v.name for v in region.missing)]
        raise ConfigError(
            f"outputs {list(outputs)} cannot be computed from the given inputs alone: they also need {needed} — "
            f"add them to the inputs (inputs={suggestion})"
        )
    unused = [v.name for v in inputs if v not in region.reached]
    if unused:
        raise ConfigError(
            f"input(s) {unused} do not lead to any of the outputs {list(outputs)} — drop them, or check the names "
            "(the walk back from the outputs stops at the first named input it meets)"
        )


def _check_not_nested(nodes: Sequence[ir.Node], owners: dict[ir.Graph, tuple[ir.Node, str]]) -> None:
    chosen = set(nodes)
    for node in nodes:
        graph = node.graph
        while graph in owners:
            owner = owners[graph][0]
            if owner in chosen:
                raise ConfigError(
                    f"the outputs need both {describe_node(owner)} and {describe_node(node)} inside its body; "
                    "a node and its own body cannot be extracted into one graph — extract them in two calls"
                )
            graph = owner.graph
