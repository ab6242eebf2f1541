"""Deployment recipes: whole-model edits a deployment needs, each ``fn(model, **options) -> model``.

Every recipe edits the model in place, returns it, takes keyword-only typed options, and raises
:class:`~modelport.errors.ConfigError` with a fix when an option does not fit the model. Their
docstrings double as CLI help. :data:`RECIPES` maps the CLI name to the function:

* ``replace-op``: turn matching nodes into another op (``Add`` -> ``LeakyRelu(alpha)``).
* ``identity-output``: expose any tensor as a graph output through an ``Identity``.
* ``focus``: YOLOv5's Focus slicing -> ``SpaceToDepth`` (or one stride-2 ``Conv``), bit-exact.
* ``nms``: box decoding + ``NonMaxSuppression`` with TensorRT EfficientNMS's four outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir

from modelport.surgery.recipes.focus import FocusRule, FocusToSpaceToDepthPass, replace_focus
from modelport.surgery.recipes.nms import OUTPUT_NAMES, append_nms
from modelport.surgery.recipes.replace_op import add_identity_output, graph_value, replace_op

__all__ = [
    "OUTPUT_NAMES",
    "RECIPES",
    "FocusRule",
    "FocusToSpaceToDepthPass",
    "add_identity_output",
    "append_nms",
    "graph_value",
    "replace_focus",
    "replace_op",
]

#: CLI name -> recipe.
RECIPES: dict[str, Callable[..., ir.Model]] = {
    "replace-op": replace_op,
    "identity-output": add_identity_output,
    "focus": replace_focus,
    "nms": append_nms,
}
