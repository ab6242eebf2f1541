"""Static INT8 QDQ from given ranges, node selection, numerics, and already-quantized (QAT) models."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelport.errors import QuantizationError
from modelport.ir.serde import to_bytes
from modelport.passes.manager import optimize
from modelport.quantize import hardware
from modelport.quantize import int8 as int8_module
from modelport.quantize.int8 import StaticQuantizer, check_qat, is_quantized, quantize_static, validate_qdq
from resnet_models import conv_names, resnet

Array = np.ndarray[Any, Any]
Ranges = dict[str, tuple[float, float]]

#: Output SQNR the per-channel U8S8 ResNet-like model must keep against FP32 (the issue's target).
SQNR_FLOOR_DB = 30.0


def _session(model: ir.Model) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(to_bytes(model), providers=["CPUExecutionProvider"])


def _run(model: ir.Model, feeds: dict[str, Array]) -> Array:
    return np.asarray(_session(model).run(None, feeds)[0])


def _minmax(model: ir.Model, feeds: dict[str, Array]) -> Ranges:
    """Hand-made MinMax ranges: every input and node output of the model, measured in ORT on ``feeds``."""
    probe = model.clone()
    listed = {v.name for v in probe.graph.outputs}
    for node in probe.graph:
        probe.graph.outputs.extend(v for v in node.outputs if v.name not in listed)
    session = _session(probe)
    ranges = {
        o.name: (float(a.min()), float(a.max()))
        for o, a in zip(session.get_outputs(), session.run(None, feeds), strict=True)
    }
    ranges.update({name: (float(a.min()), float(a.max())) for name, a in feeds.items()})
    return ranges


@pytest.fixture(scope="module")
def fp32() -> ir.Model:
    return optimize(resnet()).model


@pytest.fixture(scope="module")
def calib() -> dict[str, Array]:
    return {"image": np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)}


@pytest.fixture(scope="module")
def ranges(fp32: ir.Model, calib: dict[str, Array]) -> Ranges:
    return _minmax(fp32, calib)


@pytest.fixture(scope="module")
def int8(fp32: ir.Model, ranges: Ranges) -> ir.Model:
    return quantize_static(fp32, ranges=ranges, activation_type="uint8", reduce_range=False)


class FakeRanges:
    """Stands in for modelport.quantize.ranges: records collect_ranges calls and returns ``result``."""

    def __init__(self, result: Ranges) -> None:
        self.result = result
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def collect_ranges(self, model: ir.Model, samples: Any, **kwargs: Any) -> Any:
        self.calls.append((samples, kwargs))
        return types.SimpleNamespace(as_pairs=lambda: dict(self.result))


@pytest.fixture
def fake_ranges(monkeypatch: pytest.MonkeyPatch, ranges: Ranges) -> FakeRanges:
    fake = FakeRanges(ranges)
    module = types.ModuleType("modelport.quantize.ranges")
    module.collect_ranges = fake.collect_ranges  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelport.quantize.ranges", module)
    return fake


# --- helpers reading the quantized graph -------------------------------------------------------------------


def _const(value: ir.Value | None) -> Array:
    assert value is not None
    tensor = ir.convenience.get_const_tensor(value)
    assert tensor is not None, f"'{value.name}' is not a constant"
    return np.asarray(tensor.numpy())


def _quantize_node_of(model: ir.Model, tensor: str) -> ir.Node:
    nodes = [
        n
        for n in model.graph
        if n.op_type == "QuantizeLinear" and n.inputs[0] is not None and n.inputs[0].name == tensor
    ]
    assert len(nodes) == 1, f"expected one QuantizeLinear on '{tensor}', found {len(nodes)}"
    return nodes[0]


def _node(model: ir.Model, name: str) -> ir.Node:
    return next(n for n in model.graph if n.name == name)


def _dq_feeding(node: ir.Node, index: int) -> ir.Node | None:
    value = node.inputs[index]
    producer = value.producer() if value is not None else None
    return producer if producer is not None and producer.op_type == "DequantizeLinear" else None


def _quantized_compute_nodes(model: ir.Model) -> set[str]:
    """Nodes (other than Q/DQ) that read only DequantizeLinear outputs: the nodes that run quantized."""
    return {
        n.name or ""
        for n in model.graph
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and all(v is None or _dq_feeding(n, i) is not None for i, v in enumerate(n.inputs))
    }


def _quantized_tensors(model: ir.Model) -> set[str]:
    """Tensors a QuantizeLinear reads (activations; weights are stored quantized)."""
    return {n.inputs[0].name or "" for n in model.graph if n.op_type == "QuantizeLinear" and n.inputs[0] is not None}


def _weight_quantized(model: ir.Model) -> set[str]:
    """Conv / Gemm nodes whose weight is read through DequantizeLinear."""
    return {n.name or "" for n in model.graph if n.op_type in ("Conv", "Gemm") and _dq_feeding(n, 1) is not None}


def _weight(model: ir.Model, conv: str) -> Array:
    return _const(_node(model, conv).inputs[1])


def _sqnr_db(ref: Array, out: Array) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - out).astype(np.float64) ** 2)))


# --- scales and zero points reproduce the given ranges -----------------------------------------------------


def _ort_asymmetric(low: float, high: float, qmin: int, qmax: int) -> tuple[float, int]:
    """ORT's formula: the range is widened to include 0, scale=(rmax-rmin)/(qmax-qmin), zp=round(qmin-rmin/scale)."""
    rmin, rmax = min(float(np.float32(low)), 0.0), max(float(np.float32(high)), 0.0)
    scale = (rmax - rmin) / (qmax - qmin)
    return float(np.float32(scale)), round(qmin - rmin / scale)


