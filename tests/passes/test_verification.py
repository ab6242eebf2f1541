"""Region verification: what a pass rewrote is checked alone, one region of each kind."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_ir as ir
import pytest
from helpers import run_plain

from modelport.passes import Pass
from modelport.passes import manager as manager_module
from modelport.passes.manager import optimize
from modelport.verify.tolerance import EXACT, Tolerance

LAYERS = 4


def tower() -> ir.Model:
    """x -> 4 x (Identity, MatMul, Add, Relu) -> Shape/Gather/Concat/Reshape flatten."""
    body = []
    h = "x"
    for i in range(LAYERS):
        body += [f"id{i} = Identity({h})", f"mm{i} = MatMul(id{i}, w{i})", f"a{i} = Add(mm{i}, b{i})"]
        body += [f"h{i} = Relu(a{i})"]
        h = f"h{i}"
    body += [
        f"s = Shape({h})",
        "n = Gather<axis=0>(s, zero)",
        "n1 = Unsqueeze(n, axes0)",
        "target = Concat<axis=0>(n1, width)",
        f"y = Reshape({h}, target)",
    ]
    model = ir.from_onnx_text(
        '<ir_version: 8, opset_import: ["" : 17]>\n'
        "g (float[N, 16] x) => (float[N, 16] y)\n"
        "<int64 zero = {0}, int64[1] axes0 = {0}, int64[1] width = {16}>\n{\n" + "\n".join(body) + "\n}"
    )
    rng = np.random.default_rng(0)
    for i in range(LAYERS):
        for name, array in ((f"w{i}", rng.standard_normal((16, 16)) / 4), (f"b{i}", rng.standard_normal(16))):
            value = next(v for n in model.graph for v in n.inputs if v is not None and v.name == name)
            value.const_value = ir.tensor(array.astype(np.float32), name=name)
            value.shape, value.type = ir.Shape(array.shape), ir.TensorType(ir.DataType.FLOAT)
            model.graph.register_initializer(value)
    return model


class ScaleLastWeightPass(Pass):
    """Wrong on purpose: scales the last layer's weight by 1.01."""

    name = "scale-last"
    tolerance: ClassVar[Tolerance] = EXACT

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        value = model.graph.initializers[f"w{LAYERS - 1}"]
        assert value.const_value is not None
        value.const_value = ir.tensor(value.const_value.numpy() * 1.01, name=value.name)
        return ir.passes.PassResult(model, modified=True)


def test_region_verification_checks_one_region_of_each_kind() -> None:
    model = tower()
    result = optimize(model, ["noop", "matmul-add-gemm"], verify="region", verify_each=True)
    noop, gemm = result.steps
    assert (noop.status, gemm.status) == ("applied", "applied")
    # Identity removal is the same rewrite in every layer (same ops, same shapes, unchanged
    # weights): one of them is run.
    assert noop.verification.startswith(f"{LAYERS} rewritten region(s) of 1 kind(s)")
    assert gemm.verification.startswith(f"{LAYERS} rewritten region(s) of")
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(run_plain(result.model, {"x": x})["y"], run_plain(model, {"x": x})["y"], atol=1e-5)


def test_region_verification_pulls_in_the_shape_computation_of_a_reshape() -> None:
    # Removing the Cast in front of the Reshape puts the Reshape (whose target is an int64
    # tensor computed from Shape) in the region; its computation must join the region rather
    # than be replaced by random numbers.
    model = tower()
    last = model.graph.node(len(model.graph) - 1)
    assert last.op_type == "Reshape"
    source = last.inputs[0]
    assert source is not None
    cast = ir.node("Cast", [source], attributes={"to": ir.DataType.FLOAT})
    model.graph.insert_before(last, cast)
    last.replace_input_with(0, cast.outputs[0])
    result = optimize(model, ["noop"], verify="region")
    assert result.steps[0].status == "applied", result.steps[0].reason
    assert not any(n.op_type == "Cast" for n in result.model.graph)


def test_region_verification_catches_a_changed_weight() -> None:
    result = optimize(tower(), [ScaleLastWeightPass()], verify="region")  # one-shot fails, replay names it
    step = result.steps[0]
    assert step.status == "rolled back"
    assert "exceeds" in step.reason


def test_auto_verification_switches_to_regions_above_the_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    assert optimize(tower(), ["noop"]).verification.startswith("full, once after all passes")
    monkeypatch.setattr(manager_module, "REGION_VERIFY_BYTES", 1024)
    assert optimize(tower(), ["noop"]).verification.startswith("region, once after all passes")


def test_one_shot_region_check_covers_the_whole_pipeline() -> None:
    result = optimize(tower(), ["noop", "matmul-add-gemm"], verify="region")
    assert result.verification.startswith("region, once after all passes:")
    assert result.max_abs_error is not None and result.max_abs_error <= 1e-5
    assert all(s.verification == "checked once with the whole pipeline" for s in result.steps)
