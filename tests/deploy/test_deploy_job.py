from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelport.deploy.job import DeployResult, deploy, run_recipe
from modelport.deploy.recipe import parse_recipe
from modelport.errors import ConfigError
from modelport.ir.serde import load
from modelport.ir.summary import quantization_kind
from modelport.pack.checksum import verify_manifest
from modelport.runners.onnxruntime import OrtRunner

from .deploy_models import quick_recipe, write_tiny

FEEDS = {"x": np.random.default_rng(7).normal(size=(2, 3, 8, 8)).astype(np.float32)}


def _run(model: Path, out: Path, cache: Path, **stages: object) -> DeployResult:
    return run_recipe(parse_recipe(quick_recipe(model, out, cache, **stages)))


def _status(result: DeployResult) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def _shipped(result: DeployResult) -> Path:
    return result.outdir / "repository" / result.name / "1" / "model.onnx"


@pytest.mark.slow
def test_deploy_builtin_example_end_to_end(tmp_path: Path) -> None:
    result = deploy(None, tmp_path / "out", bench_seconds=0.6, cache_dir=tmp_path / "cache")
    repo = tmp_path / "out" / "repository"
    model_file = repo / "example_resnet" / "1" / "model.onnx"
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
    assert report["quantize"]["sensitivity"]["rows"], "the report's sensitivity chart needs the per-layer table"
    md = (tmp_path / "out" / "report.md").read_text()
    for section in ("## Optimize", "## Quantize", "## Compare", "## Benchmark", "## Serve", "## Reproduce"):
        assert section in md
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
    shipped = load(model_file)
    assert quantization_kind(shipped) == ("QDQ" if result.chosen == "int8-static" else "none")
    with OrtRunner(model_file) as runner:
        out = runner.infer({"image": np.zeros((2, 3, 96, 96), np.float32)})
    assert out["logits"].shape == (2, 10)


def test_deploy_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch must be >= 1"):
        deploy(None, tmp_path, batch=0)
    with pytest.raises(ConfigError, match="plain folder name"):
        deploy(None, tmp_path, name="a/b", cache_dir=tmp_path / "c")


def test_rerun_reuses_every_stage_and_reports_the_same(tmp_path: Path) -> None:
    model = write_tiny(tmp_path / "tiny.onnx")
    first = _run(model, tmp_path / "out", tmp_path / "cache")
    assert _status(first) == {
        "source": "ran",
        "optimize": "ran",
        "surgery": "skipped",
        "quantize": "ran",
        "compare": "ran",
        "accuracy": "skipped",
        "bench": "ran",
        "write": "ran",
    }
    second = _run(model, tmp_path / "out2", tmp_path / "cache")
    assert second.reused == ["optimize", "quantize", "compare", "bench"]
    assert second.bench == first.bench and second.compare == first.compare and second.chosen == first.chosen
    with OrtRunner(_shipped(first)) as a, OrtRunner(_shipped(second)) as b:
        np.testing.assert_array_equal(a.infer(FEEDS)["y"], b.infer(FEEDS)["y"])
    assert "Reused from the cache: optimize, quantize, compare, bench." in (tmp_path / "out2" / "report.md").read_text()


def test_changed_option_reruns_only_what_depends_on_it(tmp_path: Path) -> None:
    model = write_tiny(tmp_path / "tiny.onnx")
    _run(model, tmp_path / "out", tmp_path / "cache")
    more_batches = _run(model, tmp_path / "out", tmp_path / "cache", bench={"batches": [1, 2, 4], "seconds": 0.05})
    status = _status(more_batches)
    assert (status["optimize"], status["quantize"], status["compare"], status["bench"]) == (
        "reused",
        "reused",
        "reused",
        "ran",
    )
    per_tensor = _run(model, tmp_path / "out", tmp_path / "cache", quantize={"per_channel": False, "keep": "always"})
    status = _status(per_tensor)
    assert per_tensor.chosen == "int8-static"
    assert status["optimize"] == "reused"
    assert status["quantize"] == "ran" and status["compare"] == "ran" and status["bench"] == "ran"
    no_opt = _run(model, tmp_path / "out", tmp_path / "cache", optimize={"enabled": False})
    assert _status(no_opt)["optimize"] == "skipped" and _status(no_opt)["quantize"] == "ran"


def test_two_different_models_never_share_an_entry(tmp_path: Path) -> None:
    a = write_tiny(tmp_path / "model.onnx", seed=1)
    result_a = _run(a, tmp_path / "out_a", tmp_path / "cache", quantize={"enabled": False})
    (tmp_path / "other").mkdir()
    b = write_tiny(tmp_path / "other" / "model.onnx", seed=2)
    result_b = _run(b, tmp_path / "out_b", tmp_path / "cache", quantize={"enabled": False})
    # same file name, same shapes, same options: only the weights differ
    assert result_b.reused == []
    with OrtRunner(b) as reference, OrtRunner(_shipped(result_b)) as shipped:
        np.testing.assert_allclose(shipped.infer(FEEDS)["y"], reference.infer(FEEDS)["y"], rtol=1e-4, atol=1e-5)
    assert not np.allclose(reference_outputs_batch(a, FEEDS["x"]), reference_outputs_batch(b, FEEDS["x"]))
    keys_a = {s.key for s in result_a.stages if s.key}
    assert keys_a and keys_a.isdisjoint(s.key for s in result_b.stages)


