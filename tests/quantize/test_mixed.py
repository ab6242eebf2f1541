from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
from test_sensitivity import CALIB, mlp_samples, outlier_mlp

from modelport.errors import ConfigError, QuantizationError
from modelport.quantize import int8, ranges
from modelport.quantize.mixed import AccuracyBudget, MixedResult, Trial, fewest_passing, mixed_precision
from modelport.quantize.sensitivity import SignalProbe
from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.dataset import Dataset

Feeds = dict[str, np.ndarray[Any, Any]]


def measured_sqnr(model: ir.Model, candidate: ir.Model, samples: list[Feeds]) -> float:
    """The candidate's worst output SQNR against ``model``, measured again from scratch."""
    return SignalProbe(model, samples).measure(candidate).sqnr_db


def top1_accuracy(model: ir.Model, dataset: Dataset) -> float:
    assert dataset.labels is not None
    with OrtRunner(model) as runner:
        hits = [
            int(np.argmax(runner.infer(s)["logits"])) == y for s, y in zip(dataset.samples, dataset.labels, strict=True)
        ]
    return float(np.mean(hits))


def labelled(model: ir.Model, samples: list[Feeds]) -> Dataset:
    """The samples labelled with FP32's classes: FP32 scores 100 %, and every INT8 flip is an error."""
    with OrtRunner(model) as runner:
        labels = [int(np.argmax(runner.infer(s)["logits"])) for s in samples]
    return Dataset(samples, labels, [f"sample {i}" for i in range(len(samples))], "outlier-test")


def test_a_signal_floor_keeps_exactly_the_outlier_layer_in_fp32() -> None:
    model = outlier_mlp()
    result = mixed_precision(model, CALIB, AccuracyBudget.floor(30.0, 0.999))
    assert result.met
    assert [(k.node, k.op_type) for k in result.kept_fp32] == [("fc1", "Gemm")]
    assert "the most sensitive of 5 layers" in result.kept_fp32[0].reason
    assert result.kept_fp32[0].reason.startswith("SQNR ")
    full, chosen = result.trials[0], result.trials[-1]
    assert full.kept == 0 and not full.passed and full.score < 5.0  # full INT8 breaks the output
    assert chosen == Trial(1, result.score, True)
    assert [t.kept for t in result.trials] == [0, 1]
    assert result.score >= 30.0
    assert result.signal is not None and result.signal.cosine >= 0.999
    # The returned model really is what was measured.
    assert measured_sqnr(model, result.model, CALIB) == pytest.approx(result.score, abs=1e-6)
    assert result.sensitivity is not None and result.sensitivity.rows[0].node == "fc1"
    assert "full INT8 misses the budget" in result.why
    assert "keeping the 1 most sensitive layer in FP32 meets it" in result.why
    data = json.loads(json.dumps(result.to_dict()))
    assert data["kept_fp32"][0]["node"] == "fc1"
    assert data["trials"][0]["passed"] is False


def test_every_variant_shares_one_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ranges.collect_ranges
    calls: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> ranges.RangeSet:
        calls.append(kwargs["method"])
        return real(*args, **kwargs)

    monkeypatch.setattr(ranges, "collect_ranges", counting)
    budget = AccuracyBudget.floor(30.0)
    result = mixed_precision(outlier_mlp(), CALIB, budget, method="percentile", calibration_options={"bins": 512})
    assert calls == ["percentile"]
    assert result.met and [k.node for k in result.kept_fp32] == ["fc1"]
    assert result.sensitivity is not None and result.sensitivity.method == "percentile"
    assert "this is the FP32 model" not in result.why


def test_a_budget_only_fp32_meets_says_so() -> None:
    # 200 dB is beyond INT8: only with all three Gemms in FP32 (a Relu alone quantizes nothing) is it met.
    result = mixed_precision(outlier_mlp(), CALIB, AccuracyBudget.floor(200.0))
    assert result.met
    assert sorted(k.node for k in result.kept_fp32) == ["fc1", "fc2", "fc3"]
    assert [t.kept for t in result.trials] == [0, 1, 2, 4, 3]
    assert result.score == float("inf")
    assert result.why.endswith("no node is INT8 any more: this is the FP32 model")


