"""``deploy``: the main job — a recipe run stage by stage, every stage verified and cached.

Stages: source (load, or export from PyTorch) → optimize (every pass verified) → surgery → quantize
(compared with FP32 on calibration inputs and timed next to it) → compare (final vs the model the user
gave, at batch 1 and N) → accuracy (task metric, when a dataset is given) → bench (side by side) →
write (repository, manifest, reports). A quantized model that is slower than FP32 or below its
accuracy floor is not shipped: the FP32 model is, and the report says why.

Each stage's output is cached under a content key (:mod:`modelport.deploy.cache`), so re-running an
unchanged recipe reuses everything and says so, and a changed option re-runs only what depends on it.
Goals are checked at the end; a missed goal still writes the best model found, and the report says
which goal failed and by how much.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.deploy import stages as st
from modelport.deploy.cache import StageCache, hash_model, hash_path, machine_fingerprint, tool_versions
from modelport.deploy.recipe import Recipe, parse_recipe
from modelport.errors import ConfigError
from modelport.ir.serde import load

__all__ = ["STAGES", "DeployResult", "GoalCheck", "StageRun", "default_recipe", "deploy", "run_recipe"]

logger = logging.getLogger(__name__)

STAGES = ("source", "optimize", "surgery", "quantize", "compare", "accuracy", "bench", "write")
Feeds = dict[str, np.ndarray[Any, Any]]
Progress = Callable[[str, str], None]


@dataclass
class StageRun:
    """How a stage went this time: ran, reused from the cache, or skipped (and why)."""

    name: str
    status: str
    seconds: float = 0.0
    key: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class GoalCheck:
    """One goal of the recipe against what was measured."""

    name: str
    goal: float
    measured: float | None
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DeployResult:
    """Everything ``deploy`` measured and wrote; every field is JSON-able (``to_dict``)."""

    name: str
    outdir: Path
    source: str
    recipe: Recipe
    summary: dict[str, Any]
    calibration: str = ""
    export: dict[str, Any] | None = None
    optimize: dict[str, Any] | None = None
    surgery: dict[str, Any] | None = None
    quantize: dict[str, Any] | None = None
    chosen: str = "fp32"
    choice_reason: str = ""
    compare: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] | None = None
    bench: list[dict[str, Any]] = field(default_factory=list)
    goals: list[GoalCheck] = field(default_factory=list)
    stages: list[StageRun] = field(default_factory=list)
    serve_config: dict[str, Any] = field(default_factory=dict)
    repository: Path | None = None
    warnings: list[str] = field(default_factory=list)
    #: The source was encrypted: nothing was cached, and the shipped model is encrypted with the same key.
    encrypted: bool = False

    @property
    def comparison_passed(self) -> bool:
        return bool(self.compare.get("passed"))

    @property
    def goals_met(self) -> bool:
        return all(g.passed for g in self.goals)

    @property
    def succeeded(self) -> bool:
        return self.comparison_passed and self.goals_met

    @property
    def reused(self) -> list[str]:
        return [s.name for s in self.stages if s.status == "reused"]

    def commands(self) -> list[str]:
        """Shell commands that reproduce this deployment and use its result."""
        out = self.outdir
        return [
            f"modelport deploy --config {out / 'recipe.yaml'}",
            f"modelport serve {out / 'repository'}",
            f"modelport view {out / 'repository' / self.name / '1' / 'model.onnx'}",
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "outdir": str(self.outdir),
            "recipe": self.recipe.model_dump(mode="json"),
            "summary": self.summary,
            "calibration": self.calibration,
            "export": self.export,
            "optimize": self.optimize,
            "surgery": self.surgery,
            "quantize": self.quantize,
            "chosen": self.chosen,
            "choice_reason": self.choice_reason,
            "compare": self.compare.get("report"),
            "compare_floor": self.compare.get("criterion"),
            "compare_passed": self.comparison_passed,
            "accuracy": self.accuracy,
            "bench": self.bench,
            "goals": [g.to_dict() for g in self.goals],
            "goals_met": self.goals_met,
            "stages": [s.to_dict() for s in self.stages],
            "serve_config": self.serve_config,
            "repository": str(self.repository) if self.repository else None,
            "encrypted": self.encrypted,
            "commands": self.commands(),
            "warnings": self.warnings,
        }


@dataclass
class _Artifact:
    model: ir.Model
    hash: str


class _Run:
    """One recipe run: the cache, the progress callback, and the stage log."""

    def __init__(self, recipe: Recipe, cache: StageCache, say: Progress) -> None:
        self.recipe = recipe
        self.cache = cache
        self.say = say
        self.log: list[StageRun] = []

    def cached(
        self,
        stage: str,
        ingredients: dict[str, Any],
        compute: Callable[[], tuple[dict[str, Any], ir.Model | None]],
    ) -> tuple[dict[str, Any], _Artifact | None]:
        key = StageCache.key(stage, ingredients)
        started = time.perf_counter()
        entry = self.cache.get(stage, key)
        if entry is not None:
            self.log.append(StageRun(stage, "reused", time.perf_counter() - started, key[:12], f"from {entry.created}"))
            artifact = (
                _Artifact(entry.model, entry.model_hash) if entry.model is not None and entry.model_hash else None
            )
            return entry.record, artifact
        record, model = compute()
        created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        model_hash = self.cache.put(stage, key, record, model=model, ingredients=ingredients, created=created)
        self.log.append(StageRun(stage, "ran", time.perf_counter() - started, key[:12]))
        return record, (_Artifact(model, model_hash) if model is not None and model_hash else None)

    def skipped(self, stage: str, why: str) -> None:
        self.log.append(StageRun(stage, "skipped", note=why))


def _versions(*extra: str) -> dict[str, str]:
    return tool_versions(tuple(extra))


def _source(run: _Run) -> tuple[_Artifact, str, str, dict[str, Any] | None]:
    """The input model, its description, its default name and the export record (PyTorch only)."""
    source = run.recipe.source
    if source.example:
        from modelport.deploy.example import example_model

        model = example_model()
        run.skipped("source", "built-in example model")
        return _Artifact(model, hash_model(model)), "built-in example ResNet-style CNN", "example_resnet", None
    if source.onnx is not None:
        started = time.perf_counter()
        model = load(source.onnx)
        digest = _onnx_hash(source.onnx, model)
        run.log.append(StageRun("source", "ran", time.perf_counter() - started, digest[:12], "loaded"))
        return _Artifact(model, digest), str(source.onnx), source.onnx.stem, None
    assert source.pytorch is not None
    from modelport.export.factory import load_factory

    loaded = load_factory(source.pytorch)
    options = run.recipe.stages.export
    ingredients = {
        "module": st.module_hash(loaded.module),
        "factory": source.pytorch,
        "inputs": source.inputs,
        "options": options.model_dump(mode="json"),
        "versions": _versions("torch"),
    }
    record, artifact = run.cached("source", ingredients, lambda: st.export_stage(loaded, source, options))
    assert artifact is not None
    name = source.pytorch.rpartition(":")[2] or "model"
    return artifact, f"PyTorch factory {source.pytorch}", name, record


def _onnx_hash(path: Path, model: ir.Model) -> str:
    """The file's content plus any external-data files it refers to."""
    import hashlib

    digest = hashlib.sha256(hash_path(path).encode())
    base = path.parent
    for location in sorted({t.location for t in _external(model)}):
        digest.update(location.encode())
        digest.update(hash_path(base / location).encode())
    return digest.hexdigest()


