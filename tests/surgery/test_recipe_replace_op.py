from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import ConfigError
from modelport.runners.onnxruntime import OrtRunner
from modelport.surgery.recipes import RECIPES, add_identity_output, replace_op

Array = np.ndarray[Any, Any]

# The onnx-graphsurgeon "modifying a model" example: s = Add(x, b) becomes LeakyRelu(x).
TEXT = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 6] x) => (float[N, 6] y) {
  s = Add(x, b)
  y = Mul(s, two)
}"""

X = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)


def _model(text: str = TEXT) -> ir.Model:
    model = ir.from_onnx_text(text)
    for name, array in {"b": np.full(6, 0.5, np.float32), "two": np.float32(2.0)}.items():
        value = next(v for node in model.graph for v in node.inputs if v is not None and v.name == name)
        value.const_value = ir.tensor(np.asarray(array), name=name)
        value.type = ir.TensorType(ir.DataType.FLOAT)
        value.shape = ir.Shape(np.asarray(array).shape)
        model.graph.register_initializer(value)
    return model


def _run(model: ir.Model, feeds: dict[str, Array]) -> dict[str, Array]:
    with OrtRunner(model, graph_optimization="disable") as runner:
        return runner.infer(feeds)


def _leaky(x: Array, alpha: float) -> Array:
    return np.where(x > 0, x, np.float32(alpha) * x)


def test_add_becomes_leaky_relu_of_its_first_input() -> None:
    model = replace_op(_model(), op_type="Add", new_op="LeakyRelu", attributes={"alpha": 0.02}, keep_inputs=[0])
    assert [n.op_type for n in model.graph] == ["LeakyRelu", "Mul"]
    assert "b" not in model.graph.initializers  # no longer read by anything
    np.testing.assert_array_equal(_run(model, {"x": X})["y"], _leaky(X, 0.02) * np.float32(2))


def test_integer_attribute_is_converted_to_the_schema_type() -> None:
    model = replace_op(_model(), op_type="Add", new_op="LeakyRelu", attributes={"alpha": 1}, keep_inputs=[0])
    node = next(iter(model.graph))
    assert node.attributes["alpha"].type == ir.AttributeType.FLOAT
    np.testing.assert_array_equal(_run(model, {"x": X})["y"], X * np.float32(2))


def test_limit_replaces_only_the_first_match() -> None:
    text = TEXT.replace("y = Mul(s, two)", "t = Add(s, b)\n  y = Mul(t, two)")
    model = replace_op(
        _model(text), op_type="Add", new_op="LeakyRelu", attributes={"alpha": 0.1}, keep_inputs=[0], limit=1
    )
    assert [n.op_type for n in model.graph] == ["LeakyRelu", "Add", "Mul"]
    assert "b" in model.graph.initializers  # still read by the second Add
    expected = (_leaky(X, 0.1) + np.float32(0.5)) * np.float32(2)
    np.testing.assert_array_equal(_run(model, {"x": X})["y"], expected)


def test_select_by_name_and_keep_attributes() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[3, 4] x) => (float[3, 4] y) {
      y = Softmax<axis=0>(x)
    }"""
    model = ir.from_onnx_text(text)
    next(iter(model.graph)).name = "head/softmax"
    replace_op(model, name="head/softmax", new_op="LogSoftmax", keep_attributes=True)
    node = next(iter(model.graph))
    assert (node.op_type, node.name, node.attributes["axis"].value) == ("LogSoftmax", "head/softmax", 0)
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    expected = x - x.max(0) - np.log(np.exp(x - x.max(0)).sum(0))
    np.testing.assert_allclose(_run(model, {"x": x})["y"], expected, rtol=1e-5, atol=1e-6)


def test_custom_domain_op_is_taken_as_given() -> None:
    model = replace_op(_model(), op_type="Add", new_op="MyAdd", domain="com.example", attributes={"k": 3})
    node = next(iter(model.graph))
    assert (node.domain, node.op_type, node.attributes["k"].value, len(node.inputs)) == ("com.example", "MyAdd", 3, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"new_op": "LeakyRelu"}, "needs a node selector"),
        ({"op_type": "Sub", "new_op": "LeakyRelu"}, r"no node matches op_type='Sub'.*\['Add', 'Mul'\]"),
        ({"op_type": "Add", "new_op": "LeakyRelu"}, r"LeakyRelu takes 1 to 1 inputs.*keep_inputs=\[0\]"),
        ({"op_type": "Add", "new_op": "LeakyRelu", "keep_inputs": [2]}, "index 2 is out of range"),
        ({"op_type": "Add", "new_op": "LeakyRelU", "keep_inputs": [0]}, "not a standard ONNX op at opset 17"),
        (
            {"op_type": "Add", "new_op": "LeakyRelu", "keep_inputs": [0], "attributes": {"beta": 1.0}},
            "no attribute 'beta'",
        ),
        ({"op_type": "Add", "new_op": "LeakyRelu", "keep_inputs": [0], "attributes": {"alpha": "x"}}, "alpha.*FLOAT"),
        ({"op_type": "Add", "new_op": "Cast", "keep_inputs": [0]}, "requires attribute 'to'"),
        ({"op_type": "Add", "new_op": "TopK"}, "TopK produces 2 to 2 outputs"),
        ({"op_type": "Add", "new_op": "LeakyRelu", "keep_inputs": [0], "limit": 0}, "limit must be >= 1"),
    ],
)
def test_replace_op_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        replace_op(_model(), **kwargs)


def test_identity_output_exposes_an_intermediate_tensor() -> None:
    model = replace_op(_model(), op_type="Add", new_op="LeakyRelu", attributes={"alpha": 0.02}, keep_inputs=[0])
    add_identity_output(model, tensor="s", output_name="identity_out")  # 's' has no recorded type
    assert [v.name for v in model.graph.outputs] == ["y", "identity_out"]
    assert model.graph.outputs[1].dtype == ir.DataType.FLOAT
    out = _run(model, {"x": X})
    np.testing.assert_array_equal(out["identity_out"], _leaky(X, 0.02))
    np.testing.assert_array_equal(out["y"], _leaky(X, 0.02) * np.float32(2))


def test_identity_output_can_replace_the_outputs() -> None:
    model = add_identity_output(_model(), tensor="x", replace_outputs=True)
    assert [v.name for v in model.graph.outputs] == ["x_identity"]
    assert [n.op_type for n in model.graph] == ["Identity"]  # Add and Mul are dead now
    np.testing.assert_array_equal(_run(model, {"x": X})["x_identity"], X)


def test_identity_output_errors() -> None:
    with pytest.raises(ConfigError, match=r"no tensor named 'nope'.*'y'"):
        add_identity_output(_model(), tensor="nope")
    with pytest.raises(ConfigError, match="cannot add output 'y'"):
        add_identity_output(_model(), tensor="s", output_name="y")


def test_recipes_registry_names_the_functions() -> None:
    assert RECIPES["replace-op"] is replace_op
    assert RECIPES["identity-output"] is add_identity_output
    assert all(fn.__doc__ and "Options:" in fn.__doc__ for fn in RECIPES.values())
