from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import ConfigError
from modelport.runners.onnxruntime import OrtRunner
from modelport.surgery import find_nodes, rename_value, set_batch_dim

TEXT = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3] x) => (float[N, 3] y) {
  a = Relu(x)
  y = Neg(a)
}"""


def test_find_nodes_by_type_name_and_regex() -> None:
    model = ir.from_onnx_text(TEXT)
    for i, node in enumerate(model.graph):
        node.name = f"block{i}/{node.op_type.lower()}"
    assert [n.name for n in find_nodes(model, op_type="Neg")] == ["block1/neg"]
    assert [n.op_type for n in find_nodes(model, regex=r"^block0/")] == ["Relu"]
    assert list(find_nodes(model, name="missing")) == []


def test_rename_value_keeps_the_model_runnable() -> None:
    model = ir.from_onnx_text(TEXT)
    rename_value(model, "x", "pixels")
    rename_value(model, "y", "scores")
    with OrtRunner(model) as runner:
        out = runner.infer({"pixels": np.array([[1, -2, 3]], np.float32)})
    np.testing.assert_array_equal(out["scores"], [[-1, 0, -3]])
    with pytest.raises(ConfigError, match="no tensor named 'x'"):
        rename_value(model, "x", "z")
    with pytest.raises(ConfigError, match="already exists"):
        rename_value(model, "pixels", "scores")


def test_set_batch_dim_static_and_dynamic() -> None:
    model = ir.from_onnx_text(TEXT)
    set_batch_dim(model, 4)
    assert list(model.graph.inputs[0].shape or []) == [4, 3]
    with OrtRunner(model) as runner:
        assert runner.inputs[0].shape == (4, 3)
    set_batch_dim(model, "batch")
    with OrtRunner(model) as runner:
        assert runner.inputs[0].shape == ("batch", 3)
    with pytest.raises(ConfigError, match="batch must be >= 1"):
        set_batch_dim(model, 0)
