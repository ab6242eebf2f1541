"""The result of ``verify``: one section per check, findings in plain sentences, one verdict.

Sections hold what each check measured (signature, engines, outputs on generated and user data,
batch consistency, NaN/Inf, accuracy, speed). Findings are *derived* from the sections every time
they are asked for, so the verdict can never disagree with the numbers next to it. A finding is
either ``fail`` (the verdict fails) or ``warn`` (worth reading, does not fail).

Everything in :meth:`VerifyReport.to_dict` is a summary — statistics, counts and fixed-size
histograms, never a tensor — so the JSON stays a few kilobytes whatever the model's size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from modelport.verify.compare import BatchComparison, BatchConsistency, SignatureCheck
from modelport.verify.diff import HISTOGRAM_BINS, OutputDiff
from modelport.verify.tolerance import Tolerance

if TYPE_CHECKING:
    # Only a type here: importing it would load dataset reading (pydantic) with every report.
    from modelport.verify.accuracy import AccuracyReport

__all__ = ["DataRun", "Finding", "Latency", "NonFinite", "VerifyReport"]

Severity = Literal["fail", "warn"]
#: Sample names listed per failing data run (the count is always complete).
MAX_LISTED_SAMPLES = 20


@dataclass(frozen=True)
class Finding:
    """One sentence about one problem, and whether it fails the verdict."""

    check: str
    severity: Severity
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "severity": self.severity, "message": self.message}


@dataclass
class DataRun:
    """Candidate against reference on every sample of the user's data, folded into one comparison."""

    source: str
    samples: int
    comparison: BatchComparison
    #: How many samples had at least one failing output.
    failed_count: int = 0
    #: Names of the first failing samples (at most :data:`MAX_LISTED_SAMPLES`).
    failed_samples: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "samples": self.samples,
            "passed": self.passed,
            "failed_count": self.failed_count,
            "failed_samples": self.failed_samples,
            "inputs": self.comparison.inputs,
            "outputs": [d.to_dict() for d in self.comparison.diffs],
        }


@dataclass(frozen=True)
class Latency:
    """Mean engine time of one side at one batch size, over the runs verify made (informational)."""

    side: str
    runner: str
    batch: int
    runs: int
    mean_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "runner": self.runner,
            "batch": self.batch,
            "runs": self.runs,
            "mean_ms": self.mean_ms,
        }


@dataclass(frozen=True)
class NonFinite:
    """NaN / Inf seen in one output of one side (the run with the most of them)."""

    output: str
    side: str
    nan: int
    inf: int
    #: Where: "batch 4, realistic inputs" or "user data".
    where: str
    #: The other side's counts in that run.
    other_nan: int
    other_inf: int
    #: Whether the output's comparison failed in that run because non-finite values differ.
    mismatched: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "side": self.side,
            "nan": self.nan,
            "inf": self.inf,
            "where": self.where,
            "other_side_nan": self.other_nan,
            "other_side_inf": self.other_inf,
            "mismatched": self.mismatched,
        }


