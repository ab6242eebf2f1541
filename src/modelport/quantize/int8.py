"""INT8 quantization through the ONNX Runtime quantizer: static QDQ and dynamic.

Static quantization inserts QuantizeLinear/DequantizeLinear pairs (QDQ) with per-channel int8
weights and uint8 activations (U8S8, the fast path on x86 with VNNI), calibrated on real samples.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from modelport.errors import QuantizationError
from modelport.ir.serde import clone, load, save

__all__ = ["CalibrationMethod", "quantize_dynamic", "quantize_static"]

logger = logging.getLogger(__name__)

CalibrationMethod = Literal["minmax", "entropy", "percentile"]
Feeds = dict[str, np.ndarray[Any, Any]]


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, samples: Sequence[Feeds]) -> None:
        self._samples = samples
        self._iter: Iterator[Feeds] = iter(samples)

    def get_next(self) -> Feeds | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._samples)


def _reload(path: Path) -> ir.Model:
    model = load(path)
    ir.external_data.load_to_model(model)
    model.meta.clear()  # the temporary file is gone after this; the model lives in memory
    return model


def _for_ort_quantizer(model: ir.Model) -> ir.Model:
    """A copy without shape annotations on initializers.

    The ORT quantizer rewrites some weights (it transposes Gemm weights with transB) but leaves
    their value_info entries behind, and its own shape inference then fails on the stale shape.
    Initializers carry their shape in the tensor, so the annotation is redundant.
    """
    copy = clone(model)
    for graph in copy.graphs():
        for value in graph.initializers.values():
            value.shape = None
    return copy


def quantize_static(
    model: ir.Model,
    samples: Sequence[Feeds],
    *,
    per_channel: bool = True,
    method: CalibrationMethod = "minmax",
    activation_type: Literal["uint8", "int8"] = "uint8",
    nodes_to_exclude: Sequence[str] = (),
) -> ir.Model:
    """Static INT8 (QDQ) quantization calibrated on ``samples`` (feeds of one sample each)."""
    from onnxruntime import quantization as q

    if not samples:
        raise QuantizationError("INT8 static quantization needs calibration samples — pass --calib PATH")
    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }
    act = q.QuantType.QUInt8 if activation_type == "uint8" else q.QuantType.QInt8
    with tempfile.TemporaryDirectory(prefix="modelport-q-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        save(_for_ort_quantizer(model), src)
        try:
            q.quantize_static(
                str(src),
                str(dst),
                _Reader(samples),
                quant_format=q.QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=act,
                weight_type=q.QuantType.QInt8,
                calibrate_method=methods[method],
                nodes_to_exclude=list(nodes_to_exclude),
                extra_options={
                    "ActivationSymmetric": activation_type == "int8",
                    "WeightSymmetric": True,
                },
            )
        except Exception as e:
            raise QuantizationError(f"ONNX Runtime static quantization failed: {e}") from e
        return _reload(dst)


def quantize_dynamic(model: ir.Model, *, per_channel: bool = False) -> ir.Model:
    """Dynamic INT8: weights quantized ahead of time, activations at run time (MatMul-heavy models)."""
    from onnxruntime import quantization as q

    with tempfile.TemporaryDirectory(prefix="modelport-q-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        save(_for_ort_quantizer(model), src)
        try:
            q.quantize_dynamic(str(src), str(dst), per_channel=per_channel, weight_type=q.QuantType.QInt8)
        except Exception as e:
            raise QuantizationError(f"ONNX Runtime dynamic quantization failed: {e}") from e
        return _reload(dst)
