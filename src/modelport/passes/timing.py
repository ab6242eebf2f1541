"""Time a may-slow rewrite on the target engine, side by side with the model before it.

What is timed is the *rewritten region*, not the whole model: nodes are matched between the two
versions by signature (see :mod:`.verification`), and the part that differs — widened by the
unchanged nodes that read its results, so that an engine's fusion across the boundary (Conv +
Relu) still counts — is cut out of each version with its weights and run on random data at its
boundary. The rest of the model is the same in both versions and would only add the same time
(and its noise) to both sides; a region runs in a fraction of the model's time, so many
alternating runs fit a short budget. When no region can be cut out (a rewrite inside an If/Loop
body, a boundary tensor of unknown shape, an integer tensor computed inside the model) the whole
model is timed instead, as before.

Both versions run with one intra-op thread. On a small or shared machine, several sessions alive
at once (the timer has two), each with ONNX Runtime's thread pool, make a session's speed a
lottery: fresh sessions of the same region ran 5 or 8-15 ms, at random, on a 2-core VM, so one
slow session decided the verdict. With one thread the same region runs within 2-5 % in every
session, and what is
measured is the work the rewrite changes (benchmarks/RESULTS.md has the figures). A rewrite whose
gain is parallelism itself may look smaller than it is; that errs toward reverting it, never
toward keeping a slower graph. The weights are handed to the sessions as buffers, not serialized
into them; ONNX Runtime still prepacks them, as in production.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from functools import partial

import onnx_ir as ir

from modelport.passes.verification import Feeds, RegionVerifier
from modelport.runners.onnxruntime import GraphOptimization, OrtRunner
from modelport.verify.inputs import InputPlan, generate_feeds

__all__ = [
    "DECIDED_MARGIN",
    "REGION_SECONDS",
    "SETTLED_FACTOR",
    "SETTLED_ROUNDS",
    "TIMING_THREADS",
    "WHOLE_MODEL_SECONDS",
    "Timer",
    "Timing",
    "settled",
]

logger = logging.getLogger(__name__)

#: Time spent timing one rewritten region (both versions, interleaved).
REGION_SECONDS = 0.2
#: Time spent timing one rewrite on the whole model, when no region can be cut out.
WHOLE_MODEL_SECONDS = 0.5
#: Timing stops before its budget once this many rounds all put one version this factor
#: ahead of the other: a verdict that further rounds would not change.
SETTLED_ROUNDS = 3
SETTLED_FACTOR = 1.10
#: It also stops once as many rounds all put the after/before ratio on the same side of the
#: threshold the caller's verdict uses, at least this factor away from it.
DECIDED_MARGIN = 1.01
#: Intra-op threads of the timing sessions (see the module docstring).
TIMING_THREADS = 1


@dataclass(frozen=True)
class Timing:
    """Median latency before and after a rewrite, and what was run to get it."""

    before_ms: float
    after_ms: float
    scope: str  # "rewritten region (N -> M nodes)" or "whole model (why no region)"


class Timer:
    """Side-by-side latency of two versions of a model on the target engine.

    ``target`` ``generic`` is timed with ONNX Runtime's graph optimizations off (the graph as any
    engine receives it); ``onnxruntime`` at ORT's default level, as it will run.
    """

    def __init__(self, target: str, plan: InputPlan) -> None:
        self.level: GraphOptimization = "all" if target == "onnxruntime" else "disable"
        self.plan = replace(plan, batch=1)
        self._regions: RegionVerifier | None = None

    def compare(self, before: ir.Model, after: ir.Model, threshold: float | None = None) -> Timing:
        """Time both versions; ``threshold`` is the after/before ratio the caller's verdict turns
        on (timing may stop early once the rounds are clearly on one side of it)."""
        if self._regions is None:
            self._regions = RegionVerifier(before, self.plan, [1])
        try:
            pair = self._regions.timing_pair(before, after)
        except Exception as e:  # cutting out is an optimization of the measurement, never fatal
            pair = f"{type(e).__name__}: {e}"
        if isinstance(pair, str):
            logger.debug("timing the whole model: %s", pair)
            before_ms, after_ms = _time(before, after, None, self.level, self.plan, WHOLE_MODEL_SECONDS, threshold)
            return Timing(before_ms, after_ms, f"whole model ({pair})")
        region_b, region_a, feeds = pair
        scope = f"rewritten region ({len(region_b.graph)} -> {len(region_a.graph)} nodes)"
        before_ms, after_ms = _time(region_b, region_a, feeds, self.level, self.plan, REGION_SECONDS, threshold)
        return Timing(before_ms, after_ms, scope)


def _time(
    before: ir.Model,
    after: ir.Model,
    feeds: Feeds | None,
    level: GraphOptimization,
    plan: InputPlan,
    seconds: float,
    threshold: float | None,
) -> tuple[float, float]:
    from modelport.bench.harness import bench_interleaved

    with (
        _timing_runner(before, level, "before") as a,
        _timing_runner(after, level, "after") as b,
    ):
        feeds = feeds if feeds is not None else generate_feeds(a.inputs, plan)
        a.infer(feeds)  # a first run allocates; it would make the pace below look slow
        b.infer(feeds)
        paces = []
        for runner in (a, b):
            t0 = time.perf_counter()
            runner.infer(feeds)
            paces.append(time.perf_counter() - t0)
        per_run = min(paces)  # one slow run (a thread waking up) must not halve the rounds
        # Each window holds at least 3 runs of each; as many alternations as fit the budget.
        rounds = max(2, min(8, int(seconds / (6 * per_run))))
        done = partial(settled, threshold=threshold)
        results = bench_interleaved([a, b], feeds, duration=seconds, rounds=rounds, warmup=1, settled=done)
    return results[0].median_ms, results[1].median_ms


def settled(medians: list[list[float]], threshold: float | None = None) -> bool:
    """Whether every round so far (at least :data:`SETTLED_ROUNDS`) puts the same version ahead
    by :data:`SETTLED_FACTOR` or more, or (given the verdict's ``threshold`` on the after/before
    ratio) puts the ratio on the same side of it by :data:`DECIDED_MARGIN` or more
    (``medians``: each version's window medians, in ms)."""
    before, after = medians
    ratios = [a / b for a, b in zip(after, before, strict=False) if b > 0]
    if len(ratios) < SETTLED_ROUNDS:
        return False
    if all(r * SETTLED_FACTOR <= 1 for r in ratios) or all(r >= SETTLED_FACTOR for r in ratios):
        return True
    if threshold is None:
        return False
    return all(r * DECIDED_MARGIN <= threshold for r in ratios) or all(r >= threshold * DECIDED_MARGIN for r in ratios)


def _timing_runner(model: ir.Model, level: GraphOptimization, name: str) -> OrtRunner:
    """A session for timing: one intra-op thread; weights as buffers, prepacked as in production."""
    return OrtRunner(
        model,
        graph_optimization=level,
        name=name,
        intra_op_threads=TIMING_THREADS,
        share_weights=True,
        prepack_shared=True,
    )
