from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import ConfigError
from modelport.ir.serde import clone
from modelport.runners.onnxruntime import OrtRunner
from modelport.surgery.recipes import FocusToSpaceToDepthPass, replace_focus

Array = np.ndarray[Any, Any]

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
END = np.iinfo(np.int64).max
#: YOLOv5: cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
YOLO = [(0, 0), (1, 0), (0, 1), (1, 1)]
S2D = [(0, 0), (0, 1), (1, 0), (1, 1)]
X = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
WEIGHT = np.random.default_rng(1).standard_normal((4, 12, 3, 3)).astype(np.float32)


def _focus_model(
    offsets: list[tuple[int, int]] = YOLO,
    *,
    torch_like: bool = False,
    shared: bool = False,
    conv: bool = True,
    step: int = 2,
    axes: tuple[int, int] = (2, 3),
    x_type: str = "float[N, 3, 8, 8]",
    extra_outputs: str = "",
) -> ir.Model:
    """Focus over ``x``: one Slice per branch on ``axes``, or torch's chain of per-axis Slices
    (optionally sharing the row Slice between branches)."""
    lines: list[str] = []
    arrays: dict[str, Array] = {"w": WEIGHT, "end": np.array([END]), "step": np.array([step])}
    arrays.update({"axis_h": np.array([axes[0]]), "axis_w": np.array([axes[1]]), "axis_0": np.array([0])})
    arrays.update({"zero": np.array([0]), "one": np.array([1]), "axes": np.array(axes)})
    arrays.update({"end2": np.array([END, END]), "steps": np.array([step, step])})
    for i, (dy, dx) in enumerate(offsets):
        arrays[f"start{i}"] = np.array([dy, dx])
        if torch_like:
            # shared: one no-op Slice, and one row Slice per row phase, as after CSE
            n, h = ("n0", f"h{dy}") if shared else (f"n{i}", f"h{i}")
            if f"{n} =" not in "".join(lines):
                lines.append(f"{n} = Slice(x, zero, end, axis_0, one)")  # torch's no-op slice on axis 0
            if f"{h} =" not in "".join(lines):
                lines.append(f"{h} = Slice({n}, {'one' if dy else 'zero'}, end, axis_h, step)")
            lines.append(f"b{i} = Slice({h}, {'one' if dx else 'zero'}, end, axis_w, step)")
        else:
            lines.append(f"b{i} = Slice(x, start{i}, end2, axes, steps)")
    lines.append("f = Concat<axis=1>(b0, b1, b2, b3)")
    if conv:
        lines.append("y = Conv<pads=[1, 1, 1, 1]>(f, w)")
    out = "float[N, 4, 4, 4] y" if conv else "float[N, 12, 4, 4] f"
    body = "\n      ".join(lines)
    model = ir.from_onnx_text(f"{HEADER}\n    g ({x_type} x) => ({out}{extra_outputs}) {{\n      {body}\n    }}")
    for name, array in arrays.items():
        _bind(model, name, array if name == "w" else array.astype(np.int64))
    return model


def _bind(model: ir.Model, name: str, array: Array) -> None:
    value = next((v for n in model.graph for v in n.inputs if v is not None and v.name == name), None)
    if value is None:
        return  # not used by this variant
    value.const_value = ir.tensor(array, name=name)
    value.type = ir.TensorType(value.const_value.dtype)
    value.shape = ir.Shape(array.shape)
    model.graph.register_initializer(value)


def _run(model: ir.Model, x: Array = X) -> dict[str, Array]:
    with OrtRunner(model, graph_optimization="disable") as runner:
        return runner.infer({"x": x})


def _ops(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph]


def _focus_numpy(x: Array, offsets: list[tuple[int, int]]) -> Array:
    return np.concatenate([x[..., dy::2, dx::2] for dy, dx in offsets], axis=1)


