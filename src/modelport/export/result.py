"""What an export produced and how it compares with eager PyTorch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelport.errors import ExportError
from modelport.ir.specs import TensorSpec
from modelport.verify.compare import BatchComparison
from modelport.verify.tolerance import Tolerance

__all__ = ["HINTS", "ExportResult", "Exporter"]

Exporter = Literal["dynamo", "legacy"]

#: What to try next when an exporter fails or its model disagrees with eager PyTorch.
HINTS = {
    "legacy": "try exporter='dynamo'; for an unsupported operator try a higher opset",
    "dynamo": "try exporter='legacy'; data-dependent Python control flow needs torch.cond or "
    "must be removed from forward",
}


@dataclass
class ExportResult:
    """What was exported where, and how it compares with eager PyTorch.

    ``comparisons`` holds one entry per batch size checked (the example inputs first).
    ``problems`` lists signature faults (a requested dynamic axis that came out static, a lost
    output); ``second_batch_skipped`` says why the second batch was not checked, if it was not.
    """

    path: Path
    exporter: Exporter
    opset: int
    tolerance: Tolerance
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    comparisons: list[BatchComparison] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    second_batch_skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No signature problem, and every checked batch within tolerance."""
        return not self.problems and bool(self.comparisons) and all(c.passed for c in self.comparisons)

    def failures(self) -> list[str]:
        """One line per problem and per output outside tolerance."""
        lines = list(self.problems)
        for comparison in self.comparisons:
            for diff in comparison.diffs:
                if not diff.passed:
                    lines.append(
                        f"batch {comparison.batch}, output '{diff.name}': "
                        f"max abs {diff.max_abs:.3g}, max rel {diff.max_rel:.3g} — {diff.reason}"
                    )
        return lines

    def raise_for_mismatch(self) -> None:
        """Raise :class:`ExportError` naming every failing output unless the export passed."""
        if self.passed:
            return
        if not self.comparisons and not self.problems:
            raise ExportError(f"the export to '{self.path}' was not compared with eager PyTorch")
        details = "\n  ".join(self.failures())
        raise ExportError(
            f"the model exported to '{self.path}' ({self.exporter} exporter) does not match eager "
            f"PyTorch ({self.tolerance}):\n  {details}\n{self._hint()}"
        )

    def _hint(self) -> str:
        batches = [(c.batch, c.passed) for c in self.comparisons]
        tracer = [w for w in self.warnings if w.startswith("TracerWarning")]
        if len(batches) > 1 and batches[0][1] and not all(ok for _, ok in batches):
            bad = next(b for b, ok in batches if not ok)
            hint = (
                f"It matches at batch {batches[0][0]} but not at batch {bad}: forward turned a "
                "batch-dependent size into a constant at export time — keep sizes as tensors "
                "(no int(), .item() or .tolist() on shapes) or try exporter='dynamo'"
            )
            if tracer:
                hint += f". The tracer warned: {tracer[0].removeprefix('TracerWarning: ')}"
            return hint
        if self.problems:
            return "Fix the signature problems above first; " + HINTS[self.exporter]
        return (
            "Small errors are arithmetic noise: loosen the tolerance to the required atol shown. "
            f"Large errors mean an operator was translated differently: {HINTS[self.exporter]}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "exporter": self.exporter,
            "opset": self.opset,
            "passed": self.passed,
            "tolerance": {"atol": self.tolerance.atol, "rtol": self.tolerance.rtol},
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "problems": list(self.problems),
            "second_batch_skipped": self.second_batch_skipped,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }
