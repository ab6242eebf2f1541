"""Common-subexpression elimination: compute each distinct (op, inputs, attributes) once.

Two nodes of the same op, reading the very same input values with equal attributes, compute the
same outputs (ONNX ops are pure functions of their inputs, except the random ones). Walking a
graph in topological order, each node is keyed on ``(domain, op_type, overload, number of
outputs, identity of every input, attributes)``; a node whose key was seen before is removed
and its readers are pointed at the first node's outputs. Since readers are rewired before they
are visited, whole duplicated chains (two identical Conv -> Relu branches) collapse in one walk.
Identical initializers (same dtype, shape and bytes) are merged first, so branches with copies
of the same weights become identical too.

Never merged: random ops (including ``Bernoulli`` and ``Dropout``, which is random in training
mode), nodes with subgraph attributes, attributes that cannot be compared exactly, ops outside
the standard domain (their purity is unknown), and initializers that are graph inputs (a caller
may override them) or graph outputs. Float attributes are compared by ``repr`` so ``0.0`` and
``-0.0`` stay apart. When a removed node's output is a graph output, the kept value takes over
its name, or an ``Identity`` keeps it when the kept value already is a graph input or output.

Why not onnx-ir's ``CommonSubexpressionEliminationPass``: it merges ``Bernoulli`` and
training-mode ``Dropout``, works on the main graph only, and hashes string tensors by object
address. Its initializer deduplication either stops at 1024 elements (exact) or hashes every
tensor and fails on string tensors (hashed); here tensors are only compared within a
(dtype, shape) group of two or more, by digest, confirmed byte for byte.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Hashable

import numpy as np
import onnx_ir as ir

from modelport.passes.base import Pass
from modelport.verify.tolerance import EXACT

__all__ = ["CommonSubexpressionEliminationPass"]

logger = logging.getLogger(__name__)

#: Ops whose outputs differ between two evaluations on the same inputs.
_NON_DETERMINISTIC = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"}
)

_NodeKey = tuple[Hashable, ...]


def _tensor_bytes(tensor: ir.TensorProtocol) -> bytes:
    """The tensor's contents as bytes; strings length-prefixed so different lists never collide."""
    string_data = getattr(tensor, "string_data", None)
    if tensor.dtype == ir.DataType.STRING and callable(string_data):
        return b"".join(len(s).to_bytes(8, "little") + s for s in string_data())
    return tensor.tobytes()


def _attribute_key(attr: ir.Attr, tensor_limit: int) -> Hashable | str:
    """A hashable, exact stand-in for the attribute's value, or why it cannot be compared."""
    if attr.is_ref():
        return "attribute refers to a function attribute"
    kind, value = attr.type, attr.value
    if kind in (ir.AttributeType.INT, ir.AttributeType.STRING):
        return (kind, value)
    if kind == ir.AttributeType.FLOAT:
        return (kind, repr(value))
    if kind in (ir.AttributeType.INTS, ir.AttributeType.STRINGS):
        return (kind, tuple(value))
    if kind == ir.AttributeType.FLOATS:
        return (kind, tuple(repr(v) for v in value))
    if kind == ir.AttributeType.TENSOR:
        if value.size > tensor_limit:
            return f"tensor attribute of {value.size} elements is over the {tensor_limit} limit"
        return (kind, value.dtype, tuple(value.shape), _tensor_bytes(value))
    return f"{kind.name} attribute cannot be compared"


def _node_key(node: ir.Node, tensor_limit: int) -> _NodeKey | str:
    """What makes two nodes compute the same outputs, or why this node must never be merged."""
    if node.domain not in ("", "ai.onnx"):
        return f"domain '{node.domain}' may hold impure ops"
    if node.op_type in _NON_DETERMINISTIC:
        return "non-deterministic op"
    attributes: list[tuple[str, Hashable]] = []
    for name, attr in sorted(node.attributes.items()):
        key = _attribute_key(attr, tensor_limit)
        if isinstance(key, str):
            return f"attribute '{name}': {key}"
        attributes.append((name, key))
    inputs = tuple(id(v) if v is not None else None for v in node.inputs)
    return (node.op_type, node.overload, node.version, len(node.outputs), inputs, tuple(attributes))


def _take_over_graph_outputs(graph: ir.Graph, old: ir.Value, new: ir.Value, before: ir.Node) -> None:
    """Make ``new`` (or an Identity of it) stand where ``old`` is a graph output, under old's name."""
    positions = [i for i, out in enumerate(graph.outputs) if out is old]
    if not positions:
        return
    if new.is_graph_output() or new.is_graph_input():
        identity = ir.node("Identity", inputs=[new], outputs=[ir.Value(name=old.name, type=old.type, shape=old.shape)])
        graph.insert_before(before, identity)
        replacement = identity.outputs[0]
    else:
        new.name = old.name
        replacement = new
    for i in positions:
        graph.outputs[i] = replacement


def _merge(graph: ir.Graph, duplicate: ir.Node, kept: ir.Node) -> None:
    for old, new in zip(duplicate.outputs, kept.outputs, strict=True):
        _take_over_graph_outputs(graph, old, new, duplicate)
        old.replace_all_uses_with(new)
    graph.remove(duplicate, safe=True)


