"""modelport: take a trained network to a fast, verified, served deployment.

The public API is imported lazily so that ``import modelport`` (and the CLI's start-up) does not
pay for onnx, onnxruntime or torch until a function that needs them is called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ModelportError",
    "Tolerance",
    "__version__",
    "bench",
    "bisect",
    "compare",
    "deploy",
    "export_torch",
    "inspect",
    "load",
    "optimize",
    "quantize",
    "reduce_model",
    "save",
    "verify",
]

_LAZY = {
    "load": "modelport.ir.serde:load",
    "save": "modelport.ir.serde:save",
    "inspect": "modelport.ir.summary:summarize",
    "export_torch": "modelport.export.torch_export:export_torch",
    "optimize": "modelport.passes.manager:optimize",
    "quantize": "modelport.quantize.api:quantize",
    "compare": "modelport.verify.api:compare",
    "verify": "modelport.verify.api:verify",
    "bisect": "modelport.verify.bisect:bisect",
    "reduce_model": "modelport.verify.reduce:reduce_model",
    "bench": "modelport.bench.harness:bench",
    "deploy": "modelport.deploy.job:deploy",
    "Tolerance": "modelport.verify.tolerance:Tolerance",
    "ModelportError": "modelport.errors:ModelportError",
}

if TYPE_CHECKING:
    from modelport.bench.harness import bench
    from modelport.deploy.job import deploy
    from modelport.errors import ModelportError
    from modelport.export.torch_export import export_torch
    from modelport.ir.serde import load, save
    from modelport.ir.summary import summarize as inspect
    from modelport.passes.manager import optimize
    from modelport.quantize.api import quantize
    from modelport.verify.api import compare, verify
    from modelport.verify.bisect import bisect
    from modelport.verify.reduce import reduce_model
    from modelport.verify.tolerance import Tolerance


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'modelport' has no attribute '{name}'")
    module_name, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
