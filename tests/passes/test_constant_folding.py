from __future__ import annotations

import numpy as np
import onnx_ir as ir
from helpers import apply, bind, op_types, run_plain

from modelport.passes import ConstantFoldingPass

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
TOL = ConstantFoldingPass.tolerance


def test_folds_constant_chain_and_static_shape() -> None:
    model = bind(
        ir.from_onnx_text(
            HEADER
            + """
    g (float[2, 3] x) => (float[2, 3] y) {
      t = Transpose<perm=[1, 0]>(w)
      s = Sqrt(t)
      shape = Shape(x)
      r = Reshape(s, shape)
      y = Add(x, r)
    }"""
        ),
        "w",
        np.arange(1, 7, dtype=np.float32).reshape(3, 2),
    )
    feeds = {"x": np.ones((2, 3), np.float32)}
    folded, changed = apply(ConstantFoldingPass(), model)
    assert changed
    assert op_types(folded) == ["Add"]
    np.testing.assert_allclose(
        run_plain(folded, feeds)["y"], run_plain(model, feeds)["y"], atol=TOL.atol, rtol=TOL.rtol
    )


def test_does_not_fold_dequantize_or_dynamic_shapes() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 4] x) => (float[N, 4] y, int64[2] s) {
      w = DequantizeLinear(q, scale)
      y = Mul(x, w)
      s = Shape(x)
    }"""
    )
    bind(model, "q", np.arange(4, dtype=np.int8))
    bind(model, "scale", np.array(0.5, np.float32))
    folded, changed = apply(ConstantFoldingPass(), model)
    assert not changed
    assert op_types(folded) == ["DequantizeLinear", "Mul", "Shape"]


def test_does_not_balloon_the_model() -> None:
    # Expanding a 4-byte scalar to 4 MB must not be materialised.
    model = bind(
        ir.from_onnx_text(
            HEADER
            + """
    g (float[1000, 1000] x) => (float[1000, 1000] y) {
      big = Expand(c, shape)
      y = Add(x, big)
    }"""
        ),
        "c",
        np.array(1.5, np.float32),
    )
    bind(model, "shape", np.array([1000, 1000], np.int64))
    folded, changed = apply(ConstantFoldingPass(size_limit=1 << 20), model)
    assert not changed
    assert "Expand" in op_types(folded)
