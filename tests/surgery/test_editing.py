from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import ConfigError, InvalidModelError
from modelport.runners.onnxruntime import OrtRunner
from modelport.surgery import (
    add_outputs,
    cleanup,
    find_chains,
    find_node,
    find_nodes,
    find_value,
    insert_after,
    remove_node,
    rename_value,
    replace_node,
    set_attribute,
    set_batch_dim,
    toposort,
)

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


# --------------------------------------------------------------------------- helpers for the tests below

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
RNG = np.random.default_rng(0)


def _run(model: ir.Model, feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    with OrtRunner(model, graph_optimization="disable") as runner:
        return runner.infer(feeds)


def _ops(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph]


def _named(text: str) -> ir.Model:
    """A model whose nodes are named after their first output."""
    model = ir.from_onnx_text(HEADER + text)
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        node.name = f"n_{node.outputs[0].name}"
    return model


CHAIN = """
g (float[N, 4] x, float[4, 4] w) => (float[N, 4] y, float[N, 4] z) {
  m = MatMul(x, w)
  a = Add(m, x)
  y = Relu(a)
  m2 = MatMul(y, w)
  a2 = Add(m2, x)
  s = Sigmoid(a2)
  z = Relu(s)
}"""

FEEDS = {"x": RNG.standard_normal((2, 4)).astype(np.float32), "w": RNG.standard_normal((4, 4)).astype(np.float32)}


# ----------------------------------------------------------------------------------------- finding


def test_find_chains_follows_first_outputs_and_alternatives() -> None:
    model = _named(CHAIN)
    chains = find_chains(model, "MatMul>Add>Relu|Sigmoid")
    assert [[n.name for n in chain] for chain in chains] == [["n_m", "n_a", "n_y"], ["n_m2", "n_a2", "n_s"]]
    assert [[n.name for n in c] for c in find_chains(model, "Sigmoid>Relu")] == [["n_s", "n_z"]]
    assert find_chains(model, "Relu>Add") == []


def test_find_chains_sole_consumer_refuses_shared_and_graph_output_values() -> None:
    model = _named(CHAIN)
    # y feeds m2 but is a graph output; a2 is read by Sigmoid only.
    assert find_chains(model, "Relu>MatMul", sole_consumer=True) == []
    assert len(find_chains(model, "Relu>MatMul")) == 1
    assert [[n.name for n in c] for c in find_chains(model, "Add>Sigmoid", sole_consumer=True)] == [["n_a2", "n_s"]]
    shared = _named("""
    g (float[N, 4] x) => (float[N, 4] y, float[N, 4] z) {
      a = Relu(x)
      y = Sigmoid(a)
      z = Tanh(a)
    }""")
    assert find_chains(shared, "Relu>Sigmoid", sole_consumer=True) == []
    with pytest.raises(ConfigError, match="empty step"):
        find_chains(model, "MatMul>>Relu")


def test_find_node_and_find_value_explain_misses() -> None:
    model = _named(CHAIN)
    assert find_node(model, name="n_a2").op_type == "Add"
    with pytest.raises(ConfigError, match="2 nodes match op_type='MatMul'"):
        find_node(model, op_type="MatMul")
    with pytest.raises(ConfigError, match="did you mean 'n_a', 'n_a2'"):
        find_node(model, name="n_a3")
    assert find_value(model, "a2").producer() is find_node(model, name="n_a2")
    with pytest.raises(ConfigError, match="no tensor named 'a3' — did you mean"):
        find_value(model, "a3")


# --------------------------------------------------------------------------------------- inserting


def test_insert_after_rewires_every_reader() -> None:
    model = _named(CHAIN)
    reference = _run(model, FEEDS)
    node = insert_after(find_value(model, "y"), "Mul", inputs_extra=[np.array(2, np.float32)], name="double")
    # y is a graph output: the Mul's output takes its place and its name.
    assert model.graph.outputs[0] is node.outputs[0]
    assert node.outputs[0].name == "y"
    assert _ops(model) == ["MatMul", "Add", "Relu", "Mul", "MatMul", "Add", "Sigmoid", "Relu"]
    assert find_node(model, name="n_m2").inputs[0] is node.outputs[0]
    assert find_value(model, "y_before_mul").producer() is find_node(model, name="n_y")
    tap = insert_after(find_value(model, "a2"), "Identity")
    assert tap.outputs[0].name == "a2_identity"
    assert find_node(model, name="n_s").inputs[0] is tap.outputs[0]
    out = _run(model, FEEDS)
    np.testing.assert_allclose(out["y"], reference["y"] * 2, rtol=1e-6)
    m2 = (reference["y"] * 2) @ FEEDS["w"]
    np.testing.assert_allclose(out["z"], 1 / (1 + np.exp(-(m2 + FEEDS["x"]))), rtol=1e-5, atol=1e-6)


def test_insert_after_a_graph_input_and_a_typed_output_name() -> None:
    model = _named(CHAIN)
    reference = _run(model, FEEDS)
    insert_after(model.graph.inputs[0], "Identity", output_name="x_copy")
    assert _ops(model)[0] == "Identity"
    assert find_node(model, name="n_m").inputs[0] is find_value(model, "x_copy")
    insert_after(find_value(model, "z"), "Identity", output_name="identity_out")
    assert [v.name for v in model.graph.outputs] == ["y", "identity_out"]
    assert model.graph.outputs[1].dtype == ir.DataType.FLOAT
    out = _run(model, FEEDS)
    np.testing.assert_array_equal(out["identity_out"], reference["z"])
    np.testing.assert_array_equal(out["y"], reference["y"])


# ------------------------------------------------------------------------------- removing/replacing


def test_remove_node_bypasses_a_single_input_node_exactly() -> None:
    model = _named("""
    g (float[N, 4] x) => (float[N, 4] y) {
      a = Relu(x)
      b = Identity(a)
      c = Dropout(b)
      y = Neg(c)
      dead = Sigmoid(x)
    }""")
    feeds = {"x": FEEDS["x"]}
    reference = _run(model, feeds)
    remove_node(find_node(model, op_type="Identity"))
    remove_node(find_node(model, op_type="Dropout"))
    remove_node(find_node(model, op_type="Sigmoid"))  # nobody reads it: just removed
    assert _ops(model) == ["Relu", "Neg"]
    np.testing.assert_array_equal(_run(model, feeds)["y"], reference["y"])


def test_remove_node_keeps_the_output_name_of_a_bypassed_last_node() -> None:
    model = _named("""
    g (float[N, 4] x) => (float[N, 4] y) {
      a = Relu(x)
      y = Identity(a)
    }""")
    remove_node(find_node(model, op_type="Identity"))
    assert _ops(model) == ["Relu"]
    assert [v.name for v in model.graph.outputs] == ["y"]
    np.testing.assert_array_equal(_run(model, {"x": FEEDS["x"]})["y"], np.maximum(FEEDS["x"], 0))


def test_remove_node_refuses_what_would_change_the_result() -> None:
    model = _named("""
    g (float[N, 4] x, float[N, 4] x2) => (float[N, 4] y, double[N, 4] d, float[N, 4] p, float[N, 2] r) {
      y = Add(x, x2)
      d = Cast<to = 11>(y)
      p = Identity(x)
      s = Constant<value = int64[2] {-1, 2}>()
      r = Reshape(x, s)
    }""")
    with pytest.raises(ConfigError, match="2 non-constant inputs"):
        remove_node(find_node(model, op_type="Add"))
    with pytest.raises(ConfigError, match="wrong dtype"):
        remove_node(find_node(model, op_type="Cast"))
    with pytest.raises(ConfigError, match=r"cannot remove Identity 'n_p': 'p' is a graph output.*keep the node"):
        remove_node(find_node(model, op_type="Identity"))
    with pytest.raises(ConfigError, match=r"has shape \[N,2\]"):
        remove_node(find_node(model, op_type="Reshape"))
    assert _ops(model) == ["Add", "Cast", "Identity", "Constant", "Reshape"]


def test_graphsurgeon_recipe_add_to_leaky_relu_with_identity_output() -> None:
    # The seeds' onnx-graphsurgeon example: Add(x0, x1) becomes LeakyRelu(x1, alpha=0.02), whose
    # result is also exposed through an Identity; x0's branch disappears after cleanup.
    model = _named("""
    g (float[N, 4] x0, float[N, 4] x1) => (float[N, 4] y) {
      u = Sigmoid(x0)
      y = Add(u, x1)
    }""")
    add = find_node(model, op_type="Add")
    leaky = replace_node(add, "LeakyRelu", inputs=[add.inputs[1]], attributes={"alpha": 0.02})
    insert_after(leaky.outputs[0], "Identity", output_name="identity_out")
    assert cleanup(model, remove_unused_inputs=True)
    toposort(model)
    assert _ops(model) == ["LeakyRelu", "Identity"]
    assert leaky.name == "n_y"
    assert [v.name for v in model.graph.inputs] == ["x1"]
    assert [v.name for v in model.graph.outputs] == ["identity_out"]
    x1 = FEEDS["x"]
    np.testing.assert_allclose(_run(model, {"x1": x1})["identity_out"], np.where(x1 > 0, x1, 0.02 * x1), rtol=1e-6)


def test_replace_node_keeps_inputs_outputs_and_readers() -> None:
    model = _named(CHAIN)
    reference = _run(model, FEEDS)
    relu = find_node(model, name="n_y")
    new = replace_node(relu, "Clip", inputs=[relu.inputs[0], np.array(0, np.float32), None])
    assert new.name == "n_y" and new.outputs[0].name == "y"
    assert _ops(model) == ["MatMul", "Add", "Clip", "MatMul", "Add", "Sigmoid", "Relu"]
    out = _run(model, FEEDS)
    np.testing.assert_array_equal(out["y"], reference["y"])
    np.testing.assert_array_equal(out["z"], reference["z"])


def test_set_attribute_coerces_to_the_existing_type_and_deletes() -> None:
    model = _named("""
    g (float[N, 4] x) => (float[N, 4] y) {
      y = LeakyRelu<alpha = 0.5>(x)
    }""")
    node = find_node(model, op_type="LeakyRelu")
    set_attribute(node, "alpha", 2)  # an int for a float attribute
    attr = node.attributes["alpha"]
    assert attr.type == ir.AttributeType.FLOAT and attr.as_float() == 2.0
    x = FEEDS["x"]
    np.testing.assert_allclose(_run(model, {"x": x})["y"], np.where(x > 0, x, 2 * x), rtol=1e-6)
    set_attribute(node, "alpha", None)  # back to the default 0.01
    np.testing.assert_allclose(_run(model, {"x": x})["y"], np.where(x > 0, x, 0.01 * x), rtol=1e-6)
    set_attribute(node, "note", np.array([1, 2], np.int64))
    assert node.attributes["note"].type == ir.AttributeType.TENSOR
    with pytest.raises(ConfigError, match="cannot hold dict"):
        set_attribute(node, "alpha", {"a": 1})


# ---------------------------------------------------------------------------------- whole-model


def test_cleanup_removes_dead_nodes_and_initializers_only() -> None:
    model = _named("""
    g (float[N, 4] x, float[N, 4] unused) => (float[N, 4] y) {
      y = Relu(x)
      d1 = Sigmoid(x)
      d2 = Add(d1, w)
    }""")
    weight = find_node(model, name="n_d2").inputs[1]  # read only by dead nodes
    assert weight is not None
    weight.const_value = ir.tensor(np.ones(4, np.float32), name="w")
    spare = ir.Value(name="spare", const_value=ir.tensor(np.ones(2, np.float32), name="spare"))  # read by nobody
    for value in (weight, spare):
        value.type = ir.TensorType(ir.DataType.FLOAT)
        model.graph.register_initializer(value)
    reference = _run(model, {"x": FEEDS["x"], "unused": FEEDS["x"]})
    assert cleanup(model)
    assert _ops(model) == ["Relu"]
    assert list(model.graph.initializers) == []
    assert [v.name for v in model.graph.inputs] == ["x", "unused"]  # the signature stays by default
    np.testing.assert_array_equal(_run(model, {"x": FEEDS["x"], "unused": FEEDS["x"]})["y"], reference["y"])
    assert not cleanup(model)
    assert cleanup(model, remove_unused_inputs=True)
    assert [v.name for v in model.graph.inputs] == ["x"]


def test_toposort_orders_nodes_and_reports_cycles() -> None:
    model = _named(CHAIN)
    reference = _run(model, FEEDS)
    nodes = list(model.graph)
    for node in nodes[:3]:
        model.graph.remove(node)
        model.graph.append(node)  # Relu/Add/MatMul of the first block now come last
    toposort(model)
    assert _ops(model) == ["MatMul", "Add", "Relu", "MatMul", "Add", "Sigmoid", "Relu"]
    np.testing.assert_array_equal(_run(model, FEEDS)["z"], reference["z"])
    cyclic = _named("""
    g (float[N, 4] x) => (float[N, 4] y) {
      a = Add(x, x)
      y = Relu(a)
    }""")
    add, relu = list(cyclic.graph)
    add.replace_input_with(1, relu.outputs[0])
    with pytest.raises(InvalidModelError, match="cycle"):
        toposort(cyclic)


def test_rename_value_reaches_into_subgraphs() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 4] x, bool c) => (float[N, 4] y) {
      y = If(c) <then_branch = g1 () => (float[N, 4] t) { t = Relu(x) },
                 else_branch = g2 () => (float[N, 4] e) { e = Neg(x) }>
    }"""
    )
    rename_value(model, "t", "then_out")
    x = FEEDS["x"]
    assert find_value(model, "then_out").producer() is not None
    np.testing.assert_array_equal(_run(model, {"x": x, "c": np.array(True)})["y"], np.maximum(x, 0))


def test_add_outputs_exposes_intermediates() -> None:
    model = _named(CHAIN)
    reference = _run(model, FEEDS)
    add_outputs(model, ["a", "m2"])
    out = _run(model, FEEDS)
    np.testing.assert_allclose(out["a"], FEEDS["x"] @ FEEDS["w"] + FEEDS["x"], rtol=1e-5)
    np.testing.assert_array_equal(out["z"], reference["z"])
    with pytest.raises(ConfigError, match="no tensor named 'q'"):
        add_outputs(model, ["q"])
