from __future__ import annotations

from pathlib import Path

import numpy as np

from modelport.ir.serde import load
from modelport.passes import OrtFusionsPass
from modelport.passes.manager import optimize
from modelport.runners.onnxruntime import OrtRunner


def test_ort_fusions_is_for_the_onnxruntime_target_only() -> None:
    assert OrtFusionsPass.targets == frozenset({"onnxruntime"})
    assert OrtFusionsPass.may_slow


def test_ort_fusions_produces_contrib_ops_with_the_same_outputs(example_path: Path) -> None:
    model = load(example_path)
    base = optimize(model, ["noop", "conv-bn"]).model
    fused = optimize(base, [OrtFusionsPass()], target="onnxruntime", measure=False)
    step = fused.steps[0]
    assert step.status == "applied", step.reason
    assert step.nodes_after < step.nodes_before
    assert any(n.domain == "com.microsoft" and n.op_type == "FusedConv" for n in fused.model.graph)
    x = np.random.default_rng(0).standard_normal((2, 3, 96, 96)).astype(np.float32)
    with OrtRunner(base, graph_optimization="disable") as a, OrtRunner(fused.model, graph_optimization="disable") as b:
        name = a.outputs[0].name
        np.testing.assert_allclose(
            b.infer({a.inputs[0].name: x})[name], a.infer({a.inputs[0].name: x})[name], atol=1e-4, rtol=1e-4
        )


def test_ort_fusions_leaves_a_graph_it_cannot_improve(example_path: Path) -> None:
    model = load(example_path)
    once = optimize(model, [OrtFusionsPass()], target="onnxruntime", measure=False).model
    again = optimize(once, [OrtFusionsPass()], target="onnxruntime", measure=False)
    assert again.steps[0].status == "no change"
