"""export_torch: legacy and dynamo exports, validated against eager PyTorch in ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import torch
from export_models import (
    VOCAB,
    BatchScaled,
    MaskedPool,
    TokenClassifier,
    TwoHeads,
    small_cnn,
)
from torch import nn

from modelport.errors import ConfigError, ExportError
from modelport.export import (
    export_torch,
    parse_dynamic_axes,
    parse_input_spec,
)
from modelport.ir.serde import load
from modelport.ir.specs import TensorSpec
from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.tolerance import Tolerance

pytestmark = pytest.mark.torch

IMAGE = parse_input_spec("x:1x3x16x16")
BATCH = {"x": {0: "batch"}}


def test_legacy_export_with_dynamic_batch_validates_at_batch_1_and_2(tmp_path: Path) -> None:
    model = small_cnn()
    result = export_torch(model, tmp_path / "cnn.onnx", inputs=[IMAGE], dynamic_axes=BATCH)

    assert result.passed, result.failures()
    assert [c.batch for c in result.comparisons] == [1, 2]
    assert result.second_batch_skipped is None
    assert all(d.max_abs < 1e-4 for c in result.comparisons for d in c.diffs)
    assert result.inputs == [TensorSpec("x", np.dtype("float32"), ("batch", 3, 16, 16))]
    assert [s.name for s in result.outputs] == ["output"]
    assert result.opset == 17
    assert load(result.path).graph.inputs[0].name == "x"
    # Exported in eval mode (the BatchNorm running stats were used), then left as it was found.
    assert model.training


def test_export_matches_an_independent_onnx_runtime_run(tmp_path: Path) -> None:
    model = small_cnn().eval()
    result = export_torch(model, tmp_path / "cnn.onnx", inputs=[IMAGE], dynamic_axes=BATCH)
    x = np.random.default_rng(7).standard_normal((3, 3, 16, 16)).astype(np.float32)
    with OrtRunner(result.path) as runner:
        got = runner.infer({"x": x})["output"]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


def test_symbolic_dims_in_input_specs_become_dynamic_axes(tmp_path: Path) -> None:
    spec = TensorSpec("x", np.dtype("float32"), ("n", 3, 16, 16))
    result = export_torch(small_cnn(), tmp_path / "cnn.onnx", inputs=[spec])

    assert result.passed, result.failures()
    assert result.inputs == [spec]
    assert [c.batch for c in result.comparisons] == [1, 2]


def test_static_batch_axis_checks_only_the_example_and_says_why(tmp_path: Path) -> None:
    result = export_torch(small_cnn(), tmp_path / "static.onnx", inputs=[IMAGE])

    assert result.passed
    assert [c.batch for c in result.comparisons] == [1]
    assert result.second_batch_skipped is not None
    assert "static batch axis (1)" in result.second_batch_skipped
    assert "--dynamic-axis x:0=batch" in result.second_batch_skipped
    assert result.inputs[0].shape == (1, 3, 16, 16)


def test_int64_token_input_gets_valid_ids_and_dynamic_batch_and_sequence(tmp_path: Path) -> None:
    axes = parse_dynamic_axes(["ids:0=batch,1=seq"])
    result = export_torch(
        TokenClassifier(),
        tmp_path / "tokens.onnx",
        inputs=[parse_input_spec("ids:1x7:int64")],
        dynamic_axes=axes,
    )

    assert result.passed, result.failures()
    assert result.inputs == [TensorSpec("ids", np.dtype("int64"), ("batch", "seq"))]
    assert [c.batch for c in result.comparisons] == [1, 2]
    assert result.comparisons[1].inputs["ids"] == {"shape": [2, 7], "dtype": "int64"}


def test_two_outputs_keep_their_names_and_the_report_is_json(tmp_path: Path) -> None:
    result = export_torch(
        TwoHeads(),
        tmp_path / "two.onnx",
        inputs=[parse_input_spec("x:1x6")],
        output_names=["logits", "features"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
    )

    assert result.passed, result.failures()
    assert [s.name for s in result.outputs] == ["logits", "features"]
    assert [d.name for d in result.comparisons[1].diffs] == ["logits", "features"]
    report = json.loads(json.dumps(result.to_dict()))
    assert report["passed"] is True
    assert report["outputs"][0] == {"name": "logits", "dtype": "float32", "shape": ["batch", 2]}


def test_default_output_names_count_the_outputs(tmp_path: Path) -> None:
    result = export_torch(TwoHeads(), tmp_path / "two.onnx", inputs=[parse_input_spec("x:2x6")])
    assert [s.name for s in result.outputs] == ["output", "output_1"]


def test_dict_example_inputs_are_passed_by_keyword(tmp_path: Path) -> None:
    examples = {
        "mask": torch.tensor([[1.0, 1.0, 0.0, 1.0]]),
        "ids": torch.tensor([[1, 4, 9, 2]]),
    }
    result = export_torch(
        MaskedPool(),
        tmp_path / "masked.onnx",
        example_inputs=examples,
        dynamic_axes={"ids": {0: "batch"}, "mask": {0: "batch"}},
    )

    assert result.passed, result.failures()
    # forward's parameter order, whatever the dict's order.
    assert [s.name for s in result.inputs] == ["ids", "mask"]
    assert [c.batch for c in result.comparisons] == [1, 2]


def test_dynamo_export_validates_at_batch_1_and_2(tmp_path: Path) -> None:
    model = small_cnn()
    result = export_torch(
        model,
        tmp_path / "cnn.onnx",
        inputs=[IMAGE],
        dynamic_axes=BATCH,
        exporter="dynamo",
        opset=18,
    )

    assert result.passed, result.failures()
    assert result.exporter == "dynamo"
    assert result.opset == 18
    assert [c.batch for c in result.comparisons] == [1, 2]
    assert result.inputs[0].shape == ("batch", 3, 16, 16)
    assert model.training


def test_batch_dependent_constant_is_caught_at_the_second_batch(tmp_path: Path) -> None:
    result = export_torch(
        BatchScaled(),
        tmp_path / "scaled.onnx",
        inputs=[parse_input_spec("x:1x4")],
        dynamic_axes=BATCH,
    )

    assert not result.passed
    first, second = result.comparisons
    assert (first.batch, first.passed) == (1, True)
    assert (second.batch, second.passed) == (2, False)
    assert any(w.startswith("TracerWarning") for w in result.warnings)
    with pytest.raises(ExportError, match=r"batch 2, output 'output': max abs [0-9.]+") as info:
        result.raise_for_mismatch()
    assert "matches at batch 1 but not at batch 2" in str(info.value)


def test_dynamo_reports_a_requested_dynamic_axis_that_came_out_static(tmp_path: Path) -> None:
    result = export_torch(
        BatchScaled(),
        tmp_path / "scaled.onnx",
        inputs=[parse_input_spec("x:1x4")],
        dynamic_axes=BATCH,
        exporter="dynamo",
        opset=18,
    )

    assert not result.passed
    assert result.problems == [
        "axis 0 of 'x' was asked to be dynamic ('batch'), but the model fixes it to 1 — forward "
        "ties that size to a constant (e.g. int(x.shape[0]) or a size check)"
    ]
    assert result.second_batch_skipped is not None
    assert "although dynamic_axes asked" in result.second_batch_skipped
    with pytest.raises(ExportError, match="asked to be dynamic"):
        result.raise_for_mismatch()


def test_raise_for_mismatch_is_silent_when_the_export_passed(tmp_path: Path) -> None:
    result = export_torch(TokenClassifier(), tmp_path / "t.onnx", inputs=[parse_input_spec("ids:1x5:int64")])
    result.raise_for_mismatch()


def test_a_tolerance_of_zero_reports_the_atol_that_would_pass(tmp_path: Path) -> None:
    result = export_torch(small_cnn(), tmp_path / "cnn.onnx", inputs=[IMAGE], tolerance=Tolerance(0.0, 0.0))
    diff = result.comparisons[0].diffs[0]
    if diff.passed:
        pytest.skip("ONNX Runtime happened to reproduce PyTorch bit for bit")
    with pytest.raises(ExportError, match="needs atol >= "):
        result.raise_for_mismatch()


def test_exporter_failure_is_wrapped_with_cause_and_hint(tmp_path: Path) -> None:
    class Spectrum(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            spectrum: torch.Tensor = torch.fft.fft(x)
            return spectrum.real

    with pytest.raises(ExportError, match=r"legacy exporter failed on Spectrum.*try exporter='dynamo'") as info:
        export_torch(Spectrum(), tmp_path / "fft.onnx", inputs=[parse_input_spec("x:1x8")])
    assert info.value.__cause__ is not None
    assert not (tmp_path / "fft.onnx").exists()


def test_forward_failing_on_the_example_inputs_names_them(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"TwoHeads fails on the example inputs \(x: float32 \[1, 5\]\)") as info:
        export_torch(TwoHeads(), tmp_path / "x.onnx", inputs=[parse_input_spec("x:1x5")])
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "no example inputs: give input specs"),
        ({"inputs": [IMAGE], "exporter": "onnxscript"}, "unknown exporter 'onnxscript'"),
        ({"inputs": [IMAGE], "second_batch": 0}, "second_batch must be at least 1"),
        (
            {"inputs": [IMAGE], "dynamic_axes": {"y": {0: "b"}}},
            "names 'y', which is neither an input",
        ),
        (
            {"inputs": [IMAGE], "dynamic_axes": {"x": {4: "b"}}},
            "axis 4 of input 'x' does not exist",
        ),
        ({"inputs": [IMAGE], "output_names": ["a", "b"]}, "2 output names .* forward returns 1"),
        (
            {
                "inputs": [parse_input_spec("x:1x3x8x8")],
                "example_inputs": torch.zeros(1, 3, 16, 16),
            },
            r"example input 'x' is float32 \[1, 3, 16, 16\], but its spec says "
            r"float32 \[1, 3, 8, 8\]",
        ),
        (
            {"inputs": [IMAGE, IMAGE], "example_inputs": torch.zeros(1, 3, 16, 16)},
            "2 input specs .* for 1 example inputs",
        ),
        ({"example_inputs": [torch.zeros(1), "text"]}, "example input 1 is a str"),
    ],
)
def test_inconsistent_arguments_are_config_errors(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        export_torch(small_cnn(), tmp_path / "x.onnx", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "x.onnx").exists()


def test_integer_examples_from_specs_stay_inside_the_smallest_embedding(tmp_path: Path) -> None:
    # With the default range [0, 16) an 11-row embedding would read out of bounds.
    assert VOCAB < 16
    result = export_torch(TokenClassifier(), tmp_path / "t.onnx", inputs=[parse_input_spec("ids:4x64:int64")])
    assert result.passed
