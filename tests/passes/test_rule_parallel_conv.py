from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
from helpers import apply, bind, op_types, run_plain

from modelport.passes.base import const_array
from modelport.passes.rules.parallel_conv import MergeParallelConvPass
from modelport.verify.tolerance import Tolerance

TOL = MergeParallelConvPass.tolerance
RNG = np.random.default_rng(0)
FEEDS = {"x": np.random.default_rng(1).standard_normal((2, 8, 6, 6)).astype(np.float32)}
OUTPUTS = ("y1", "y2", "y3")


def _model(convs: str, arrays: dict[str, np.ndarray[Any, Any]], opset: int = 17) -> ir.Model:
    """Three branches on x; y1..y3 are graph outputs, r reads y2 so a consumer is rewired too."""
    model = ir.from_onnx_text(
        f'<ir_version: 8, opset_import: ["" : {opset}]>'
        + f"""
    g (float[N, 8, 6, 6] x) => (float[N, 4, 6, 6] y1, float[N, 5, 6, 6] y2, float[N, 6, 6, 6] y3,
                               float[N, 5, 6, 6] r) {{
      {convs}
      r = Relu(y2)
    }}"""
    )
    for name, array in arrays.items():
        bind(model, name, array.astype(np.float32))
    for i, node in enumerate(model.graph):
        node.name = f"{node.op_type.lower()}{i}"
    return model


def _weights(*shapes: tuple[int, ...]) -> dict[str, np.ndarray[Any, Any]]:
    return {f"w{i}": RNG.standard_normal(shape) for i, shape in enumerate(shapes, start=1)}


THREE = """
      y1 = Conv<pads=[1,1,1,1]>(x, w1, b1)
      y2 = Conv<kernel_shape=[3,3], pads=[1,1,1,1], strides=[1,1]>(x, w2)
      y3 = Conv<pads=[1,1,1,1], dilations=[1,1], group=1>(x, w3, b3)
"""


def _three(opset: int = 17) -> ir.Model:
    weights = _weights((4, 8, 3, 3), (5, 8, 3, 3), (6, 8, 3, 3))
    return _model(THREE, {**weights, "b1": RNG.standard_normal(4), "b3": RNG.standard_normal(6)}, opset)


def _assert_same(fused: ir.Model, model: ir.Model, names: tuple[str, ...] = (*OUTPUTS, "r")) -> None:
    got, want = run_plain(fused, FEEDS), run_plain(model, FEEDS)
    for name in names:
        np.testing.assert_allclose(got[name], want[name], atol=TOL.atol, rtol=TOL.rtol, err_msg=name)


def test_merges_three_convs_into_one_conv_and_split() -> None:
    model = _three()
    fused, changed = apply(MergeParallelConvPass(), model)
    assert changed
    assert op_types(fused) == ["Conv", "Split", "Relu"]
    conv, split = fused.graph[0], fused.graph[1]
    assert conv.name == "conv0"  # named after the first branch
    weight, bias = const_array(conv.inputs[1]), const_array(conv.inputs[2])
    assert weight is not None and weight.shape == (15, 8, 3, 3)
    assert bias is not None
    np.testing.assert_array_equal(bias[4:9], np.zeros(5, np.float32))  # y2 had no bias
    np.testing.assert_array_equal(const_array(split.inputs[1]), [4, 5, 6])
    assert [v.name for v in fused.graph.outputs] == [*OUTPUTS, "r"]
    assert not {"w1", "w2", "w3", "b1", "b3"} & set(fused.graph.initializers)  # replaced, dropped
    _assert_same(fused, model)


def test_opset_below_13_uses_split_attribute() -> None:
    model = _three(opset=11)
    fused, changed = apply(MergeParallelConvPass(), model)
    assert changed
    split = fused.graph[1]
    assert split.op_type == "Split"
    assert len(split.inputs) == 1
    assert list(split.attributes["split"].value) == [4, 5, 6]
    _assert_same(fused, model)


def test_merges_only_the_compatible_subset_in_graph_order() -> None:
    convs = """
      y1 = Conv<pads=[1,1,1,1]>(x, w1)
      y2 = Conv<pads=[1,1,1,1], strides=[2,2]>(x, w2)
      y3 = Conv<pads=[1,1,1,1]>(x, w3)
"""
    model = _model(convs, _weights((4, 8, 3, 3), (5, 8, 3, 3), (6, 8, 3, 3)))
    model.graph.outputs[1].shape = ir.Shape(["N", 5, 3, 3])
    model.graph.outputs[3].shape = ir.Shape(["N", 5, 3, 3])
    fused, changed = apply(MergeParallelConvPass(), model)
    assert changed
    assert op_types(fused) == ["Conv", "Split", "Conv", "Relu"]
    assert len(fused.graph[0].inputs) == 2  # no branch had a bias: no bias input
    assert fused.graph[0].name == "conv0"
    assert fused.graph[2].name == "conv1"
    assert fused.graph[2].outputs[0].name == "y2"
    assert {"w1", "w2", "w3"} & set(fused.graph.initializers) == {"w2"}  # still read by conv1
    _assert_same(fused, model)


