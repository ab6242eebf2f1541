from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.cli.main import main
from modelport.deploy.example import example_calibration
from modelport.ir.serde import save


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_start_imports_nothing_heavy() -> None:
    code = (
        "import sys, modelport.cli.main as m; m.build_parser(); "
        "print(sorted(x for x in ('onnx', 'onnxruntime', 'torch', 'onnx_ir', 'numpy') if x in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in (
        "inspect",
        "export",
        "optimize",
        "surgery",
        "quantize",
        "compare",
        "bench",
        "serve",
        "deploy",
    ):
        assert command in out


def test_inspect_json(capsys: pytest.CaptureFixture[str], example_path: Path) -> None:
    code, out, _ = run(capsys, "inspect", str(example_path), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["inputs"][0] == {"name": "image", "dtype": "float32", "shape": ["batch", 3, 96, 96]}
    assert data["op_histogram"]["BatchNormalization"] == 20
    assert data["macs"] > 0
    assert data["quantization"] == "none"


def test_inspect_table(capsys: pytest.CaptureFixture[str], example_path: Path) -> None:
    code, out, _ = run(capsys, "inspect", str(example_path))
    assert code == 0
    assert "image" in out and "MACs" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"", "is empty"), (b'{"not": "onnx"}', "is not an ONNX model")],
)
def test_bad_model_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run(capsys, "inspect", str(path))
    assert code == 2
    assert message in err


