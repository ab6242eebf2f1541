"""diff_array / diff_outputs statistics on hand-computed arrays, LSBs, histograms, and tolerances."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from modelport.errors import ConfigError
from modelport.verify.diff import (
    HISTOGRAM_BINS,
    diff_array,
    diff_outputs,
    error_histogram,
    lsb_distance,
    merge_diffs,
)
from modelport.verify.tolerance import EXACT, SignalTolerance, Tolerance

# reference and candidate: errors 0.5, 0, 1, 0 on reference magnitudes 1, 2, 4, 8
REF = np.array([1.0, 2.0, 4.0, -8.0], np.float32)
CAND = np.array([1.5, 2.0, 3.0, -8.0], np.float32)


def test_statistics_by_hand() -> None:
    d = diff_array("y", CAND, REF, EXACT)
    assert not d.passed
    assert d.name == "y"
    assert d.shape == [4]
    assert d.dtype == "float32"
    assert d.max_abs == 1.0
    assert d.max_rel == 0.5  # 0.5 / 1
    assert d.mean_abs == pytest.approx(1.5 / 4, rel=1e-12, abs=0)
    # cos = c.r / (|c| |r|) = 81.5 / sqrt(79.25 * 85)
    assert d.cosine == pytest.approx(81.5 / math.sqrt(79.25 * 85.0), rel=1e-12, abs=0)
    # SQNR = 10 log10(sum r^2 / sum e^2) = 10 log10(85 / 1.25)
    assert d.sqnr_db == pytest.approx(10 * math.log10(68.0), rel=1e-12, abs=0)
    assert d.required_atol == 1.0
    assert d.required_rtol == 0.5
    assert (d.nan_candidate, d.nan_reference, d.inf_candidate, d.inf_reference) == (0, 0, 0, 0)
    assert d.tolerance == "atol=0, rtol=0"
    assert d.reason == "max abs error 1 exceeds atol=0, rtol=0 (needs atol >= 1)"


def test_required_atol_is_the_smallest_passing_atol() -> None:
    d = diff_array("y", CAND, REF, Tolerance(atol=0.0, rtol=0.0))
    atol = d.required_atol
    assert atol == 1.0
    assert diff_array("y", CAND, REF, Tolerance(atol=atol, rtol=0.0)).passed
    assert not diff_array("y", CAND, REF, Tolerance(atol=atol * 0.99, rtol=0.0)).passed


def test_required_atol_accounts_for_rtol() -> None:
    # max(err - 0.1 * |ref|) = max(0.4, -0.2, 0.6, -0.8) = 0.6
    d = diff_array("y", CAND, REF, Tolerance(atol=0.0, rtol=0.1))
    assert d.required_atol == pytest.approx(0.6, rel=1e-12, abs=0)
    assert diff_array("y", CAND, REF, Tolerance(atol=d.required_atol, rtol=0.1)).passed
    assert not diff_array("y", CAND, REF, Tolerance(atol=d.required_atol * 0.99, rtol=0.1)).passed


def test_required_atol_on_random_data() -> None:
    rng = np.random.default_rng(7)
    ref = rng.standard_normal((8, 16)).astype(np.float32)
    cand = ref + (1e-3 * rng.standard_normal((8, 16))).astype(np.float32)
    d = diff_array("y", cand, ref, EXACT)
    want = float(np.abs(cand.astype(np.float64) - ref.astype(np.float64)).max())
    assert d.required_atol == want
    assert d.max_abs == want
    assert diff_array("y", cand, ref, Tolerance(atol=want, rtol=0.0)).passed
    assert not diff_array("y", cand, ref, Tolerance(atol=want * 0.99, rtol=0.0)).passed


def test_required_rtol_at_zero_atol() -> None:
    d = diff_array("y", CAND, REF, Tolerance(atol=0.0, rtol=0.0))
    assert d.required_rtol == 0.5
    assert diff_array("y", CAND, REF, Tolerance(atol=0.0, rtol=0.5)).passed
    assert not diff_array("y", CAND, REF, Tolerance(atol=0.0, rtol=0.495)).passed


def test_required_rtol_always_passes() -> None:
    ref = np.array([0.7])
    cand = np.array([0.7 + 0.1])
    d = diff_array("y", cand, ref, EXACT)
    assert diff_array("y", cand, ref, Tolerance(atol=0.0, rtol=d.required_rtol)).passed


def test_identical_arrays_pass_exactly() -> None:
    d = diff_array("y", REF.copy(), REF, EXACT)
    assert d.passed
    assert d.reason == "ok"
    assert d.max_abs == 0.0
    assert d.required_atol == 0.0
    assert d.cosine == 1.0
    assert d.sqnr_db == math.inf


def test_zero_reference_relative_error() -> None:
    d = diff_array("y", np.array([0.0, 0.1]), np.array([0.0, 0.0]), Tolerance(atol=0.2, rtol=0.0))
    assert d.passed
    assert d.max_rel == math.inf
    assert d.sqnr_db == -math.inf
    assert d.cosine == 0.0


def test_nan_where_reference_has_none_fails() -> None:
    cand = REF.copy()
    cand[2] = np.nan
    d = diff_array("y", cand, REF, Tolerance(atol=100.0, rtol=100.0))
    assert not d.passed
    assert d.nan_candidate == 1
    assert d.nan_reference == 0
    assert d.reason == "non-finite values differ: candidate has 1 NaN / 0 Inf, reference 0 / 0"


def test_nan_in_both_at_same_place_passes() -> None:
    ref = np.array([1.0, np.nan, 3.0], np.float32)
    cand = np.array([1.0, np.nan, 3.0], np.float32)
    d = diff_array("y", cand, ref, EXACT)
    assert d.passed
    assert (d.nan_candidate, d.nan_reference) == (1, 1)
    assert d.max_abs == 0.0


def test_opposite_inf_fails() -> None:
    ref = np.array([np.inf, 1.0], np.float32)
    d = diff_array("y", np.array([-np.inf, 1.0], np.float32), ref, Tolerance(1e9, 1e9))
    assert not d.passed
    assert d.reason == "non-finite values differ: candidate has 0 NaN / 1 Inf, reference 0 / 1"
    assert (d.inf_candidate, d.inf_reference) == (1, 1)


def test_inf_where_reference_is_finite_fails() -> None:
    d = diff_array("y", np.array([np.inf, 1.0]), np.array([1.0, 1.0]), Tolerance(1e9, 1e9))
    assert not d.passed
    assert d.inf_candidate == 1
    assert d.reason.startswith("non-finite values differ")


def test_matching_inf_passes_without_warning() -> None:
    ref = np.array([-np.inf, 1.0, np.inf], np.float32)
    d = diff_array("y", ref.copy(), ref, EXACT)
    assert d.passed
    assert (d.inf_candidate, d.inf_reference) == (2, 2)


def test_shape_mismatch_fails_with_reason() -> None:
    d = diff_array("logits", np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), EXACT)
    assert not d.passed
    assert d.reason == "shape [2, 3] != reference [3, 2]"
    assert math.isnan(d.max_abs)
    assert d.to_dict()["max_abs"] == "nan"


def test_dtype_mismatch_fails_with_reason() -> None:
    d = diff_array("y", REF.astype(np.float16), REF, Tolerance(1.0, 1.0))
    assert not d.passed
    assert d.reason == "dtype float16 != reference float32"


def test_integer_outputs_compared_exactly_at_exact_tolerance() -> None:
    ref = np.array([1, 2, 3], np.int64)
    assert diff_array("k", ref.copy(), ref, EXACT).passed
    d = diff_array("k", np.array([1, 2, 4], np.int64), ref, EXACT)
    assert not d.passed
    assert d.max_abs == 1.0


def test_string_outputs_compared_exactly() -> None:
    ref = np.array(["a", "b"], dtype=object)
    assert diff_array("s", np.array(["a", "b"], dtype=object), ref, EXACT).passed
    d = diff_array("s", np.array(["a", "c"], dtype=object), ref, Tolerance(1.0, 1.0))
    assert not d.passed
    assert d.reason == "values differ (compared exactly: non-numeric dtype)"


def test_to_dict_makes_infinities_json_safe() -> None:
    data = diff_array("y", REF.copy(), REF, EXACT).to_dict()
    assert data["sqnr_db"] == "inf"
    assert data["max_abs"] == 0.0
    assert data["passed"] is True


def test_diff_outputs_missing_output_and_per_output_tolerance() -> None:
    ref = {"a": np.array([1.0, 2.0]), "b": np.array([1.0]), "c": np.array([0.0])}
    cand = {"a": np.array([1.0, 2.1]), "b": np.array([1.0])}
    tol = {"a": Tolerance(atol=0.2, rtol=0.0), "b": EXACT, "c": EXACT}
    diffs = diff_outputs(cand, ref, tol)
    assert [d.name for d in diffs] == ["a", "b", "c"]
    assert [d.passed for d in diffs] == [True, True, False]
    assert diffs[2].reason == "missing from the candidate's outputs"
    strict = diff_outputs(cand, ref, Tolerance(atol=0.05, rtol=0.0))
    assert [d.passed for d in strict] == [False, True, False]


# tolerances -----------------------------------------------------------------------------------


def test_tolerance_rejects_negative() -> None:
    with pytest.raises(ConfigError, match=r"tolerances must be >= 0, got atol=-1, rtol=0"):
        Tolerance(atol=-1, rtol=0)


def test_tolerance_addition_and_text() -> None:
    total = Tolerance(1e-5, 1e-4) + Tolerance(2e-5, 0.0)
    assert total.atol == pytest.approx(3e-5, rel=1e-12, abs=0)
    assert total.rtol == 1e-4
    assert str(Tolerance(1e-5, 0.001)) == "atol=1e-05, rtol=0.001"


def test_signal_tolerance() -> None:
    floor = SignalTolerance(min_sqnr_db=30.0, min_cosine=0.999)
    assert floor.check(35.0, 0.9999) is None
    assert floor.check(25.0, 0.9999) == "SQNR 25.0 dB < 30 dB"
    assert floor.check(35.0, 0.99) == "cosine 0.99000 < 0.999"
    assert floor.check(math.nan, 1.0) == "SQNR nan dB < 30 dB"
    assert str(floor) == "SQNR >= 30 dB, cosine >= 0.999"


@pytest.mark.parametrize("seed", range(5))
def test_required_tolerances_pass_and_are_tight_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(100):
        ref = rng.standard_normal(32).astype(np.float32)
        cand = (ref + 1e-3 * rng.standard_normal(32)).astype(np.float32)
        rtol = float(rng.choice([0.0, 1e-4, 1e-3, 1e-2]))
        atol = float(rng.choice([0.0, 1e-4, 1e-3]))
        need_atol = diff_array("y", cand, ref, Tolerance(0.0, rtol)).required_atol
        assert diff_array("y", cand, ref, Tolerance(need_atol, rtol)).passed
        if need_atol > 0:
            assert not diff_array("y", cand, ref, Tolerance(need_atol * 0.99, rtol)).passed
        need_rtol = diff_array("y", cand, ref, Tolerance(atol, 0.0)).required_rtol
        assert diff_array("y", cand, ref, Tolerance(atol, need_rtol)).passed
        if need_rtol > 0:
            assert not diff_array("y", cand, ref, Tolerance(atol, need_rtol * 0.99)).passed


# integer outputs in LSBs ----------------------------------------------------------------------


def test_uint8_output_off_by_one_is_one_lsb() -> None:
    ref = np.array([[0, 10, 255], [7, 7, 7]], np.uint8)
    cand = ref.copy()
    cand[0, 1] = 11
    cand[1, 2] = 6  # below the reference: |6 - 7| = 1, not 255
    d = diff_array("q", cand, ref, Tolerance(atol=100.0, rtol=1.0))  # float tolerances do not apply
    assert not d.passed
    assert d.max_lsb == 1
    assert d.differing == 2
    assert d.tolerance == "exact (0 LSB)"
    assert d.reason == "2 of 6 elements differ, by up to 1 LSB (allowed 0 LSB)"
    ok = diff_array("q", cand, ref, EXACT, lsb=1)
    assert ok.passed
    assert ok.reason == "ok"
    assert ok.tolerance == "<= 1 LSB"
    assert ok.max_lsb == 1


def test_argmax_indices_compared_in_lsb() -> None:
    ref = np.array([3, 1, 4, 1, 5], np.int64)
    cand = np.array([3, 1, 9, 1, 5], np.int64)
    d = diff_array("label", cand, ref, EXACT)
    assert (d.passed, d.max_lsb, d.differing) == (False, 5, 1)
    assert not diff_array("label", cand, ref, EXACT, lsb=4).passed
    assert diff_array("label", cand, ref, EXACT, lsb=5).passed


def test_identical_integers_pass_with_zero_lsb() -> None:
    ref = np.arange(12, dtype=np.int32).reshape(3, 4)
    d = diff_array("k", ref.copy(), ref, EXACT)
    assert (d.passed, d.max_lsb, d.differing, d.reason) == (True, 0, 0, "ok")


def test_lsb_distance_has_no_overflow_at_the_extremes() -> None:
    big = np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).min, 5], np.int64)
    small = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, -5], np.int64)
    assert lsb_distance(big, small).tolist() == [2**64 - 1, 2**64 - 1, 10]
    u = np.array([0, 2**64 - 1], np.uint64)
    assert lsb_distance(u, u[::-1].copy()).tolist() == [2**64 - 1, 2**64 - 1]
    i8 = np.array([-128, 127], np.int8)
    assert lsb_distance(i8, i8[::-1].copy()).tolist() == [255, 255]


def test_boolean_outputs_count_flips() -> None:
    ref = np.array([True, False, True, True])
    cand = np.array([True, True, False, True])
    d = diff_array("keep", cand, ref, Tolerance(1.0, 1.0))
    assert (d.passed, d.max_lsb, d.differing) == (False, 1, 2)


def test_float_outputs_have_no_lsb_but_count_differences() -> None:
    d = diff_array("y", CAND, REF, EXACT)
    assert d.max_lsb is None
    assert d.differing == 2


def test_negative_lsb_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"the integer tolerance must be >= 0 LSB, got lsb=-1"):
        diff_array("k", np.zeros(2, np.int64), np.zeros(2, np.int64), EXACT, lsb=-1)


def test_diff_outputs_passes_lsb_on() -> None:
    ref = {"k": np.array([1, 2], np.int64), "y": np.array([1.0, 2.0])}
    cand = {"k": np.array([2, 2], np.int64), "y": np.array([1.0, 2.0])}
    assert [d.passed for d in diff_outputs(cand, ref, EXACT)] == [False, True]
    assert [d.passed for d in diff_outputs(cand, ref, EXACT, lsb=1)] == [True, True]


# error histogram ------------------------------------------------------------------------------


def test_histogram_bins_by_hand() -> None:
    assert len(HISTOGRAM_BINS) == 15
    assert HISTOGRAM_BINS[:3] == ("0", "<1e-9", "1e-9..1e-8")
    assert HISTOGRAM_BINS[-3:] == ("1e1..1e2", ">=1e2", "non-finite")
    errors = np.array([0.0, 0.0, 5e-10, 1e-9, 3e-4, 0.5, 1.0, 99.0, 100.0, 1e6])
    counts = error_histogram(errors, nonfinite=2)
    expected = dict.fromkeys(HISTOGRAM_BINS, 0)
    expected.update({"0": 2, "<1e-9": 1, "1e-9..1e-8": 1, "1e-4..1e-3": 1, "1e-1..1e0": 1, "1e0..1e1": 1})
    expected.update({"1e1..1e2": 1, ">=1e2": 2, "non-finite": 2})
    assert dict(zip(HISTOGRAM_BINS, counts, strict=True)) == expected


def test_histogram_of_a_diff_covers_every_element() -> None:
    ref = np.array([1.0, np.nan, np.inf, 2.0, 3.0], np.float32)
    cand = np.array([1.0, np.nan, np.inf, 2.5, 3.0 + 1e-6], np.float32)
    d = diff_array("y", cand, ref, Tolerance(1.0, 0.0))
    assert sum(d.histogram) == ref.size
    by_bin = dict(zip(HISTOGRAM_BINS, d.histogram, strict=True))
    assert by_bin["0"] == 1
    assert by_bin["1e-1..1e0"] == 1  # 0.5
    assert by_bin["1e-7..1e-6"] + by_bin["1e-6..1e-5"] == 1  # 1e-6 after float32 rounding
    assert by_bin["non-finite"] == 2
    assert d.differing == 2  # NaN against NaN and Inf against Inf are equal


def test_integer_errors_land_in_decade_bins() -> None:
    d = diff_array("k", np.array([0, 1, 12, 500], np.int64), np.zeros(4, np.int64), EXACT)
    by_bin = dict(zip(HISTOGRAM_BINS, d.histogram, strict=True))
    assert (by_bin["0"], by_bin["1e0..1e1"], by_bin["1e1..1e2"], by_bin[">=1e2"]) == (1, 1, 1, 1)


def test_json_of_a_million_element_output_is_small() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1_000_000).astype(np.float32)
    cand = ref + rng.standard_normal(1_000_000).astype(np.float32) * np.float32(1e-3)
    cand[:3] = np.nan
    data = diff_array("y", cand, ref, Tolerance(1e-4, 1e-4)).to_dict()
    text = json.dumps(data)
    assert len(text) < 2_000  # statistics and 15 counts: no tensor
    assert sum(data["histogram"]) == 1_000_000
    assert data["nan_candidate"] == 3


# merging per-sample diffs ---------------------------------------------------------------------


def test_merge_diffs_over_samples() -> None:
    ref = [np.array([[1.0, 2.0]]), np.array([[3.0, 4.0]])]
    cand = [np.array([[1.0, 2.5]]), np.array([[3.0, 4.0]])]
    diffs = [diff_array("y", c, r, Tolerance(0.1, 0.0)) for c, r in zip(cand, ref, strict=True)]
    merged = merge_diffs(diffs)
    whole = diff_array("y", np.concatenate(cand), np.concatenate(ref), Tolerance(0.1, 0.0))
    assert not merged.passed
    assert merged.reason == diffs[0].reason
    assert merged.shape == [2, 2]
    for field in ("max_abs", "max_rel", "mean_abs", "required_atol", "required_rtol", "differing", "histogram"):
        assert getattr(merged, field) == getattr(whole, field), field
    assert merged.cosine == min(d.cosine for d in diffs)  # the worst sample's
    assert merged.sqnr_db == diffs[0].sqnr_db


def test_merge_integer_diffs_keeps_largest_lsb() -> None:
    ref = np.array([[1, 2]], np.int64)
    diffs = [diff_array("k", ref + np.array([[0, 3]]), ref, EXACT), diff_array("k", ref + 1, ref, EXACT)]
    merged = merge_diffs(diffs)
    assert (merged.max_lsb, merged.differing, merged.passed) == (3, 3, False)


def test_merge_diffs_refuses_nothing_or_mixed_outputs() -> None:
    with pytest.raises(ConfigError, match="merge_diffs needs at least one diff"):
        merge_diffs([])
    a = diff_array("a", REF, REF, EXACT)
    b = diff_array("b", REF, REF, EXACT)
    with pytest.raises(ConfigError, match=r"merge_diffs merges one output's diffs, got outputs \['a', 'b'\]"):
        merge_diffs([a, b])
