from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
from helpers import apply, bind, op_types, run_plain

from modelport.passes.rules.convtranspose_bn import FuseConvTransposeBatchNormPass
from modelport.verify.tolerance import Tolerance

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
FEEDS = {"x": np.random.default_rng(1).standard_normal((2, 4, 5, 5)).astype(np.float32)}
TOL = FuseConvTransposeBatchNormPass.tolerance
OUT = "float[N, 6, 11, 11]"  # 4 -> 6 channels, stride 2, 3x3 kernel: 5x5 -> 11x11


def _model(
    body: str = "y = BatchNormalization<epsilon=0.001>(c, scale, bn_b, mean, var)",
    *,
    group: int = 1,
    bias: bool = True,
    outputs: str = "",
    inputs: str = "",
    dtype: Any = np.float32,
    **consts: Any,
) -> ir.Model:
    """ConvTranspose writing ``c`` (4 -> 6 channels), then ``body``; constants bound from ``consts``."""
    type_name = {np.float32: "float", np.float16: "float16"}[dtype]
    rng = np.random.default_rng(0)
    model = ir.from_onnx_text(
        HEADER
        + f"""
    g ({type_name}[N, 4, 5, 5] x{inputs}) => ({OUT.replace("float", type_name)} y{outputs}) {{
      c = ConvTranspose<strides=[2,2], group={group}>(x, w{", b" if bias else ""})
      {body}
    }}"""
    )
    arrays = {
        "w": rng.standard_normal((4, 6 // group, 3, 3)),
        "b": rng.standard_normal(6),
        "scale": rng.uniform(0.5, 2, 6),
        "bn_b": rng.standard_normal(6),
        "mean": rng.standard_normal(6),
        "var": rng.uniform(0.2, 3, 6),
        **consts,
    }
    declared = {v.name for v in model.graph.inputs}
    for name, array in arrays.items():
        if (name == "b" and not bias) or name in declared:
            continue
        bind(model, name, np.asarray(array).astype(dtype))
    return model


T = np.random.default_rng(3).standard_normal(6)
ADD_BN = "a = Add(c, t)\n y = BatchNormalization<epsilon=0.001>(a, scale, bn_b, mean, var)"


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize(
    ("body", "kwargs"),
    [
        (None, {}),
        (None, {"bias": False}),
        (ADD_BN, {"t": T.reshape(6, 1, 1)}),
        (ADD_BN.replace("Add(c, t)", "Add(t, c)"), {"t": T.reshape(1, 6, 1, 1), "bias": False}),
        (ADD_BN, {"t": np.array(0.5)}),
    ],
)
def test_folds_batchnorm_into_convtranspose(group: int, body: str | None, kwargs: dict[str, Any]) -> None:
    model = _model(body, group=group, **kwargs) if body else _model(group=group, **kwargs)
    fused, changed = apply(FuseConvTransposeBatchNormPass(), model)
    assert changed
    assert op_types(fused) == ["ConvTranspose"]
    assert [v.name for v in fused.graph.outputs] == ["y"]
    np.testing.assert_allclose(run_plain(fused, FEEDS)["y"], run_plain(model, FEEDS)["y"], atol=TOL.atol, rtol=TOL.rtol)


def test_tolerance_is_tight() -> None:
    assert Tolerance(1e-5, 1e-5) == TOL


@pytest.mark.parametrize(
    ("body", "kwargs", "reason"),
    [
        (None, {"outputs": f", {OUT} c"}, "'c' is a graph output"),
        (ADD_BN + "\n z = Relu(c)", {"t": T.reshape(6, 1, 1), "outputs": f", {OUT} z"}, "'c' is also read by Relu"),
        (ADD_BN + "\n z = Relu(a)", {"t": T.reshape(6, 1, 1), "outputs": f", {OUT} z"}, "'a' is also read by Relu"),
        (ADD_BN, {"inputs": ", float[6, 1, 1] t"}, "the Add's other operand is not a constant"),
        (ADD_BN, {"t": np.ones((6, 11, 1))}, "varies along the batch or spatial axes"),
        (None, {"inputs": ", float[6] mean"}, "parameters are not constants"),
        (None, {"inputs": ", float[4, 6, 3, 3] w"}, "weight is not a constant"),
        (None, {"dtype": np.float16}, "only float32/float64 are folded"),
        (
            "y, rm, rv = BatchNormalization<training_mode=1>(c, scale, bn_b, mean, var)",
            {"outputs": ", float[6] rm, float[6] rv"},
            "training mode",
        ),
        ("d = Relu(c)\n y = BatchNormalization(d, scale, bn_b, mean, var)", {}, "not produced by a ConvTranspose"),
    ],
)
def test_does_not_fold_when_it_must_not(
    body: str | None, kwargs: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model(body, **kwargs) if body else _model(**kwargs)
    with caplog.at_level(logging.DEBUG, logger="modelport.passes.rules.base"):
        fused, changed = apply(FuseConvTransposeBatchNormPass(), model)
    assert not changed
    assert op_types(fused) == op_types(model)
    assert reason in caplog.text
