"""Compare two runners on the same generated inputs, at several batch sizes.

Three comparisons live here: candidate against reference on identical feeds
(:func:`compare_runners`, :func:`compare_feeds`), the two signatures side by side, symbolic and
concrete (:func:`check_signature`), and one runner against itself — each sample at batch N
against the same sample at batch 1 (:func:`check_batch_consistency`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from modelport.errors import ConfigError
from modelport.ir.specs import Dim, TensorSpec
from modelport.runners.base import Feeds, Runner
from modelport.verify.diff import OutputDiff, diff_array, diff_outputs
from modelport.verify.inputs import InputPlan, effective_batch, feeds_batch, generate_feeds
from modelport.verify.tolerance import Tolerance

__all__ = [
    "BatchComparison",
    "BatchConsistency",
    "CompareReport",
    "RowCheck",
    "SignatureCheck",
    "TensorSignature",
    "cannot_run",
    "check_batch_consistency",
    "check_signature",
    "compare_feeds",
    "compare_runners",
    "compare_signatures",
    "plan_runs",
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
    #: Tolerance of integer outputs in units of the last place (0: exact).
    lsb: int = 0

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
            "lsb": self.lsb,
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


def cannot_run(candidate: Runner, reference: Runner) -> str | None:
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


def plan_runs(
    specs: Sequence[TensorSpec], *, batches: Sequence[int], fills: Sequence[str], plan: InputPlan
) -> tuple[list[InputPlan], list[str]]:
    """One plan per (batch, fill) to run, and notes on batch sizes the model does not allow.

    When the model fixes its batch axis the size actually used is noted instead of pretending,
    and a (batch, fill) pair that comes out the same twice is run once.
    """
    plans: list[InputPlan] = []
    notes: list[str] = []
    seen: set[tuple[int, str]] = set()
    for batch in batches:
        effective = effective_batch(specs, batch)
        if effective != batch:
            notes.append(f"batch {batch} requested, but the model fixes axis 0 to {effective}")
        for fill in fills:
            if (effective, fill) in seen:
                continue
            seen.add((effective, fill))
            plans.append(replace(plan, batch=effective, fill=fill))  # type: ignore[arg-type]
    return plans, notes


def compare_runners(
    candidate: Runner,
    reference: Runner,
    *,
    tolerance: Tolerance,
    batches: Sequence[int] = (1,),
    plan: InputPlan | None = None,
    fills: Sequence[str] = ("random",),
    data: Sequence[tuple[str, Feeds]] | None = None,
    lsb: int = 0,
) -> CompareReport:
    """Run both (already active) runners on identical inputs and compare every output.

    Inputs come from the reference's signature. Each batch size in ``batches`` is tried; when the
    model fixes its batch axis the report notes the size actually used instead of pretending.
    With ``data`` (label, feeds) pairs, those real inputs are used instead of generated ones.
    Integer outputs are compared in LSBs and pass within ``lsb`` (0: exact).
    """
    plan = plan or InputPlan()
    report = CompareReport(candidate=candidate.name, reference=reference.name, tolerance=tolerance, lsb=lsb)
    report.signature = compare_signatures(candidate, reference)
    blocker = cannot_run(candidate, reference)
    if blocker:
        report.notes.append(f"outputs not compared: {blocker}")
        return report
    if data is not None:
        for label, feeds in data:
            report.runs.append(compare_feeds(candidate, reference, feeds, tolerance, label, lsb=lsb))
        return report
    plans, report.notes = plan_runs(reference.inputs, batches=batches, fills=fills, plan=plan)
    for run_plan in plans:
        feeds = generate_feeds(reference.inputs, run_plan)
        run = compare_feeds(candidate, reference, feeds, tolerance, run_plan.fill, lsb=lsb)
        run.inputs = run_plan.describe(reference.inputs)
        report.runs.append(run)
    return report


def compare_feeds(
    candidate: Runner, reference: Runner, feeds: Feeds, tolerance: Tolerance, label: str, *, lsb: int = 0
) -> BatchComparison:
    """Run both runners on ``feeds`` and compare every output."""
    ref_out = reference.infer(feeds)
    cand_out = candidate.infer(feeds)
    diffs = diff_outputs(cand_out, ref_out, tolerance, lsb=lsb)
    batch = feeds_batch(reference.inputs, feeds)
    inputs = {k: {"shape": list(v.shape), "dtype": str(v.dtype), "values": label} for k, v in feeds.items()}
    logger.debug("compared batch %d (%s): %s", batch, label, [d.reason for d in diffs])
    return BatchComparison(batch, label, inputs, diffs)


# signatures, symbolic and concrete ------------------------------------------------------------


@dataclass
class TensorSignature:
    """One input or output as each side declares it, and how the two differ.

    ``differences`` break the contract (a name, dtype, rank or size a caller relies on);
    ``notes`` are worth knowing but harmless (a renamed symbolic axis, a fixed axis made dynamic).
    """

    kind: str
    name: str
    candidate: TensorSpec | None
    reference: TensorSpec | None
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "candidate": _spec_dict(self.candidate),
            "reference": _spec_dict(self.reference),
            "passed": self.passed,
            "differences": self.differences,
            "notes": self.notes,
        }


def _spec_dict(spec: TensorSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    return {"dtype": str(spec.dtype), "shape": list(spec.shape) if spec.shape is not None else None}


@dataclass
class SignatureCheck:
    """Every input and output of both sides, side by side, with the differences listed."""

    tensors: list[TensorSignature] = field(default_factory=list)
    #: Differences not about one tensor (the number of inputs or outputs).
    counts: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.counts and all(t.passed for t in self.tensors)

    def differences(self) -> list[str]:
        """Every difference as a sentence naming its tensor."""
        return [*self.counts, *(f"{t.kind} '{t.name}': {d}" for t in self.tensors for d in t.differences)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "counts": self.counts,
            "tensors": [t.to_dict() for t in self.tensors],
        }


def check_signature(candidate: Runner, reference: Runner) -> SignatureCheck:
    """Names, counts, dtypes and shapes — symbolic and concrete — of both sides, per tensor.

    A dynamic input axis that became fixed (``['batch', 3, 224, 224]`` against ``[1, 3, 224, 224]``)
    is a difference: callers that send another batch size break. Shape changes on outputs (rank,
    sizes, fixed axes) are notes, because engines infer output shapes to different degrees; the
    runs compare the real output shapes. Names, counts and dtypes are differences everywhere.
    """
    check = SignatureCheck()
    for kind, cand, ref in (
        ("input", candidate.inputs, reference.inputs),
        ("output", candidate.outputs, reference.outputs),
    ):
        if len(cand) != len(ref):
            check.counts.append(f"{kind} count: candidate has {len(cand)}, reference has {len(ref)}")
        cand_by_name = {s.name: s for s in cand}
        ref_names = {s.name for s in ref}
        for spec in ref:
            check.tensors.append(_tensor_signature(kind, spec.name, cand_by_name.get(spec.name), spec))
        for spec in cand:
            if spec.name not in ref_names:
                check.tensors.append(_tensor_signature(kind, spec.name, spec, None))
    return check


def _tensor_signature(kind: str, name: str, cand: TensorSpec | None, ref: TensorSpec | None) -> TensorSignature:
    row = TensorSignature(kind, name, cand, ref)
    if cand is None or ref is None:
        row.differences.append(f"exists only in the {'reference' if cand is None else 'candidate'}")
        return row
    if cand.dtype != ref.dtype:
        row.differences.append(f"dtype {cand.dtype} in the candidate, {ref.dtype} in the reference")
    if cand.shape is None or ref.shape is None:
        if cand.shape != ref.shape:
            side = "candidate" if cand.shape is None else "reference"
            row.notes.append(f"rank unknown in the {side}: {cand.shape_str()} vs {ref.shape_str()}")
        return row
    # Declared output shapes are what each engine inferred (ONNX Runtime repeats the file's, which
    # can be wrong); the runs compare the real ones. So shape changes on outputs are notes.
    shape_problems = row.differences if kind == "input" else row.notes
    if len(cand.shape) != len(ref.shape):
        shape_problems.append(
            f"rank {len(cand.shape)} {cand.shape_str()} in the candidate, {len(ref.shape)} {ref.shape_str()} "
            "in the reference"
        )
        return row
    for axis, (c, r) in enumerate(zip(cand.shape, ref.shape, strict=True)):
        _compare_axis(row, shape_problems, axis, c, r)
    return row


def _compare_axis(row: TensorSignature, problems: list[str], axis: int, cand: Dim, ref: Dim) -> None:
    if isinstance(cand, int) and isinstance(ref, int):
        if cand != ref:
            problems.append(f"axis {axis} is {cand} in the candidate, {ref} in the reference")
    elif isinstance(cand, int):
        problems.append(f"dynamic axis {axis} ({_dim_text(ref)}) became fixed to {cand} in the candidate")
    elif isinstance(ref, int):
        row.notes.append(f"fixed axis {axis} ({ref}) is dynamic ({_dim_text(cand)}) in the candidate")
    elif isinstance(cand, str) and isinstance(ref, str) and cand != ref:
        row.notes.append(f"axis {axis} is named '{cand}' in the candidate, '{ref}' in the reference")


def _dim_text(dim: Dim) -> str:
    return f"'{dim}'" if isinstance(dim, str) else "unnamed"


# batch consistency ----------------------------------------------------------------------------


@dataclass
class RowCheck:
    """One output at batch N against the same samples run one at a time."""

    output: str
    #: Rows (samples) whose output at batch N differs from the same sample at batch 1.
    rows_differing: list[int] = field(default_factory=list)
    #: The diff of the worst row (None when the rows could not be matched; see ``note``).
    worst: OutputDiff | None = None
    #: Worst row index.
    worst_row: int | None = None
    note: str | None = None

    @property
    def passed(self) -> bool:
        return not self.rows_differing

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {
            "output": self.output,
            "passed": self.passed,
            "rows_differing": self.rows_differing,
            "worst_row": self.worst_row,
            "max_abs": None if worst is None else _json_number(worst.max_abs),
            "max_lsb": None if worst is None else worst.max_lsb,
            "reason": None if worst is None else worst.reason,
            "note": self.note,
        }


def _json_number(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


@dataclass
class BatchConsistency:
    """Does one runner give each sample the same output at batch N as at batch 1?"""

    side: str
    runner: str
    batch: int
    fill: str
    rows: list[int]
    outputs: list[RowCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "runner": self.runner,
            "batch": self.batch,
            "fill": self.fill,
            "rows_checked": self.rows,
            "passed": self.passed,
            "outputs": [o.to_dict() for o in self.outputs],
        }


def check_batch_consistency(
    runner: Runner,
    feeds: Feeds,
    *,
    tolerance: Tolerance,
    lsb: int = 0,
    side: str = "candidate",
    fill: str = "data",
    max_rows: int = 8,
) -> BatchConsistency:
    """Run ``feeds`` (batch N) on one active runner, then each row alone, and compare.

    Catches "batch 1 fine, batch N wrong" even for a single model: a reshape that mixes rows, a
    batch axis folded into another. At most ``max_rows`` rows are re-run (first and last always).
    Outputs whose batch axis cannot be matched get a note instead of a verdict.
    """
    if max_rows < 1:
        raise ConfigError(f"max_rows must be >= 1, got {max_rows}")
    batch = feeds_batch(runner.inputs, feeds)
    rows = _rows_to_check(batch, max_rows)
    result = BatchConsistency(side, runner.name, batch, fill, rows)
    batched = runner.infer(feeds)
    checks = {name: RowCheck(name) for name in batched}
    for row in rows:
        single = runner.infer(_row_feeds(runner.inputs, feeds, row, batch))
        for name, whole in batched.items():
            _check_row(checks[name], whole, single.get(name), row, batch, tolerance, lsb)
    result.outputs = list(checks.values())
    return result


def _rows_to_check(batch: int, max_rows: int) -> list[int]:
    """Every row, or ``max_rows`` spread evenly from the first to the last."""
    if batch <= max_rows:
        return list(range(batch))
    if max_rows == 1:
        return [0]
    return sorted({round(i * (batch - 1) / (max_rows - 1)) for i in range(max_rows)})


def _row_feeds(specs: Sequence[TensorSpec], feeds: Feeds, row: int, batch: int) -> dict[str, Any]:
    """Row ``row`` of every batched input (batch axis kept, size 1); unbatched inputs as they are."""
    labels = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], str)}
    by_name = {s.name: s for s in specs}
    out: dict[str, Any] = {}
    for name, array in feeds.items():
        spec = by_name.get(name)
        axis = _input_batch_axis(spec, labels, array, batch) if spec is not None else None
        if axis is None:
            out[name] = array
            continue
        index: tuple[slice, ...] = (slice(None),) * axis + (slice(row, row + 1),)
        out[name] = np.ascontiguousarray(array[index])
    return out


def _input_batch_axis(spec: TensorSpec, labels: set[str], array: Any, batch: int) -> int | None:
    if not spec.shape:
        return None
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int) or array.shape[axis] != batch:
            continue
        if dim in labels or axis == 0:
            return axis
    return None


def _output_batch_axis(whole: tuple[int, ...], single: tuple[int, ...], batch: int) -> int | None:
    if len(whole) != len(single):
        return None
    for axis in range(len(whole)):
        same_elsewhere = whole[:axis] == single[:axis] and whole[axis + 1 :] == single[axis + 1 :]
        if whole[axis] == batch and single[axis] == 1 and same_elsewhere:
            return axis
    return None


def _check_row(
    check: RowCheck,
    whole: Any,
    single: Any,
    row: int,
    batch: int,
    tolerance: Tolerance,
    lsb: int,
) -> None:
    if single is None:
        check.note = "missing from the batch-1 outputs"
        return
    axis = _output_batch_axis(whole.shape, single.shape, batch)
    if axis is None:
        if whole.shape != single.shape:
            check.note = (
                f"rows cannot be matched: shape {list(whole.shape)} at batch {batch}, {list(single.shape)} at batch 1"
            )
            return
        part = whole  # not batched: the same whole tensor is expected at any batch size
    else:
        index: tuple[slice, ...] = (slice(None),) * axis + (slice(row, row + 1),)
        part = whole[index]
    diff = diff_array(check.output, part, single, tolerance, lsb=lsb)
    if not diff.passed:
        check.rows_differing.append(row)
    if check.worst is None or _badness(diff) > _badness(check.worst):
        check.worst, check.worst_row = diff, row


def _badness(diff: OutputDiff) -> tuple[bool, float]:
    size = float(diff.max_lsb) if diff.max_lsb is not None else diff.max_abs
    return (not diff.passed, size if math.isfinite(size) else math.inf)