def _external(model: ir.Model) -> list[Any]:
    return [v.const_value for v in model.graph.initializers.values() if isinstance(v.const_value, ir.ExternalTensor)]


def _optimize(run: _Run, current: _Artifact, batch: int) -> tuple[_Artifact, dict[str, Any] | None]:
    options = run.recipe.stages.optimize
    if not options.enabled:
        run.skipped("optimize", "disabled in the recipe")
        return current, None
    from modelport.passes.manager import optimize

    def compute() -> tuple[dict[str, Any], ir.Model]:
        result = optimize(current.model, options.passes, target=options.target, batches=(1, batch))
        return result.to_dict(), result.model

    ingredients = {
        "input": current.hash,
        "options": options.model_dump(mode="json"),
        "batches": [1, batch],
        "machine": machine_fingerprint(),  # passes that may slow a model are kept or reverted by timing them
        "versions": _versions(),
    }
    record, artifact = run.cached("optimize", ingredients, compute)
    assert artifact is not None
    return artifact, record


def _surgery(run: _Run, current: _Artifact, threads: int | None) -> tuple[_Artifact, dict[str, Any] | None]:
    steps = run.recipe.stages.surgery
    if not steps:
        run.skipped("surgery", "no recipes")
        return current, None
    ingredients = {"input": current.hash, "steps": [s.model_dump(mode="json") for s in steps], "versions": _versions()}
    record, artifact = run.cached("surgery", ingredients, lambda: st.surgery_stage(current.model, steps, threads))
    assert artifact is not None
    return artifact, record