@pytest.mark.parametrize("torch_like", [False, True])
def test_focus_output_becomes_space_to_depth_and_gather_exactly(torch_like: bool) -> None:
    model = _focus_model(torch_like=torch_like, conv=False)
    reference = _run(model)["f"]
    np.testing.assert_array_equal(reference, _focus_numpy(X, YOLO))
    replace_focus(model)
    assert _ops(model) == ["SpaceToDepth", "Gather"]
    assert [v.name for v in model.graph.outputs] == ["f"]
    assert list(model.graph.initializers) == ["f.focus_perm"]  # the Slice constants are gone
    np.testing.assert_array_equal(_run(model)["f"], reference)


@pytest.mark.parametrize("torch_like", [False, True])
def test_permutation_folds_into_the_next_conv(torch_like: bool) -> None:
    model = _focus_model(torch_like=torch_like)
    reference = _run(clone(model))["y"]
    replace_focus(model)
    assert _ops(model) == ["SpaceToDepth", "Conv"]
    assert list(model.graph.initializers) == ["f.weight_s2d"]  # 'w' replaced by its permuted copy
    # Same products, summed in another channel order: float rounding only.
    np.testing.assert_allclose(_run(model)["y"], reference, rtol=1e-5, atol=1e-5)


def test_slices_shared_between_branches_are_matched() -> None:
    model = _focus_model(torch_like=True, shared=True, conv=False)
    assert _ops(model).count("Slice") == 1 + 2 + 4
    reference = _run(model)["f"]
    replace_focus(model)
    assert _ops(model) == ["SpaceToDepth", "Gather"]
    np.testing.assert_array_equal(_run(model)["f"], reference)


def test_slice_read_outside_the_pattern_is_refused() -> None:
    model = _focus_model(torch_like=True, shared=True, conv=False, extra_outputs=", float[N, 3, 4, 8] h0")
    with pytest.raises(ConfigError, match="'h0' is a graph output"):
        replace_focus(model)
    text = (
        HEADER
        + """
    g (float[N, 3, 8, 8] x) => (float[N, 12, 4, 4] f, float[N, 3, 4, 4] r) {
      b0 = Slice(x, s0, e, a, st)
      b1 = Slice(x, s1, e, a, st)
      b2 = Slice(x, s2, e, a, st)
      b3 = Slice(x, s3, e, a, st)
      f = Concat<axis=1>(b0, b1, b2, b3)
      r = Relu(b2)
    }"""
    )
    model = ir.from_onnx_text(text)
    for i, (dy, dx) in enumerate(YOLO):
        _bind(model, f"s{i}", np.array([dy, dx], np.int64))
    for name, array in {"e": [END, END], "a": [2, 3], "st": [2, 2]}.items():
        _bind(model, name, np.array(array, np.int64))
    with pytest.raises(ConfigError, match="'b2' is also read by Relu"):
        replace_focus(model)


def test_no_fold_keeps_conv_weights_and_is_exact() -> None:
    model = _focus_model()
    reference = _run(clone(model))["y"]
    replace_focus(model, fold_into_conv=False)
    assert _ops(model) == ["SpaceToDepth", "Gather", "Conv"]
    np.testing.assert_array_equal(_run(model)["y"], reference)


def test_space_to_depth_order_needs_no_permutation() -> None:
    model = _focus_model(S2D)
    reference = _run(clone(model))["y"]
    replace_focus(model)
    assert _ops(model) == ["SpaceToDepth", "Conv"]
    np.testing.assert_array_equal(_run(model)["y"], reference)


@pytest.mark.parametrize("torch_like", [False, True])
def test_conv_form_is_exact(torch_like: bool) -> None:
    model = _focus_model(torch_like=torch_like)
    reference = _run(clone(model))["y"]
    replace_focus(model, form="conv")
    assert _ops(model) == ["Conv", "Conv"]
    np.testing.assert_array_equal(_run(model)["y"], reference)


