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

from modelport.passes.base import has_subgraph
from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.diff import OutputDiff, diff_outputs
from modelport.verify.inputs import InputPlan, effective_batch, generate_feeds
from modelport.verify.tolerance import Tolerance

__all__ = ["Check", "FullVerifier", "RegionVerifier"]

logger = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray[Any, Any]]

#: Verification runs next to the passes (the reference in a background thread): ONNX Runtime's
#: worker threads must not busy-wait between runs on the cores the passes need.
NO_SPINNING = {"session.intra_op.allow_spinning": "0"}


@dataclass
class Check:
    """Outcome of one verification."""

    passed: bool
    max_abs: float = 0.0
    reason: str = ""
    detail: str = ""


def _first_failure(diffs: Sequence[OutputDiff]) -> str:
    bad = next((d for d in diffs if not d.passed), None)
    return "" if bad is None else f"output '{bad.name}': {bad.reason}"


class FullVerifier:
    """Whole-model comparison against reference outputs of the input model.

    The reference outputs are computed in a background thread while the passes run (ONNX
    Runtime releases the GIL, the passes are Python): on two cores the reference run is almost
    free. The model is serialized before the thread starts, so nothing touches it concurrently.
    """

    kind = "full"

    def __init__(self, model: ir.Model, plan: InputPlan, batches: Sequence[int]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from modelport.ir.serde import serialize_without_weights

        data, names, arrays = serialize_without_weights(model)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelport-reference")
        self._future = self._pool.submit(self._reference, data, (names, arrays), plan, list(batches))
        self._pool.shutdown(wait=False)

    @staticmethod
    def _reference(
        data: bytes, weights: tuple[list[str], list[Any]], plan: InputPlan, requested: list[int]
    ) -> tuple[list[int], list[Feeds], list[Feeds]]:
        batches: list[int] = []
        all_feeds: list[Feeds] = []
        reference: list[Feeds] = []
        runner = OrtRunner(
            data,
            graph_optimization="disable",
            name="input model",
            external_initializers=weights,
            session_config=NO_SPINNING,
        )
        with runner:
            for wanted in requested:
                batch = effective_batch(runner.inputs, wanted)
                if batch in batches:
                    continue
                batches.append(batch)
                feeds = generate_feeds(runner.inputs, replace(plan, batch=batch))
                all_feeds.append(feeds)
                reference.append(runner.infer(feeds))
        return batches, all_feeds, reference

    @property
    def batches(self) -> list[int]:
        """The batch sizes checked (waits for the reference run; raises what it raised)."""
        return self._future.result()[0]

    def check(self, before: ir.Model, after: ir.Model, tolerance: Tolerance) -> Check:
        del before  # compared with the input model's reference outputs, not the previous step
        batches, all_feeds, reference = self._future.result()
        diffs: list[OutputDiff] = []
        with OrtRunner(
            after, graph_optimization="disable", name="candidate", share_weights=True, session_config=NO_SPINNING
        ) as runner:
            for feeds, expected in zip(all_feeds, reference, strict=True):
                diffs.extend(diff_outputs(runner.infer(feeds), expected, tolerance))
        worst = max((d.max_abs for d in diffs), default=0.0)
        passed = all(d.passed for d in diffs)
        return Check(passed, worst, _first_failure(diffs), f"whole model at batch {batches}")


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


def _region(changed: list[ir.Node]) -> _Region:
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
    return _Region(changed, inputs, outputs)


def _needs_producer(value: ir.Value) -> bool:
    """A region input random data cannot stand in for: computed, and not floating point."""
    if value.is_graph_input() or value.producer() is None:
        return False
    return value.dtype is None or not value.dtype.is_floating_point()


#: Nodes a region may grow by to take in the computation of its shape / index inputs.
_MAX_EXPANSION = 256


def _expand(removed: list[ir.Node], added: list[ir.Node]) -> None:
    """Pull the producers of non-float region inputs into both sides of the region.

    A Reshape's target shape or a Gather's indices cannot be replaced by random numbers; their
    computation (usually Shape -> Gather -> Concat of a float activation) joins the region, so
    the boundary moves back to a float tensor (or a graph input) that random data can stand in for.
    """
    for _ in range(_MAX_EXPANSION):
        grew = False
        for side, other in ((removed, added), (added, removed)):
            for value in _region(side).inputs:
                if not _needs_producer(value):
                    continue
                producer = value.producer()
                assert producer is not None
                side.append(producer)
                twin = _producer_by_name(other, value.name)
                if twin is not None and twin not in other:
                    other.append(twin)
                grew = True
                break
        if not grew:
            return


def _producer_by_name(nodes: list[ir.Node], name: str | None) -> ir.Node | None:
    """The producer of the value called ``name`` in the graph the ``nodes`` belong to."""
    graph = next((n.graph for n in nodes if n.graph is not None), None)
    if graph is None or name is None:
        return None
    for node in graph:
        if any(v.name == name for v in node.outputs):
            return node
    return None


def _components(removed: list[ir.Node], added: list[ir.Node]) -> list[tuple[list[ir.Node], list[ir.Node]]]:
    """Split a rewrite into independent pieces: nodes connected through non-constant values."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def names(node: ir.Node) -> list[str]:
        values = [v for v in (*node.inputs, *node.outputs) if v is not None]
        return [v.name or "" for v in values if not (v.is_initializer() and not v.is_graph_input())]

    for node in (*removed, *added):
        keys = names(node) or [f"#node{id(node)}"]
        for key in keys[1:]:
            parent[find(key)] = find(keys[0])
    groups: dict[str, tuple[list[ir.Node], list[ir.Node]]] = {}
    for side, nodes in ((0, removed), (1, added)):
        for node in nodes:
            keys = names(node) or [f"#node{id(node)}"]
            groups.setdefault(find(keys[0]), ([], []))[side].append(node)
    return list(groups.values())


def _weights_of(nodes: list[ir.Node]) -> int:
    seen: set[int] = set()
    total = 0
    for node in nodes:
        for v in node.inputs:
            if v is not None and v.const_value is not None and id(v.const_value) not in seen:
                seen.add(id(v.const_value))
                total += int(v.const_value.nbytes)
    return total


#: Constants up to this size are identified by their contents when grouping regions.
_SMALL_CONSTANT = 1 << 16


def _canonical(before: list[ir.Node], after: list[ir.Node]) -> Any:
    """A key equal for rewrites that differ only in which (unchanged) weights they read.

    Value names become numbers in order of appearance; a constant read unchanged by both sides
    (the same tensor object) becomes its dtype and shape; a small constant becomes its contents;
    any other constant (e.g. big weights the pass computed) stays unique, so rewrites that change
    weights are never grouped.
    """
    read_b = {id(v.const_value) for n in before for v in n.inputs if v is not None and v.const_value is not None}
    read_a = {id(v.const_value) for n in after for v in n.inputs if v is not None and v.const_value is not None}
    shared = read_b & read_a
    numbers: dict[str, int] = {}

    def key(v: ir.Value | None) -> Any:
        if v is None:
            return None
        t = v.const_value
        if t is not None and v.is_initializer():
            if id(t) in shared:
                return ("const", str(t.dtype), tuple(t.shape))
            if t.nbytes <= _SMALL_CONSTANT:  # e.g. a bias: equal contents, same kind
                return ("const", str(t.dtype), tuple(t.shape), hashlib.sha1(t.tobytes()).hexdigest())
            return ("const", id(t))
        shape = None if v.shape is None else tuple(str(d) for d in v.shape)
        return (numbers.setdefault(v.name or "", len(numbers)), str(v.dtype), shape)

    return tuple(
        tuple(
            (
                n.domain,
                n.op_type,
                tuple(sorted((k, _attribute_key(a)) for k, a in n.attributes.items())),
                tuple(key(v) for v in n.inputs),
                tuple(key(v) for v in n.outputs),
                any(o.is_graph_output() for o in n.outputs),
            )
            for n in side
        )
        for side in (before, after)
    )


def _representatives(
    components: list[tuple[list[ir.Node], list[ir.Node]]],
) -> list[tuple[list[ir.Node], list[ir.Node]]]:
    """One component of each kind (see :func:`_canonical`), in graph order."""
    seen: set[Any] = set()
    chosen = []
    for before, after in components:
        key = _canonical(before, after)
        if key in seen:
            continue
        seen.add(key)
        chosen.append((before, after))
    return chosen


def _release(nodes: list[ir.Node]) -> None:
    """Unmap lazily loaded weights the nodes read, so checked regions do not stay resident."""
    for node in nodes:
        for v in node.inputs:
            if v is not None and isinstance(v.const_value, ir.ExternalTensor):
                v.const_value.release()


#: Weights one region check may hold (both versions share the same tensors).
REGION_CHUNK_BYTES = 128 << 20


def _chunks(
    components: list[tuple[list[ir.Node], list[ir.Node]]],
) -> list[tuple[list[ir.Node], list[ir.Node]]]:
    """Independent components grouped so that each group's weights stay under the budget."""
    chunks: list[tuple[list[ir.Node], list[ir.Node]]] = []
    size = 0
    for before, after in components:
        weight = _weights_of(before + after)
        if not chunks or size + weight > REGION_CHUNK_BYTES:
            chunks.append(([], []))
            size = 0
        chunks[-1][0].extend(before)
        chunks[-1][1].extend(after)
        size += weight
    return chunks


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

    def rewritten(
        self, before: ir.Model, after: ir.Model, *, infer: bool = True, expand: bool = True
    ) -> tuple[list[ir.Node], list[ir.Node]] | str:
        """The nodes only ``before`` has and those only ``after`` has (with the producers of their
        computed integer inputs unless ``expand`` is false), or why the rewrite cannot be cut out.
        ``infer=False`` trusts the types and shapes the values already carry."""
        from modelport.ir.serde import infer_shapes

        if infer:
            for m in (before, after):
                infer_shapes(m)
        sig_before = {_signature(n): n for n in before.graph}
        sig_after = {_signature(n): n for n in after.graph}
        removed = [n for s, n in sig_before.items() if s not in sig_after]
        added = [n for s, n in sig_after.items() if s not in sig_before]
        if any(has_subgraph(n) for n in (*removed, *added)):
            return "a rewrite inside an If/Loop/Scan body cannot be cut out as a region"
        if expand:
            _expand(removed, added)
        return removed, added

    def timing_pair(self, before: ir.Model, after: ir.Model) -> tuple[ir.Model, ir.Model, Feeds] | str:
        """The rewritten region of each version as a model of its own, widened by the nodes that
        read its results (so an engine's fusion across the boundary still counts), and feeds for
        its boundary at the first batch size; or why there is none.

        Shape inference (a serialization of both models) runs only when a value at the boundary
        has no known type or shape: a clone keeps what was inferred on the model it came from.
        """
        from modelport.ir.serde import infer_shapes

        found = self.rewritten(before, after, infer=False, expand=False)
        if isinstance(found, str):
            return found
        removed, added = found
        if not removed and not added:
            return "nothing was rewritten"
        _widen(removed, added, after)
        boundary = (*_region(removed).inputs, *_region(added).inputs)
        if any(v.type is None or v.shape is None for v in boundary):
            for m in (before, after):
                infer_shapes(m)
        _expand(removed, added)
        region_b, region_a = _region(removed), _region(added)
        if set(region_b.outputs) != set(region_a.outputs):
            return "the rewritten region's boundary changed"
        if not region_b.outputs:
            return "the rewritten region computes nothing that is read"
        inputs_b = _with_inputs_of(before, region_b, region_a)
        inputs_a = _with_inputs_of(after, region_a, region_b)
        if inputs_b is None or inputs_a is None:
            return "the two regions read different values"
        feeds = self._feeds(inputs_b, self.batches[0])
        if isinstance(feeds, str):
            return feeds
        return _submodel(before, inputs_b, region_b), _submodel(after, inputs_a, region_a), feeds

    def check(self, before: ir.Model, after: ir.Model, tolerance: Tolerance) -> Check:
        found = self.rewritten(before, after)
        if isinstance(found, str):
            return Check(False, reason=found)
        removed, added = found
        detail = f"{len(removed)} -> {len(added)} nodes"
        components = _components(removed, added)
        chosen = _representatives(components)
        diffs: list[OutputDiff] = []
        for nodes_b, nodes_a in _chunks(chosen):
            region_b, region_a = _region(nodes_b), _region(nodes_a)
            if set(region_b.outputs) != set(region_a.outputs):
                changed = sorted(set(region_b.outputs) ^ set(region_a.outputs))
                return Check(False, reason=f"the rewritten region's boundary changed: {changed}", detail=detail)
            if not region_b.outputs:
                continue  # nothing it computed is read: dead code removed
            result = self._compare(before, region_b, after, region_a, tolerance)
            _release(nodes_b + nodes_a)
            if isinstance(result, str):
                return Check(False, reason=f"unverifiable at this size: {result}", detail=detail)
            diffs.extend(result)
        worst = max((d.max_abs for d in diffs), default=0.0)
        detail = f"{len(components)} rewritten region(s) of {len(chosen)} kind(s), each kind checked; {detail}"
        return Check(all(d.passed for d in diffs), worst, _first_failure(diffs), detail)

    def _compare(
        self, before: ir.Model, region_b: _Region, after: ir.Model, region_a: _Region, tolerance: Tolerance
    ) -> list[OutputDiff] | str:
        all_feeds: list[Feeds] = []
        for batch in self.batches:
            feeds = self._feeds(region_b.inputs + region_a.inputs, batch)
            if isinstance(feeds, str):
                return feeds
            all_feeds.append(feeds)
        got_b = self._run(before, region_b, all_feeds)
        got_a = self._run(after, region_a, all_feeds)
        diffs: list[OutputDiff] = []
        for a, b in zip(got_a, got_b, strict=True):
            diffs.extend(diff_outputs(a, b, tolerance))
        return diffs

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
    def _run(model: ir.Model, region: _Region, all_feeds: list[Feeds]) -> list[Feeds]:
        sub = _submodel(model, region.inputs, region)
        names = [v.name or "" for v in region.inputs]
        with OrtRunner(sub, graph_optimization="disable", name="region", share_weights=True) as runner:
            return [runner.infer({name: feeds[name] for name in names}) for feeds in all_feeds]


def _submodel(model: ir.Model, inputs: list[ir.Value], region: _Region) -> ir.Model:
    graph = ir.convenience.extract(model.graph, inputs=inputs, outputs=list(region.outputs.values()))
    sub = ir.Model(graph, ir_version=model.ir_version)
    sub.opset_imports.update(model.opset_imports)
    return sub


def _widen(removed: list[ir.Node], added: list[ir.Node], after: ir.Model) -> None:
    """Add to both sides the unchanged nodes of the main graph that read the region's results."""
    twins = {_signature(n): n for n in after.graph}
    for value in list(_region(removed).outputs.values()):
        for consumer in value.consumers():
            if consumer in removed or consumer.graph is None or consumer.graph is not value.graph:
                continue
            twin = twins.get(_signature(consumer))
            if twin is not None and twin not in added:
                removed.append(consumer)
                added.append(twin)


def _with_inputs_of(model: ir.Model, region: _Region, other: _Region) -> list[ir.Value] | None:
    """``region``'s inputs plus the values of ``model`` named like ``other``'s (None if one is
    missing), in one order for both versions, so that both regions take the same feeds."""
    names = sorted({v.name or "" for v in (*region.inputs, *other.inputs)})
    own = {v.name or "": v for v in region.inputs}
    if all(name in own for name in names):
        return [own[name] for name in names]
    values = {v.name or "": v for v in model.graph.inputs}
    values.update({v.name or "": v for n in model.graph for v in n.outputs})
    chosen = [own.get(name) or values.get(name) for name in names]
    return None if any(v is None for v in chosen) else [v for v in chosen if v is not None]
