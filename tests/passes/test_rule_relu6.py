from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
from helpers import apply, bind, op_types, run_plain

from modelport.passes.base import const_array
from modelport.passes.rules.relu6 import ClipFusionPass
from modelport.verify.tolerance import EXACT

F32 = np.finfo(np.float32)
# Boundaries exactly, both infinities, NaN, signed zeros, the float32 limits.
X = np.array(
    [np.nan, -np.inf, np.inf, -1.0, -0.0, 0.0, 0.5, 1.0, 3.0, 6.0, 6.5, -1e30, 1e30, F32.min, F32.max, -F32.tiny],
    np.float32,
).reshape(2, 8)
BOUNDS = {"zero": 0.0, "six": 6.0, "m1": -1.0, "p1": 1.0, "three": 3.0}


def _model(
    body: str, *, opset: int = 17, dtype: Any = np.float32, outputs: str = "", inputs: str = "", **consts: Any
) -> ir.Model:
    type_name = {np.float32: "float", np.float16: "float16", np.float64: "double", np.int32: "int32"}[dtype]
    model = ir.from_onnx_text(
        f'<ir_version: 8, opset_import: ["" : {opset}]>'
        + f"""
    g ({type_name}[N, 8] x{inputs}) => ({type_name}[N, 8] y{outputs}) {{
      {body}
    }}"""
    )
    used = {v.name for node in model.graph for v in node.inputs if v is not None}
    for name, value in {**BOUNDS, **consts}.items():
        if name in used and not any(i.name == name for i in model.graph.inputs):
            bind(model, name, np.asarray(value, dtype))
    return model


def _feeds(dtype: Any = np.float32) -> dict[str, np.ndarray[Any, Any]]:
    with np.errstate(over="ignore"):
        return {"x": X.astype(dtype)}


def _bounds(model: ir.Model) -> tuple[float | None, float | None]:
    (clip,) = list(model.graph)
    values = [const_array(clip.inputs[i]) if len(clip.inputs) > i else None for i in (1, 2)]
    lo, hi = (None if v is None else float(v) for v in values)
    return lo, hi


@pytest.mark.parametrize(
    ("body", "bounds"),
    [
        ("a = Max(x, zero)\n y = Min(a, six)", (0.0, 6.0)),
        ("a = Max(zero, x)\n y = Min(six, a)", (0.0, 6.0)),
        ("a = Min(x, six)\n y = Max(a, zero)", (0.0, 6.0)),
        ("a = Relu(x)\n y = Min(a, six)", (0.0, 6.0)),
        ("a = Relu(x)\n y = Clip(a, , six)", (0.0, 6.0)),
        ("a = Clip(x, m1, six)\n y = Relu(a)", (0.0, 6.0)),
        ("a = Max(x, m1)\n y = Min(a, p1)", (-1.0, 1.0)),  # HardTanh
        ("a = Clip(x, m1, three)\n y = Clip(a, zero, six)", (0.0, 3.0)),  # intersected range
        ("a = Clip(x, , six)\n y = Clip(a, , three)", (None, 3.0)),  # omitted min stays omitted
        ("a = Relu(x)\n b = Max(a, zero)\n y = Min(b, six)", (0.0, 6.0)),  # chain of three
    ],
)
def test_fuses_clamp_pairs_into_one_exact_clip(body: str, bounds: tuple[float | None, float | None]) -> None:
    model = _model(body)
    fused, changed = apply(ClipFusionPass(), model)
    assert changed
    assert op_types(fused) == ["Clip"]
    assert _bounds(fused) == bounds
    after, before = run_plain(fused, _feeds())["y"], run_plain(model, _feeds())["y"]
    np.testing.assert_array_equal(after, before)  # EXACT; NaN where NaN (assert_array_equal matches NaNs)
    assert np.array_equal(np.isnan(after), np.isnan(before))


def test_relu_based_patterns_are_bit_exact_including_the_sign_of_zero() -> None:
    for body in ("a = Relu(x)\n y = Min(a, six)", "a = Clip(x, m1, six)\n y = Relu(a)"):
        model = _model(body)
        fused, _ = apply(ClipFusionPass(), model)
        after, before = run_plain(fused, _feeds())["y"], run_plain(model, _feeds())["y"]
        np.testing.assert_array_equal(after.view(np.uint32), before.view(np.uint32))


def test_max_zero_pattern_keeps_values_but_documents_the_sign_of_zero() -> None:
    # ORT's Max(-0.0, 0.0) is +0.0, Clip keeps -0.0: equal values, as the module docstring says.
    model = _model("a = Max(x, zero)\n y = Min(a, six)")
    fused, _ = apply(ClipFusionPass(), model)
    feeds = {"x": np.full((1, 8), -0.0, np.float32)}
    after, before = run_plain(fused, feeds)["y"], run_plain(model, feeds)["y"]
    np.testing.assert_array_equal(after, before)
    assert not np.signbit(before).any()


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_fuses_float16_and_float64_exactly(dtype: Any) -> None:
    model = _model("a = Max(x, zero)\n y = Min(a, six)", dtype=dtype)
    fused, changed = apply(ClipFusionPass(), model)
    assert changed
    assert op_types(fused) == ["Clip"]
    clip = next(iter(fused.graph))
    assert [v.dtype if v is not None else None for v in clip.inputs] == [ir.DataType.from_numpy(np.dtype(dtype))] * 3
    np.testing.assert_array_equal(run_plain(fused, _feeds(dtype))["y"], run_plain(model, _feeds(dtype))["y"])


