"""Inputs generated from a model's signature: realistic values, stated sizes, never a silent 1."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from modelport.errors import InputDtypeError
from modelport.ir.specs import TensorSpec, concrete_shape

__all__ = [
    "DEFAULT_DIM",
    "DEFAULT_INT_RANGE",
    "InputPlan",
    "effective_batch",
    "feeds_batch",
    "generate_feeds",
    "integer_input_ranges",
    "merge_ranges",
]

logger = logging.getLogger(__name__)

#: Size given to a dynamic, non-batch dimension nobody named.
DEFAULT_DIM = 32
#: Range [low, high) of generated integer inputs when the graph says nothing better.
DEFAULT_INT_RANGE = (0, 16)

Fill = Literal["random", "ones", "zeros"]
_PASS_THROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}


@dataclass
class InputPlan:
    """How inputs are generated: batch size, sizes of named dims, integer ranges, fill, seed."""

    batch: int = 1
    dims: dict[str, int] = field(default_factory=dict)
    default_dim: int = DEFAULT_DIM
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    fill: Fill = "random"
    seed: int = 0

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
        if self.fill != "random":
            return self.fill
        if spec.dtype.kind in "iu":
            lo, hi = self.int_ranges.get(spec.name, DEFAULT_INT_RANGE)
            return f"uniform integers in [{lo}, {hi})"
        if spec.dtype == np.bool_:
            return "random booleans"
        return "standard normal"


def integer_input_ranges(model: ir.Model) -> dict[str, tuple[int, int]]:
    """Valid index ranges of integer inputs that feed a Gather (embedding lookups).

    An input that reaches the indices of a Gather over a constant table (through casts and
    reshapes) gets ``[0, table.shape[axis])``, so generated token ids stay inside the vocabulary.
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
    if depth > 4:
        return None
    for node in value.consumers():
        if node.op_type == "Gather" and len(node.inputs) > 1 and node.inputs[1] is value:
            table = node.inputs[0]
            if table is not None and table.shape is not None:
                axis_attr = node.attributes.get("axis")
                axis = int(axis_attr.value) if axis_attr is not None else 0
                dim = table.shape[axis]
                if isinstance(dim, int):
                    return dim
        if node.op_type in _PASS_THROUGH and node.inputs and node.inputs[0] is value:
            found = _gather_extent(node.outputs[0], depth + 1)
            if found is not None:
                return found
    return None


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
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind in "iu":
        lo, hi = _int_range(spec, plan)
        return rng.integers(lo, hi, size=shape).astype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(size=shape).astype(dtype)
    raise InputDtypeError(f"cannot generate values for input '{spec.name}' of dtype {dtype} — pass real data for it")


def _int_range(spec: TensorSpec, plan: InputPlan) -> tuple[int, int]:
    lo, hi = plan.int_ranges.get(spec.name, DEFAULT_INT_RANGE)
    info = np.iinfo(spec.dtype)
    return max(lo, int(info.min)), min(hi, int(info.max) + 1)


def merge_ranges(
    found: Mapping[str, tuple[int, int]], given: Mapping[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """Ranges the user gave win over ranges found in the graph."""
    return {**found, **given}