@pytest.mark.parametrize(
    ("low", "high", "zero_point"),
    [(-1.0, 3.0, 64), (0.5, 2.0, 0), (-3.0, -1.0, 255)],
    ids=["straddles-zero", "positive-widened-to-zero", "negative-widened-to-zero"],
)
def test_asymmetric_uint8_activation_scale_and_zero_point(
    fp32: ir.Model, ranges: Ranges, low: float, high: float, zero_point: int
) -> None:
    model = quantize_static(fp32, ranges={**ranges, "image": (low, high)}, activation_type="uint8", reduce_range=False)
    q = _quantize_node_of(model, "image")
    scale, zp = _const(q.inputs[1]), _const(q.inputs[2])
    expected_scale, expected_zp = _ort_asymmetric(low, high, 0, 255)
    assert expected_zp == zero_point
    assert scale.shape == () and zp.shape == ()
    assert zp.dtype == np.uint8 and int(zp) == zero_point
    assert float(scale) == expected_scale
    np.testing.assert_allclose(float(scale), (max(high, 0) - min(low, 0)) / 255, rtol=1e-6)


def test_symmetric_and_asymmetric_int8_activations(fp32: ir.Model, ranges: Ranges) -> None:
    given = {**ranges, "image": (-1.0, 3.0)}
    sym = _quantize_node_of(
        quantize_static(fp32, ranges=given, activation_type="int8", activation_symmetric=True, reduce_range=False),
        "image",
    )
    assert _const(sym.inputs[2]).dtype == np.int8 and int(_const(sym.inputs[2])) == 0
    assert float(_const(sym.inputs[1])) == float(np.float32(2 * 3.0 / 254))  # [-127, 127], absmax 3
    asym = _quantize_node_of(quantize_static(fp32, ranges=given, activation_type="int8", reduce_range=False), "image")
    scale, zp = _ort_asymmetric(-1.0, 3.0, -128, 127)
    assert float(_const(asym.inputs[1])) == scale
    assert int(_const(asym.inputs[2])) == zp == -64


