"""modelport batch-infer: the command over the library, its output, and its errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.batch import read_results
from modelport.cli.main import main
from modelport.ir.serde import save

AFFINE = """
<ir_version: 10, opset_import: ["" : 21]>
affine (float[N, 3] x) => (float[N, 3] y)
{
    two = Constant<value = float {2.0}>()
    one = Constant<value = float {1.0}>()
    scaled = Mul(x, two)
    y = Add(scaled, one)
}
"""


def write_npy(folder: Path, count: int) -> dict[str, np.ndarray[Any, Any]]:
    """``count`` .npy files, one float32 [3] sample each."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    samples = {f"s{i}.npy": rng.standard_normal(3).astype(np.float32) for i in range(count)}
    for name, sample in samples.items():
        np.save(folder / name, sample)
    return samples


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return save(ir.from_onnx_text(AFFINE), tmp_path / "affine.onnx")


def test_help_lists_batch_infer(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["batch-infer", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--input", "--output", "--model", "--batch-size", "--ray", "--force"):
        assert flag in out


def test_json_summary_and_results(capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path) -> None:
    samples = write_npy(tmp_path / "in", 5)
    out_dir = tmp_path / "out"
    code, out, _ = run(
        capsys, "batch-infer", str(model), "--input", str(tmp_path / "in"), "--output", str(out_dir),
        "--batch-size", "2", "--json",
    )  # fmt: skip
    assert code == 0
    summary = json.loads(out)
    assert summary["rows"] == 5
    assert summary["engine"] == "local"
    assert summary["model"] == "model 'affine' version 1"
    assert summary["output"] == str(out_dir)
    results = read_results(out_dir)
    np.testing.assert_array_equal(results["y"], np.stack([samples[n] for n in sorted(samples)]) * 2 + 1)


def test_text_summary(capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path) -> None:
    write_npy(tmp_path / "in", 3)
    code, out, _ = run(
        capsys, "batch-infer", str(model), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")
    )
    assert code == 0
    assert "model 'affine' version 1: 3 rows ->" in out
    assert "local" in out


def test_errors_are_reported(
    capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_npy(tmp_path / "in", 1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x", encoding="utf-8")
    base = ["batch-infer", str(model), "--input", str(tmp_path / "in")]
    code, _, err = run(capsys, *base, "--output", str(tmp_path / "full"))
    assert code == 2
    assert "error: output folder" in err
    assert "is not empty — pass another folder, or --force" in err
    code, _, err = run(capsys, *base, "--output", str(tmp_path / "o"), "--actors", "2")
    assert code == 2
    assert "error: --ray-address and --actors apply to Ray Data runs — add --ray" in err
    code, _, err = run(capsys, "batch-infer", str(model), "--input", str(tmp_path / "none"), "--output", "o")
    assert code == 2
    assert "does not exist — pass a folder of images" in err
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, _, err = run(capsys, *base, "--output", str(tmp_path / "o"), "--ray")
    assert code == 2
    assert "Ray is not installed, and --ray needs it — install the 'ray' extra" in err
