from __future__ import annotations

import numpy as np
import onnx_ir as ir
from helpers import apply, bind, op_types, run_plain

from modelport.passes import FuseConvBatchNormPass
from modelport.verify.tolerance import Tolerance

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def _conv_bn(extra_outputs: str = "", extra_nodes: str = "", bias: bool = True) -> ir.Model:
    rng = np.random.default_rng(0)
    model = ir.from_onnx_text(
        HEADER
        + f"""
    g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y{extra_outputs}) {{
      c = Conv<pads=[1,1,1,1]>(x, w{", b" if bias else ""})
      y = BatchNormalization<epsilon=0.001>(c, scale, bias, mean, var)
      {extra_nodes}
    }}"""
    )
    arrays = {
        "w": rng.standard_normal((4, 3, 3, 3)),
        "b": rng.standard_normal(4),
        "scale": rng.uniform(0.5, 2, 4),
        "bias": rng.standard_normal(4),
        "mean": rng.standard_normal(4),
        "var": rng.uniform(0.2, 3, 4),
    }
    for name, array in arrays.items():
        if name == "b" and not bias:
            continue
        bind(model, name, array.astype(np.float32))
    return model


FEEDS = {"x": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}
TOL = FuseConvBatchNormPass.tolerance


def test_folds_batchnorm_into_conv_with_and_without_bias() -> None:
    for bias in (True, False):
        model = _conv_bn(bias=bias)
        fused, changed = apply(FuseConvBatchNormPass(), model)
        assert changed
        assert op_types(fused) == ["Conv"]
        np.testing.assert_allclose(
            run_plain(fused, FEEDS)["y"], run_plain(model, FEEDS)["y"], atol=TOL.atol, rtol=TOL.rtol
        )


def test_tolerance_is_tight() -> None:
    assert Tolerance(1e-5, 1e-5) == TOL


def test_does_not_fold_when_conv_output_has_another_consumer() -> None:
    model = _conv_bn(extra_outputs=", float[N, 4, 8, 8] r", extra_nodes="r = Relu(c)")
    fused, changed = apply(FuseConvBatchNormPass(), model)
    assert not changed
    assert op_types(fused) == ["Conv", "BatchNormalization", "Relu"]


def test_does_not_fold_when_conv_output_is_a_graph_output() -> None:
    model = _conv_bn(extra_outputs=", float[N, 4, 8, 8] c")
    _, changed = apply(FuseConvBatchNormPass(), model)
    assert not changed


def test_does_not_fold_non_constant_parameters() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3, 8, 8] x, float[4] scale) => (float[N, 4, 8, 8] y) {
      c = Conv<pads=[1,1,1,1]>(x, w)
      y = BatchNormalization(c, scale, scale, scale, scale)
    }"""
    )
    bind(model, "w", np.ones((4, 3, 3, 3), np.float32))
    _, changed = apply(FuseConvBatchNormPass(), model)
    assert not changed
