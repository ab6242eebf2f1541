"""modelport debug reduce and bisect through the real entry point: summaries, JSON, saved reproducer, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from modelport.cli.main import main
from modelport.ir.serde import load, save
from modelport.runners.onnxruntime import OrtRunner

# The Log reads only negative numbers: NaN from finite inputs, carried to the output.
TEXT = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 4] y) {
    a = Abs(x)
    n = Neg(a)
    one = Constant<value = float {1.0}>()
    s = Sub(n, one)
    l = Log(s)
    r = Relu(l)
    y = Add(r, x)
}"""


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    model = ir.from_onnx_text(TEXT)
    for node in model.graph:
        node.name = node.outputs[0].name
    return save(model, tmp_path / "model.onnx")


def test_reduce_json_writes_the_reproducer_and_its_inputs(
    capsys: pytest.CaptureFixture[str], model_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "repro.onnx"
    code = main(["debug", "reduce", str(model_path), "--check", "nan", "-o", str(out), "--batch", "3", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["nodes"] == [{"name": "l", "op_type": "Log"}]
    assert report["inputs"] == ["s"] and report["outputs"] == ["l"]
    assert report["original_nodes"] == 7 and report["check"] == "nan:onnxruntime"
    assert report["checks_run"] == len(report["steps"]) and report["steps"][0]["phase"] == "original"
    assert report["output"] == str(out) and report["feeds"] == str(tmp_path / "repro.feeds.npz")
    with np.load(tmp_path / "repro.feeds.npz") as saved:
        s = saved["s"]
    assert s.shape == (3, 4) and bool((s <= -1).all())  # --batch 3, and the values the original computes
    with OrtRunner(out) as runner:
        assert np.isnan(runner.infer({"s": s})["l"]).all()
    assert [n.op_type for n in load(model_path).graph] == ["Abs", "Neg", "Constant", "Sub", "Log", "Relu", "Add"]


def test_reduce_prints_a_summary(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, model_path: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps at 80 columns otherwise
    out = tmp_path / "repro.onnx"
    assert main(["debug", "reduce", str(model_path), "--check", "nan", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "7 → 1 nodes still failing" in text
    assert "output 'l' holds 4 NaN and 0 Inf of 4 values" in text
    assert f"wrote {out} and its inputs {tmp_path / 'repro.feeds.npz'}" in text


def test_debug_without_a_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["debug"]) == 2
    assert "reduce" in capsys.readouterr().out


def test_reduce_errors(capsys: pytest.CaptureFixture[str], model_path: Path, tmp_path: Path) -> None:
    before = model_path.read_bytes()
    assert main(["debug", "reduce", str(model_path), "--check", "nan", "-o", str(model_path)]) == 2
    assert "error: refusing to overwrite the input model" in capsys.readouterr().err
    assert model_path.read_bytes() == before
    out = str(tmp_path / "repro.onnx")
    assert main(["debug", "reduce", str(model_path), "--check", "nann", "-o", out]) == 2
    assert "error: unknown check 'nann'" in capsys.readouterr().err
    assert main(["debug", "reduce", str(model_path), "--check", "error", "-o", out]) == 2
    assert "error: the original model does not fail the check error:onnxruntime" in capsys.readouterr().err
    assert main(["debug", "reduce", str(model_path), "--check", "nan", "-o", out, "--batch", "1,2"]) == 2
    assert "reduce runs at one batch size" in capsys.readouterr().err
    assert not Path(out).exists()


# ------------------------------------------------------------------------------------------ bisect

CHAIN = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 4] y) <float k = {K}> {
    a = Relu(x)
    b = Mul(a, k)
    c = Sigmoid(b)
    y = Add(c, x)
}"""


def _chain(folder: Path, name: str, k: float) -> Path:
    model = ir.from_onnx_text(CHAIN.replace("{K}", f"{{{k}}}"))
    for node in model.graph:
        node.name = f"{node.op_type.lower()}_node"
    return save(model, folder / name)


def test_bisect_names_the_layer_and_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good, bad = _chain(tmp_path, "good.onnx", 2.0), _chain(tmp_path, "bad.onnx", 2.2)
    assert main(["debug", "bisect", str(bad), str(good)]) == 1
    out = capsys.readouterr().out
    assert "first divergence at 'b'" in out and "Mul 'mul_node'" in out
    assert "bad.onnx (onnxruntime)" in out


def test_bisect_json_and_agreeing_models_exit_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good, same = _chain(tmp_path, "good.onnx", 2.0), _chain(tmp_path, "same.onnx", 2.0)
    assert main(["debug", "bisect", str(same), str(good), "--json", "--batch", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["diverged"] is False and data["first"] is None and data["runs_per_side"] == 1
    bad = _chain(tmp_path, "bad.onnx", 2.2)
    assert main(["debug", "bisect", str(bad), str(good), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["candidate_nodes"] == [{"name": "mul_node", "op": "Mul"}]


def test_bisect_on_user_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good, bad = _chain(tmp_path, "good.onnx", 2.0), _chain(tmp_path, "bad.onnx", 2.2)
    # Negative inputs only: the Relu zeroes them, so the Mul's change never shows.
    np.savez(tmp_path / "data.npz", x=-np.ones((1, 4), np.float32))
    assert main(["debug", "bisect", str(bad), str(good), "--data", str(tmp_path / "data.npz")]) == 0
    assert "the outputs agree" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--batch", "1,4"], "bisect runs at one batch size"),
        (["--backend", "onnxruntime"], "give a reference model"),
    ],
)
def test_bisect_bad_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: list[str], match: str) -> None:
    good = _chain(tmp_path, "good.onnx", 2.0)
    args = ["debug", "bisect", str(good)] + ([str(good)] if "--batch" in extra else []) + extra
    assert main(args) == 2
    assert match in capsys.readouterr().err
