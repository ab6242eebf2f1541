from __future__ import annotations

from pathlib import Path

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
    quantized = quantize(fp32, "int8-static", calibration=CALIB[:2], bench_seconds=0.1).model
    with pytest.raises(QuantizationError, match=r"already quantized \(QDQ\)"):
        quantize(quantized, "int8-static", calibration=CALIB[:2])
    with pytest.raises(QuantizationError, match="unknown mode"):
        quantize(fp32, "int4", calibration=CALIB)  # type: ignore[arg-type]


def test_stack_samples_cycles() -> None:
    stacked = stack_samples(CALIB[:3], 5)
    assert stacked["image"].shape == (5, 3, 96, 96)
    np.testing.assert_array_equal(stacked["image"][3], CALIB[0]["image"][0])