@dataclass
class VerifyReport:
    """Every check ``verify`` made on a candidate against a reference; see :attr:`findings`."""

    candidate: str
    reference: str
    tolerance: Tolerance
    lsb: int = 0
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    signature: SignatureCheck = field(default_factory=SignatureCheck)
    #: Candidate against reference on generated inputs, one per (batch, fill).
    runs: list[BatchComparison] = field(default_factory=list)
    data: DataRun | None = None
    batch_consistency: list[BatchConsistency] = field(default_factory=list)
    accuracy: AccuracyReport | None = None
    #: Largest accepted drop of the accuracy score (candidate - reference >= -max_accuracy_drop).
    max_accuracy_drop: float = 0.0
    speed: list[Latency] = field(default_factory=list)
    #: Checks that could not run, each a failure ("outputs not compared: ...").
    problems: list[str] = field(default_factory=list)
    #: Things to know that do not fail the verdict ("batch 4 requested, but the model fixes ...").
    notes: list[str] = field(default_factory=list)

    # verdict ----------------------------------------------------------------------------------
    @property
    def findings(self) -> list[Finding]:
        """Every problem as a sentence: failures first, then warnings."""
        found = [
            *(Finding("setup", "fail", p) for p in self.problems),
            *(Finding("signature", "fail", d) for d in self.signature.differences()),
            *_output_findings(self.runs),
            *_data_findings(self.data),
            *_nonfinite_findings(self.nonfinite()),
            *_batch_findings(self.batch_consistency),
            *_accuracy_findings(self.accuracy, self.max_accuracy_drop),
            *(Finding("setup", "warn", n) for n in self.notes),
        ]
        return sorted(found, key=lambda f: f.severity != "fail")

    @property
    def passed(self) -> bool:
        return not any(f.severity == "fail" for f in self.findings)

    @property
    def verdict(self) -> str:
        failures = sum(f.severity == "fail" for f in self.findings)
        if failures:
            return f"FAIL: {failures} problem{'s' if failures != 1 else ''} found"
        compared = len(self.runs) + (self.data.samples if self.data else 0)
        return f"PASS: {compared} comparison{'s' if compared != 1 else ''} within tolerance"

    # sections -------------------------------------------------------------------------------
    def nonfinite(self) -> list[NonFinite]:
        """NaN/Inf per output and side, from every comparison run (generated and user data)."""
        worst: dict[tuple[str, str], NonFinite] = {}
        for run, where in self.comparisons():
            for d in run.diffs:
                for side, nan, inf, other_nan, other_inf in (
                    ("reference", d.nan_reference, d.inf_reference, d.nan_candidate, d.inf_candidate),
                    ("candidate", d.nan_candidate, d.inf_candidate, d.nan_reference, d.inf_reference),
                ):
                    if not (nan or inf):
                        continue
                    mismatched = d.reason.startswith("non-finite values differ")
                    entry = NonFinite(d.name, side, nan, inf, where, other_nan, other_inf, mismatched)
                    key = (d.name, side)
                    if key not in worst or (nan, inf, mismatched) > (
                        worst[key].nan,
                        worst[key].inf,
                        worst[key].mismatched,
                    ):
                        worst[key] = entry
        return sorted(worst.values(), key=lambda e: (e.output, e.side != "reference"))

    def comparisons(self) -> Iterable[tuple[BatchComparison, str]]:
        """Every candidate-against-reference comparison with where it ran ("batch 4, ones inputs")."""
        for run in self.runs:
            yield run, f"batch {run.batch}, {run.fill} inputs"
        if self.data is not None:
            yield self.data.comparison, "user data"

    def histograms(self) -> dict[str, list[int]]:
        """One error histogram per output: the counts summed over every comparison run."""
        sums: dict[str, list[int]] = {}
        for run, _ in self.comparisons():
            for d in run.diffs:
                if not d.histogram:
                    continue
                if d.name not in sums:
                    sums[d.name] = [0] * len(d.histogram)
                sums[d.name] = [a + b for a, b in zip(sums[d.name], d.histogram, strict=True)]
        return sums

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text (what ``--report`` writes)."""
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verdict": self.verdict,
            "candidate": self.candidate,
            "reference": self.reference,
            "tolerance": {"atol": self.tolerance.atol, "rtol": self.tolerance.rtol, "lsb": self.lsb},
            "findings": [f.to_dict() for f in self.findings],
            "engines": self.engines,
            "signature": self.signature.to_dict(),
            "outputs": {
                "generated": [r.to_dict() for r in self.runs],
                "data": self.data.to_dict() if self.data is not None else None,
            },
            "histogram_bins": list(HISTOGRAM_BINS),
            "batch_consistency": [b.to_dict() for b in self.batch_consistency],
            "nonfinite": [n.to_dict() for n in self.nonfinite()],
            "accuracy": self.accuracy.to_dict() if self.accuracy is not None else None,
            "speed": [s.to_dict() for s in self.speed],
            "problems": self.problems,
            "notes": self.notes,
        }


# findings -------------------------------------------------------------------------------------


def summarize_diff(d: OutputDiff) -> str:
    """The one number that says how far off an output is."""
    if d.max_lsb is not None:
        return f"{d.differing} element{'s' if d.differing != 1 else ''} differ by up to {d.max_lsb} LSB"
    if math.isnan(d.max_abs):
        return d.reason
    return f"max abs {d.max_abs:.3g} (needs atol >= {d.required_atol:.3g} at {d.tolerance})"


def _nonfinite_only(d: OutputDiff) -> bool:
    return d.reason.startswith("non-finite values differ")


def _output_findings(runs: list[BatchComparison]) -> list[Finding]:
    """One finding per failing output, naming the batch sizes and fills where it fails."""
    failing: dict[str, list[tuple[BatchComparison, OutputDiff]]] = {}
    passing: dict[str, set[int]] = {}
    for run in runs:
        for d in run.diffs:
            if d.passed:
                passing.setdefault(d.name, set()).add(run.batch)
            elif not _nonfinite_only(d):  # NaN/Inf have their own findings
                failing.setdefault(d.name, []).append((run, d))
    findings = []
    for name, bad in failing.items():
        failed_batches = sorted({run.batch for run, _ in bad})
        fills = ", ".join(dict.fromkeys(run.fill for run, _ in bad))
        worst = max(bad, key=lambda pair: _size(pair[1]))
        detail = summarize_diff(worst[1])
        fine = sorted(passing.get(name, set()) - set(failed_batches))
        batches = _join(failed_batches)
        if fine:
            message = (
                f"output '{name}' passes at batch {_join(fine)} but fails at batch {batches} ({fills} inputs): {detail}"
            )
        else:
            message = f"output '{name}' fails at batch {batches} ({fills} inputs): {detail}"
        findings.append(Finding("outputs", "fail", message))
    return findings


def _size(d: OutputDiff) -> float:
    value = float(d.max_lsb) if d.max_lsb is not None else d.max_abs
    return value if not math.isnan(value) else math.inf


def _join(values: Iterable[int]) -> str:
    return ", ".join(str(v) for v in values)


def _data_findings(data: DataRun | None) -> list[Finding]:
    if data is None:
        return []
    findings = []
    for d in data.comparison.diffs:
        if d.passed or _nonfinite_only(d):
            continue
        listed = ", ".join(data.failed_samples)
        more = (
            f" and {data.failed_count - len(data.failed_samples)} more"
            if data.failed_count > len(data.failed_samples)
            else ""
        )
        findings.append(
            Finding(
                "outputs",
                "fail",
                f"output '{d.name}' fails on user data {data.source} ({data.failed_count} of {data.samples} samples: "
                f"{listed}{more}): {summarize_diff(d)}",
            )
        )
    return findings


def _nonfinite_findings(entries: list[NonFinite]) -> list[Finding]:
    """NaN anywhere fails (in the reference too: a model that makes NaN is broken whatever the engine
    does); Inf fails where the two sides disagree, and is a warning where they agree."""
    findings = []
    sides = {(e.output, e.side) for e in entries}
    for e in entries:
        other = "candidate" if e.side == "reference" else "reference"
        if e.nan and (e.side == "reference" or e.mismatched or not e.other_nan):
            has = f"the {other} has {e.other_nan}" if e.other_nan else f"the {other} has none"
            findings.append(
                Finding("nan/inf", "fail", f"{e.side} output '{e.output}' contains {e.nan} NaN ({e.where}; {has})")
            )
        elif e.inf and e.mismatched and (e.side == "candidate" or (e.output, "candidate") not in sides):
            text = f"{e.side} output '{e.output}' has {e.inf} Inf where the {other} has {e.other_inf} ({e.where})"
            findings.append(Finding("nan/inf", "fail", text))
        elif e.inf and not e.mismatched and e.side == "reference" and not e.nan:
            text = f"output '{e.output}' contains {e.inf} Inf on both sides, at the same places ({e.where})"
            findings.append(Finding("nan/inf", "warn", text))
    return findings


def _batch_findings(checks: list[BatchConsistency]) -> list[Finding]:
    findings = []
    for check in checks:
        for row in check.outputs:
            who = f"{check.side} '{check.runner}'"
            if row.note:
                findings.append(Finding("batch consistency", "warn", f"{who}: output '{row.output}': {row.note}"))
            if row.passed or row.worst is None:
                continue
            rows = _join(row.rows_differing)
            findings.append(
                Finding(
                    "batch consistency",
                    "fail",
                    f"{who}: output '{row.output}' at batch {check.batch} differs from the same samples run at "
                    f"batch 1 in row{'s' if len(row.rows_differing) != 1 else ''} {rows} ({check.fill} inputs): "
                    f"{summarize_diff(row.worst)}",
                )
            )
    return findings


def _accuracy_findings(accuracy: AccuracyReport | None, max_drop: float) -> list[Finding]:
    if accuracy is None:
        return []
    what = accuracy.metric if accuracy.labelled else f"{accuracy.metric} agreement with the reference"
    change = (
        f"{what} {accuracy.reference_score:.4f} -> {accuracy.candidate_score:.4f} ({accuracy.delta:+.4f}) on "
        f"{accuracy.samples} samples"
    )
    names = ", ".join(c.name for c in accuracy.regressions[:MAX_LISTED_SAMPLES])
    more = len(accuracy.regressions) - MAX_LISTED_SAMPLES
    listed = f"{names}{f' and {more} more' if more > 0 else ''}"
    if accuracy.delta < -max_drop - 1e-12:
        allowed = f"allowed drop {max_drop:g}"
        return [
            Finding("accuracy", "fail", f"{change}, {allowed}; {_count(accuracy.regressions, 'regression')}: {listed}")
        ]
    if accuracy.regressions:
        return [Finding("accuracy", "warn", f"{change}; {_count(accuracy.regressions, 'regression')}: {listed}")]
    return []


def _count(items: Sized, noun: str) -> str:
    return f"{len(items)} {noun}{'s' if len(items) != 1 else ''}"
