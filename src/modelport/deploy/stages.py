"""The work of each deploy stage, as functions from models and options to (record, model).

Kept apart from the orchestration in :mod:`modelport.deploy.job` so that each stage is a plain
function of its inputs: exactly what the cache keys on. A record is JSON-able (it is what the cache
stores and the reports render); a stage that produces a model returns it next to the record.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.bench.harness import INTERLEAVED_ORT_CONFIG, bench_interleaved
from modelport.deploy.recipe import CalibrationOptions, QuantizeStage, Source, SurgeryStep, Target, VerifyStage
from modelport.errors import ConfigError, VerificationError
from modelport.quantize.api import QuantizeResult, stack_samples
from modelport.runners.base import Runner
from modelport.verify.inputs import InputPlan, generate_feeds, integer_input_ranges
from modelport.verify.tolerance import SignalTolerance, Tolerance

__all__ = [
    "FP32_TOLERANCE",
    "TARGET_PROVIDERS",
    "CalibrationData",
    "accuracy_stage",
    "bench_stage",
    "choose",
    "compare_stage",
    "export_stage",
    "make_runner",
    "module_hash",
    "quantize_stage",
    "surgery_stage",
]

logger = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray[Any, Any]]

#: FP32 final vs FP32 input, both under ORT's full optimizations: the verified pass budget plus
#: the reassociation noise of ORT's own fusions.
FP32_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4)

#: ONNX Runtime execution providers per target (openvino has its own runner).
TARGET_PROVIDERS: dict[str, list[str]] = {
    "cpu": ["CPUExecutionProvider"],
    "gpu": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}

#: Surgery recipes that must not change the outputs the model already had.
_EXACT_SURGERY = frozenset({"focus", "identity-output"})


def make_runner(
    model: ir.Model, target: Target, threads: int | None, name: str, *, interleaved: bool = False
) -> Runner:
    """The runner for ``target`` (a missing provider or package is a clear BackendError on activation).

    ``interleaved``: the runner will be timed against another one (see ``INTERLEAVED_ORT_CONFIG``).
    """
    if target == "openvino":
        from modelport.runners import create_runner

        return create_runner("openvino", model, name=name)
    from modelport.runners.onnxruntime import OrtRunner

    config = INTERLEAVED_ORT_CONFIG if interleaved else None
    return OrtRunner(
        model, providers=TARGET_PROVIDERS[target], intra_op_threads=threads, name=name, session_config=config
    )


# source ------------------------------------------------------------------------------------------


def module_hash(module: Any) -> str:
    """Content hash of a PyTorch module: its class source and every parameter and buffer."""
    digest = hashlib.sha256()
    cls = type(module)
    digest.update(f"{cls.__module__}.{cls.__qualname__}".encode())
    try:
        digest.update(inspect.getsource(cls).encode())
    except (OSError, TypeError):
        digest.update(b"<no source>")
    for name, tensor in sorted(module.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def export_stage(loaded: Any, source: Source, options: Any) -> tuple[dict[str, Any], ir.Model]:
    """Export a loaded PyTorch module to ONNX and validate it against eager PyTorch."""
    from modelport.export.specs import parse_input_specs
    from modelport.export.torch_export import export_torch
    from modelport.ir.serde import load, to_bytes

    specs = parse_input_specs(source.inputs) if source.inputs else None
    with tempfile.TemporaryDirectory(prefix="modelport-export-") as tmp:
        result = export_torch(
            loaded.module,
            Path(tmp) / "model.onnx",
            inputs=specs,
            example_inputs=loaded.example_inputs,
            dynamic_axes=options.dynamic_axes or None,
            opset=options.opset,
            exporter=options.exporter,
        )
        result.raise_for_mismatch()
        model = load(Path(tmp) / "model.onnx")
        model = load(to_bytes(model))  # detached from the temporary folder
    return result.to_dict(), model


# surgery -----------------------------------------------------------------------------------------


def surgery_stage(
    model: ir.Model, steps: Sequence[SurgeryStep], threads: int | None
) -> tuple[dict[str, Any], ir.Model]:
    """Apply the surgery recipes in order; outputs the model already had are compared after each."""
    from modelport.ir.serde import check_model, clone
    from modelport.runners.onnxruntime import OrtRunner
    from modelport.surgery.recipes import RECIPES
    from modelport.verify.compare import compare_runners

    rows = []
    current = model
    for step in steps:
        edited = RECIPES[step.recipe](clone(current), **step.options)
        check_model(edited)
        with (
            OrtRunner(current, intra_op_threads=threads, name="before") as ref,
            OrtRunner(edited, intra_op_threads=threads, name=f"after {step.recipe}") as cand,
        ):
            shared = [o.name for o in cand.outputs if o.name in {r.name for r in ref.outputs}]
            feeds = generate_feeds(ref.inputs, InputPlan(int_ranges=integer_input_ranges(current)))
            report = compare_runners(cand, ref, tolerance=FP32_TOLERANCE, data=[("generated", feeds)])
        kept = [d for run in report.runs for d in run.diffs if d.name in shared]
        passed = all(d.passed for d in kept)
        if step.recipe in _EXACT_SURGERY and not passed:
            worst = ", ".join(f"'{d.name}' max abs {d.max_abs:.3g}" for d in kept if not d.passed)
            raise VerificationError(
                f"surgery '{step.recipe}' changed outputs it must keep ({FP32_TOLERANCE}): {worst} — check its options"
            )
        rows.append(
            {
                "recipe": step.recipe,
                "options": step.options,
                "nodes_before": len(list(current.graph)),
                "nodes_after": len(list(edited.graph)),
                "outputs": [o.name for o in edited.graph.outputs],
                "shared_outputs_compared": shared,
                "passed": passed,
                "intended_change": step.recipe not in _EXACT_SURGERY,
                "compare": report.to_dict(),
            }
        )
        current = edited
    return {"steps": rows}, current


# quantize ----------------------------------------------------------------------------------------


class CalibrationData:
    """The samples calibration, verify and bench run on, loaded only when a stage really runs.

    ``digest`` names their content without loading them (it is part of the cache keys): the files'
    hash plus the preprocessing for user data, or what the samples are generated from. A re-run whose
    stages are all reused therefore never decodes the images.
    """

    def __init__(self, model: ir.Model, options: CalibrationOptions, builtin: bool) -> None:
        from modelport.deploy.cache import hash_path

        self._model, self._options, self._builtin = model, options, builtin
        self._samples: list[Feeds] | None = None
        if options.data is not None:
            self.digest = hash_path(options.data) + f":{options.preprocess or ''}"
            self._source = f"samples from {options.data}"
        elif builtin:
            self.digest, self._source = "builtin", "built-in example images"
        else:
            self.digest = "generated"
            self._source = (
                "GENERATED samples (no calibration data given): INT8 ranges and errors are not representative"
            )

    @property
    def samples(self) -> list[Feeds]:
        if self._samples is None:
            self._samples = self._load()
        return self._samples

    @property
    def description(self) -> str:
        if self._samples is None:
            return f"{self._source} (not loaded: every stage that uses them was reused)"
        return f"{len(self._samples)} {self._source}"

    def _load(self) -> list[Feeds]:
        from modelport.deploy.example import EXAMPLE_INPUT, example_calibration
        from modelport.ir.specs import specs_of
        from modelport.quantize.calibration import load_calibration, parse_preprocess

        specs = specs_of(self._model.graph.inputs)
        options = self._options
        if options.data is not None:
            pre = parse_preprocess(options.preprocess) if options.preprocess else None
            return load_calibration(options.data, specs, preprocess=pre)
        if self._builtin:
            return [{EXAMPLE_INPUT: x[None]} for x in example_calibration()]
        ranges = integer_input_ranges(self._model)
        return [generate_feeds(specs, InputPlan(seed=i, int_ranges=ranges)) for i in range(16)]


def choose(result: QuantizeResult, keep: str, target: Target = "cpu") -> tuple[bool, str]:
    """Whether to ship the quantized model, and why."""
    from modelport.quantize.hardware import int8_acceleration

    if keep == "always":
        return True, f"{result.mode} shipped as asked (keep: always)"
    failure = result.accuracy_failure
    if failure:
        return False, f"{result.mode} failed the accuracy floor ({failure}); shipping FP32"
    if result.slower:
        return False, f"{result.mode} was slower than FP32 ({result.speedup:.2f}x); shipping FP32"
    speed = f"{result.speedup:.2f}x faster than FP32 at batch N" if result.speedup else "measured against FP32"
    if target != "cpu":
        return True, f"{result.mode} is {speed} (measured on {target})"
    accel = int8_acceleration()
    hw = f"CPU has {', '.join(accel)}" if accel else "no VNNI/AMX, but measured faster"
    return True, f"{result.mode} is {speed} ({hw if result.mode.startswith('int8') else 'CPU'})"


def _budget(model: ir.Model, options: QuantizeStage, verify: VerifyStage) -> Any:
    from modelport.ir.specs import specs_of
    from modelport.quantize.calibration import parse_preprocess
    from modelport.quantize.mixed import AccuracyBudget
    from modelport.verify.dataset import load_dataset

    if options.min_sqnr_db is not None:
        return AccuracyBudget.floor(options.min_sqnr_db)
    if options.max_accuracy_drop is None or verify.dataset is None or verify.metric is None:
        return None
    pre = parse_preprocess(verify.preprocess) if verify.preprocess else None
    dataset = load_dataset(verify.dataset, specs_of(model.graph.inputs), preprocess=pre)
    return AccuracyBudget.task(dataset, verify.metric, max_drop=options.max_accuracy_drop)


def quantize_stage(
    model: ir.Model,
    options: QuantizeStage,
    verify: VerifyStage,
    samples: list[Feeds],
    seconds: float,
    threads: int | None,
    target: Target = "cpu",
) -> tuple[dict[str, Any], ir.Model | None]:
    """Quantize, measure against FP32 on the target's providers, and decide; the model is returned only to ship."""
    from modelport.quantize.api import quantize

    budget = _budget(model, options, verify)
    batch = verify.batch
    result = quantize(
        model,
        options.mode,
        calibration=samples if options.mode == "int8-static" else None,
        per_channel=options.per_channel,
        method=options.calibration.method,
        budget=budget,
        sensitivity=options.sensitivity and options.mode == "int8-static",
        eval_samples=samples[:32],
        bench_batch=batch,
        bench_seconds=seconds,
        threads=threads,
        providers=TARGET_PROVIDERS.get(target),
    )
    ship, reason = choose(result, options.keep, target)
    record = {**result.to_dict(), "shipped": ship, "reason": reason}
    return record, (result.model if ship else None)


