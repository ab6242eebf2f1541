"""``deploy``: the main job — inspect, optimize, quantize, compare, bench, write a repository.

Each stage is verified: the optimizer checks every pass; quantization is compared with FP32 on
real (calibration) inputs and timed next to it; the final model is compared with the model the
user gave at batch 1 and at batch N, and both are benchmarked side by side. An INT8 model that
is slower than FP32, or below its accuracy floor, is not shipped: the FP32 model is, and the
report says why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import yaml

from modelport.bench.harness import BenchResult, bench_interleaved
from modelport.errors import ConfigError
from modelport.ir.serde import load, save
from modelport.ir.summary import ModelSummary, summarize
from modelport.pack.checksum import write_manifest
from modelport.passes.manager import OptimizeResult, optimize
from modelport.quantize.api import QuantizeResult, quantize, stack_samples
from modelport.quantize.calibration import ImagePreprocess, load_calibration
from modelport.quantize.hardware import int8_acceleration
from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.compare import CompareReport, compare_runners
from modelport.verify.inputs import InputPlan, generate_feeds, integer_input_ranges
from modelport.verify.tolerance import SignalTolerance, Tolerance

__all__ = ["FP32_TOLERANCE", "STAGES", "DeployResult", "deploy"]

logger = logging.getLogger(__name__)

#: FP32 final vs FP32 input, both under ORT's full optimizations: the verified pass budget plus
#: the reassociation noise of ORT's own fusions.
FP32_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4)
STAGES = ("inspect", "optimize", "quantize", "compare", "bench", "write")
Feeds = dict[str, np.ndarray[Any, Any]]
Progress = Callable[[str, str], None]


@dataclass
class DeployResult:
    """Everything ``deploy`` measured and wrote."""

    name: str
    outdir: Path
    source: str
    summary: ModelSummary
    optimized: OptimizeResult
    calibration: str
    quantized: QuantizeResult | None
    chosen: str
    choice_reason: str
    comparison: CompareReport
    comparison_floor: str
    bench: list[BenchResult] = field(default_factory=list)
    repository: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "outdir": str(self.outdir),
            "summary": self.summary.to_dict(),
            "optimize": self.optimized.to_dict(),
            "calibration": self.calibration,
            "quantize": self.quantized.to_dict() if self.quantized else None,
            "chosen": self.chosen,
            "choice_reason": self.choice_reason,
            "compare": self.comparison.to_dict(),
            "compare_floor": self.comparison_floor,
            "compare_passed": self.comparison_passed,
            "bench": [b.to_dict() for b in self.bench],
            "repository": str(self.repository) if self.repository else None,
            "warnings": self.warnings,
        }

    @property
    def comparison_passed(self) -> bool:
        return self.comparison.passed


def _calibration(
    model: ir.Model,
    calib: str | os.PathLike[str] | None,
    preprocess: ImagePreprocess | None,
    builtin: bool,
) -> tuple[list[Feeds], str]:
    from modelport.deploy.example import EXAMPLE_INPUT, example_calibration
    from modelport.ir.specs import specs_of

    specs = specs_of(model.graph.inputs)
    if calib is not None:
        samples = load_calibration(calib, specs, preprocess=preprocess)
        return samples, f"{len(samples)} samples from {calib}"
    if builtin:
        images = example_calibration()
        return [{EXAMPLE_INPUT: x[None]} for x in images], f"{len(images)} built-in example images"
    plan = InputPlan(int_ranges=integer_input_ranges(model))
    samples = [generate_feeds(specs, InputPlan(seed=i, int_ranges=plan.int_ranges)) for i in range(16)]
    return (
        samples,
        "16 GENERATED samples (no --calib given): INT8 ranges and errors are not representative",
    )


def _choose(result: QuantizeResult | None, accel: list[str]) -> tuple[str, str]:
    if result is None:
        return "fp32", "no INT8 candidate"
    failure = result.accuracy_failure
    if failure:
        return "fp32", f"INT8 failed the accuracy floor ({failure}); shipping FP32"
    if result.slower:
        return "fp32", f"INT8 was slower than FP32 ({result.speedup:.2f}x); shipping FP32"
    hw = f"CPU has {', '.join(accel)}" if accel else "no VNNI/AMX, but measured faster"
    return (
        "int8-static",
        f"INT8 static QDQ is {result.speedup:.2f}x faster than FP32 at batch N ({hw})",
    )


def deploy(
    model: ir.Model | str | os.PathLike[str] | None = None,
    outdir: str | os.PathLike[str] = "deploy-out",
    *,
    calib: str | os.PathLike[str] | None = None,
    preprocess: ImagePreprocess | None = None,
    batch: int = 8,
    bench_seconds: float = 2.0,
    threads: int | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> DeployResult:
    """Run the whole path on ``model`` (default: the built-in example) and write ``outdir``."""
    from modelport.deploy.example import example_model

    say: Progress = progress or (lambda stage, text: logger.info("%s: %s", stage, text))
    builtin = model is None
    if model is None:
        source_model, source, name = (
            example_model(),
            "built-in example ResNet-style CNN",
            name or "example_resnet",
        )
    elif isinstance(model, ir.Model):
        source_model, source = model, "in-memory model"
    else:
        source_model, source = load(model), str(model)
    name = name or (Path(str(model)).stem if not isinstance(model, ir.Model) and model is not None else "model")
    _check_name(name)
    out = Path(outdir)
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")

    say("inspect", "reading the model")
    summary = summarize(source_model)
    say("optimize", "running passes, verifying each")
    optimized = optimize(source_model, batches=(1, batch))
    say("quantize", "calibrating INT8 and timing it against FP32")
    samples, calib_text = _calibration(optimized.model, calib, preprocess, builtin)
    accel = int8_acceleration()
    qres = quantize(
        optimized.model,
        "int8-static",
        calibration=samples,
        bench_batch=batch,
        bench_seconds=min(bench_seconds, 1.5),
        threads=threads,
    )
    chosen, reason = _choose(qres, accel)
    final = qres.model if chosen == "int8-static" else optimized.model
    say("compare", f"{chosen} vs the input model at batch 1 and {batch}")
    comparison, floor_text = _compare(source_model, final, chosen, samples, batch, threads)
    say("bench", f"input FP32 vs final {chosen}, batch 1 and {batch}")
    benches = _bench(source_model, final, chosen, samples, batch, bench_seconds, threads)
    say("write", f"repository and report under {out}")
    result = DeployResult(
        name,
        out,
        source,
        summary,
        optimized,
        calib_text,
        qres,
        chosen,
        reason,
        comparison,
        floor_text,
        benches,
    )
    result.warnings.extend(qres.warnings)
    if not comparison.passed:
        result.warnings.append(f"final model does NOT match the input model within {floor_text}")
    result.repository = _write_repository(out, name, final, summary, batch, threads)
    from modelport.deploy.report import write_reports

    write_reports(result)
    return result


def _check_name(name: str) -> None:
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ConfigError(f"model name '{name}' must be a plain folder name (no slashes or spaces)")


def _compare(
    source: ir.Model,
    final: ir.Model,
    chosen: str,
    samples: Sequence[Feeds],
    batch: int,
    threads: int | None,
) -> tuple[CompareReport, str]:
    data = [
        ("calibration samples", stack_samples(samples, 1)),
        (f"calibration samples x{batch}", stack_samples(samples, batch)),
    ]
    with (
        OrtRunner(source, intra_op_threads=threads, name="input fp32") as ref,
        OrtRunner(final, intra_op_threads=threads, name=f"final {chosen}") as cand,
    ):
        if chosen == "int8-static":
            from modelport.quantize.api import FLOORS

            floor: SignalTolerance = FLOORS["int8-static"]
            report = compare_runners(cand, ref, tolerance=Tolerance(0.0, 0.0), data=data)
            _apply_floor(report, floor)
            return report, str(floor)
        report = compare_runners(cand, ref, tolerance=FP32_TOLERANCE, data=data)
        return report, str(FP32_TOLERANCE)


def _apply_floor(report: CompareReport, floor: SignalTolerance) -> None:
    """Judge a lossy comparison by SQNR/cosine instead of elementwise bounds."""
    for run in report.runs:
        for diff in run.diffs:
            why = floor.check(diff.sqnr_db, diff.cosine)
            diff.passed = why is None and diff.nan_candidate == diff.nan_reference
            diff.reason = why or "ok"
            diff.tolerance = str(floor)


def _bench(
    source: ir.Model,
    final: ir.Model,
    chosen: str,
    samples: Sequence[Feeds],
    batch: int,
    seconds: float,
    threads: int | None,
) -> list[BenchResult]:
    results = []
    with (
        OrtRunner(source, intra_op_threads=threads, name="fp32 (input)") as ref,
        OrtRunner(final, intra_op_threads=threads, name=f"final ({chosen})") as cand,
    ):
        for b in sorted({1, batch}):
            results.extend(bench_interleaved([ref, cand], stack_samples(samples, b), duration=seconds))
    return results


def _write_repository(
    out: Path, name: str, model: ir.Model, summary: ModelSummary, batch: int, threads: int | None
) -> Path:
    repo = out / "repository"
    version_dir = repo / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    save(model, version_dir / "model.onnx")
    dynamic_batch = all(s.shape and not isinstance(s.shape[0], int) for s in summary.inputs)
    config: dict[str, Any] = {
        "platform": "onnxruntime_onnx",
        "max_batch_size": batch if dynamic_batch else 0,
        "instance_count": 1,
    }
    if threads:
        config["intra_op_threads"] = threads
    tmp = repo / name / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, repo / name / "config.yaml")
    write_manifest(repo)
    return repo
