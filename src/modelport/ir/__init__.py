"""The one model type (:class:`onnx_ir.Model`): load, save, describe."""

from modelport.ir.serde import check_model, clone, from_bytes, load, save, source_path, to_bytes
from modelport.ir.specs import Dim, TensorSpec, concrete_shape, specs_of
from modelport.ir.summary import ModelSummary, count_macs, quantization_kind, summarize

__all__ = [
    "Dim",
    "ModelSummary",
    "TensorSpec",
    "check_model",
    "clone",
    "concrete_shape",
    "count_macs",
    "from_bytes",
    "load",
    "quantization_kind",
    "save",
    "source_path",
    "specs_of",
    "summarize",
    "to_bytes",
]
