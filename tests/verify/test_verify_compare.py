"""compare_runners / compare_feeds / signatures / batch consistency with FakeRunners."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from modelport.errors import ConfigError
from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, Outputs
from modelport.runners.fake import FakeRunner
from modelport.verify.compare import (
    SignatureCheck,
    check_batch_consistency,
    check_signature,
    compare_feeds,
    compare_runners,
    compare_signatures,
    plan_runs,
)
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


# signature, symbolic and concrete -------------------------------------------------------------


def signature_of(
    cand_in: list[TensorSpec],
    ref_in: list[TensorSpec],
    cand_out: list[TensorSpec] = OUTPUTS,
    ref_out: list[TensorSpec] = OUTPUTS,
) -> SignatureCheck:
    with fake(correct, "cand", cand_in, cand_out) as cand, fake(correct, "ref", ref_in, ref_out) as ref:
        return check_signature(cand, ref)


def test_dynamic_input_axis_that_became_fixed_is_a_difference() -> None:
    ref_in = [TensorSpec("image", F32, ("batch", 3, 224, 224))]
    cand_in = [TensorSpec("image", F32, (1, 3, 224, 224))]
    check = signature_of(cand_in, ref_in)
    assert not check.passed
    assert check.differences() == ["input 'image': dynamic axis 0 ('batch') became fixed to 1 in the candidate"]
    row = check.tensors[0]
    assert row.to_dict() == {
        "kind": "input",
        "name": "image",
        "candidate": {"dtype": "float32", "shape": [1, 3, 224, 224]},
        "reference": {"dtype": "float32", "shape": ["batch", 3, 224, 224]},
        "passed": False,
        "differences": ["dynamic axis 0 ('batch') became fixed to 1 in the candidate"],
        "notes": [],
    }


def test_unnamed_dynamic_axis_that_became_fixed() -> None:
    check = signature_of([TensorSpec("x", F32, (4, 3))], [TensorSpec("x", F32, (None, 3))])
    assert check.differences() == ["input 'x': dynamic axis 0 (unnamed) became fixed to 4 in the candidate"]


def test_harmless_shape_changes_are_notes() -> None:
    check = signature_of(
        [TensorSpec("x", F32, ("N", "seq"))],
        [TensorSpec("x", F32, ("batch", 3))],
        cand_out=[TensorSpec("y", F32, (1, 3))],
        ref_out=[TensorSpec("y", F32, ("N", 3))],
    )
    assert check.passed
    assert check.differences() == []
    assert [t.notes for t in check.tensors] == [
        [
            "axis 0 is named 'N' in the candidate, 'batch' in the reference",
            "fixed axis 1 (3) is dynamic ('seq') in the candidate",
        ],
        ["dynamic axis 0 ('N') became fixed to 1 in the candidate"],  # engines infer outputs differently
    ]


def test_fixed_sizes_dtype_rank_and_names_differ() -> None:
    check = signature_of(
        [TensorSpec("x", np.dtype("float16"), ("N", 4)), TensorSpec("extra", F32, ("N",))],
        [TensorSpec("x", F32, ("N", 3))],
        cand_out=[TensorSpec("y", F32, ("N", 3, 1))],
        ref_out=[TensorSpec("y", F32, ("N", 3)), TensorSpec("z", F32, ("N",))],
    )
    assert check.differences() == [
        "input count: candidate has 2, reference has 1",
        "output count: candidate has 1, reference has 2",
        "input 'x': dtype float16 in the candidate, float32 in the reference",
        "input 'x': axis 1 is 4 in the candidate, 3 in the reference",
        "input 'extra': exists only in the candidate",
        "output 'z': exists only in the reference",
    ]
    # declared output shapes are each engine's inference; the runs compare the real ones
    assert check.tensors[2].name == "y"
    assert check.tensors[2].notes == ["rank 3 [N, 3, 1] in the candidate, 2 [N, 3] in the reference"]
    assert check.to_dict()["counts"] == check.counts


def test_output_sizes_that_differ_are_notes() -> None:
    check = signature_of(INPUTS, INPUTS, cand_out=[TensorSpec("y", F32, ("N", 4))], ref_out=OUTPUTS)
    assert check.passed
    assert check.tensors[1].notes == ["axis 1 is 4 in the candidate, 3 in the reference"]


def test_unknown_rank_is_a_note() -> None:
    check = signature_of([TensorSpec("x", F32, None)], [TensorSpec("x", F32, ("N", 3))])
    assert check.passed
    assert check.tensors[0].notes == ["rank unknown in the candidate: [unknown rank] vs [N, 3]"]


# batch consistency ----------------------------------------------------------------------------


def mixes_rows(feeds: Feeds) -> Outputs:
    """A reshape bug: [N, 3] read back transposed through a [3, N] buffer — right only at batch 1."""
    x = feeds["x"]
    mixed = x.reshape(3, -1).T.reshape(x.shape) if x.shape[0] > 1 else x
    return {"y": np.tanh(mixed) * 2}


def test_batch_consistency_names_the_rows_that_differ() -> None:
    feeds = {"x": np.arange(12, dtype=np.float32).reshape(4, 3) / 10}
    buggy = fake(mixes_rows, "buggy")
    with buggy:
        check = check_batch_consistency(buggy, feeds, tolerance=Tolerance(1e-6, 1e-6), side="candidate", fill="ones")
        calls = buggy.calls
    assert (check.side, check.runner, check.batch, check.fill) == ("candidate", "buggy", 4, "ones")
    assert check.rows == [0, 1, 2, 3]
    assert not check.passed
    y = check.outputs[0]
    assert y.output == "y"
    # x.reshape(3, 4).T.reshape(4, 3) keeps element [0, 0] and [3, 2] in place only
    assert y.rows_differing == [0, 1, 2, 3]
    assert y.worst is not None and y.worst.max_abs > 0.1
    assert calls == 5  # batch 4 once, then each of the 4 rows alone
    data = check.to_dict()
    assert data["outputs"][0]["rows_differing"] == [0, 1, 2, 3]
    assert data["passed"] is False


def test_batch_consistency_passes_for_a_correct_runner() -> None:
    feeds = {"x": np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)}
    with fake(correct, "ok") as runner:
        check = check_batch_consistency(runner, feeds, tolerance=EXACT)
    assert check.passed
    assert check.outputs[0].rows_differing == []
    assert check.outputs[0].worst is not None and check.outputs[0].worst.max_abs == 0.0


def test_batch_consistency_only_some_rows_wrong() -> None:
    feeds = {"x": np.zeros((4, 3), np.float32)}
    with fake(first_row_only, "rows") as runner:
        check = check_batch_consistency(runner, feeds, tolerance=EXACT)
    assert check.outputs[0].rows_differing == [1, 2, 3]
    assert check.outputs[0].worst_row == 1
    assert check.outputs[0].worst is not None and check.outputs[0].worst.max_abs == 0.5


def test_batch_consistency_samples_rows_when_batch_is_large() -> None:
    feeds = {"x": np.zeros((32, 3), np.float32)}
    runner = fake(correct, "ok")
    with runner:
        check = check_batch_consistency(runner, feeds, tolerance=EXACT, max_rows=4)
        assert runner.calls == 5
    assert check.rows == [0, 10, 21, 31]  # first and last always


def test_batch_consistency_slices_only_batched_inputs() -> None:
    inputs = [TensorSpec("scale", F32, (1,)), TensorSpec("x", F32, ("N", 3)), TensorSpec("kv", F32, (2, "N", 3))]
    outputs = [TensorSpec("y", F32, ("N", 3)), TensorSpec("k", F32, (2, "N", 3)), TensorSpec("s", F32, (1,))]
    seen: list[tuple[int, ...]] = []

    def fn(feeds: Feeds) -> Outputs:
        seen.append(feeds["kv"].shape)
        return {"y": feeds["x"] * feeds["scale"], "k": feeds["kv"] + 1, "s": feeds["scale"] * 2}

    rng = np.random.default_rng(1)
    feeds = {
        "scale": np.full((1,), 3.0, np.float32),
        "x": rng.standard_normal((3, 3)).astype(np.float32),
        "kv": rng.standard_normal((2, 3, 3)).astype(np.float32),
    }
    with FakeRunner(fn, inputs, outputs, name="kv") as runner:
        check = check_batch_consistency(runner, feeds, tolerance=EXACT)
    assert seen == [(2, 3, 3), (2, 1, 3), (2, 1, 3), (2, 1, 3)]  # batch axis 1 of kv sliced
    assert check.passed
    assert [o.output for o in check.outputs] == ["y", "k", "s"]
    assert all(o.note is None for o in check.outputs)  # s is not batched: compared whole


def test_batch_consistency_notes_outputs_it_cannot_match() -> None:
    outputs = [TensorSpec("flat", F32, ("M",))]

    def flatten(feeds: Feeds) -> Outputs:
        return {"flat": feeds["x"].reshape(-1)}

    with FakeRunner(flatten, INPUTS, outputs, name="flat") as runner:
        check = check_batch_consistency(runner, {"x": np.ones((2, 3), np.float32)}, tolerance=EXACT)
    assert check.passed  # no verdict without matching rows, but a note says so
    assert check.outputs[0].note == "rows cannot be matched: shape [6] at batch 2, [3] at batch 1"


def test_batch_consistency_rejects_zero_rows() -> None:
    with fake(correct, "ok") as runner, pytest.raises(ConfigError, match="max_rows must be >= 1, got 0"):
        check_batch_consistency(runner, {"x": np.ones((2, 3), np.float32)}, tolerance=EXACT, max_rows=0)


def test_plan_runs_deduplicates_and_notes() -> None:
    plans, notes = plan_runs(
        [TensorSpec("x", F32, (2, 3))], batches=(1, 2, 8), fills=("realistic", "ones"), plan=InputPlan(seed=3)
    )
    assert [(p.batch, p.fill, p.seed) for p in plans] == [(2, "realistic", 3), (2, "ones", 3)]
    assert notes == [
        "batch 1 requested, but the model fixes axis 0 to 2",
        "batch 8 requested, but the model fixes axis 0 to 2",
    ]


def test_integer_outputs_compared_in_lsb_by_compare_runners() -> None:
    int_out = [TensorSpec("k", np.dtype("int64"), ("N", 3))]

    def rounded(feeds: Feeds) -> Outputs:
        return {"k": np.round(feeds["x"] * 10).astype(np.int64)}

    def off_by_one(feeds: Feeds) -> Outputs:
        return {"k": rounded(feeds)["k"] + 1}

    with fake(off_by_one, "cand", INPUTS, int_out) as cand, fake(rounded, "ref", INPUTS, int_out) as ref:
        strict = compare_runners(cand, ref, tolerance=Tolerance(5.0, 5.0), batches=(2,))
        loose = compare_runners(cand, ref, tolerance=EXACT, batches=(2,), lsb=1)
    assert not strict.passed
    assert strict.runs[0].diffs[0].reason == "6 of 6 elements differ, by up to 1 LSB (allowed 0 LSB)"
    assert loose.passed
    assert loose.to_dict()["lsb"] == 1