def _weight_dq(model: ir.Model, conv: str) -> ir.Node:
    dq = _dq_feeding(_node(model, conv), 1)
    assert dq is not None, f"the weight of '{conv}' is not quantized"
    return dq


def test_weight_scales_per_channel_and_per_tensor(fp32: ir.Model, ranges: Ranges, int8: ir.Model) -> None:
    conv = conv_names(fp32)[0]
    w = _weight(fp32, conv)
    absmax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    dq = _weight_dq(int8, conv)
    scale, zp, q = _const(dq.inputs[1]), _const(dq.inputs[2]), _const(dq.inputs[0])
    assert scale.shape == (w.shape[0],) and zp.shape == (w.shape[0],)
    assert dq.attributes.get_int("axis", 1) == 0
    assert q.dtype == np.int8 and zp.dtype == np.int8 and not zp.any()
    np.testing.assert_allclose(scale, absmax / 127, rtol=1e-6)  # symmetric: [-127, 127]
    dequantized = q.astype(np.float32) * scale[:, None, None, None]
    assert np.all(np.abs(dequantized - w) <= scale[:, None, None, None] / 2 * (1 + 1e-5))

    per_tensor = quantize_static(fp32, ranges=ranges, per_channel=False, activation_type="uint8", reduce_range=False)
    dq = _weight_dq(per_tensor, conv)
    assert _const(dq.inputs[1]).shape == ()
    np.testing.assert_allclose(float(_const(dq.inputs[1])), np.abs(w).max() / 127, rtol=1e-6)


def test_reduce_range_keeps_weights_to_7_bits(fp32: ir.Model, ranges: Ranges) -> None:
    model = quantize_static(fp32, ranges=ranges, activation_type="uint8", reduce_range=True)
    conv = conv_names(fp32)[0]
    w, dq = _weight(fp32, conv), _weight_dq(model, conv)
    np.testing.assert_allclose(_const(dq.inputs[1]), np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 64, rtol=1e-6)
    assert np.abs(_const(dq.inputs[0]).astype(np.int32)).max() <= 64


@pytest.mark.parametrize(
    ("flags", "activation", "weight_divisor"),
    [({"avx2", "avx512_vnni"}, np.uint8, 127), ({"sse2", "avx2"}, np.uint8, 64), ({"asimd", "asimddp"}, np.int8, 127)],
    ids=["x86-vnni", "x86-avx2", "arm-dot"],
)
def test_hardware_defaults_pick_the_format(
    fp32: ir.Model,
    ranges: Ranges,
    monkeypatch: pytest.MonkeyPatch,
    flags: set[str],
    activation: type,
    weight_divisor: int,
) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    model = quantize_static(fp32, ranges=ranges)
    assert _const(_quantize_node_of(model, "image").inputs[2]).dtype == activation
    conv = conv_names(fp32)[0]
    w = _weight(fp32, conv)
    np.testing.assert_allclose(
        _const(_weight_dq(model, conv).inputs[1]),
        np.abs(w).reshape(w.shape[0], -1).max(axis=1) / weight_divisor,
        rtol=1e-6,
    )


# --- which nodes are quantized -----------------------------------------------------------------------------


def test_nodes_to_quantize_one_conv_reuses_ranges(fp32: ir.Model, ranges: Ranges, fake_ranges: FakeRanges) -> None:
    conv = conv_names(fp32)[2]
    samples = [{"image": np.zeros((1, 3, 32, 32), np.float32)}]
    model = quantize_static(fp32, samples, ranges=ranges, nodes_to_quantize=[conv], reduce_range=False)
    assert fake_ranges.calls == []  # the given ranges are used as they are: no calibration run
    assert _weight_quantized(model) == {conv}
    assert _quantized_compute_nodes(model) == {conv}
    node = _node(fp32, conv)
    assert node.inputs[0] is not None
    assert _quantized_tensors(model) == {node.inputs[0].name, node.outputs[0].name}  # its input and output only
    assert validate_qdq(model) == []


