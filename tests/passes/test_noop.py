from __future__ import annotations

import numpy as np
import onnx_ir as ir
from helpers import apply, op_types, run_plain

from modelport.passes import NoOpEliminationPass

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
X = {"x": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5}


def test_removes_identity_dropout_and_same_type_cast() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3] x) => (float[N, 3] y) {
      a = Identity(x)
      b = Relu(a)
      c = Dropout(b)
      d = Cast<to=1>(x)
      e = Add(c, d)
      y = Sigmoid(e)
    }"""
    )
    before = run_plain(model, X)
    after_model, changed = apply(NoOpEliminationPass(), model)
    assert changed
    assert op_types(after_model) == ["Relu", "Add", "Sigmoid"]
    np.testing.assert_array_equal(run_plain(after_model, X)["y"], before["y"])  # pure rewiring: exact


def test_identity_feeding_graph_output_is_bypassed_and_keeps_the_output_name() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3] x) => (float[N, 3] y) {
      a = Relu(x)
      y = Identity(a)
    }"""
    )
    after_model, changed = apply(NoOpEliminationPass(), model)
    assert changed
    assert op_types(after_model) == ["Relu"]
    assert [v.name for v in after_model.graph.outputs] == ["y"]
    np.testing.assert_array_equal(run_plain(after_model, X)["y"], run_plain(model, X)["y"])


def test_does_not_apply_when_it_must_not() -> None:
    # Identity from a graph input straight to a graph output must stay; a Cast that changes the
    # type is not a no-op; a training-mode Dropout is not a no-op; a used Dropout mask stays.
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3] x) => (float[N, 3] y, double[N, 3] z, float[N, 3] w, bool[N, 3] m) {
      y = Identity(x)
      z = Cast<to=11>(x)
      w, m = Dropout(x)
    }"""
    )
    after_model, changed = apply(NoOpEliminationPass(), model)
    assert not changed
    assert op_types(after_model) == ["Identity", "Cast", "Dropout"]
