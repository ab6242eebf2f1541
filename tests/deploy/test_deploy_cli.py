from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modelport.cli.main import main

from .deploy_models import quick_recipe, write_tiny


def _write_recipe(tmp_path: Path, file: str = "deploy.yaml", **extra: object) -> Path:
    model = write_tiny(tmp_path / "tiny.onnx")
    data = quick_recipe(model, tmp_path / "out", tmp_path / "cache")
    data.update(extra)
    path = tmp_path / file
    path.write_text(yaml.safe_dump(json.loads(json.dumps(data))))
    return path


def test_print_config_writes_the_resolved_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "model.onnx", "--batch", "4", "--print-config"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["source"]["onnx"] == "model.onnx"
    assert resolved["stages"]["verify"]["batch"] == 4
    assert resolved["stages"]["bench"]["batches"] == [1, 4]
    assert resolved["stages"]["quantize"]["mode"] == "int8-static"  # defaults written out
    recipe = _write_recipe(tmp_path)
    assert main(["deploy", "--config", str(recipe), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["output"] == str(tmp_path / "out")


def test_config_with_command_line_options_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _write_recipe(tmp_path)
    assert main(["deploy", "--config", str(recipe), "--batch", "4", "-o", "x"]) == 2
    err = capsys.readouterr().err
    assert "--output, --batch cannot be combined with --config" in err


def test_invalid_recipe_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _write_recipe(tmp_path, target="npu")
    assert main(["deploy", "--config", str(recipe)]) == 2
    assert (
        "target: 'npu' is not allowed — allowed values: 'cpu', 'gpu', 'tensorrt' or 'openvino'"
        in capsys.readouterr().err
    )


def test_rerun_says_what_it_reused_and_missed_goal_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _write_recipe(tmp_path)
    assert main(["deploy", "--config", str(recipe)]) == 0
    first = capsys.readouterr().out
    assert "reused from the cache: none" in first and "report.html" in first
    assert main(["deploy", "--config", str(recipe)]) == 0
    assert "reused from the cache: optimize, quantize, compare, bench" in capsys.readouterr().out
    missed = _write_recipe(tmp_path, "missed.yaml", goals={"latency_ms": 1e-6})
    assert main(["deploy", "--config", str(missed), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["goals_met"] is False and data["goals"][0]["name"] == "latency_ms"
    assert (tmp_path / "out" / "repository" / "tiny" / "1" / "model.onnx").is_file()
    assert main(["deploy", "--config", str(recipe), "--no-cache"]) == 0
    assert "reused from the cache: none" in capsys.readouterr().out
