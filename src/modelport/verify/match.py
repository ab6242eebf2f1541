"""Pair the tensors of two graphs that should hold the same numbers.

Polygraphy pairs intermediate tensors by name only: after an optimizer fuses Conv+BatchNorm and
renames what is left, most names are gone and the tensors that kept their name may no longer mean
the same thing (a fused Conv's output is the old BatchNorm's output under the old Conv's name).
Here tensors are paired by structure, walking the candidate graph in topological order:

1. graph inputs pair by name (by position when the names differ but the counts agree);
2. a candidate node whose dynamic inputs are all paired is matched to the reference node that
   reads the same (paired) tensors in the same positions with the same operator (``FusedConv`` of
   ONNX Runtime counts as ``Conv``, ``FusedGemm`` as ``Gemm``); names break ties only;
3. fusions are followed on both sides: from a matched output, the chain of ops a fusion absorbs
   (BatchNormalization, Mul/Add/Sub/Div by a constant, Identity, Dropout, activations) is walked
   until the two tensors are read by the same kinds of operator — so ``Conv`` in an optimized
   graph pairs with ``BatchNormalization`` in the original, and the Conv output of the original
   (which has no counterpart) is left unpaired rather than paired wrongly;
4. what structure cannot place is tried by name (same dtype and shape) and then by position: the
   nearest unpaired reference tensor of the same dtype and shape, downstream of the same paired
   tensors and read by the same kinds of operator. Each pair records how it was made.

Only tensors that depend on a graph input take part (constants are the same by construction).
Everything that stays unpaired is listed, on both sides: a report never hides what it skipped.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir

__all__ = ["Matching", "TensorPair", "dynamic_values", "match_tensors", "region"]

logger = logging.getLogger(__name__)

#: Operators an optimizer folds into the op that produces their input (when the other operand is
#: a constant), plus activations an engine fuses into Conv/Gemm.
_ABSORBABLE = frozenset({"BatchNormalization", "Identity", "Dropout", "Mul", "Add", "Sub", "Div"})
_ACTIVATIONS = frozenset({"Relu", "Clip", "Sigmoid", "LeakyRelu", "HardSigmoid", "Tanh", "HardSwish", "Silu"})
#: Contrib/fused operators counted as the standard operator they start from.
_BASE_OP = {"FusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul", "NhwcConv": "Conv"}
#: How far (in reference nodes) the positional fallback looks past its anchors.
_NEAR_WINDOW = 12


@dataclass(frozen=True)
class TensorPair:
    """A reference tensor and the candidate tensor that should hold the same values."""

    reference: str
    candidate: str
    how: str  # "input", "output", "structure", "fusion", "name", "position"

    def to_dict(self) -> dict[str, str]:
        return {"reference": self.reference, "candidate": self.candidate, "how": self.how}


@dataclass
class Matching:
    """Pairs in the candidate's topological order, and what stayed unpaired on each side."""

    pairs: list[TensorPair] = field(default_factory=list)
    unmatched_reference: list[str] = field(default_factory=list)
    unmatched_candidate: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.how for p in self.pairs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs": len(self.pairs),
            "by": self.counts(),
            "unmatched_reference": self.unmatched_reference,
            "unmatched_candidate": self.unmatched_candidate,
        }


def _base_op(node: ir.Node) -> str:
    return _BASE_OP.get(node.op_type, node.op_type) if node.domain in ("", "com.microsoft") else node.op_type


def dynamic_values(graph: ir.Graph) -> set[ir.Value]:
    """Main-graph values that depend on a graph input (the rest are constants)."""
    dynamic: set[ir.Value] = set(graph.inputs)
    for node in graph:
        has_graphs = any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values())
        if has_graphs or any(v in dynamic for v in node.inputs if v is not None):
            dynamic.update(node.outputs)
    return dynamic


def _consumer_kinds(value: ir.Value) -> Counter[str]:
    kinds = Counter(_base_op(n) for n in value.consumers())
    if value.is_graph_output():
        kinds["<output>"] += 1
    return kinds


def _shape_key(value: ir.Value) -> tuple[Any, ...] | None:
    if value.shape is None:
        return None
    return tuple(d if isinstance(d, int) else None for d in value.shape)


def _compatible(a: ir.Value, b: ir.Value) -> bool:
    """Same dtype and, where both ranks and sizes are known, the same static sizes."""
    if a.dtype is not None and b.dtype is not None and a.dtype != b.dtype:
        return False
    sa, sb = _shape_key(a), _shape_key(b)
    if sa is None or sb is None:
        return True
    if len(sa) != len(sb):
        return False
    return all(x is None or y is None or x == y for x, y in zip(sa, sb, strict=True))


