from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import ConfigError, InvalidModelError
from modelport.runners.onnxruntime import OrtRunner
from modelport.surgery import (
    find_node,
    infer_shapes,
    make_dim_dynamic,
    set_batch,
    set_input_shape,
    set_input_shapes,
)
from modelport.surgery.editing import set_batch_dim

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
INT64_MAX = int(np.iinfo(np.int64).max)


def _run(model: ir.Model, feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    with OrtRunner(model, graph_optimization="disable") as runner:
        return runner.infer(feeds)


def _ops(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph]


def _shape(model: ir.Model, name: str) -> list[Any]:
    value = next(v for v in [*model.graph.inputs, *model.graph.outputs] if v.name == name)
    assert value.shape is not None
    return [d if isinstance(d, int) else d.value for d in value.shape]


def _operand(model: ir.Model, output: str, index: int) -> list[int]:
    node = next(n for n in model.graph if n.outputs[0].name == output)
    value = node.inputs[index]
    assert value is not None
    tensor = ir.convenience.get_const_tensor(value)
    assert tensor is not None
    return [int(v) for v in tensor.numpy().reshape(-1)]


# Exported at batch 2: every constant below hard-codes that 2 in a different way.
TRACED = (
    HEADER
    + """
g (float[2, 4, 6] x) => (float[2, 24] flat, float[8, 6] rows, float[2, 4, 6] spread, float[2, 4, 4] part) {
  s1 = Constant<value = int64[2] {2, 24}>()
  flat = Reshape(x, s1)
  s2 = Constant<value = int64[2] {8, 6}>()
  rows = Reshape(x, s2)
  mean = ReduceMean<axes = [2], keepdims = 1>(x)
  s3 = Constant<value = int64[3] {2, 4, 6}>()
  spread = Expand(mean, s3)
  starts = Constant<value = int64[2] {0, 1}>()
  ends = Constant<value = int64[2] {2, 5}>()
  axes = Constant<value = int64[2] {0, 2}>()
  part = Slice(x, starts, ends, axes)
}"""
)


def _traced_reference(x: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    n = x.shape[0]
    return {
        "flat": x.reshape(n, 24),
        "rows": x.reshape(n * 4, 6),
        "spread": np.broadcast_to(x.mean(axis=2, keepdims=True), x.shape),
        "part": x[:, :, 1:5],
    }


def test_make_dim_dynamic_rewrites_constants_that_hard_code_the_batch() -> None:
    model = ir.from_onnx_text(TRACED)
    ops = _ops(model)
    make_dim_dynamic(model, "x", 0, "batch")
    assert set(_ops(model)) <= set(ops)  # constants only change value
    assert [n.op_type for n in model.graph if n.op_type != "Constant"] == [
        "Reshape",
        "Reshape",
        "ReduceMean",
        "Expand",
        "Slice",
    ]
    assert _operand(model, "flat", 1) == [0, 24]  # axis 0 copied
    assert _operand(model, "rows", 1) == [-1, 6]  # batch merged with the 4
    assert _operand(model, "spread", 1) == [1, 4, 6]  # broadcast keeps the input's batch
    assert _operand(model, "part", 2) == [INT64_MAX, 5]  # the whole batch, the same part of axis 2
    assert _shape(model, "x") == ["batch", 4, 6]
    assert _shape(model, "flat") == ["batch", 24]
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 4, 6)).astype(np.float32)
        out = _run(model, {"x": x})
        for name, expected in _traced_reference(x).items():
            np.testing.assert_allclose(out[name], expected, rtol=1e-6, atol=1e-6, err_msg=name)


def test_constants_that_do_not_hard_code_the_dimension_are_left_alone() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[2, 4, 6] x) => (float[2, 24] a, float[2, 24] b, float[1, 4, 6] first) {
      s1 = Constant<value = int64[2] {0, 24}>()
      a = Reshape(x, s1)
      shape = Shape(x)
      n = Slice(shape, zero, one)
      tail = Constant<value = int64[1] {24}>()
      s2 = Concat<axis = 0>(n, tail)
      b = Reshape(x, s2)
      zero = Constant<value = int64[1] {0}>()
      one = Constant<value = int64[1] {1}>()
      first = Slice(x, zero, one)
    }"""
    )
    model.graph.sort()
    make_dim_dynamic(model, "x", 0, "N")
    assert _operand(model, "a", 1) == [0, 24]
    target = next(n for n in model.graph if n.outputs[0].name == "b").inputs[1]
    assert target is not None and target.name == "s2"  # computed: untouched
    assert _operand(model, "first", 2) == [1]  # a part of the batch is a choice, not a hard-coded size
    x = np.random.default_rng(0).standard_normal((3, 4, 6)).astype(np.float32)
    out = _run(model, {"x": x})
    np.testing.assert_array_equal(out["a"], x.reshape(3, 24))
    np.testing.assert_array_equal(out["b"], x.reshape(3, 24))
    np.testing.assert_array_equal(out["first"], x[:1])


@pytest.mark.parametrize(
    ("graph", "match"),
    [
        # [2, 4, 6] -> [4, 2, 6] mixes the batch with the next axis.
        ("s = Constant<value = int64[3] {4, 2, 6}>()\n y = Reshape(x, s)", "lands in no single entry"),
        ("r = Constant<value = float[0] {}>()\n sc = Constant<value = float[0] {}>()\n"
         " s = Constant<value = int64[3] {2, 4, 12}>()\n y = Resize(x, r, sc, s)", "resizes to the constant sizes"),
    ],
    ids=["reshape-splits-batch", "resize-sizes"],
)  # fmt: skip
def test_hard_coded_sizes_that_cannot_be_rewritten_safely_raise(graph: str, match: str) -> None:
    model = ir.from_onnx_text(HEADER + f"g (float[2, 4, 6] x) => (y) {{\n {graph}\n}}")
    node = next(n for n in model.graph if n.outputs[0].name == "y")
    node.name = "the_node"
    with pytest.raises(ConfigError, match=f"'the_node' .*{match}"):
        make_dim_dynamic(model, "x", 0, "batch")
    assert _shape(model, "x") == [2, 4, 6]  # nothing changed
    assert node.inputs[-1] is not None and node.inputs[-1].name == "s"
    assert _operand(model, "y", len(node.inputs) - 1)[0] == 4 - 2 * (node.op_type == "Resize")


def test_an_expand_that_broadcasts_the_freed_axis_names_the_node() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[1, 4] x) => (float[3, 4] y) {
      s = Constant<value = int64[2] {3, 4}>()
      y = Expand(x, s)
    }"""
    )
    find_node(model, op_type="Expand").name = "tile_rows"
    with pytest.raises(ConfigError, match=r"Expand 'tile_rows' broadcasts axis 0 \(size 1 before\) to 3"):
        make_dim_dynamic(model, "x", 0, "batch")


