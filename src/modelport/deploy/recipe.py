"""Deploy recipes: one declarative YAML file that says where a model comes from, what to do to it, and
what counts as success.

MMDeploy's users like composable deploy configs; Olive's users complain about options that silently
do nothing. So a recipe is validated strictly: an unknown key is an error that names the allowed keys
(with a "did you mean"), a bad value names the allowed values, and an option that cannot have an
effect with the rest of the recipe (calibration data for FP16, a preprocess without an image folder,
options of a disabled stage) is refused instead of ignored. :func:`resolved_yaml` writes the recipe
back with every default filled in, so a run can be reproduced from it exactly.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelport.errors import ConfigError

__all__ = [
    "BenchStage",
    "CalibrationOptions",
    "ExportStage",
    "Goals",
    "OptimizeStage",
    "QuantizeStage",
    "Recipe",
    "ServeStage",
    "Source",
    "Stages",
    "SurgeryStep",
    "VerifyStage",
    "load_recipe",
    "parse_recipe",
    "resolved_yaml",
]

Target = Literal["cpu", "gpu", "tensorrt", "openvino"]
SurgeryName = Literal["replace-op", "identity-output", "focus", "nms"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where the model comes from: an ONNX file, a PyTorch factory with input specs, or the example."""

    onnx: Path | None = None
    pytorch: str | None = Field(default=None, description="factory 'package.module:function' or 'file.py:function'")
    inputs: list[str] = Field(default_factory=list, description="PyTorch input specs NAME:1x3x224x224[:DTYPE]")
    example: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> Source:
        given = [k for k, v in (("onnx", self.onnx), ("pytorch", self.pytorch), ("example", self.example)) if v]
        if len(given) != 1:
            raise ValueError(f"give exactly one of onnx, pytorch or example: true (got {', '.join(given) or 'none'})")
        if self.inputs and not self.pytorch:
            raise ValueError("inputs are the PyTorch input specs: they only apply with pytorch")
        return self


class ExportStage(_Strict):
    opset: int = Field(default=17, ge=7, le=23)
    exporter: Literal["legacy", "dynamo"] = "legacy"
    dynamic_axes: dict[str, dict[int, str]] = Field(default_factory=dict)


class OptimizeStage(_Strict):
    enabled: bool = True
    target: Literal["generic", "onnxruntime"] = "generic"
    passes: list[str] | None = None


class SurgeryStep(_Strict):
    recipe: SurgeryName
    options: dict[str, Any] = Field(default_factory=dict)


class CalibrationOptions(_Strict):
    data: Path | None = Field(default=None, description=".npy, .npz or a folder of images")
    preprocess: str | None = Field(default=None, description="image preprocessing, as 'quantize --preprocess'")
    method: Literal["minmax", "entropy", "percentile", "mse"] = "mse"

    @model_validator(mode="after")
    def _preprocess_needs_images(self) -> CalibrationOptions:
        if self.preprocess and (self.data is None or self.data.suffix.lower() in (".npy", ".npz")):
            raise ValueError("preprocess only applies to a folder of images given as data")
        return self


class QuantizeStage(_Strict):
    enabled: bool = True
    mode: Literal["int8-static", "int8-dynamic", "fp16"] = "int8-static"
    per_channel: bool = True
    calibration: CalibrationOptions = Field(default_factory=CalibrationOptions)
    min_sqnr_db: float | None = Field(default=None, description="accuracy budget: keep layers in FP32 to reach it")
    max_accuracy_drop: float | None = Field(
        default=None, ge=0, description="accuracy budget on stages.verify's dataset and metric (mixed precision)"
    )
    sensitivity: bool = Field(default=True, description="measure each layer alone in INT8 (the report's chart)")
    keep: Literal["auto", "always"] = Field(
        default="auto", description="auto: ship the quantized model only if faster and accurate; always: ship it"
    )

    @model_validator(mode="after")
    def _no_silent_options(self) -> QuantizeStage:
        if self.mode != "int8-static":
            stray = [k for k in ("data", "preprocess") if getattr(self.calibration, k)]
            if stray or self.calibration.method != CalibrationOptions().method:
                raise ValueError(f"calibration options are only used by mode int8-static, not {self.mode}")
            if self.min_sqnr_db is not None or self.max_accuracy_drop is not None or not self.sensitivity:
                raise ValueError(
                    f"min_sqnr_db, max_accuracy_drop and sensitivity are only used by mode int8-static, not {self.mode}"
                )
        if self.min_sqnr_db is not None and self.max_accuracy_drop is not None:
            raise ValueError("an accuracy budget is min_sqnr_db OR max_accuracy_drop, not both")
        return self


