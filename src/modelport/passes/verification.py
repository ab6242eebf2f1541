"""How the optimizer checks a rewritten model against the model it came from.

Two verifiers, chosen by model size:

* :class:`FullVerifier` — reference outputs of the *input* model are computed once (ONNX Runtime,
  graph optimizations off, so ORT's own rewrites cannot mask ours) at batch 1 and a second batch
  size; every candidate is run on the same feeds and compared with the tolerance accumulated so
  far. This is the default: it checks the model end to end on realistic inputs.
* :class:`RegionVerifier` — for models whose weights do not fit the memory budget (a multi-GB
  model cannot be run twice per pass in half a gigabyte). Nodes are matched between the two
  versions by signature (op, attributes, input and output names, the identity of constant
  tensors); what differs is the rewritten *region*. The region before and after is extracted with
  its constants and run on the same random data at its boundary; its boundary outputs must agree.
  Region inputs that are not floating point and not graph inputs (shape tensors, indices) cannot
  be generated faithfully, so such a rewrite is reported unverifiable and rolled back.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.diff import OutputDiff, diff_outputs
from modelport.verify.inputs import InputPlan, effective_batch, generate_feeds
from modelport.verify.tolerance import Tolerance

__all__ = ["Check", "FullVerifier", "RegionVerifier", "weight_bytes"]

logger = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray[Any, Any]]


@dataclass
class Check:
    """Outcome of one verification."""

    passed: bool
    max_abs: float = 0.0
    reason: str = ""
    detail: str = ""


def weight_bytes(model: ir.Model) -> int:
    """Bytes of every constant tensor (initializers of all graphs), read from metadata only."""
    return sum(
        int(v.const_value.nbytes) for g in model.graphs() for v in g.initializers.values() if v.const_value is not None
    )


def _first_failure(diffs: Sequence[OutputDiff]) -> str:
    bad = next((d for d in diffs if not d.passed), None)
    return "" if bad is None else f"output '{bad.name}': {bad.reason}"


class FullVerifier:
    """Whole-model comparison against reference outputs of the input model."""

    kind = "full"

    def __init__(self, model: ir.Model, plan: InputPlan, batches: Sequence[int]) -> None:
        self.feeds: list[Feeds] = []
        self.reference: list[Feeds] = []
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

    def check(self, before: ir.Model, after: ir.Model, tolerance: Tolerance) -> Check:
        del before  # compared with the input model's reference outputs, not the previous step
        diffs: list[OutputDiff] = []
        with OrtRunner(after, graph_optimization="disable", name="candidate") as runner:
            for feeds, reference in zip(self.feeds, self.reference, strict=True):
                diffs.extend(diff_outputs(runner.infer(feeds), reference, tolerance))
        worst = max((d.max_abs for d in diffs), default=0.0)
        passed = all(d.passed for d in diffs)
        return Check(passed, worst, _first_failure(diffs), f"whole model at batch {self.batches}")


# -- region verification ------------------------------------------------------------------------


def _attribute_key(attr: ir.Attr) -> Any:
    if attr.is_ref():
        return ("ref", attr.ref_attr_name)
    value = attr.value
    if attr.type == ir.AttributeType.TENSOR:
        return ("tensor", str(value.dtype), tuple(value.shape), hashlib.sha1(value.tobytes()).hexdigest())
    if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
        return ("graph", str(value))
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(value)
    return value


def _input_key(value: ir.Value | None) -> Any:
    if value is None:
        return None
    if value.is_initializer() and value.const_value is not None:
        # Clones share tensor objects: the same object means the same contents.
        return (value.name, id(value.const_value))
    return value.name


def _signature(node: ir.Node) -> Any:
    return (
        node.domain,
        node.op_type,
        node.overload,
        tuple(_input_key(v) for v in node.inputs),
        tuple(v.name for v in node.outputs),
        tuple(sorted((k, _attribute_key(a)) for k, a in node.attributes.items())),
    )


@dataclass
class _Region:
    nodes: list[ir.Node]
    inputs: list[ir.Value]  # non-constant values read by the region, produced outside it
    outputs: dict[str, ir.Value]  # region values read outside it or returned by the graph


def _region(graph: ir.Graph, changed: list[ir.Node]) -> _Region:
    inside = set(changed)
    produced = {v for n in changed for v in n.outputs}
    inputs: list[ir.Value] = []
    for node in changed:
        for v in node.inputs:
            if v is None or v in produced or v in inputs:
                continue
            if v.is_initializer() and not v.is_graph_input():
                continue
            inputs.append(v)
    outputs: dict[str, ir.Value] = {}
    for v in produced:
        if v.is_graph_output() or any(c not in inside for c in v.consumers()):
            outputs[v.name or ""] = v
    del graph
    return _Region(changed, inputs, outputs)


def _symbol_sizes(model: ir.Model, feeds: Feeds) -> dict[str, int]:
    """Sizes the generated graph-input feeds gave to each named dimension."""
    sizes: dict[str, int] = {}
    for value in model.graph.inputs:
        array = feeds.get(value.name or "")
        if array is None or value.shape is None:
            continue
        for dim, size in zip(value.shape, array.shape, strict=False):
            if isinstance(dim, ir.SymbolicDim) and dim.value is not None:
                sizes[dim.value] = int(size)
    return sizes


def _spec_dims(value: ir.Value, sizes: dict[str, int], batch: int) -> list[int] | None:
    """Concrete dims for a region input; None when a dimension's size cannot be known."""
    if value.shape is None:
        return None
    dims: list[int] = []
    for axis, d in enumerate(value.shape):
        if isinstance(d, int):
            dims.append(d)
        elif isinstance(d, ir.SymbolicDim) and d.value in sizes:
            dims.append(sizes[d.value])
        elif axis == 0:
            dims.append(batch)
        else:
            return None
    return dims


