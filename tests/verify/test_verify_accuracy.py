from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import BackendError, ConfigError
from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, Outputs
from modelport.runners.fake import FakeRunner
from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.accuracy import (
    SampleChange,
    TopK,
    UserMetric,
    compare_accuracy,
    evaluate,
    resolve_metric,
)
from modelport.verify.dataset import Dataset

CLASSES = 10
X = TensorSpec("x", np.dtype("float32"), ("batch", CLASSES))
PROBS = TensorSpec("probs", np.dtype("float32"), ("batch", CLASSES))

# Five samples with known rankings. The reference multiplies by the identity; the candidate negates
# class 0 and triples class 1, which flips exactly the answers worked out in the comments.
ROWS = np.zeros((5, CLASSES), np.float32)
ROWS[0, :] = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]  # label 0: ref top1 0 (ok); cand top1 1, 0 ranks last -> top1+top5 regress
ROWS[1, :2] = [9, 8]  # label 1: ref top1 0 (wrong), top5 ok; cand top1 1 -> top1 improves
ROWS[2, 3] = 9  # label 3: unchanged
ROWS[3, [0, 5]] = [1, 9]  # label 5: unchanged top-k
ROWS[4, :6] = [-1, 1, 1, 1, 1, 0.5]  # label 5: ref top5 {1,2,3,4,5}; cand top5 {1,0,2,3,4} -> top5 regresses
LABELS = [0, 1, 3, 5, 5]