def test_dynamic_spatial_size_and_channels_from_the_conv_weight() -> None:
    model = _focus_model(x_type="float[N, C, H, W]")
    reference = _run(clone(model))["y"]
    replace_focus(model)
    assert _ops(model) == ["SpaceToDepth", "Conv"]
    np.testing.assert_allclose(_run(model)["y"], reference, rtol=1e-5, atol=1e-5)
    x = np.random.default_rng(2).standard_normal((1, 3, 12, 6)).astype(np.float32)
    model = _focus_model(x_type="float[N, C, H, W]")
    reference = _run(clone(model), x)["y"]
    replace_focus(model)
    np.testing.assert_allclose(_run(model, x)["y"], reference, rtol=1e-5, atol=1e-5)


def test_pass_form_reports_change_and_leaves_other_models_alone() -> None:
    model = _focus_model()
    reference = _run(clone(model))["y"]
    assert FocusToSpaceToDepthPass()(model).modified
    assert _ops(model) == ["SpaceToDepth", "Conv"]
    tol = FocusToSpaceToDepthPass.tolerance
    np.testing.assert_allclose(_run(model)["y"], reference, rtol=tol.rtol, atol=tol.atol)
    other = _focus_model(step=1)
    assert not FocusToSpaceToDepthPass()(other).modified
    assert _ops(other).count("Slice") == 4


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"step": 1}, "axis 2 has step 1, not 2"),
        ({"step": 3, "torch_like": True}, "axis 2 has step 3, not 2"),
        ({"offsets": [(0, 0), (1, 0), (0, 1), (0, 1)]}, r"the branch phases .* are not the four phases of a 2x2 block"),
        ({"offsets": [(0, 0), (2, 0), (0, 1), (1, 1)]}, "axis 2 starts at 2"),
        ({"axes": (1, 2)}, "the branch also slices axis 1"),
        ({"axes": (2, 2)}, "the branch does not slice axis 3"),
        ({"extra_outputs": ", float[N, 3, 4, 4] b1"}, "'b1' is a graph output"),
        ({"x_type": "float[N, C, 8, 8]", "conv": False}, "the channel count of 'x' is unknown"),
        ({"x_type": "float"}, "the sliced tensor 'x' is not known to be 4-D"),
    ],
)
def test_refuses_what_is_not_a_focus_block(kwargs: dict[str, Any], reason: str) -> None:
    model = _focus_model(**kwargs)
    with pytest.raises(ConfigError, match=f"no YOLOv5 Focus block .*: Concat producing 'f': {reason}"):
        replace_focus(model)
    assert _ops(model).count("Concat") == 1  # untouched


def test_refuses_non_constant_slice_parameters_and_models_without_concat() -> None:
    model = ir.from_onnx_text(
        HEADER
        + """
    g (float[1, 3, 8, 8] x, int64[2] s) => (float[1, 12, 4, 4] f) {
      b0 = Slice(x, s, s)
      f = Concat<axis=1>(b0, b0, b0, b0)
    }"""
    )
    with pytest.raises(ConfigError, match="non-constant parameters"):
        replace_focus(model)
    with pytest.raises(ConfigError, match="the model has no Concat"):
        replace_focus(ir.from_onnx_text(HEADER + "g (float[2] x) => (float[2] y) { y = Relu(x) }"))
    with pytest.raises(ConfigError, match="form must be"):
        replace_focus(_focus_model(), form="pixel_shuffle")  # type: ignore[arg-type]


def test_non_constant_conv_weight_keeps_the_gather() -> None:
    model = _focus_model()
    weight = model.graph.initializers.pop("w")
    model.graph.inputs.append(weight)
    weight.const_value = None
    reference = _run_with_weight(clone(model))
    replace_focus(model)
    assert _ops(model) == ["SpaceToDepth", "Gather", "Conv"]
    np.testing.assert_array_equal(_run_with_weight(model), reference)


def _run_with_weight(model: ir.Model) -> Array:
    with OrtRunner(model, graph_optimization="disable") as runner:
        return runner.infer({"x": X, "w": WEIGHT})["y"]