class VerifyStage(_Strict):
    """Final model vs the input model, and optionally a task metric on a labelled dataset."""

    batch: int = Field(default=8, ge=1)
    dataset: Path | None = None
    metric: str | None = Field(default=None, description="top1, top5, or 'module:function'")
    preprocess: str | None = None

    @model_validator(mode="after")
    def _metric_needs_dataset(self) -> VerifyStage:
        if (self.dataset is None) != (self.metric is None):
            raise ValueError("dataset and metric go together: give both, or neither")
        if self.preprocess and self.dataset is None:
            raise ValueError("preprocess only applies to a dataset folder of images")
        return self


class BenchStage(_Strict):
    batches: list[int] = Field(default_factory=lambda: [1, 8], min_length=1)
    seconds: float = Field(default=2.0, gt=0)
    threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _positive(self) -> BenchStage:
        if any(b < 1 for b in self.batches):
            raise ValueError(f"batches must be positive, got {self.batches}")
        return self


class ServeStage(_Strict):
    """The repository's serving config. Opportunistic batching (requests that queue while the instance
    is busy run as one batch; a lone request never waits) is on by default: on the 2-core CPU benchmark
    it served 0.89 / 0.90 of raw throughput at 4 / 16 clients, where the same server without it served
    0.80 / 0.79 in an earlier run, with the same single-client latency (benchmarks/RESULTS.md)."""

    instance_count: int = Field(default=1, ge=1)
    max_batch_size: int | None = Field(default=None, ge=0, description="default: the largest bench batch")
    dynamic_batching: bool = True
    max_queue_delay_ms: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _delay_needs_batching(self) -> ServeStage:
        if self.max_queue_delay_ms and not self.dynamic_batching:
            raise ValueError("max_queue_delay_ms only applies with dynamic_batching: true")
        return self


class Stages(_Strict):
    export: ExportStage = Field(default_factory=ExportStage)
    optimize: OptimizeStage = Field(default_factory=OptimizeStage)
    surgery: list[SurgeryStep] = Field(default_factory=list)
    quantize: QuantizeStage = Field(default_factory=QuantizeStage)
    verify: VerifyStage = Field(default_factory=VerifyStage)
    bench: BenchStage = Field(default_factory=BenchStage)
    serve: ServeStage = Field(default_factory=ServeStage)


class Goals(_Strict):
    """Checked at the end; a missed goal still saves the best model, and the report says by how much."""

    latency_ms: float | None = Field(default=None, gt=0, description="median latency of the final model at batch 1")
    throughput: float | None = Field(default=None, gt=0, description="items/s of the final model at its best batch")
    min_sqnr_db: float | None = Field(default=None, description="worst output SQNR of final vs input model")
    accuracy_floor: float | None = Field(default=None, description="task metric of the final model on the dataset")
    max_accuracy_drop: float | None = Field(default=None, ge=0, description="metric drop vs the input model")


class CacheSettings(_Strict):
    enabled: bool = True
    dir: Path | None = Field(default=None, description="default: $MODELPORT_CACHE_DIR or ~/.cache/modelport")


