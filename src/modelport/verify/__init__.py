"""Numerical verification: tolerances, output diffs, generated inputs, runner comparison."""

from modelport.verify.compare import (
    BatchComparison,
    CompareReport,
    compare_runners,
    compare_signatures,
)
from modelport.verify.diff import OutputDiff, diff_array, diff_outputs
from modelport.verify.inputs import DEFAULT_DIM, InputPlan, generate_feeds, integer_input_ranges
from modelport.verify.tolerance import EXACT, Tolerance

__all__ = [
    "DEFAULT_DIM",
    "EXACT",
    "BatchComparison",
    "CompareReport",
    "InputPlan",
    "OutputDiff",
    "Tolerance",
    "compare_runners",
    "compare_signatures",
    "diff_array",
    "diff_outputs",
    "generate_feeds",
    "integer_input_ranges",
]
