"""FP16 conversion that keeps float32 inputs and outputs (casts at the boundary)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx_ir as ir

from modelport.errors import QuantizationError
from modelport.ir.serde import transform_proto

__all__ = ["DEFAULT_FP16_BLOCK_LIST", "to_fp16"]

#: Ops kept in float32: range-sensitive reductions and ops whose FP16 kernels are missing on CPU.
DEFAULT_FP16_BLOCK_LIST = (
    "Resize",
    "Range",
    "RandomNormal",
    "RandomUniform",
    "NonMaxSuppression",
    "TopK",
    "RoiAlign",
    "CumSum",
    "Upsample",
    "ReduceSumSquare",
    "ReduceL2",
    "Softmax",
    "LayerNormalization",
)


def to_fp16(model: ir.Model, *, block_list: Sequence[str] = DEFAULT_FP16_BLOCK_LIST) -> ir.Model:
    """Convert weights and compute to float16; I/O stay float32; ``block_list`` ops stay float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    def convert(proto: Any) -> Any:
        return convert_float_to_float16(proto, keep_io_types=True, op_block_list=list(block_list))

    try:
        return transform_proto(model, convert)
    except Exception as e:
        raise QuantizationError(f"FP16 conversion failed: {e}") from e
