from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
from helpers import apply, bind, op_types, run_plain

from modelport.passes.base import const_array
from modelport.passes.rules.gemm_conv import GemmToConvPass
from modelport.verify.tolerance import Tolerance

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
TOL = GemmToConvPass.tolerance
RNG = np.random.default_rng(0)
W = RNG.standard_normal((6, 8)).astype(np.float32)  # [K, C]
B = RNG.standard_normal(6).astype(np.float32)
FEEDS = {"x": np.random.default_rng(1).standard_normal((2, 8, 5, 5)).astype(np.float32)}


def _head(
    gemm: str = "y = Gemm<transB=1>(f, w, b)",
    flatten: str = "f = Flatten(p)",
    weight: np.ndarray[Any, Any] = W,
    bias: np.ndarray[Any, Any] | None = B,
    pool: str = "p = GlobalAveragePool(x)",
    value_info: str = "<float[N, 8, 1, 1] p>",
    extra_outputs: str = "",
    extra_nodes: str = "",
) -> ir.Model:
    model = ir.from_onnx_text(
        HEADER
        + f"""
    g (float[N, 8, 5, 5] x) => (float[N, 6] y{extra_outputs}) {value_info} {{
      {pool}
      {flatten}
      {gemm}
      {extra_nodes}
    }}"""
    )
    bind(model, "w", weight)
    if bias is not None:
        bind(model, "b", bias)
    return model


def _fuse_and_compare(model: ir.Model, expected_ops: list[str]) -> ir.Model:
    fused, changed = apply(GemmToConvPass(), model)
    assert changed
    assert op_types(fused) == expected_ops
    assert fused.graph.outputs[0].name == "y"
    np.testing.assert_allclose(run_plain(fused, FEEDS)["y"], run_plain(model, FEEDS)["y"], atol=TOL.atol, rtol=TOL.rtol)
    return fused


def test_classifier_head_becomes_1x1_conv() -> None:
    fused = _fuse_and_compare(_head(), ["GlobalAveragePool", "Conv", "Flatten"])
    conv = fused.graph[1]
    weight = const_array(conv.inputs[1])
    assert weight is not None
    assert weight.shape == (6, 8, 1, 1)
    assert list(conv.attributes["kernel_shape"].value) == [1, 1]
    assert not {"w", "b"} & set(fused.graph.initializers)  # replaced, dropped


@pytest.mark.parametrize(
    ("gemm", "weight", "bias"),
    [
        ("y = Gemm<transB=0>(f, w, b)", W.T.copy(), B),  # weight transposed
        ("y = Gemm<transB=1, alpha=0.5, beta=2.0>(f, w, b)", W, B),  # folded into the weights
        ("y = Gemm<transB=1>(f, w)", W, None),  # no bias
        ("y = Gemm<transB=1>(f, w, b)", W, B.reshape(1, 6)),  # [1, K] bias
    ],
)
def test_gemm_variants(gemm: str, weight: np.ndarray[Any, Any], bias: np.ndarray[Any, Any] | None) -> None:
    _fuse_and_compare(_head(gemm=gemm, weight=weight, bias=bias), ["GlobalAveragePool", "Conv", "Flatten"])


@pytest.mark.parametrize("target", [[0, -1], [-1, 8], [0, 8]])
def test_reshape_to_n_by_c_is_accepted(target: list[int]) -> None:
    model = _head(flatten="f = Reshape(p, shape)")
    bind(model, "shape", np.array(target, dtype=np.int64))
    _fuse_and_compare(model, ["GlobalAveragePool", "Conv", "Flatten"])


def test_pool_output_shape_unannotated_is_known_from_global_pool() -> None:
    _fuse_and_compare(_head(value_info=""), ["GlobalAveragePool", "Conv", "Flatten"])


def test_gemm_chain_becomes_conv_chain() -> None:
    model = _head(gemm="h = Gemm<transB=1>(f, w, b)\n      y = Gemm<transB=1>(h, w2)")
    bind(model, "w2", RNG.standard_normal((6, 6)).astype(np.float32))
    _fuse_and_compare(model, ["GlobalAveragePool", "Conv", "Conv", "Flatten"])


def test_tolerance_and_flags() -> None:
    assert Tolerance(1e-5, 1e-5) == TOL
    assert GemmToConvPass.name == "gemm-conv"
    assert GemmToConvPass.may_slow


def _assert_unchanged(model: ir.Model) -> None:
    before = op_types(model)
    fused, changed = apply(GemmToConvPass(), model)
    assert not changed
    assert op_types(fused) == before


def test_does_not_apply_when_spatial_dims_are_not_one() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 2, 2, 2] x) => (float[N, 6] y) {
      f = Flatten(x)
      y = Gemm<transB=1>(f, w, b)
    }"""
    )
    bind(model, "w", W)
    bind(model, "b", B)
    _assert_unchanged(model)


def test_does_not_apply_when_spatial_dims_are_unknown() -> None:
    _assert_unchanged(_head(pool="p = MaxPool<kernel_shape=[5, 5]>(x)", value_info=""))


def test_does_not_apply_when_flatten_output_has_another_consumer() -> None:
    _assert_unchanged(_head(extra_outputs=", float[N, 8] r", extra_nodes="r = Relu(f)"))


def test_does_not_apply_when_flatten_output_is_a_graph_output() -> None:
    _assert_unchanged(_head(extra_outputs=", float[N, 8] f"))


def test_does_not_apply_to_non_constant_weight() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 8, 5, 5] x, float[6, 8] w) => (float[N, 6] y) {
      p = GlobalAveragePool(x)
      f = Flatten(p)
      y = Gemm<transB=1>(f, w)
    }"""
    )
    _assert_unchanged(model)


def test_does_not_apply_with_trans_a() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[8, 6, 1, 1] x) => (float[6, 6] y) {
      f = Flatten(x)
      y = Gemm<transA=1, transB=1>(f, w)
    }"""
    )
    bind(model, "w", W)
    _assert_unchanged(model)


def test_does_not_apply_to_reshape_that_is_not_n_by_c() -> None:
    model = _head(flatten="f = Reshape(p, shape)")
    bind(model, "shape", np.array([2, -1], dtype=np.int64))  # batch is symbolic: not provably N
    _assert_unchanged(model)


def test_does_not_apply_to_per_row_bias() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[2, 8, 1, 1] x) => (float[2, 6] y) {
      f = Flatten(x)
      y = Gemm<transB=1>(f, w, b)
    }"""
    )
    bind(model, "w", W)
    bind(model, "b", RNG.standard_normal((2, 6)).astype(np.float32))
    _assert_unchanged(model)
