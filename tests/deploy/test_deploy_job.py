from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelport.deploy.job import deploy
from modelport.errors import ConfigError
from modelport.ir.serde import load
from modelport.ir.summary import quantization_kind
from modelport.pack.checksum import verify_manifest
from modelport.runners.onnxruntime import OrtRunner


@pytest.mark.slow
def test_deploy_builtin_example_end_to_end(tmp_path: Path) -> None:
    result = deploy(None, tmp_path / "out", bench_seconds=0.6)
    repo = tmp_path / "out" / "repository"
    model_file = repo / "example_resnet" / "1" / "model.onnx"
    assert model_file.exists()
    assert verify_manifest(repo) == []
    config = yaml.safe_load((repo / "example_resnet" / "config.yaml").read_text())
    assert config["max_batch_size"] == 8
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["chosen"] == result.chosen
    assert report["compare_passed"] is True
    assert [r["batch"] for r in report["compare"]["runs"]] == [1, 8]
    assert {(b["batch"], b["name"].split(" ")[0]) for b in report["bench"]} == {
        (1, "fp32"),
        (1, "final"),
        (8, "fp32"),
        (8, "final"),
    }
    md = (tmp_path / "out" / "report.md").read_text()
    for section in ("## Optimize", "## Quantize", "## Compare", "## Benchmark", "## Serve"):
        assert section in md
    # The shipped model is what the report says it is, and it runs.
    shipped = load(model_file)
    assert quantization_kind(shipped) == ("QDQ" if result.chosen == "int8-static" else "none")
    with OrtRunner(model_file) as runner:
        out = runner.infer({"image": np.zeros((2, 3, 96, 96), np.float32)})
    assert out["logits"].shape == (2, 10)


def test_deploy_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch must be >= 1"):
        deploy(None, tmp_path, batch=0)
    with pytest.raises(ConfigError, match="plain folder name"):
        deploy(None, tmp_path, name="a/b")
