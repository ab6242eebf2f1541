"""Inputs generated from a model's signature: realistic values, stated sizes, never a silent 1.

Random normal data is a poor probe for a real network: token ids past the vocabulary crash an
embedding lookup, a random 0/1 attention mask can mask out a whole row (softmax of nothing is
NaN), and an image model sees values it never saw in training. The ``realistic`` fill therefore
looks at the graph: integer inputs that index an embedding table stay below its size, attention
masks get leading ones and trailing zeros per row (never all zeros), image-like inputs get values
in ``[0, 1)``; anything else is standard normal. :meth:`InputPlan.describe` says which input got
what, so a report never hides how its inputs were made.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from modelport.errors import ConfigError, InputDtypeError
from modelport.ir.specs import TensorSpec, concrete_shape

__all__ = [
    "DEFAULT_DIM",
    "DEFAULT_INT_RANGE",
    "FILLS",
    "InputPlan",
    "effective_batch",
    "feeds_batch",
    "generate_feeds",
    "hinted_plan",
    "integer_input_ranges",
    "mask_inputs",
    "merge_ranges",
    "realistic_kind",
]

logger = logging.getLogger(__name__)

#: Size given to a dynamic, non-batch dimension nobody named.
DEFAULT_DIM = 32
#: Range [low, high) of generated integer inputs when the graph says nothing better.
DEFAULT_INT_RANGE = (0, 16)

Fill = Literal["realistic", "random", "ones", "zeros"]
#: Every fill :func:`generate_feeds` knows.
FILLS: tuple[str, ...] = ("realistic", "random", "ones", "zeros")
_PASS_THROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand"}
#: Ops through which a mask travels on its way to being applied (broadcast, reshape, convert).
_MASK_CARRIERS = _PASS_THROUGH | {"Transpose", "Not"}
#: Ops that apply a mask to scores or hidden states once it is a number (or a condition).
_MASK_USERS = {"Mul", "Sub", "Where", "And", "Or"}
#: Channel counts that make a rank-4 float input look like an image (gray, RGB, RGBA).
_IMAGE_CHANNELS = (1, 3, 4)


@dataclass
class InputPlan:
    """How inputs are generated: batch size, sizes of named dims, integer ranges, fill, seed."""

    batch: int = 1
    dims: dict[str, int] = field(default_factory=dict)
    default_dim: int = DEFAULT_DIM
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    fill: Fill = "random"
    seed: int = 0
    #: Inputs the graph uses as masks (see :func:`mask_inputs`); names containing "mask" count too.
    masks: set[str] = field(default_factory=set)

    def describe(self, specs: Sequence[TensorSpec]) -> dict[str, Any]:
        """The concrete shapes and ranges this plan produces, for a report."""
        return {
            s.name: {
                "shape": list(concrete_shape(s, batch=self.batch, dims=self.dims, default_dim=self.default_dim)),
                "dtype": str(s.dtype),
                "values": self._value_text(s),
            }
            for s in specs
        }

    def _value_text(self, spec: TensorSpec) -> str:
        if self.fill in ("ones", "zeros"):
            return self.fill
        if self.fill == "realistic":
            kind = realistic_kind(spec, self)
            if kind == "mask":
                how = "used as a mask in the graph" if spec.name in self.masks else "named a mask"
                return f"0/1 mask, leading ones then trailing zeros per row ({how})"
            if kind == "image":
                return "image-like: uniform in [0, 1)"
        if spec.dtype.kind in "iu":
            lo, hi = _int_range(spec, self)
            return f"uniform integers in [{lo}, {hi})"
        if spec.dtype == np.bool_:
            return "random booleans"
        return "standard normal"


def integer_input_ranges(model: ir.Model) -> dict[str, tuple[int, int]]:
    """Valid index ranges of integer inputs that feed a Gather (embedding lookups) or a one-hot.

    An input that reaches the indices of a Gather over a table with a static axis (through casts,
    reshapes and broadcasts) gets ``[0, table.shape[axis])``, so generated token ids stay inside the
    vocabulary; one that reaches a OneHot gets ``[0, depth)``, and one compared by Equal against a
    constant ``arange(K)`` (how JAX/TF export a one-hot) gets ``[0, K)``.
    """
    ranges: dict[str, tuple[int, int]] = {}
    for value in model.graph.inputs:
        if value.dtype is None or not value.dtype.is_integer():
            continue
        size = _gather_extent(value, depth=0)
        if size is not None and value.name:
            ranges[value.name] = (0, size)
    return ranges


def _gather_extent(value: ir.Value, depth: int) -> int | None:
    """Size of the index space ``value`` reaches: a Gather's table axis, a OneHot's depth, or an
    Equal against ``arange(K)`` (one-hot as exported from JAX/TF). None when nothing says."""
    if depth > 4:
        return None
    for node in value.consumers():
        extent = _index_extent(node, value)
        if extent is not None:
            return extent
        if node.op_type in _PASS_THROUGH and node.inputs and node.inputs[0] is value:
            found = _gather_extent(node.outputs[0], depth + 1)
            if found is not None:
                return found
    return None


def _index_extent(node: ir.Node, value: ir.Value) -> int | None:
    if node.op_type == "Gather" and len(node.inputs) > 1 and node.inputs[1] is value:
        table = node.inputs[0]
        if table is not None and table.shape is not None:
            axis_attr = node.attributes.get("axis")
            axis = int(axis_attr.value) if axis_attr is not None else 0
            dim = table.shape[axis]
            if isinstance(dim, int):
                return dim
    if node.op_type == "OneHot" and len(node.inputs) > 1 and node.inputs[0] is value:
        depth = _constant(node.inputs[1])
        if depth is not None and depth.size == 1:
            return int(depth.reshape(-1)[0])
    if node.op_type == "Equal" and len(node.inputs) == 2:
        other = node.inputs[1] if node.inputs[0] is value else node.inputs[0]
        classes = _constant(other)
        if classes is not None and classes.dtype.kind in "iu" and classes.size > 1:
            flat = classes.reshape(-1)
            if np.array_equal(flat, np.arange(flat.size)):
                return int(flat.size)
    return None


def _constant(value: ir.Value | None) -> np.ndarray[Any, Any] | None:
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else np.asarray(tensor.numpy())


def mask_inputs(model: ir.Model) -> set[str]:
    """Integer or boolean graph inputs the graph applies as a mask.

    An input counts when, through casts, reshapes and broadcasts, it reaches a ``Mul``, ``Sub``,
    ``Where``, ``And`` or ``Or`` *after a Cast* (an integer mask turned into numbers), or reaches
    ``Where``'s condition directly (a boolean mask). Inputs that index an embedding table are
    token ids, never masks.
    """
    ranges = integer_input_ranges(model)
    found: set[str] = set()
    for value in model.graph.inputs:
        if value.dtype is None or not value.name or value.name in ranges:
            continue
        if not (value.dtype.is_integer() or value.dtype == ir.DataType.BOOL):
            continue
        if _applied_as_mask(value, cast_seen=False, depth=0):
            found.add(value.name)
    return found


def _applied_as_mask(value: ir.Value, *, cast_seen: bool, depth: int) -> bool:
    if depth > 6:
        return False
    for node in value.consumers():
        if node.op_type == "Where" and node.inputs and node.inputs[0] is value:
            return True
        if node.op_type in _MASK_USERS and node.op_type != "Where" and cast_seen:
            return True
        if node.op_type in _MASK_CARRIERS and node.inputs and node.inputs[0] is value and node.outputs:
            casted = cast_seen or node.op_type == "Cast"
            if _applied_as_mask(node.outputs[0], cast_seen=casted, depth=depth + 1):
                return True
    return False


def realistic_kind(spec: TensorSpec, plan: InputPlan) -> Literal["mask", "image", "ids", "normal", "bool"]:
    """What the ``realistic`` fill gives ``spec``: a 0/1 mask, an image in [0, 1), integer ids
    (within the plan's range), random booleans, or standard normal values."""
    integral = spec.dtype.kind in "iu" or spec.dtype == np.bool_
    if integral and (spec.name in plan.masks or "mask" in spec.name.lower()):
        return "mask"
    if spec.dtype.kind in "iu":
        return "ids"
    if spec.dtype == np.bool_:
        return "bool"
    if spec.dtype.kind == "f" and _looks_like_image(spec):
        return "image"
    return "normal"


def _looks_like_image(spec: TensorSpec) -> bool:
    """Rank 4 with 1, 3 or 4 channels on axis 1 (NCHW) or axis 3 (NHWC)."""
    shape = spec.shape
    if shape is None or len(shape) != 4:
        return False
    return shape[1] in _IMAGE_CHANNELS or shape[3] in _IMAGE_CHANNELS


def effective_batch(specs: Sequence[TensorSpec], batch: int) -> int:
    """The batch generated inputs will really have.

    Any input with a dynamic axis 0 takes the requested batch. Only when every input fixes axis 0
    is the batch fixed (then to the first input's size); an auxiliary static input such as a
    ``scale: float[1]`` next to ``x: float[N, 3]`` does not pin the batch.
    """
    batched = [spec for spec in specs if spec.shape]
    if not batched or any(not isinstance(spec.shape[0], int) for spec in batched if spec.shape):
        return batch
    first = batched[0].shape
    assert first is not None and isinstance(first[0], int)
    return first[0]


def feeds_batch(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray[Any, Any]]) -> int:
    """The batch size of ``feeds``: axis 0 of the first input whose axis 0 is dynamic.

    Inputs with a static axis 0 (an auxiliary ``scale: float[1]``) do not say the batch; when
    every input is static the first one's axis 0 is the batch.
    """
    by_name = {s.name: s for s in specs}
    sized = [(name, a) for name, a in feeds.items() if a.ndim > 0]
    for name, array in sized:
        spec = by_name.get(name)
        if spec is not None and spec.shape and not isinstance(spec.shape[0], int):
            return int(array.shape[0])
    return int(sized[0][1].shape[0]) if sized else 1


