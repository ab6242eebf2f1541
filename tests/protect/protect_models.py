"""A small MLP with distinctive random weights, built in code, for the protection tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Arrays = dict[str, np.ndarray[Any, Any]]

_RNG = np.random.default_rng(1234)
#: The weights: random, so their bytes appear in a file only if the plaintext was written there.
W1 = _RNG.standard_normal((8, 16)).astype(np.float32)
B1 = _RNG.standard_normal(16).astype(np.float32)
W2 = _RNG.standard_normal((16, 4)).astype(np.float32)
C = _RNG.standard_normal(4).astype(np.float32)
WEIGHT_ARRAYS = (W1, B1, W2, C)


def mlp_proto() -> onnx.ModelProto:
    """y = Relu(x @ W1 + B1) @ W2 + C, with C held by a Constant node (a weight outside the initializers)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["o"], name="fc2"),
        helper.make_node("Constant", [], ["c"], name="const", value=numpy_helper.from_array(C, "c")),
        helper.make_node("Add", ["o", "c"], ["y"], name="bias2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(B1, "b1"), numpy_helper.from_array(W2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    model.metadata_props.add(key="author", value="tests")
    return model


def feeds() -> Arrays:
    return {"x": np.random.default_rng(7).standard_normal((3, 8)).astype(np.float32)}