def test_missed_goal_still_saves_the_model_and_says_by_how_much(tmp_path: Path) -> None:
    model = write_tiny(tmp_path / "tiny.onnx")
    data = quick_recipe(model, tmp_path / "out", tmp_path / "cache")
    data["goals"] = {"latency_ms": 1e-6, "min_sqnr_db": 10.0, "throughput": 1.0}
    result = run_recipe(parse_recipe(data))
    goals = {g.name: g for g in result.goals}
    assert goals["min_sqnr_db"].passed and goals["throughput"].passed
    missed = goals["latency_ms"]
    assert not missed.passed and missed.measured is not None and missed.measured > 1e-6
    assert "missed by" in missed.detail
    assert not result.goals_met and not result.succeeded
    assert _shipped(result).is_file()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["goals_met"] is False
    assert "goal latency_ms missed" in " ".join(report["warnings"])
    assert "MISSED" in (tmp_path / "out" / "report.md").read_text()


def test_accuracy_stage_and_goals(tmp_path: Path) -> None:
    model = write_tiny(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 3, 8, 8)).astype(np.float32)
    labels = reference_outputs_batch(model, x).argmax(1)
    np.savez(tmp_path / "data.npz", x=x, labels=labels)
    data = quick_recipe(
        model,
        tmp_path / "out",
        tmp_path / "cache",
        verify={"batch": 2, "dataset": str(tmp_path / "data.npz"), "metric": "top1"},
    )
    data["goals"] = {"accuracy_floor": 0.5, "max_accuracy_drop": 0.5}
    data["stages"]["quantize"] = {"max_accuracy_drop": 0.2, "keep": "always"}  # type: ignore[index]
    result = run_recipe(parse_recipe(data))
    assert result.accuracy is not None and result.accuracy["reference_score"] == pytest.approx(1.0)
    assert all(g.passed for g in result.goals)
    assert result.quantize is not None and result.quantize["mixed_precision"]["budget"].startswith("top1")
    assert _status(run_recipe(parse_recipe(data)))["accuracy"] == "reused"


def reference_outputs_batch(model: Path, x: np.ndarray) -> np.ndarray:
    with OrtRunner(model) as runner:
        return runner.infer({"x": x})["y"]


def test_surgery_stage_adds_an_output_and_keeps_the_others(tmp_path: Path) -> None:
    model = write_tiny(tmp_path / "tiny.onnx")
    surgery = [{"recipe": "identity-output", "options": {"tensor": "f"}}]
    result = _run(model, tmp_path / "out", tmp_path / "cache", surgery=surgery, quantize={"enabled": False})
    assert result.surgery is not None
    step = result.surgery["steps"][0]
    assert step["passed"] and step["shared_outputs_compared"] == ["y"] and len(step["outputs"]) == 2


def test_recipe_output_is_reproducible(tmp_path: Path) -> None:
    model = write_tiny(tmp_path / "tiny.onnx")
    result = _run(model, tmp_path / "out", tmp_path / "cache")
    written = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())
    assert parse_recipe(written) == result.recipe


FACTORY = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)
        torch.manual_seed(0)
        with torch.no_grad():
            self.fc.weight.mul_(scale)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def small():
    torch.manual_seed(0)
    return Net(1.0)


def scaled():
    torch.manual_seed(0)
    return Net(2.0)
