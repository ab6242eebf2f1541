from __future__ import annotations

import numpy as np
import onnx_ir as ir
from helpers import apply, op_types, run_plain

from modelport.passes.lift_constants import LiftConstantsPass

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def test_every_constant_form_is_lifted_and_outputs_are_identical() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3] x) => (float[N, 3] y) {
      scale = Constant<value_float = 2.0>()
      shift = Constant<value = float[3] {1.0, 2.0, 3.0}>()
      axes = Constant<value_ints = [0]>()
      a = Mul(x, scale)
      b = Add(a, shift)
      u = Unsqueeze(b, axes)
      y = Squeeze(u, axes)
    }"""
    )
    lifted, changed = apply(LiftConstantsPass(), model)
    assert changed
    assert op_types(lifted) == ["Mul", "Add", "Unsqueeze", "Squeeze"]
    assert set(lifted.graph.initializers) == {"scale", "shift", "axes"}
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(run_plain(lifted, {"x": x})["y"], run_plain(model, {"x": x})["y"])


def test_a_constant_that_is_a_graph_output_stays() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3] x) => (float[N, 3] y, float[3] c) {
      c = Constant<value = float[3] {1.0, 2.0, 3.0}>()
      y = Add(x, c)
    }"""
    )
    lifted, changed = apply(LiftConstantsPass(), model)
    assert not changed
    assert op_types(lifted) == ["Constant", "Add"]