def generate_feeds(specs: Sequence[TensorSpec], plan: InputPlan | None = None) -> dict[str, np.ndarray[Any, Any]]:
    """Feeds for ``specs`` following ``plan``; deterministic for a given seed."""
    plan = plan or InputPlan()
    if plan.fill not in FILLS:
        raise ConfigError(f"unknown input fill '{plan.fill}' — choose one of: {', '.join(FILLS)}")
    rng = np.random.default_rng(plan.seed)
    # A dimension named on axis 0 is the batch, wherever else the same name appears.
    batch_labels = {s.shape[0]: plan.batch for s in specs if s.shape and isinstance(s.shape[0], str)}
    dims = {**batch_labels, **plan.dims}
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    for spec in specs:
        shape = concrete_shape(spec, batch=plan.batch, dims=dims, default_dim=plan.default_dim)
        feeds[spec.name] = _values(spec, shape, plan, rng)
    return feeds


def _values(
    spec: TensorSpec, shape: tuple[int, ...], plan: InputPlan, rng: np.random.Generator
) -> np.ndarray[Any, Any]:
    dtype = spec.dtype
    if plan.fill == "ones":
        return np.ones(shape, dtype=dtype)
    if plan.fill == "zeros":
        return np.zeros(shape, dtype=dtype)
    if plan.fill == "realistic" and dtype.kind in "iufb":
        kind = realistic_kind(spec, plan)
        if kind == "mask":
            return _padding_mask(shape, rng).astype(dtype)
        if kind == "image":
            return rng.random(size=shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind in "iu":
        lo, hi = _int_range(spec, plan)
        return rng.integers(lo, hi, size=shape).astype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(size=shape).astype(dtype)
    raise InputDtypeError(f"cannot generate values for input '{spec.name}' of dtype {dtype} — pass real data for it")


def _padding_mask(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """0/1 along the last axis: each row keeps a random number (>= 1) of leading ones, then zeros.

    Row 0 is full length (a batch is padded to its longest sequence); no row is all zeros,
    which would turn a softmax over the masked scores into NaN and test nothing real.
    """
    if not shape:
        return np.ones((), dtype=np.int64)
    length = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    if length == 0 or rows == 0:
        return np.ones(shape, dtype=np.int64)
    kept = rng.integers(1, length + 1, size=rows)
    kept[0] = length
    mask = (np.arange(length)[None, :] < kept[:, None]).astype(np.int64)
    return mask.reshape(shape)


def _int_range(spec: TensorSpec, plan: InputPlan) -> tuple[int, int]:
    lo, hi = plan.int_ranges.get(spec.name, DEFAULT_INT_RANGE)
    info = np.iinfo(spec.dtype)
    return max(lo, int(info.min)), min(hi, int(info.max) + 1)


def merge_ranges(
    found: Mapping[str, tuple[int, int]], given: Mapping[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """Ranges the user gave win over ranges found in the graph."""
    return {**found, **given}


def hinted_plan(plan: InputPlan, model: ir.Model | None) -> InputPlan:
    """``plan`` with the integer ranges and masks found in ``model``'s graph (what the user gave wins)."""
    if model is None:
        return plan
    ranges = merge_ranges(integer_input_ranges(model), plan.int_ranges)
    return replace(plan, int_ranges=ranges, masks=mask_inputs(model) | plan.masks)