def test_full_int8_that_meets_the_budget_is_returned_as_it_is() -> None:
    model = outlier_mlp(outlier=1.0)
    calib = mlp_samples(16, outlier=1.0)
    result = mixed_precision(model, calib, AccuracyBudget.floor(25.0))
    assert result.met
    assert result.kept_fp32 == []
    assert result.trials == [Trial(0, result.score, True)]
    assert result.sensitivity is None  # nothing had to be ranked
    assert result.why.startswith("full INT8 meets the budget (SQNR >= 25 dB")
    assert measured_sqnr(model, result.model, calib) == pytest.approx(result.score, abs=1e-6)


@pytest.mark.parametrize("with_labels", [True, False])
def test_a_top1_budget_recovers_the_flipped_predictions(with_labels: bool) -> None:
    model = outlier_mlp()
    test_set = labelled(model, mlp_samples(48, seed=5))
    if not with_labels:  # measured as agreement with FP32's answers instead
        test_set = Dataset(test_set.samples, None, test_set.names, test_set.source)
    # One of the 48 samples sits on a decision boundary and may flip with fc2/fc3 in INT8: the budget
    # allows that one (2.1 %), not the > 30 % full INT8 flips.
    result = mixed_precision(model, CALIB, AccuracyBudget.task(test_set, "top1", max_drop=0.025))
    full = result.trials[0]
    assert full.kept == 0 and not full.passed
    assert full.score < 0.7  # full INT8 flips the prediction of more than 30 % of the samples
    assert result.met
    assert [k.node for k in result.kept_fp32] == ["fc1"]
    assert result.score >= 0.975
    assert result.accuracy is not None
    assert result.accuracy.reference_score == 1.0
    assert result.accuracy.candidate_score == pytest.approx(result.score, abs=1e-12)
    assert len(result.accuracy.regressions) <= 0.025 * len(test_set)
    assert top1_accuracy(result.model, labelled(model, test_set.samples)) == pytest.approx(result.score, abs=1e-12)
    assert "top1 drops" in result.why


def test_an_impossible_budget_returns_the_best_model_and_the_gap() -> None:
    model = outlier_mlp()
    result = mixed_precision(model, CALIB, AccuracyBudget.floor(200.0), max_fp32_layers=2)
    assert not result.met
    assert [t.kept for t in result.trials] == [0, 1, 2]
    assert not any(t.passed for t in result.trials)
    best = max(result.trials, key=lambda t: t.score)
    assert result.score == best.score
    assert len(result.kept_fp32) == best.kept
    assert result.kept_fp32[0].node == "fc1"
    assert measured_sqnr(model, result.model, CALIB) == pytest.approx(result.score, abs=1e-6)
    assert "no setting tried meets the budget" in result.why
    assert "with at most 2 layers in FP32 (tried k = 0, 1, 2)" in result.why
    gap = 200.0 - result.score
    assert result.why.endswith(f"SQNR {result.score:.1f} dB is {gap:.1f} dB below the 200 dB floor")


def test_when_the_culprit_may_not_stay_fp32_the_budget_is_missed() -> None:
    model = outlier_mlp()
    result = mixed_precision(model, CALIB, AccuracyBudget.floor(30.0), layers=["fc2", "fc3"])
    assert not result.met
    assert [t.kept for t in result.trials] == [0, 1, 2]
    assert all(t.score < 5.0 for t in result.trials)  # fc1 stays INT8 in every variant
    assert {k.node for k in result.kept_fp32} <= {"fc2", "fc3"}
    assert "dB below the 30 dB floor" in result.why


def test_a_variant_that_fails_to_build_is_a_failed_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    real = int8.StaticQuantizer.quantize

    def flaky(self: int8.StaticQuantizer, *args: Any, **kwargs: Any) -> ir.Model:
        if kwargs.get("nodes_to_exclude") == ["fc1"]:  # only the 1-layer variant
            raise QuantizationError("ONNX Runtime QDQ insertion failed: refused")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(int8.StaticQuantizer, "quantize", flaky)
    result = mixed_precision(outlier_mlp(), CALIB, AccuracyBudget.floor(30.0))
    assert [t.kept for t in result.trials] == [0, 1, 2]
    assert result.trials[1] == Trial(1, -float("inf"), False)
    assert result.met and len(result.kept_fp32) == 2 and result.kept_fp32[0].node == "fc1"