# compare / accuracy / bench ------------------------------------------------------------------------


def compare_stage(
    source: ir.Model,
    final: ir.Model,
    chosen: str,
    samples: Sequence[Feeds],
    options: VerifyStage,
    target: Target,
    threads: int | None,
) -> dict[str, Any]:
    """Final vs input model at batch 1 and N: elementwise for FP32, SQNR/cosine floor when lossy."""
    from modelport.quantize.api import FLOORS
    from modelport.verify.compare import compare_runners

    data = [
        ("calibration samples", stack_samples(samples, 1)),
        (f"calibration samples x{options.batch}", stack_samples(samples, options.batch)),
    ]
    with (
        make_runner(source, "cpu", threads, "input fp32") as ref,
        make_runner(final, target, threads, f"final {chosen}") as cand,
    ):
        if chosen != "fp32":
            floor: SignalTolerance = FLOORS[chosen]
            report = compare_runners(cand, ref, tolerance=Tolerance(0.0, 0.0), data=data)
            _apply_floor(report, floor)
            criterion = str(floor)
        else:
            report = compare_runners(cand, ref, tolerance=FP32_TOLERANCE, data=data)
            criterion = str(FP32_TOLERANCE)
    return {"report": report.to_dict(), "criterion": criterion, "passed": report.passed}