def test_all_equal_bound_that_does_not_broadcast_is_accepted() -> None:
    model = _model("a = Max(x, zero8)\n y = Min(a, six)", zero8=np.zeros(8))
    fused, changed = apply(ClipFusionPass(), model)
    assert changed
    assert op_types(fused) == ["Clip"]
    np.testing.assert_array_equal(run_plain(fused, _feeds())["y"], run_plain(model, _feeds())["y"])


@pytest.mark.parametrize("body", ["a = Max(x, zero)\n y = Min(a, six)", "a = Clip<min=-1.0, max=6.0>(x)\n y = Relu(a)"])
def test_opset_10_uses_clip_attributes(body: str) -> None:
    model = _model(body, opset=10)
    fused, changed = apply(ClipFusionPass(), model)
    assert changed
    assert op_types(fused) == ["Clip"]
    clip = next(iter(fused.graph))
    assert len(clip.inputs) == 1
    assert (clip.attributes["min"].as_float(), clip.attributes["max"].as_float()) == (0.0, 6.0)
    np.testing.assert_array_equal(run_plain(fused, _feeds())["y"], run_plain(model, _feeds())["y"])


def test_clips_share_their_bound_initializers() -> None:
    model = _model("a = Relu(x)\n b = Min(a, six)\n n = Neg(b)\n d = Relu(n)\n y = Min(d, six)")
    fused, changed = apply(ClipFusionPass(), model)
    assert changed
    assert op_types(fused) == ["Clip", "Neg", "Clip"]
    first, _, second = list(fused.graph)
    assert first.inputs[1] is second.inputs[1]
    assert first.inputs[2] is second.inputs[2]
    np.testing.assert_array_equal(run_plain(fused, _feeds())["y"], run_plain(model, _feeds())["y"])


def test_fused_clip_output_keeps_the_graph_output_name() -> None:
    fused, _ = apply(ClipFusionPass(), _model("a = Relu(x)\n y = Min(a, six)"))
    assert [v.name for v in fused.graph.outputs] == ["y"]


def test_tolerance_is_exact() -> None:
    assert ClipFusionPass.tolerance == EXACT


@pytest.mark.parametrize(
    ("body", "kwargs", "reason"),
    [
        ("a = Max(x, zero)\n y = Min(a, six)\n z = Neg(a)", {"outputs": ", float[N, 8] z"}, "also read by Neg"),
        ("a = Max(x, zero)\n y = Min(a, six)", {"outputs": ", float[N, 8] a"}, "'a' is a graph output"),
        ("a = Max(x, lo)\n y = Min(a, six)", {"inputs": ", float lo"}, "bound 'lo' is not a constant"),
        ("a = Max(x, vec)\n y = Min(a, six)", {"vec": np.arange(8)}, "not single-valued"),
        ("a = Max(x, big)\n y = Min(a, six)", {"big": np.zeros((1, 1, 1))}, "higher rank than the 2-D input"),
        ("a = Max(x, wide)\n y = Min(a, six)", {"wide": np.zeros((2, 8))}, "may broadcast input"),
        ("a = Max(x, six)\n y = Min(a, zero)", {}, "empty or a single point"),
        ("a = Relu(x)\n y = Max(a, p1)", {}, "open on one side"),
        ("a = Relu(x)\n y = Relu(a)", {}, "open on one side"),
        ("a = Max(x, ninf)\n y = Min(a, six)", {"ninf": -np.inf}, "bound -inf is not finite"),
        ("a = Max(x, zero)\n y = Min(a, six)", {"dtype": np.int32}, "dtype int32, not a float type"),
        ("a = Max(x, zero)\n y = Min(a, six)", {"dtype": np.float64, "opset": 10}, "float32 only"),
    ],
)
def test_does_not_fuse_when_it_must_not(
    body: str, kwargs: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model(body, **kwargs)
    with caplog.at_level(logging.DEBUG, logger="modelport.passes.rules.base"):
        fused, changed = apply(ClipFusionPass(), model)
    assert not changed
    assert op_types(fused) == op_types(model)
    assert reason in caplog.text


def test_does_not_fuse_in_a_subgraph_without_a_known_opset(caplog: pytest.LogCaptureFixture) -> None:
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
    g (bool c, float[8] x) => (float[8] y) {
      y = If(c) <then_branch = t () => (float[8] p) { six = Constant<value_float=6.0>()
                                                      a = Relu(x)
                                                      p = Min(a, six) },
                 else_branch = e () => (float[8] q) { q = Identity(x) }>
    }"""
    )
    with caplog.at_level(logging.DEBUG, logger="modelport.passes.rules.base"):
        _, changed = apply(ClipFusionPass(), model)
    assert not changed
    assert "opset is unknown here" in caplog.text