def test_fewest_passing_doubles_then_bisects() -> None:
    def search(threshold: int, limit: int) -> tuple[int | None, list[int]]:
        asked: list[int] = []

        def passes(k: int) -> bool:
            asked.append(k)
            return k >= threshold

        return fewest_passing(passes, limit), asked

    assert search(1, 10) == (1, [1])
    assert search(5, 12) == (5, [1, 2, 4, 8, 6, 5])
    assert search(12, 12) == (12, [1, 2, 4, 8, 12, 10, 11])
    assert search(3, 3) == (3, [1, 2, 3])
    assert search(13, 12) == (None, [1, 2, 4, 8, 12])
    assert search(1, 0) == (None, [])
    for threshold in range(1, 40):  # always the smallest passing k, in at most ~2 log2(limit) + 1 questions
        found, asked = search(threshold, 37)
        assert found == (threshold if threshold <= 37 else None)
        assert len(asked) == len(set(asked)) <= 12


class LabelsOnly:
    """A metric that needs real labels: it cannot turn FP32's outputs into one."""

    name = "labels-only"

    def score(self, outputs: dict[str, np.ndarray[Any, Any]], label: Any) -> float:
        return float(np.argmax(outputs["logits"]) == label)

    def prediction(self, outputs: dict[str, np.ndarray[Any, Any]]) -> int:
        return int(np.argmax(outputs["logits"]))


def test_errors() -> None:
    model = outlier_mlp()
    data = labelled(model, mlp_samples(4))
    with pytest.raises(ConfigError, match="needs dataset, metric and max_drop"):
        AccuracyBudget()
    with pytest.raises(ConfigError, match="OR a task metric, not both"):
        AccuracyBudget(signal=AccuracyBudget.floor(20.0).signal, dataset=data)
    with pytest.raises(ConfigError, match="max_drop must be a finite number >= 0"):
        AccuracyBudget.task(data, "top1", max_drop=-0.1)
    with pytest.raises(ConfigError, match="has no samples"):
        AccuracyBudget.task(Dataset([], None, [], "empty"), "top1", max_drop=0.0)
    with pytest.raises(ConfigError, match="unknown metric"):
        AccuracyBudget.task(data, "accuracy", max_drop=0.0)
    with pytest.raises(QuantizationError, match="needs calibration samples"):
        mixed_precision(model, [], AccuracyBudget.floor(20.0))
    with pytest.raises(ConfigError, match="names node 'fc7', which is not in the model's graph"):
        mixed_precision(model, CALIB[:4], AccuracyBudget.floor(20.0), layers=["fc7"])
    with pytest.raises(ConfigError, match="max_fp32_layers must be >= 0"):
        mixed_precision(model, CALIB[:4], AccuracyBudget.floor(20.0), max_fp32_layers=-1)
    unlabelled = Dataset(data.samples, None, data.names, "unlabelled")
    with pytest.raises(ConfigError, match="has no labels, and metric 'labels-only' cannot take FP32's outputs"):
        mixed_precision(model, CALIB[:4], AccuracyBudget.task(unlabelled, LabelsOnly(), max_drop=0.0))


def test_result_is_json_for_a_task_budget() -> None:
    model = outlier_mlp()
    data = labelled(model, mlp_samples(8, seed=3))
    result: MixedResult = mixed_precision(
        model, CALIB[:8], AccuracyBudget.task(data, "top1", max_drop=0.0), max_fp32_layers=1
    )
    encoded = json.loads(json.dumps(result.to_dict()))
    assert encoded["budget"].startswith("top1 drop <= 0 on 8 samples")
    assert encoded["accuracy"]["metric"] == "top1"
    assert encoded["sensitivity"]["rows"][0]["node"] == "fc1"
