"""TorchRunner: eager PyTorch behind the Runner interface, checked against ONNX Runtime."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

import torch
from torch import nn

from modelport.errors import BackendError, ConfigError, InputDtypeError, InputShapeError
from modelport.export import export_torch, parse_input_spec
from modelport.ir.specs import TensorSpec
from modelport.runners import create_runner, runner_class
from modelport.runners.onnxruntime import OrtRunner
from modelport.runners.torch import TorchRunner
from modelport.verify.compare import compare_runners
from modelport.verify.tolerance import Tolerance

pytestmark = pytest.mark.torch

TOLERANCE = Tolerance(atol=1e-4, rtol=1e-3)


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        assert self.bn.running_mean is not None and self.bn.running_var is not None
        with torch.no_grad():
            self.bn.running_mean.copy_(torch.randn(6))
            self.bn.running_var.copy_(torch.rand(6) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


class TwoOutputs(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + 1, x.sum(dim=1)


class Exploding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("boom")


TOKEN_FACTORY = """
import torch
from torch import nn


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.embed = nn.Embedding(13, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, ids, mask):
        pooled = (self.embed(ids) * mask.unsqueeze(-1)).sum(dim=1)
        return self.head(pooled)


def make():
    ids = torch.tensor([[3, 1, 12, 7, 0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]])
    return Tokens(), {"mask": mask, "ids": ids}
"""


def test_matches_onnx_runtime_on_the_exported_cnn(tmp_path: Path) -> None:
    module = ConvBN().train()
    result = export_torch(
        module,
        tmp_path / "cnn.onnx",
        inputs=[parse_input_spec("x:1x3x12x12")],
        dynamic_axes={"x": {0: "batch"}},
    )
    torch_runner = TorchRunner(module, inputs=result.inputs)
    with torch_runner, OrtRunner(result.path) as ort_runner:
        report = compare_runners(ort_runner, torch_runner, tolerance=TOLERANCE, batches=(1, 3))
        assert torch_runner.inputs == result.inputs
        assert module.training is False
    assert report.passed, report.to_dict()
    assert [run.batch for run in report.runs] == [1, 3]
    assert module.training is True


def test_factory_string_with_dict_examples_matches_onnx_runtime(tmp_path: Path) -> None:
    factory = tmp_path / "token_factory.py"
    factory.write_text(textwrap.dedent(TOKEN_FACTORY))
    axes = {"ids": {0: "batch"}, "mask": {0: "batch"}}
    result = export_torch(f"{factory}:make", tmp_path / "tokens.onnx", dynamic_axes=axes)
    assert result.passed, result.failures()

    torch_runner = TorchRunner(f"{factory}:make", dynamic_axes=axes)
    assert torch_runner.name == "make"
    with torch_runner, OrtRunner(result.path) as ort_runner:
        assert torch_runner.inputs == [
            TensorSpec("ids", np.dtype("int64"), ("batch", 5)),
            TensorSpec("mask", np.dtype("float32"), ("batch", 5)),
        ]
        assert torch_runner.describe()["inputs_passed"] == "by keyword"
        feeds: dict[str, np.ndarray[Any, Any]] = {
            "ids": np.array([[1, 2, 3, 4, 5], [12, 0, 0, 6, 6]], dtype=np.int64),
            "mask": np.ones((2, 5), dtype=np.float32),
        }
        np.testing.assert_allclose(torch_runner.infer(feeds)["output"], ort_runner.infer(feeds)["output"], atol=1e-5)


def test_registered_as_the_torch_backend() -> None:
    assert runner_class("torch") is TorchRunner
    runner = create_runner("torch", TwoOutputs(), inputs=[parse_input_spec("x:2x3")])
    assert isinstance(runner, TorchRunner)
    assert runner.backend == "torch"


def test_outputs_are_named_numpy_arrays() -> None:
    with TorchRunner(TwoOutputs(), inputs=[parse_input_spec("x:2x3")]) as runner:
        assert [s.name for s in runner.outputs] == ["output", "output_1"]
        assert [s.shape for s in runner.outputs] == [(None, None), (None,)]
        outputs = runner.infer({"x": np.zeros((2, 3), dtype=np.float32)})
    assert list(outputs) == ["output", "output_1"]
    np.testing.assert_array_equal(outputs["output"], np.ones((2, 3), dtype=np.float32))
    np.testing.assert_array_equal(outputs["output_1"], np.zeros(2, dtype=np.float32))
    assert runner.last_inference_time is not None


def test_given_output_names_are_used() -> None:
    runner = TorchRunner(TwoOutputs(), inputs=[parse_input_spec("x:1x3")], output_names=["y", "s"])
    with runner:
        assert list(runner.infer({"x": np.zeros((1, 3), dtype=np.float32)})) == ["y", "s"]


def test_read_only_feeds_are_accepted() -> None:
    x = np.ones((1, 3), dtype=np.float32)
    x.flags.writeable = False
    with TorchRunner(TwoOutputs(), inputs=[parse_input_spec("x:1x3")]) as runner:
        assert runner.infer({"x": x})["output"].tolist() == [[2.0, 2.0, 2.0]]


def test_example_shapes_are_static_unless_dynamic_axes_say_otherwise() -> None:
    examples = (torch.zeros(1, 3),)
    static = TorchRunner(TwoOutputs(), example_inputs=examples)
    with static, pytest.raises(InputShapeError, match="size 2 on axis 0"):
        static.infer({"x": np.zeros((2, 3), dtype=np.float32)})
    with TorchRunner(TwoOutputs(), example_inputs=examples, dynamic_axes={"x": {0: "n"}}) as runner:
        assert runner.infer({"x": np.zeros((2, 3), dtype=np.float32)})["output"].shape == (2, 3)


def test_feeds_are_checked_by_the_base_class() -> None:
    runner = TorchRunner(TwoOutputs(), inputs=[parse_input_spec("x:1x3")])
    with runner, pytest.raises(InputDtypeError, match=r"arr\.astype\(np\.float32\)"):
        runner.infer({"x": np.zeros((1, 3), dtype=np.float64)})


def test_not_active_is_an_error() -> None:
    runner = TorchRunner(TwoOutputs(), inputs=[parse_input_spec("x:1x3")])
    with pytest.raises(BackendError, match="torch runner for 'TwoOutputs' is not active"):
        runner.infer({"x": np.zeros((1, 3), dtype=np.float32)})


def test_without_inputs_or_examples_it_says_how_to_declare_them() -> None:
    with pytest.raises(ConfigError, match=r"does not know its inputs — pass inputs=\[TensorSpec"):
        TorchRunner(TwoOutputs()).activate()


def test_wrong_number_of_output_names() -> None:
    runner = TorchRunner(TwoOutputs(), inputs=[parse_input_spec("x:1x3")], output_names=["y"])
    with pytest.raises(ConfigError, match=r"1 output names \(y\), but forward returns 2 tensors"):
        runner.activate()
    assert not runner.is_active


def test_module_failure_is_a_backend_error_with_cause() -> None:
    module = Exploding().train()
    with pytest.raises(BackendError, match="PyTorch module 'Exploding' failed: ValueError: boom") as info:
        TorchRunner(module, inputs=[parse_input_spec("x:1x3")]).activate()
    assert isinstance(info.value.__cause__, ValueError)
    assert module.training is True


def test_bad_factory_spec_propagates_its_error() -> None:
    with pytest.raises(ConfigError, match=r"should have the form 'package\.module:function'"):
        TorchRunner("not-a-factory", inputs=[parse_input_spec("x:1x3")]).activate()
