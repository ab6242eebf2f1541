"""verify.api.compare end to end on ONNX Runtime, and ORT against a numpy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import ConfigError
from modelport.ir.serde import save
from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, Outputs
from modelport.runners.fake import FakeRunner
from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.api import DEFAULT_TOLERANCE, compare
from modelport.verify.compare import compare_runners
from modelport.verify.tolerance import EXACT, Tolerance

F32 = np.dtype("float32")


def small_model() -> ir.Model:
    """y = softmax(x @ w + b) over 4 classes, dynamic batch."""
    w = ", ".join(f"{(i % 7 - 3) * 0.25:.2f}" for i in range(12))
    return ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x) => (float[N, 4] y)
        <float[3, 4] w = {{{w}}}, float[4] b = {{0.1, -0.2, 0.3, 0.0}}>
        {{
            t = MatMul(x, w)
            u = Add(t, b)
            y = Softmax<axis = -1>(u)
        }}
        """
    )


def test_api_compare_onnxruntime_alone_passes(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "m.onnx")
    report = compare(path)
    assert report.passed, report.to_dict()
    assert report.candidate == "onnxruntime (all optimizations)"
    assert report.reference == "onnxruntime (no optimizations)"
    assert report.tolerance == DEFAULT_TOLERANCE
    assert [r.batch for r in report.runs] == [1, 2]
    assert all(d.max_abs <= 1e-6 for r in report.runs for d in r.diffs)


def test_api_compare_two_models_detects_difference(tmp_path: Path) -> None:
    ref_path = save(small_model(), tmp_path / "ref.onnx")
    changed = small_model()
    changed.graph.initializers["b"].const_value = ir.tensor(np.zeros(4, np.float32))
    cand_path = save(changed, tmp_path / "cand.onnx")
    report = compare(cand_path, ref_path, batches=(3,), tolerance=Tolerance(1e-5, 1e-5))
    assert report.candidate == "A (onnxruntime)"
    assert report.reference == "B (onnxruntime)"
    assert not report.passed
    assert report.runs[0].batch == 3
    assert report.runs[0].diffs[0].max_abs > 1e-3


def test_api_compare_in_memory_model_matches_itself() -> None:
    report = compare(small_model(), small_model(), batches=(1,), tolerance=EXACT)
    assert report.passed


def test_api_compare_rejects_bad_backend_choices(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=r"give one or two backends, got \[\]"):
        compare(path, backends=())
    with pytest.raises(ConfigError, match=r"comparing one model needs two backends"):
        compare(path, backends=("torch",))


def test_ort_against_numpy_reference(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "m.onnx")
    w = np.array([(i % 7 - 3) * 0.25 for i in range(12)], np.float32).reshape(3, 4)
    b = np.array([0.1, -0.2, 0.3, 0.0], np.float32)

    def numpy_softmax(feeds: Feeds) -> Outputs:
        u = feeds["x"] @ w + b
        e = np.exp(u - u.max(axis=-1, keepdims=True))
        return {"y": (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)}

    numpy_runner = FakeRunner(numpy_softmax, [TensorSpec("x", F32, ("N", 3))], [TensorSpec("y", F32, ("N", 4))])
    with OrtRunner(path) as cand, numpy_runner as ref:
        report = compare_runners(cand, ref, tolerance=Tolerance(1e-6, 1e-5), batches=(1, 5))
    assert report.passed, report.to_dict()