def test_tolerance_and_flags() -> None:
    assert Tolerance(1e-6, 1e-6) == TOL
    assert MergeParallelConvPass.name == "parallel-conv"
    assert MergeParallelConvPass.may_slow


def _assert_unchanged(model: ir.Model) -> None:
    before = op_types(model)
    fused, changed = apply(MergeParallelConvPass(), model)
    assert not changed
    assert op_types(fused) == before


def test_does_not_merge_convs_with_different_attributes() -> None:
    # Same weight shapes and output shapes; only dilations/pads or auto_pad differ.
    convs = """
      y1 = Conv<pads=[1,1,1,1]>(x, w1)
      y2 = Conv<pads=[2,2,2,2], dilations=[2,2]>(x, w2)
      y3 = Conv<auto_pad="SAME_UPPER">(x, w3)
"""
    _assert_unchanged(_model(convs, _weights((4, 8, 3, 3), (5, 8, 3, 3), (6, 8, 3, 3))))


def test_does_not_merge_convs_with_different_kernels() -> None:
    convs = """
      y1 = Conv<pads=[1,1,1,1]>(x, w1)
      y2 = Conv<pads=[1,1,1,1]>(x, w2)
      y3 = Conv<pads=[0,0,0,0]>(x, w3)
"""
    model = _model(convs, _weights((4, 8, 3, 3), (5, 8, 1, 1), (6, 8, 1, 1)))
    model.graph.outputs[1].shape = ir.Shape(["N", 5, 8, 8])
    model.graph.outputs[3].shape = ir.Shape(["N", 5, 8, 8])
    _assert_unchanged(model)


def test_does_not_merge_non_constant_weights() -> None:
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 8, 6, 6] x, float[4, 8, 3, 3] w1) => (float[N, 4, 6, 6] y1, float[N, 5, 6, 6] y2) {
      y1 = Conv<pads=[1,1,1,1]>(x, w1)
      y2 = Conv<pads=[1,1,1,1]>(x, w2)
    }"""
    )
    bind(model, "w2", RNG.standard_normal((5, 8, 3, 3)).astype(np.float32))
    _assert_unchanged(model)


def test_does_not_merge_grouped_convs() -> None:
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 8, 6, 6] x) => (float[N, 8, 6, 6] y1, float[N, 16, 6, 6] y2) {
      y1 = Conv<pads=[1,1,1,1], group=8>(x, w1)
      y2 = Conv<pads=[1,1,1,1], group=8>(x, w2)
    }"""
    )
    bind(model, "w1", RNG.standard_normal((8, 1, 3, 3)).astype(np.float32))
    bind(model, "w2", RNG.standard_normal((16, 1, 3, 3)).astype(np.float32))
    _assert_unchanged(model)


def test_does_not_merge_different_weight_dtypes() -> None:
    # Not a valid model (Conv needs one dtype), but the rule must not be the one to paper over it.
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 8, 6, 6] x) => (float[N, 4, 6, 6] y1, float[N, 5, 6, 6] y2) {
      y1 = Conv<pads=[1,1,1,1]>(x, w1)
      y2 = Conv<pads=[1,1,1,1]>(x, w2)
    }"""
    )
    bind(model, "w1", RNG.standard_normal((4, 8, 3, 3)).astype(np.float32))
    bind(model, "w2", RNG.standard_normal((5, 8, 3, 3)).astype(np.float16))
    _assert_unchanged(model)


def test_does_not_merge_convs_reading_different_inputs() -> None:
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 8, 6, 6] x) => (float[N, 4, 6, 6] y1, float[N, 5, 6, 6] y2) {
      a = Relu(x)
      y1 = Conv<pads=[1,1,1,1]>(x, w1)
      y2 = Conv<pads=[1,1,1,1]>(a, w2)
    }"""
    )
    bind(model, "w1", RNG.standard_normal((4, 8, 3, 3)).astype(np.float32))
    bind(model, "w2", RNG.standard_normal((5, 8, 3, 3)).astype(np.float32))
    _assert_unchanged(model)
