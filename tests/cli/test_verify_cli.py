"""modelport verify: exit codes (0 pass, 1 fail, 2 bad input), --json, --report and --html files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from modelport.cli.main import main
from modelport.ir.serde import save


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["verify", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def model(body: str, out_type: str = "float[N, 4] y") -> ir.Model:
    return ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => ({out_type})
        <int64[2] rows_first = {{4, -1}}>
        {{
            two = Constant<value = float {{2.0}}>()
            {body}
        }}
        """
    )


@pytest.fixture
def models(tmp_path: Path) -> dict[str, str]:
    paths = {
        "good": model("y = Mul(x, two)"),
        "mixing": model("t = Reshape(x, rows_first)\nu = Transpose<perm = [1, 0]>(t)\ny = Mul(u, two)"),
        "q0": model("s = Mul(x, two)\nq = Cast<to = 2>(s)", "uint8[N, 4] q"),
        "q1": model("s = Mul(x, two)\nt = Add(s, two)\nq = Cast<to = 2>(t)", "uint8[N, 4] q"),
    }
    return {key: str(save(m, tmp_path / f"{key}.onnx")) for key, m in paths.items()}


def test_passing_model_exits_zero(capsys: pytest.CaptureFixture[str], models: dict[str, str]) -> None:
    code, out, _ = run(capsys, models["good"], "--batch", "1,2")
    assert code == 0
    assert "PASS: 4 comparisons within tolerance" in out
    assert "batch consistency: 4 of 4 checks pass" in out


def test_batch_bug_exits_one_with_findings(capsys: pytest.CaptureFixture[str], models: dict[str, str]) -> None:
    code, out, _ = run(capsys, models["mixing"], models["good"], "--fill", "realistic")
    assert code == 1
    assert "FAIL: 2 problems found" in out
    assert "passes at batch 1 but fails at batch 4" in " ".join(out.split())


def test_json_report_and_html_files(capsys: pytest.CaptureFixture[str], models: dict[str, str], tmp_path: Path) -> None:
    report, html = tmp_path / "out.json", tmp_path / "out.html"
    code, out, _ = run(capsys, models["mixing"], models["good"], "--json", "--report", str(report), "--html", str(html))
    assert code == 1
    printed = json.loads(out)
    written = json.loads(report.read_text())
    assert printed == written
    assert written["passed"] is False
    assert [r["batch"] for r in written["outputs"]["generated"]] == [1, 1, 4, 4]
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert 'id="batch-consistency"' in page and "<svg" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "good.onnx",
        "mixing.onnx",
        "out.html",
        "out.json",
        "q0.onnx",
        "q1.onnx",
    ]


def test_integer_outputs_and_lsb_option(capsys: pytest.CaptureFixture[str], models: dict[str, str]) -> None:
    code, out, _ = run(capsys, models["q1"], models["q0"], "--batch", "1", "--fill", "ones")
    assert code == 1
    assert "4 elements differ by up to 2 LSB" in " ".join(out.split())
    code, _, _ = run(capsys, models["q1"], models["q0"], "--batch", "1", "--fill", "ones", "--lsb", "2")
    assert code == 0


def test_user_data_with_labels(capsys: pytest.CaptureFixture[str], models: dict[str, str], tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    data = tmp_path / "d.npz"
    np.savez(data, x=x, labels=np.argmax(x, axis=1))
    code, out, _ = run(capsys, models["good"], "--batch", "1", "--data", str(data), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["outputs"]["data"]["samples"] == 6
    assert result["accuracy"]["metric"] == "top1"
    assert result["accuracy"]["candidate_score"] == 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fill", "noise"], "error: --fill 'noise': unknown noise — choose from realistic, random, ones, zeros"),
        (["--batch", "1,x"], "error: --batch '1,x' must be integers separated by commas"),
        (["--batch", "0"], "error: --batch '0' must list sizes >= 1"),
        (["--dim", "seq"], "error: --dim 'seq' is not of the form LABEL=SIZE"),
        (["--metric", "top1"], "error: metric 'top1' needs data to score"),
        (["--atol", "-1"], "error: tolerances must be >= 0"),
        (["--lsb", "-1"], "error: the integer tolerance must be >= 0 LSB"),
        (["--data", "missing.npz"], "error: data 'missing.npz' does not exist"),
    ],
)
def test_bad_input_exits_two(
    capsys: pytest.CaptureFixture[str], models: dict[str, str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, models["good"], "--batch", "1", *argv)
    assert code == 2
    assert message in err


def test_missing_model_exits_two(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope.onnx"))
    assert code == 2
    assert "does not exist" in err


def test_report_into_missing_folder_exits_two(
    capsys: pytest.CaptureFixture[str], models: dict[str, str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, models["good"], "--batch", "1", "--report", str(tmp_path / "no" / "r.json"))
    assert code == 2
    assert "does not exist — create it" in err