def _apply_floor(report: Any, floor: SignalTolerance) -> None:
    """Judge a lossy comparison by SQNR/cosine instead of elementwise bounds."""
    for run in report.runs:
        for diff in run.diffs:
            why = floor.check(diff.sqnr_db, diff.cosine)
            diff.passed = why is None and diff.nan_candidate == diff.nan_reference
            diff.reason = why or "ok"
            diff.tolerance = str(floor)


def accuracy_stage(
    source: ir.Model, final: ir.Model, options: VerifyStage, target: Target, threads: int | None
) -> dict[str, Any]:
    """The task metric of both models on the labelled dataset."""
    from modelport.ir.specs import specs_of
    from modelport.quantize.calibration import parse_preprocess
    from modelport.verify.accuracy import compare_accuracy, resolve_metric
    from modelport.verify.dataset import load_dataset

    if options.dataset is None or options.metric is None:
        raise ConfigError("the accuracy stage needs stages.verify.dataset and metric")
    pre = parse_preprocess(options.preprocess) if options.preprocess else None
    dataset = load_dataset(options.dataset, specs_of(source.graph.inputs), preprocess=pre)
    metric = resolve_metric(options.metric)
    with (
        make_runner(source, "cpu", threads, "input fp32") as ref,
        make_runner(final, target, threads, "final") as cand,
    ):
        report = compare_accuracy(cand, ref, dataset, metric, batch_size=1)
    return report.to_dict()


def bench_stage(
    source: ir.Model,
    final: ir.Model,
    chosen: str,
    samples: Sequence[Feeds],
    batches: Sequence[int],
    seconds: float,
    target: Target,
    threads: int | None,
) -> dict[str, Any]:
    """Input FP32 and final model side by side (interleaved) at every batch size."""
    results = []
    with (
        make_runner(source, target, threads, "fp32 (input)", interleaved=True) as ref,
        make_runner(final, target, threads, f"final ({chosen})", interleaved=True) as cand,
    ):
        for b in sorted(set(batches)):
            results.extend(bench_interleaved([ref, cand], stack_samples(samples, b), duration=seconds))
    return {"results": [r.to_dict() for r in results], "target": target}
