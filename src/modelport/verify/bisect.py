"""First-diverging-layer bisection: where do two models (or one model on two engines) part ways?

The two graphs' tensors are paired by structure (:mod:`modelport.verify.match`). Starting from a
model output that differs, a search over the paired tensors that output is computed from finds a
tensor that differs while every paired tensor feeding it agrees: the nodes between them are the
first diverging layer. Each probe marks a few tensors as extra outputs of both models and runs
them on the same inputs — never every tensor at once, because marking a tensor as an output stops
the engine from fusing across it, and marking all of them changes what is being debugged.

The search is k-ary (``per_probe`` tensors per run) over the tensors in topological order, which
is a plain bisection when divergence is monotone along that order. Graphs with branches need not
be monotone (a branch that diverged earlier may not show in a tensor later in the order), so the
answer is always checked: the paired tensors feeding the suspect must all agree. When one does
not, the search restarts from it — the result is a divergence whose inputs provably agree.

Divergence of one tensor is ``max|c - r| > atol + rtol * max|r|``: relative to the tensor's
range, so a near-zero element does not count as a large relative error; NaN/Inf where the other
side has a finite value, or a different shape, always diverges.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.errors import ConfigError
from modelport.ir.serde import clone, infer_shapes
from modelport.ir.specs import specs_of
from modelport.runners import create_runner
from modelport.runners.base import Feeds, Runner
from modelport.verify.inputs import InputPlan, generate_feeds, hinted_plan
from modelport.verify.match import Matching, TensorPair, dynamic_values, match_tensors, region

__all__ = ["DEFAULT_ATOL", "DEFAULT_RTOL", "BisectResult", "TensorCheck", "bisect"]

logger = logging.getLogger(__name__)

#: A tensor diverges when max|c - r| exceeds ``atol + rtol * max|r|``.
DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-6
#: Tensors marked as extra outputs per run.
DEFAULT_PER_PROBE = 3


@dataclass
class TensorCheck:
    """One paired tensor compared: how far apart the two sides are."""

    pair: TensorPair
    diverged: bool
    max_abs: float
    scale: float
    reason: str

    @property
    def relative(self) -> float:
        return self.max_abs / self.scale if self.scale > 0 else (0.0 if self.max_abs == 0 else float("inf"))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.pair.to_dict(),
            "diverged": self.diverged,
            "max_abs": _json(self.max_abs),
            "relative": _json(self.relative),
            "reason": self.reason,
        }


@dataclass
class BisectResult:
    """Where the candidate first diverges from the reference, and the evidence for it."""

    candidate: str
    reference: str
    diverged: bool
    first: TensorCheck | None = None
    candidate_nodes: list[tuple[str, str]] = field(default_factory=list)
    reference_nodes: list[tuple[str, str]] = field(default_factory=list)
    agreeing_inputs: list[TensorCheck] = field(default_factory=list)
    checks: list[TensorCheck] = field(default_factory=list)
    runs: int = 0
    most_marked: int = 0
    seconds: float = 0.0
    matching: Matching = field(default_factory=Matching)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.diverged:
            return "the outputs agree: nothing to bisect"
        if self.first is None:
            return "the outputs diverge, but no paired tensor could be blamed (see notes)"
        nodes = ", ".join(f"{op} '{name}'" for name, op in self.candidate_nodes) or "(no node: a graph input)"
        return (
            f"first divergence at '{self.first.pair.candidate}' (reference '{self.first.pair.reference}'): "
            f"{nodes}; relative error {self.first.relative:.3g}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "reference": self.reference,
            "diverged": self.diverged,
            "summary": self.summary(),
            "first": self.first.to_dict() if self.first else None,
            "candidate_nodes": [{"name": n, "op": op} for n, op in self.candidate_nodes],
            "reference_nodes": [{"name": n, "op": op} for n, op in self.reference_nodes],
            "agreeing_inputs": [c.to_dict() for c in self.agreeing_inputs],
            "checks": [c.to_dict() for c in self.checks],
            "runs_per_side": self.runs,
            "most_tensors_marked_in_one_run": self.most_marked,
            "seconds": round(self.seconds, 3),
            "matching": self.matching.to_dict(),
            "notes": self.notes,
        }


def _json(x: float) -> float | str:
    return x if np.isfinite(x) else str(x)


class _Side:
    """One model on one engine; runs it with a few tensors marked as extra outputs."""

    def __init__(self, model: ir.Model, backend: str, label: str, options: Mapping[str, Any]) -> None:
        self.model = model
        self.backend = backend
        self.label = label
        self.options = dict(options)
        self.values = {v.name: v for v in _all_values(model.graph) if v.name}
        self.runs = 0
        #: How many tensors each run marked as extra outputs.
        self.marked: list[int] = []

    def probeable(self, name: str) -> bool:
        value = self.values.get(name)
        return value is not None and value.dtype is not None and value.graph is self.model.graph

    def run(self, names: Sequence[str], feeds: Feeds) -> dict[str, np.ndarray[Any, Any]]:
        graph = self.model.graph
        extra = [self.values[n] for n in names if not self.values[n].is_graph_output()]
        graph.outputs.extend(extra)
        self.marked.append(len(extra))
        try:
            with self._runner() as runner:
                outputs = runner.infer(feeds)
        finally:
            for value in extra:
                graph.outputs.remove(value)
        self.runs += 1
        return {n: outputs[n] for n in names}

    def _runner(self) -> Runner:
        if self.backend.startswith("onnxruntime"):
            # Weights go to the session as buffers: a probe costs a session build, not a copy.
            return create_runner(self.backend, self.model, name=self.label, share_weights=True, **self.options)
        return create_runner(self.backend, self.model, name=self.label, **self.options)


def _all_values(graph: ir.Graph) -> list[ir.Value]:
    values = list(graph.inputs)
    for node in graph:
        values.extend(node.outputs)
    return values


def compare_tensor(
    pair: TensorPair,
    candidate: np.ndarray[Any, Any],
    reference: np.ndarray[Any, Any],
    *,
    rtol: float,
    atol: float,
) -> TensorCheck:
    """Whether one paired tensor diverges (see the module docstring for the rule)."""
    if candidate.shape != reference.shape:
        reason = f"shape {list(candidate.shape)} != reference {list(reference.shape)}"
        return TensorCheck(pair, True, float("inf"), 0.0, reason)
    c = np.asarray(candidate, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    finite = np.isfinite(c) & np.isfinite(r)
    same_nonfinite = bool(
        np.array_equal(np.isfinite(c), np.isfinite(r)) and np.array_equal(c[~finite], r[~finite], equal_nan=True)
    )
    err = np.abs(c[finite] - r[finite])
    max_abs = float(err.max()) if err.size else 0.0
    scale = float(np.abs(r[finite]).max()) if err.size else 0.0
    if not same_nonfinite:
        n_c, n_r = int((~np.isfinite(c)).sum()), int((~np.isfinite(r)).sum())
        return TensorCheck(pair, True, max_abs, scale, f"non-finite values differ ({n_c} vs {n_r} NaN/Inf)")
    bound = atol + rtol * scale
    if max_abs > bound:
        return TensorCheck(pair, True, max_abs, scale, f"max abs {max_abs:.3g} > {bound:.3g}")
    return TensorCheck(pair, False, max_abs, scale, "agrees")


class _Search:
    """The probes of one bisection, with every result cached."""

    def __init__(
        self,
        cand: _Side,
        ref: _Side,
        feeds: Feeds,
        *,
        rtol: float,
        atol: float,
        per_probe: int,
    ) -> None:
        self.cand, self.ref, self.feeds = cand, ref, feeds
        self.rtol, self.atol, self.per_probe = rtol, atol, per_probe
        self.results: dict[TensorPair, TensorCheck] = {}
        self.log: list[TensorCheck] = []

    def check(self, pairs: Sequence[TensorPair]) -> list[TensorCheck]:
        todo = [p for p in dict.fromkeys(pairs) if p not in self.results]
        if todo:
            c_out = self.cand.run([p.candidate for p in todo], self.feeds)
            r_out = self.ref.run([p.reference for p in todo], self.feeds)
            for p in todo:
                result = compare_tensor(p, c_out[p.candidate], r_out[p.reference], rtol=self.rtol, atol=self.atol)
                logger.debug("probe %s: %s", p.candidate, result.reason)
                self.results[p] = result
                self.log.append(result)
        return [self.results[p] for p in pairs]

    def boundary(self, order: list[TensorPair]) -> int:
        """Index in ``order`` of a diverging tensor right after an agreeing one (len: none)."""
        lo, hi = -1, len(order)
        while hi - lo > 1:
            span = hi - lo - 1
            count = min(self.per_probe, span)
            picks = sorted({lo + 1 + (span * (k + 1)) // (count + 1) for k in range(count)})
            picks = [i for i in picks if lo < i < hi] or [lo + 1]
            results = self.check([order[i] for i in picks])
            diverged = [i for i, r in zip(picks, results, strict=True) if r.diverged]
            if diverged:
                hi = diverged[0]
            agreeing = [i for i, r in zip(picks, results, strict=True) if not r.diverged and i < hi]
            if agreeing:
                lo = max(agreeing)
        return hi


def _ancestors(value: ir.Value) -> set[ir.Value]:
    seen: set[ir.Value] = set()
    stack = [value]
    while stack:
        node = stack.pop().producer()
        if node is None:
            continue
        for source in node.inputs:
            if source is not None and source not in seen:
                seen.add(source)
                stack.append(source)
    return seen


def _prepare(model: ir.Model | str, what: str) -> ir.Model:
    from modelport.ir.serde import load

    loaded = clone(model) if isinstance(model, ir.Model) else load(model)
    infer_shapes(loaded)
    _type_contrib_outputs(loaded)
    if not loaded.graph.outputs:
        raise ConfigError(f"the {what} model has no outputs: nothing to compare")
    return loaded


def _label(model: ir.Model | str, role: str, backend: str) -> str:
    name = Path(model).name if isinstance(model, str) else role
    return f"{name} ({backend})"


def _type_contrib_outputs(model: ir.Model) -> None:
    """Give outputs of contrib fusions (``FusedConv``...) their input's dtype, which ONNX shape
    inference cannot know, so they and what follows them can be marked as outputs."""
    for _ in range(len(model.graph)):
        changed = False
        for node in model.graph:
            if node.domain != "com.microsoft" or not node.inputs or node.inputs[0] is None:
                continue
            dtype = node.inputs[0].dtype
            for value in node.outputs:
                if value.dtype is None and dtype is not None:
                    value.dtype = dtype
                    changed = True
        if not changed:
            return
        infer_shapes(model)


def _feeds(reference: ir.Model, feeds: Feeds | None, plan: InputPlan | None) -> Feeds:
    if feeds is not None:
        return feeds
    plan = hinted_plan(plan or InputPlan(fill="realistic"), reference)
    return generate_feeds(specs_of(reference.graph.inputs), plan)


def bisect(
    candidate: ir.Model | str,
    reference: ir.Model | str,
    *,
    backends: Sequence[str] = ("onnxruntime",),
    feeds: Feeds | None = None,
    plan: InputPlan | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    per_probe: int = DEFAULT_PER_PROBE,
    runner_options: Sequence[Mapping[str, Any]] = (),
) -> BisectResult:
    """Find the first layer where ``candidate`` diverges from ``reference``.

    ``backends`` names the engine of the candidate and then of the reference (one name: both);
    pass the same model twice with two backends to find where two engines part ways. Inputs are
    ``feeds`` or generated from the reference's signature with ``plan`` (default: realistic values —
    token ids inside the vocabulary, 0/1 masks, images in [0, 1)). Neither model is changed.
    """
    if not backends or len(backends) > 2:
        raise ConfigError(f"give one or two backends (candidate, reference), got {list(backends)}")
    if rtol < 0 or atol < 0 or per_probe < 1:
        raise ConfigError(f"need rtol >= 0, atol >= 0 and per_probe >= 1, got {rtol}, {atol}, {per_probe}")
    if "torch" in backends:
        raise ConfigError("bisection needs a graph on both sides — export the PyTorch model to ONNX first")
    start = time.perf_counter()
    cand_model, ref_model = _prepare(candidate, "candidate"), _prepare(reference, "reference")
    options = list(runner_options) + [{}] * 2
    cand = _Side(cand_model, backends[0], _label(candidate, "candidate", backends[0]), options[0])
    ref = _Side(ref_model, backends[-1], _label(reference, "reference", backends[-1]), options[1])
    matching = match_tensors(ref_model, cand_model)
    result = BisectResult(cand.label, ref.label, diverged=False, matching=matching)
    usable = [
        p for p in matching.pairs if p.how != "input" and cand.probeable(p.candidate) and ref.probeable(p.reference)
    ]
    skipped = len(matching.pairs) - len(usable) - sum(p.how == "input" for p in matching.pairs)
    if skipped:
        result.notes.append(f"{skipped} paired tensors have no known type and cannot be probed")
    search = _Search(cand, ref, _feeds(ref_model, feeds, plan), rtol=rtol, atol=atol, per_probe=per_probe)
    _run_search(search, cand_model, usable, result)
    result.checks = search.log
    result.runs = max(cand.runs, ref.runs)
    result.most_marked = max(cand.marked + ref.marked, default=0)
    result.seconds = time.perf_counter() - start
    return result


def _run_search(search: _Search, cand_model: ir.Model, usable: list[TensorPair], result: BisectResult) -> None:
    by_candidate = {p.candidate: p for p in usable}
    outputs = [by_candidate[v.name] for v in cand_model.graph.outputs if v.name in by_candidate]
    if not outputs:
        result.notes.append("no model output could be paired with the reference's outputs")
        return
    diverging = [c for c in search.check(outputs) if c.diverged]
    if not diverging:
        return
    result.diverged = True
    values = search.cand.values
    paired = {values[p.candidate] for p in usable}
    target = diverging[0]
    while True:
        ancestors = _ancestors(values[target.pair.candidate])
        order = [p for p in usable if values[p.candidate] in ancestors]
        index = search.boundary(order)
        suspect = target if index == len(order) else search.results[order[index]]
        _, frontier = region(values[suspect.pair.candidate], paired)
        feeding = [by_candidate[v.name] for v in frontier if v.name in by_candidate]
        bad = [c for c in search.check(feeding) if c.diverged]
        if not bad:
            _blame(result, search, suspect, feeding, usable)
            return
        logger.debug("'%s' diverges but so does its input '%s': searching above it", suspect.pair.candidate, bad[0])
        target = bad[0]


def _blame(
    result: BisectResult, search: _Search, suspect: TensorCheck, feeding: list[TensorPair], usable: list[TensorPair]
) -> None:
    result.first = suspect
    result.agreeing_inputs = search.check(feeding)
    result.candidate_nodes = _namedregion(search.cand, suspect.pair.candidate, [p.candidate for p in usable])
    result.reference_nodes = _namedregion(search.ref, suspect.pair.reference, [p.reference for p in usable])


def _namedregion(side: _Side, name: str, paired: list[str]) -> list[tuple[str, str]]:
    """(name, op type) of the nodes between the paired tensors and ``name`` on one side."""
    graph = side.model.graph
    stop = {side.values[n] for n in paired if n != name} | set(graph.inputs)
    nodes, _ = region(side.values[name], stop)
    dynamic = dynamic_values(graph)
    return [(n.name or "", n.op_type) for n in nodes if any(o in dynamic for o in n.outputs)]
