from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import ConfigError
from modelport.ir.serde import clone
from modelport.runners.onnxruntime import OrtRunner
from modelport.surgery import add_outputs, extract

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
RNG = np.random.default_rng(0)


def _run(model: ir.Model, feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    with OrtRunner(model, graph_optimization="disable") as runner:
        return runner.infer(feeds)


def _ops(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph]


def _signature(values: Any) -> list[tuple[str, str, list[Any]]]:
    return [(v.name, str(v.dtype), [d if isinstance(d, int) else d.value for d in v.shape]) for v in values]


def _intermediates(model: ir.Model, names: list[str], feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    """The values of ``names`` in the full model: make them outputs of a copy and run it."""
    copy = clone(model)
    add_outputs(copy, names)
    return _run(copy, feeds)


MAIN = (
    HEADER
    + """
g (float[N, 4] x, float[N, 4] x2) => (float[N, 4] y) {
  a = Relu(x)
  b = Mul(a, w)
  c = Add(b, x2)
  d = Sigmoid(c)
  y = Neg(d)
}"""
)


def _main() -> ir.Model:
    model = ir.from_onnx_text(MAIN)
    w = model.graph[1].inputs[1]  # read by Mul, declared nowhere in the text: make it a weight
    assert w is not None and w.name == "w"
    w.const_value = ir.tensor(np.random.default_rng(1).standard_normal(4).astype(np.float32), name="w")
    w.type, w.shape = ir.TensorType(ir.DataType.FLOAT), ir.Shape([4])
    model.graph.register_initializer(w)
    for node in model.graph:
        node.name = f"n_{node.outputs[0].name}"
    return model


FEEDS = {"x": RNG.standard_normal((3, 4)).astype(np.float32), "x2": RNG.standard_normal((3, 4)).astype(np.float32)}


def test_extract_between_intermediate_tensors_matches_the_full_model() -> None:
    model = _main()
    sub = extract(model, ["a", "x2"], ["d"])
    assert _ops(sub) == ["Mul", "Add", "Sigmoid"]
    assert _signature(sub.graph.inputs) == [("a", "FLOAT", ["N", 4]), ("x2", "FLOAT", ["N", 4])]
    assert _signature(sub.graph.outputs) == [("d", "FLOAT", ["N", 4])]
    assert list(sub.graph.initializers) == ["w"]
    full = _intermediates(model, ["a", "d"], FEEDS)
    out = _run(sub, {"a": full["a"], "x2": FEEDS["x2"]})
    np.testing.assert_array_equal(out["d"], full["d"])
    assert _ops(model) == ["Relu", "Mul", "Add", "Sigmoid", "Neg"]  # the source is untouched


def test_extract_without_inputs_takes_the_model_inputs_it_needs() -> None:
    model = _main()
    sub = extract(model, None, ["b"])
    assert _ops(sub) == ["Relu", "Mul"]
    assert [v.name for v in sub.graph.inputs] == ["x"]
    full = _intermediates(model, ["b"], FEEDS)
    np.testing.assert_array_equal(_run(sub, {"x": FEEDS["x"]})["b"], full["b"])


def test_extract_can_cut_at_a_weight() -> None:
    model = _main()
    sub = extract(model, ["a", "w"], ["b"])
    assert _ops(sub) == ["Mul"] and list(sub.graph.initializers) == []
    a, w = FEEDS["x"], np.full(4, 3, np.float32)
    np.testing.assert_array_equal(_run(sub, {"a": a, "w": w})["b"], a * w)


def test_extract_errors_name_the_tensors_and_the_fix() -> None:
    model = _main()
    with pytest.raises(ConfigError, match="no tensor named 'dd' — did you mean 'd'"):
        extract(model, ["a"], ["dd"])
    with pytest.raises(ConfigError, match=r"also need 'x2' \(a model input\).*inputs=\['a', 'x2'\]"):
        extract(model, ["a"], ["d"])
    with pytest.raises(ConfigError, match=r"input\(s\) \['x'\] do not lead to any of the outputs"):
        extract(model, ["a", "x2", "x"], ["d"])
    with pytest.raises(ConfigError, match="named both as an input and an output"):
        extract(model, ["a"], ["a"])
    with pytest.raises(ConfigError, match="at least one output"):
        extract(model, ["a"], [])


IF_MODEL = (
    HEADER
    + """
g (float[N, 4] x) => (float[N, 4] y) {
  s = ReduceSum<keepdims = 0>(x)
  zero = Constant<value = float {0}>()
  cond = Greater(s, zero)
  y = If(cond) <then_branch = g1 () => (float[N, 4] t2) {
      k = Constant<value = float {2}>()
      t1 = Mul(x, k)
      t2 = Add(t1, x)
    }, else_branch = g2 () => (float[N, 4] e1) {
      e1 = Neg(x)
    }>
}"""
)


def test_extract_a_tensor_inside_an_if_branch_lifts_the_branch_nodes() -> None:
    model = ir.from_onnx_text(IF_MODEL)
    sub = extract(model, ["x"], ["t2"])
    assert _ops(sub) == ["Constant", "Mul", "Add"]
    assert _signature(sub.graph.outputs) == [("t2", "FLOAT", ["N", 4])]
    x = np.abs(FEEDS["x"])  # positive: the full model takes the then-branch, whose output is t2
    np.testing.assert_array_equal(_run(sub, {"x": x})["t2"], _run(model, {"x": x})["y"])
    whole = extract(model, ["x"], ["y"])  # the If node itself, with the outer tensors its branches read
    assert _ops(whole) == ["ReduceSum", "Constant", "Greater", "If"]
    np.testing.assert_array_equal(_run(whole, {"x": -x})["y"], x)
    with pytest.raises(ConfigError, match="a node and its own body cannot be extracted into one graph"):
        extract(model, ["x"], ["y", "t2"])


LOOP_MODEL = (
    HEADER
    + """
g (float[4] x, int64 n, float[4] init) => (float[4] acc) {
  cond = Constant<value = bool {1}>()
  acc = Loop(n, cond, init) <body = loop_body (int64 i, bool c_in, float[4] acc_in) => (bool c_out, float[4] acc_out) {
    c_out = Identity(c_in)
    xm = Mul(x, x)
    acc_out = Add(acc_in, xm)
  }>
}"""
)


def test_extract_from_a_loop_body_needs_its_per_iteration_inputs() -> None:
    model = ir.from_onnx_text(LOOP_MODEL)
    model.graph[1].name = "accumulate"
    with pytest.raises(ConfigError, match=r"'acc_in' \(an input of the body of Loop 'accumulate'"):
        extract(model, ["x"], ["acc_out"])
    sub = extract(model, ["x", "acc_in"], ["acc_out"])
    assert _ops(sub) == ["Mul", "Add"]
    assert _signature(sub.graph.inputs) == [("x", "FLOAT", [4]), ("acc_in", "FLOAT", [4])]
    x, start = FEEDS["x"][0], FEEDS["x2"][0]
    one_iteration = _run(model, {"x": x, "n": np.array(1, np.int64), "init": start})["acc"]
    np.testing.assert_array_equal(_run(sub, {"x": x, "acc_in": start})["acc_out"], one_iteration)