"""


@pytest.mark.torch
def test_pytorch_source_is_exported_once_and_keyed_by_weights(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    (tmp_path / "nets.py").write_text(FACTORY)

    def recipe(factory: str) -> dict[str, object]:
        data = quick_recipe(tmp_path / "unused.onnx", tmp_path / "out", tmp_path / "cache", quantize={"enabled": False})
        data["source"] = {"pytorch": f"{tmp_path / 'nets.py'}:{factory}", "inputs": ["x:1x3x8x8"]}
        data["stages"]["export"] = {"dynamic_axes": {"x": {0: "batch"}}}  # type: ignore[index]
        return data

    first = run_recipe(parse_recipe(recipe("small")))
    assert _status(first)["source"] == "ran" and first.export is not None and first.export["passed"]
    again = run_recipe(parse_recipe(recipe("small")))
    assert _status(again)["source"] == "reused"
    # same class and source code, different weights: a different model, so nothing is reused
    other = run_recipe(parse_recipe(recipe("scaled")))
    assert other.reused == []


def test_the_repository_runs_where_the_target_is(tmp_path: Path) -> None:
    from modelport.deploy.writer import serve_config

    summary = {"inputs": [{"name": "x", "shape": ["N", 3, 8, 8]}]}
    for target, execution in (("cpu", None), ("gpu", "cuda"), ("tensorrt", "tensorrt"), ("openvino", None)):
        recipe = parse_recipe({"source": {"onnx": "m.onnx"}, "target": target})
        config = serve_config(DeployResult("m", tmp_path, "m.onnx", recipe, summary))
        assert config.get("execution") == execution, target
        assert config["max_batch_size"] == 8


def test_a_gpu_target_without_a_gpu_fails_clearly(tmp_path: Path) -> None:
    import onnxruntime as ort

    from modelport.errors import BackendError

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the refusal cannot be seen")
    data = quick_recipe(write_tiny(tmp_path / "tiny.onnx"), tmp_path / "out", tmp_path / "cache")
    data["target"] = "gpu"
    with pytest.raises(BackendError, match="has no CUDAExecutionProvider here"):
        run_recipe(parse_recipe(data))
    assert not (tmp_path / "out" / "repository").exists()


@pytest.mark.gpu
def test_deploy_for_the_gpu_writes_a_repository_the_server_runs_on_cuda(tmp_path: Path) -> None:
    from modelport.serve.repository import ModelRepository

    data = quick_recipe(write_tiny(tmp_path / "tiny.onnx"), tmp_path / "out", tmp_path / "cache")
    data["target"] = "gpu"
    result = run_recipe(parse_recipe(data))
    assert result.recipe.stages.quantize.mode == "fp16" and result.chosen in ("fp16", "fp32")
    assert result.comparison_passed
    served = ModelRepository(tmp_path / "out" / "repository").get("tiny")
    assert served.config.execution == "cuda"
    served.load()
    try:
        assert served.runner.describe()["providers"][0] == "CUDAExecutionProvider"
        got = served.runner.infer(FEEDS)["y"]
    finally:
        served.unload()
    np.testing.assert_allclose(got, reference_outputs_batch(tmp_path / "tiny.onnx", FEEDS["x"]), rtol=1e-2, atol=1e-2)


def test_an_encrypted_source_leaves_no_plaintext_behind(tmp_path: Path) -> None:
    from modelport.protect import encrypt_model, is_encrypted, use_key
    from modelport.serve.repository import ModelRepository

    key = bytes(range(32))
    plain = write_tiny(tmp_path / "tiny.onnx")
    weight = np.asarray(load(plain).graph.initializers["w"].const_value).tobytes()
    sealed = encrypt_model(plain, tmp_path / "sealed" / "tiny.onnx", key)
    plain.unlink()
    data = quick_recipe(sealed, tmp_path / "out", tmp_path / "cache", quantize={"enabled": False})
    with use_key(key):
        result = run_recipe(parse_recipe(data))
        assert result.encrypted and result.reused == []
        assert "the stage cache is off" in result.stages[0].note
        shipped = _shipped(result)
        assert is_encrypted(shipped)
        served = ModelRepository(tmp_path / "out" / "repository").get("tiny")
        served.load()
        try:
            got = served.runner.infer(FEEDS)["y"]
        finally:
            served.unload()
        assert got.shape == (2, 4)
    # nothing written anywhere holds the weights in the clear, and nothing went to the cache
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(weight in p.read_bytes() for p in written)
    assert not (tmp_path / "cache").exists()
    assert any("encrypted with the source's key" in w for w in result.warnings)


def test_the_repository_batches_opportunistically_by_default(tmp_path: Path) -> None:
    from modelport.deploy.writer import serve_config

    def config(serve: dict[str, object], shape: list[object]) -> dict[str, object]:
        recipe = parse_recipe({"source": {"onnx": "m.onnx"}, "stages": {"serve": serve}})
        return serve_config(DeployResult("m", tmp_path, "m.onnx", recipe, {"inputs": [{"name": "x", "shape": shape}]}))

    assert config({}, ["N", 4])["dynamic_batching"] == {"max_queue_delay_ms": 0.0}
    assert "dynamic_batching" not in config({"dynamic_batching": False}, ["N", 4])
    assert "dynamic_batching" not in config({}, [1, 4])  # no batch axis: nothing to batch
    assert "dynamic_batching" not in config({"max_batch_size": 1}, ["N", 4])
    assert config({"max_queue_delay_ms": 2}, ["N", 4])["dynamic_batching"] == {"max_queue_delay_ms": 2.0}


def test_calibration_data_are_keyed_by_content_and_preprocessing_and_loaded_only_when_needed(tmp_path: Path) -> None:
    from PIL import Image

    model = write_tiny(tmp_path / "tiny.onnx")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(images / f"{i}.png")

    def run(preprocess: str) -> DeployResult:
        calibration = {"data": str(images), "preprocess": preprocess}
        return _run(model, tmp_path / "out", tmp_path / "cache", quantize={"calibration": calibration})

    first = run("size=8x8")
    assert first.calibration == f"4 samples from {images}"
    again = run("size=8x8")
    assert again.reused == ["optimize", "quantize", "compare", "bench"]
    assert "not loaded" in again.calibration  # nothing had to decode the images
    # other preprocessing, same files: every stage that reads the samples runs again, even when the
    # shipped model comes out the same
    other = run("size=8x8,scale=0.5")
    status = _status(other)
    assert (status["optimize"], status["quantize"], status["compare"], status["bench"]) == (
        "reused",
        "ran",
        "ran",
        "ran",
    )
