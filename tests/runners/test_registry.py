"""The backend registry: names resolved lazily to Runner classes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from modelport import runners
from modelport.errors import BackendError
from modelport.ir.serde import save
from modelport.runners import BACKENDS, create_runner, runner_class
from modelport.runners.onnxruntime import OrtRunner


def test_builtin_backends_are_strings() -> None:
    assert BACKENDS["onnxruntime"] == "modelport.runners.onnxruntime:OrtRunner"
    assert BACKENDS["openvino"] == "modelport.runners.openvino:OpenVinoRunner"
    assert "torch" in BACKENDS


def test_resolving_openvino_does_not_import_openvino() -> None:
    # The runner module is light: openvino itself is imported on activation (fresh interpreter,
    # since other tests may have imported it already).
    code = (
        "import sys; from modelport.runners import runner_class; "
        "cls = runner_class('openvino'); print(cls.backend, 'openvino' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["openvino", "False"]


def test_runner_class_resolves_onnxruntime() -> None:
    assert runner_class("onnxruntime") is OrtRunner


def test_unknown_backend_lists_choices() -> None:
    with pytest.raises(
        BackendError,
        match=r"unknown backend 'tensorrtt' — choose one of: .*onnxruntime, onnxruntime-cuda, onnxruntime-trt, open",
    ):
        runner_class("tensorrtt")


def test_create_runner_unknown_backend() -> None:
    with pytest.raises(BackendError, match="unknown backend 'nope' — choose one of"):
        create_runner("nope", "model.onnx")


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(runners.BACKENDS, "ghost", "modelport_ghost_engine_xyz:GhostRunner")
    with pytest.raises(
        BackendError,
        match=r"backend 'ghost' needs a package that is not installed \(modelport_ghost_engine_xyz\)"
        r" — install it, e\.g\. pip install 'modelport\[ghost\]'",
    ):
        runner_class("ghost")


def test_create_runner_passes_options(tmp_path: Path) -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x) => (float[N, 3] y)
        {
            y = Neg(x)
        }
        """
    )
    path = save(model, tmp_path / "neg.onnx")
    runner = create_runner("onnxruntime", path, graph_optimization="disable", intra_op_threads=1)
    assert isinstance(runner, OrtRunner)
    assert not runner.is_active
    assert runner.name == "neg"
    assert runner.describe()["graph_optimization"] == "disable"
    with runner:
        x = np.array([[1.0, -2.0, 0.5]], np.float32)
        np.testing.assert_array_equal(runner.infer({"x": x})["y"], -x)