def _quantize(
    run: _Run, current: _Artifact, data: st.CalibrationData, threads: int | None
) -> tuple[_Artifact, dict[str, Any] | None, str, str]:
    options = run.recipe.stages.quantize
    if not options.enabled:
        run.skipped("quantize", "disabled in the recipe")
        return current, None, "fp32", "quantization disabled in the recipe"
    batch = run.recipe.stages.verify.batch
    seconds = min(1.0, run.recipe.stages.bench.seconds)
    ingredients = {
        "input": current.hash,
        "options": options.model_dump(mode="json"),
        "data": data.digest,
        "batch": batch,
        "budget_data": _budget_data(run.recipe) if options.max_accuracy_drop is not None else None,
        "seconds": seconds,
        "threads": threads,
        "target": run.recipe.target,
        "machine": machine_fingerprint(),  # the ship-or-not decision is a timing
        "versions": _versions(),
    }
    record, artifact = run.cached(
        "quantize",
        ingredients,
        lambda: st.quantize_stage(
            current.model, options, run.recipe.stages.verify, data.samples, seconds, threads, run.recipe.target
        ),
    )
    if artifact is None:
        return current, record, "fp32", str(record["reason"])
    return artifact, record, options.mode, str(record["reason"])


def _budget_data(recipe: Recipe) -> dict[str, Any]:
    """What a task-metric budget reads: the dataset's content and how it is scored."""
    verify = recipe.stages.verify
    assert verify.dataset is not None
    return {"dataset": hash_path(verify.dataset), "metric": verify.metric, "preprocess": verify.preprocess}


def run_recipe(
    recipe: Recipe,
    *,
    progress: Progress | None = None,
    cache: StageCache | None = None,
) -> DeployResult:
    """Run ``recipe`` and write its output folder; see the module docstring for the stages."""
    from modelport.ir.summary import summarize

    say: Progress = progress or (lambda stage, text: logger.info("%s: %s", stage, text))
    settings = recipe.cache
    run = _Run(recipe, cache or StageCache(settings.dir, enabled=settings.enabled), say)
    stages = recipe.stages
    threads = stages.bench.threads
    say("source", "reading the model")
    source, source_text, default_name, export_record = _source(run)
    name = recipe.name or default_name
    _check_name(name)
    result = DeployResult(name, recipe.output, source_text, recipe, summarize(source.model).to_dict())
    result.export = export_record
    result.encrypted = _protect_outputs(run, source.model)
    say("optimize", "running passes, verifying each")
    current, result.optimize = _optimize(run, source, stages.verify.batch)
    say("surgery", f"{len(stages.surgery)} recipe(s)")
    current, result.surgery = _surgery(run, current, threads)
    say("quantize", f"{stages.quantize.mode} against FP32" if stages.quantize.enabled else "disabled")
    data = st.CalibrationData(current.model, stages.quantize.calibration, recipe.source.example)
    final, result.quantize, result.chosen, result.choice_reason = _quantize(run, current, data, threads)
    _measure(run, result, source, final, data)
    result.calibration = data.description
    result.stages = run.log
    say("write", f"repository and reports under {recipe.output}")
    _finish(result, final.model)
    return result


