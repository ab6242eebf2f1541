"""Tensor specifications: what an input or output of a model looks like."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Dim", "TensorSpec", "concrete_shape", "specs_of"]

# A dimension is a size, a symbolic name, or None (unknown and unnamed).
Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of one model input or output.

    ``dtype`` is a numpy dtype (``np.dtype('float32')``); ``shape`` is ``None`` when the rank is
    unknown, otherwise a tuple whose entries are sizes, symbolic names or ``None``.
    """

    name: str
    dtype: np.dtype[Any]
    shape: tuple[Dim, ...] | None

    @property
    def is_dynamic(self) -> bool:
        return self.shape is None or any(not isinstance(d, int) for d in self.shape)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """Axis -> label for every non-static dimension ('?' when unnamed)."""
        if self.shape is None:
            return {}
        return {i: (d if isinstance(d, str) else "?") for i, d in enumerate(self.shape) if not isinstance(d, int)}

    def shape_str(self) -> str:
        if self.shape is None:
            return "[unknown rank]"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": str(self.dtype),
            "shape": list(self.shape) if self.shape is not None else None,
        }


def specs_of(values: Sequence[Any]) -> list[TensorSpec]:
    """TensorSpecs of onnx_ir values (graph inputs or outputs)."""
    specs = []
    for value in values:
        dtype = np.dtype(value.dtype.numpy()) if value.dtype is not None else np.dtype("float32")
        shape: tuple[Dim, ...] | None = None
        if value.shape is not None:
            dims: list[Dim] = []
            for dim in value.shape:
                if isinstance(dim, int):
                    dims.append(dim)
                else:
                    dims.append(dim.value)
            shape = tuple(dims)
        specs.append(TensorSpec(name=value.name, dtype=dtype, shape=shape))
    return specs


def concrete_shape(
    spec: TensorSpec,
    *,
    batch: int,
    dims: Mapping[str, int] | None = None,
    default_dim: int,
) -> tuple[int, ...]:
    """Fill a spec's non-static dimensions: axis 0 gets ``batch``, named dims come from ``dims``,
    anything else gets ``default_dim``. A rank-unknown spec is an error the caller must fix."""
    if spec.shape is None:
        from modelport.errors import InputShapeError

        raise InputShapeError(
            f"input '{spec.name}' has unknown rank — give its shape explicitly (e.g. --shape {spec.name}:1x3x224x224)"
        )
    named = dict(dims or {})
    out: list[int] = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            out.append(dim)
        elif isinstance(dim, str) and dim in named:
            out.append(named[dim])
        elif axis == 0:
            out.append(batch)
        else:
            out.append(default_dim)
    return tuple(out)
