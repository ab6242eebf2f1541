"""Generated inputs: integer ranges from the graph, stated sizes, determinism."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import InputDtypeError, InputShapeError
from modelport.ir.specs import TensorSpec, specs_of
from modelport.verify.inputs import (
    DEFAULT_DIM,
    DEFAULT_INT_RANGE,
    InputPlan,
    effective_batch,
    generate_feeds,
    integer_input_ranges,
    merge_ranges,
)

F32 = np.dtype("float32")


def embedding_model() -> ir.Model:
    """ids (int64 [N, S]) -> Gather over a [100, 8] table; mask (int64) is not an index."""
    table = ", ".join(["0.5"] * 800)
    return ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[N, S] ids, int64[N, S] mask) => (float[N, S, 8] y)
        <float[100, 8] table = {{{table}}}>
        {{
            e = Gather(table, ids)
            m = Cast<to = 1>(mask)
            axes = Constant<value = int64[1] {{2}}>()
            m3 = Unsqueeze(m, axes)
            y = Mul(e, m3)
        }}
        """
    )


# integer ranges -------------------------------------------------------------------------------


def test_gather_input_gets_table_range() -> None:
    assert integer_input_ranges(embedding_model()) == {"ids": (0, 100)}


def test_range_found_through_cast_and_reshape() -> None:
    table = ", ".join(["1.0"] * (4 * 50))
    model = ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int32[N, S] tokens) => (float[4, N, 1, S] y)
        <float[4, 50] table = {{{table}}}, int64[3] shape = {{0, 1, -1}}>
        {{
            t64 = Cast<to = 7>(tokens)
            flat = Reshape(t64, shape)
            y = Gather<axis = 1>(table, flat)
        }}
        """
    )
    assert integer_input_ranges(model) == {"tokens": (0, 50)}


def test_no_range_when_input_is_the_table_or_float() -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x, int64[2] idx) => (float[2, 3] y)
        {
            y = Gather(x, idx)
        }
        """
    )
    # idx indexes a table whose axis 0 is dynamic: nothing to say
    assert integer_input_ranges(model) == {}


def test_generated_ids_stay_in_range() -> None:
    model = embedding_model()
    ranges = integer_input_ranges(model)
    plan = InputPlan(batch=4, dims={"S": 64}, int_ranges=ranges, seed=3)
    feeds = generate_feeds(specs_of(model.graph.inputs), plan)
    ids = feeds["ids"]
    assert ids.shape == (4, 64)
    assert ids.dtype == np.int64
    assert ids.min() >= 0
    assert ids.max() < 100
    assert ids.max() >= DEFAULT_INT_RANGE[1]  # the table's range was used, not the default
    mask = feeds["mask"]
    assert mask.min() >= DEFAULT_INT_RANGE[0]
    assert mask.max() < DEFAULT_INT_RANGE[1]


def test_merge_ranges_user_wins() -> None:
    found = {"ids": (0, 100), "pos": (0, 512)}
    assert merge_ranges(found, {"ids": (5, 10)}) == {"ids": (5, 10), "pos": (0, 512)}


def test_int_range_clipped_to_dtype() -> None:
    specs = [TensorSpec("b", np.dtype("uint8"), (1000,))]
    feeds = generate_feeds(specs, InputPlan(int_ranges={"b": (-50, 10_000)}))
    assert feeds["b"].dtype == np.uint8
    assert int(feeds["b"].max()) > 200  # the upper bound became 256, not 10 000 % 256
    assert int(feeds["b"].min()) < 50


# generation -----------------------------------------------------------------------------------


SPECS = [
    TensorSpec("x", F32, ("N", "seq", None, 3)),
    TensorSpec("flag", np.dtype("bool"), ("N",)),
    TensorSpec("half", np.dtype("float16"), (2,)),
]


def test_dynamic_dims_filled_as_stated() -> None:
    feeds = generate_feeds(SPECS, InputPlan(batch=5, dims={"seq": 7}, default_dim=9))
    assert feeds["x"].shape == (5, 7, 9, 3)
    assert feeds["flag"].shape == (5,)
    assert feeds["half"].shape == (2,)
    assert feeds["x"].dtype == np.float32
    assert feeds["flag"].dtype == np.bool_
    assert feeds["half"].dtype == np.float16


