"""First-diverging-layer bisection: injected faults are found by name, on plain, fused and
renamed graphs; the search never marks every tensor; the answer's inputs provably agree."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import ConfigError
from modelport.ir.serde import clone
from modelport.passes.manager import optimize
from modelport.verify.bisect import DEFAULT_PER_PROBE, bisect, compare_tensor
from modelport.verify.inputs import InputPlan
from modelport.verify.match import TensorPair
from resnet_models import conv_names, resnet


def _corrupt(model: ir.Model, node_name: str, index: tuple[int, ...], factor: float = 1.1) -> ir.Model:
    """A copy of ``model`` whose node's weight (input 1) is scaled by ``factor`` at ``index``."""
    broken = clone(model)
    node = next(n for n in broken.graph if n.name == node_name)
    weight = node.inputs[1]
    assert weight is not None and weight.const_value is not None
    array = weight.const_value.numpy().copy()
    array[index] *= factor
    weight.const_value = ir.tensor(array, name=weight.name)
    return broken


def _rename_everything(model: ir.Model) -> ir.Model:
    """Every node and every intermediate tensor gets a new name (graph I/O keep theirs)."""
    renamed = clone(model)
    for i, node in enumerate(renamed.graph):
        node.name = f"node{i}"
        for j, value in enumerate(node.outputs):
            if not value.is_graph_output():
                value.name = f"tensor{i}_{j}"
    return renamed


@pytest.fixture(scope="module")
def small() -> ir.Model:
    return resnet(widths=(8, 16, 32), blocks=2, size=32)


@pytest.fixture(scope="module")
def fused_renamed(small: ir.Model) -> ir.Model:
    optimized = optimize(small, measure=False).model
    assert "BatchNormalization" not in {n.op_type for n in optimized.graph}
    return _rename_everything(optimized)


def test_names_the_corrupted_conv_and_proves_its_inputs_agree(small: ir.Model) -> None:
    target = conv_names(small)[4]
    result = bisect(_corrupt(small, target, (3,)), small)
    assert result.diverged
    assert result.first is not None and result.first.pair.candidate == f"{target}_out"
    assert result.candidate_nodes == [(target, "Conv")]
    assert result.reference_nodes == [(target, "Conv")]
    assert result.agreeing_inputs and all(not c.diverged for c in result.agreeing_inputs)
    assert result.first.relative > 1e-3
    assert target in result.summary()


def test_never_marks_every_tensor(small: ir.Model) -> None:
    result = bisect(_corrupt(small, conv_names(small)[-1], (0,)), small)
    paired = len(result.matching.pairs)
    assert 0 < result.most_marked <= DEFAULT_PER_PROBE < paired
    assert len(result.checks) < paired
    assert result.to_dict()["most_tensors_marked_in_one_run"] == result.most_marked


def test_identical_models_do_not_diverge(small: ir.Model) -> None:
    result = bisect(small, clone(small))
    assert not result.diverged and result.first is None
    assert result.runs == 1
    assert result.summary() == "the outputs agree: nothing to bisect"


def test_renamed_and_fused_graph_pairs_by_structure_and_names_the_conv(
    small: ir.Model, fused_renamed: ir.Model
) -> None:
    convs = [n.name or "" for n in fused_renamed.graph if n.op_type == "Conv"]
    target = convs[6]
    result = bisect(_corrupt(fused_renamed, target, (1,)), small)
    assert result.first is not None
    assert result.candidate_nodes == [(target, "Conv")]
    # The reference still has the BatchNormalization the optimizer folded into that Conv.
    assert [op for _, op in result.reference_nodes] == ["Conv", "BatchNormalization"]
    assert result.matching.counts().get("name", 0) == 0
    assert result.matching.unmatched_candidate == []


@pytest.mark.parametrize("variant", ["plain", "fused-renamed"])
def test_every_injected_single_kernel_fault_is_found(variant: str, small: ir.Model, fused_renamed: ir.Model) -> None:
    """A +10 % fault in one (out, in) kernel of a random Conv, once per Conv of the model.

    With random weights some channels are dead (zero after every Relu on these inputs), so a fault
    there cannot change any output; every fault that does change the outputs must be named.
    """
    base = small if variant == "plain" else fused_renamed
    rng = np.random.default_rng(7)
    convs = [n for n in base.graph if n.op_type == "Conv"]
    found, diverged = 0, 0
    for node in convs:
        weight = node.inputs[1]
        assert weight is not None and weight.shape is not None
        out_c, in_c = int(rng.integers(weight.shape[0])), int(rng.integers(weight.shape[1]))
        result = bisect(_corrupt(base, node.name or "", (out_c, in_c)), small, plan=InputPlan(batch=4))
        if not result.diverged:
            continue
        diverged += 1
        found += result.candidate_nodes == [(node.name, "Conv")]
    assert diverged >= 0.6 * len(convs)
    assert found == diverged


