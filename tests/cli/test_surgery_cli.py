from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.cli import surgery
from modelport.errors import ConfigError, ModelSaveError
from modelport.ir.serde import load, save
from modelport.runners.onnxruntime import OrtRunner

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
# Traced at batch 1: the Reshape target hard-codes it.
TEXT = (
    HEADER
    + """
g (float[1, 2, 4] x) => (float[1, 8] y) {
  a = Relu(x)
  s = Constant<value = int64[2] {1, 8}>()
  r = Reshape(a, s)
  y = Neg(r)
  dead = Sigmoid(x)
}"""
)
X = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelport")
    surgery.add_parser(parser.add_subparsers(dest="command"))
    return parser


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    args = _parser().parse_args(["surgery", *argv])
    assert args.run(args) == 0
    return capsys.readouterr().out


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    model = ir.from_onnx_text(TEXT)
    for node in model.graph:
        node.name = f"n_{node.outputs[0].name}"
    return save(model, tmp_path / "model.onnx")


def _run(path: Path, feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    with OrtRunner(path, graph_optimization="disable") as runner:
        return runner.infer(feeds)


def test_batch_frees_a_traced_batch_and_prints_a_summary(
    capsys: pytest.CaptureFixture[str], model_path: Path, tmp_path: Path
) -> None:
    out_path = tmp_path / "dyn.onnx"
    out = _cli(capsys, "batch", str(model_path), "batch", "-o", str(out_path))
    assert out.startswith("surgery batch: batch batch; nodes 5 → 4;")  # the old Constant became an initializer
    y = _run(out_path, {"x": X})["y"]
    np.testing.assert_array_equal(y, -np.maximum(X, 0).reshape(3, 8))
    assert [n.op_type for n in load(out_path).graph] == ["Relu", "Reshape", "Neg", "Sigmoid"]


def test_set_shape_dynamic_axis_then_static_input(
    capsys: pytest.CaptureFixture[str], model_path: Path, tmp_path: Path
) -> None:
    dyn, fixed = tmp_path / "dyn.onnx", tmp_path / "fixed.onnx"
    _cli(capsys, "set-shape", str(model_path), "--dynamic", "x:0=N", "-o", str(dyn))
    assert [d if isinstance(d, int) else d.value for d in load(dyn).graph.inputs[0].shape or []] == ["N", 2, 4]
    out = _cli(capsys, "set-shape", str(dyn), "--input", "x=3,2,4", "-o", str(fixed))
    assert "x: [3,2,4]" in out
    np.testing.assert_array_equal(_run(fixed, {"x": X})["y"], -np.maximum(X, 0).reshape(3, 8))


def test_extract_rename_remove_cleanup_sort_opset(
    capsys: pytest.CaptureFixture[str], model_path: Path, tmp_path: Path
) -> None:
    sub = tmp_path / "sub.onnx"
    out = _cli(capsys, "extract", str(model_path), "--inputs", "x", "--outputs", "a", "-o", str(sub), "--json")
    assert json.loads(out)["nodes_after"] == 1
    assert [n.op_type for n in load(sub).graph] == ["Relu"]

    renamed = tmp_path / "renamed.onnx"
    _cli(capsys, "rename", str(model_path), "--tensor", "x=pixels", "--tensor", "y=scores", "-o", str(renamed))
    np.testing.assert_array_equal(_run(renamed, {"pixels": X[:1]})["scores"], -np.maximum(X[:1], 0).reshape(1, 8))

    removed = tmp_path / "removed.onnx"
    _cli(capsys, "remove", str(renamed), "--node", "n_y", "-o", str(removed))
    np.testing.assert_array_equal(_run(removed, {"pixels": X[:1]})["scores"], np.maximum(X[:1], 0).reshape(1, 8))

    clean = tmp_path / "clean.onnx"
    out = _cli(capsys, "cleanup", str(removed), "-o", str(clean))
    assert "nodes 4 → 3" in out
    out = _cli(capsys, "sort", str(clean), "-o", str(tmp_path / "sorted.onnx"))
    assert "nodes 3 → 3" in out

    converted = tmp_path / "opset18.onnx"
    out = _cli(capsys, "opset", str(clean), "18", "-o", str(converted))
    assert "opset 17 → 18" in out
    assert load(converted).opset_imports[""] == 18
    np.testing.assert_array_equal(_run(converted, {"pixels": X[:1]})["scores"], np.maximum(X[:1], 0).reshape(1, 8))


def test_errors_reach_the_user_and_the_input_is_never_overwritten(
    capsys: pytest.CaptureFixture[str], model_path: Path, tmp_path: Path
) -> None:
    before = model_path.read_bytes()
    with pytest.raises(ModelSaveError, match="refusing to overwrite the input model"):
        _cli(capsys, "sort", str(model_path), "-o", str(model_path))
    assert model_path.read_bytes() == before
    _cli(capsys, "cleanup", str(model_path), "-o", str(model_path), "--in-place")
    assert [n.op_type for n in load(model_path).graph] == ["Relu", "Constant", "Reshape", "Neg"]
    with pytest.raises(ConfigError, match="no tensor named 'yy' — did you mean 'y'"):
        _cli(capsys, "extract", str(model_path), "--outputs", "yy", "-o", str(tmp_path / "x.onnx"))
    with pytest.raises(ConfigError, match="no node matches name='n_q'"):
        _cli(capsys, "remove", str(model_path), "--node", "n_q", "-o", str(tmp_path / "x.onnx"))
    with pytest.raises(ConfigError, match="not of the form NAME:AXIS=DIM"):
        _cli(capsys, "set-shape", str(model_path), "--dynamic", "x=batch", "-o", str(tmp_path / "x.onnx"))
    with pytest.raises(ConfigError, match="needs --input"):
        _cli(capsys, "set-shape", str(model_path), "-o", str(tmp_path / "x.onnx"))
    assert not (tmp_path / "x.onnx").exists()


ADD_TEXT = (
    HEADER
    + """
g (float[2, 3] x, float[2, 3] y) => (float[2, 3] z) {
  s = Add(x, y)
  z = Neg(s)
}"""
)


def test_recipe_replaces_add_with_leaky_relu_as_in_the_seeds(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source, out = tmp_path / "add.onnx", tmp_path / "leaky.onnx"
    save(ir.from_onnx_text(ADD_TEXT), source)
    line = _cli(
        capsys,
        "recipe",
        str(source),
        "-o",
        str(out),
        "--recipe",
        "replace-op",
        "--set",
        "op_type=Add",
        "--set",
        "new_op=LeakyRelu",
        "--set",
        'attributes={"alpha": 0.1}',
        "--set",
        "keep_inputs=[0]",
    )
    assert "recipe replace-op" in line
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    with OrtRunner(out, graph_optimization="disable") as runner:
        got = runner.infer({"x": x, "y": x})["z"]  # y is still declared, now unread
    np.testing.assert_allclose(got, -np.where(x > 0, x, 0.1 * x), rtol=1e-6, atol=0)


def test_recipe_errors_name_the_problem(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = tmp_path / "add.onnx"
    save(ir.from_onnx_text(ADD_TEXT), source)
    out = str(tmp_path / "o.onnx")
    with pytest.raises(ConfigError, match="unknown recipe 'fold' — choose from: replace-op"):
        _cli(capsys, "recipe", str(source), "-o", out, "--recipe", "fold")
    with pytest.raises(ConfigError, match=r"recipe 'replace-op': .*unexpected keyword argument 'colour'"):
        _cli(capsys, "recipe", str(source), "-o", out, "--recipe", "replace-op", "--set", "colour=red")
