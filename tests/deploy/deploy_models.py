"""Small models for deploy tests: a Conv → Relu → pool → Gemm classifier, weights from a seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_classifier(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b")
    fc = numpy_helper.from_array(rng.normal(0, 0.3, (8, 4)).astype(np.float32), "fc")
    fb = numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "fb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [w, b, fc, fb],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def write_tiny(path: Path, seed: int = 0) -> Path:
    onnx.save(tiny_classifier(seed), path)
    return path


def quick_recipe(model: Path, out: Path, cache: Path, **stages: object) -> dict[str, object]:
    """A recipe mapping that runs fast: short benches, batch 2."""
    base: dict[str, object] = {
        "verify": {"batch": 2},
        "bench": {"batches": [1, 2], "seconds": 0.05},
    }
    base.update(stages)
    return {"source": {"onnx": str(model)}, "output": str(out), "stages": base, "cache": {"dir": str(cache)}}
