from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from helpers import apply, op_types, run_plain

from modelport.passes import NoOpEliminationPass

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
X = {"x": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5}
INT64_MAX = 2**63 - 1


def _sandwich(x_type: str, body: str, inits: str = "", opset: int = 17) -> ir.Model:
    """``a = Relu(x)``, the nodes under test from ``a`` to ``b``, then ``y = Sigmoid(b)``."""
    return ir.from_onnx_text(
        f'<ir_version: 8, opset_import: ["" : {opset}]>'
        + f"""
    g ({x_type} x) => (float[?, ?, ?] y) {inits} {{
      a = Relu(x)
      {body}
      y = Sigmoid(b)
    }}"""
    )


def _feeds(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


def test_removes_identity_dropout_and_same_type_cast() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3] x) => (float[N, 3] y) {
      a = Identity(x)
      b = Relu(a)
      c = Dropout(b)
      d = Cast<to=1>(x)
      e = Add(c, d)
      y = Sigmoid(e)
    }"""
    )
    before = run_plain(model, X)
    after_model, changed = apply(NoOpEliminationPass(), model)
    assert changed
    assert op_types(after_model) == ["Relu", "Add", "Sigmoid"]
    np.testing.assert_array_equal(run_plain(after_model, X)["y"], before["y"])  # pure rewiring: exact


def test_identity_feeding_graph_output_is_bypassed_and_keeps_the_output_name() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3] x) => (float[N, 3] y) {
      a = Relu(x)
      y = Identity(a)
    }"""
    )
    after_model, changed = apply(NoOpEliminationPass(), model)
    assert changed
    assert op_types(after_model) == ["Relu"]
    assert [v.name for v in after_model.graph.outputs] == ["y"]
    np.testing.assert_array_equal(run_plain(after_model, X)["y"], run_plain(model, X)["y"])


