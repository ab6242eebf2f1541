"""Horizontal Conv merge: sibling Convs on the same input become one wider Conv and a Split.

Convs ``y_i = Conv(x, W_i, b_i)`` with identical attributes compute disjoint output channels
of ``Conv(x, concat_i W_i, concat_i b_i)`` (concatenation along the output-channel axis 0),
because output channel ``k`` depends only on ``W[k]`` and ``b[k]``. So::

    y_1, ..., y_n = Split(Conv(x, [W_1; ...; W_n], [b_1; ...; b_n]), axis=1, split=[M_1, ..., M_n])

A branch without a bias gets zeros. The result is one im2col and one wide GEMM instead of ``n``
(the Inception / ResNeXt / detection-head pattern); each output element is the same dot product,
but a wider GEMM may be blocked differently, so the tolerance allows ~1e-6. The merge is not
always faster (the Split copies every output, and some engines already run the branches in
parallel), so the pass is marked ``may_slow`` and the manager times it.

The rule is anchored on a Conv and finds its siblings among ``x.consumers()`` in the same graph.
Siblings must have constant weights (and constant or absent biases), the same dtype, the same
normalized ``kernel_shape``, ``strides``, ``pads``, ``dilations`` and ``auto_pad``, and
``group=1``. The merged Conv takes the first branch's name and place (graph order), so the
result is deterministic.

Grouped Convs are refused: merging two group-``g`` Convs into one group-``g`` Conv interleaves
the branches' output channels group by group (``[A_0, B_0, A_1, B_1, ...]``), so splitting them
back needs a Reshape to ``[N, g, M_a + M_b, H, W]``, a Split on axis 2 and two Reshapes whose
targets depend on the runtime H and W — more data movement than the depthwise Convs it saves.

The Split form depends on the opset (``split`` input from opset 13, attribute before), so the rule
also refuses where the opset is unknown (subgraphs, whose opset imports are usually empty).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.passes.base import add_initializer, const_array, drop_unused_initializers
from modelport.passes.rules.base import Rule, RulePass
from modelport.verify.tolerance import Tolerance

__all__ = ["MergeParallelConvPass", "ParallelConvRule"]

logger = logging.getLogger(__name__)

#: Normalized attributes that must be equal for two Convs to merge (plus weight shape and dtype).
_Key = tuple[Any, ...]


@dataclass
class _Branch:
    conv: ir.Node
    weight: np.ndarray[Any, Any]
    bias: np.ndarray[Any, Any] | None
    key: _Key


@dataclass
class _Match:
    branches: list[_Branch]
    opset: int


def _ints(node: ir.Node, name: str, default: list[int]) -> tuple[int, ...]:
    attr = node.attributes.get(name)
    return tuple(default) if attr is None else tuple(int(v) for v in attr.value)


def _key(conv: ir.Node, weight: np.ndarray[Any, Any]) -> _Key:
    """Conv attributes with ONNX defaults filled in, plus what the weight fixes."""
    spatial = weight.ndim - 2
    auto_pad_attr = conv.attributes.get("auto_pad")
    auto_pad = "NOTSET" if auto_pad_attr is None else str(auto_pad_attr.value)
    pads = _ints(conv, "pads", [0] * 2 * spatial) if auto_pad == "NOTSET" else ()
    return (
        _ints(conv, "kernel_shape", list(weight.shape[2:])),
        _ints(conv, "strides", [1] * spatial),
        _ints(conv, "dilations", [1] * spatial),
        pads,
        auto_pad,
        weight.shape[1:],
        weight.dtype,
    )


def _branch(conv: ir.Node) -> _Branch | str:
    """A Conv's constant parameters and merge key, or why it cannot take part in a merge."""
    weight = const_array(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if weight is None or weight.ndim < 3:
        return "Conv weight is not a constant"
    if weight.dtype.kind != "f":
        return f"Conv weight has dtype {weight.dtype}, not floating point"
    has_bias = len(conv.inputs) > 2 and conv.inputs[2] is not None
    bias = const_array(conv.inputs[2]) if has_bias else None
    if has_bias and bias is None:
        return "Conv bias is not a constant"
    group = conv.attributes.get("group")
    if group is not None and int(group.value) != 1:
        return f"grouped Conv (group={group.value}): merged channels would interleave; not merged"
    return _Branch(conv, weight, bias, _key(conv, weight))


def _opset(node: ir.Node) -> int | None:
    """The default-domain opset of ``node`` (None when unknown, as in most subgraphs)."""
    if node.version is not None:
        return node.version
    if node.graph is None:
        return None
    return node.graph.opset_imports.get("", node.graph.opset_imports.get("ai.onnx"))


def _siblings(anchor: ir.Node, first: _Branch) -> list[_Branch]:
    """The other Convs reading the anchor's input that can merge with it."""
    x = anchor.inputs[0]
    assert x is not None
    found: list[_Branch] = []
    for node in x.consumers():
        if node is anchor or node.graph is not anchor.graph or node.op_type != "Conv" or node.domain != "":
            continue
        if node.inputs[0] is not x:
            continue
        branch = _branch(node)
        if isinstance(branch, str):
            logger.debug("parallel-conv: sibling '%s' left out: %s", node.name, branch)
        elif branch.key != first.key:
            logger.debug("parallel-conv: sibling '%s' left out: attributes, weight shape or dtype differ", node.name)
        else:
            found.append(branch)
    return found


def _check(conv: ir.Node) -> _Match | str:
    """The merge anchored at ``conv``, or the reason the rule does not apply."""
    x = conv.inputs[0] if conv.inputs else None
    if x is None or conv.graph is None:
        return "Conv has no input"
    anchor = _branch(conv)
    if isinstance(anchor, str):
        return anchor
    siblings = _siblings(conv, anchor)
    if not siblings:
        return f"no other Conv with the same attributes and constant weights reads '{x.name}'"
    opset = _opset(conv)
    if opset is None:
        return "opset unknown (subgraph): cannot choose the Split form"
    position = {id(node): i for i, node in enumerate(conv.graph)}
    branches = sorted([anchor, *siblings], key=lambda b: position[id(b.conv)])
    return _Match(branches, opset)


def _merged_params(branches: list[_Branch]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
    weight = np.concatenate([b.weight for b in branches], axis=0)
    if all(b.bias is None for b in branches):
        return weight, None
    biases = [b.bias if b.bias is not None else np.zeros(b.weight.shape[0], b.weight.dtype) for b in branches]
    return weight, np.concatenate([np.asarray(b, dtype=weight.dtype).reshape(-1) for b in biases])


def _split(graph: ir.Graph, source: ir.Value, sizes: list[int], opset: int, name: str) -> ir.Node:
    """Split ``source`` on axis 1 into ``sizes`` in the form the opset wants."""
    if opset >= 13:
        split = add_initializer(graph, np.array(sizes, dtype=np.int64), f"{name}.split")
        return ir.node("Split", inputs=[source, split], attributes={"axis": 1}, num_outputs=len(sizes), name=name)
    return ir.node("Split", inputs=[source], attributes={"axis": 1, "split": sizes}, num_outputs=len(sizes), name=name)


def _rewrite(graph: ir.Graph, m: _Match) -> None:
    first = m.branches[0].conv
    base = first.name or first.outputs[0].name or "conv"
    weight, bias = _merged_params(m.branches)
    inputs: list[ir.Value | None] = [first.inputs[0], add_initializer(graph, weight, f"{base}.merged_weight")]
    if bias is not None:
        inputs.append(add_initializer(graph, bias, f"{base}.merged_bias"))
    merged = ir.node("Conv", inputs=inputs, attributes=dict(first.attributes), name=first.name)
    out = merged.outputs[0]
    out.name = f"{base}.merged_out"
    out.type = first.outputs[0].type
    shape = first.outputs[0].shape
    if shape is not None and len(shape) >= 2:
        out.shape = ir.Shape([shape[0], weight.shape[0], *list(shape)[2:]])
    sizes = [b.weight.shape[0] for b in m.branches]
    split = _split(graph, out, sizes, m.opset, f"{base}/split")
    convs = [b.conv for b in m.branches]
    replaced = [v for c in convs for v in c.inputs[1:]]
    ir.convenience.replace_nodes_and_values(
        graph, first, convs, [merged, split], [c.outputs[0] for c in convs], list(split.outputs)
    )
    drop_unused_initializers(graph, replaced)


class ParallelConvRule(Rule[_Match]):
    """Convs sharing an input and attributes  =>  one Conv with concatenated weights + Split."""

    name = "parallel-conv"
    op_types = frozenset({"Conv"})

    def check(self, node: ir.Node) -> _Match | str:
        return _check(node)

    def rewrite(self, graph: ir.Graph, match: _Match) -> None:
        _rewrite(graph, match)


class MergeParallelConvPass(RulePass):
    """Merge sibling Convs that read the same input into one wider Conv followed by a Split."""

    name = "parallel-conv"
    # Same dot products, possibly blocked differently by a wider GEMM.
    tolerance = Tolerance(atol=1e-6, rtol=1e-6)
    may_slow = True
    rules = (ParallelConvRule(),)
