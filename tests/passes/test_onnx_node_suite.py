"""Every node test that ships with the installed onnx package goes through the optimizer.

The onnx wheel ships the generators of its backend node tests (``onnx.backend.test.case.node``:
model, inputs and expected outputs for every operator and its variants). For each case the
original model is run in ONNX Runtime (graph optimizations off), the whole default pipeline is
applied with verification OFF — so what is tested is the passes themselves, not the safety net —
and the optimized model must still run and give the same outputs. Cases ONNX Runtime cannot run
in their original form are counted, not tested.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from typing import Any

import numpy as np
import pytest

from modelport.ir.serde import from_bytes, to_bytes
from modelport.passes.manager import optimize

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
# Half precision: one unit in the last place near 1.0 (a folded constant may round differently).
TOLERANCE_HALF = {"atol": 1e-3, "rtol": 1e-3}


@pytest.fixture(scope="module")
def node_cases() -> list[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases

        with np.errstate(all="ignore"):
            return list(collect_testcases(None))


def _session(data: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _run(data: bytes, names: list[str], inputs: list[Any]) -> list[Any]:
    session = _session(data)
    feeds = {name: value for name, value in zip(names, inputs, strict=False) if value is not None}
    return list(session.run(None, feeds))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        return (
            isinstance(a, list | tuple)
            and isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    if a is None or b is None:
        return a is None and b is None
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        return False
    if x.dtype.kind in "fc":
        tolerance = TOLERANCE_HALF if x.dtype == np.float16 else TOLERANCE
        return bool(np.allclose(x, y, equal_nan=True, **tolerance))
    return bool(np.array_equal(x, y))


def test_optimizer_keeps_every_onnx_node_test_correct(node_cases: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    counts: Counter[str] = Counter()
    failures: list[str] = []
    for case in node_cases:
        proto = case.model
        data = proto.SerializeToString()
        names = [v.name for v in proto.graph.input]
        inputs, _expected = case.data_sets[0]
        try:
            reference = _run(data, names, list(inputs))
        except Exception:
            counts["ORT cannot run the original"] += 1
            continue
        try:
            result = optimize(from_bytes(data), verify="off", measure=False)
            optimized = to_bytes(result.model)
        except Exception as e:
            failures.append(f"{case.name}: optimizer crashed: {type(e).__name__}: {e}")
            continue
        try:
            got = _run(optimized, names, list(inputs))
        except Exception as e:
            failures.append(f"{case.name}: the optimized model does not run: {e}")
            continue
        if not _same(got, reference):
            failures.append(f"{case.name}: outputs changed")
            continue
        counts["changed and still correct" if result.nodes_after != result.nodes_before else "unchanged"] += 1
    print(f"onnx node tests: {len(node_cases)} cases, {dict(counts)}, {len(failures)} failures")
    assert not failures, "\n".join(failures[:20])
    assert counts["unchanged"] + counts["changed and still correct"] > 1000