class Recipe(_Strict):
    name: str | None = None
    source: Source
    target: Target = "cpu"
    output: Path = Path("deploy-out")
    stages: Stages = Field(default_factory=Stages)
    goals: Goals = Field(default_factory=Goals)
    cache: CacheSettings = Field(default_factory=CacheSettings)

    @model_validator(mode="before")
    @classmethod
    def _gpu_precision(cls, data: Any) -> Any:
        """On a GPU target without a quantize mode: FP16, or INT8 when calibration data are given."""
        if not isinstance(data, dict) or data.get("target") not in ("gpu", "tensorrt"):
            return data
        stages = data.get("stages") or {}
        quantize = stages.get("quantize") or {} if isinstance(stages, dict) else None
        if not isinstance(quantize, dict) or "mode" in quantize or quantize.get("enabled") is False:
            return data
        calibration = quantize.get("calibration") or {}
        mode = "int8-static" if isinstance(calibration, dict) and calibration.get("data") else "fp16"
        return {**data, "stages": {**stages, "quantize": {**quantize, "mode": mode}}}

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.source.pytorch is None and self.stages.export != ExportStage():
            raise ValueError("stages.export only applies to a pytorch source")
        accuracy = self.goals.accuracy_floor is not None or self.goals.max_accuracy_drop is not None
        if accuracy and self.stages.verify.dataset is None:
            raise ValueError("accuracy goals need stages.verify.dataset and metric to measure them")
        if self.stages.quantize.max_accuracy_drop is not None and self.stages.verify.dataset is None:
            raise ValueError("stages.quantize.max_accuracy_drop needs stages.verify.dataset and metric to measure it")
        if not self.stages.quantize.enabled and self.stages.quantize != QuantizeStage(enabled=False):
            raise ValueError("stages.quantize is disabled: remove its other options, or enable it")
        return self


# errors ----------------------------------------------------------------------------------------


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``X``, ``X | None`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, list, dict):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _fields_at(location: list[str]) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in location:
        field = model.model_fields.get(part)
        if field is None:
            continue  # a list index or dict key: stay on the model of the items
        inner = _model_in(field.annotation)
        if inner is None:
            break
        model = inner
    return list(model.model_fields)


def _describe(error: Any) -> str:
    loc = [str(p) for p in error["loc"]]
    where = ".".join(loc) or "recipe"
    kind = error["type"]
    if kind == "extra_forbidden":
        fields = _fields_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], fields, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown key '{where}' — {hint}allowed keys: {', '.join(fields)}"
    if kind == "literal_error":
        return f"{where}: {error['input']!r} is not allowed — allowed values: {error['ctx']['expected']}"
    if kind == "missing":
        return f"{where}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error":
        return f"{where}: {message}"
    return f"{where}: {message} (got {error['input']!r})"


def parse_recipe(data: Any, *, origin: str = "recipe") -> Recipe:
    """Validate a recipe mapping; :class:`ConfigError` names each bad key and what is allowed."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin} must be a mapping of keys (source:, stages:, goals: ...), got {type(data).__name__}"
        )
    try:
        return Recipe.model_validate(data)
    except pydantic.ValidationError as e:
        problems = "\n  ".join(_describe(err) for err in e.errors())
        raise ConfigError(f"{origin} is invalid:\n  {problems}") from e


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe. Relative paths inside it are relative to the recipe's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe '{path}' does not exist — write one (see 'modelport deploy --print-config')")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"recipe '{path}' is not valid YAML: {e}") from e
    recipe = parse_recipe(data, origin=f"recipe '{path}'")
    return _relative_to(recipe, path.parent)


def _relative_to(recipe: Recipe, base: Path) -> Recipe:
    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    stages = recipe.stages
    calibration = stages.quantize.calibration.model_copy(update={"data": fix(stages.quantize.calibration.data)})
    return recipe.model_copy(
        update={
            "source": recipe.source.model_copy(update={"onnx": fix(recipe.source.onnx)}),
            "output": fix(recipe.output),
            "stages": stages.model_copy(
                update={
                    "quantize": stages.quantize.model_copy(update={"calibration": calibration}),
                    "verify": stages.verify.model_copy(update={"dataset": fix(stages.verify.dataset)}),
                }
            ),
            "cache": recipe.cache.model_copy(update={"dir": fix(recipe.cache.dir)}),
        }
    )


def resolved_yaml(recipe: Recipe) -> str:
    """The recipe with every default filled in, as YAML that :func:`load_recipe` reads back unchanged."""
    data = recipe.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)
