from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import PassError
from modelport.ir.serde import load
from modelport.passes import Pass, create_pass
from modelport.passes.manager import model_stats, optimize, require_verified
from modelport.verify.tolerance import EXACT, Tolerance


class ScaleWeightsPass(Pass):
    """A deliberately wrong pass: multiplies one initializer by 1.5."""

    name = "broken-scale"
    tolerance: ClassVar[Tolerance] = EXACT

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        value = next(iter(model.graph.initializers.values()))
        assert value.const_value is not None
        value.const_value = ir.tensor(value.const_value.numpy() * 1.5, name=value.name)
        return ir.passes.PassResult(model, modified=True)


class CrashingPass(Pass):
    name = "crash"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        raise RuntimeError("boom")


def test_example_model_is_optimized_and_verified(example_path: Path) -> None:
    model = load(example_path)
    result = optimize(model)
    statuses = {s.name: s.status for s in result.steps}
    assert statuses["conv-bn"] == "applied"
    assert statuses["noop"] == "applied"
    ops = {n.op_type for n in result.model.graph}
    assert "BatchNormalization" not in ops and "Dropout" not in ops and "Identity" not in ops
    assert result.nodes_after < result.nodes_before
    assert (result.nodes_after, result.bytes_after) == model_stats(result.model)
    assert result.verified_batches == [1, 2]
    assert all(s.max_abs_error is None or s.max_abs_error < 1e-3 for s in result.steps)
    assert sum(1 for n in model.graph if n.op_type == "BatchNormalization") == 20  # input untouched


def test_a_pass_that_changes_outputs_is_rolled_back(example_path: Path) -> None:
    model = load(example_path)
    result = optimize(model, [ScaleWeightsPass(), create_pass("noop")])
    broken = result.steps[0]
    assert broken.status == "rolled back"
    assert "exceeds" in broken.reason
    assert result.steps[1].status == "applied"
    with pytest.raises(PassError, match="broken-scale"):
        require_verified(result)
    # The returned model is the input minus the no-ops, bit for bit on the weights.
    original = {k: v.const_value.numpy() for k, v in model.graph.initializers.items() if v.const_value is not None}
    for name, value in result.model.graph.initializers.items():
        assert value.const_value is not None
        np.testing.assert_array_equal(value.const_value.numpy(), original[name])


def test_a_crashing_pass_is_reported_and_skipped(example_path: Path) -> None:
    result = optimize(load(example_path), [CrashingPass()])
    assert result.steps[0].status == "failed"
    assert "boom" in result.steps[0].reason


def test_unknown_pass_name() -> None:
    with pytest.raises(PassError, match="unknown pass 'fold-everything'"):
        create_pass("fold-everything")
