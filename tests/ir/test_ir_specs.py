"""TensorSpec, specs_of and concrete_shape."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import InputShapeError
from modelport.ir.specs import TensorSpec, concrete_shape, specs_of

F32 = np.dtype("float32")


def test_concrete_shape_fills_batch_named_and_default() -> None:
    spec = TensorSpec("x", F32, ("N", "seq", None, 3, "heads"))
    shape = concrete_shape(spec, batch=4, dims={"seq": 7}, default_dim=11)
    assert shape == (4, 7, 11, 3, 11)


def test_concrete_shape_named_dim_wins_on_axis_zero() -> None:
    spec = TensorSpec("x", F32, ("N", 3))
    assert concrete_shape(spec, batch=4, dims={"N": 9}, default_dim=2) == (9, 3)


def test_concrete_shape_unnamed_axis_zero_gets_batch() -> None:
    spec = TensorSpec("x", F32, (None, None))
    assert concrete_shape(spec, batch=5, default_dim=2) == (5, 2)


def test_concrete_shape_static_stays() -> None:
    spec = TensorSpec("x", F32, (1, 3, 224, 224))
    assert concrete_shape(spec, batch=8, dims={"N": 2}, default_dim=16) == (1, 3, 224, 224)


def test_concrete_shape_scalar() -> None:
    assert concrete_shape(TensorSpec("s", F32, ()), batch=8, default_dim=16) == ()


def test_concrete_shape_unknown_rank() -> None:
    spec = TensorSpec("pixel_values", F32, None)
    with pytest.raises(InputShapeError, match=r"input 'pixel_values' has unknown rank .*--shape"):
        concrete_shape(spec, batch=1, default_dim=8)


def test_specs_of_graph_values() -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x, int64[?] k) => (float[N, 3] y)
        {
            y = Identity(x)
        }
        """
    )
    inputs = specs_of(model.graph.inputs)
    assert inputs == [
        TensorSpec("x", F32, ("N", 3)),
        TensorSpec("k", np.dtype("int64"), (None,)),
    ]
    assert specs_of(model.graph.outputs) == [TensorSpec("y", F32, ("N", 3))]


def test_specs_of_unknown_rank() -> None:
    value = ir.Value(name="v", type=ir.TensorType(ir.DataType.FLOAT16))
    (spec,) = specs_of([value])
    assert spec == TensorSpec("v", np.dtype("float16"), None)
    assert spec.is_dynamic
    assert spec.dynamic_axes == {}
    assert spec.shape_str() == "[unknown rank]"


def test_tensor_spec_properties() -> None:
    spec = TensorSpec("x", F32, ("N", None, 3))
    assert spec.is_dynamic
    assert spec.dynamic_axes == {0: "N", 1: "?"}
    assert spec.shape_str() == "[N, ?, 3]"
    assert spec.to_dict() == {"name": "x", "dtype": "float32", "shape": ["N", None, 3]}
    static = TensorSpec("x", F32, (2, 3))
    assert not static.is_dynamic
    assert static.dynamic_axes == {}
