from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
from helpers import apply, bind, op_types, run_plain

from modelport.passes.base import const_array
from modelport.passes.rules.batchnorm import BatchNormToAffinePass
from modelport.verify.tolerance import Tolerance

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
TOL = BatchNormToAffinePass.tolerance
BN = "y = BatchNormalization<epsilon=0.001>(r, scale, bias, mean, var)"


def _model(
    shape: str = "N, 3, 8, 8",
    body: str = "r = Relu(x)\n " + BN,
    *,
    value_info: str | None = None,
    type_name: str = "float",
    outputs: str = "",
    inputs: str = "",
    **consts: Any,
) -> ir.Model:
    """``body`` on input ``x`` of ``shape``; ``r`` (the BN input) is typed via value_info unless told."""
    info = f"{type_name}[{shape}] r" if value_info is None else value_info
    rng = np.random.default_rng(0)
    model = ir.from_onnx_text(
        HEADER
        + f"""
    g ({type_name}[{shape}] x{inputs}) => ({type_name}[{shape}] y{outputs}) <{info}> {{
      {body}
    }}"""
    )
    arrays = {
        "scale": rng.uniform(0.5, 2, 3),
        "bias": rng.standard_normal(3),
        "mean": rng.standard_normal(3),
        "var": rng.uniform(0.2, 3, 3),
        **consts,
    }
    dtype = {"float": np.float32, "double": np.float64, "float16": np.float16}[type_name]
    declared = {v.name for v in model.graph.inputs}
    for name, array in arrays.items():
        if name not in declared:
            bind(model, name, np.asarray(array).astype(dtype))
    return model


def _feeds(shape: tuple[int, ...], dtype: Any = np.float32) -> dict[str, np.ndarray[Any, Any]]:
    return {"x": np.random.default_rng(1).standard_normal(shape).astype(dtype)}


@pytest.mark.parametrize(
    ("shape", "dims", "const_shape"),
    [
        ("N, 3, 8, 8", (2, 3, 8, 8), (3, 1, 1)),
        ("N, 3, 5", (2, 3, 5), (3, 1)),
        ("N, 3", (2, 3), (3,)),
        ("N, 3, 2, 4, 4", (2, 3, 2, 4, 4), (3, 1, 1, 1)),
    ],
)
def test_rewrites_standalone_batchnorm_as_mul_add(
    shape: str, dims: tuple[int, ...], const_shape: tuple[int, ...]
) -> None:
    model = _model(shape)
    fused, changed = apply(BatchNormToAffinePass(), model)
    assert changed
    assert op_types(fused) == ["Relu", "Mul", "Add"]
    mul, add = list(fused.graph)[1:]
    for node in (mul, add):
        constant = const_array(node.inputs[1])
        assert constant is not None
        assert constant.shape == const_shape
        assert constant.dtype == np.float32
    assert [v.name for v in fused.graph.outputs] == ["y"]
    feeds = _feeds(dims)
    np.testing.assert_allclose(run_plain(fused, feeds)["y"], run_plain(model, feeds)["y"], atol=TOL.atol, rtol=TOL.rtol)


def test_takes_rank_and_dtype_from_the_output_when_the_input_is_untyped() -> None:
    model = _model(value_info="float[N, 3, 8, 8] unused")
    assert model.graph.node(0).outputs[0].shape is None
    fused, changed = apply(BatchNormToAffinePass(), model)
    assert changed
    assert op_types(fused) == ["Relu", "Mul", "Add"]
    feeds = _feeds((2, 3, 8, 8))
    np.testing.assert_allclose(run_plain(fused, feeds)["y"], run_plain(model, feeds)["y"], atol=TOL.atol, rtol=TOL.rtol)


def test_rewrites_batchnorm_on_a_graph_input_in_float64() -> None:
    model = _model(body=BN.replace("(r,", "(x,"), value_info="double[N, 3] unused", type_name="double")
    fused, changed = apply(BatchNormToAffinePass(), model)
    assert changed
    assert op_types(fused) == ["Mul", "Add"]
    feeds = _feeds((2, 3, 8, 8), np.float64)
    np.testing.assert_allclose(run_plain(fused, feeds)["y"], run_plain(model, feeds)["y"], atol=1e-12, rtol=1e-12)


def test_tolerance_is_tight_and_pass_is_marked_may_slow() -> None:
    assert Tolerance(1e-5, 1e-5) == TOL
    assert BatchNormToAffinePass.may_slow


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"body": "r = Conv(x, w)\n " + BN, "w": np.ones((3, 3, 1, 1))}, "conv-bn folds it"),
        ({"body": "r = ConvTranspose(x, w)\n " + BN, "w": np.ones((3, 3, 1, 1))}, "convtranspose-bn folds it"),
        (
            {
                "body": "r = Relu(x)\n y, rm, rv = BatchNormalization<training_mode=1>(r, scale, bias, mean, var)",
                "outputs": ", float[3] rm, float[3] rv",
            },
            "training mode",
        ),
        ({"inputs": ", float[3] var"}, "parameters are not constants"),
        ({"type_name": "float16"}, "only float32/float64 are rewritten"),
    ],
)
def test_does_not_rewrite_when_it_must_not(
    kwargs: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model(**kwargs)
    with caplog.at_level(logging.DEBUG, logger="modelport.passes.rules.base"):
        fused, changed = apply(BatchNormToAffinePass(), model)
    assert not changed
    assert op_types(fused) == op_types(model)
    assert reason in caplog.text


def test_unknown_rank_or_dtype_when_neither_input_nor_output_says(caplog: pytest.LogCaptureFixture) -> None:
    model = _model(value_info="float[N, 3, 8, 8] unused")
    model.graph.outputs[0].shape = None  # typed, rank unknown
    untyped = _model(value_info="float[N, 3, 8, 8] unused")
    untyped.graph.outputs[0].type = None
    for candidate, reason in ((model, "input rank is unknown"), (untyped, "input dtype is None")):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="modelport.passes.rules.base"):
            _, changed = apply(BatchNormToAffinePass(), candidate)
        assert not changed
        assert reason in caplog.text
