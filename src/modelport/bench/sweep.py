"""Sweeps over batch size, threads and concurrent callers, and the configuration to recommend.

Why: the fastest way to run a model on a given machine is rarely the default. Batching trades
latency for throughput; intra-op threads help a large convolution and hurt a small MLP; several
callers on one session (or one session each) can fill cores a single call leaves idle. A sweep
measures every configuration of a :class:`SweepSpec` with the harness (warm-up, windows until
stable, memory) and :func:`recommend` names the best one for throughput and the best one for
latency at batch 1, from stable measurements only where there are any, saying when the runner-up
is within the measurement tolerance.

Sessions are created once per (intra-op, inter-op, sessions) group and reused for every batch
size and shared-session caller count of the group, so a sweep of four batch sizes builds one
session, and its memory is measured from before that session existed.

With a pipeline (``pipeline:`` of a model's ``config.yaml``, as ``modelport serve`` reads it) each
iteration is what a served request costs: pre-process, compute, post-process. Client inputs of
an image stage are synthetic photo-like JPEGs of ``image_size``; every other input is generated
from its declared type.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from modelport.bench.harness import (
    DEFAULT_TOLERANCE,
    BenchResult,
    BenchSettings,
    IoBindingCompute,
    MemoryProbe,
    RunnerWorkload,
    StagedWorkload,
    Workload,
    device_of,
    measure,
)
from modelport.errors import ConfigError
from modelport.verify.inputs import InputPlan, effective_batch, generate_feeds, hinted_plan

if TYPE_CHECKING:
    import onnx_ir as ir

    from modelport.runners.base import Feeds
    from modelport.runners.onnxruntime import OrtRunner
    from modelport.serve.pipeline import Pipeline, PipelineConfig
    from modelport.serve.repository import ModelConfig

__all__ = [
    "CALLER_MODES",
    "SWEEP_DIMENSIONS",
    "CallerMode",
    "Configuration",
    "Pick",
    "Recommendation",
    "SweepReport",
    "SweepSpec",
    "default_values",
    "load_pipeline_config",
    "parse_dimensions",
    "pipeline_feeds",
    "recommend",
    "run_sweep",
    "synthetic_images",
    "workload_for",
]

logger = logging.getLogger(__name__)

CallerMode = Literal["shared", "sessions"]
#: ``shared``: N threads call one session; ``sessions``: each of N threads has its own session.
CALLER_MODES: tuple[str, ...] = ("shared", "sessions")
#: Dimensions ``--sweep`` names.
SWEEP_DIMENSIONS: tuple[str, ...] = ("batch", "threads", "inter-threads", "callers")
#: Batch sizes ``--sweep batch`` tries when none are listed.
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)
#: Default size (height, width) of the synthetic images sent to an image stage.
DEFAULT_IMAGE_SIZE = (480, 640)

Progress = Callable[[int, int, str], None]


# -------------------------------------------------------------------------------------------------
# what to measure


@dataclass(frozen=True)
class Configuration:
    """One point of a sweep. Threads left None are ONNX Runtime's defaults."""

    batch: int
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    callers: int = 1
    caller_mode: CallerMode = "shared"

    @property
    def sessions(self) -> int:
        """How many sessions this configuration needs."""
        return self.callers if self.caller_mode == "sessions" else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_values(values: Iterable[int | None], what: str, *, allow_none: bool) -> None:
    out = tuple(values)
    if not out:
        raise ConfigError(f"the sweep lists no {what} — give at least one")
    bad = [v for v in out if (v is None and not allow_none) or (v is not None and v < 1)]
    if bad:
        raise ConfigError(f"{what} must be >= 1 (got {', '.join(str(v) for v in bad)})")
    repeated = sorted({str(v) for v in out if out.count(v) > 1})
    if repeated:
        raise ConfigError(f"{what} lists {', '.join(repeated)} more than once — give each value once")


