from __future__ import annotations

import numpy as np
import onnx_ir as ir
from helpers import apply, op_types, run_plain

from modelport.passes import DeadCodeEliminationPass

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def test_removes_unused_nodes_and_initializers() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[2] x) => (float[2] y) {
      unused = Neg(x)
      y = Relu(x)
    }"""
    )
    model.graph.register_initializer(ir.Value(name="w", const_value=ir.tensor(np.ones(3, np.float32), name="w")))
    cleaned, changed = apply(DeadCodeEliminationPass(), model)
    assert changed
    assert op_types(cleaned) == ["Relu"]
    assert "w" not in cleaned.graph.initializers
    feeds = {"x": np.array([-1.0, 2.0], np.float32)}
    np.testing.assert_array_equal(run_plain(cleaned, feeds)["y"], run_plain(model, feeds)["y"])


def test_keeps_nodes_that_feed_outputs() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[2] x) => (float[2] y, float[2] z) {
      y = Relu(x)
      z = Neg(y)
    }"""
    )
    _, changed = apply(DeadCodeEliminationPass(), model)
    assert not changed