def test_static_quantizer_prepares_once_per_model(
    fp32: ir.Model, ranges: Ranges, int8: ir.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared: list[ir.Model] = []
    real = int8_module._prepared_proto

    def counting(model: ir.Model) -> Any:
        prepared.append(model)
        return real(model)

    monkeypatch.setattr(int8_module, "_prepared_proto", counting)
    quantizer = StaticQuantizer(fp32)
    convs = conv_names(fp32)
    variants = {conv: quantizer.quantize(ranges, nodes_to_quantize=[conv], reduce_range=False) for conv in convs[:3]}
    full = quantizer.quantize(ranges, activation_type="uint8", reduce_range=False)
    assert len(prepared) == 1
    for conv, model in variants.items():  # each variant is its own model: later ones did not leak into it
        assert _weight_quantized(model) == {conv}
    assert to_bytes(full) == to_bytes(int8)  # the same model quantize_static builds


def test_nodes_to_exclude_and_op_types(fp32: ir.Model, ranges: Ranges, int8: ir.Model) -> None:
    convs = conv_names(fp32)
    assert _weight_quantized(int8) == {*convs, "fc"}
    assert {n.name for n in fp32.graph} - _quantized_compute_nodes(int8) <= {
        n.name for n in fp32.graph if n.op_type == "Relu"
    }
    excluded = quantize_static(fp32, ranges=ranges, nodes_to_exclude=[convs[0], "fc"], reduce_range=False)
    assert _weight_quantized(excluded) == set(convs[1:])
    assert not {convs[0], "fc"} & _quantized_compute_nodes(excluded)
    only_conv = quantize_static(fp32, ranges=ranges, op_types=["Conv"], reduce_range=False)
    assert _weight_quantized(only_conv) == set(convs)
    conv_tensors = {v.name for n in fp32.graph if n.op_type == "Conv" for v in (n.inputs[0], n.outputs[0]) if v}
    assert _quantized_tensors(only_conv) <= conv_tensors  # only Conv inputs and outputs are quantized


# --- numerics ----------------------------------------------------------------------------------------------


def test_quantized_resnet_keeps_output_sqnr(fp32: ir.Model, int8: ir.Model) -> None:
    held_out = {"image": np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)}
    ref, out = _run(fp32, held_out), _run(int8, held_out)
    sqnr = _sqnr_db(ref, out)
    assert sqnr >= SQNR_FLOOR_DB, f"INT8 output SQNR {sqnr:.1f} dB is below the {SQNR_FLOOR_DB} dB floor"
    cosine = float(np.sum(ref * out) / (np.linalg.norm(ref) * np.linalg.norm(out)))
    assert cosine >= 0.999
    assert not np.array_equal(ref, out)  # it really runs quantized


def test_output_of_quantize_static_is_well_formed(int8: ir.Model) -> None:
    assert validate_qdq(int8) == []
    summary = check_qat(int8)
    assert summary.kind == "QDQ" and summary.problems == []
    assert summary.pairs == summary.quantize_nodes > 0
    assert summary.per_axis == summary.types["int8"] + summary.types["int32"]  # per-channel weights and biases
    assert "uint8" in summary.types
    assert "QuantizeLinear" in summary.describe()


# --- errors ------------------------------------------------------------------------------------------------


def test_missing_range_names_the_tensors_and_the_fix(fp32: ir.Model, ranges: Ranges) -> None:
    partial = {k: v for k, v in ranges.items() if k != "image"}
    first = conv_names(fp32)[0]
    with pytest.raises(
        QuantizationError, match=rf"no calibration range for 1 tensor\(s\).*'image' \(input of '{first}'\)"
    ):
        quantize_static(fp32, ranges=partial)
    # the fix the message proposes works: that node stays float, the rest is quantized
    model = quantize_static(fp32, ranges=partial, nodes_to_exclude=[first])
    assert first not in _quantized_compute_nodes(model)
    assert conv_names(fp32)[1] in _quantized_compute_nodes(model)


