"""Generated inputs: integer ranges and masks from the graph, realistic values, stated sizes, determinism."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import ConfigError, InputDtypeError, InputShapeError
from modelport.ir.specs import TensorSpec, specs_of
from modelport.verify.inputs import (
    DEFAULT_DIM,
    DEFAULT_INT_RANGE,
    FILLS,
    InputPlan,
    effective_batch,
    generate_feeds,
    integer_input_ranges,
    mask_inputs,
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


# realistic fill -------------------------------------------------------------------------------


def bert_like_model() -> ir.Model:
    """input_ids -> embedding; attention_mask (int64) -> Unsqueeze -> Cast -> Sub(1, m) -> Mul: the BERT pattern;
    flags (bool) is the condition of a Where; count (int64) only feeds an Add (neither ids nor mask)."""
    table = ", ".join(["0.25"] * (30 * 4))
    return ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[B, S] input_ids, int64[B, S] attention_mask, bool[B, S] flags, int64[B, S] count)
            => (float[B, S, 4] y, float[B, 1, S] bias, float[B, S] picked, int64[B, S] total)
        <float[30, 4] table = {{{table}}}>
        {{
            y = Gather(table, input_ids)
            axes = Constant<value = int64[1] {{1}}>()
            m = Unsqueeze(attention_mask, axes)
            mf = Cast<to = 1>(m)
            one = Constant<value = float {{1.0}}>()
            inv = Sub(one, mf)
            big = Constant<value = float {{-10000.0}}>()
            bias = Mul(inv, big)
            zero = Constant<value = float {{0.0}}>()
            ten = Constant<value = float {{10.0}}>()
            picked = Where(flags, ten, zero)
            total = Add(count, count)
        }}
        """
    )


def test_mask_inputs_found_from_graph_use() -> None:
    model = bert_like_model()
    assert mask_inputs(model) == {"attention_mask", "flags"}
    assert integer_input_ranges(model) == {"input_ids": (0, 30)}


def test_mask_inputs_of_embedding_model() -> None:
    # mask -> Cast -> Unsqueeze -> Mul; ids index the table and are never a mask
    assert mask_inputs(embedding_model()) == {"mask"}