@dataclass(frozen=True)
class SweepSpec:
    """Values of each dimension; every combination is measured."""

    batches: tuple[int, ...] = (1,)
    intra_op_threads: tuple[int | None, ...] = (None,)
    inter_op_threads: tuple[int | None, ...] = (None,)
    callers: tuple[int, ...] = (1,)
    caller_mode: CallerMode = "shared"

    def __post_init__(self) -> None:
        _check_values(self.batches, "batch sizes", allow_none=False)
        _check_values(self.intra_op_threads, "intra-op thread counts", allow_none=True)
        _check_values(self.inter_op_threads, "inter-op thread counts", allow_none=True)
        _check_values(self.callers, "caller counts", allow_none=False)
        if self.caller_mode not in CALLER_MODES:
            raise ConfigError(f"caller mode '{self.caller_mode}' is unknown — use one of: {', '.join(CALLER_MODES)}")

    def configurations(self) -> list[Configuration]:
        """Every combination, grouped so that configurations sharing sessions come together."""
        return [config for _, group in self.session_groups() for config in group]

    def session_groups(self) -> list[tuple[tuple[int | None, int | None, int], list[Configuration]]]:
        """``((intra, inter, sessions), configurations)``: each group runs on one set of sessions."""
        groups: list[tuple[tuple[int | None, int | None, int], list[Configuration]]] = []
        session_counts = self.callers if self.caller_mode == "sessions" else (1,)
        for intra in self.intra_op_threads:
            for inter in self.inter_op_threads:
                for sessions in session_counts:
                    callers = (sessions,) if self.caller_mode == "sessions" else self.callers
                    group = [
                        Configuration(batch, intra, inter, count, self.caller_mode)
                        for batch in self.batches
                        for count in callers
                    ]
                    groups.append(((intra, inter, sessions), group))
        return groups


def _powers_of_two(limit: int) -> tuple[int, ...]:
    values = [1]
    while values[-1] * 2 <= limit:
        values.append(values[-1] * 2)
    if values[-1] != limit:
        values.append(limit)
    return tuple(values)


def default_values(dimension: str, cpus: int | None = None) -> tuple[int, ...]:
    """What ``--sweep DIMENSION`` tries when the dimension's values are not listed.

    batch: 1, 2, 4, ... 32; threads and callers: 1, 2, 4, ... up to the cores (the core count
    included); inter-threads: 1, 2.
    """
    cores = max(1, cpus if cpus is not None else os.cpu_count() or 1)
    if dimension == "batch":
        return DEFAULT_BATCHES
    if dimension in ("threads", "callers"):
        return _powers_of_two(cores)
    if dimension == "inter-threads":
        return (1, 2)
    raise ConfigError(f"cannot sweep '{dimension}' — sweepable: {', '.join(SWEEP_DIMENSIONS)}")


