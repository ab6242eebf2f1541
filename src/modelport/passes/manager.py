"""Run passes one at a time, verify each, keep only what is correct, smaller and not slower.

For every pass the manager works on a copy of the current model and then decides:

1. **Correct** — the copy is verified against the input model (see :mod:`.verification`: the
   whole model on generated inputs at batch 1 and a second batch size, or, for models beyond the
   memory budget, the rewritten region alone) with the tolerance accumulated by the passes
   accepted so far plus this pass's own. A pass that exceeds it, or raises, is rolled back.
2. **Not bigger** — a pass that adds nodes is reverted (node count includes subgraphs).
3. **Not slower on the target** — a pass marked ``may_slow`` (a wider Conv, a Gemm turned into a
   Conv, engine-specific fusions) is timed side by side with the model before it, on the target
   engine (the rewritten region, see :mod:`.timing`), and reverted when it is slower. The
   target ``generic`` is timed on ONNX Runtime with its own graph optimizations off (the graph
   as any engine receives it); ``onnxruntime`` at ORT's default level, as it will run. A timed
   pass that removes no node must be clearly faster (3 %), so that a rewrite within timing
   noise is not kept on one run and dropped on the next.

Every decision is a :class:`PassStep` in the report; the optimizer never returns a model it did
not verify (unless the caller turned verification off, and then every step says so).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

import onnx_ir as ir

from modelport.errors import PassError
from modelport.ir.serde import clone, serialized_size, weight_bytes
from modelport.ir.summary import node_count
from modelport.passes.base import Pass
from modelport.passes.timing import Timer
from modelport.passes.verification import Check, FullVerifier, RegionVerifier
from modelport.verify.inputs import (
    InputPlan,
    integer_input_ranges,
    merge_ranges,
)
from modelport.verify.tolerance import EXACT, Tolerance

__all__ = [
    "TARGETS",
    "OptimizeResult",
    "PassStep",
    "default_passes",
    "model_stats",
    "optimize",
    "require_verified",
]

logger = logging.getLogger(__name__)

Target = Literal["generic", "onnxruntime"]
VerifyMode = Literal["auto", "full", "region", "off"]

#: What ``target`` may be.
TARGETS: tuple[str, ...] = ("generic", "onnxruntime")

#: Above this many bytes of weights, ``verify="auto"`` verifies rewritten regions instead of
#: running the whole model once per pass.
REGION_VERIFY_BYTES = 512 << 20

#: A may-slow pass is kept only if its median latency is within this factor of the model before.
SLOWER_MARGIN = 1.02
#: ... and, when it removes no node, only if it is at least this much faster.
FASTER_MARGIN = 0.97


@dataclass
class PassStep:
    """What one pass did."""

    name: str
    status: str  # "applied", "no change", "rolled back", "reverted", "failed"
    nodes_before: int
    nodes_after: int
    bytes_before: int
    bytes_after: int
    seconds: float
    max_abs_error: float | None = None
    tolerance: str = ""
    reason: str = ""
    verification: str = ""
    latency_ms: tuple[float, float] | None = None  # (before, after) when the pass was timed
    timed: str = ""  # what was timed: the rewritten region or the whole model

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class OptimizeResult:
    """The optimized model and the per-pass report."""

    model: ir.Model
    target: str = "generic"
    steps: list[PassStep] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    verification: str = ""
    verified_batches: list[int] = field(default_factory=list)
    max_abs_error: float | None = None  # of the optimized model against the input model
    seconds: float = 0.0

    @property
    def rolled_back(self) -> list[PassStep]:
        """Passes undone because they broke the model (not those reverted for size or speed)."""
        return [s for s in self.steps if s.status in ("rolled back", "failed")]

    @property
    def reverted(self) -> list[PassStep]:
        """Passes undone because they added nodes or were slower on the target."""
        return [s for s in self.steps if s.status == "reverted"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "verification": self.verification,
            "verified_batches": self.verified_batches,
            "max_abs_error": self.max_abs_error,
            "seconds": self.seconds,
            "steps": [s.to_dict() for s in self.steps],
        }


def model_stats(model: ir.Model) -> tuple[int, int]:
    """(node count including subgraphs, serialized size in bytes; no weight is read)."""
    return node_count(model), serialized_size(model)


def default_passes(target: str = "generic") -> list[Pass]:
    """The default pipeline for ``target``."""
    from modelport.passes import pipeline

    return list(pipeline(target))


Verifier = FullVerifier | RegionVerifier


def _choose_verifier(model: ir.Model, plan: InputPlan, batches: Sequence[int], mode: VerifyMode) -> Verifier | None:
    if mode == "off":
        return None
    if mode == "region" or (mode == "auto" and weight_bytes(model) > REGION_VERIFY_BYTES):
        return RegionVerifier(model, plan, batches)
    if mode not in ("auto", "full"):
        raise PassError(f"unknown verification mode '{mode}' — choose auto, full, region or off")
    return FullVerifier(model, plan, batches)


def optimize(
    model: ir.Model,
    passes: Sequence[Pass | str] | None = None,
    *,
    target: str = "generic",
    plan: InputPlan | None = None,
    batches: Sequence[int] = (1, 2),
    verify: VerifyMode | bool = "auto",
    verify_each: bool = False,
    measure: bool = True,
    progress: Callable[[str], None] | None = None,
) -> OptimizeResult:
    """Optimize a copy of ``model`` (the argument is left untouched) and verify every pass.

    ``passes`` are Pass instances or registry names (default: the pipeline for ``target``,
    ``"generic"`` — standard ONNX for any engine — or ``"onnxruntime"``, which may use ORT contrib
    ops). Passes that do not support the target are skipped and reported. ``verify`` is
    ``"auto"`` (whole model, or rewritten regions for models over 512 MiB of weights), ``"full"``,
    ``"region"`` or ``"off"`` (only for models that cannot run here; every step then says so).
    ``measure=False`` skips timing may-slow passes (they are then kept when correct and smaller).

    Verification is optimistic unless ``verify_each``: the passes run, and the result is checked
    once against the input model with the tolerance of every pass applied. Only if that check
    fails is the pipeline replayed with a check after every pass, which rolls back the culprit.
    Either way the returned model is within the accumulated tolerance of the input; the replay
    is what names the pass responsible.
    """
    from modelport.passes import create_pass

    if target not in TARGETS:
        raise PassError(f"unknown target '{target}' — choose from: {', '.join(TARGETS)}")
    mode: VerifyMode = "auto" if verify is True else "off" if verify is False else verify
    start = time.perf_counter()
    chosen = [create_pass(p) if isinstance(p, str) else p for p in (passes or default_passes(target))]
    current = clone(model)
    plan = plan or InputPlan()
    plan = replace(plan, int_ranges=merge_ranges(integer_input_ranges(current), plan.int_ranges))
    verifier = _choose_verifier(current, plan, batches, mode)
    nodes0, bytes0 = model_stats(current)
    result = OptimizeResult(
        model=current,
        target=target,
        nodes_before=nodes0,
        bytes_before=bytes0,
        verification=verifier.kind if verifier else "off",
    )
    timer = Timer(target, plan) if measure else None
    optimistic = verifier is not None and not verify_each
    if verifier is not None and not optimistic:
        result.verified_batches = list(verifier.batches)  # a model ORT cannot run fails here, first
    note = "checked once with the whole pipeline" if optimistic else "not verified (verify='off')"
    run = partial(_run_all, chosen, current, (nodes0, bytes0), target, timer=timer, progress=progress, note=note)
    state, result.steps = run(None if optimistic else verifier)
    if verifier is not None:
        # The input model's reference run (in the background for the whole-model check) must
        # have worked: a model ONNX Runtime cannot run is the caller's error, not a pass's.
        result.verified_batches = list(verifier.batches)
    if optimistic and state.model is not current:
        assert verifier is not None
        check = _final_check(verifier, current, state)
        if check.passed:
            result.max_abs_error = check.max_abs
            result.verification = f"{verifier.kind}, once after all passes: {check.detail}"
        else:
            logger.warning("optimized model failed verification (%s); replaying pass by pass", check.reason)
            state, result.steps = run(verifier)
            result.verification = f"{verifier.kind}, after every pass (the one-shot check failed: {check.reason})"
    result.model = state.model
    result.nodes_after = state.nodes
    result.bytes_after = model_stats(state.model)[1] if state.model is not current else bytes0
    result.seconds = time.perf_counter() - start
    return result


def _run_all(
    chosen: Sequence[Pass],
    model: ir.Model,
    stats: tuple[int, int],
    target: str,
    verifier: Verifier | None,
    *,
    timer: Timer | None,
    progress: Callable[[str], None] | None,
    note: str,
) -> tuple[_State, list[PassStep]]:
    state = _State(model, stats[0], stats[1], weight_bytes(model), EXACT)
    steps: list[PassStep] = []
    i, replay_until = 0, 0
    while i < len(chosen):
        length = 0 if i < replay_until else _chain_length(chosen, i, verifier, timer)
        if length > 1:
            chained = _run_chained(chosen[i : i + length], state, target, progress, note)
            if chained is not None:
                steps.extend(chained)
                i += length
                continue
            replay_until = i + length  # something went wrong: one pass at a time, each on a copy
        p = chosen[i]
        i += 1
        if progress:
            progress(p.name)
        if target not in p.targets:
            steps.append(_skipped(p, state, f"not for target '{target}'"))
            continue
        steps.append(_run_one(p, state, verifier, timer, note))
    return state, steps


def _chain_length(chosen: Sequence[Pass], start: int, verifier: Verifier | None, timer: Timer | None) -> int:
    """How many passes from ``start`` on may run one after the other on a single copy.

    A pass needs a copy of the model before it only to go back to: when it is checked on its own
    (``verify_each``) or timed. Otherwise it is undone only if it fails or adds nodes, which is
    rare, so a run of such passes shares one copy and is replayed pass by pass if that happens.
    """
    if verifier is not None:
        return 0
    end = start
    while end < len(chosen) and not (chosen[end].may_slow and timer is not None):
        end += 1
    return end - start


def _run_chained(
    group: Sequence[Pass], state: _State, target: str, progress: Callable[[str], None] | None, note: str
) -> list[PassStep] | None:
    """Run ``group`` in order on one copy of the model; None (``state`` untouched) when a pass
    fails or adds nodes, and the group must be replayed one pass at a time."""
    work: ir.Model | None = state.spare  # copied when the first pass has something to do
    state.spare = None
    nodes, size, weights, budget = state.nodes, state.size, state.weights, state.budget
    steps = []
    for p in group:
        if progress:
            progress(p.name)
        if target not in p.targets:
            steps.append(_skipped(p, replace(state, nodes=nodes, size=size), f"not for target '{target}'"))
            continue
        t0 = time.perf_counter()
        step = PassStep(p.name, "no change", nodes, nodes, size, size, 0.0, tolerance=str(p.tolerance))
        try:
            if p.applicable(work or state.model):
                work = work or clone(state.model)
                changed = p(work).modified
            else:
                changed = False
        except Exception as e:
            logger.debug("pass %s failed in a chain; replaying the chain pass by pass: %s", p.name, e)
            return None
        if changed:
            assert work is not None
            after = node_count(work)
            if after > nodes:
                logger.debug("pass %s adds nodes; replaying the chain pass by pass", p.name)
                return None
            now = weight_bytes(work)
            step.status, step.verification = "applied", note
            step.nodes_after, step.bytes_after = after, size + now - weights
            nodes, size, weights, budget = after, step.bytes_after, now, budget + p.tolerance
        step.seconds = time.perf_counter() - t0
        steps.append(step)
    if work is not None and any(step.status == "applied" for step in steps):
        state.model, state.nodes, state.size, state.weights, state.budget = work, nodes, size, weights, budget
    elif work is not None:
        state.spare = work
    return steps


def _final_check(verifier: Verifier, model: ir.Model, state: _State) -> Check:
    try:
        return verifier.check(model, state.model, state.budget)
    except Exception as e:
        return Check(False, reason=f"the optimized model does not run: {e}")


@dataclass
class _State:
    """The model accepted so far and what is known about it."""

    model: ir.Model
    nodes: int
    size: int  # serialized bytes (estimated between passes from the change in weight bytes)
    weights: int
    budget: Tolerance
    #: A copy of ``model`` a pass left unchanged, so that the next pass needs no fresh copy.
    #: (Should a pass change it and say it did not, the change is still in the final check.)
    spare: ir.Model | None = None


def _skipped(p: Pass, state: _State, reason: str) -> PassStep:
    return PassStep(p.name, "skipped", state.nodes, state.nodes, state.size, state.size, 0.0, reason=reason)


def _run_one(p: Pass, state: _State, verifier: Verifier | None, timer: Timer | None, note: str) -> PassStep:
    t0 = time.perf_counter()
    step = PassStep(p.name, "no change", state.nodes, state.nodes, state.size, state.size, 0.0)
    step.tolerance = str(p.tolerance)
    try:
        if not p.applicable(state.model):
            step.seconds = time.perf_counter() - t0
            return step
        candidate, state.spare = state.spare or clone(state.model), None
        changed = p(candidate).modified
    except Exception as e:  # a broken pass must not take the model down with it
        step.status, step.reason = "failed", f"{type(e).__name__}: {e}"
        step.seconds = time.perf_counter() - t0
        logger.warning("pass %s failed and was rolled back: %s", p.name, e)
        return step
    if not changed:
        state.spare = candidate  # still a copy of the accepted model: the next pass may use it
        step.seconds = time.perf_counter() - t0
        return step
    nodes = node_count(candidate)
    weights = weight_bytes(candidate)
    step.nodes_after, step.bytes_after = nodes, state.size + weights - state.weights
    if nodes > state.nodes:
        return _undo(step, t0, "reverted", f"adds {nodes - state.nodes} node(s)")
    allowed = state.budget + p.tolerance
    if verifier is None:
        step.verification = note
    else:
        try:
            check = verifier.check(state.model, candidate, allowed)
        except Exception as e:
            return _undo(step, t0, "rolled back", f"the rewritten model does not run: {e}")
        step.max_abs_error, step.tolerance, step.verification = check.max_abs, str(allowed), check.detail
        if not check.passed:
            logger.warning("pass %s rolled back: %s", p.name, check.reason)
            return _undo(step, t0, "rolled back", check.reason)
    if p.may_slow and timer is not None:
        fewer = nodes < state.nodes
        timing = timer.compare(state.model, candidate, threshold=SLOWER_MARGIN if fewer else FASTER_MARGIN)
        step.latency_ms, step.timed = (timing.before_ms, timing.after_ms), timing.scope
        reason = _speed_verdict(timing.before_ms, timing.after_ms, fewer_nodes=fewer)
        if reason:
            return _undo(step, t0, "reverted", reason)
    step.status = "applied"
    step.seconds = time.perf_counter() - t0
    state.model, state.nodes, state.size, state.weights = candidate, nodes, step.bytes_after, weights
    state.budget = allowed if verifier is not None else state.budget + p.tolerance
    return step


def _speed_verdict(before_ms: float, after_ms: float, *, fewer_nodes: bool) -> str:
    """Why a timed rewrite is reverted ("" to keep it).

    A rewrite that removes nodes is kept unless it is slower; one that does not must be clearly
    faster, so that a rewrite within timing noise is not kept on one run and dropped on the next.
    """
    if after_ms > before_ms * SLOWER_MARGIN:
        return f"slower on the target: {after_ms:.3f} ms vs {before_ms:.3f} ms"
    if not fewer_nodes and after_ms > before_ms * FASTER_MARGIN:
        return f"no fewer nodes and not clearly faster: {after_ms:.3f} ms vs {before_ms:.3f} ms"
    return ""


def _undo(step: PassStep, t0: float, status: str, reason: str) -> PassStep:
    logger.info("pass %s %s: %s", step.name, status, reason)
    step.status, step.reason = status, reason
    step.nodes_after, step.bytes_after = step.nodes_before, step.bytes_before
    step.seconds = time.perf_counter() - t0
    return step


def require_verified(result: OptimizeResult) -> None:
    """Raise PassError if any pass had to be rolled back (for callers that want strictness)."""
    if result.rolled_back:
        names = ", ".join(f"{s.name} ({s.reason})" for s in result.rolled_back)
        raise PassError(f"passes rolled back: {names}")
