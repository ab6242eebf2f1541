from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
from helpers import apply, bind, op_types, run_plain

from modelport.passes.rules.conv_affine import FoldConvAffinePass
from modelport.verify.tolerance import Tolerance

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
FEEDS = {"x": np.random.default_rng(1).standard_normal((2, 4, 8, 8)).astype(np.float32)}
TOL = FoldConvAffinePass.tolerance


def _model(
    body: str,
    *,
    bias: bool = True,
    group: int = 1,
    outputs: str = "",
    inputs: str = "",
    dtype: Any = np.float32,
    **consts: Any,
) -> ir.Model:
    """Conv (4 -> 4 channels, 3x3) writing ``c``, then ``body``; constants bound from ``consts``."""
    type_name = {np.float32: "float", np.float16: "float16", np.float64: "double"}[dtype]
    rng = np.random.default_rng(0)
    model = ir.from_onnx_text(
        HEADER
        + f"""
    g ({type_name}[N, 4, 8, 8] x{inputs}) => ({type_name}[N, 4, 8, 8] y{outputs}) {{
      c = Conv<pads=[1,1,1,1], group={group}>(x, w{", b" if bias else ""})
      {body}
    }}"""
    )
    arrays = {"w": rng.standard_normal((4, 4 // group, 3, 3)), "b": rng.standard_normal(4), **consts}
    declared = {v.name for v in model.graph.inputs}
    for name, array in arrays.items():
        if (name == "b" and not bias) or name in declared:
            continue
        bind(model, name, np.asarray(array).astype(dtype))
    return model


S = np.random.default_rng(2).uniform(0.5, 2.0, 4)
T = np.random.default_rng(3).standard_normal(4)


@pytest.mark.parametrize(
    ("body", "kwargs"),
    [
        ("m = Mul(c, s)\n y = Add(m, t)", {"s": S.reshape(4, 1, 1), "t": T.reshape(1, 4, 1, 1)}),
        ("m = Mul(s, c)\n y = Add(t, m)", {"s": S.reshape(1, 4, 1, 1), "t": T.reshape(4, 1, 1)}),
        ("y = Add(c, t)", {"t": np.array(0.75)}),
        ("y = Mul(c, s)", {"s": np.array([1.5])}),
        ("m = Mul(c, s)\n y = Add(m, t)", {"s": S.reshape(4, 1, 1), "t": T.reshape(4, 1, 1), "bias": False}),
        ("y = Add(c, t)", {"t": T.reshape(4, 1, 1), "bias": False}),
        ("m = Mul(c, s)\n y = Add(m, t)", {"s": S.reshape(4, 1, 1), "t": T.reshape(4, 1, 1), "group": 2}),
    ],
)
def test_folds_per_channel_mul_and_add_into_conv(body: str, kwargs: dict[str, Any]) -> None:
    model = _model(body, **kwargs)
    fused, changed = apply(FoldConvAffinePass(), model)
    assert changed
    assert op_types(fused) == ["Conv"]
    np.testing.assert_allclose(run_plain(fused, FEEDS)["y"], run_plain(model, FEEDS)["y"], atol=TOL.atol, rtol=TOL.rtol)


def test_conv_without_bias_and_mul_keeps_no_bias() -> None:
    fused, changed = apply(FoldConvAffinePass(), _model("y = Mul(c, s)", s=S.reshape(4, 1, 1), bias=False))
    assert changed
    (conv,) = list(fused.graph)
    assert len(conv.inputs) == 2
    assert [v.name for v in fused.graph.outputs] == ["y"]


def test_tolerance_is_tight() -> None:
    assert Tolerance(1e-5, 1e-5) == TOL


@pytest.mark.parametrize(
    ("body", "kwargs", "reason"),
    [
        ("y = Mul(c, s)\n z = Relu(c)", {"s": S.reshape(4, 1, 1), "outputs": ", float[N, 4, 8, 8] z"}, "also read by"),
        ("y = Mul(c, s)", {"s": S.reshape(4, 1, 1), "outputs": ", float[N, 4, 8, 8] c"}, "'c' is a graph output"),
        ("y = Mul(c, s)", {"inputs": ", float[4, 1, 1] s"}, "'s' is not a constant"),
        ("y = Mul(c, s)", {"s": S.reshape(4, 1, 1), "inputs": ", float[4, 4, 3, 3] w"}, "weight is not a constant"),
        ("y = Mul(c, s)", {"s": np.full((1, 1, 8, 8), 2.0)}, "varies along the batch or spatial axes"),
        ("y = Mul(c, s)", {"s": np.full((2, 4, 1, 1), 2.0)}, "varies along the batch or spatial axes"),
        ("y = Mul(c, s)", {"s": S}, "varies along the batch or spatial axes"),  # [C] aligns with width
        ("y = Mul(c, s)", {"s": np.full((1, 1, 1, 1, 1), 2.0)}, "higher rank than the 4-D output"),
        ("y = Mul(c, s)", {"s": np.array([np.inf])}, "not finite"),
        ("y = Mul(c, s)", {"s": S.reshape(4, 1, 1), "dtype": np.float16}, "only float32/float64 are folded"),
    ],
)
def test_does_not_fold_when_it_must_not(
    body: str, kwargs: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model(body, **kwargs)
    with caplog.at_level(logging.DEBUG, logger="modelport.passes.rules.base"):
        fused, changed = apply(FoldConvAffinePass(), model)
    assert not changed
    assert op_types(fused) == op_types(model)
    assert reason in caplog.text