def _measure(run: _Run, result: DeployResult, source: _Artifact, final: _Artifact, data: st.CalibrationData) -> None:
    recipe = run.recipe
    stages, target, threads = recipe.stages, recipe.target, recipe.stages.bench.threads
    pair = {"input": source.hash, "final": final.hash, "chosen": result.chosen, "target": target}
    run.say("compare", f"{result.chosen} vs the input model at batch 1 and {stages.verify.batch}")
    ingredients = {**pair, "data": data.digest, "batch": stages.verify.batch, "versions": _versions()}
    result.compare, _ = run.cached(
        "compare",
        ingredients,
        lambda: (
            st.compare_stage(source.model, final.model, result.chosen, data.samples, stages.verify, target, threads),
            None,
        ),
    )
    if stages.verify.dataset is not None:
        run.say("accuracy", f"{stages.verify.metric} on {stages.verify.dataset}")
        ingredients = {
            **pair,
            "dataset": hash_path(stages.verify.dataset),
            "options": stages.verify.model_dump(mode="json"),
            "versions": _versions(),
        }
        result.accuracy, _ = run.cached(
            "accuracy",
            ingredients,
            lambda: (st.accuracy_stage(source.model, final.model, stages.verify, target, threads), None),
        )
    else:
        run.say("accuracy", "skipped: no dataset in the recipe")
        run.skipped("accuracy", "no dataset in the recipe")
    run.say("bench", f"input FP32 vs final {result.chosen}, batch {stages.bench.batches}")
    bench = stages.bench
    ingredients = {
        **pair,
        "data": data.digest,
        "options": bench.model_dump(mode="json"),
        "machine": machine_fingerprint(),
        "versions": _versions(),
    }
    record, _ = run.cached(
        "bench",
        ingredients,
        lambda: (
            st.bench_stage(
                source.model, final.model, result.chosen, data.samples, bench.batches, bench.seconds, target, threads
            ),
            None,
        ),
    )
    result.bench = list(record["results"])


def _finish(result: DeployResult, final: ir.Model) -> None:
    from modelport.deploy.goals import check_goals
    from modelport.deploy.report import write_reports
    from modelport.deploy.writer import write_recipe, write_repository

    if result.quantize is not None:
        result.warnings.extend(result.quantize.get("warnings", []))
    if not result.comparison_passed:
        result.warnings.append(f"final model does NOT match the input model within {result.compare.get('criterion')}")
    result.goals = check_goals(result.recipe.goals, result)
    for goal in result.goals:
        if not goal.passed:
            result.warnings.append(f"goal {goal.name} missed: {goal.detail}")
    started = time.perf_counter()
    result.repository, result.serve_config = write_repository(result, final)
    write_recipe(result)
    result.stages.append(StageRun("write", "ran", time.perf_counter() - started))
    write_reports(result)


def _protect_outputs(run: _Run, model: ir.Model) -> bool:
    """An encrypted source keeps its stages out of the (plaintext) cache; the shipped model is encrypted."""
    from modelport.protect import ENCRYPTED_META

    if ENCRYPTED_META not in model.meta:
        return False
    if run.cache.enabled:
        run.cache = StageCache(run.cache.root, enabled=False)
        run.log[-1].note += "; encrypted: the stage cache is off (it stores models in plaintext)"
    return True


def _check_name(name: str) -> None:
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ConfigError(f"model name '{name}' must be a plain folder name (no slashes or spaces)")


def default_recipe(
    model: str | os.PathLike[str] | None = None,
    outdir: str | os.PathLike[str] = "deploy-out",
    *,
    calib: str | os.PathLike[str] | None = None,
    preprocess: str | None = None,
    batch: int = 8,
    bench_seconds: float = 2.0,
    threads: int | None = None,
    name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> Recipe:
    """The default recipe for an ONNX file (default: the built-in example) with these options."""
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    if model is not None and not isinstance(model, str | os.PathLike):
        raise ConfigError(f"model must be the path of an .onnx file, got {model!r}")
    calibration = {k: str(v) for k, v in (("data", calib), ("preprocess", preprocess)) if v is not None}
    return parse_recipe(
        {
            "name": name,
            "source": {"example": True} if model is None else {"onnx": str(model)},
            "output": str(outdir),
            "stages": {
                "quantize": {"calibration": calibration},
                "verify": {"batch": batch},
                "bench": {"batches": sorted({1, batch}), "seconds": bench_seconds, "threads": threads},
            },
            "cache": {"enabled": use_cache, "dir": str(cache_dir) if cache_dir else None},
        },
        origin="the deploy options",
    )


def deploy(
    model: str | os.PathLike[str] | None = None,
    outdir: str | os.PathLike[str] = "deploy-out",
    *,
    calib: str | os.PathLike[str] | None = None,
    preprocess: str | None = None,
    batch: int = 8,
    bench_seconds: float = 2.0,
    threads: int | None = None,
    name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> DeployResult:
    """Deploy an ONNX file (default: the built-in example) with the default recipe and these options."""
    recipe = default_recipe(
        model,
        outdir,
        calib=calib,
        preprocess=preprocess,
        batch=batch,
        bench_seconds=bench_seconds,
        threads=threads,
        name=name,
        cache_dir=cache_dir,
        use_cache=use_cache,
    )
    return run_recipe(recipe, progress=progress)
