"""VerifyReport: findings derived from hand-made sections, the verdict, and the JSON layout."""

from __future__ import annotations

import json

import numpy as np

from modelport.verify.accuracy import AccuracyReport, SampleChange
from modelport.verify.compare import BatchComparison, BatchConsistency, RowCheck
from modelport.verify.diff import HISTOGRAM_BINS, OutputDiff, diff_array
from modelport.verify.report import DataRun, Finding, VerifyReport, summarize_diff
from modelport.verify.tolerance import Tolerance

TOL = Tolerance(1e-3, 0.0)
REF = np.array([[1.0, 2.0, 3.0]], np.float32)


def diff(name: str, cand: list[float], ref: list[float] | None = None) -> OutputDiff:
    reference = np.array([ref], np.float32) if ref is not None else REF
    return diff_array(name, np.array([cand], np.float32), reference, TOL)


def run(batch: int, fill: str, *diffs: OutputDiff) -> BatchComparison:
    return BatchComparison(batch, fill, {}, list(diffs))


def report(**sections: object) -> VerifyReport:
    r = VerifyReport("cand", "ref", TOL)
    for key, value in sections.items():
        setattr(r, key, value)
    return r


def messages(r: VerifyReport) -> list[tuple[str, str]]:
    return [(f.severity, f.message) for f in r.findings]


def test_empty_report_passes() -> None:
    r = report(runs=[run(1, "ones", diff("y", [1.0, 2.0, 3.0]))])
    assert r.passed
    assert r.findings == []
    assert r.verdict == "PASS: 1 comparison within tolerance"


def test_output_failing_everywhere_names_batches_and_fills() -> None:
    bad = diff("y", [1.0, 2.5, 3.0])
    r = report(runs=[run(1, "realistic", bad), run(1, "ones", bad), run(4, "realistic", bad)])
    assert messages(r) == [
        (
            "fail",
            "output 'y' fails at batch 1, 4 (realistic, ones inputs): max abs 0.5 (needs atol >= 0.5 at atol=0.001, "
            "rtol=0)",
        )
    ]
    assert r.verdict == "FAIL: 1 problem found"


def test_output_right_at_batch_one_wrong_at_batch_four() -> None:
    good, bad = diff("logits", [1.0, 2.0, 3.0]), diff("logits", [1.0, 2.8, 3.0])
    r = report(runs=[run(1, "realistic", good), run(4, "realistic", bad), run(4, "ones", good)])
    assert messages(r) == [
        (
            "fail",
            "output 'logits' passes at batch 1 but fails at batch 4 (realistic inputs): max abs 0.8 (needs atol >= "
            "0.8 at atol=0.001, rtol=0)",
        )
    ]


def test_shape_mismatch_summarised_by_its_reason() -> None:
    d = diff_array("y", np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), TOL)
    assert summarize_diff(d) == "shape [2, 3] != reference [3, 2]"
    assert messages(report(runs=[run(1, "ones", d)])) == [
        ("fail", "output 'y' fails at batch 1 (ones inputs): shape [2, 3] != reference [3, 2]")
    ]


def test_inf_on_both_sides_is_a_warning_and_inf_on_one_side_fails() -> None:
    both = diff("scores", [1.0, -np.inf, 3.0], [1.0, -np.inf, 3.0])
    one = diff("logits", [1.0, np.inf, 3.0])
    r = report(runs=[run(2, "ones", both, one)])
    assert messages(r) == [
        ("fail", "candidate output 'logits' has 1 Inf where the reference has 0 (batch 2, ones inputs)"),
        ("warn", "output 'scores' contains 1 Inf on both sides, at the same places (batch 2, ones inputs)"),
    ]
    assert not r.passed


def test_nan_counts_from_the_worst_run() -> None:
    few = diff("y", [np.nan, 2.0, 3.0], [np.nan, 2.0, 3.0])
    many = diff("y", [np.nan, np.nan, 3.0], [np.nan, np.nan, 3.0])
    r = report(runs=[run(1, "realistic", few), run(4, "ones", many)])
    assert messages(r) == [("fail", "reference output 'y' contains 2 NaN (batch 4, ones inputs; the candidate has 2)")]
    assert [n.to_dict()["where"] for n in r.nonfinite()] == ["batch 4, ones inputs", "batch 4, ones inputs"]


