from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelport.deploy.example import example_calibration, example_model
from modelport.errors import ConfigError, QuantizationError
from modelport.quantize import int8, ranges
from modelport.quantize.sensitivity import LayerQuantizer, SignalProbe, layer_sensitivity

Feeds = dict[str, np.ndarray[Any, Any]]

FEATURES, HIDDEN, CLASSES = 16, 32, 10
OUTLIER = 1000.0


def _attrs(op: str) -> dict[str, Any]:
    return {"transB": 1} if op == "Gemm" else {}


def outlier_mlp(*, outlier: float = OUTLIER, seed: int = 0, names: bool = True) -> ir.Model:
    """``x[batch, 16] -> fc1 -> relu1 -> fc2 -> relu2 -> fc3 -> logits[batch, 10]`` (Gemm / Relu).

    Feature 0 of ``x`` is ``outlier`` times larger than the others (a raw, unnormalised feature) and
    fc1's weights for it are ``outlier`` times smaller, so FP32 uses it like any other feature. One
    per-tensor INT8 scale for ``x`` then has a step of about 6 * outlier / 255 and rounds every other
    feature to zero. Only fc1 reads ``x``, so fc1 is the one layer whose quantization ruins the output.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((HIDDEN, FEATURES)) / np.sqrt(FEATURES)
    w1[:, 0] /= outlier
    weights = {
        "w1": w1,
        "b1": np.full(HIDDEN, 0.1),
        "w2": rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN),
        "b2": rng.standard_normal(HIDDEN) * 0.1,
        "w3": rng.standard_normal((CLASSES, HIDDEN)) / np.sqrt(HIDDEN),
        "b3": rng.standard_normal(CLASSES) * 0.1,
    }
    layers = [("Gemm", ["x", "w1", "b1"], "h1", "fc1"), ("Relu", ["h1"], "a1", "relu1")]
    layers += [("Gemm", ["a1", "w2", "b2"], "h2", "fc2"), ("Relu", ["h2"], "a2", "relu2")]
    layers += [("Gemm", ["a2", "w3", "b3"], "logits", "fc3")]
    nodes = [
        helper.make_node(op, inputs, [out], name=name if names else "", **_attrs(op))
        for op, inputs, out, name in layers
    ]
    graph = helper.make_graph(
        nodes,
        "outlier_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(a.astype(np.float32), n) for n, a in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return ir.serde.deserialize_model(proto)


def mlp_samples(count: int, *, seed: int = 1, outlier: float = OUTLIER) -> list[Feeds]:
    x = np.random.default_rng(seed).standard_normal((count, FEATURES)).astype(np.float32)
    x[:, 0] *= outlier
    return [{"x": x[i : i + 1]} for i in range(count)]


CALIB = mlp_samples(32)


def test_the_outlier_layer_ranks_first_by_a_wide_margin() -> None:
    table = layer_sensitivity(outlier_mlp(), CALIB)
    assert [row.node for row in table.rows[:1]] == ["fc1"]
    assert {row.node: row.op_type for row in table.rows} == {
        "fc1": "Gemm",
        "relu1": "Relu",
        "fc2": "Gemm",
        "relu2": "Relu",
        "fc3": "Gemm",
    }
    fc1, second = table.rows[0], table.rows[1]
    assert fc1.sqnr_db < 5.0  # fc1 alone in INT8 destroys the output
    assert fc1.cosine < 0.9
    assert second.node in ("fc2", "fc3")
    assert second.sqnr_db > 30.0  # every other layer alone is harmless
    assert second.sqnr_db - fc1.sqnr_db > 25.0
    assert table.full_int8.sqnr_db < 5.0
    assert table.full_int8.worst_output == "logits"
    # A Relu alone quantizes nothing (its input is FP32), so it changes no output: ranked last.
    assert [row.node for row in table.rows[3:]] == ["relu1", "relu2"]
    assert all(math.isinf(row.sqnr_db) and row.max_abs == 0.0 for row in table.rows[3:])
    assert table.most_sensitive(1) == ["fc1"]
    assert table.most_sensitive(9) == [row.node for row in table.rows]
    assert table.rank("fc1") == 1
    assert table.row("fc1") is fc1
    assert table.eval_samples == len(CALIB)
    data = json.loads(json.dumps(table.to_dict()))
    assert data["rows"][0]["node"] == "fc1"
    assert data["rows"][-1]["sqnr_db"] == "inf"


def test_selected_layers_on_separate_eval_samples_report_progress() -> None:
    seen: list[tuple[int, int]] = []
    eval_samples = mlp_samples(8, seed=7)
    table = layer_sensitivity(
        outlier_mlp(),
        CALIB,
        eval_samples=eval_samples,
        layers=["fc3", "fc2"],
        progress=lambda d, t: seen.append((d, t)),
    )
    assert sorted(row.node for row in table.rows) == ["fc2", "fc3"]
    assert seen == [(1, 2), (2, 2)]
    assert table.eval_samples == 8
    assert all(25.0 < row.sqnr_db < 80.0 and row.cosine > 0.999 for row in table.rows)
    assert table.rows[0].sqnr_db <= table.rows[1].sqnr_db


def test_calibration_runs_once_and_precomputed_ranges_are_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ranges.collect_ranges
    calls: list[tuple[str, dict[str, Any]]] = []

    def counting(*args: Any, **kwargs: Any) -> ranges.RangeSet:
        calls.append((kwargs["method"], {k: v for k, v in kwargs.items() if k != "method"}))
        return real(*args, **kwargs)

    monkeypatch.setattr(ranges, "collect_ranges", counting)
    model = outlier_mlp()
    layer_sensitivity(model, CALIB[:8], method="percentile", calibration_options={"percentile": 99.0})
    assert calls == [("percentile", {"percentile": 99.0})]  # one calibration for 5 layers + full INT8
    calls.clear()
    calibrated = layer_sensitivity(model, CALIB)
    precomputed = layer_sensitivity(model, [], ranges=real(model, CALIB), eval_samples=CALIB)
    assert len(calls) == 1  # the first call only; precomputed ranges are not recalibrated
    assert [(r.node, r.sqnr_db, r.cosine) for r in precomputed.rows] == [
        (r.node, r.sqnr_db, r.cosine) for r in calibrated.rows
    ]
    assert precomputed.full_int8 == calibrated.full_int8


def test_a_layer_whose_int8_variant_fails_is_a_row_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    real = int8.StaticQuantizer.quantize

    def flaky(self: int8.StaticQuantizer, *args: Any, **kwargs: Any) -> ir.Model:
        if kwargs.get("nodes_to_quantize") == ["fc2"]:  # fc2 alone
            raise QuantizationError("ONNX Runtime static quantization failed: fc2 refused")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(int8.StaticQuantizer, "quantize", flaky)
    table = layer_sensitivity(outlier_mlp(), CALIB[:8], layers=["fc1", "fc2", "fc3"])
    assert [row.node for row in table.rows] == ["fc1", "fc3", "fc2"]  # the failed row comes last
    failed = table.rows[-1]
    assert not failed.measured
    assert failed.error is not None and "fc2 refused" in failed.error
    assert math.isnan(failed.sqnr_db)
    assert "failed" in failed.describe()


def test_unnamed_nodes_are_named_so_they_can_be_ranked() -> None:
    table = layer_sensitivity(outlier_mlp(names=False), CALIB[:8])
    assert table.rows[0].node == "Gemm_0"
    assert sorted(row.node for row in table.rows) == ["Gemm_0", "Gemm_2", "Gemm_4", "Relu_1", "Relu_3"]


def test_a_cnn_ranks_its_convolutions() -> None:
    model = example_model(size=32, width=8)
    calib = [{"image": x[None]} for x in example_calibration(4, size=32)]
    convs = [node.name or "" for node in model.graph if node.op_type == "Conv"][:3]
    table = layer_sensitivity(model, calib, layers=convs)
    assert sorted(row.node for row in table.rows) == sorted(convs)
    assert all(row.measured and row.op_type == "Conv" for row in table.rows)
    # One convolution in INT8 costs less than all of them together.
    assert all(row.sqnr_db > table.full_int8.sqnr_db for row in table.rows)
    assert table.full_int8.sqnr_db > 15.0


def test_the_reference_against_itself_is_exact() -> None:
    model = outlier_mlp()
    error = SignalProbe(model, CALIB[:4]).measure(model)
    assert math.isinf(error.sqnr_db) and error.sqnr_db > 0
    assert error.cosine == pytest.approx(1.0, abs=1e-12)
    assert error.max_abs == 0.0


def _unary(op: str) -> ir.Model:
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], name=op.lower())],
        op,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return ir.serde.deserialize_model(proto)


def test_nan_where_fp32_is_finite_is_the_worst_error() -> None:
    samples = [{"x": np.array([[4.0, -1.0, 9.0, 0.25]], np.float32)}]
    error = SignalProbe(_unary("Abs"), samples).measure(_unary("Sqrt"))  # sqrt(-1) is NaN
    assert error.sqnr_db == -math.inf
    assert math.isnan(error.cosine)
    assert error.max_abs == math.inf
    close = SignalProbe(_unary("Abs"), [{"x": np.abs(samples[0]["x"])}]).measure(_unary("Identity"))
    assert close.sqnr_db == math.inf and close.max_abs == 0.0


def test_errors() -> None:
    model = outlier_mlp()
    with pytest.raises(QuantizationError, match="needs calibration samples"):
        layer_sensitivity(model, [])
    with pytest.raises(ConfigError, match=r"names node 'fc9', which is not in the model's graph — did you mean"):
        layer_sensitivity(model, CALIB[:2], layers=["fc9"])
    with pytest.raises(ConfigError, match=r"'relu1' \(Relu\) is not quantized by these settings"):
        LayerQuantizer(model, CALIB[:2], nodes_to_exclude=["relu1"]).resolve(["relu1"])
    with pytest.raises(ConfigError, match="quantize option names node 'nope'"):
        LayerQuantizer(model, CALIB[:2], nodes_to_exclude=["nope"])
    with pytest.raises(QuantizationError, match="needs evaluation samples"):
        layer_sensitivity(model, CALIB[:2], eval_samples=[])
    quantized = int8.quantize_static(model, CALIB[:2])
    with pytest.raises(QuantizationError, match=r"already quantized \(QDQ\)"):
        layer_sensitivity(quantized, CALIB[:2])
    table = layer_sensitivity(model, CALIB[:2], layers=["fc3"])
    with pytest.raises(ConfigError, match="k >= 0"):
        table.most_sensitive(-1)
    with pytest.raises(ConfigError, match="'fc2' is not in the sensitivity table"):
        table.rank("fc2")