def _eliminate_nodes(graph: ir.Graph, tensor_limit: int) -> bool:
    seen: dict[_NodeKey, ir.Node] = {}
    modified = False
    for node in list(graph):
        key = _node_key(node, tensor_limit)
        if isinstance(key, str):
            logger.debug("cse: skip %s '%s': %s", node.op_type, node.name, key)
            continue
        kept = seen.get(key)
        if kept is None:
            seen[key] = node
            continue
        _merge(graph, node, kept)
        logger.debug("cse: %s '%s' merged into '%s'", node.op_type, node.name, kept.name)
        modified = True
    return modified


def _mergeable_initializer(value: ir.Value) -> str | None:
    if value.is_graph_input():
        return "it is also a graph input (callers may override it)"
    if value.is_graph_output():
        return "it is a graph output"
    if value.const_value is None:
        return "it has no value"
    return None


def _deduplicate_initializers(graph: ir.Graph) -> bool:
    """Merge initializers with equal dtype, shape and bytes into the first of them."""
    groups: dict[tuple[ir.DataType, tuple[object, ...]], list[ir.Value]] = {}
    for value in graph.initializers.values():
        reason = _mergeable_initializer(value)
        if reason is not None:
            logger.debug("cse: keep initializer '%s': %s", value.name, reason)
            continue
        assert value.const_value is not None
        groups.setdefault((value.const_value.dtype, tuple(value.const_value.shape)), []).append(value)
    # A (dtype, shape) nobody else has needs no look at its bytes.
    merged = [_merge_equal_initializers(graph, group) for group in groups.values() if len(group) > 1]
    return any(merged)


#: Tensors up to this size are compared whole; bigger ones first by a sample of their bytes.
_PROBE_LIMIT = 1 << 16
_PROBE_SAMPLES = 16
_PROBE_BYTES = 256


def _probe(tensor: ir.TensorProtocol) -> bytes:
    """A cheap fingerprint: the whole contents of a small tensor, samples of a big one.

    Lazily loaded (external) tensors are sampled with plain file reads, so comparing the
    weights of a multi-GB model does not map it into memory.
    """
    if tensor.nbytes <= _PROBE_LIMIT or tensor.dtype == ir.DataType.STRING:
        return _tensor_bytes(tensor)
    step = (tensor.nbytes - _PROBE_BYTES) // (_PROBE_SAMPLES - 1)
    offsets = [i * step for i in range(_PROBE_SAMPLES)]
    if isinstance(tensor, ir.ExternalTensor) and tensor.offset is not None:
        with open(tensor.path, "rb") as f:
            parts = []
            for offset in offsets:
                f.seek(tensor.offset + offset)
                parts.append(f.read(_PROBE_BYTES))
            return b"".join(parts)
    flat = np.ascontiguousarray(tensor.numpy()).reshape(-1).view(np.uint8)
    return b"".join(flat[o : o + _PROBE_BYTES].tobytes() for o in offsets)


def _digest(tensor: ir.TensorProtocol) -> bytes:
    """Digest of the whole contents (external tensors read in chunks, not mapped)."""
    h = hashlib.blake2b(digest_size=16)
    if isinstance(tensor, ir.ExternalTensor) and tensor.offset is not None:
        with open(tensor.path, "rb") as f:
            f.seek(tensor.offset)
            remaining = tensor.nbytes
            while remaining > 0:
                chunk = f.read(min(remaining, 16 << 20))
                if not chunk:
                    break
                h.update(chunk)
                remaining -= len(chunk)
        return h.digest()
    h.update(_tensor_bytes(tensor))
    return h.digest()


def _merge_equal_initializers(graph: ir.Graph, group: list[ir.Value]) -> bool:
    """Within one (dtype, shape) group: equal fingerprints, then equal digests, merge.

    Only tensors whose sampled fingerprint collides are read whole; the 128-bit digest then
    decides (a collision of blake2b-128 between distinct weights is not a practical concern).
    """
    by_probe: dict[bytes, list[ir.Value]] = {}
    for value in group:
        assert value.const_value is not None
        by_probe.setdefault(_probe(value.const_value), []).append(value)
    modified = False
    for candidates in by_probe.values():
        if len(candidates) < 2:
            continue
        kept_by_digest: dict[bytes, ir.Value] = {}
        for value in candidates:
            assert value.const_value is not None
            digest = _digest(value.const_value)
            kept = kept_by_digest.setdefault(digest, value)
            if kept is value:
                continue
            value.replace_all_uses_with(kept)
            assert value.name is not None
            graph.initializers.pop(value.name)
            logger.debug("cse: initializer '%s' merged into '%s'", value.name, kept.name)
            modified = True
    return modified


class CommonSubexpressionEliminationPass(Pass):
    """Merge identical initializers, then nodes computing the same thing, in every graph."""

    name = "cse"
    tolerance = EXACT

    def __init__(self, tensor_limit: int = 1 << 16) -> None:
        super().__init__()
        #: Constant nodes (tensor attributes) above this many elements are not compared.
        self.tensor_limit = tensor_limit

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for graph in model.graphs():
            modified |= _deduplicate_initializers(graph)
            modified |= _eliminate_nodes(graph, self.tensor_limit)
        return ir.passes.PassResult(model, modified=modified)
