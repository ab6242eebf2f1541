"""YOLOv5's Focus layer as one SpaceToDepth (or one stride-2 Conv) instead of four strided Slices.

Focus reads the four phases of every 2x2 pixel block and stacks them on the channel axis::

    Focus(x) = Concat(x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2], axis=1)

Branch ``i`` takes the pixels at offset ``(dy_i, dx_i)`` of each block — YOLOv5's order is
(0,0), (1,0), (0,1), (1,1) — and output channel ``k = i*C + c`` holds input channel ``c`` of that
phase. ONNX ``SpaceToDepth(blocksize=2)`` produces the same phases, but its channel
``(2*dy + dx)*C + c`` holds phase ``(dy, dx)``. So::

    Focus(x)[:, k] = SpaceToDepth(x)[:, perm[k]],   perm[i*C + c] = (2*dy_i + dx_i)*C + c

which is exact (pure data movement). The permutation is dropped when it is the identity; when
the only reader is a Conv (group 1) with constant weights it is folded into the weights' input
axis, ``W'[:, perm[k]] = W[:, k]`` — the same products, but the engine may sum them in another
order, so that Conv's output can change by float rounding (about 1e-7 relative); otherwise it
stays as an exact ``Gather(axis=1)``. The alternative ``form="conv"`` is a 2x2 stride-2 Conv with
one-hot weights ``W[i*C + c, c, dy_i, dx_i] = 1``: every output is one input times 1.0 plus
exact zeros, so it is exact for finite inputs.

Both Slice forms exporters write are recognised: one Slice per branch on axes [2, 3] (or
[-2, -1]), and torch's chain of one Slice per axis (no-op Slices on axes 0 and 1 allowed). Any
order of the four phases is handled; duplicate phases, steps other than 2, starts other than 0/1
and slices that stop before the end are refused with a reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common

from modelport.errors import ConfigError
from modelport.passes.base import add_initializer, const_array, only_consumer
from modelport.passes.rules.base import Rule, RulePass
from modelport.verify.tolerance import Tolerance

__all__ = ["FocusForm", "FocusMatch", "FocusRule", "FocusToSpaceToDepthPass", "replace_focus"]

logger = logging.getLogger(__name__)

FocusForm = Literal["space_to_depth", "conv"]

#: The phase order of SpaceToDepth's channel blocks (row-major over the 2x2 block).
_S2D_ORDER = [(0, 0), (0, 1), (1, 0), (1, 1)]
#: An end index at least this large means "to the end" (torch writes INT64_MAX, others INT32_MAX).
_TO_END = 2**31 - 1

# axis -> (start, end, step)
_AxisSlice = tuple[int, int, int]


@dataclass
class FocusMatch:
    """A Focus pattern: its Concat, the Slices feeding it, the phases and the optional Conv."""

    concat: ir.Node
    slices: list[ir.Node]
    source: ir.Value
    offsets: list[tuple[int, int]]
    channels: int | None
    conv: ir.Node | None
    conv_weight: np.ndarray[Any, Any] | None

    def permutation(self) -> np.ndarray[Any, Any]:
        """``perm[k]``: the SpaceToDepth channel that Focus channel ``k`` reads."""
        assert self.channels is not None
        c = np.arange(self.channels)
        return np.concatenate([(2 * dy + dx) * self.channels + c for dy, dx in self.offsets])


def _param(node: ir.Node, index: int) -> tuple[bool, np.ndarray[Any, Any] | None]:
    """(given, constant contents) of an optional Slice input."""
    if index >= len(node.inputs) or node.inputs[index] is None:
        return False, None
    return True, const_array(node.inputs[index])


def _slice_spec(node: ir.Node) -> dict[int, _AxisSlice] | str:
    """Per-axis (start, end, step) of a Slice with constant parameters, or a reason."""
    if len(node.inputs) < 3:
        return f"Slice '{node.name}' uses the opset-1 attribute form (no steps)"
    (_, starts), (_, ends), (has_axes, axes), (has_steps, steps) = (_param(node, i) for i in range(1, 5))
    if starts is None or ends is None or (has_axes and axes is None) or (has_steps and steps is None):
        return f"Slice '{node.name}' has non-constant parameters"
    axes = np.arange(len(starts)) if axes is None else axes
    steps = np.ones(len(starts), np.int64) if steps is None else steps
    spec: dict[int, _AxisSlice] = {}
    for axis, start, end, step in zip(axes.tolist(), starts.tolist(), ends.tolist(), steps.tolist(), strict=True):
        spec[axis % 4] = (int(start), int(end), int(step))
    return spec


def _branch(value: ir.Value) -> tuple[ir.Value, list[ir.Node], dict[int, _AxisSlice]] | str:
    """Walk a chain of Slices back from a Concat input: (source, slices, merged per-axis spec)."""
    slices: list[ir.Node] = []
    spec: dict[int, _AxisSlice] = {}
    current = value
    while (producer := current.producer()) is not None and producer.op_type == "Slice" and producer.domain == "":
        part = _slice_spec(producer)
        if isinstance(part, str):
            return part
        if set(part) & set(spec):
            return f"axis {sorted(set(part) & set(spec))[0]} is sliced twice in one branch"
        spec.update(part)
        slices.append(producer)
        source = producer.inputs[0]
        if source is None:
            return f"Slice '{producer.name}' has no data input"
        current = source
    if not slices:
        return f"input '{value.name}' is not produced by a Slice"
    return current, slices, spec


def _private(concat: ir.Node, slices: list[ir.Node]) -> str | None:
    """Why some Slice output is needed outside the pattern (None when all are private to it).

    Exporters may share a Slice between branches (torch's ``x[..., ::2]`` for two of them), so
    a Slice may be read by other Slices of the same pattern.
    """
    inside = {*slices, concat}
    for node in slices:
        reason = only_consumer(node.outputs[0], inside)
        if reason:
            return reason
    return None


def _reaches_end(end: int, dim: int | None) -> bool:
    return end >= _TO_END or (dim is not None and end >= dim)


def _offset(spec: dict[int, _AxisSlice], dims: list[int | None]) -> tuple[int, int] | str:
    """The (dy, dx) phase a branch reads, or why it is not a Focus branch."""
    for axis in (0, 1):
        if axis in spec:
            start, end, step = spec[axis]
            if (start, step) != (0, 1) or not _reaches_end(end, dims[axis]):
                return f"the branch also slices axis {axis} ({start}:{end}:{step})"
    phase = []
    for axis in (2, 3):
        if axis not in spec:
            return f"the branch does not slice axis {axis}"
        start, end, step = spec[axis]
        if step != 2:
            return f"axis {axis} has step {step}, not 2"
        if start not in (0, 1):
            return f"axis {axis} starts at {start}, not 0 or 1"
        if not _reaches_end(end, dims[axis]):
            return f"axis {axis} stops at {end}, before the end"
        phase.append(start)
    return phase[0], phase[1]


def _dims(value: ir.Value) -> list[int | None] | None:
    if value.shape is None:
        return None
    return [d if isinstance(d, int) else None for d in value.shape]


def _foldable_conv(concat: ir.Node) -> tuple[ir.Node, np.ndarray[Any, Any]] | str:
    """The Conv that alone reads the Concat, with its constant weight, or a reason."""
    out = concat.outputs[0]
    readers = list(out.consumers())
    if len(readers) != 1 or readers[0].op_type != "Conv" or readers[0].domain != "":
        return "the Concat is not read by exactly one Conv"
    conv = readers[0]
    reason = only_consumer(out, conv)
    if reason:
        return reason
    group = conv.attributes.get("group")
    weight = const_array(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if conv.inputs[0] is not out or weight is None or (group is not None and group.value != 1):
        return "the Conv is grouped, or its weight is not constant"
    return conv, weight


class FocusRule(Rule[FocusMatch]):
    """Four strided Slices -> Concat  =>  SpaceToDepth (+ permutation folded into the next Conv)."""

    name = "focus"
    op_types = frozenset({"Concat"})

    def __init__(self, form: FocusForm = "space_to_depth", fold_into_conv: bool = True) -> None:
        if form not in ("space_to_depth", "conv"):
            raise ConfigError(f"form must be 'space_to_depth' or 'conv', got {form!r}")
        self.form = form
        self.fold_into_conv = fold_into_conv

    def check(self, node: ir.Node) -> FocusMatch | str:
        axis = node.attributes.get("axis")
        if len(node.inputs) != 4 or axis is None or axis.value not in (1, -3):
            return "not a 4-input Concat on axis 1"
        branches = []
        for value in node.inputs:
            branch = _branch(value) if value is not None else "missing input"
            if isinstance(branch, str):
                return branch
            branches.append(branch)
        source = branches[0][0]
        if any(b[0] is not source for b in branches):
            return "the four branches slice different tensors"
        dims = _dims(source)
        if dims is None or len(dims) != 4:
            return f"the sliced tensor '{source.name}' is not known to be 4-D (run shape inference)"
        offsets = []
        for _, _, spec in branches:
            offset = _offset(spec, dims)
            if isinstance(offset, str):
                return offset
            offsets.append(offset)
        if sorted(offsets) != _S2D_ORDER:
            return f"the branch phases {offsets} are not the four phases of a 2x2 block"
        reason = _private(node, [s for _, chain, _ in branches for s in chain])
        if reason:
            return reason
        return self._complete(node, branches, source, offsets, dims[1])

    def _complete(
        self,
        concat: ir.Node,
        branches: list[tuple[ir.Value, list[ir.Node], dict[int, _AxisSlice]]],
        source: ir.Value,
        offsets: list[tuple[int, int]],
        channels: int | None,
    ) -> FocusMatch | str:
        conv: ir.Node | None = None
        weight = None
        if self.form == "space_to_depth" and self.fold_into_conv and offsets != _S2D_ORDER:
            found = _foldable_conv(concat)
            if isinstance(found, str):
                logger.debug("focus: keep a Gather: %s", found)
            else:
                conv, weight = found
                channels = channels or (weight.shape[1] // 4 if weight.shape[1] % 4 == 0 else None)
                if channels is None or weight.shape[1] != 4 * channels:
                    return f"the Conv reads {weight.shape[1]} channels, not 4 x {channels}"
        if channels is None and (self.form == "conv" or offsets != _S2D_ORDER):
            return f"the channel count of '{source.name}' is unknown (run shape inference)"
        if self.form == "conv" and (source.dtype is None or source.dtype.numpy().kind != "f"):
            return f"form='conv' needs a floating-point input, '{source.name}' has {source.dtype}"
        slices = list(dict.fromkeys(s for _, chain, _ in branches for s in chain))
        return FocusMatch(concat, slices, source, offsets, channels, conv, weight)

    def rewrite(self, graph: ir.Graph, match: FocusMatch) -> None:
        base = match.concat.name or match.concat.outputs[0].name or "focus"
        nodes = self._new_nodes(graph, match, base)
        for node in nodes:
            node.outputs[0].name = _fresh_name(graph, f"{base}/{node.op_type}_out")
            node.outputs[0].type = match.source.type
        result = nodes[-1].outputs[0]
        result.shape = match.concat.outputs[0].shape
        old = [*match.slices, match.concat]
        if match.conv is None:
            out = match.concat.outputs[0]
            ir.convenience.replace_nodes_and_values(graph, match.concat, old, nodes, [out], [result])
            return
        assert match.conv_weight is not None
        weight = np.zeros_like(match.conv_weight)
        weight[:, match.permutation()] = match.conv_weight
        w_value = add_initializer(graph, weight, f"{match.conv.name or base}.weight_s2d")
        match.conv.replace_input_with(0, result)
        match.conv.replace_input_with(1, w_value)
        graph.insert_after(match.concat, nodes)
        graph.remove(old, safe=True)

    def _new_nodes(self, graph: ir.Graph, match: FocusMatch, base: str) -> list[ir.Node]:
        if self.form == "conv":
            assert match.source.dtype is not None and match.channels is not None
            weight = _one_hot_weight(match.offsets, match.channels, match.source.dtype.numpy())
            w_value = add_initializer(graph, weight, f"{base}.focus_weight")
            attrs: dict[str, Any] = {"kernel_shape": [2, 2], "strides": [2, 2]}
            return [ir.node("Conv", [match.source, w_value], attrs, name=f"{base}/FocusConv")]
        s2d = ir.node("SpaceToDepth", [match.source], {"blocksize": 2}, name=f"{base}/SpaceToDepth")
        if match.offsets == _S2D_ORDER or match.conv is not None:
            return [s2d]
        perm = add_initializer(graph, match.permutation().astype(np.int64), f"{base}.focus_perm")
        return [s2d, ir.node("Gather", [s2d.outputs[0], perm], {"axis": 1}, name=f"{base}/Gather")]


def _fresh_name(graph: ir.Graph, name: str) -> str:
    """``name``, or ``name_1``, ``name_2``... whichever no value of ``graph`` has yet."""
    taken = {v.name for node in graph for v in node.outputs} | set(graph.initializers)
    taken.update(v.name for v in graph.inputs)
    unique, i = name, 1
    while unique in taken:
        unique, i = f"{name}_{i}", i + 1
    return unique


def _one_hot_weight(offsets: list[tuple[int, int]], channels: int, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """Conv weight [4C, C, 2, 2] that copies phase (dy_i, dx_i) of channel c to channel i*C + c."""
    weight = np.zeros((4 * channels, channels, 2, 2), dtype)
    for i, (dy, dx) in enumerate(offsets):
        for c in range(channels):
            weight[i * channels + c, c, dy, dx] = 1
    return weight


class FocusToSpaceToDepthPass(RulePass):
    """Rewrite YOLOv5 Focus slicing as SpaceToDepth (pure data movement: exact)."""

    name = "focus-space-to-depth"
    # Data movement is exact; folding the channel permutation into a Conv reorders its sum.
    tolerance = Tolerance(atol=1e-5, rtol=1e-5)
    may_slow = True  # one SpaceToDepth for four strided Slices: timed, not assumed
    rules = (FocusRule(),)


def replace_focus(model: ir.Model, *, form: FocusForm = "space_to_depth", fold_into_conv: bool = True) -> ir.Model:
    """Replace every YOLOv5 Focus block (four stride-2 Slices + Concat) with one exact equivalent.

    Options:
        form: "space_to_depth" (SpaceToDepth(blocksize=2), plus a channel Gather when the
            phase order differs and cannot be folded) or "conv" (one 2x2 stride-2 Conv with
            one-hot weights, for engines that handle Conv better than SpaceToDepth).
        fold_into_conv: fold SpaceToDepth's channel permutation into the weights of the Conv
            that reads the Focus output, so no Gather is needed.

    The result is bit-exact, except that a folded Conv may round differently (its sum runs in
    another channel order). Raises ConfigError when the model has no Focus block, listing why
    each candidate Concat did not match.
    """
    rule = FocusRule(form=form, fold_into_conv=fold_into_conv)
    reasons: list[str] = []
    for graph in model.graphs():
        for node in list(graph):
            if node.graph is not graph or node.op_type != "Concat" or node.domain != "":
                continue
            match = rule.check(node)
            if isinstance(match, str):
                logger.debug("focus: skip Concat '%s': %s", node.name, match)
                label = f"'{node.name}'" if node.name else f"producing '{node.outputs[0].name}'"
                reasons.append(f"Concat {label}: {match}")
                continue
            rule.rewrite(graph, match)
            reasons.append("")
    if "" not in reasons:
        detail = "; ".join(reasons) if reasons else "the model has no Concat"
        raise ConfigError(f"no YOLOv5 Focus block (4 stride-2 Slices + Concat) found: {detail}")
    onnx_ir.passes.common.RemoveUnusedNodesPass()(model)
    return model