def test_truncated_model(capsys: pytest.CaptureFixture[str], tmp_path: Path, example_path: Path) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes(example_path.read_bytes()[: example_path.stat().st_size // 2])
    code, _, err = run(capsys, "inspect", str(path))
    assert code == 2
    assert "truncated" in err or "corrupt" in err


def test_optimize_writes_and_refuses_to_overwrite_the_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, example_path: Path
) -> None:
    out_path = tmp_path / "opt.onnx"
    code, out, _ = run(capsys, "optimize", str(example_path), "-o", str(out_path), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["nodes_after"] < data["nodes_before"]
    assert out_path.exists()
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(example_path.read_bytes())
    before = copy.read_bytes()
    code, _, err = run(capsys, "optimize", str(copy), "-o", str(copy))
    assert code == 2
    assert "refusing to overwrite the input model" in err
    assert copy.read_bytes() == before
    code, _, _ = run(capsys, "optimize", str(copy), "-o", str(copy), "--in-place")
    assert code == 0


def test_compare_match_and_mismatch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = '<ir_version: 8, opset_import: ["" : 17]> g (float[N, 4] x) => (float[N, 4] y) { y = %s(x) }'
    save(ir.from_onnx_text(text % "Relu"), tmp_path / "a.onnx")
    save(ir.from_onnx_text(text % "Relu"), tmp_path / "b.onnx")
    save(ir.from_onnx_text(text % "Abs"), tmp_path / "c.onnx")
    code, out, _ = run(capsys, "compare", str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx"), "--batch", "1,4")
    assert code == 0
    assert "outputs match" in out
    code, out, _ = run(capsys, "compare", str(tmp_path / "a.onnx"), str(tmp_path / "c.onnx"), "--json")
    assert code == 1
    data = json.loads(out)
    assert data["passed"] is False
    assert data["runs"][0]["outputs"][0]["max_abs"] > 0.1


def test_bench_json(capsys: pytest.CaptureFixture[str], example_path: Path) -> None:
    code, out, _ = run(
        capsys, "bench", str(example_path), "--batch", "1,2", "--iterations", "5", "--max-windows", "1", "--json"
    )
    assert code == 0
    data = json.loads(out)["results"]
    assert [r["batch"] for r in data] == [1, 2]
    assert all(r["iterations"] == 5 and r["min_ms"] <= r["median_ms"] <= r["max_ms"] for r in data)


def test_bad_arguments(capsys: pytest.CaptureFixture[str], example_path: Path) -> None:
    for args, message in (
        (["bench", str(example_path), "--batch", "one"], "must be integers separated by commas"),
        (["compare", str(example_path), "--dim", "seq=abc"], "--dim sizes must be positive integers"),
        (["compare", str(example_path), "--int-range", "ids=5:1"], "needs LO < HI"),
    ):
        assert main(args) == 2
        assert message in capsys.readouterr().err


def test_quantize_needs_calibration_and_works_with_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, example_path: Path
) -> None:
    code, _, err = run(
        capsys,
        "quantize",
        str(example_path),
        "--mode",
        "int8-static",
        "-o",
        str(tmp_path / "q.onnx"),
    )
    assert code == 2
    assert "needs calibration data" in err
    np.save(tmp_path / "calib.npy", example_calibration(8))
    code, out, _ = run(
        capsys,
        "quantize",
        str(example_path),
        "--mode",
        "int8-static",
        "--calib",
        str(tmp_path / "calib.npy"),
        "-o",
        str(tmp_path / "q.onnx"),
        "--json",
        "--allow-slower",
    )
    data = json.loads(out)
    assert code == 0, data["warnings"]
    assert data["worst_sqnr_db"] > 25
    assert (tmp_path / "q.onnx").exists()


@pytest.mark.slow
def test_deploy_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "deploy", "-o", str(tmp_path / "d"), "--bench-seconds", "0.4")
    assert code == 0
    assert "chosen:" in out
    assert (tmp_path / "d" / "report.md").exists()
    assert (tmp_path / "d" / "repository" / "example_resnet" / "1" / "model.onnx").exists()


def calibration_samples() -> Iterator[dict[str, np.ndarray[Any, Any]]]:
    """A calibration reader named on the command line as test_cli:calibration_samples."""
    for image in example_calibration(6):
        yield {"image": image[None]}


def test_quantize_entry_point_method_cache_sensitivity_and_budget(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, example_path: Path
) -> None:
    args = ["quantize", str(example_path), "--mode", "int8-static", "--calib", "test_cli:calibration_samples"]
    args += ["--method", "entropy", "--cache-dir", str(tmp_path / "cache"), "--allow-slower", "--batch", "2"]
    code, out, err = run(capsys, *args, "--sensitivity", "--min-sqnr", "15", "-o", str(tmp_path / "q.onnx"))
    assert code == 0, err
    assert "calibrated: entropy, 6 samples" in out
    assert "per-layer sensitivity" in out and "accuracy budget met" in out
    code, out, _ = run(capsys, *args, "-o", str(tmp_path / "q2.onnx"), "--json")
    data = json.loads(out)
    assert data["calibration"]["from_cache"] is True and data["calibration"]["method"] == "entropy"


def test_quantize_budget_arguments_must_agree(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, example_path: Path
) -> None:
    base = ["quantize", str(example_path), "--mode", "int8-static", "-o", str(tmp_path / "q.onnx")]
    code, _, err = run(capsys, *base, "--min-sqnr", "30", "--max-drop", "0.01")
    assert code == 2 and "give one accuracy budget" in err
    code, _, err = run(capsys, *base, "--max-drop", "0.01")
    assert code == 2 and "needs both --data PATH and --max-drop" in err


def test_quantize_task_budget_prints_the_accuracy_and_the_samples_that_changed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, example_path: Path
) -> None:
    images = example_calibration(8)
    from modelport.runners.onnxruntime import OrtRunner

    with OrtRunner(str(example_path)) as fp32:
        labels = fp32.infer({"image": images})["logits"].argmax(axis=1)
    np.savez(tmp_path / "data.npz", image=images, labels=labels)
    np.save(tmp_path / "calib.npy", images)
    args = ["quantize", str(example_path), "--mode", "int8-static", "--calib", str(tmp_path / "calib.npy")]
    args += ["--data", str(tmp_path / "data.npz"), "--max-drop", "0.5", "--allow-slower", "--batch", "2"]
    code, out, err = run(capsys, *args, "-o", str(tmp_path / "q.onnx"))
    assert code == 0, err
    assert "accuracy budget met" in out
    assert "top1 on 8 samples: FP32 1.0000" in out
