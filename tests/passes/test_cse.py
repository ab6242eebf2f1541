from __future__ import annotations

import numpy as np
import onnx_ir as ir
from helpers import apply, bind, op_types, run_plain

from modelport.passes.cse import CommonSubexpressionEliminationPass
from modelport.verify.tolerance import EXACT

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
B = RNG.standard_normal(4).astype(np.float32)
X = {"x": RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)}


def _two_branches(pads2: str = "[1, 1, 1, 1]") -> ir.Model:
    """Two Conv -> Relu branches on x with separately stored copies of the same weights."""
    model = ir.from_onnx_text(
        HEADER
        + f"""
    g (float[N, 3, 8, 8] x) => (float[N, 4, ?, ?] y) {{
      c1 = Conv<pads=[1, 1, 1, 1]>(x, w1, b1)
      r1 = Relu(c1)
      c2 = Conv<pads={pads2}>(x, w2, b2)
      r2 = Relu(c2)
      y = Add(r1, r2)
    }}"""
    )
    for name, array in (("w1", W), ("b1", B), ("w2", W.copy()), ("b2", B.copy())):
        bind(model, name, array)
    return model


def test_identical_branches_collapse_into_one() -> None:
    model = _two_branches()
    after, changed = apply(CommonSubexpressionEliminationPass(), model)
    assert changed
    assert op_types(after) == ["Conv", "Relu", "Add"]
    assert sorted(after.graph.initializers) == ["b1", "w1"]
    assert CommonSubexpressionEliminationPass.tolerance == EXACT
    np.testing.assert_array_equal(run_plain(after, X)["y"], run_plain(model, X)["y"])


def test_branches_with_different_attributes_stay_apart() -> None:
    model = _two_branches(pads2="[0, 0, 0, 0]")
    model.graph.outputs[0].shape = None
    after, changed = apply(CommonSubexpressionEliminationPass(), model)
    assert changed  # the copied weights still merge
    assert op_types(after) == ["Conv", "Relu", "Conv", "Relu", "Add"]
    assert sorted(after.graph.initializers) == ["b1", "w1"]


def test_initializers_merge_only_when_dtype_shape_and_bytes_match() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[2] x) => (float[1, 2] y) {
      s1 = Add(x, a)
      s2 = Add(s1, b)
      s3 = Add(s2, c)
      s4 = Add(s3, d)
      f = Cast<to=1>(e)
      y = Add(s4, f)
    }"""
    )
    bind(model, "a", np.array([1.0, 0.0], np.float32))
    bind(model, "b", np.array([1.0, 0.0], np.float32))  # same as a
    bind(model, "c", np.array([1.0, -0.0], np.float32))  # equal to a, other bytes
    bind(model, "d", np.array([[1.0, 0.0]], np.float32))  # other shape
    bind(model, "e", np.array([1.0, 0.0], np.float64))  # other dtype
    after, changed = apply(CommonSubexpressionEliminationPass(), model)
    assert changed
    assert sorted(after.graph.initializers) == ["a", "c", "d", "e"]
    assert op_types(after) == op_types(model)
    feeds = {"x": np.array([2.0, -0.0], np.float32)}
    np.testing.assert_array_equal(run_plain(after, feeds)["y"], run_plain(model, feeds)["y"])


def test_random_ops_are_never_merged() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3] x) => (float[N, 3] y) {
      a = RandomNormalLike(x)
      b = RandomNormalLike(x)
      p = Sigmoid(x)
      c = Bernoulli(p)
      d = Bernoulli(p)
      e, m1 = Dropout(x, ratio, train)
      f, m2 = Dropout(x, ratio, train)
      s1 = Add(a, b)
      s2 = Add(c, d)
      s3 = Add(e, f)
      s4 = Add(s1, s2)
      y = Add(s3, s4)
    }"""
    )
    bind(model, "ratio", np.array(0.5, np.float32))
    bind(model, "train", np.array(True))
    after, changed = apply(CommonSubexpressionEliminationPass(), model)
    assert not changed
    assert op_types(after) == op_types(model)


