"""What a deploy leaves behind besides the reports: the serving repository and the resolved recipe.

The repository is what ``modelport serve`` (and ``pack``, ``k8s``) take: ``<name>/1/model.onnx`` and
``<name>/config.yaml`` from the recipe's serve stage, with a sha256 manifest that ``serve`` verifies.
Every file is written to a temporary name and renamed, so an interrupted deploy never leaves a
half-written model where a server could pick it up.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx_ir as ir
import yaml

from modelport.deploy.recipe import resolved_yaml
from modelport.ir.serde import save
from modelport.pack.checksum import write_manifest
from modelport.report import write_text_atomic

if TYPE_CHECKING:
    from modelport.deploy.job import DeployResult

__all__ = ["serve_config", "write_recipe", "write_repository"]

#: The serving repository's execution for each deploy target (OpenVINO is measured, ORT CPU serves).
_EXECUTION = {"cpu": "cpu", "gpu": "cuda", "tensorrt": "tensorrt", "openvino": "cpu"}


def serve_config(result: DeployResult) -> dict[str, Any]:
    """The model's ``config.yaml`` for the serving repository."""
    serve = result.recipe.stages.serve
    inputs = result.summary.get("inputs", [])
    dynamic_batch = bool(inputs) and all(s["shape"] and not isinstance(s["shape"][0], int) for s in inputs)
    largest = max(result.recipe.stages.bench.batches)
    max_batch = serve.max_batch_size if serve.max_batch_size is not None else largest
    config: dict[str, Any] = {
        "platform": "onnxruntime_onnx",
        "max_batch_size": max_batch if dynamic_batch else 0,
        "instance_count": serve.instance_count,
    }
    execution = _EXECUTION[result.recipe.target]
    if execution != "cpu":
        config["execution"] = execution
    threads = result.recipe.stages.bench.threads
    if threads:
        config["intra_op_threads"] = threads
    if serve.dynamic_batching and dynamic_batch and config["max_batch_size"] > 1:
        config["dynamic_batching"] = {"max_queue_delay_ms": serve.max_queue_delay_ms}
    return config


def write_repository(result: DeployResult, model: ir.Model) -> tuple[Path, dict[str, Any]]:
    """Write ``<outdir>/repository`` with the final model, its config and the manifest."""
    repo = result.outdir / "repository"
    folder = repo / result.name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    if result.encrypted:
        from modelport.protect import active_key, save_encrypted

        key = active_key()
        assert key is not None  # the source was decrypted with it
        save_encrypted(model, version / "model.onnx", key)
        result.warnings.append("the shipped model is encrypted with the source's key: serve it with --key-file")
    else:
        save(model, version / "model.onnx")
    config = serve_config(result)
    write_text_atomic(folder / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_manifest(repo)
    return repo, config


def write_recipe(result: DeployResult) -> Path:
    """The resolved recipe (every default filled in) that reproduces this run."""
    result.outdir.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(result.outdir / "recipe.yaml", resolved_yaml(result.recipe))
