"""Helpers for pass tests: run a model in ONNX Runtime with graph optimizations off."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.ir.serde import clone
from modelport.runners.onnxruntime import OrtRunner


def run_plain(model: ir.Model, feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    with OrtRunner(model, graph_optimization="disable") as runner:
        return runner.infer(feeds)


def op_types(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph]


def apply(pass_: Any, model: ir.Model) -> tuple[ir.Model, bool]:
    """Apply a pass to a copy; return the copy and whether it changed."""
    copy = clone(model)
    return copy, bool(pass_(copy).modified)


def bind(model: ir.Model, name: str, array: np.ndarray[Any, Any]) -> ir.Model:
    """Make the tensor ``name`` that nodes read (undeclared in ONNX text) an initializer."""
    value = next((v for node in model.graph for v in node.inputs if v is not None and v.name == name), None)
    if value is None:
        value = ir.Value(name=name)
    value.const_value = ir.tensor(array, name=name)
    value.shape = ir.Shape(array.shape)
    value.type = ir.TensorType(value.const_value.dtype)
    model.graph.register_initializer(value)
    return model
