from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
from helpers import apply, bind, op_types, run_plain

from modelport.passes.rules.matmul_add import FuseMatMulAddPass
from modelport.verify.tolerance import Tolerance

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
TOL = FuseMatMulAddPass.tolerance
RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3)).astype(np.float32)
FEEDS = {"x": np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)}


def _model(
    add: str = "y = Add(m, bias)",
    bias: np.ndarray[Any, Any] | None = None,
    x_type: str = "float[N, 4]",
    y_type: str = "float[N, 3]",
    extra_outputs: str = "",
    extra_nodes: str = "",
    dtype: type = np.float32,
) -> ir.Model:
    model = ir.from_onnx_text(
        HEADER
        + f"""
    g ({x_type} x) => ({y_type} y{extra_outputs}) {{
      m = MatMul(x, w)
      {add}
      {extra_nodes}
    }}"""
    )
    bind(model, "w", W.astype(dtype))
    if bias is not None:
        bind(model, "bias", bias.astype(dtype))
    return model


def _assert_same(fused: ir.Model, model: ir.Model, feeds: dict[str, np.ndarray[Any, Any]] = FEEDS) -> None:
    np.testing.assert_allclose(run_plain(fused, feeds)["y"], run_plain(model, feeds)["y"], atol=TOL.atol, rtol=TOL.rtol)


@pytest.mark.parametrize("add", ["y = Add(m, bias)", "y = Add(bias, m)"])
@pytest.mark.parametrize("bias_shape", [(3,), (1, 3), ()])
def test_fuses_matmul_and_bias_into_gemm(add: str, bias_shape: tuple[int, ...]) -> None:
    model = _model(add=add, bias=RNG.standard_normal(bias_shape))
    fused, changed = apply(FuseMatMulAddPass(), model)
    assert changed
    assert op_types(fused) == ["Gemm"]
    gemm = fused.graph[0]
    assert [v.name for v in gemm.inputs if v is not None] == ["x", "w", "bias"]
    assert fused.graph.outputs[0].name == "y"
    _assert_same(fused, model)


def test_fuses_with_non_constant_rank2_weight_and_float64() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (double[N, 4] x, double[4, 3] w) => (double[N, 3] y) {
      m = MatMul(x, w)
      y = Add(m, bias)
    }"""
    )
    bind(model, "bias", RNG.standard_normal(3))
    fused, changed = apply(FuseMatMulAddPass(), model)
    assert changed
    assert op_types(fused) == ["Gemm"]
    feeds = {"x": FEEDS["x"].astype(np.float64), "w": W.astype(np.float64)}
    _assert_same(fused, model, feeds)


def test_tolerance_is_tight() -> None:
    assert Tolerance(1e-5, 1e-5) == TOL
    assert FuseMatMulAddPass.name == "matmul-add-gemm"
    assert not FuseMatMulAddPass.may_slow


def test_does_not_fuse_rank3_input() -> None:
    model = _model(bias=RNG.standard_normal(3), x_type="float[N, 5, 4]", y_type="float[N, 5, 3]")
    fused, changed = apply(FuseMatMulAddPass(), model)
    assert not changed
    assert op_types(fused) == ["MatMul", "Add"]


def test_does_not_fuse_when_matmul_output_has_another_consumer() -> None:
    model = _model(bias=RNG.standard_normal(3), extra_outputs=", float[N, 3] r", extra_nodes="r = Relu(m)")
    fused, changed = apply(FuseMatMulAddPass(), model)
    assert not changed
    assert op_types(fused) == ["MatMul", "Add", "Relu"]


def test_does_not_fuse_when_matmul_output_is_a_graph_output() -> None:
    model = _model(bias=RNG.standard_normal(3), extra_outputs=", float[N, 3] m")
    _, changed = apply(FuseMatMulAddPass(), model)
    assert not changed


def test_does_not_fuse_integer_matmul() -> None:
    model = _model(bias=np.arange(3), x_type="int32[N, 4]", y_type="int32[N, 3]", dtype=np.int32)
    fused, changed = apply(FuseMatMulAddPass(), model)
    assert not changed
    assert op_types(fused) == ["MatMul", "Add"]


def test_does_not_fuse_non_constant_bias() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 4] x, float[3] bias) => (float[N, 3] y) {
      m = MatMul(x, w)
      y = Add(m, bias)
    }"""
    )
    bind(model, "w", W)
    _, changed = apply(FuseMatMulAddPass(), model)
    assert not changed


@pytest.mark.parametrize(
    ("bias_shape", "y_type"),
    [((1, 1, 3), "float[1, N, 3]"), ((2, 1), "float[2, 3]")],  # rank 3; [M, 1] with M unknown
)
def test_does_not_fuse_bias_gemm_cannot_broadcast(bias_shape: tuple[int, ...], y_type: str) -> None:
    model = _model(bias=RNG.standard_normal(bias_shape), y_type=y_type)
    fused, changed = apply(FuseMatMulAddPass(), model)
    assert not changed
    assert op_types(fused) == ["MatMul", "Add"]


def test_fuses_inside_a_subgraph_with_constant_node_bias() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 4] x, bool c) => (float[N, 3] y) {
      w = Constant<value = float[4, 3] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}>()
      bias = Constant<value = float[3] {1, 2, 3}>()
      y = If(c) <then_branch = t () => (float[N, 3] a) {
        m = MatMul(x, w)
        a = Add(m, bias)
      }, else_branch = e () => (float[N, 3] b) {
        b = MatMul(x, w)
      }>
    }"""
    )
    fused, changed = apply(FuseMatMulAddPass(), model)
    assert changed
    assert [[n.op_type for n in g] for g in fused.graphs()] == [["Constant", "Constant", "If"], ["Gemm"], ["MatMul"]]
    _assert_same(fused, model, {**FEEDS, "c": np.array(True)})
