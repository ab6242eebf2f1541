"""FP16: float32 I/O, the fixed block list, the measured range check, and advice decided by measurement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.bench.harness import BenchResult
from modelport.errors import ConfigError, QuantizationError
from modelport.ir.serde import check_model
from modelport.quantize import dynamic, fp16
from modelport.quantize.fp16 import (
    BLOCK_REASONS,
    LARGE_REDUCTION,
    convert_fp16,
    fp16_advice,
    fp16_range_check,
    to_fp16,
)
from modelport.runners.onnxruntime import OrtRunner

FLOAT, FLOAT16 = ir.DataType.FLOAT, ir.DataType.FLOAT16
Array = np.ndarray[Any, Any]


def _model(
    nodes: list[Any], inputs: list[Any], outputs: list[Any], weights: dict[str, np.ndarray[Any, Any]]
) -> ir.Model:
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        nodes, "g", inputs, outputs, [numpy_helper.from_array(w, name) for name, w in weights.items()]
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return ir.serde.deserialize_model(proto)


def _io(name: str, shape: list[Any], dtype: int | None = None) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, dtype or TensorProto.FLOAT, shape)


def _overflow_model() -> ir.Model:
    """``big = x @ W`` reaches 1.6e5 (beyond FP16), ``y = big * 1e-3`` is back in range; ``z`` is tame.

    ``peak = Max(big, big)`` reads one tensor twice in a node ONNX Runtime's converter always blocks.
    """
    from onnx import helper

    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "w"], ["big"], name="big_matmul"),
        n("Mul", ["big", "milli"], ["y"], name="scale_down"),
        n("Max", ["big", "big"], ["peak"], name="self_max"),
        n("Mul", ["peak", "milli"], ["p"], name="scale_peak"),
        n("Relu", ["x"], ["r"], name="relu"),
        n("Add", ["r", "one"], ["z"], name="add_one"),
    ]
    weights = {"w": np.full((16, 16), 1e4, np.float32), "milli": np.array(1e-3, np.float32)}
    weights["one"] = np.array(1.0, np.float32)
    outputs = [_io("y", [1, 16]), _io("p", [1, 16]), _io("z", [1, 16])]
    return _model(nodes, [_io("x", [1, 16])], outputs, weights)


def _fp16_faithful(model: ir.Model, feeds: dict[str, Any]) -> list[Any]:
    """Run in ONNX's reference evaluator, which computes FP16 in FP16 as GPU kernels do.

    ONNX Runtime's x86 CPU provider runs FP16 graphs in FP32 internally (an all-FP16 graph gives
    300 * 300 = 90000, not inf), so an overflow there never shows.
    """
    import onnx
    from onnx.reference import ReferenceEvaluator

    from modelport.ir.serde import to_bytes

    with np.errstate(over="ignore", invalid="ignore"):
        return list(ReferenceEvaluator(onnx.load_from_string(to_bytes(model))).run(None, feeds))


def _underflow_model() -> ir.Model:
    """``tiny = x * 1e-9`` is all below FP16's smallest subnormal; ``y = tiny * 1e9`` gives x back."""
    from onnx import helper

    n = helper.make_node
    nodes = [n("Mul", ["x", "nano"], ["tiny"], name="shrink"), n("Mul", ["tiny", "giga"], ["y"], name="grow")]
    weights = {"nano": np.array(1e-9, np.float32), "giga": np.array(1e9, np.float32)}
    return _model(nodes, [_io("x", [2, 8])], [_io("y", [2, 8])], weights)


def _block_list_model() -> ir.Model:
    """One op of each kind the fixed list blocks, a large and a small ReduceMean, and a MatMul that converts."""
    from onnx import TensorProto, helper

    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "w"], ["h"], name="matmul"),
        n("Exp", ["h"], ["e"], name="exp"),
        n("Softmax", ["e"], ["s"], name="softmax", axis=-1),
        n("LayerNormalization", ["s", "gamma", "beta"], ["ln"], name="layernorm", axis=-1),
        n("Erf", ["ln"], ["erf"], name="erf"),
        n("ReduceMean", ["big"], ["big_mean"], name="mean_large", axes=[1], keepdims=0),
        n("ReduceMean", ["erf"], ["small_mean"], name="mean_small", axes=[1], keepdims=0),
        n("Gather", ["table", "ids"], ["rows"], name="lookup", axis=0),
    ]
    weights = {
        "w": (np.random.default_rng(0).standard_normal((8, 8)) * 0.1).astype(np.float32),
        "gamma": np.ones(8, np.float32),
        "beta": np.zeros(8, np.float32),
        "table": np.arange(12, dtype=np.float32).reshape(4, 3),
    }
    inputs = [_io("x", ["batch", 8]), _io("big", ["batch", LARGE_REDUCTION]), _io("ids", ["batch"], TensorProto.INT64)]
    outputs = [_io("small_mean", ["batch"]), _io("big_mean", ["batch"]), _io("rows", ["batch", 3])]
    return _model(nodes, inputs, outputs, weights)


def _run(model: ir.Model, feeds: dict[str, Any]) -> dict[str, Any]:
    with OrtRunner(model) as runner:
        return runner.infer(feeds)


def _node(model: ir.Model, name: str) -> ir.Node:
    return next(n for n in model.graph if n.name == name)


def _input_dtypes(model: ir.Model, name: str) -> list[ir.DataType | None]:
    return [v.dtype for v in _node(model, name).inputs if v is not None]


ONES: dict[str, Array] = {"x": np.ones((1, 16), np.float32)}
BLOCK_FEEDS: dict[str, Array] = {
    "x": np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32),
    "big": np.random.default_rng(2).standard_normal((2, LARGE_REDUCTION)).astype(np.float32),
    "ids": np.array([3, 1], np.int64),
}


# --------------------------------------------------------------------------------------------------


def test_io_types_stay_float32_and_other_types_stay_theirs() -> None:
    model = to_fp16(_block_list_model(), feeds=BLOCK_FEEDS)
    assert [v.dtype for v in model.graph.inputs] == [FLOAT, FLOAT, ir.DataType.INT64]
    assert [v.dtype for v in model.graph.outputs] == [FLOAT, FLOAT, FLOAT]
    got = _run(model, BLOCK_FEEDS)
    assert {k: v.dtype for k, v in got.items()} == {k: np.dtype(np.float32) for k in got}
    np.testing.assert_array_equal(got["rows"], [[9, 10, 11], [3, 4, 5]])  # small integers: exact in FP16


def test_fixed_block_list_keeps_range_sensitive_ops_in_fp32() -> None:
    conversion = convert_fp16(_block_list_model(), check_range=False)
    model = conversion.model
    for name in ("exp", "softmax", "layernorm", "erf", "mean_large"):
        assert name in conversion.blocked
        assert _input_dtypes(model, name)[0] == FLOAT, name
    assert _input_dtypes(model, "matmul") == [FLOAT16, FLOAT16]  # not on the list: converted
    assert _input_dtypes(model, "mean_small") == [FLOAT16]  # reduces 8 elements only
    assert "mean_small" not in conversion.blocked and "matmul" not in conversion.blocked
    assert conversion.blocked["exp"] == BLOCK_REASONS["Exp"]
    assert f"sums {LARGE_REDUCTION} elements" in conversion.blocked["mean_large"]
    assert _input_dtypes(model, "layernorm")[1:] == [FLOAT, FLOAT]  # its weights stay FP32 too
    # exp -> softmax -> layernorm -> erf: all FP32, no lossy FP16 round trip in between, names kept.
    for name, source, tensor in (("softmax", "exp", "e"), ("layernorm", "softmax", "s"), ("erf", "layernorm", "ln")):
        value = _node(model, name).inputs[0]
        assert value is not None and value.name == tensor
        producer = value.producer()
        assert producer is not None and producer.name == source
    check_model(model, full=True)
    ref, got = _run(_block_list_model(), BLOCK_FEEDS), _run(model, BLOCK_FEEDS)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=5e-3, atol=5e-3)


def test_an_empty_block_list_converts_those_ops() -> None:
    conversion = convert_fp16(_block_list_model(), block_list=(), check_range=False)
    assert _input_dtypes(conversion.model, "exp") == [FLOAT16]
    assert "exp" not in conversion.blocked
    assert "mean_large" in conversion.blocked  # the reduction rule is separate from the op list


