"""summarize / count_macs / quantization_kind on models built in code."""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir
import pytest

from modelport.ir.serde import load, save
from modelport.ir.summary import count_macs, quantization_kind, summarize


def parse(body: str, signature: str, initializers: str = "") -> ir.Model:
    return ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g {signature}
        {initializers}
        {{
            {body}
        }}
        """
    )


def if_model() -> ir.Model:
    """An If whose branches hold two Relus and one Neg."""
    return parse(
        """
        y = If (c) <
            then_branch: graph = then_g () => (float[N, 3] t) {
                a = Relu(x)
                t = Relu(a)
            },
            else_branch: graph = else_g () => (float[N, 3] e) {
                e = Neg(x)
            }
        >
        """,
        "(bool c, float[N, 3] x) => (float[N, 3] y)",
    )


def conv_model() -> ir.Model:
    """Conv 3->4 channels, 3x3 kernel, pad 1, on 8x8 images; weight as a Constant node."""
    weights = ", ".join(["0.5"] * (4 * 3 * 3 * 3))
    return parse(
        f"""
        w = Constant<value = float[4, 3, 3, 3] {{{weights}}}>()
        y = Conv<pads = [1, 1, 1, 1]>(x, w)
        """,
        "(float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y)",
    )


# op histogram ---------------------------------------------------------------------------------


def test_histogram_counts_nodes_inside_if_branches() -> None:
    summary = summarize(if_model())
    assert summary.op_histogram == {"Relu": 2, "If": 1, "Neg": 1}
    assert summary.node_count == 4


def test_histogram_prefixes_custom_domains() -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
        g (float[N, 3] x) => (float[N, 3] y)
        {
            t = com.microsoft.FastGelu(x)
            y = Relu(t)
        }
        """
    )
    assert summarize(model).op_histogram == {"com.microsoft.FastGelu": 1, "Relu": 1}


# parameters -----------------------------------------------------------------------------------


def test_parameter_count_and_bytes_per_dtype() -> None:
    model = parse(
        """
        c = Constant<value = float[2, 2] {1.0, 2.0, 3.0, 4.0}>()
        t = Add(x, b)
        u = Reshape(t, shape)
        y = Add(u, c)
        """,
        "(float[N, 4] x) => (float[N, 2, 2] y)",
        "<float[4] b = {1.0, 2.0, 3.0, 4.0}, int64[3] shape = {-1, 2, 2}>",
    )
    summary = summarize(model)
    # b: 4 floats, shape: 3 int64, Constant c: 4 floats
    assert summary.parameter_count == 4 + 3 + 4
    assert summary.parameter_bytes == {"FLOAT": (4 + 4) * 4, "INT64": 3 * 8}


def test_parameters_of_qdq_model() -> None:
    summary = summarize(qdq_model())
    assert summary.parameter_count == 2
    assert summary.parameter_bytes == {"FLOAT": 4, "UINT8": 1}


def test_file_bytes_includes_external_data(tmp_path: Path) -> None:
    weights = ", ".join(["1.0"] * 300)
    model = parse("y = MatMul(x, w)", "(float[N, 3] x) => (float[N, 100] y)", f"<float[3, 100] w = {{{weights}}}>")
    assert summarize(model).file_bytes is None
    path = save(model, tmp_path / "m.onnx", external_data=True)
    data = tmp_path / "m.onnx.data"
    assert data.stat().st_size == 1200
    summary = summarize(load(path))
    assert summary.file_bytes == path.stat().st_size + 1200
    assert summary.parameter_count == 300
    assert summary.parameter_bytes == {"FLOAT": 1200}


# MACs -----------------------------------------------------------------------------------------


def test_conv_macs_by_hand() -> None:
    # output [1, 4, 8, 8] = 256 values, each a dot product over 3 * 3 * 3 = 27 weights
    total, by_op, shapes = count_macs(conv_model())
    assert total == 256 * 27 == 6912
    assert by_op == {"Conv": 6912}
    assert shapes == {"x": [1, 3, 8, 8]}


def test_conv_macs_scale_with_batch() -> None:
    total, _, shapes = count_macs(conv_model(), batch=3)
    assert total == 3 * 6912
    assert shapes == {"x": [3, 3, 8, 8]}


def test_grouped_strided_conv_macs_by_hand() -> None:
    # 4 -> 4 channels in 2 groups (2 input channels each), 3x3, stride 2, pad 1: 8x8 -> 4x4.
    weights = ", ".join(["1.0"] * (4 * 2 * 3 * 3))
    model = parse(
        f"""
        w = Constant<value = float[4, 2, 3, 3] {{{weights}}}>()
        y = Conv<group = 2, strides = [2, 2], pads = [1, 1, 1, 1]>(x, w)
        """,
        "(float[N, 4, 8, 8] x) => (float[N, 4, 4, 4] y)",
    )
    total, _, _ = count_macs(model)
    assert total == (4 * 4 * 4) * (2 * 3 * 3) == 1152