def test_duplicate_graph_outputs_keep_their_names() -> None:
    # y and z are computed twice: z's node goes and an Identity of y keeps the name z. w repeats
    # u, which is no graph output: w's node goes and u's value is renamed w.
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3] x) => (float[N, 3] y, float[N, 3] z, float[N, 3] w, float[N, 3] v) {
      y = Relu(x)
      z = Relu(x)
      u = Sigmoid(x)
      v = Neg(u)
      w = Sigmoid(x)
    }"""
    )
    after, changed = apply(CommonSubexpressionEliminationPass(), model)
    assert changed
    assert op_types(after) == ["Relu", "Identity", "Sigmoid", "Neg"]
    assert [v.name for v in after.graph.outputs] == ["y", "z", "w", "v"]
    feeds = {"x": np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)}
    before, got = run_plain(model, feeds), run_plain(after, feeds)
    for name in ("y", "z", "w", "v"):
        np.testing.assert_array_equal(got[name], before[name])


def test_constants_merge_by_exact_bits_and_within_the_size_limit() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[3] x) => (float[3] y) {
      one_a = Constant<value_float=1.0>()
      one_b = Constant<value_float=1.0>()
      zero = Constant<value_float=0.0>()
      minus_zero = Constant<value_float=-0.0>()
      big_a = Constant<value=float[3] {1.0, 2.0, 3.0}>()
      big_b = Constant<value=float[3] {1.0, 2.0, 3.0}>()
      s1 = Add(one_a, one_b)
      s2 = Div(s1, zero)
      s3 = Div(s1, minus_zero)
      s4 = Add(s2, s3)
      s5 = Add(big_a, big_b)
      s6 = Mul(s4, s5)
      y = Add(x, s6)
    }"""
    )
    after, changed = apply(CommonSubexpressionEliminationPass(tensor_limit=2), model)
    assert changed
    constants = [node for node in after.graph if node.op_type == "Constant"]
    assert [next(iter(n.attributes)) for n in constants] == [
        "value_float",
        "value_float",
        "value_float",
        "value",
        "value",
    ]
    feeds = {"x": np.ones(3, np.float32)}
    np.testing.assert_array_equal(run_plain(after, feeds)["y"], run_plain(model, feeds)["y"])


def test_if_nodes_are_kept_and_their_branches_are_simplified() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (bool c, float[N, 3] x) => (float[N, 3] y) {
      i1 = If(c) <then_branch = t1 () => (float[N, 3] o1) {
          p1 = Relu(x)
          q1 = Relu(x)
          o1 = Add(p1, q1)
        }, else_branch = e1 () => (float[N, 3] o2) { o2 = Neg(x) }>
      i2 = If(c) <then_branch = t2 () => (float[N, 3] o3) {
          p2 = Relu(x)
          q2 = Relu(x)
          o3 = Add(p2, q2)
        }, else_branch = e2 () => (float[N, 3] o4) { o4 = Neg(x) }>
      y = Add(i1, i2)
    }"""
    )
    after, changed = apply(CommonSubexpressionEliminationPass(), model)
    assert changed
    assert op_types(after) == ["If", "If", "Add"]
    for node in list(after.graph)[:2]:
        assert [n.op_type for n in node.attributes["then_branch"].value] == ["Relu", "Add"]
    for flag in (True, False):
        feeds = {"c": np.array(flag), "x": np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)}
        np.testing.assert_array_equal(run_plain(after, feeds)["y"], run_plain(model, feeds)["y"])


def test_overridable_initializers_and_custom_ops_are_kept() -> None:
    model = ir.from_onnx_text(
        '<ir_version: 8, opset_import: ["" : 17, "custom.domain" : 1]>'
        + """
    g (float[3] x, float[3] a) => (float[3] y, float[3] z) {
      s = Add(x, a)
      y = Add(s, b)
      p = custom.domain.Noise(x)
      q = custom.domain.Noise(x)
      z = Add(p, q)
    }"""
    )
    bind(model, "a", np.ones(3, np.float32))  # also a graph input: callers may feed another a
    bind(model, "b", np.ones(3, np.float32))
    after, changed = apply(CommonSubexpressionEliminationPass(), model)
    assert not changed
    assert sorted(after.graph.initializers) == ["a", "b"]
    assert op_types(after) == op_types(model)
