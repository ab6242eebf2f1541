"""Compare two runners on the same generated inputs, at several batch sizes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, Runner
from modelport.verify.diff import OutputDiff, diff_outputs
from modelport.verify.inputs import InputPlan, effective_batch, feeds_batch, generate_feeds
from modelport.verify.tolerance import Tolerance

__all__ = [
    "BatchComparison",
    "CompareReport",
    "compare_feeds",
    "compare_runners",
    "compare_signatures",
]

logger = logging.getLogger(__name__)


@dataclass
class BatchComparison:
    """Outputs of both sides on one set of inputs."""

    batch: int
    fill: str
    inputs: dict[str, Any]
    diffs: list[OutputDiff]

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.diffs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "fill": self.fill,
            "inputs": self.inputs,
            "passed": self.passed,
            "outputs": [d.to_dict() for d in self.diffs],
        }


@dataclass
class CompareReport:
    """Signature differences and per-batch output differences of candidate vs reference."""

    candidate: str
    reference: str
    tolerance: Tolerance
    signature: list[str] = field(default_factory=list)
    runs: list[BatchComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.signature and all(r.passed for r in self.runs)

    def worst(self) -> OutputDiff | None:
        """The output diff with the largest required atol across all runs."""
        diffs = [d for r in self.runs for d in r.diffs]
        return max(diffs, key=lambda d: (not d.passed, d.required_atol), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "reference": self.reference,
            "tolerance": {"atol": self.tolerance.atol, "rtol": self.tolerance.rtol},
            "passed": self.passed,
            "signature": self.signature,
            "notes": self.notes,
            "runs": [r.to_dict() for r in self.runs],
        }


def _spec_line(spec: TensorSpec) -> str:
    return f"{spec.name}: {spec.dtype} {spec.shape_str()}"


def compare_signatures(candidate: Runner, reference: Runner) -> list[str]:
    """Differences in input/output names, counts, dtypes and ranks (empty when they agree)."""
    problems: list[str] = []
    for kind, cand, ref in (
        ("input", candidate.inputs, reference.inputs),
        ("output", candidate.outputs, reference.outputs),
    ):
        if len(cand) != len(ref):
            problems.append(f"{kind} count: candidate has {len(cand)}, reference has {len(ref)}")
        ref_by_name = {s.name: s for s in ref}
        for spec in cand:
            other = ref_by_name.get(spec.name)
            if other is None:
                problems.append(f"{kind} '{spec.name}' exists only in the candidate")
                continue
            if spec.dtype != other.dtype:
                problems.append(f"{kind} '{spec.name}' dtype: candidate {spec.dtype}, reference {other.dtype}")
            if spec.shape is not None and other.shape is not None and len(spec.shape) != len(other.shape):
                problems.append(
                    f"{kind} '{spec.name}' rank: candidate {_spec_line(spec)}, reference {_spec_line(other)}"
                )
        cand_names = {s.name for s in cand}
        problems.extend(f"{kind} '{s.name}' exists only in the reference" for s in ref if s.name not in cand_names)
    return problems


def _cannot_run(candidate: Runner, reference: Runner) -> str | None:
    """Why identical feeds cannot go to both runners (None when they can)."""
    cand_inputs = {s.name: s.dtype for s in candidate.inputs}
    ref_inputs = {s.name: s.dtype for s in reference.inputs}
    if cand_inputs.keys() != ref_inputs.keys():
        return "the two sides have different input names"
    differing = [n for n in ref_inputs if cand_inputs[n] != ref_inputs[n]]
    if differing:
        return f"input dtypes differ for {', '.join(differing)}"
    if not {s.name for s in candidate.outputs} & {s.name for s in reference.outputs}:
        return "the two sides share no output name"
    return None


def compare_runners(
    candidate: Runner,
    reference: Runner,
    *,
    tolerance: Tolerance,
    batches: Sequence[int] = (1,),
    plan: InputPlan | None = None,
    fills: Sequence[str] = ("random",),
    data: Sequence[tuple[str, Feeds]] | None = None,
) -> CompareReport:
    """Run both (already active) runners on identical inputs and compare every output.

    Inputs come from the reference's signature. Each batch size in ``batches`` is tried; when the
    model fixes its batch axis the report notes the size actually used instead of pretending.
    With ``data`` (label, feeds) pairs, those real inputs are used instead of generated ones.
    """
    plan = plan or InputPlan()
    report = CompareReport(candidate=candidate.name, reference=reference.name, tolerance=tolerance)
    report.signature = compare_signatures(candidate, reference)
    blocker = _cannot_run(candidate, reference)
    if blocker:
        report.notes.append(f"outputs not compared: {blocker}")
        return report
    if data is not None:
        for label, feeds in data:
            report.runs.append(compare_feeds(candidate, reference, feeds, tolerance, label))
        return report
    seen: set[tuple[int, str]] = set()
    for batch in batches:
        effective = effective_batch(reference.inputs, batch)
        if effective != batch:
            report.notes.append(f"batch {batch} requested, but the model fixes axis 0 to {effective}")
        for fill in fills:
            if (effective, fill) in seen:
                continue
            seen.add((effective, fill))
            run_plan = replace(plan, batch=effective, fill=fill)  # type: ignore[arg-type]
            feeds = generate_feeds(reference.inputs, run_plan)
            run = compare_feeds(candidate, reference, feeds, tolerance, fill)
            run.inputs = run_plan.describe(reference.inputs)
            report.runs.append(run)
    return report


def compare_feeds(
    candidate: Runner, reference: Runner, feeds: Feeds, tolerance: Tolerance, label: str
) -> BatchComparison:
    """Run both runners on ``feeds`` and compare every output."""
    ref_out = reference.infer(feeds)
    cand_out = candidate.infer(feeds)
    diffs = diff_outputs(cand_out, ref_out, tolerance)
    batch = feeds_batch(reference.inputs, feeds)
    inputs = {k: {"shape": list(v.shape), "dtype": str(v.dtype), "values": label} for k, v in feeds.items()}
    logger.debug("compared batch %d (%s): %s", batch, label, [d.reason for d in diffs])
    return BatchComparison(batch, label, inputs, diffs)
