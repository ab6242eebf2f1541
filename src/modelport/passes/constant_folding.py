"""Constant folding: compute, once, every node whose inputs are all known constants.

All foldable nodes are evaluated together in one ONNX Runtime session (graph optimizations off),
so the folded values come from the same kernels that would have computed them at run time.
``Shape`` of a tensor whose shape is fully static is folded too. A folded tensor larger than
``size_limit`` bytes that is also larger than the weights it came from is left unfolded: folding
must not balloon the model (e.g. an Expand or Tile of a small constant).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common

from modelport.ir.serde import infer_shapes, to_bytes
from modelport.passes.base import Pass, has_subgraph
from modelport.verify.tolerance import Tolerance

__all__ = ["ConstantFoldingPass"]

logger = logging.getLogger(__name__)

# Never folded: random ops, quantization boundaries (folding a DequantizeLinear of int8 weights
# would silently de-quantize the model), and ops whose value depends on the run.
_NEVER_FOLD = {
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "Constant",
}


def _is_constant_input(value: ir.Value | None, known: set[ir.Value]) -> bool:
    if value is None:  # an omitted optional input
        return True
    if value in known:
        return True
    return value.is_initializer() and not value.is_graph_input() and value.const_value is not None


def _constant_nodes(graph: ir.Graph) -> tuple[list[ir.Node], set[ir.Value]]:
    """Nodes computable ahead of time (in topological order) and the values they produce."""
    known: set[ir.Value] = set()
    foldable: list[ir.Node] = []
    for node in graph:
        if node.op_type == "Constant" and node.domain == "":
            known.update(node.outputs)
            continue
        if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_FOLD:
            continue
        if has_subgraph(node):
            continue
        if node.inputs and all(_is_constant_input(v, known) for v in node.inputs):
            foldable.append(node)
            known.update(node.outputs)
    return foldable, known


def _static_shape(value: ir.Value | None) -> bool:
    return value is not None and value.shape is not None and all(isinstance(d, int) for d in value.shape)


def _cone_bytes(value: ir.Value, seen: set[ir.Value]) -> int:
    """Bytes of the stored weights a computed constant is derived from."""
    if value in seen:
        return 0
    seen.add(value)
    if value.const_value is not None and value.producer() is None:
        return int(value.const_value.nbytes)
    producer = value.producer()
    if producer is None:
        return 0
    if producer.op_type == "Constant" and "value" in producer.attributes:
        tensor = producer.attributes["value"].value
        return int(tensor.nbytes) if tensor is not None else 0
    return sum(_cone_bytes(v, seen) for v in producer.inputs if v is not None)


class ConstantFoldingPass(Pass):
    """Replace constant sub-computations by their values (as initializers)."""

    name = "constant-folding"
    # Same ORT kernels, evaluated earlier: results are expected to be identical; the margin
    # covers vectorised code paths that may differ in the last bit on different tensor layouts.
    tolerance = Tolerance(atol=1e-6, rtol=1e-6)

    def __init__(self, size_limit: int = 1 << 20) -> None:
        super().__init__()
        self.size_limit = size_limit

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        infer_shapes(model)
        graph = model.graph
        shapes_folded = _fold_static_shapes(graph)
        foldable, known = _constant_nodes(graph)
        frontier = [
            out
            for node in foldable
            for out in node.outputs
            if out in known and not out.is_graph_output() and any(c not in foldable for c in out.consumers())
        ]
        if not frontier:
            if shapes_folded:
                common.RemoveUnusedNodesPass()(model)
            return ir.passes.PassResult(model, modified=shapes_folded)
        values = self._evaluate(model, foldable, frontier)
        modified = shapes_folded
        for value, array in zip(frontier, values, strict=True):
            if not isinstance(array, np.ndarray):
                logger.debug("not folding '%s': a %s is not a tensor", value.name, type(array).__name__)
                continue
            if array.nbytes > self.size_limit and array.nbytes > _cone_bytes(value, set()):
                logger.debug("not folding '%s': %d bytes would grow the model", value.name, array.nbytes)
                continue
            self._replace(graph, value, array)
            modified = True
        if modified:
            common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=modified)

    def _evaluate(self, model: ir.Model, nodes: list[ir.Node], frontier: list[ir.Value]) -> list[Any]:
        import onnxruntime as ort

        sub = ir.convenience.extract(model.graph, inputs=[], outputs=list(frontier))
        sub.opset_imports.update(model.opset_imports)
        sub_model = ir.Model(sub, ir_version=model.ir_version)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(to_bytes(sub_model), options, providers=["CPUExecutionProvider"])
        logger.debug("folding %d nodes into %d constants", len(nodes), len(frontier))
        return list(session.run([v.name for v in frontier], {}))

    @staticmethod
    def _replace(graph: ir.Graph, value: ir.Value, array: Any) -> None:
        _replace_with_constant(graph, value, np.asarray(array))


def _replace_with_constant(graph: ir.Graph, value: ir.Value, array: np.ndarray[Any, Any]) -> None:
    """Point every reader of ``value`` at a new initializer holding ``array``."""
    tensor = ir.tensor(array, name=f"{value.name}__folded")
    const = ir.Value(
        name=tensor.name,
        const_value=tensor,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(tensor.dtype),
    )
    graph.register_initializer(const)
    ir.convenience.replace_all_uses_with(value, const)


def _fold_static_shapes(graph: ir.Graph) -> bool:
    """Replace ``Shape`` of a fully static tensor by its value (honouring start/end)."""
    changed = False
    for node in list(graph):
        if node.op_type != "Shape" or node.domain not in ("", "ai.onnx") or not _static_shape(node.inputs[0]):
            continue
        out = node.outputs[0]
        if out.is_graph_output():
            continue
        source = node.inputs[0]
        assert source is not None and source.shape is not None
        dims = [int(d) for d in source.shape]  # type: ignore[arg-type]
        start = node.attributes.get("start")
        end = node.attributes.get("end")
        dims = dims[(int(start.value) if start else 0) : (int(end.value) if end else None)]
        _replace_with_constant(graph, out, np.asarray(dims, dtype=np.int64))
        changed = True
    return changed
