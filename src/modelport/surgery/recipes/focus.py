"""YOLOv5 Focus slicing -> SpaceToDepth: the recipe face of :mod:`modelport.passes.rules.focus`.

The rule lives with the other fusions (the optimizer runs it as ``focus-space-to-depth``); this
module keeps the recipe name ``focus`` and its options for ``modelport surgery recipe``.
"""

from __future__ import annotations

from modelport.passes.rules.focus import FocusForm, FocusRule, FocusToSpaceToDepthPass, replace_focus

__all__ = ["FocusForm", "FocusRule", "FocusToSpaceToDepthPass", "replace_focus"]
