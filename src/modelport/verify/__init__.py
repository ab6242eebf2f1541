"""Numerical verification: tolerances, output diffs, generated inputs, runner comparison, reports.

``verify`` and ``compare`` themselves live in :mod:`modelport.verify.api` (imported on use, as
they pull in the engines' registry); this package exports the pieces they are built from.
"""

from modelport.verify.compare import (
    BatchComparison,
    BatchConsistency,
    CompareReport,
    SignatureCheck,
    check_batch_consistency,
    check_signature,
    compare_runners,
    compare_signatures,
)
from modelport.verify.diff import HISTOGRAM_BINS, OutputDiff, diff_array, diff_outputs, error_histogram, merge_diffs
from modelport.verify.inputs import (
    DEFAULT_DIM,
    FILLS,
    InputPlan,
    generate_feeds,
    integer_input_ranges,
    mask_inputs,
)
from modelport.verify.report import Finding, VerifyReport
from modelport.verify.tolerance import EXACT, Tolerance

__all__ = [
    "DEFAULT_DIM",
    "EXACT",
    "FILLS",
    "HISTOGRAM_BINS",
    "BatchComparison",
    "BatchConsistency",
    "CompareReport",
    "Finding",
    "InputPlan",
    "OutputDiff",
    "SignatureCheck",
    "Tolerance",
    "VerifyReport",
    "check_batch_consistency",
    "check_signature",
    "compare_runners",
    "compare_signatures",
    "diff_array",
    "diff_outputs",
    "error_histogram",
    "generate_feeds",
    "integer_input_ranges",
    "mask_inputs",
    "merge_diffs",
]
