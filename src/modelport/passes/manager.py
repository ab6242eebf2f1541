"""Run passes one at a time, verify each against the input model, roll back what breaks it.

Reference outputs are computed once from the input model (ONNX Runtime, graph optimizations off,
so that ORT's own rewrites do not mask ours) at batch 1 and at a second batch size. After every
pass that changed the graph, the model is run on the same inputs and compared with the tolerance
accumulated by the passes accepted so far plus this pass's own. A pass that exceeds it, or that
raises, is rolled back and reported; the optimizer never returns a model it did not verify.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.errors import PassError
from modelport.ir.serde import clone, to_bytes
from modelport.passes.base import Pass
from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.diff import OutputDiff, diff_outputs
from modelport.verify.inputs import (
    InputPlan,
    effective_batch,
    generate_feeds,
    integer_input_ranges,
    merge_ranges,
)
from modelport.verify.tolerance import EXACT, Tolerance

__all__ = [
    "OptimizeResult",
    "PassStep",
    "default_passes",
    "model_stats",
    "optimize",
    "require_verified",
]

logger = logging.getLogger(__name__)


@dataclass
class PassStep:
    """What one pass did."""

    name: str
    status: str  # "applied", "no change", "rolled back", "failed"
    nodes_before: int
    nodes_after: int
    bytes_before: int
    bytes_after: int
    seconds: float
    max_abs_error: float | None = None
    tolerance: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class OptimizeResult:
    """The optimized model and the per-pass report."""

    model: ir.Model
    steps: list[PassStep] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    verified_batches: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rolled_back(self) -> list[PassStep]:
        return [s for s in self.steps if s.status in ("rolled back", "failed")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "verified_batches": self.verified_batches,
            "seconds": self.seconds,
            "steps": [s.to_dict() for s in self.steps],
        }


def model_stats(model: ir.Model) -> tuple[int, int]:
    """(node count including subgraphs, serialized size in bytes)."""
    nodes = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
    return nodes, len(to_bytes(model))


class _Verifier:
    """Reference outputs of the input model and comparison of candidates against them."""

    def __init__(self, model: ir.Model, plan: InputPlan, batches: Sequence[int]) -> None:
        self.feeds: list[dict[str, np.ndarray[Any, Any]]] = []
        self.reference: list[dict[str, np.ndarray[Any, Any]]] = []
        self.batches: list[int] = []
        with OrtRunner(model, graph_optimization="disable", name="input model") as runner:
            for requested in batches:
                batch = effective_batch(runner.inputs, requested)
                if batch in self.batches:
                    continue
                self.batches.append(batch)
                feeds = generate_feeds(runner.inputs, replace(plan, batch=batch))
                self.feeds.append(feeds)
                self.reference.append(runner.infer(feeds))

    def check(self, model: ir.Model, tolerance: Tolerance) -> tuple[bool, float, list[OutputDiff]]:
        diffs: list[OutputDiff] = []
        with OrtRunner(model, graph_optimization="disable", name="candidate") as runner:
            for feeds, reference in zip(self.feeds, self.reference, strict=True):
                diffs.extend(diff_outputs(runner.infer(feeds), reference, tolerance))
        worst = max((d.max_abs for d in diffs), default=0.0)
        return all(d.passed for d in diffs), worst, diffs


def default_passes() -> list[Pass]:
    from modelport.passes import DEFAULT_PIPELINE, create_pass

    return [create_pass(name) for name in DEFAULT_PIPELINE]


def optimize(
    model: ir.Model,
    passes: Sequence[Pass | str] | None = None,
    *,
    plan: InputPlan | None = None,
    batches: Sequence[int] = (1, 2),
    verify: bool = True,
    progress: Callable[[str], None] | None = None,
) -> OptimizeResult:
    """Optimize a copy of ``model`` (the argument is left untouched) and verify every pass.

    ``passes`` are Pass instances or registry names (default: :data:`DEFAULT_PIPELINE`).
    With ``verify=False`` passes are not checked numerically — only for models that cannot run
    here; the report then says so for every step.
    """
    from modelport.passes import create_pass

    start = time.perf_counter()
    chosen = [create_pass(p) if isinstance(p, str) else p for p in (passes or default_passes())]
    current = clone(model)
    plan = plan or InputPlan()
    plan = replace(plan, int_ranges=merge_ranges(integer_input_ranges(current), plan.int_ranges))
    verifier = _Verifier(current, plan, batches) if verify else None
    nodes0, bytes0 = model_stats(current)
    result = OptimizeResult(
        model=current,
        nodes_before=nodes0,
        bytes_before=bytes0,
        verified_batches=verifier.batches if verifier else [],
    )
    budget = EXACT
    stats = (nodes0, bytes0)
    for p in chosen:
        if progress:
            progress(p.name)
        step, current, budget = _run_one(p, current, stats, verifier, budget)
        stats = (step.nodes_after, step.bytes_after)  # equal to "before" when nothing was kept
        result.steps.append(step)
    result.model = current
    result.nodes_after, result.bytes_after = stats
    result.seconds = time.perf_counter() - start
    return result


def _run_one(
    p: Pass, current: ir.Model, stats: tuple[int, int], verifier: _Verifier | None, budget: Tolerance
) -> tuple[PassStep, ir.Model, Tolerance]:
    nodes, size = stats
    candidate = clone(current)
    t0 = time.perf_counter()
    step = PassStep(p.name, "no change", nodes, nodes, size, size, 0.0, tolerance=str(p.tolerance))
    try:
        changed = p(candidate).modified
    except Exception as e:  # a broken pass must not take the model down with it
        step.status, step.reason, step.seconds = (
            "failed",
            f"{type(e).__name__}: {e}",
            time.perf_counter() - t0,
        )
        logger.warning("pass %s failed and was rolled back: %s", p.name, e)
        return step, current, budget
    step.seconds = time.perf_counter() - t0
    if not changed:
        return step, current, budget
    step.nodes_after, step.bytes_after = model_stats(candidate)
    if verifier is None:
        step.status, step.reason = "applied", "not verified (verify=False)"
        return step, candidate, budget + p.tolerance
    allowed = budget + p.tolerance
    try:
        ok, worst, diffs = verifier.check(candidate, allowed)
    except Exception as e:
        step.status, step.reason = "rolled back", f"the rewritten model does not run: {e}"
        step.nodes_after, step.bytes_after = nodes, size
        return step, current, budget
    step.max_abs_error = worst
    step.tolerance = str(allowed)
    if not ok:
        bad = next(d for d in diffs if not d.passed)
        step.status, step.reason = "rolled back", f"output '{bad.name}': {bad.reason}"
        step.nodes_after, step.bytes_after = nodes, size
        logger.warning("pass %s changed outputs beyond %s and was rolled back", p.name, allowed)
        return step, current, budget
    step.status = "applied"
    return step, candidate, allowed


def require_verified(result: OptimizeResult) -> None:
    """Raise PassError if any pass had to be rolled back (for callers that want strictness)."""
    if result.rolled_back:
        names = ", ".join(f"{s.name} ({s.reason})" for s in result.rolled_back)
        raise PassError(f"passes rolled back: {names}")