def test_naive_conversion_overflows_and_the_range_check_prevents_it() -> None:
    fp32 = _run(_overflow_model(), ONES)
    naive = _fp16_faithful(to_fp16(_overflow_model(), check_range=False), ONES)
    assert np.isinf(naive[0]).all() and np.isinf(naive[1]).all()  # 1.6e5 does not fit FP16

    conversion = convert_fp16(_overflow_model(), feeds=ONES)
    check = conversion.range_check
    assert check is not None
    assert [(f.tensor, f.node, f.problem) for f in check.findings] == [
        ("big", "big_matmul", "overflow"),
        ("peak", "self_max", "overflow"),
    ]
    assert check.findings[0].max_abs == pytest.approx(1.6e5)
    assert set(check.blocked) == {"big_matmul", "scale_down", "self_max", "scale_peak"}  # producers and readers
    assert "reaches |x| = 1.6e+05" in conversion.blocked["big_matmul"]
    assert conversion.blocked["scale_down"].startswith("reads 'big'")
    assert _input_dtypes(conversion.model, "add_one") == [FLOAT16, FLOAT16]  # the tame branch converts
    check_model(conversion.model, full=True)
    faithful = _fp16_faithful(conversion.model, ONES)
    got = _run(conversion.model, ONES)
    for i, name in enumerate(("y", "p")):
        assert np.isfinite(faithful[i]).all() and np.isfinite(got[name]).all()
        np.testing.assert_allclose(faithful[i], fp32[name], rtol=1e-6, atol=0)
        np.testing.assert_allclose(got[name], fp32[name], rtol=1e-6, atol=0)
    np.testing.assert_allclose(got["z"], fp32["z"], rtol=1e-3, atol=0)


def test_underflow_is_found_and_blocked() -> None:
    feeds = {"x": np.random.default_rng(3).uniform(1, 2, (2, 8)).astype(np.float32)}
    naive = _run(to_fp16(_underflow_model(), check_range=False), feeds)
    assert not np.allclose(naive["y"], feeds["x"], rtol=1e-2)  # 1e-9 is lost in FP16
    conversion = convert_fp16(_underflow_model(), feeds=feeds)
    check = conversion.range_check
    assert check is not None
    problems = {(f.tensor, f.problem) for f in check.findings}
    assert ("tiny", "underflow") in problems and ("nano", "underflow") in problems
    assert ("giga", "overflow") in problems  # a weight beyond FP16, found without a run
    assert {"shrink", "grow"} <= set(check.blocked)
    np.testing.assert_allclose(_run(conversion.model, feeds)["y"], feeds["x"], rtol=1e-6)


def test_range_check_marks_few_tensors_at_a_time() -> None:
    samples = [BLOCK_FEEDS, {**BLOCK_FEEDS, "x": BLOCK_FEEDS["x"] * 3}]
    whole = fp16_range_check(_block_list_model(), samples, chunk=64)
    chunked = fp16_range_check(_block_list_model(), samples, chunk=2)
    float_outputs = 8  # h, e, s, ln, erf, big_mean, small_mean, rows
    assert chunked.runs == float_outputs // 2 and chunked.most_marked == 2
    assert whole.runs == 1 and whole.most_marked == float_outputs
    assert chunked.samples == whole.samples == 2
    assert chunked.findings == whole.findings
    assert chunked.tensors_checked == whole.tensors_checked


def test_headroom_lowers_the_limit() -> None:
    feeds = {"x": np.full((1, 16), 0.25, np.float32)}  # big = 4e4: fits FP16, but not with headroom 2
    assert fp16_range_check(_overflow_model(), feeds, headroom=1.0).findings == []
    check = fp16_range_check(_overflow_model(), feeds, headroom=2.0)
    assert check.limit == 32752.0
    assert [f.tensor for f in check.findings] == ["big", "peak"]


def _bench(name: str, median_ms: float) -> BenchResult:
    ms = median_ms
    return BenchResult(name, 1, 20, 3, 1.0, ms, ms, ms, ms, ms, ms, ms, 0.0, 0.0, 1e3 / ms)