def test_gemm_and_matmul_macs_by_hand() -> None:
    model = parse(
        """
        y = Gemm(a, b)
        z = MatMul(p, q)
        """,
        "(float[N, 16] a, float[16, 8] b, float[M, 4, 5] p, float[5, 6] q) => (float[N, 8] y, float[M, 4, 6] z)",
    )
    total, by_op, shapes = count_macs(model, batch=2, dims={"M": 3})
    gemm = 2 * 8 * 16  # [2, 16] @ [16, 8]
    matmul = 3 * 4 * 6 * 5  # [3, 4, 5] @ [5, 6]
    assert by_op == {"Gemm": gemm, "MatMul": matmul}
    assert total == gemm + matmul == 616
    assert shapes == {"a": [2, 16], "b": [16, 8], "p": [3, 4, 5], "q": [5, 6]}


def test_gemm_trans_a_macs_by_hand() -> None:
    model = parse(
        "y = Gemm<transA = 1>(a, b)",
        "(float[16, N] a, float[16, 8] b) => (float[N, 8] y)",
    )
    # axis 1 is not the batch axis: N comes from dims; A^T is [5, 16]
    total, _, shapes = count_macs(model, dims={"N": 5})
    assert total == 5 * 8 * 16
    assert shapes["a"] == [16, 5]


def test_macs_unknown_without_compute_ops() -> None:
    total, by_op, _ = count_macs(parse("y = Relu(x)", "(float[N, 3] x) => (float[N, 3] y)"))
    assert total is None
    assert by_op == {}


def test_summary_reports_macs() -> None:
    summary = summarize(conv_model(), batch=2)
    assert summary.macs == 2 * 6912
    assert summary.macs_by_op == {"Conv": 2 * 6912}
    assert summary.macs_input_shapes == {"x": [2, 3, 8, 8]}


# quantization ---------------------------------------------------------------------------------


def qdq_model() -> ir.Model:
    return parse(
        """
        qx = QuantizeLinear(x, scale, zp)
        dx = DequantizeLinear(qx, scale, zp)
        y = Relu(dx)
        """,
        "(float[N, 3] x) => (float[N, 3] y)",
        "<float scale = {0.1}, uint8 zp = {128}>",
    )


def test_quantization_qdq() -> None:
    assert quantization_kind(qdq_model()) == "QDQ"
    assert summarize(qdq_model()).quantization == "QDQ"


def test_quantization_none_for_plain_model() -> None:
    assert quantization_kind(conv_model()) == "none"


def test_quantization_dynamic_integer() -> None:
    model = parse("y = MatMulInteger(a, b)", "(uint8[N, 4] a, uint8[4, 2] b) => (int32[N, 2] y)")
    assert quantization_kind(model) == "integer (dynamic)"


def test_quantization_qoperator_combined_with_qdq() -> None:
    model = parse(
        """
        qa = QuantizeLinear(a, s, z)
        qb = QuantizeLinear(b, s, z)
        qy = QLinearMatMul(qa, s, z, qb, s, z, s, z)
        y = DequantizeLinear(qy, s, z)
        """,
        "(float[N, 4] a, float[4, 2] b) => (float[N, 2] y)",
        "<float s = {0.1}, uint8 z = {0}>",
    )
    assert quantization_kind(model) == "QDQ + QOperator"


def test_quantization_found_inside_subgraph() -> None:
    model = parse(
        """
        y = If (c) <
            then_branch: graph = then_g () => (float[N, 3] t) {
                q = QuantizeLinear(x, s, z)
                t = DequantizeLinear(q, s, z)
            },
            else_branch: graph = else_g () => (float[N, 3] e) {
                e = Identity(x)
            }
        >
        """,
        "(bool c, float[N, 3] x) => (float[N, 3] y)",
        "<float s = {0.1}, uint8 z = {0}>",
    )
    assert quantization_kind(model) == "QDQ"


# signature ------------------------------------------------------------------------------------


def test_dynamic_axes_by_name() -> None:
    model = parse(
        "y = Add(a, b)",
        "(float[batch, seq, 8] a, float[batch, 1, 8] b) => (float[batch, seq, 8] y)",
    )
    summary = summarize(model)
    assert summary.dynamic_axes == {
        "a": {0: "batch", 1: "seq"},
        "b": {0: "batch"},
        "y": {0: "batch", 1: "seq"},
    }
    assert summary.to_dict()["dynamic_axes"]["a"] == {"0": "batch", "1": "seq"}


def test_unnamed_dynamic_axis_is_question_mark() -> None:
    summary = summarize(parse("y = Relu(x)", "(float[?, 3] x) => (float[?, 3] y)"))
    assert summary.dynamic_axes == {"x": {0: "?"}, "y": {0: "?"}}
    assert summary.inputs[0].shape == (None, 3)


def test_static_model_has_no_dynamic_axes() -> None:
    summary = summarize(parse("y = Relu(x)", "(float[2, 3] x) => (float[2, 3] y)"))
    assert summary.dynamic_axes == {}


def test_summary_signature_and_metadata() -> None:
    summary = summarize(conv_model())
    assert [s.name for s in summary.inputs] == ["x"]
    assert summary.inputs[0].shape == ("N", 3, 8, 8)
    assert summary.outputs[0].shape == ("N", 4, 8, 8)
    assert summary.ir_version == 8
    assert summary.opsets == {"": 17}
    data = summary.to_dict()
    assert data["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 3, 8, 8]}]
    assert data["quantization"] == "none"


@pytest.mark.parametrize("batch", [1, 4])
def test_summarize_does_not_modify_model(batch: int) -> None:
    model = conv_model()
    summarize(model, batch=batch)
    assert model.graph.inputs[0].shape == ir.Shape(["N", 3, 8, 8])
