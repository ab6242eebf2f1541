"""What a model is: its signature, ops, weights, compute and quantization state."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx_ir as ir

from modelport.ir.serde import clone, source_path
from modelport.ir.specs import TensorSpec, concrete_shape, specs_of

__all__ = ["ModelSummary", "count_macs", "node_count", "quantization_kind", "summarize"]

logger = logging.getLogger(__name__)

_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
_INTEGER_OPS = {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}


@dataclass
class ModelSummary:
    """The facts ``modelport inspect`` reports."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    ir_version: int
    opsets: dict[str, int]
    producer: str
    node_count: int
    op_histogram: dict[str, int]
    parameter_count: int
    parameter_bytes: dict[str, int]
    file_bytes: int | None
    macs: int | None
    macs_by_op: dict[str, int]
    macs_input_shapes: dict[str, list[int]]
    quantization: str
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "ir_version": self.ir_version,
            "opsets": self.opsets,
            "producer": self.producer,
            "node_count": self.node_count,
            "op_histogram": self.op_histogram,
            "parameter_count": self.parameter_count,
            "parameter_bytes": self.parameter_bytes,
            "file_bytes": self.file_bytes,
            "macs": self.macs,
            "macs_by_op": self.macs_by_op,
            "macs_input_shapes": self.macs_input_shapes,
            "quantization": self.quantization,
            "dynamic_axes": {k: {str(a): lbl for a, lbl in v.items()} for k, v in self.dynamic_axes.items()},
        }


def _all_nodes(model: ir.Model) -> list[ir.Node]:
    """Every node, including those inside If/Loop/Scan bodies."""
    return list(ir.traversal.RecursiveGraphIterator(model.graph))


def node_count(model: ir.Model) -> int:
    """Nodes of the model, including those inside If/Loop/Scan bodies."""
    return sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))


def quantization_kind(model: ir.Model) -> str:
    """'QDQ', 'QOperator', 'integer (dynamic)', a combination, or 'none'."""
    ops = {node.op_type for node in _all_nodes(model)}
    kinds = []
    if ops & _QDQ_OPS:
        kinds.append("QDQ")
    if any(op.startswith("QLinear") for op in ops):
        kinds.append("QOperator")
    if ops & _INTEGER_OPS:
        kinds.append("integer (dynamic)")
    return " + ".join(kinds) if kinds else "none"


def _parameters(model: ir.Model) -> tuple[int, dict[str, int]]:
    count = 0
    by_dtype: Counter[str] = Counter()
    seen: set[int] = set()
    tensors: list[Any] = []
    for graph in model.graphs():
        tensors.extend(v.const_value for v in graph.initializers.values())
    for node in _all_nodes(model):
        if node.op_type == "Constant" and "value" in node.attributes:
            tensors.append(node.attributes["value"].value)
    for tensor in tensors:
        if tensor is None or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        count += tensor.size
        by_dtype[str(tensor.dtype).removeprefix("DataType.")] += tensor.nbytes
    return count, dict(by_dtype)


def _file_bytes(model: ir.Model) -> int | None:
    path = source_path(model)
    if path is None or not path.exists():
        return None
    total = path.stat().st_size
    data = Path(str(path) + ".data")
    if data.exists():
        total += data.stat().st_size
    return total


def _static(shape: ir.Shape | None) -> list[int] | None:
    if shape is None:
        return None
    dims = [d for d in shape if isinstance(d, int)]
    return dims if len(dims) == len(shape) else None


def _node_macs(node: ir.Node) -> int | None:
    """Multiply-accumulates of one node, from inferred static shapes; None when unknown."""
    op = node.op_type
    out = _static(node.outputs[0].shape) if node.outputs else None
    if out is None or len(node.inputs) < 2 or node.inputs[1] is None or node.inputs[0] is None:
        return None
    w = _static(node.inputs[1].shape)
    x = _static(node.inputs[0].shape)
    if op in ("Conv", "ConvInteger") and w is not None:
        return math.prod(out) * math.prod(w[1:])
    if op == "ConvTranspose" and w is not None and x is not None:
        # Weight is [C_in, C_out / group, k...]: every input element feeds C_out/group * k outputs.
        return math.prod(x) * w[1] * math.prod(w[2:])
    if op == "Gemm" and x is not None:
        trans_a = node.attributes.get("transA")
        k = x[0] if trans_a is not None and trans_a.value else x[-1]
        return math.prod(out) * k
    if op in ("MatMul", "MatMulInteger") and x is not None:
        return math.prod(out) * x[-1]
    return None


def count_macs(
    model: ir.Model, *, batch: int = 1, dims: Mapping[str, int] | None = None, default_dim: int = 64
) -> tuple[int | None, dict[str, int], dict[str, list[int]]]:
    """MACs of Conv/ConvTranspose/Gemm/MatMul at concrete input sizes.

    Returns (total or None when no shape could be inferred, MACs per op type, the input shapes
    used). Dynamic dims are filled as in :func:`concrete_shape`.
    """
    from modelport.ir.serde import infer_shapes

    work = clone(model)
    used: dict[str, list[int]] = {}
    for value, spec in zip(work.graph.inputs, specs_of(work.graph.inputs), strict=True):
        if spec.shape is None:
            continue
        shape = concrete_shape(spec, batch=batch, dims=dims, default_dim=default_dim)
        value.shape = ir.Shape(shape)
        used[spec.name] = list(shape)
    for node in _all_nodes(work):
        for out in node.outputs:
            if not out.is_graph_output():
                out.shape = None
    infer_shapes(work)
    by_op: Counter[str] = Counter()
    known = False
    for node in _all_nodes(work):
        macs = _node_macs(node)
        if macs is not None:
            by_op[node.op_type] += macs
            known = True
    return (sum(by_op.values()) if known else None), dict(by_op), used


def summarize(
    model: ir.Model, *, batch: int = 1, dims: Mapping[str, int] | None = None, default_dim: int = 64
) -> ModelSummary:
    """Describe ``model``: signature, ops (inside subgraphs too), weights, MACs, quantization."""
    inputs = specs_of(model.graph.inputs)
    outputs = specs_of(model.graph.outputs)
    nodes = _all_nodes(model)
    histogram = Counter(n.op_type if not n.domain else f"{n.domain}.{n.op_type}" for n in nodes)
    params, param_bytes = _parameters(model)
    try:
        macs, macs_by_op, shapes = count_macs(model, batch=batch, dims=dims, default_dim=default_dim)
    except Exception as e:  # shape inference is best effort for foreign ops
        logger.debug("MAC count failed: %s", e)
        macs, macs_by_op, shapes = None, {}, {}
    dynamic = {s.name: s.dynamic_axes for s in inputs + outputs if s.dynamic_axes}
    return ModelSummary(
        inputs=inputs,
        outputs=outputs,
        ir_version=model.ir_version,
        opsets=dict(model.opset_imports),
        producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
        node_count=len(nodes),
        op_histogram=dict(histogram.most_common()),
        parameter_count=params,
        parameter_bytes=param_bytes,
        file_bytes=_file_bytes(model),
        macs=macs,
        macs_by_op=macs_by_op,
        macs_input_shapes=shapes,
        quantization=quantization_kind(model),
        dynamic_axes=dynamic,
    )
