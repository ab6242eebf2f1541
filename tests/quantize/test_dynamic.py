"""Dynamic INT8: MatMul-heavy models quantized and accurate, conv-heavy models refused with numbers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.bench.harness import BenchResult
from modelport.errors import ConfigError, QuantizationError
from modelport.quantize import dynamic
from modelport.quantize.dynamic import (
    MIN_SPEEDUP,
    advise_dynamic,
    quantize_dynamic,
    workload_profile,
)
from modelport.runners.onnxruntime import OrtRunner

RNG = np.random.default_rng(0)


def _model(
    nodes: list[Any], inputs: list[Any], outputs: list[Any], weights: dict[str, np.ndarray[Any, Any]]
) -> ir.Model:
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        nodes, "g", inputs, outputs, [numpy_helper.from_array(w, name) for name, w in weights.items()]
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return ir.serde.deserialize_model(proto)


def _w(*shape: int, scale: float = 0.1) -> np.ndarray[Any, Any]:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _ffn() -> ir.Model:
    """A transformer FFN block (MatMul + bias, GELU-free ReLU, residual, LayerNorm) and a Gemm pooler."""
    from onnx import TensorProto, helper

    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "w_up"], ["up"], name="up"),
        n("Add", ["up", "b_up"], ["up_b"], name="up_bias"),
        n("Relu", ["up_b"], ["act"], name="act"),
        n("MatMul", ["act", "w_down"], ["down"], name="down"),
        n("Add", ["down", "b_down"], ["down_b"], name="down_bias"),
        n("Add", ["down_b", "x"], ["res"], name="residual"),
        n("LayerNormalization", ["res", "gamma", "beta"], ["hidden"], name="norm", axis=-1),
        n("ReduceMean", ["hidden"], ["pooled"], name="pool", axes=[1], keepdims=0),
        n("Gemm", ["pooled", "w_cls", "b_cls"], ["logits"], name="cls", transB=1),
        n("Identity", ["w_cls"], ["w_cls_copy"], name="keep_w_cls"),  # shares the Gemm's weight
    ]
    f = TensorProto.FLOAT
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", f, ["batch", 16, 64])],
        [
            helper.make_tensor_value_info("hidden", f, ["batch", 16, 64]),
            helper.make_tensor_value_info("logits", f, ["batch", 10]),
            helper.make_tensor_value_info("w_cls_copy", f, [10, 64]),
        ],
        {
            "w_up": _w(64, 256),
            "b_up": _w(256),
            "w_down": _w(256, 64),
            "b_down": _w(64),
            "gamma": np.ones(64, np.float32),
            "beta": np.zeros(64, np.float32),
            "w_cls": _w(10, 64, scale=0.5),
            "b_cls": _w(10),
        },
    )


def _cnn() -> ir.Model:
    """Two 3x3 convolutions and a tiny classifier: almost all MACs in Conv."""
    from onnx import TensorProto, helper

    n = helper.make_node
    nodes = [
        n("Conv", ["image", "k1", "c1"], ["h1"], name="conv1", pads=[1, 1, 1, 1]),
        n("Relu", ["h1"], ["r1"], name="relu1"),
        n("Conv", ["r1", "k2", "c2"], ["h2"], name="conv2", pads=[1, 1, 1, 1]),
        n("Relu", ["h2"], ["r2"], name="relu2"),
        n("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        n("Flatten", ["p"], ["flat"], name="flatten"),
        n("Gemm", ["flat", "w", "b"], ["logits"], name="fc", transB=1),
    ]
    f = TensorProto.FLOAT
    return _model(
        nodes,
        [helper.make_tensor_value_info("image", f, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", f, ["batch", 10])],
        {
            "k1": _w(16, 3, 3, 3, scale=0.3),
            "c1": _w(16),
            "k2": _w(32, 16, 3, 3, scale=0.1),
            "c2": _w(32),
            "w": _w(10, 32, scale=0.3),
            "b": _w(10),
        },
    )


FFN = _ffn()
CNN = _cnn()
FFN_FEEDS = {"x": RNG.standard_normal((2, 16, 64)).astype(np.float32)}


def _ops(model: ir.Model) -> Counter[str]:
    return Counter(node.op_type for node in model.graph)


def _run(model: ir.Model, feeds: dict[str, Any]) -> dict[str, Any]:
    with OrtRunner(model) as runner:
        return runner.infer(feeds)


def _cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _bench(name: str, median_ms: float) -> BenchResult:
    ms = median_ms
    return BenchResult(name, 1, 20, 3, 1.0, ms, ms, ms, ms, ms, ms, ms, 0.0, 0.0, 1e3 / ms)


def _fake_timing(monkeypatch: pytest.MonkeyPatch, fp32_ms: float, int8_ms: float) -> None:
    def fake(runners: Sequence[Any], feeds: Any, **_: Any) -> list[BenchResult]:
        return [_bench(runners[0].name, fp32_ms), _bench(runners[1].name, int8_ms)]

    monkeypatch.setattr(dynamic, "bench_interleaved", fake)


# --------------------------------------------------------------------------------------------------


def test_matmul_heavy_model_is_quantized_and_accurate() -> None:
    quantized = quantize_dynamic(FFN)
    ops = _ops(quantized)
    assert ops["MatMulInteger"] == 3  # up, down, and the Gemm classifier rewritten as MatMul
    assert ops["DynamicQuantizeLinear"] >= 2
    assert ops["Gemm"] == 0 and ops["ConvInteger"] == 0
    got, ref = _run(quantized, FFN_FEEDS), _run(FFN, FFN_FEEDS)
    assert _cosine(got["hidden"], ref["hidden"]) >= 0.99
    assert _cosine(got["logits"], ref["logits"]) >= 0.99
    # The Gemm's weight is shared with another node: the rewrite must leave it untouched.
    np.testing.assert_array_equal(got["w_cls_copy"], ref["w_cls_copy"])


def test_op_types_and_exclusions_select_nodes() -> None:
    only_matmul = _ops(quantize_dynamic(FFN, op_types=("MatMul",)))
    assert only_matmul["MatMulInteger"] == 2 and only_matmul["MatMul"] == 1  # the Gemm, as MatMul + Add
    only_gemm = _ops(quantize_dynamic(FFN, op_types=("Gemm",)))
    assert only_gemm["MatMulInteger"] == 1 and only_gemm["MatMul"] == 2
    excluded = quantize_dynamic(FFN, nodes_to_exclude=["up", "cls"])
    assert _ops(excluded)["MatMulInteger"] == 1
    assert any(n.name == "up" and n.op_type == "MatMul" for n in excluded.graph)


def test_workload_profile_in_macs_and_in_weight_bytes() -> None:
    cnn = workload_profile(CNN, batch=2)
    assert cnn.basis == "MACs" and cnn.conv_heavy
    conv_macs = 2 * 32 * 32 * (16 * 3 * 9 + 32 * 16 * 9)
    assert cnn.conv == conv_macs
    assert cnn.matmul_weights == 2 * 10 * 32
    assert cnn.input_shapes == {"image": [2, 3, 32, 32]}
    assert "Conv >99.9%, MatMul/Gemm with constant weights <0.1%" in cnn.describe()
    assert "image=2x3x32x32" in cnn.describe()

    ffn = workload_profile(FFN, shapes={"x": (1, 16, 64)})
    assert not ffn.conv_heavy and ffn.conv == 0
    assert ffn.matmul_weights == 16 * 64 * 256 * 2 + 10 * 64

    unknown_rank = _ffn()
    unknown_rank.graph.inputs[0].shape = None  # nothing can be sized: fall back to weight bytes
    by_weights = workload_profile(unknown_rank)
    assert by_weights.basis == "weight bytes"
    assert by_weights.matmul_weights == 4 * (64 * 256 * 2 + 10 * 64)
    assert "MACs unknown" in by_weights.describe()


def test_conv_heavy_model_is_refused_with_its_profile() -> None:
    with pytest.raises(QuantizationError, match=r"conv-heavy model \(Conv >99\.9%.*GMACs.*only <0\.1% of the work"):
        advise_dynamic(CNN, measure=False)


def test_refusal_carries_the_measured_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_timing(monkeypatch, fp32_ms=2.0, int8_ms=3.0)
    with pytest.raises(QuantizationError, match=r"measured here: dynamic INT8 3\.00 ms vs FP32 2\.00 ms \(0\.67x"):
        advise_dynamic(CNN)


def test_conv_heavy_model_that_measured_faster_is_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_timing(monkeypatch, fp32_ms=4.0, int8_ms=2.0)
    advice = advise_dynamic(CNN)
    assert advice.refusal is None and not advice.forced
    assert advice.speedup == pytest.approx(2.0)
    assert advice.recommended is (advice.measurement is not None and advice.measurement.worst_cosine >= 0.99)


def test_slower_int8_is_reported_with_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_timing(monkeypatch, fp32_ms=1.0, int8_ms=1.25)
    advice = advise_dynamic(FFN, feeds=FFN_FEEDS)
    assert advice.recommended is False
    assert any("SLOWER than FP32" in w and "1.25 ms vs FP32 1.00 ms (0.80x" in w for w in advice.warnings)
    _fake_timing(monkeypatch, fp32_ms=1.0, int8_ms=0.95)
    advice = advise_dynamic(FFN, feeds=FFN_FEEDS)
    assert advice.recommended is False
    assert any(f"below the {MIN_SPEEDUP:g}x bar" in w for w in advice.warnings)


def test_forced_conv_model_is_quantized_and_measured() -> None:
    advice = advise_dynamic(CNN, force=True, op_types=("Conv", "MatMul", "Gemm"), seconds=0.3, batch=2)
    assert _ops(advice.model)["ConvInteger"] == 2
    assert advice.forced and advice.refusal is not None
    assert any(w.startswith("forced past a refusal: dynamic INT8 does not suit") for w in advice.warnings)
    m = advice.measurement
    assert m is not None and advice.fp32_ms is not None and advice.int8_ms is not None
    speedup = advice.speedup
    assert speedup is not None
    assert speedup == pytest.approx(advice.fp32_ms / advice.int8_ms, rel=1e-12)
    assert m.candidate.batch == 2 and m.reference.iterations >= 3 and m.candidate.iterations >= 3
    assert f"dynamic INT8 {advice.int8_ms:.2f} ms vs FP32 {advice.fp32_ms:.2f} ms" in advice.summary()
    assert advice.recommended is (speedup >= MIN_SPEEDUP and m.worst_cosine >= 0.99 and m.nonfinite == 0)
    slower = [w for w in advice.warnings if "SLOWER than FP32" in w]
    assert bool(slower) is (speedup < 1.0)
    assert advice.to_dict()["speedup"] == advice.speedup


def test_matmul_model_advice_is_measured_and_consistent() -> None:
    advice = advise_dynamic(FFN, feeds=FFN_FEEDS, seconds=0.3)
    m = advice.measurement
    assert m is not None and advice.speedup is not None
    assert advice.speedup == pytest.approx(m.reference.median_ms / m.candidate.median_ms, rel=1e-12)
    assert m.worst_cosine >= 0.99 and m.nonfinite == 0
    assert advice.recommended is (advice.speedup >= MIN_SPEEDUP)
    assert not advice.forced and advice.refusal is None
    assert advice.profile.matmul_weights_share > 0.99


def test_errors() -> None:
    with pytest.raises(QuantizationError, match="cannot quantize op types Relu"):
        quantize_dynamic(FFN, op_types=("MatMul", "Relu"))
    with pytest.raises(QuantizationError, match="op_types is empty"):
        quantize_dynamic(FFN, op_types=())
    with pytest.raises(QuantizationError, match="does not have: nope"):
        quantize_dynamic(FFN, nodes_to_exclude=["nope"])
    with pytest.raises(QuantizationError, match=r"already quantized \(integer \(dynamic\)\)"):
        quantize_dynamic(quantize_dynamic(FFN))
    with pytest.raises(QuantizationError, match="quantized nothing"):
        quantize_dynamic(CNN, op_types=("MatMul",))  # its only Gemm is not a MatMul
    with pytest.raises(ConfigError, match="seconds > 0, got 0"):
        advise_dynamic(FFN, feeds=FFN_FEEDS, seconds=0)


def test_the_side_by_side_sessions_stop_spinning_between_runs(spin_settings: Callable[[ModuleType], list[str]]) -> None:
    # Timed against each other, an idle session's spinning workers would take a core from the
    # other's window (see INTERLEAVED_ORT_CONFIG).
    seen = spin_settings(dynamic)
    advise_dynamic(FFN, feeds=FFN_FEEDS, seconds=0.1)
    assert seen == ["1", "1"]