def test_integer_input_multiplied_without_a_cast_is_not_a_mask() -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[N] k) => (int64[N] y)
        {
            y = Mul(k, k)
        }
        """
    )
    assert mask_inputs(model) == set()  # a Mul without a Cast first multiplies integers, not a mask


def realistic_plan(model: ir.Model, batch: int, seq: int, seed: int = 0) -> InputPlan:
    return InputPlan(
        batch=batch,
        dims={"S": seq},
        int_ranges=integer_input_ranges(model),
        masks=mask_inputs(model),
        fill="realistic",
        seed=seed,
    )


def assert_padding_mask(mask: np.ndarray[Any, Any]) -> None:
    rows = mask.reshape(-1, mask.shape[-1]).astype(np.int64)
    assert set(np.unique(rows).tolist()) <= {0, 1}
    lengths = rows.sum(axis=1)
    assert lengths.min() >= 1  # never a row of zeros
    for row, length in zip(rows, lengths, strict=True):
        np.testing.assert_array_equal(row[:length], 1)  # leading ones ...
        np.testing.assert_array_equal(row[length:], 0)  # ... then trailing zeros


def test_realistic_feeds_for_a_bert_like_model() -> None:
    model = bert_like_model()
    plan = realistic_plan(model, batch=6, seq=40, seed=2)
    feeds = generate_feeds(specs_of(model.graph.inputs), plan)
    ids = feeds["input_ids"]
    assert ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < 30
    mask = feeds["attention_mask"]
    assert mask.dtype == np.int64 and mask.shape == (6, 40)
    assert_padding_mask(mask)
    assert mask[0].sum() == 40  # the longest row is unpadded
    assert len(set(mask.sum(axis=1).tolist())) > 1  # rows are padded differently
    flags = feeds["flags"]
    assert flags.dtype == np.bool_
    assert_padding_mask(flags)
    count = feeds["count"]  # neither ids nor mask: the default integer range
    assert DEFAULT_INT_RANGE[0] <= count.min() and count.max() < DEFAULT_INT_RANGE[1]


def test_mask_recognised_by_name_without_graph() -> None:
    specs = [TensorSpec("encoder_attention_mask", np.dtype("int32"), ("N", 1, "S"))]
    feeds = generate_feeds(specs, InputPlan(batch=3, dims={"S": 9}, fill="realistic", seed=4))
    mask = feeds["encoder_attention_mask"]
    assert mask.dtype == np.int32 and mask.shape == (3, 1, 9)
    assert_padding_mask(mask)


def test_float_named_mask_is_not_a_padding_mask() -> None:
    # Float masks are additive (0 / -inf) in most models: not 0/1, so standard normal like any float.
    specs = [TensorSpec("mask", F32, ("N", 1000))]
    feeds = generate_feeds(specs, InputPlan(batch=4, fill="realistic"))
    assert feeds["mask"].min() < -1.0


@pytest.mark.parametrize("shape", [("N", 3, 16, 16), ("N", 16, 16, 3), (1, 1, 28, 28), ("N", 4, 8, 8)])
def test_image_like_inputs_in_unit_range(shape: tuple[Any, ...]) -> None:
    specs = [TensorSpec("pixels", F32, shape)]
    feeds = generate_feeds(specs, InputPlan(batch=2, fill="realistic", seed=1))
    x = feeds["pixels"]
    assert x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() < 1.0
    assert x.std() > 0.2  # uniform over [0, 1) (std 0.289), not a constant


def test_other_floats_stay_standard_normal_when_realistic() -> None:
    specs = [TensorSpec("features", F32, ("N", 2000)), TensorSpec("volume", F32, ("N", 5, 8, 8, 8))]
    feeds = generate_feeds(specs, InputPlan(batch=5, fill="realistic"))
    x = feeds["features"]
    np.testing.assert_allclose(x.mean(), 0.0, atol=0.05)
    np.testing.assert_allclose(x.std(), 1.0, atol=0.05)
    assert feeds["volume"].min() < 0.0  # rank 5: not an image


def test_realistic_is_deterministic_for_a_seed() -> None:
    model = bert_like_model()
    specs = specs_of(model.graph.inputs)
    a = generate_feeds(specs, realistic_plan(model, 3, 12, seed=9))
    b = generate_feeds(specs, realistic_plan(model, 3, 12, seed=9))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_describe_says_what_realistic_inputs_got() -> None:
    model = bert_like_model()
    plan = realistic_plan(model, 2, 8)
    specs = [*specs_of(model.graph.inputs), TensorSpec("image", F32, ("B", 3, 4, 4)), TensorSpec("z", F32, (2,))]
    described = {name: info["values"] for name, info in plan.describe(specs).items()}
    assert described == {
        "input_ids": "uniform integers in [0, 30)",
        "attention_mask": "0/1 mask, leading ones then trailing zeros per row (used as a mask in the graph)",
        "flags": "0/1 mask, leading ones then trailing zeros per row (used as a mask in the graph)",
        "count": "uniform integers in [0, 16)",
        "image": "image-like: uniform in [0, 1)",
        "z": "standard normal",
    }
    named = InputPlan(fill="realistic").describe([TensorSpec("pad_mask", np.dtype("bool"), ("N", 4))])
    assert named["pad_mask"]["values"] == "0/1 mask, leading ones then trailing zeros per row (named a mask)"


def test_random_fill_keeps_masks_random() -> None:
    model = bert_like_model()
    plan = InputPlan(batch=4, dims={"S": 50}, masks=mask_inputs(model))
    mask = generate_feeds(specs_of(model.graph.inputs), plan)["attention_mask"]
    assert mask.max() > 1  # "random" is the old behaviour: uniform integers in [0, 16)


def test_unknown_fill_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown input fill 'gaussian' — choose one of: realistic, random"):
        generate_feeds(SPECS, InputPlan(fill="gaussian"))  # type: ignore[arg-type]
    assert FILLS == ("realistic", "random", "ones", "zeros")


def test_range_from_onehot_depth() -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[N, S] chars) => (float[N, S, 40] y)
        {
            depth = Constant<value = int64 {40}>()
            values = Constant<value = float[2] {0.0, 1.0}>()
            y = OneHot(chars, depth, values)
        }
        """
    )
    assert integer_input_ranges(model) == {"chars": (0, 40)}


def test_range_from_equal_against_arange_like_a_jax_one_hot() -> None:
    classes = ", ".join(str(i) for i in range(257))
    model = ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int32[N, 16] bytes) => (float[N, 16, 257] y)
        <int64[3] shape = {{0, 16, 1}}, int32[1, 1, 257] classes = {{{classes}}}>
        {{
            r = Reshape(bytes, shape)
            hit = Equal(r, classes)
            y = Cast<to = 1>(hit)
        }}
        """
    )
    assert integer_input_ranges(model) == {"bytes": (0, 257)}
    shifted = model.graph.initializers["classes"]
    shifted.const_value = ir.tensor(np.arange(1, 258, dtype=np.int32).reshape(1, 1, 257))
    assert integer_input_ranges(model) == {}  # not 0..K-1: not an index space


def test_real_model_byte_input_range(real_model_path: Callable[[str], Path]) -> None:
    from modelport.ir.serde import load

    model = load(real_model_path("magika"))
    assert integer_input_ranges(model) == {"bytes": (0, 257)}  # 256 byte values and a padding token
    assert mask_inputs(model) == set()