def test_does_not_apply_when_it_must_not() -> None:
    # Identity from a graph input straight to a graph output must stay; a Cast that changes the
    # type is not a no-op; a training-mode Dropout is not a no-op; a used Dropout mask stays.
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3] x) => (float[N, 3] y, double[N, 3] z, float[N, 3] w, bool[N, 3] m) {
      y = Identity(x)
      z = Cast<to=11>(x)
      w, m = Dropout(x)
    }"""
    )
    after_model, changed = apply(NoOpEliminationPass(), model)
    assert not changed
    assert op_types(after_model) == ["Identity", "Cast", "Dropout"]


# (x type, nodes from a to b, initializers, opset, feed shape)
NOOPS = {
    "reshape-static": ("float[2, 3, 4]", "b = Reshape(a, s)", "<int64[3] s = {2, 3, 4}>", 17, (2, 3, 4)),
    "reshape-copy-and-infer": ("float[N, 3, 4]", "b = Reshape(a, s)", "<int64[3] s = {0, -1, 4}>", 17, (5, 3, 4)),
    "flatten-rank2": ("float[N, 6]", "b = Flatten<axis=1>(a)", "", 17, (2, 6)),
    "flatten-axis0-static-one": ("float[1, 6]", "b = Flatten<axis=0>(a)", "", 17, (1, 6)),
    "transpose-identity": ("float[N, 3, 4]", "b = Transpose<perm=[0, 1, 2]>(a)", "", 17, (2, 3, 4)),
    "transpose-pair": (
        "float[N, 3, 4]",
        "t = Transpose<perm=[1, 2, 0]>(a)\n b = Transpose<perm=[2, 0, 1]>(t)",
        "",
        17,
        (2, 3, 4),
    ),
    "slice-all": (
        "float[N, 3, 4]",
        "b = Slice(a, st, en, ax)",
        f"<int64[3] st = {{0, -3, 0}}, int64[3] en = {{{INT64_MAX}, 3, 100}}, int64[3] ax = {{0, 1, -1}}>",
        17,
        (2, 3, 4),
    ),
    "slice-attributes": ("float[2, 3]", "b = Slice<starts=[0], ends=[2], axes=[0]>(a)", "", 9, (2, 3)),
    "pad-zero-input": ("float[N, 3, 4]", "b = Pad(a, p)", "<int64[6] p = {0, 0, 0, 0, 0, 0}>", 17, (2, 3, 4)),
    "pad-zero-attribute": ("float[N, 3, 4]", "b = Pad<pads=[0, 0, 0, 0, 0, 0]>(a)", "", 10, (2, 3, 4)),
    "concat-single": ("float[N, 3, 4]", "b = Concat<axis=1>(a)", "", 17, (2, 3, 4)),
    "tile-ones": ("float[N, 3, 4]", "b = Tile(a, r)", "<int64[3] r = {1, 1, 1}>", 17, (2, 3, 4)),
    "expand-ones-and-static": ("float[N, 3, 4]", "b = Expand(a, e)", "<int64[2] e = {1, 4}>", 17, (2, 3, 4)),
    "cast-like-same-type": ("float[N, 3, 4]", "b = CastLike(a, a)", "", 17, (2, 3, 4)),
    "unsqueeze-then-squeeze": (
        "float[N, 3, 4]",
        "u = Unsqueeze(a, k)\n b = Squeeze(u, k)",
        "<int64[2] k = {1, -1}>",
        17,
        (2, 3, 4),
    ),
    "squeeze-then-unsqueeze": (
        "float[N, 1, 4]",
        "u = Squeeze(a, k)\n b = Unsqueeze(u, k)",
        "<int64[1] k = {1}>",
        17,
        (2, 1, 4),
    ),
}


@pytest.mark.parametrize("case", NOOPS.values(), ids=NOOPS.keys())
def test_removes_noop(case: tuple[str, str, str, int, tuple[int, ...]]) -> None:
    x_type, body, inits, opset, shape = case
    model = _sandwich(x_type, body, inits, opset)
    after, changed = apply(NoOpEliminationPass(), model)
    assert changed
    assert op_types(after) == ["Relu", "Sigmoid"]
    feeds = _feeds(shape)
    np.testing.assert_array_equal(run_plain(after, feeds)["y"], run_plain(model, feeds)["y"])


# (x type, nodes from a to b, initializers, why it must stay)
NOT_NOOPS = {
    "reshape-changes-shape": ("float[N, 3, 4]", "b = Reshape(a, s)", "<int64[3] s = {0, 4, 3}>"),
    "reshape-static-target-on-symbolic-dim": ("float[N, 3, 4]", "b = Reshape(a, s)", "<int64[3] s = {2, 3, 4}>"),
    "reshape-allowzero-literal-zero": ("float[N, 3, 4]", "b = Reshape<allowzero=1>(a, s)", "<int64[3] s = {0, 3, 4}>"),
    "reshape-two-minus-ones": ("float[N, M, 4]", "b = Reshape(a, s)", "<int64[3] s = {-1, -1, 4}>"),
    "flatten-rank3": ("float[N, 3, 4]", "b = Flatten<axis=1>(a)", ""),
    "flatten-axis0-symbolic": ("float[N, 6]", "b = Flatten<axis=0>(a)", ""),
    "transpose-swap": ("float[N, 3, 4]", "b = Transpose<perm=[0, 2, 1]>(a)", ""),
    "slice-part": (
        "float[N, 3, 4]",
        "b = Slice(a, st, en, ax)",
        "<int64[1] st = {0}, int64[1] en = {3}, int64[1] ax = {2}>",
    ),
    "slice-end-below-int64-max-on-symbolic-dim": (
        "float[N, 3, 4]",
        "b = Slice(a, st, en, ax)",
        "<int64[1] st = {0}, int64[1] en = {1000}, int64[1] ax = {0}>",
    ),
    "slice-negative-start-on-symbolic-dim": (
        "float[N, 3, 4]",
        "b = Slice(a, st, en, ax)",
        "<int64[1] st = {-1000}, int64[1] en = {9223372036854775807}, int64[1] ax = {0}>",
    ),
    "slice-reverse": (
        "float[N, 3, 4]",
        "b = Slice(a, st, en, ax, sp)",
        "<int64[1] st = {-1}, int64[1] en = {-100}, int64[1] ax = {1}, int64[1] sp = {-1}>",
    ),
    "pad-nonzero": ("float[N, 3, 4]", "b = Pad(a, p)", "<int64[6] p = {0, 0, 0, 0, 0, 1}>"),
    "concat-two": ("float[N, 3, 4]", "b = Concat<axis=1>(a, a)", ""),
    "tile-twice": ("float[N, 3, 4]", "b = Tile(a, r)", "<int64[3] r = {1, 2, 1}>"),
    "expand-grows-static-one": ("float[N, 1, 4]", "b = Expand(a, e)", "<int64[2] e = {2, 1}>"),
    "expand-symbolic-dim-could-be-one": ("float[N, 3, 4]", "b = Expand(a, e)", "<int64[3] e = {5, 1, 1}>"),
    "expand-grows-rank": ("float[N, 3, 4]", "b = Expand(a, e)", "<int64[4] e = {1, 1, 1, 1}>"),
    "squeeze-other-axes-than-unsqueeze": (
        "float[1, 3, 4]",
        "u = Unsqueeze(a, k)\n b = Squeeze(u, j)",
        "<int64[1] k = {1}, int64[1] j = {0}>",
    ),
    "unsqueeze-after-squeeze-of-symbolic-dim": (
        "float[N, M, 4]",
        "u = Squeeze(a, k)\n b = Unsqueeze(u, k)",
        "<int64[1] k = {1}>",
    ),
}


@pytest.mark.parametrize("case", NOT_NOOPS.values(), ids=NOT_NOOPS.keys())
def test_keeps_what_is_not_provably_a_noop(case: tuple[str, str, str]) -> None:
    model = _sandwich(*case)
    after, changed = apply(NoOpEliminationPass(), model)
    assert not changed
    assert op_types(after) == op_types(model)


def test_non_constant_parameters_are_kept() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3] x, int64[2] s, int64[4] p) => (float[?, ?] y, float[?, ?] z) {
      y = Reshape(x, s)
      z = Pad(x, p)
    }"""
    )
    after, changed = apply(NoOpEliminationPass(), model)
    assert not changed
    assert op_types(after) == ["Reshape", "Pad"]