def _fake(monkeypatch: pytest.MonkeyPatch, fp32_ms: float, fp16_ms: float, flags: frozenset[str]) -> None:
    def fake(runners: Sequence[Any], feeds: Any, **_: Any) -> list[BenchResult]:
        return [_bench(runners[0].name, fp32_ms), _bench(runners[1].name, fp16_ms)]

    monkeypatch.setattr(dynamic, "bench_interleaved", fake)
    monkeypatch.setattr(fp16, "cpu_flags", lambda: flags)


def test_advice_on_a_cpu_without_fp16_compute_says_slower_with_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(monkeypatch, fp32_ms=10.0, fp16_ms=20.0, flags=frozenset({"avx2", "f16c"}))
    advice = fp16_advice(_overflow_model(), feeds=ONES)
    assert advice.recommended is False
    assert advice.speedup == pytest.approx(0.5)
    text = advice.summary()
    assert "SLOWER than FP32 on this machine: FP16 20.00 ms vs FP32 10.00 ms (0.50x" in text
    assert "this CPU has no FP16 arithmetic" in text
    assert advice.cpu_fp16 == []


def test_advice_recommends_only_what_is_faster_and_accurate(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(monkeypatch, fp32_ms=10.0, fp16_ms=5.0, flags=frozenset({"avx512_fp16"}))
    advice = fp16_advice(_overflow_model(), feeds=ONES)
    assert advice.recommended is True
    assert advice.cpu_fp16 == ["avx512_fp16"]
    assert advice.reasons == [
        "faster than FP32: FP16 5.00 ms vs FP32 10.00 ms (2.00x; median, batch 1, CPUExecutionProvider)"
    ]
    # Faster but inaccurate: without the range check the 1e-9 and 1e9 weights are clamped to FP16.
    feeds = {"x": np.random.default_rng(3).uniform(1, 2, (2, 8)).astype(np.float32)}
    broken = fp16_advice(_underflow_model(), feeds=feeds, check_range=False)
    assert broken.recommended is False
    assert broken.measurement.speedup == pytest.approx(2.0)
    assert any(r.startswith("below the FP16 accuracy floor (SQNR >= 40 dB, cosine >= 0.9999)") for r in broken.reasons)
    fixed = fp16_advice(_underflow_model(), feeds=feeds)
    assert fixed.recommended is True


def test_advice_measures_for_real_and_is_consistent() -> None:
    advice = fp16_advice(_block_list_model(), feeds=BLOCK_FEEDS, seconds=0.3)
    m = advice.measurement
    assert advice.speedup == pytest.approx(advice.fp32_ms / advice.fp16_ms, rel=1e-12)
    assert m.nonfinite == 0 and m.worst_cosine > 0.999
    accurate = advice.floor.check(m.worst_sqnr_db, m.worst_cosine) is None
    assert advice.recommended is (advice.speedup >= fp16.MIN_SPEEDUP and accurate)
    assert f"FP16 {advice.fp16_ms:.2f} ms vs FP32 {advice.fp32_ms:.2f} ms" in advice.summary()
    assert advice.to_dict()["conversion"]["blocked"] == advice.conversion.blocked


def test_errors() -> None:
    with pytest.raises(QuantizationError, match="node_block_list names nodes the model does not have: nope"):
        convert_fp16(_overflow_model(), node_block_list=["nope"], check_range=False)
    with pytest.raises(QuantizationError, match="empty list of samples"):
        fp16_range_check(_overflow_model(), [])
    with pytest.raises(ConfigError, match="chunk must be >= 1"):
        fp16_range_check(_overflow_model(), ONES, chunk=0)
    with pytest.raises(ConfigError, match="headroom must be >= 1"):
        fp16_range_check(_overflow_model(), ONES, headroom=0.5)
    with pytest.raises(ConfigError, match=r"underflow_fraction must be in \(0, 1\]"):
        fp16_range_check(_overflow_model(), ONES, underflow_fraction=0.0)
    with pytest.raises(ConfigError, match="seconds > 0"):
        fp16_advice(_overflow_model(), feeds=ONES, seconds=0)


def test_node_block_list_keeps_a_named_node_in_fp32() -> None:
    conversion = convert_fp16(_overflow_model(), node_block_list=["add_one"], check_range=False)
    assert conversion.blocked["add_one"] == "named in node_block_list"
    assert _input_dtypes(conversion.model, "add_one") == [FLOAT, FLOAT]