class _Matcher:
    """State of one matching run: candidate value -> reference value, and the reverse."""

    def __init__(self, reference: ir.Graph, candidate: ir.Graph) -> None:
        self.ref = reference
        self.cand = candidate
        self.ref_dynamic = dynamic_values(reference)
        self.cand_dynamic = dynamic_values(candidate)
        self.ref_order = {v: i for i, v in enumerate(_ordered_values(reference))}
        self.ref_by_name = {v.name: v for v in self.ref_dynamic if v.name}
        self.to_ref: dict[ir.Value, ir.Value] = {}
        self.used: set[ir.Value] = set()
        self.how: dict[ir.Value, str] = {}

    def pair(self, cand: ir.Value, ref: ir.Value, how: str) -> None:
        if cand in self.to_ref or ref in self.used:
            return
        self.to_ref[cand] = ref
        self.used.add(ref)
        self.how[cand] = how

    # -- step 1 ------------------------------------------------------------------------------
    def match_inputs(self) -> None:
        ref_inputs = {v.name: v for v in self.ref.inputs}
        by_name = all(v.name in ref_inputs for v in self.cand.inputs)
        if by_name:
            for value in self.cand.inputs:
                self.pair(value, ref_inputs[value.name], "input")
        elif len(self.cand.inputs) == len(self.ref.inputs):
            for cand_value, ref_value in zip(self.cand.inputs, self.ref.inputs, strict=True):
                self.pair(cand_value, ref_value, "input")

    # -- step 2 and 3 ------------------------------------------------------------------------
    def match_node(self, node: ir.Node) -> None:
        dyn = [(i, v) for i, v in enumerate(node.inputs) if v is not None and v in self.cand_dynamic]
        if not dyn or any(v not in self.to_ref for _, v in dyn):
            return
        twin = self._twin(node, dyn)
        if twin is None:
            return
        extra = {self.to_ref[v] for i, v in dyn if i >= len(twin.inputs)}
        for cand_out, ref_out in zip(node.outputs, twin.outputs, strict=False):
            if cand_out in self.to_ref or not _compatible(cand_out, ref_out):
                continue
            self._pair_through_fusions(cand_out, ref_out, extra)

    def _twin(self, node: ir.Node, dyn: list[tuple[int, ir.Value]]) -> ir.Node | None:
        """The reference node reading the paired tensors in the same positions with the same op."""
        wanted = [(i, self.to_ref[v]) for i, v in dyn]
        op = _base_op(node)
        candidates = []
        for ref_node in wanted[0][1].consumers():
            if ref_node.graph is not self.ref or _base_op(ref_node) != op:
                continue
            ref_dyn = [(i, v) for i, v in enumerate(ref_node.inputs) if v is not None and v in self.ref_dynamic]
            # A fused contrib op may read more (FusedConv's residual 'Z'): compare what both have.
            expected = [w for w in wanted if w[0] < len(ref_node.inputs)] if node.op_type in _BASE_OP else wanted
            if ref_dyn == expected and not all(o in self.used for o in ref_node.outputs):
                candidates.append(ref_node)
        if not candidates:
            return None
        # Parallel branches read the same tensor with the same op: prefer the same name, then the
        # same constant operand shapes, then the first in the reference's order.
        return min(candidates, key=lambda r: (r.name != node.name, -_same_constants(r, node)))

    def _pair_through_fusions(self, cand_out: ir.Value, ref_out: ir.Value, extra: set[ir.Value]) -> None:
        want = _consumer_kinds(cand_out)
        for ref_point, how in _chain(ref_out, self.ref_dynamic, extra):
            if _consumer_kinds(ref_point) == want and ref_point not in self.used and _compatible(cand_out, ref_point):
                self.pair(cand_out, ref_point, how)
                return
        # The candidate may be the unfused side: walk its chain instead.
        have = _consumer_kinds(ref_out)
        for cand_point, _ in _chain(cand_out, self.cand_dynamic, set()):
            if cand_point is cand_out:
                continue
            if _consumer_kinds(cand_point) == have and _compatible(cand_point, ref_out):
                self.pair(cand_point, ref_out, "fusion")
                return
        logger.debug("'%s' and '%s' are read by different operators; left unpaired", cand_out.name, ref_out.name)

    # -- step 4 ------------------------------------------------------------------------------
    def match_leftover(self, value: ir.Value) -> None:
        twin = self.ref_by_name.get(value.name or "")
        if twin is not None and twin not in self.used and _compatible(value, twin):
            self.pair(value, twin, "name")
            return
        near = self._nearest(value)
        if near is not None:
            self.pair(value, near, "position")

    def _nearest(self, value: ir.Value) -> ir.Value | None:
        anchors = [self.to_ref[a] for a in _paired_ancestors(value, self.to_ref)]
        if not anchors or _shape_key(value) is None or value.dtype is None:
            return None
        start = max(self.ref_order.get(a, -1) for a in anchors)
        want = _consumer_kinds(value)
        for ref_value, index in sorted(self.ref_order.items(), key=lambda item: item[1]):
            if index <= start or index > start + _NEAR_WINDOW:
                continue
            if (
                ref_value not in self.used
                and ref_value in self.ref_dynamic
                and _shape_key(ref_value) == _shape_key(value)
                and ref_value.dtype == value.dtype
                and _consumer_kinds(ref_value) == want
            ):
                return ref_value
        return None