def test_softmax_output_needs_no_range() -> None:
    """ORT fixes quantized Softmax outputs to [0, 1]; a ranges map without them must still work."""
    weights = ", ".join(str(round(float(v), 2)) for v in np.linspace(-1, 1, 32))
    model = ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 8] x) => (float[2, 4] y) <float[8, 4] w = {{{weights}}}> {{
          h = MatMul(x, w)
          y = Softmax<axis=1>(h)
        }}"""
    )
    for node in model.graph:
        node.name = node.op_type.lower()
    quantized = quantize_static(model, ranges={"x": (-1.0, 1.0), "h": (-2.0, 2.0)}, reduce_range=False)
    softmax = _node(quantized, "softmax")
    # ORT quantizes the Softmax output to the fixed [0, 1] range; as y is a graph output, that pair is
    # dropped again (float_outputs): the caller gets Softmax's float output, computed from the INT8 MatMul.
    assert softmax.outputs[0].is_graph_output() and softmax.outputs[0].name == "y"
    assert not list(softmax.outputs[0].uses())
    assert softmax.inputs[0] is not None and softmax.inputs[0].producer().op_type == "DequantizeLinear"  # type: ignore[union-attr]
    assert validate_qdq(quantized) == []


def test_graph_outputs_stay_float(fp32: ir.Model, ranges: Ranges) -> None:
    """No QuantizeLinear → DequantizeLinear pair ends at a graph output: the rounding would only add error."""
    from modelport.quantize.int8 import float_outputs

    quantized = quantize_static(fp32, ranges=ranges)
    for output in quantized.graph.outputs:
        producer = output.producer()
        assert producer is not None and producer.op_type not in ("DequantizeLinear", "QuantizeLinear")
        assert output.type == fp32.graph.outputs[0].type and output.shape == fp32.graph.outputs[0].shape
    assert float_outputs(quantized) == 0  # nothing left to drop
    assert validate_qdq(quantized) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nodes_to_quantize": []}, "nodes_to_quantize is empty"),
        ({"nodes_to_quantize": ["conv_404"]}, r"nodes_to_quantize names 1 node\(s\).*conv_404"),
        ({"nodes_to_exclude": ["nope"]}, r"nodes_to_exclude names 1 node\(s\).*'nope'"),
        ({"op_types": ["Conv", "Softplus"]}, r"op_types \['Softplus'\] are not quantizable"),
        ({"activation_type": "int4"}, "activation_type 'int4' is not supported"),
    ],
)
def test_bad_options(fp32: ir.Model, ranges: Ranges, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(QuantizationError, match=match):
        quantize_static(fp32, ranges=ranges, reduce_range=False, **kwargs)


def test_bad_ranges_and_no_data(fp32: ir.Model, ranges: Ranges) -> None:
    with pytest.raises(QuantizationError, match=r"1 calibration range\(s\) are not finite with low <= high: 'image'"):
        quantize_static(fp32, ranges={**ranges, "image": (0.0, float("nan"))})
    with pytest.raises(QuantizationError, match=r"not finite with low <= high: 'image': \(2.0, 1.0\)"):
        quantize_static(fp32, ranges={**ranges, "image": (2.0, 1.0)})
    with pytest.raises(QuantizationError, match="needs calibration samples or precomputed ranges"):
        quantize_static(fp32)
    with pytest.raises(QuantizationError, match="needs calibration samples or precomputed ranges"):
        quantize_static(fp32, [])


def test_per_channel_needs_opset_13(ranges: Ranges) -> None:
    old = optimize(resnet()).model
    old.opset_imports[""] = 12
    with pytest.raises(QuantizationError, match="per-channel QDQ needs opset 13 or later and the model has opset 12"):
        quantize_static(old, ranges=ranges)


def test_ranges_are_collected_when_not_given(fp32: ir.Model, fake_ranges: FakeRanges) -> None:
    samples = [{"image": np.zeros((1, 3, 32, 32), np.float32)}]
    model = quantize_static(
        fp32, samples, method="percentile", calibration_options={"percentile": 99.9}, reduce_range=False
    )
    assert fake_ranges.calls == [(samples, {"method": "percentile", "percentile": 99.9})]
    assert _weight_quantized(model) == {*conv_names(fp32), "fc"}


def test_end_to_end_with_collect_ranges(fp32: ir.Model, calib: dict[str, Array]) -> None:
    pytest.importorskip("modelport.quantize.ranges")
    samples = [{"image": calib["image"][i : i + 1]} for i in range(4)]
    model = quantize_static(fp32, samples, reduce_range=False)
    assert _sqnr_db(_run(fp32, calib), _run(model, calib)) >= SQNR_FLOOR_DB


# --- already-quantized (QAT) models ------------------------------------------------------------------------


def _init(name: str, array: Array | np.generic) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def qat_conv(seed: int = 0) -> ir.Model:
    """A Conv as torch QAT exports it: Q/DQ on the input and output, float weight through per-channel Q/DQ.

    Every Q and DQ has its own scale / zero-point initializers so a test can break one side of a pair; the
    bias is an int32 tensor through DequantizeLinear, as ONNX Runtime writes it.
    """
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((4, 3, 3, 3)) * 0.2).astype(np.float32)
    w_scale = (np.abs(w).reshape(4, -1).max(axis=1) / 127).astype(np.float32)
    x_scale, x_zp = np.float32(4.0 / 255), np.uint8(128)
    inits = [
        _init("w", w),
        _init("q_x_scale", x_scale),
        _init("q_x_zp", x_zp),
        _init("dq_x_scale", x_scale),
        _init("dq_x_zp", x_zp),
        _init("q_w_scale", w_scale),
        _init("q_w_zp", np.zeros(4, np.int8)),
        _init("dq_w_scale", w_scale),
        _init("dq_w_zp", np.zeros(4, np.int8)),
        _init("b_q", np.array([10, -20, 30, 0], np.int32)),
        _init("b_scale", (x_scale * w_scale).astype(np.float32)),
        _init("b_zp", np.zeros(4, np.int32)),
        _init("y_scale", np.float32(0.05)),
        _init("y_zp", np.uint8(100)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "q_x_scale", "q_x_zp"], ["x_q"], name="q_x"),
        helper.make_node("DequantizeLinear", ["x_q", "dq_x_scale", "dq_x_zp"], ["x_dq"], name="dq_x"),
        helper.make_node("QuantizeLinear", ["w", "q_w_scale", "q_w_zp"], ["w_q"], name="q_w", axis=0),
        helper.make_node("DequantizeLinear", ["w_q", "dq_w_scale", "dq_w_zp"], ["w_dq"], name="dq_w", axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b_dq"], name="dq_b", axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq", "b_dq"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zp"], ["y_q"], name="q_y"),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["out"], name="dq_y"),
    ]
    graph = helper.make_graph(
        nodes,
        "qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    return ir.serde.deserialize_model(proto)


def test_qat_model_is_accepted_as_it_is() -> None:
    model = qat_conv()
    assert is_quantized(model) and not is_quantized(optimize(resnet()).model)
    assert validate_qdq(model) == []
    summary = check_qat(model)
    assert (summary.quantize_nodes, summary.dequantize_nodes, summary.pairs) == (3, 4, 3)
    assert summary.quantized_weights == ["b_q", "w"]
    assert summary.quantized_activations == ["x", "y"]
    assert summary.quantized_nodes == ["conv"]
    assert summary.per_axis == 3  # q_w, dq_w and dq_b: one scale per output channel
    assert summary.types == {"int8": 1, "int32": 1, "uint8": 2}
    x = np.random.default_rng(2).uniform(-2, 2, (1, 3, 8, 8)).astype(np.float32)
    assert np.isfinite(_run(model, {"x": x})).all()  # ORT runs it as it is


def test_qat_model_is_not_quantized_again() -> None:
    with pytest.raises(QuantizationError, match=r"already quantized \(QDQ\)"):
        StaticQuantizer(qat_conv())
    with pytest.raises(
        QuantizationError,
        match=r"already quantized \(QDQ\): 3 QuantizeLinear / 4 DequantizeLinear .* modelport leaves "
        "quantization-aware-trained and pre-quantized models quantized as they are",
    ):
        quantize_static(qat_conv(), ranges={"x": (-1.0, 1.0)})


def _replace(name: str, array: Array | np.generic) -> Callable[[ir.Model], None]:
    def mutate(model: ir.Model) -> None:
        value = model.graph.initializers[name]
        value.const_value = ir.tensor(np.asarray(array), name=name)
        value.dtype = ir.DataType.from_numpy(np.asarray(array).dtype)
        value.shape = ir.Shape(np.asarray(array).shape)

    return mutate


def _set_axis(node_name: str, axis: int) -> Callable[[ir.Model], None]:
    def mutate(model: ir.Model) -> None:
        _node(model, node_name).attributes["axis"] = ir.AttrInt64("axis", axis)

    return mutate


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            _replace("dq_x_scale", np.float32(-0.02)),
            r"DequantizeLinear 'dq_x': scale has 1 value\(s\) that are not finite and > 0",
        ),
        (
            _replace("q_w_scale", np.full(4, np.nan, np.float32)),
            r"QuantizeLinear 'q_w': scale has 4 value\(s\) that are not finite",
        ),
        (_replace("dq_x_scale", np.float32(0.03)), r"'q_x' -> DequantizeLinear 'dq_x': scales differ"),
        (_replace("dq_x_zp", np.uint8(100)), r"'q_x' -> DequantizeLinear 'dq_x': zero points differ"),
        (_replace("dq_x_zp", np.int8(0)), r"'dq_x': quantized to uint8 but dequantized from int8"),
        (
            _replace("q_x_zp", np.float32(128)),
            r"QuantizeLinear 'q_x': zero point has type float, which is not a quantized",
        ),
        (_replace("b_zp", np.array([0, 3, 0, 0], np.int32)), r"'dq_b': an int32 \(bias\) zero point must be 0, not 3"),
        (_replace("b_zp", np.zeros(4, np.int8)), r"'dq_b': zero point is int8 but the quantized input is int32"),
        (_replace("dq_w_zp", np.zeros(3, np.int8)), r"'dq_w': zero point shape \[3\] differs from scale shape \[4\]"),
        (_set_axis("dq_w", 1), r"'dq_w': per-axis scale has 4 values but axis 1 of the input has 3 channels"),
        (
            _set_axis("dq_w", 1),
            r"'q_w' -> DequantizeLinear 'dq_w': quantized along axis 0 but dequantized along axis 1",
        ),
        (_set_axis("q_w", 7), r"QuantizeLinear 'q_w': axis 7 is out of range for an input of rank 4"),
        (
            _replace("q_w_scale", np.ones((4, 1), np.float32)),
            r"'q_w': scale has shape \[4, 1\] — it must be a scalar or 1-D",
        ),
    ],
)
def test_malformed_qdq_is_reported(mutate: Callable[[ir.Model], None], match: str) -> None:
    model = qat_conv()
    mutate(model)
    problems = validate_qdq(model)
    assert problems, "the broken model passed validation"
    with pytest.raises(QuantizationError, match=rf"the quantized model has {len(problems)} malformed .*{match}"):
        check_qat(model)
