"""PyTorch -> ONNX, always validated against eager PyTorch.

``export_torch`` exports, saves atomically, checks, and compares ONNX Runtime with the eager
module at the example shape and a second batch size. torch is imported only when a function
needs it, so importing this package is cheap.
"""

from modelport.export.factory import ExampleInputs, LoadedModule, load_factory, resolve_module
from modelport.export.result import Exporter, ExportResult
from modelport.export.specs import (
    parse_dynamic_axes,
    parse_dynamic_axis,
    parse_input_spec,
    parse_input_specs,
)
from modelport.export.torch_export import DEFAULT_TOLERANCE, export_torch

__all__ = [
    "DEFAULT_TOLERANCE",
    "ExampleInputs",
    "ExportResult",
    "Exporter",
    "LoadedModule",
    "export_torch",
    "load_factory",
    "parse_dynamic_axes",
    "parse_dynamic_axis",
    "parse_input_spec",
    "parse_input_specs",
    "resolve_module",
]
