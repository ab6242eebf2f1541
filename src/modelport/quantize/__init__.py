"""Precision: calibration data, INT8 (static QDQ, dynamic), FP16 — each measured against FP32."""

from modelport.quantize.api import FLOORS, QuantizeResult, quantize, stack_samples
from modelport.quantize.calibration import ImagePreprocess, load_calibration, parse_preprocess

__all__ = [
    "FLOORS",
    "ImagePreprocess",
    "QuantizeResult",
    "load_calibration",
    "parse_preprocess",
    "quantize",
    "stack_samples",
]