def test_problems_fail_and_notes_warn_after_failures() -> None:
    r = report(
        problems=["outputs not compared: the two sides share no output name"],
        notes=["batch 4 requested, but the model fixes axis 0 to 1"],
    )
    assert r.findings == [
        Finding("setup", "fail", "outputs not compared: the two sides share no output name"),
        Finding("setup", "warn", "batch 4 requested, but the model fixes axis 0 to 1"),
    ]
    only_notes = report(notes=["batch 4 requested, but the model fixes axis 0 to 1"])
    assert only_notes.passed


def test_batch_consistency_findings() -> None:
    worst = diff("y", [1.0, 2.0, 3.3])
    check = BatchConsistency(
        "reference",
        "ref",
        8,
        "realistic",
        [0, 1, 7],
        [RowCheck("y", [1, 7], worst, 7), RowCheck("flat", note="rows cannot be matched: shape [24] at batch 8")],
    )
    r = report(batch_consistency=[check])
    assert messages(r) == [
        (
            "fail",
            "reference 'ref': output 'y' at batch 8 differs from the same samples run at batch 1 in rows 1, 7 "
            "(realistic inputs): max abs 0.3 (needs atol >= 0.3 at atol=0.001, rtol=0)",
        ),
        ("warn", "reference 'ref': output 'flat': rows cannot be matched: shape [24] at batch 8"),
    ]


def accuracy(delta: float, regressions: int, labelled: bool = True) -> AccuracyReport:
    changes = [SampleChange(i, f"img{i}.png", 1, [1], [2], 1.0, 0.0) for i in range(regressions)]
    return AccuracyReport("top1", 100, 0.9, 0.9 + delta, delta, changes, [], labelled, "data.npz")


def test_accuracy_drop_beyond_allowance_fails_and_lists_regressions() -> None:
    r = report(accuracy=accuracy(-0.25, 25))
    assert messages(r) == [
        (
            "fail",
            "top1 0.9000 -> 0.6500 (-0.2500) on 100 samples, allowed drop 0; 25 regressions: "
            + ", ".join(f"img{i}.png" for i in range(20))
            + " and 5 more",
        )
    ]
    allowed = report(accuracy=accuracy(-0.25, 25), max_accuracy_drop=0.3)
    assert [f.severity for f in allowed.findings] == ["warn"]
    assert allowed.passed


def test_unlabelled_accuracy_is_agreement() -> None:
    r = report(accuracy=accuracy(-0.01, 1, labelled=False))
    assert messages(r) == [
        (
            "fail",
            "top1 agreement with the reference 0.9000 -> 0.8900 (-0.0100) on 100 samples, allowed drop 0; "
            "1 regression: img0.png",
        )
    ]


def test_no_regressions_no_accuracy_finding() -> None:
    assert report(accuracy=accuracy(0.0, 0)).findings == []


def test_data_run_findings_and_folded_histograms() -> None:
    bad = diff("y", [1.0, 2.0, 3.2])
    data = DataRun("data.npz", 3, run(1, "data", bad), failed_count=1, failed_samples=["sample 2"])
    generated = run(1, "ones", diff("y", [1.0, 2.0, 3.0]))
    r = report(data=data, runs=[generated])
    assert messages(r) == [
        (
            "fail",
            "output 'y' fails on user data data.npz (1 of 3 samples: sample 2): max abs 0.2 (needs atol >= 0.2 at "
            "atol=0.001, rtol=0)",
        )
    ]
    assert [where for _, where in r.comparisons()] == ["batch 1, ones inputs", "user data"]
    hist = r.histograms()["y"]
    assert sum(hist) == 6
    assert hist[HISTOGRAM_BINS.index("0")] == 5


def test_to_dict_has_every_section_and_is_json() -> None:
    r = report(runs=[run(1, "ones", diff("y", [1.0, 2.0, np.inf]))], accuracy=accuracy(0.0, 0))
    data = json.loads(r.to_json())
    assert list(data) == [
        "passed",
        "verdict",
        "candidate",
        "reference",
        "tolerance",
        "findings",
        "engines",
        "signature",
        "outputs",
        "histogram_bins",
        "batch_consistency",
        "nonfinite",
        "accuracy",
        "speed",
        "problems",
        "notes",
    ]
    assert data["passed"] is False
    assert data["tolerance"] == {"atol": 1e-3, "rtol": 0.0, "lsb": 0}
    assert data["histogram_bins"] == list(HISTOGRAM_BINS)
    assert data["outputs"]["generated"][0]["outputs"][0]["max_abs"] == 0.0
    assert data["accuracy"]["metric"] == "top1"
    assert data["findings"] == [
        {
            "check": "nan/inf",
            "severity": "fail",
            "message": "candidate output 'y' has 1 Inf where the reference has 0 (batch 1, ones inputs)",
        }
    ]