class RegionVerifier:
    """Compare only what a pass rewrote, on random data at the region's boundary."""

    kind = "region"

    def __init__(self, model: ir.Model, plan: InputPlan, batches: Sequence[int]) -> None:
        self.plan = plan
        self.batches = sorted(set(batches))
        self.graph_input_feeds: dict[int, Feeds] = {}
        from modelport.ir.specs import specs_of

        specs = specs_of(model.graph.inputs)
        self.sizes: dict[int, dict[str, int]] = {}
        for batch in self.batches:
            self.graph_input_feeds[batch] = generate_feeds(specs, replace(plan, batch=batch))
            self.sizes[batch] = _symbol_sizes(model, self.graph_input_feeds[batch])

    def check(self, before: ir.Model, after: ir.Model, tolerance: Tolerance) -> Check:
        from modelport.ir.serde import infer_shapes

        for m in (before, after):
            infer_shapes(m)
        sig_before = {_signature(n): n for n in before.graph}
        sig_after = {_signature(n): n for n in after.graph}
        removed = [n for s, n in sig_before.items() if s not in sig_after]
        added = [n for s, n in sig_after.items() if s not in sig_before]
        if any(n.graph is not before.graph for n in removed):
            return Check(False, reason="rewrite inside a subgraph cannot be verified by region")
        region_b = _region(before.graph, removed)
        region_a = _region(after.graph, added)
        detail = f"region of {len(removed)} -> {len(added)} nodes"
        if set(region_b.outputs) != set(region_a.outputs):
            missing = sorted(set(region_b.outputs) ^ set(region_a.outputs))
            return Check(False, reason=f"the rewritten region's boundary changed: {missing}", detail=detail)
        if not region_b.outputs:
            return Check(True, 0.0, detail=detail + " (no output of it is read: removed dead code)")
        diffs: list[OutputDiff] = []
        for batch in self.batches:
            feeds = self._feeds(region_b.inputs + region_a.inputs, batch)
            if isinstance(feeds, str):
                return Check(False, reason=f"unverifiable at this size: {feeds}", detail=detail)
            got_b = self._run(before, region_b, feeds)
            got_a = self._run(after, region_a, feeds)
            diffs.extend(diff_outputs(got_a, got_b, tolerance))
        worst = max((d.max_abs for d in diffs), default=0.0)
        return Check(all(d.passed for d in diffs), worst, _first_failure(diffs), detail)

    def _feeds(self, values: list[ir.Value], batch: int) -> Feeds | str:
        rng = np.random.default_rng(batch)
        feeds: Feeds = {}
        for v in values:
            name = v.name or ""
            if name in feeds:
                continue
            if v.is_graph_input():
                feeds[name] = self.graph_input_feeds[batch][name]
                continue
            dims = _spec_dims(v, self.sizes[batch], batch)
            if dims is None or v.dtype is None:
                return f"the shape or type of '{name}' is unknown"
            if not v.dtype.is_floating_point():
                return f"'{name}' is a {v.dtype.name} tensor computed inside the model"
            feeds[name] = rng.standard_normal(dims).astype(v.dtype.numpy())
        return feeds

    @staticmethod
    def _run(model: ir.Model, region: _Region, feeds: Feeds) -> Feeds:
        graph = ir.convenience.extract(model.graph, inputs=region.inputs, outputs=list(region.outputs.values()))
        sub = ir.Model(graph, ir_version=model.ir_version)
        sub.opset_imports.update(model.opset_imports)
        with OrtRunner(sub, graph_optimization="disable", name="region") as runner:
            return runner.infer({v.name or "": feeds[v.name or ""] for v in region.inputs})
