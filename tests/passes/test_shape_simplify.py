from __future__ import annotations

import io

import numpy as np
import onnx_ir as ir
import pytest
from helpers import apply, op_types, run_plain

from modelport.ir.serde import load
from modelport.passes.shape_simplify import ShapeSimplificationPass
from modelport.verify.tolerance import EXACT

INITS = "<int64 i0 = {0}, int64 i1 = {1}, int64 i2 = {2}, int64 i3 = {3}, int64[1] ax = {0}"


def _model(x_type: str, body: str, inits: str = "", y_type: str = "float[?, ?] y", opset: int = 18) -> ir.Model:
    """``a = Relu(x)``, then ``body``; shared scalar indices i0..i3 and axes ``ax`` = [0]."""
    return ir.from_onnx_text(
        f'<ir_version: 8, opset_import: ["" : {opset}]>'
        + f"""
    g ({x_type}) => ({y_type}) {INITS}{inits}> {{
      a = Relu(x)
      {body}
    }}"""
    )


def _check_batches(
    before: ir.Model, after: ir.Model, shape: tuple[int, ...], batches: tuple[int, ...] = (1, 3)
) -> None:
    """Same outputs, bit for bit, at every batch size: dynamic axes stayed dynamic."""
    rng = np.random.default_rng(0)
    for batch in batches:
        feeds = {"x": rng.standard_normal((batch, *shape)).astype(np.float32)}
        expected, got = run_plain(before, feeds), run_plain(after, feeds)
        assert got.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])


def _reshape_target(model: ir.Model) -> list[int]:
    reshape = next(node for node in model.graph if node.op_type == "Reshape")
    tensor = ir.convenience.get_const_tensor(reshape.inputs[1]) if reshape.inputs[1] is not None else None
    assert tensor is not None, "the Reshape target is not a constant"
    return [int(v) for v in tensor.numpy()]


def test_batch_times_static_reshape_becomes_a_constant_copy() -> None:
    model = _model(
        "float[N, 8, 4, 4] x",
        """s = Shape(a)
      n = Gather(s, i0)
      u = Unsqueeze(n, ax)
      c = Concat<axis=0>(u, k)
      y = Reshape(a, c)""",
        ", int64[1] k = {128}",
    )
    after, changed = apply(ShapeSimplificationPass(), model)
    assert changed
    assert ShapeSimplificationPass.tolerance == EXACT
    assert op_types(after) == ["Relu", "Reshape"]
    assert _reshape_target(after) == [0, 128]
    _check_batches(model, after, (8, 4, 4))


def test_static_axis_of_a_dynamic_tensor_becomes_a_constant() -> None:
    model = _model(
        "float[N, 8, H, W] x",
        """s = Shape(a)
      c = Gather(s, i1)
      f = Cast<to=1>(c)
      y = Mul(a, f)""",
        y_type="float[N, 8, H, W] y",
    )
    after, changed = apply(ShapeSimplificationPass(), model)
    assert changed
    assert op_types(after) == ["Relu", "Cast", "Mul"]
    cast = next(node for node in after.graph if node.op_type == "Cast")
    assert ir.convenience.get_const_tensor(cast.inputs[0]).numpy().tolist() == 8  # type: ignore[union-attr, arg-type]
    _check_batches(model, after, (8, 5, 6))


# body producing the Reshape target t from s = Shape(a) of a: float[N, 8, 4, 4]; expected target
VARIANTS = {
    "shape-start-end": ("p = Shape<start=0, end=1>(a)\n t = Concat<axis=0>(p, m1)", [0, -1]),
    "slice": ("p = Slice(s, z1, o1)\n t = Concat<axis=0>(p, m1)", [0, -1]),
    "slice-squeeze-unsqueeze": (
        "p = Slice(s, z1, o1)\n q = Squeeze(p, ax)\n r = Unsqueeze(q, ax)\n t = Concat<axis=0>(r, m1)",
        [0, -1],
    ),
    "cast-mul-div": (
        """n = Gather(s, i0)
      n32 = Cast<to=6>(n)
      n64 = Cast<to=7>(n32)
      c = Gather(s, i1)
      half = Div(c, two0)
      h = Gather(s, i2)
      w = Gather(s, i3)
      hw = Mul(h, w)
      n1 = Unsqueeze(n64, ax)
      half1 = Unsqueeze(half, ax)
      hw1 = Unsqueeze(hw, ax)
      parts = Concat<axis=0>(n1, half1, two, hw1)
      t = Identity(parts)""",
        [0, 4, 2, 16],
    ),
    "gather-of-a-vector": ("p = Gather(s, idx)\n t = Concat<axis=0>(p, k16)", [0, 8, 16]),
}


