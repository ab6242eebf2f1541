"""compare_runners / compare_feeds / compare_signatures with FakeRunners and ONNX Runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, Outputs
from modelport.runners.fake import FakeRunner
from modelport.verify.compare import compare_feeds, compare_runners, compare_signatures
from modelport.verify.inputs import InputPlan
from modelport.verify.tolerance import EXACT, Tolerance

F32 = np.dtype("float32")
INPUTS = [TensorSpec("x", F32, ("N", 3))]
OUTPUTS = [TensorSpec("y", F32, ("N", 3))]


def correct(feeds: Feeds) -> Outputs:
    return {"y": np.tanh(feeds["x"]) * 2}


def first_row_only(feeds: Feeds) -> Outputs:
    """Right for row 0, wrong for every later row (a batching bug)."""
    y = np.tanh(feeds["x"]) * 2
    y[1:] += 0.5
    return {"y": y}


def fake(
    fn: Callable[[Feeds], Outputs], name: str, inputs: list[TensorSpec] = INPUTS, outputs: list[TensorSpec] = OUTPUTS
) -> FakeRunner:
    return FakeRunner(fn, inputs, outputs, name=name)


# batch sizes ----------------------------------------------------------------------------------


def test_catches_candidate_wrong_beyond_batch_one() -> None:
    cand = fake(first_row_only, "cand")
    ref = fake(correct, "ref")
    with cand, ref:
        report = compare_runners(cand, ref, tolerance=Tolerance(1e-6, 1e-6), batches=(1, 4))
    assert report.candidate == "cand"
    assert report.reference == "ref"
    assert report.signature == []
    assert report.notes == []
    assert [r.batch for r in report.runs] == [1, 4]
    assert [r.passed for r in report.runs] == [True, False]
    assert not report.passed
    bad = report.runs[1].diffs[0]
    assert bad.name == "y"
    assert bad.max_abs == pytest.approx(0.5, rel=1e-6, abs=0)
    assert bad.required_atol == pytest.approx(0.5, rel=1e-5, abs=0)
    assert report.worst() is bad
    assert report.runs[1].inputs["x"]["shape"] == [4, 3]
    assert cand.calls == 2
    assert ref.calls == 2


def test_correct_candidate_passes_at_every_batch() -> None:
    with fake(correct, "cand") as cand, fake(correct, "ref") as ref:
        report = compare_runners(cand, ref, tolerance=EXACT, batches=(1, 2, 8))
    assert report.passed
    assert [r.batch for r in report.runs] == [1, 2, 8]
    assert all(d.max_abs == 0.0 for r in report.runs for d in r.diffs)


def test_both_sides_see_identical_inputs() -> None:
    seen: dict[str, list[np.ndarray[Any, Any]]] = {"cand": [], "ref": []}

    def recorder(label: str) -> Callable[[Feeds], Outputs]:
        def fn(feeds: Feeds) -> Outputs:
            seen[label].append(feeds["x"].copy())
            return correct(feeds)

        return fn

    with fake(recorder("cand"), "cand") as cand, fake(recorder("ref"), "ref") as ref:
        compare_runners(cand, ref, tolerance=EXACT, batches=(3,), plan=InputPlan(seed=5))
    assert len(seen["cand"]) == len(seen["ref"]) == 1
    np.testing.assert_array_equal(seen["cand"][0], seen["ref"][0])
    assert seen["ref"][0].shape == (3, 3)


def test_static_batch_axis_gives_a_note() -> None:
    static_in = [TensorSpec("x", F32, (1, 3))]
    static_out = [TensorSpec("y", F32, (1, 3))]
    with fake(correct, "cand", static_in, static_out) as cand, fake(correct, "ref", static_in, static_out) as ref:
        report = compare_runners(cand, ref, tolerance=EXACT, batches=(1, 4, 8))
    assert report.notes == [
        "batch 4 requested, but the model fixes axis 0 to 1",
        "batch 8 requested, but the model fixes axis 0 to 1",
    ]
    assert [r.batch for r in report.runs] == [1]  # not re-run three times at batch 1
    assert report.passed


def test_auxiliary_static_input_does_not_hide_batch_bug() -> None:
    inputs = [TensorSpec("scale", F32, (1,)), TensorSpec("x", F32, ("N", 3))]
    with fake(first_row_only, "cand", inputs) as cand, fake(correct, "ref", inputs) as ref:
        report = compare_runners(cand, ref, tolerance=EXACT, batches=(1, 4))
    assert report.notes == []
    assert [r.passed for r in report.runs] == [True, False]
    assert [r.inputs["x"]["shape"] for r in report.runs] == [[1, 3], [4, 3]]
    assert not report.passed


def test_run_batch_label_ignores_static_auxiliary_input() -> None:
    inputs = [TensorSpec("scale", F32, (1,)), TensorSpec("x", F32, ("N", 3))]
    with fake(correct, "cand", inputs) as cand, fake(correct, "ref", inputs) as ref:
        report = compare_runners(cand, ref, tolerance=EXACT, batches=(1, 4))
    assert [r.batch for r in report.runs] == [1, 4]


def test_fills_run_each_batch() -> None:
    with fake(correct, "cand") as cand, fake(correct, "ref") as ref:
        report = compare_runners(cand, ref, tolerance=EXACT, batches=(1, 2), fills=("random", "ones", "zeros"))
    assert [(r.batch, r.fill) for r in report.runs] == [
        (1, "random"),
        (1, "ones"),
        (1, "zeros"),
        (2, "random"),
        (2, "ones"),
        (2, "zeros"),
    ]
    assert report.runs[1].inputs["x"] == {"shape": [1, 3], "dtype": "float32", "values": "ones"}


def test_real_data_instead_of_generated() -> None:
    data = [
        ("one", {"x": np.zeros((1, 3), np.float32)}),
        ("three", {"x": np.ones((3, 3), np.float32)}),
    ]
    with fake(first_row_only, "cand") as cand, fake(correct, "ref") as ref:
        report = compare_runners(cand, ref, tolerance=EXACT, batches=(64,), data=data)
    assert [(r.fill, r.batch, r.passed) for r in report.runs] == [
        ("one", 1, True),
        ("three", 3, False),
    ]


def test_compare_feeds_directly() -> None:
    feeds = {"x": np.full((2, 3), 0.25, np.float32)}
    with fake(first_row_only, "cand") as cand, fake(correct, "ref") as ref:
        run = compare_feeds(cand, ref, feeds, Tolerance(atol=0.5, rtol=0.0), "label")
    assert run.batch == 2
    assert run.fill == "label"
    assert run.passed  # the 0.5 error is within atol 0.5
    assert run.inputs == {"x": {"shape": [2, 3], "dtype": "float32", "values": "label"}}
    assert run.to_dict()["passed"] is True


# signatures -----------------------------------------------------------------------------------


def test_different_output_names_reported() -> None:
    renamed = [TensorSpec("logits", F32, ("N", 3))]
    cand = fake(lambda f: {"logits": f["x"]}, "cand", INPUTS, renamed)
    ref = fake(correct, "ref")
    with cand, ref:
        report = compare_runners(cand, ref, tolerance=EXACT, batches=(1, 2))
        assert compare_signatures(cand, ref) == report.signature
    assert report.signature == [
        "output 'logits' exists only in the candidate",
        "output 'y' exists only in the reference",
    ]
    assert report.notes == ["outputs not compared: the two sides share no output name"]
    assert report.runs == []
    assert not report.passed
    assert report.worst() is None
    assert cand.calls == 0


def test_signature_count_dtype_and_rank() -> None:
    two_in = [*INPUTS, TensorSpec("k", np.dtype("int64"), ("N",))]
    other_out = [TensorSpec("y", np.dtype("float16"), ("N", 1, 3))]
    with fake(correct, "cand", two_in, other_out) as cand, fake(correct, "ref") as ref:
        problems = compare_signatures(cand, ref)
    assert problems == [
        "input count: candidate has 2, reference has 1",
        "input 'k' exists only in the candidate",
        "output 'y' dtype: candidate float16, reference float32",
        "output 'y' rank: candidate y: float16 [N, 1, 3], reference y: float32 [N, 3]",
    ]


def test_output_dtype_difference_fails_the_run() -> None:
    half = [TensorSpec("y", np.dtype("float16"), ("N", 3))]

    def half_fn(feeds: Feeds) -> Outputs:
        return {"y": correct(feeds)["y"].astype(np.float16)}

    with fake(half_fn, "cand", INPUTS, half) as cand, fake(correct, "ref") as ref:
        report = compare_runners(cand, ref, tolerance=Tolerance(1e-2, 1e-2))
    assert report.signature == ["output 'y' dtype: candidate float16, reference float32"]
    assert report.runs[0].diffs[0].reason == "dtype float16 != reference float32"
    assert not report.passed


def test_input_dtype_difference_is_reported_not_raised() -> None:
    half_in = [TensorSpec("x", np.dtype("float16"), ("N", 3))]
    with fake(correct, "cand", half_in) as cand, fake(correct, "ref") as ref:
        report = compare_runners(cand, ref, tolerance=EXACT)
    assert report.signature == ["input 'x' dtype: candidate float16, reference float32"]
    assert report.notes == ["outputs not compared: input dtypes differ for x"]
    assert report.runs == []
    assert not report.passed


def test_output_named_count_is_still_compared() -> None:
    ref_out = [TensorSpec("token_count", F32, ("N", 3))]
    cand_out = [TensorSpec("token_count", np.dtype("float16"), ("N", 3))]

    def half(feeds: Feeds) -> Outputs:
        return {"token_count": feeds["x"].astype(np.float16)}

    with (
        fake(half, "cand", INPUTS, cand_out) as cand,
        fake(lambda f: {"token_count": f["x"]}, "ref", INPUTS, ref_out) as ref,
    ):
        report = compare_runners(cand, ref, tolerance=EXACT)
    assert report.signature == ["output 'token_count' dtype: candidate float16, reference float32"]
    assert len(report.runs) == 1
    assert report.runs[0].diffs[0].reason == "dtype float16 != reference float32"


def test_report_to_dict() -> None:
    with fake(first_row_only, "cand") as cand, fake(correct, "ref") as ref:
        data = compare_runners(cand, ref, tolerance=Tolerance(1e-5, 0.0), batches=(2,)).to_dict()
    assert data["passed"] is False
    assert data["tolerance"] == {"atol": 1e-5, "rtol": 0.0}
    assert data["runs"][0]["batch"] == 2
    assert data["runs"][0]["outputs"][0]["name"] == "y"