def test_an_ambiguous_size_one_axis_raises() -> None:
    # [8, 1, 16] -> [8, 16]: the freed 1 could merge into either entry.
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[8, 1, 16] x) => (float[8, 16] y) {
      s = Constant<value = int64[2] {8, 16}>()
      y = Reshape(x, s)
    }"""
    )
    with pytest.raises(ConfigError, match=r"entries \[0, 1\] alike"):
        make_dim_dynamic(model, "x", 1, "seq")


def test_a_model_that_fails_at_another_size_is_left_unchanged() -> None:
    # ConstantOfShape's [2, 4] is not an operand this module rewrites: the check run catches it.
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[2, 4] x) => (float[2, 4] y) {
      s = Constant<value = int64[2] {2, 4}>()
      z = ConstantOfShape<value = float[1] {1}>(s)
      y = Add(x, z)
    }"""
    )
    with pytest.raises(InvalidModelError, match=r"does not run at x\[0\]=3"):
        make_dim_dynamic(model, "x", 0, "batch")
    assert _shape(model, "x") == [2, 4]
    make_dim_dynamic(model, "x", 0, "batch", verify=False)  # the caller's call
    assert _shape(model, "x") == ["batch", 4]


def test_set_batch_frees_then_fixes_a_traced_batch() -> None:
    model = ir.from_onnx_text(TRACED)
    set_batch(model, 5)
    assert _shape(model, "x") == [5, 4, 6]
    assert _shape(model, "rows") == [20, 6]
    x = np.random.default_rng(5).standard_normal((5, 4, 6)).astype(np.float32)
    out = _run(model, {"x": x})
    for name, expected in _traced_reference(x).items():
        np.testing.assert_allclose(out[name], expected, rtol=1e-6, atol=1e-6, err_msg=name)
    set_batch_dim(model, "N")  # the old name
    assert _shape(model, "x") == ["N", 4, 6]
    with pytest.raises(ConfigError, match="batch must be >= 1"):
        set_batch(model, 0)


def test_set_input_shape_fixes_and_names_dynamic_dims() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3, H, W] x) => (float[N, 3, H, W] y) {
      y = Relu(x)
    }"""
    )
    set_input_shape(model, "x", [1, 3, 8, 8])
    assert _shape(model, "x") == [1, 3, 8, 8]
    assert _shape(model, "y") == [1, 3, 8, 8]  # outputs are inferred again
    with OrtRunner(model) as runner:
        assert runner.inputs[0].shape == (1, 3, 8, 8)
    set_input_shape(model, "x", ["b", 3, None, "w"])
    assert _shape(model, "x") == ["b", 3, None, "w"]
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(_run(model, {"x": x})["y"], np.maximum(x, 0))


def test_inputs_sharing_a_batch_are_freed_together() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[1, 4] x, float[1, 4] mask) => (float[1, 4] y) {
      y = Mul(x, mask)
    }"""
    )
    set_input_shapes(model, {"x": ["batch", 4], "mask": ["batch", 4]})
    assert _shape(model, "y") == ["batch", 4]
    x, mask = (np.random.default_rng(i).standard_normal((3, 4)).astype(np.float32) for i in range(2))
    np.testing.assert_array_equal(_run(model, {"x": x, "mask": mask})["y"], x * mask)
    other = ir.from_onnx_text(HEADER + "g (float[1, 4] a, float[2, 4] b) => (float[2, 4] y) { y = Add(a, b) }")
    with pytest.raises(ConfigError, match="one name must mean one size"):
        set_input_shapes(other, {"a": ["n", 4], "b": ["n", 4]})


def test_shape_errors_say_what_to_give() -> None:
    model = ir.from_onnx_text(HEADER + "g (float[1, 4] pixels) => (float[1, 4] y) { y = Relu(pixels) }")
    with pytest.raises(ConfigError, match="no graph input named 'pixel' — did you mean 'pixels'"):
        set_input_shape(model, "pixel", [1, 4])
    with pytest.raises(ConfigError, match=r"rank 2 .* rank 3"):
        set_input_shape(model, "pixels", [1, 4, 1])
    with pytest.raises(ConfigError, match="not a size >= 1"):
        set_input_shape(model, "pixels", [0, 4])
    with pytest.raises(ConfigError, match="axis 2 does not exist"):
        make_dim_dynamic(model, "pixels", 2, "b")


def test_infer_shapes_replaces_stale_annotations() -> None:
    model = ir.from_onnx_text(HEADER + "g (float[N, 4] x) => (float[7, 7] y) { a = Relu(x)\n y = Neg(a) }")
    infer_shapes(model)
    assert _shape(model, "y") == ["N", 4]