def _classifier(weight: np.ndarray) -> ir.Model:
    return ir.from_onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        classifier (float[batch, 10] x) => (float[batch, 10] probs, float[batch, 10] logits)
        <float[10, 10] W>
        {
            logits = MatMul(x, W)
            probs = Softmax<axis = -1>(logits)
        }
        """,
        initializers=[ir.tensor(weight, name="W")],
    )


REFERENCE_W = np.eye(CLASSES, dtype=np.float32)
CANDIDATE_W = REFERENCE_W.copy()
CANDIDATE_W[0, 0] = -1.0
CANDIDATE_W[1, 1] = 3.0


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def _dataset(labels: list[Any] | None = LABELS) -> Dataset:
    return Dataset(
        samples=[{"x": ROWS[i : i + 1]} for i in range(len(ROWS))],
        labels=labels,
        names=[f"sample {i}" for i in range(len(ROWS))],
        source="mem",
    )


@pytest.fixture
def reference() -> OrtRunner:
    return OrtRunner(_classifier(REFERENCE_W), name="ref")


@pytest.fixture
def candidate() -> OrtRunner:
    return OrtRunner(_classifier(CANDIDATE_W), name="cand")


# user metrics, importable by this module's name ---------------------------------------------------------------


def prob_of_label(outputs: dict[str, np.ndarray], label: Any) -> float:
    return float(outputs["probs"][0, label])


def same_top1(outputs: dict[str, np.ndarray], reference: Any) -> float:
    return float(np.argmax(outputs["probs"]) == np.argmax(reference["probs"]))


def broken_metric(outputs: dict[str, np.ndarray], label: Any) -> float:
    raise ValueError("boom")


def text_metric(outputs: dict[str, np.ndarray], label: Any) -> str:
    return "high"


def nan_metric(outputs: dict[str, np.ndarray], label: Any) -> float:
    return float("nan")


NOT_CALLABLE = 3


# top-k ----------------------------------------------------------------------------------------------------


def test_top1_regressions_and_improvements_are_exact(candidate: OrtRunner, reference: OrtRunner) -> None:
    report = compare_accuracy(candidate, reference, _dataset(), resolve_metric("top1"))
    assert report.metric == "top1"
    assert report.samples == 5
    assert report.labelled
    assert report.source == "mem"
    assert report.reference_score == pytest.approx(0.6, abs=1e-12)
    assert report.candidate_score == pytest.approx(0.6, abs=1e-12)
    assert report.delta == pytest.approx(0.0, abs=1e-12)
    assert report.regressions == [SampleChange(0, "sample 0", 0, [0], [1], 1.0, 0.0)]
    assert report.improvements == [SampleChange(1, "sample 1", 1, [0], [1], 0.0, 1.0)]


def test_top5_regressions(candidate: OrtRunner, reference: OrtRunner) -> None:
    report = compare_accuracy(candidate, reference, _dataset(), resolve_metric("TOP5"))
    assert report.metric == "top5"
    assert report.reference_score == pytest.approx(1.0, abs=1e-12)
    assert report.candidate_score == pytest.approx(0.6, abs=1e-12)
    assert report.delta == pytest.approx(-0.4, abs=1e-12)
    assert [c.index for c in report.regressions] == [0, 4]
    assert report.regressions[1].reference == [1, 2, 3, 4, 5]
    assert report.regressions[1].candidate == [1, 0, 2, 3, 4]
    assert report.improvements == []


def test_evaluate_scores_one_model_and_leaves_it_as_it_found_it(reference: OrtRunner) -> None:
    assert evaluate(reference, _dataset(), TopK(1)) == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert not reference.is_active
    with reference:
        assert evaluate(reference, _dataset(), TopK(5, output="logits")) == [1.0] * 5
        assert reference.is_active


def test_unlabelled_top1_measures_agreement_with_the_reference(candidate: OrtRunner, reference: OrtRunner) -> None:
    report = compare_accuracy(candidate, reference, _dataset(labels=None), TopK(1))
    assert not report.labelled
    assert report.reference_score == pytest.approx(1.0, abs=1e-12)
    assert report.candidate_score == pytest.approx(0.6, abs=1e-12)
    # reference top-1 answers are [0, 0, 3, 5, 1]; the candidate answers [1, 1, 3, 5, 1]
    assert report.regressions == [
        SampleChange(0, "sample 0", 0, [0], [1], 1.0, 0.0),
        SampleChange(1, "sample 1", 0, [0], [1], 1.0, 0.0),
    ]
    assert report.improvements == []


def test_default_output_is_the_references_first_output_for_both_models(reference: OrtRunner) -> None:
    def shuffled(feeds: Feeds) -> Outputs:
        x = np.asarray(feeds["x"])
        return {"junk": -x, "probs": _softmax(x @ REFERENCE_W)}

    junk = TensorSpec("junk", np.dtype("float32"), ("batch", CLASSES))
    cand = FakeRunner(shuffled, [X], [junk, PROBS], name="cand")
    report = compare_accuracy(cand, reference, _dataset(), TopK(1))
    assert report.regressions == []
    assert report.candidate_score == pytest.approx(report.reference_score, abs=1e-12)


# batching -------------------------------------------------------------------------------------------------


def _numpy_runner(weight: np.ndarray, *, batch: str | int = "batch", rows: int | None = None) -> FakeRunner:
    def run(feeds: Feeds) -> Outputs:
        logits = np.asarray(feeds["x"]) @ weight
        probs = _softmax(logits).astype(np.float32)
        return {"probs": probs[:rows] if rows else probs}

    x = TensorSpec("x", np.dtype("float32"), (batch, CLASSES))
    probs = TensorSpec("probs", np.dtype("float32"), (batch, CLASSES))
    return FakeRunner(run, [x], [probs], name="numpy")


def test_batched_runs_give_the_same_scores_as_per_sample_runs(candidate: OrtRunner, reference: OrtRunner) -> None:
    for metric in ("top1", "top5", f"{__name__}:prob_of_label"):
        one = compare_accuracy(candidate, reference, _dataset(), resolve_metric(metric))
        batched = compare_accuracy(candidate, reference, _dataset(), resolve_metric(metric), batch_size=3)
        assert batched == one
    counted = _numpy_runner(REFERENCE_W)
    assert evaluate(counted, _dataset(), TopK(1), batch_size=3) == [1.0, 0.0, 1.0, 1.0, 0.0]
    with counted:
        evaluate(counted, _dataset(), TopK(1), batch_size=3)
        assert counted.calls == 2  # samples [0, 1, 2] and [3, 4]


def test_batching_falls_back_to_single_samples_for_a_static_batch() -> None:
    static = _numpy_runner(REFERENCE_W, batch=1)
    with static:
        assert evaluate(static, _dataset(), TopK(1), batch_size=4) == [1.0, 0.0, 1.0, 1.0, 0.0]
        assert static.calls == 5


def test_a_model_that_does_not_batch_is_refused() -> None:
    broken = _numpy_runner(REFERENCE_W, rows=1)
    with pytest.raises(BackendError, match=r"output 'probs' with shape \[1, 10\] for a batch of 4 samples"):
        evaluate(broken, _dataset(), TopK(1), batch_size=4)


def test_progress_counts_both_passes(candidate: OrtRunner, reference: OrtRunner) -> None:
    ticks: list[tuple[int, int]] = []
    compare_accuracy(
        candidate, reference, _dataset(), TopK(1), progress=lambda done, total: ticks.append((done, total))
    )
    assert ticks == [(i, 10) for i in range(1, 11)]


# user metrics ---------------------------------------------------------------------------------------------


def test_user_metric_from_this_module(candidate: OrtRunner, reference: OrtRunner) -> None:
    metric = resolve_metric(f"{__name__}:prob_of_label")
    assert isinstance(metric, UserMetric)
    report = compare_accuracy(candidate, reference, _dataset(), metric)
    ref_probs = _softmax(ROWS.astype(np.float64) @ REFERENCE_W)[np.arange(5), LABELS]
    cand_probs = _softmax(ROWS.astype(np.float64) @ CANDIDATE_W)[np.arange(5), LABELS]
    assert report.reference_score == pytest.approx(ref_probs.mean(), rel=1e-6)
    assert report.candidate_score == pytest.approx(cand_probs.mean(), rel=1e-6)
    assert [c.index for c in report.regressions] == [0, 4]
    assert [c.index for c in report.improvements] == [1, 3]
    first = report.regressions[0]
    assert (first.reference, first.candidate) == (None, None)
    assert first.reference_score == pytest.approx(ref_probs[0], rel=1e-6)
    assert first.candidate_score == pytest.approx(cand_probs[0], rel=1e-6)


def test_user_metric_without_labels_receives_the_reference_outputs(candidate: OrtRunner, reference: OrtRunner) -> None:
    report = compare_accuracy(candidate, reference, _dataset(labels=None), resolve_metric(f"{__name__}:same_top1"))
    assert not report.labelled
    assert report.reference_score == pytest.approx(1.0, abs=1e-12)
    assert [c.index for c in report.regressions] == [0, 1]
    assert report.regressions[0].label is None  # the reference's outputs are not copied into the report


def test_user_metric_from_a_module_on_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "modelport_test_metrics.py").write_text(
        "def margin(outputs, label):\n    return float(outputs['probs'][0, label] - 0.5)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    metric = resolve_metric("modelport_test_metrics:margin")
    assert metric.name == "modelport_test_metrics:margin"
    outputs = {"probs": np.array([[0.25, 0.75]], np.float32)}
    assert metric.score(outputs, 1) == pytest.approx(0.25, abs=1e-7)
    assert metric.prediction(outputs) is None


def test_user_metric_failures_name_the_sample(reference: OrtRunner) -> None:
    cases = {
        "broken_metric": r"sample 0 \('sample 0'\) of mem, model 'ref': metric '.*:broken_metric' raised ValueError",
        "text_metric": r"returned str 'high', not a number",
        "nan_metric": r"returned nan; a score must be a finite number",
    }
    for function, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            evaluate(reference, _dataset(), resolve_metric(f"{__name__}:{function}"))


# errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("top0", r"top-k needs k >= 1, got top0"),
        ("accuracy", r"unknown metric 'accuracy' — use top1, top5, top<K>, or a function as package.module:function"),
        ("mymetrics:", r"should have the form 'package.module:function'"),
        (":fn", r"should have the form 'package.module:function'"),
        ("modelport_no_such_module_xyz:f", r"cannot import module 'modelport_no_such_module_xyz' .* PYTHONPATH"),
        (f"{__name__}:missing", r"has no attribute 'missing' .* check the function name"),
        (f"{__name__}:NOT_CALLABLE", r"is a int, not a function"),
    ],
)
def test_bad_metric_names(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_metric(text)


def test_output_option_is_for_top_k_only() -> None:
    metric = resolve_metric("top3", output="logits")
    assert isinstance(metric, TopK)
    assert (metric.k, metric.output, metric.name) == (3, "logits", "top3")
    with pytest.raises(ConfigError, match="output='logits' chooses the class-score output of top-k"):
        resolve_metric(f"{__name__}:prob_of_label", output="logits")


def test_a_metric_module_that_fails_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "modelport_test_bad_metrics.py").write_text("raise RuntimeError('bad import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ConfigError, match=r"importing module 'modelport_test_bad_metrics' .* failed: RuntimeError: bad import"
    ):
        resolve_metric("modelport_test_bad_metrics:f")


def test_top_k_refuses_what_it_cannot_score(reference: OrtRunner) -> None:
    with pytest.raises(
        ConfigError, match=r"top1: the model has no output 'nope'; its outputs are \['logits', 'probs'\]"
    ):
        evaluate(reference, _dataset(), TopK(1, output="nope"))
    with pytest.raises(ConfigError, match="output 'probs' has 10 classes, fewer than k=20"):
        evaluate(reference, _dataset(), TopK(20))
    with pytest.raises(ConfigError, match=r"sample 0 \('sample 0'\) .* label 10 is not a class index in \[0, 10\)"):
        evaluate(reference, _dataset(labels=[10, 1, 3, 5, 5]), TopK(1))
    with pytest.raises(ConfigError, match=r"label 2.5 is not a class index"):
        evaluate(reference, _dataset(labels=[2.5, 1, 3, 5, 5]), TopK(1))
    with pytest.raises(ConfigError, match="top1 needs a class label per sample, but the dataset has none"):
        evaluate(reference, _dataset(labels=None), TopK(1))
    # integral floats and numpy integers are class indices
    assert evaluate(reference, _dataset(labels=[0.0, np.int64(1), 3, 5, 5]), TopK(1)) == [1.0, 0.0, 1.0, 1.0, 0.0]


def test_top_k_needs_one_row_per_sample() -> None:
    two_rows = FakeRunner(
        lambda feeds: {"probs": np.zeros((2, CLASSES), np.float32)},
        [X],
        [PROBS],
        name="rows",
    )
    with pytest.raises(ConfigError, match=r"output 'probs' has shape \[2, 10\], but top-k needs one row"):
        evaluate(two_rows, _dataset(), TopK(1))


def test_unlabelled_data_needs_a_metric_that_can_derive_labels(candidate: OrtRunner, reference: OrtRunner) -> None:
    class Plain:
        name = "plain"

        def score(self, outputs: dict[str, np.ndarray], label: Any) -> float:
            return 0.0

        def prediction(self, outputs: dict[str, np.ndarray]) -> Any:
            return None

    with pytest.raises(ConfigError, match="metric 'plain' cannot derive them from a reference"):
        compare_accuracy(candidate, reference, _dataset(labels=None), Plain())


def test_empty_dataset_and_bad_batch_size(candidate: OrtRunner, reference: OrtRunner) -> None:
    empty = Dataset(samples=[], labels=None, names=[], source="nothing")
    with pytest.raises(ConfigError, match="dataset 'nothing' has no samples"):
        compare_accuracy(candidate, reference, empty, TopK(1))
    with pytest.raises(ConfigError, match="batch_size must be at least 1, got 0"):
        evaluate(reference, _dataset(), TopK(1), batch_size=0)


# reports --------------------------------------------------------------------------------------------------


def test_report_to_dict_is_compact_json(candidate: OrtRunner, reference: OrtRunner) -> None:
    report = compare_accuracy(candidate, reference, _dataset(), TopK(1))
    data = json.loads(json.dumps(report.to_dict()))
    assert data == {
        "metric": "top1",
        "source": "mem",
        "samples": 5,
        "labelled": True,
        "reference_score": pytest.approx(0.6, abs=1e-12),
        "candidate_score": pytest.approx(0.6, abs=1e-12),
        "delta": pytest.approx(0.0, abs=1e-12),
        "regressions": [
            {
                "index": 0,
                "name": "sample 0",
                "label": 0,
                "reference": [0],
                "candidate": [1],
                "reference_score": 1.0,
                "candidate_score": 0.0,
            }
        ],
        "improvements": [
            {
                "index": 1,
                "name": "sample 1",
                "label": 1,
                "reference": [0],
                "candidate": [1],
                "reference_score": 0.0,
                "candidate_score": 1.0,
            }
        ],
    }
    big = SampleChange(0, "s", np.zeros(100), np.int64(3), np.arange(3), 1.0, 0.0).to_dict()
    assert big["label"] == "<array [100] float64>"
    assert big["reference"] == 3
    assert big["candidate"] == [0, 1, 2]