def test_nan_in_the_candidate_is_a_divergence(small: ir.Model) -> None:
    target = conv_names(small)[2]
    result = bisect(_corrupt(small, target, (0,), factor=float("nan")), small)
    assert result.first is not None and result.candidate_nodes == [(target, "Conv")]
    assert "non-finite" in result.first.reason


def _branches(scale: float) -> ir.Model:
    """Branch a (one Mul) is early in topological order; branch b (eight ops) comes after it."""
    chain = "\n".join(f"b{i + 1} = Add(b{i}, one)" for i in range(8))
    return ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 8] x) => (float[4, 8] y)
        <float k = {{{scale}}}, float one = {{1.0}}>
        {{
            a = Mul(x, k)
            b0 = Relu(x)
            {chain}
            y = Add(a, b8)
        }}
        """
    )


def test_a_branch_that_diverged_earlier_is_found_even_when_the_search_order_hides_it() -> None:
    result = bisect(_branches(2.5), _branches(2.0), per_probe=1)
    assert result.first is not None and result.first.pair.candidate == "a"
    assert [op for _, op in result.candidate_nodes] == ["Mul"]


def test_feeds_given_are_used(small: ir.Model) -> None:
    feeds = {"image": np.zeros((2, 3, 32, 32), np.float32)}
    result = bisect(small, clone(small), feeds=feeds)
    assert not result.diverged


def test_json_report_is_small_and_complete(small: ir.Model) -> None:
    data: dict[str, Any] = bisect(_corrupt(small, conv_names(small)[1], (0,)), small).to_dict()
    assert data["diverged"] and data["first"]["candidate"].endswith("_out")
    assert data["matching"]["pairs"] > 10 and data["agreeing_inputs"]
    assert set(data) >= {"candidate_nodes", "reference_nodes", "checks", "runs_per_side", "seconds", "notes"}


def test_compare_tensor_rule() -> None:
    pair = TensorPair("r", "c", "structure")
    ref = np.array([10.0, 0.001], np.float32)
    # Relative to the tensor's range: an error of 1e-4 on a range of 10 agrees at rtol 1e-4.
    assert not compare_tensor(pair, ref + np.float32(1e-4), ref, rtol=1e-4, atol=0).diverged
    assert compare_tensor(pair, ref + np.float32(1e-2), ref, rtol=1e-4, atol=0).diverged
    assert compare_tensor(pair, ref[:1], ref, rtol=1, atol=1).reason.startswith("shape")
    both_nan = np.array([np.nan, 1.0], np.float32)
    assert not compare_tensor(pair, both_nan, both_nan.copy(), rtol=0, atol=0).diverged


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backends": ()}, "one or two backends"),
        ({"backends": ("onnxruntime", "onnxruntime", "onnxruntime")}, "one or two backends"),
        ({"backends": ("torch", "onnxruntime")}, "export the PyTorch model"),
        ({"rtol": -1.0}, "rtol >= 0"),
        ({"per_probe": 0}, "per_probe >= 1"),
    ],
)
def test_bad_arguments(small: ir.Model, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        bisect(small, small, **kwargs)


def test_model_without_outputs_is_refused(small: ir.Model) -> None:
    empty = clone(small)
    empty.graph.outputs.clear()
    with pytest.raises(ConfigError, match="candidate model has no outputs"):
        bisect(empty, small)


def test_one_model_on_two_engines_finds_the_first_layer_they_compute_differently(small: ir.Model) -> None:
    """At zero tolerance the engines part at the first Conv (float summation order); its
    input is the graph input, fed identically to both."""
    pytest.importorskip("openvino")
    result = bisect(small, small, backends=("openvino", "onnxruntime"), rtol=0.0, atol=0.0)
    assert result.first is not None and result.candidate_nodes == [("conv_1", "Conv")]
    assert 0 < result.first.max_abs < 1e-4
    assert result.candidate.startswith("candidate (openvino)")
    # At the default tolerance the two engines agree on this model.
    assert not bisect(small, small, backends=("openvino", "onnxruntime")).diverged