def test_transposes_that_do_not_cancel_merge_into_one() -> None:
    model = _sandwich("float[N, 3, 4]", "t = Transpose<perm=[1, 0, 2]>(a)\n b = Transpose<perm=[0, 2, 1]>(t)")
    after, changed = apply(NoOpEliminationPass(), model)
    assert changed
    assert op_types(after) == ["Relu", "Transpose", "Sigmoid"]
    merged = next(node for node in after.graph if node.op_type == "Transpose")
    assert list(merged.attributes["perm"].value) == [1, 2, 0]
    feeds = _feeds((2, 3, 4))
    np.testing.assert_array_equal(run_plain(after, feeds)["y"], run_plain(model, feeds)["y"])


def test_transposes_are_not_merged_when_the_first_has_another_reader() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3, 4] x) => (float[?, ?, ?] y, float[?, ?, ?] z) {
      t = Transpose<perm=[1, 0, 2]>(x)
      y = Transpose<perm=[0, 2, 1]>(t)
      z = Relu(t)
    }"""
    )
    after, changed = apply(NoOpEliminationPass(), model)
    assert not changed
    assert op_types(after) == ["Transpose", "Transpose", "Relu"]


def test_cancelling_transpose_is_bypassed_even_when_the_first_has_another_reader() -> None:
    # Removing the second Transpose is a pure win; the first stays for its other reader.
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[N, 3, 4] x) => (float[?, ?, ?] y, float[?, ?, ?] z) {
      a = Relu(x)
      t = Transpose<perm=[1, 0, 2]>(a)
      y = Transpose<perm=[1, 0, 2]>(t)
      z = Sigmoid(t)
    }"""
    )
    after, changed = apply(NoOpEliminationPass(), model)
    assert changed
    assert op_types(after) == ["Relu", "Transpose", "Sigmoid"]
    assert [v.name for v in after.graph.outputs] == ["y", "z"]
    feeds = _feeds((2, 3, 4))
    before, got = run_plain(model, feeds), run_plain(after, feeds)
    for name in ("y", "z"):
        np.testing.assert_array_equal(got[name], before[name])


def test_noop_inside_a_subgraph_is_removed() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (bool c, float[N, 3] x) => (float[N, 3] y) {
      y = If(c) <then_branch = then_g () => (float[N, 3] t) {
          r = Relu(x)
          t = Transpose<perm=[0, 1]>(r)
        }, else_branch = else_g () => (float[N, 3] e) {
          e = Neg(x)
        }>
    }"""
    )
    after, changed = apply(NoOpEliminationPass(), model)
    assert changed
    assert [n.op_type for n in after.graph.node(0).attributes["then_branch"].value] == ["Relu"]
    feeds = {"c": np.array(True), **X}
    np.testing.assert_array_equal(run_plain(after, feeds)["y"], run_plain(model, feeds)["y"])
