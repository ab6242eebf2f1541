from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import ConfigError, InvalidModelError
from modelport.runners.onnxruntime import OrtRunner
from modelport.surgery import convert_opset
from modelport.surgery.opset import max_opset

X = np.random.default_rng(0).standard_normal((2, 1, 4)).astype(np.float32)


def _run(model: ir.Model) -> dict[str, np.ndarray[Any, Any]]:
    with OrtRunner(model, graph_optimization="disable") as runner:
        return runner.infer({"x": X})


def _ops(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph if node.op_type != "Constant"]


def _axes_as(model: ir.Model, op_type: str) -> str:
    """Where ``op_type`` keeps its axes: 'attribute' or 'input'."""
    node = next(n for n in model.graph if n.op_type == op_type)
    return "attribute" if "axes" in node.attributes else "input" if len(node.inputs) > 1 else "none"


# Opset 11: Squeeze and ReduceSum take axes as attributes (inputs from 13); Clip takes inputs.
OPSET_11 = """<ir_version: 6, opset_import: ["" : 11]>
g (float[2, 1, 4] x) => (float[2] y) {
  lo = Constant<value = float {-0.5}>()
  hi = Constant<value = float {0.5}>()
  c = Clip(x, lo, hi)
  s = Squeeze<axes = [1]>(c)
  y = ReduceSum<axes = [1], keepdims = 0>(s)
}"""

# Opset 18: ReduceMean takes axes as an input (an attribute up to 17).
OPSET_18 = """<ir_version: 8, opset_import: ["" : 18]>
g (float[2, 1, 4] x) => (float[2, 1] y) {
  lo = Constant<value = float {-0.5}>()
  hi = Constant<value = float {0.5}>()
  c = Clip(x, lo, hi)
  a1 = Constant<value = int64[1] {1}>()
  s = Squeeze(c, a1)
  y = ReduceMean<keepdims = 1>(s, a1)
}"""


def test_upgrade_moves_attribute_axes_to_inputs_exactly() -> None:
    model = ir.from_onnx_text(OPSET_11)
    upgraded = convert_opset(model, 17)
    assert upgraded.opset_imports[""] == 17
    assert _ops(upgraded) == ["Clip", "Squeeze", "ReduceSum"]
    assert (_axes_as(upgraded, "Squeeze"), _axes_as(upgraded, "ReduceSum")) == ("input", "input")
    np.testing.assert_array_equal(_run(upgraded)["y"], _run(model)["y"])
    assert model.opset_imports[""] == 11 and _axes_as(model, "Squeeze") == "attribute"  # the input is untouched


def test_downgrade_moves_input_axes_to_attributes_exactly() -> None:
    model = ir.from_onnx_text(OPSET_18)
    downgraded = convert_opset(model, 13)
    assert downgraded.opset_imports[""] == 13
    assert _ops(downgraded) == ["Clip", "Squeeze", "ReduceMean"]
    assert (_axes_as(downgraded, "Squeeze"), _axes_as(downgraded, "ReduceMean")) == ("input", "attribute")
    np.testing.assert_array_equal(_run(downgraded)["y"], _run(model)["y"])
    back = convert_opset(downgraded, 17)
    np.testing.assert_array_equal(_run(back)["y"], _run(model)["y"])


def test_the_ir_version_rises_with_the_opset() -> None:
    upgraded = convert_opset(ir.from_onnx_text(OPSET_11), 21)
    assert upgraded.ir_version >= 10  # opset 21 needs IR 10; the source said 6
    np.testing.assert_array_equal(_run(upgraded)["y"], _run(ir.from_onnx_text(OPSET_11))["y"])


def test_same_opset_is_a_copy() -> None:
    model = ir.from_onnx_text(OPSET_18)
    same = convert_opset(model, 18)
    assert same is not model and same.graph is not model.graph
    assert _ops(same) == _ops(model)


def test_conversion_errors_say_which_op_and_range() -> None:
    model = ir.from_onnx_text(OPSET_18)
    with pytest.raises(InvalidModelError, match="no adapter for Clip at opset 13"):
        convert_opset(model, 11)
    with pytest.raises(ConfigError, match=f"between opsets 7 and {max_opset()}"):
        convert_opset(model, 3)
    with pytest.raises(ConfigError, match="out of range"):
        convert_opset(model, max_opset() + 1)