@pytest.mark.parametrize("case", VARIANTS.values(), ids=VARIANTS.keys())
def test_export_variants_fold(case: tuple[str, list[int]]) -> None:
    body, expected = case
    model = _model(
        "float[N, 8, 4, 4] x",
        f"s = Shape(a)\n {body}\n y = Reshape(a, t)",
        ", int64[1] z1 = {0}, int64[1] o1 = {1}, int64[1] m1 = {-1}, int64[1] two = {2}, int64[1] k16 = {16},"
        " int64 two0 = {2}, int64[2] idx = {0, 1}",
        y_type="float[?, ?, ?, ?] y",
    )
    after, changed = apply(ShapeSimplificationPass(), model)
    assert changed
    assert op_types(after) == ["Relu", "Reshape"]
    assert _reshape_target(after) == expected
    _check_batches(model, after, (8, 4, 4))


def test_same_symbolic_dim_of_another_tensor_is_copied() -> None:
    model = _model(
        "float[N, 8, 4, 4] x",
        """b = Sigmoid(a)
      s = Shape(a)
      n = Gather(s, i0)
      u = Unsqueeze(n, ax)
      c = Concat<axis=0>(u, k)
      y = Reshape(b, c)""",
        ", int64[1] k = {128}",
    )
    after, changed = apply(ShapeSimplificationPass(), model)
    assert changed
    assert op_types(after) == ["Relu", "Sigmoid", "Reshape"]
    assert _reshape_target(after) == [0, 128]
    _check_batches(model, after, (8, 4, 4))


def test_one_unknown_element_becomes_minus_one_when_the_rest_is_static() -> None:
    # [N * 4, 32]: N * 4 is not a dim of the input, but it is the only unknown.
    model = _model(
        "float[N, 8, 4, 4] x",
        """s = Shape(a)
      n = Gather(s, i0)
      n4 = Mul(n, four)
      u = Unsqueeze(n4, ax)
      c = Concat<axis=0>(u, k)
      y = Reshape(a, c)""",
        ", int64 four = {4}, int64[1] k = {32}",
    )
    after, changed = apply(ShapeSimplificationPass(), model)
    assert changed
    assert op_types(after) == ["Relu", "Reshape"]
    assert _reshape_target(after) == [-1, 32]
    _check_batches(model, after, (8, 4, 4))


def test_allowzero_reshape_does_not_copy_with_zero() -> None:
    model = _model(
        "float[N, 8, 4, 4] x",
        """s = Shape(a)
      n = Gather(s, i0)
      u = Unsqueeze(n, ax)
      c = Concat<axis=0>(u, k)
      y = Reshape<allowzero=1>(a, c)""",
        ", int64[1] k = {128}",
    )
    after, changed = apply(ShapeSimplificationPass(), model)
    assert changed
    assert _reshape_target(after) == [-1, 128]  # 0 would be a literal zero here
    _check_batches(model, after, (8, 4, 4))