def _same_constants(a: ir.Node, b: ir.Node) -> int:
    """How many input positions hold constants of the same shape in both nodes (a fused Conv
    gains a bias, but its weight keeps its shape)."""
    same = 0
    for x, y in zip(a.inputs, b.inputs, strict=False):
        if x is not None and y is not None and x.const_value is not None and y.const_value is not None:
            same += _shape_key(x) == _shape_key(y)
    return same


def _chain(value: ir.Value, dynamic: set[ir.Value], extra: set[ir.Value]) -> list[tuple[ir.Value, str]]:
    """``value`` and the tensors a fusion could fold into its producer, in order. ``extra`` are
    tensors the fused op reads besides (a residual added inside FusedConv): an Add of one of them
    belongs to the chain too."""
    points = [(value, "structure")]
    current = value
    while not current.is_graph_output():
        users = list(current.consumers())
        if len(users) != 1:
            break
        user = users[0]
        op = _base_op(user)
        others = [v for v in user.inputs if v is not None and v is not current]
        foreign = [v for v in others if v in dynamic and not (op == "Add" and v in extra)]
        if op not in _ABSORBABLE | _ACTIVATIONS or foreign or len(user.outputs) != 1:
            break
        current = user.outputs[0]
        points.append((current, "fusion"))
    return points


def region(value: ir.Value, stop: set[ir.Value]) -> tuple[list[ir.Node], list[ir.Value]]:
    """The nodes that compute ``value`` from the tensors in ``stop`` (or from constants and graph
    inputs), in graph order, and the tensors of ``stop`` they read."""
    nodes: list[ir.Node] = []
    frontier: list[ir.Value] = []
    seen: set[ir.Value] = set()
    stack = [value]
    while stack:
        node = stack.pop().producer()
        if node is None or node in nodes:
            continue
        nodes.append(node)
        for source in node.inputs:
            if source is None or source in seen:
                continue
            seen.add(source)
            if source in stop:
                frontier.append(source)
            elif source.producer() is not None:
                stack.append(source)
    order = {n: i for i, n in enumerate(value.graph)} if value.graph is not None else {}
    nodes.sort(key=lambda n: order.get(n, 0))
    return nodes, frontier


def _paired_ancestors(value: ir.Value, paired: dict[ir.Value, ir.Value]) -> list[ir.Value]:
    """The nearest paired tensors ``value`` is computed from."""
    return region(value, set(paired))[1]


def _ordered_values(graph: ir.Graph) -> list[ir.Value]:
    values = list(graph.inputs)
    for node in graph:
        values.extend(node.outputs)
    return values


def match_tensors(reference: ir.Model, candidate: ir.Model) -> Matching:
    """Pair the main-graph tensors of ``candidate`` with those of ``reference`` (see module doc)."""
    matcher = _Matcher(reference.graph, candidate.graph)
    matcher.match_inputs()
    for node in candidate.graph:
        matcher.match_node(node)
    # Graph outputs pair by name (or position) whatever structure said.
    ref_outputs = {v.name: v for v in reference.graph.outputs}
    for index, value in enumerate(candidate.graph.outputs):
        twin = ref_outputs.get(value.name or "")
        if twin is None and len(reference.graph.outputs) == len(candidate.graph.outputs):
            twin = reference.graph.outputs[index]
        if twin is not None and value not in matcher.to_ref:
            matcher.pair(value, twin, "output")
    for value in _ordered_values(candidate.graph):
        if value in matcher.cand_dynamic and value not in matcher.to_ref:
            matcher.match_leftover(value)
    order = _ordered_values(candidate.graph)
    pairs = [
        TensorPair(matcher.to_ref[v].name or "", v.name or "", matcher.how[v])
        for v in order
        if v in matcher.to_ref and v.name
    ]
    unmatched_c = [v.name or "" for v in order if v in matcher.cand_dynamic and v not in matcher.to_ref]
    unmatched_r = [
        v.name or "" for v in _ordered_values(reference.graph) if v in matcher.ref_dynamic and v not in matcher.used
    ]
    return Matching(pairs, unmatched_r, unmatched_c)