def parse_dimensions(text: str) -> list[str]:
    """``"batch,threads"`` -> ``["batch", "threads"]``; raises ConfigError naming an unknown one."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in SWEEP_DIMENSIONS]
    if unknown or not names:
        shown = ", ".join(repr(n) for n in unknown) or "nothing"
        raise ConfigError(f"--sweep {text!r} names {shown} — sweepable: {', '.join(SWEEP_DIMENSIONS)}")
    return names


# -------------------------------------------------------------------------------------------------
# recommendation


@dataclass
class Pick:
    """A recommended configuration and why."""

    label: str
    configuration: dict[str, Any]
    throughput: float
    median_ms: float
    p99_ms: float
    reason: str

    @classmethod
    def of(cls, result: BenchResult, reason: str) -> Pick:
        return cls(result.label, dict(result.configuration), result.throughput, result.median_ms, result.p99_ms, reason)


@dataclass
class Recommendation:
    """Best configuration for throughput, best for latency (lowest p99 at batch 1), and caveats."""

    throughput: Pick
    latency: Pick
    notes: list[str] = field(default_factory=list)


def _ties(best: BenchResult, others: Iterable[BenchResult], within: Callable[[BenchResult], bool]) -> list[str]:
    return [r.label for r in others if r is not best and within(r)]


def recommend(results: Sequence[BenchResult], *, tolerance: float = DEFAULT_TOLERANCE) -> Recommendation:
    """The configuration with the highest throughput, and the one with the lowest p99 at the smallest batch.

    Only stable results (low CV, windows agreed) compete when there are any; otherwise every
    result does and a note says the picks are tentative. Ties in p99 go to the lower median. A
    note names configurations within ``tolerance`` of a pick (as good, within the noise).
    """
    if not results:
        raise ConfigError("nothing to recommend: no configuration was measured")
    notes: list[str] = []
    stable = [r for r in results if r.stable]
    pool = stable or list(results)
    if not stable:
        notes.append(
            "no configuration measured stable (see the warnings): the picks are tentative — rerun on a quieter "
            "machine or with longer windows"
        )
    elif len(stable) < len(results):
        notes.append(f"{len(results) - len(stable)} unstable configuration(s) did not compete")
    fastest = max(pool, key=lambda r: r.throughput)
    throughput = Pick.of(fastest, f"highest throughput: {fastest.throughput:.4g} items/s")
    tied = _ties(fastest, pool, lambda r: r.throughput >= fastest.throughput * (1 - tolerance))
    if tied:
        notes.append(f"within {tolerance:.0%} of the best throughput: {'; '.join(tied)}")
    smallest = min(r.batch for r in pool)
    if smallest != 1:
        notes.append(f"batch 1 was not measured: the latency pick is at batch {smallest}")
    candidates = [r for r in pool if r.batch == smallest]
    quickest = min(candidates, key=lambda r: (r.p99_ms, r.median_ms))
    latency = Pick.of(
        quickest,
        f"lowest p99 at batch {smallest}: {quickest.p99_ms:.4g} ms (median {quickest.median_ms:.4g} ms)",
    )
    tied = _ties(quickest, candidates, lambda r: r.p99_ms <= quickest.p99_ms * (1 + tolerance))
    if tied:
        notes.append(f"within {tolerance:.0%} of the best p99: {'; '.join(tied)}")
    return Recommendation(throughput, latency, notes)


# -------------------------------------------------------------------------------------------------
# pipeline


def load_pipeline_config(path: str | os.PathLike[str]) -> tuple[PipelineConfig, ModelConfig, Path]:
    """Read a model's ``config.yaml`` that has a ``pipeline:`` key: the pipeline, the whole config, its folder.

    The file is validated exactly as ``modelport serve`` validates it; raises :class:`ConfigError`.
    """
    import pydantic
    import yaml

    from modelport.serve.repository import ModelConfig

    source = Path(path)
    if not source.is_file():
        raise ConfigError(
            f"pipeline config '{source}' is not a file — give the model's config.yaml with a 'pipeline:' key"
        )
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"pipeline config '{source}' cannot be read as YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(
            f"pipeline config '{source}' must be a mapping of settings (key: value), got {type(raw).__name__}"
        )
    if "pipeline" not in raw:
        keys = ", ".join(sorted(str(k) for k in raw)) or "none"
        raise ConfigError(
            f"pipeline config '{source}' has no 'pipeline:' key (its keys: {keys}) — put the preprocess and "
            "postprocess stages under 'pipeline:'"
        )
    try:
        config = ModelConfig.model_validate(raw)
    except pydantic.ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"pipeline config '{source}' is invalid: {problems}") from e
    assert config.pipeline is not None  # the key is there and validated
    return config.pipeline, config, source.parent


def synthetic_images(
    count: int, size: tuple[int, int], *, seed: int = 0, image_format: str = "JPEG"
) -> np.ndarray[Any, Any]:
    """``count`` encoded photo-like images (smooth gradients, a few blocks, mild noise) as a BYTES [count] array.

    Uniform noise is a poor stand-in for a photo: it compresses ten times worse and decodes
    slower, so a pre-processing benchmark on it would overstate the cost.
    """
    from PIL import Image

    height, width = size
    if height < 1 or width < 1:
        raise ConfigError(f"image size {height}x{width} is invalid — give height and width >= 1, e.g. 480x640")
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    cols = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    out = np.empty(count, dtype=object)
    for i in range(count):
        phase = rng.random(3).astype(np.float32)
        pixels = np.stack([(rows * (1 - phase[c]) + cols * phase[c]) * 200 + 25 for c in range(3)], axis=-1)
        for _ in range(4):
            top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
            pixels[top : top + height // 4, left : left + width // 4] = rng.integers(0, 256, 3)
        pixels += rng.normal(0.0, 4.0, pixels.shape).astype(np.float32)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB").save(buffer, format=image_format)
        out[i] = buffer.getvalue()
    return out


def pipeline_feeds(
    pipeline: Pipeline,
    config: PipelineConfig,
    plan: InputPlan,
    *,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
) -> dict[str, np.ndarray[Any, Any]]:
    """What a client sends to ``pipeline`` at ``plan.batch``: JPEGs for image stages, generated values otherwise."""
    from modelport.serve.pipeline import ImageStage

    image_inputs = {stage.input for stage in config.preprocess if isinstance(stage, ImageStage)}
    images = [s for s in pipeline.inputs if s.name in image_inputs and s.dtype == np.dtype(object)]
    others = [s for s in pipeline.inputs if s not in images]
    feeds = generate_feeds(others, plan) if others else {}
    for spec in images:
        feeds[spec.name] = synthetic_images(plan.batch, image_size, seed=plan.seed)
    return feeds


def _describe_inputs(
    pipeline: Pipeline | None,
    config: PipelineConfig | None,
    runner: OrtRunner,
    plan: InputPlan,
    image_size: tuple[int, int],
) -> dict[str, Any]:
    if pipeline is None or config is None:
        return plan.describe(runner.inputs)
    from modelport.serve.pipeline import ImageStage

    image_inputs = {stage.input for stage in config.preprocess if isinstance(stage, ImageStage)}
    described = plan.describe([s for s in pipeline.inputs if s.name not in image_inputs])
    for name in image_inputs & {s.name for s in pipeline.inputs}:
        described[name] = {
            "shape": [plan.batch],
            "dtype": "BYTES",
            "values": f"synthetic photo-like JPEG, {image_size[0]}x{image_size[1]} (height x width)",
        }
    return described


# -------------------------------------------------------------------------------------------------
# the sweep


@dataclass
class SweepReport:
    """Everything a sweep measured, and what it recommends."""

    model: str
    engine: dict[str, Any]
    inputs: dict[str, Any]
    settings: dict[str, Any]
    host: dict[str, Any]
    results: list[BenchResult]
    recommendation: Recommendation
    pipeline: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "engine": self.engine,
            "host": self.host,
            "inputs": self.inputs,
            "settings": self.settings,
            "pipeline": self.pipeline,
            "results": [r.to_dict() for r in self.results],
            "recommendation": asdict(self.recommendation),
        }


def _host() -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
    }


def workload_for(runner: OrtRunner, feeds: Feeds, batch: int, pipeline: Pipeline | None) -> Workload:
    """What one caller runs: the model alone, or staged (a pipeline around it, or copies to a device timed apart)."""
    device = device_of(runner)
    if pipeline is None and device is None:
        return RunnerWorkload(runner, feeds, batch)
    compute = None
    if device is not None:
        compute = IoBindingCompute(runner.session, [s.name for s in runner.outputs], *device)
    return StagedWorkload(runner, feeds, batch, pipeline=pipeline, device=compute)


@dataclass
class _Job:
    """What stays the same across a sweep, and what it has measured so far."""

    name: str
    source: str | ir.Model
    settings: BenchSettings
    plan: InputPlan
    providers: Sequence[str] | Literal["auto"] | None
    pipeline_config: PipelineConfig | None
    model_config: ModelConfig | None
    base_dir: Path
    image_size: tuple[int, int]
    total: int
    progress: Progress | None
    results: list[BenchResult] = field(default_factory=list)
    engine: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    stage_names: list[str] = field(default_factory=list)


def _measure_one(
    job: _Job, runners: Sequence[OrtRunner], pipeline: Pipeline | None, config: Configuration, probe: MemoryProbe
) -> BenchResult:
    specs = pipeline.inputs if pipeline is not None else runners[0].inputs
    batch = effective_batch(specs, config.batch)
    plan = replace(job.plan, batch=batch)
    if pipeline is not None and job.pipeline_config is not None:
        feeds = pipeline_feeds(pipeline, job.pipeline_config, plan, image_size=job.image_size)
    else:
        feeds = generate_feeds(specs, plan)
    workloads = [
        workload_for(runners[i if config.caller_mode == "sessions" else 0], feeds, batch, pipeline)
        for i in range(config.callers)
    ]
    result = measure(
        workloads,
        job.settings,
        name=job.name,
        engine=runners[0].describe(),
        configuration={**config.to_dict(), "batch": batch},
        memory=probe,
    )
    if batch != config.batch:
        result.warnings.append(f"batch {config.batch} requested, but the model fixes axis 0 to {batch}")
    cpus = os.cpu_count() or 1
    if config.intra_op_threads is not None and config.callers * config.intra_op_threads > cpus:
        result.warnings.append(
            f"{config.callers} callers x {config.intra_op_threads} intra-op threads exceed the {cpus} cores: "
            "the threads compete for them"
        )
    return result


def _load(model: ir.Model | str | os.PathLike[str], name: str | None) -> tuple[ir.Model, str | ir.Model, str]:
    """The model for input hints, what the session loads (a path stays a path), and its name."""
    import onnx_ir

    from modelport.ir.serde import load

    if isinstance(model, onnx_ir.Model):
        return model, model, name or model.graph.name or "model"
    loaded = load(model)
    return loaded, str(model), name or loaded.graph.name or Path(model).stem


def _run_group(job: _Job, intra: int | None, inter: int | None, sessions: int, group: list[Configuration]) -> None:
    """Measure the configurations of one group on one set of sessions (created here, freed after)."""
    from modelport.runners.onnxruntime import OrtRunner
    from modelport.serve.pipeline import Pipeline

    probe = MemoryProbe()  # before the sessions exist
    if job.model_config is not None:
        intra = intra if intra is not None else job.model_config.intra_op_threads
        inter = inter if inter is not None else job.model_config.inter_op_threads
    runners = [
        OrtRunner(job.source, providers=job.providers, intra_op_threads=intra, inter_op_threads=inter, name=job.name)
        for _ in range(sessions)
    ]
    with contextlib.ExitStack() as stack:
        for runner in runners:
            stack.enter_context(runner)
        built = None
        if job.pipeline_config is not None:
            built = Pipeline.build(
                job.pipeline_config,
                runners[0].inputs,
                runners[0].outputs,
                base_dir=job.base_dir,
                label=f"model '{job.name}'",
            )
            job.stage_names = built.stage_names
        job.engine = job.engine or runners[0].describe()
        job.inputs = job.inputs or _describe_inputs(built, job.pipeline_config, runners[0], job.plan, job.image_size)
        for config in group:
            actual = replace(config, intra_op_threads=intra, inter_op_threads=inter)
            job.results.append(_measure_one(job, runners, built, actual, probe))
            logger.info("measured %s: %s", job.name, job.results[-1].label)
            if job.progress is not None:
                job.progress(len(job.results), job.total, job.results[-1].label)


def run_sweep(
    model: ir.Model | str | os.PathLike[str],
    spec: SweepSpec | None = None,
    settings: BenchSettings | None = None,
    *,
    plan: InputPlan | None = None,
    pipeline: str | os.PathLike[str] | None = None,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    providers: Sequence[str] | Literal["auto"] | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> SweepReport:
    """Measure ``model`` in every configuration of ``spec`` (ONNX Runtime) and recommend one.

    ``pipeline`` is a model ``config.yaml`` with a ``pipeline:`` key: each iteration then runs
    its pre-process and post-process stages around the model, timed apart. Thread counts the
    spec leaves None come from that config when it sets them, else ONNX Runtime's defaults.
    ``providers`` as for :class:`~modelport.runners.onnxruntime.OrtRunner` (CPU by default); on
    a GPU the copies to and from the device are timed apart. ``progress(done, total, label)`` is
    called after each configuration.
    """
    spec = spec or SweepSpec()
    settings = settings or BenchSettings()
    if image_size[0] < 1 or image_size[1] < 1:
        raise ConfigError(f"image size {image_size[0]}x{image_size[1]} is invalid — height and width must be >= 1")
    loaded, source, label = _load(model, name)
    pipeline_config, model_config, base_dir = load_pipeline_config(pipeline) if pipeline else (None, None, Path())
    job = _Job(
        name=label,
        source=source,
        settings=settings,
        plan=hinted_plan(plan or InputPlan(), loaded),
        providers=providers,
        pipeline_config=pipeline_config,
        model_config=model_config,
        base_dir=base_dir,
        image_size=image_size,
        total=len(spec.configurations()),
        progress=progress,
    )
    for (intra, inter, sessions), group in spec.session_groups():
        _run_group(job, intra, inter, sessions, group)
    return SweepReport(
        model=label,
        engine=job.engine,
        inputs=job.inputs,
        settings=asdict(settings),
        host=_host(),
        results=job.results,
        recommendation=recommend(job.results, tolerance=settings.tolerance),
        pipeline=job.stage_names,
    )