REFUSED = {
    # [M, N, 4] of [N, M, 4]: two dims move, neither can be copied, only one could be -1.
    "two-unknown-dims": (
        "float[N, M, 4] x",
        "n = Gather(s, i0)\n m = Gather(s, i1)\n nu = Unsqueeze(n, ax)\n mu = Unsqueeze(m, ax)\n"
        " t = Concat<axis=0>(mu, nu, k4)",
        (2, 4),
        (1, 2),
    ),
    # [N, -1] already has a -1; M * 4 would need a second one.
    "unknown-next-to-existing-minus-one": (
        "float[N, M, 4] x",
        "m = Gather(s, i1)\n m4 = Mul(m, four)\n mu = Unsqueeze(m4, ax)\n t = Concat<axis=0>(m1, mu)",
        (2, 4),
        (1, 2),
    ),
    # [N, M * 4]: writing [0, -1] would fail at N = 0, where the original works.
    "new-minus-one-next-to-a-copied-dim": (
        "float[N, M, 4] x",
        "n = Gather(s, i0)\n m = Gather(s, i1)\n m4 = Mul(m, four)\n nu = Unsqueeze(n, ax)\n mu = Unsqueeze(m4, ax)\n"
        " t = Concat<axis=0>(nu, mu)",
        (2, 4),
        (0, 2),
    ),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_refuses_targets_it_cannot_prove(case: tuple[str, str, tuple[int, ...], tuple[int, ...]]) -> None:
    x_type, body, shape, batches = case
    model = _model(
        x_type,
        f"s = Shape(a)\n {body}\n y = Reshape(a, t)",
        ", int64 four = {4}, int64[1] k4 = {4}, int64[1] m1 = {-1}",
    )
    after, changed = apply(ShapeSimplificationPass(), model)
    assert not changed
    assert op_types(after) == op_types(model)
    _check_batches(model, after, shape, batches)


def test_leaves_unknown_ranks_and_run_time_indices_alone() -> None:
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 18]>
    g (float[N, 8] x, float v, int64 i) => (float[?, ?] y, float[?] z) <int64[1] ax = {0}, int64[1] k = {-1}> {
      s = Shape(x)
      n = Gather(s, i)
      u = Unsqueeze(n, ax)
      c = Concat<axis=0>(u, k)
      y = Reshape(x, c)
      q = Shape(v)
      z = Cast<to=1>(q)
    }"""
    )
    model.graph.inputs[1].shape = None  # v: rank unknown
    after, changed = apply(ShapeSimplificationPass(), model)
    assert not changed
    assert op_types(after) == op_types(model)


def test_shape_value_that_is_a_graph_output_keeps_its_node() -> None:
    model = _model(
        "float[N, 8, 4, 4] x",
        """s = Shape(a)
      c = Gather(s, i1)
      f = Cast<to=1>(c)
      y = Mul(a, f)""",
        y_type="float[N, 8, 4, 4] y, int64 c",
    )
    after, changed = apply(ShapeSimplificationPass(), model)
    assert changed  # the Cast now reads a constant; the graph output c is still computed
    assert op_types(after) == ["Relu", "Shape", "Gather", "Cast", "Mul"]
    assert [v.name for v in after.graph.outputs] == ["y", "c"]
    _check_batches(model, after, (8, 4, 4))


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
def test_torch_view_batch_minus_one_export_folds() -> None:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8 * 4 * 4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.fc(y.view(y.size(0), -1))  # type: ignore[no-any-return]

    buffer = io.BytesIO()
    torch.onnx.export(
        Net().eval(),
        (torch.randn(2, 3, 4, 4),),
        buffer,
        dynamo=False,
        do_constant_folding=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
        opset_version=17,
    )
    model = load(buffer.getvalue())
    assert "Shape" in op_types(model)
    after, changed = apply(ShapeSimplificationPass(), model)
    assert changed
    assert op_types(after) == ["Conv", "Reshape", "Gemm"]
    assert len(op_types(after)) < len(op_types(model))
    assert _reshape_target(after) == [0, -1]
    _check_batches(model, after, (3, 4, 4))


def _head() -> ir.Model:
    """x -> Reshape(0, 3, 4, 4, 4) -> Sigmoid -> Add(grid) -> Transpose -> Reshape(batch of x, -1)."""
    return ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 12, 4, 4] x, float[M, 3, 4, 4, 4] other) => (float[N, 192] y, float[N, 3, 4, 4, 4] z) {
      r = Reshape(x, five)
      a = Sigmoid(r)
      b = Add(a, grid)
      t = Transpose<perm=[0, 1, 3, 2, 4]>(b)
      sh = Shape(x)
      n = Gather<axis=0>(sh, zero)
      n1 = Unsqueeze(n, ax0)
      target = Concat<axis=0>(n1, m1)
      y = Reshape(t, target)
      z = Add(a, other)
    }"""
    )


def test_batch_is_traced_through_ops_that_keep_it_when_inference_renamed_the_symbol() -> None:
    # Shape inference sometimes gives a head's batch a fresh symbol (it cannot match two names);
    # the provenance walk still proves that dim 0 of 't' is dim 0 of 'x'.
    from modelport.passes.shape_simplify import _DimOf, _same_dim

    model = _head()
    values = {v.name: v for node in model.graph for v in (*node.inputs, *node.outputs) if v is not None}
    for name in ("r", "a", "b", "t", "z"):
        values[name].shape = ir.Shape([ir.SymbolicDim(f"renamed_{name}"), 3, 4, 4, 4])
    values["grid"].shape = ir.Shape([1, 3, 1, 1, 4])
    values["other"].shape = ir.Shape([ir.SymbolicDim("M"), 3, 4, 4, 4])
    values["five"].const_value = ir.tensor(np.array([0, 3, 4, 4, 4], np.int64), name="five")
    x = model.graph.inputs[0]
    assert _same_dim(_DimOf(x, 0), values["t"], 0)
    assert not _same_dim(_DimOf(x, 0), values["t"], 1)  # the Transpose moved other axes
    # Broadcast against a tensor with its own batch M: not provably x's batch.
    assert not _same_dim(_DimOf(x, 0), values["z"], 0)