def test_default_dim_is_stated_size() -> None:
    feeds = generate_feeds([TensorSpec("x", F32, ("N", "seq"))])
    assert feeds["x"].shape == (1, DEFAULT_DIM)


def test_deterministic_for_a_seed() -> None:
    a = generate_feeds(SPECS, InputPlan(batch=3, seed=11))
    b = generate_feeds(SPECS, InputPlan(batch=3, seed=11))
    c = generate_feeds(SPECS, InputPlan(batch=3, seed=12))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["x"], c["x"])


def test_random_floats_look_standard_normal() -> None:
    feeds = generate_feeds([TensorSpec("x", F32, ("N", 1000))], InputPlan(batch=10))
    x = feeds["x"]
    np.testing.assert_allclose(x.mean(), 0.0, atol=0.05)
    np.testing.assert_allclose(x.std(), 1.0, atol=0.05)


@pytest.mark.parametrize(("fill", "value"), [("ones", 1), ("zeros", 0)])
def test_constant_fills(fill: str, value: int) -> None:
    feeds = generate_feeds(SPECS, InputPlan(batch=2, fill=fill))  # type: ignore[arg-type]
    for array in feeds.values():
        np.testing.assert_array_equal(array, np.full(array.shape, value, dtype=array.dtype))


def test_unknown_rank_needs_a_shape() -> None:
    with pytest.raises(InputShapeError, match="input 'blob' has unknown rank"):
        generate_feeds([TensorSpec("blob", F32, None)])


def test_string_input_cannot_be_generated() -> None:
    with pytest.raises(InputDtypeError, match="cannot generate values for input 's' of dtype object"):
        generate_feeds([TensorSpec("s", np.dtype(object), ("N",))])


def test_describe_states_shapes_and_values() -> None:
    plan = InputPlan(batch=2, dims={"seq": 4}, default_dim=5, int_ranges={"k": (0, 7)})
    specs = [*SPECS[:2], TensorSpec("k", np.dtype("int64"), ("N",))]
    assert plan.describe(specs) == {
        "x": {"shape": [2, 4, 5, 3], "dtype": "float32", "values": "standard normal"},
        "flag": {"shape": [2], "dtype": "bool", "values": "random booleans"},
        "k": {"shape": [2], "dtype": "int64", "values": "uniform integers in [0, 7)"},
    }


# effective batch ------------------------------------------------------------------------------


def test_effective_batch_dynamic_axis() -> None:
    assert effective_batch([TensorSpec("x", F32, ("N", 3))], 4) == 4


def test_effective_batch_static_axis_wins() -> None:
    assert effective_batch([TensorSpec("x", F32, (1, 3))], 4) == 1


def test_effective_batch_scalar_input_ignored() -> None:
    specs = [TensorSpec("t", F32, ()), TensorSpec("x", F32, ("N", 3))]
    assert effective_batch(specs, 4) == 4


def test_effective_batch_ignores_static_auxiliary_input() -> None:
    specs = [TensorSpec("scale", F32, (1,)), TensorSpec("x", F32, ("N", 3))]
    assert effective_batch(specs, 4) == 4


def test_shared_symbol_same_size_across_inputs() -> None:
    specs = [
        TensorSpec("input_ids", np.dtype("int64"), ("batch", "seq")),
        TensorSpec("attention_mask", np.dtype("int64"), ("batch", "seq")),
    ]
    feeds = generate_feeds(specs, InputPlan(batch=3, default_dim=5))
    assert feeds["input_ids"].shape == feeds["attention_mask"].shape == (3, 5)


def test_batch_symbol_off_axis_zero_gets_the_batch() -> None:
    specs = [
        TensorSpec("input_ids", np.dtype("int64"), ("batch", "seq")),
        TensorSpec("past", F32, (2, "batch", 4, "past_seq", 8)),
    ]
    feeds = generate_feeds(specs, InputPlan(batch=3))
    assert feeds["input_ids"].shape[0] == 3
    assert feeds["past"].shape[1] == 3
