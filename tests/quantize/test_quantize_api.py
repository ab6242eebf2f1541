from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.deploy.example import example_calibration
from modelport.errors import QuantizationError
from modelport.ir.serde import load
from modelport.ir.summary import quantization_kind
from modelport.passes.manager import optimize
from modelport.quantize.api import quantize, stack_samples


@pytest.fixture(scope="module")
def fp32(example_path: Path):  # type: ignore[no-untyped-def]
    return optimize(load(example_path)).model


CALIB = [{"image": x[None]} for x in example_calibration(16)]


def test_int8_static_is_qdq_accurate_and_timed(fp32) -> None:  # type: ignore[no-untyped-def]
    result = quantize(fp32, "int8-static", calibration=CALIB, bench_seconds=0.5)
    assert quantization_kind(result.model) == "QDQ"
    assert result.accuracy_failure is None
    assert result.worst_sqnr_db > 25.0
    assert result.worst_cosine > 0.999
    assert result.speedup is not None and result.speedup > 0
    assert [r.batch for r in result.comparison.runs] == [1, 8]
    assert result.settings["calibration_samples"] == 16


def test_fp16_keeps_io_float32_and_reports_speed(fp32) -> None:  # type: ignore[no-untyped-def]
    result = quantize(fp32, "fp16", bench_seconds=0.3)
    assert result.model.graph.inputs[0].dtype is not None
    assert result.model.graph.inputs[0].dtype.numpy() == np.float32
    assert result.worst_sqnr_db > 40.0
    if result.slower:  # on CPUs without FP16 compute it is slower, and it must say so
        assert any("SLOWER than FP32" in w for w in result.warnings)


def test_accuracy_floor_failure_is_reported(fp32) -> None:  # type: ignore[no-untyped-def]
    from modelport.verify.tolerance import SignalTolerance

    result = quantize(
        fp32,
        "int8-static",
        calibration=CALIB[:2],
        bench_seconds=0.2,
        floor=SignalTolerance(min_sqnr_db=200.0, min_cosine=0.99),
    )
    assert result.accuracy_failure is not None
    assert any("breaks the accuracy floor" in w for w in result.warnings)


def test_errors(fp32) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QuantizationError, match="int8-static needs calibration data"):
        quantize(fp32, "int8-static")
    with pytest.raises(QuantizationError, match="unknown mode"):
        quantize(fp32, "int4", calibration=CALIB)  # type: ignore[arg-type]


def test_stack_samples_cycles() -> None:
    stacked = stack_samples(CALIB[:3], 5)
    assert stacked["image"].shape == (5, 3, 96, 96)
    np.testing.assert_array_equal(stacked["image"][3], CALIB[0]["image"][0])


def test_an_already_quantized_model_is_validated_and_left_as_it_is(fp32) -> None:  # type: ignore[no-untyped-def]
    quantized = quantize(fp32, "int8-static", calibration=CALIB[:2], bench_seconds=0.1).model
    again = quantize(quantized, "int8-static", calibration=CALIB[:2])
    assert again.model is quantized
    assert again.qat is not None and again.qat.pairs > 0 and not again.qat.problems
    assert again.settings["kept_as_is"] is True
    assert any("already quantized" in w and "left as it is" in w for w in again.warnings)
    # ONNX Runtime's QLinear fusions keep the QAT model within the INT8 floor of its plain QDQ graph.
    assert again.accuracy_failure is None
    assert again.to_dict()["already_quantized"]["pairs"] == again.qat.pairs


def test_calibration_method_ranges_and_a_reader_function(fp32) -> None:  # type: ignore[no-untyped-def]
    minmax = quantize(fp32, "int8-static", calibration=CALIB[:8], bench_seconds=0.1)
    entropy = quantize(fp32, "int8-static", calibration=lambda: iter(CALIB[:8]), method="entropy", bench_seconds=0.1)
    assert minmax.ranges is not None and entropy.ranges is not None
    assert entropy.ranges.method == "entropy" and entropy.settings["calibration_samples"] == 8
    differing = [
        name
        for name, r in minmax.ranges.ranges.items()
        if (r.low, r.high) != (entropy.ranges.ranges[name].low, entropy.ranges.ranges[name].high)
    ]
    assert differing, "entropy calibration must not equal minmax"
    assert entropy.to_dict()["calibration"]["method"] == "entropy"


def test_sensitivity_table_and_budget(fp32) -> None:  # type: ignore[no-untyped-def]
    from modelport.quantize.mixed import AccuracyBudget

    table = quantize(fp32, "int8-static", calibration=CALIB[:4], sensitivity=True, bench_seconds=0.1).sensitivity
    assert table is not None and len(table.rows) >= 3
    sqnrs = [row.sqnr_db for row in table.rows]
    assert sqnrs == sorted(sqnrs)  # most sensitive first
    # A floor full INT8 already meets keeps nothing in FP32.
    met = quantize(fp32, "int8-static", calibration=CALIB[:4], budget=AccuracyBudget.floor(10.0), bench_seconds=0.1)
    assert met.mixed is not None and met.mixed.met and met.mixed.kept_fp32 == []
    # A floor no INT8 layer can meet ends with every layer in FP32, and the result says so loudly.
    fp32_only = quantize(
        fp32, "int8-static", calibration=CALIB[:4], budget=AccuracyBudget.floor(500.0), bench_seconds=0.1
    )
    assert fp32_only.mixed is not None and fp32_only.mixed.kept_fp32
    assert quantization_kind(fp32_only.model) == "none"
    assert any("only FP32 meets the accuracy budget" in w for w in fp32_only.warnings)


def test_dynamic_int8_refuses_a_conv_heavy_model_with_numbers(fp32, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The refusal carries the measured timings; the timing itself is pinned (no timing assertions)."""
    import dataclasses

    from modelport.quantize import dynamic

    real = dynamic.measure_side_by_side

    def measured_slower(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        slower = dataclasses.replace(result.candidate, median_ms=result.reference.median_ms / 0.9)
        return dataclasses.replace(result, candidate=slower)

    monkeypatch.setattr(dynamic, "measure_side_by_side", measured_slower)
    with pytest.raises(QuantizationError, match=r"conv-heavy.*measured here.*0\.90x"):
        quantize(fp32, "int8-dynamic", bench_seconds=0.1)
    forced = quantize(fp32, "int8-dynamic", bench_seconds=0.1, force=True)
    assert forced.dynamic is not None and forced.dynamic.forced
    assert any("forced past a refusal" in w for w in forced.warnings)


def test_default_method_is_mse_unless_the_samples_can_be_read_only_once() -> None:
    from modelport.quantize.api import default_method

    samples = [{"x": np.zeros((1, 4), np.float32)}]
    assert default_method(samples) == "mse"
    assert default_method(lambda: iter(samples)) == "mse"
    assert default_method(iter(samples)) == "minmax"  # a one-shot iterator: one pass only


def test_the_fp32_and_quantized_sessions_stop_spinning_between_runs(fp32, spin_settings) -> None:  # type: ignore[no-untyped-def]
    from modelport.quantize import api

    seen = spin_settings(api)
    quantize(fp32, "fp16", bench_seconds=0.1)
    assert seen == ["1", "1"]  # an idle session's spinning workers would slow the other's window
