"""``quantize``: convert, then prove it — output error against FP32 and speed against FP32."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx_ir as ir

from modelport.bench.harness import INTERLEAVED_ORT_CONFIG, BenchResult, bench_interleaved
from modelport.errors import QuantizationError
from modelport.ir.summary import quantization_kind
from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.compare import CompareReport, compare_runners
from modelport.verify.inputs import InputPlan, generate_feeds, integer_input_ranges
from modelport.verify.tolerance import EXACT, SignalTolerance

if TYPE_CHECKING:
    from modelport.quantize.dynamic import DynamicAdvice
    from modelport.quantize.fp16 import Fp16Conversion
    from modelport.quantize.int8 import QatSummary
    from modelport.quantize.mixed import AccuracyBudget, MixedResult
    from modelport.quantize.ranges import RangeSet
    from modelport.quantize.sensitivity import SensitivityTable

__all__ = ["FLOORS", "Mode", "QuantizeResult", "quantize", "stack_samples"]

logger = logging.getLogger(__name__)

Mode = Literal["fp16", "int8-dynamic", "int8-static"]
Feeds = dict[str, np.ndarray[Any, Any]]

#: Default accuracy floors per mode.
FLOORS: dict[str, SignalTolerance] = {
    "int8-static": SignalTolerance(min_sqnr_db=20.0, min_cosine=0.99),
    "int8-dynamic": SignalTolerance(min_sqnr_db=20.0, min_cosine=0.99),
    "fp16": SignalTolerance(min_sqnr_db=40.0, min_cosine=0.9999),
}


@dataclass
class QuantizeResult:
    """The converted model, how far its outputs moved, and how fast it is next to FP32."""

    model: ir.Model
    mode: str
    settings: dict[str, Any]
    comparison: CompareReport
    floor: SignalTolerance
    fp32_bench: BenchResult | None = None
    quant_bench: BenchResult | None = None
    warnings: list[str] = field(default_factory=list)
    #: Activation ranges the INT8 model was calibrated with (int8-static).
    ranges: RangeSet | None = None
    #: Output error with each layer alone in INT8, most sensitive first (when asked for, or with a budget).
    sensitivity: SensitivityTable | None = None
    #: Mixed precision to an accuracy budget: the layers kept in FP32 and why.
    mixed: MixedResult | None = None
    #: Dynamic INT8: where the model's work is and how it measured against FP32.
    dynamic: DynamicAdvice | None = None
    #: FP16: the nodes kept in FP32 and why (op block list, measured range check).
    fp16: Fp16Conversion | None = None
    #: Set when the model came in already quantized (QAT): it is validated and left as it is.
    qat: QatSummary | None = None

    @property
    def worst_sqnr_db(self) -> float:
        return min((d.sqnr_db for r in self.comparison.runs for d in r.diffs), default=float("inf"))

    @property
    def worst_cosine(self) -> float:
        return min((d.cosine for r in self.comparison.runs for d in r.diffs), default=1.0)

    @property
    def accuracy_failure(self) -> str | None:
        for run in self.comparison.runs:
            for d in run.diffs:
                why = self.floor.check(d.sqnr_db, d.cosine)
                if why:
                    return f"output '{d.name}' at batch {run.batch} ({run.fill}): {why}"
        return None

    @property
    def speedup(self) -> float | None:
        if self.fp32_bench is None or self.quant_bench is None:
            return None
        return self.fp32_bench.median_ms / self.quant_bench.median_ms

    @property
    def slower(self) -> bool:
        return self.speedup is not None and self.speedup < 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "settings": self.settings,
            "floor": str(self.floor),
            "worst_sqnr_db": self.worst_sqnr_db,
            "worst_cosine": self.worst_cosine,
            "accuracy_failure": self.accuracy_failure,
            "speedup": self.speedup,
            "slower_than_fp32": self.slower,
            "fp32_bench": self.fp32_bench.to_dict() if self.fp32_bench else None,
            "quant_bench": self.quant_bench.to_dict() if self.quant_bench else None,
            "comparison": self.comparison.to_dict(),
            "warnings": self.warnings,
            "calibration": _calibration_dict(self.ranges),
            "sensitivity": self.sensitivity.to_dict() if self.sensitivity else None,
            "mixed_precision": self.mixed.to_dict() if self.mixed else None,
            "dynamic": self.dynamic.to_dict() if self.dynamic else None,
            "fp16_kept_fp32": dict(self.fp16.blocked) if self.fp16 else None,
            "already_quantized": self.qat.to_dict() if self.qat else None,
        }


def _calibration_dict(ranges: RangeSet | None) -> dict[str, Any] | None:
    if ranges is None:
        return None
    return {
        "method": ranges.method,
        "samples": ranges.samples,
        "tensors": len(ranges.ranges),
        "from_cache": ranges.from_cache,
        "key": ranges.key,
    }


def stack_samples(samples: Sequence[Feeds], batch: int) -> Feeds:
    """Concatenate the first ``batch`` single-sample feeds into one batch (cycling if short)."""
    chosen = [samples[i % len(samples)] for i in range(batch)]
    return {name: np.concatenate([s[name] for s in chosen], axis=0) for name in chosen[0]}


def _eval_data(model: ir.Model, samples: Sequence[Feeds] | None, batch: int, specs: Any) -> list[tuple[str, Feeds]]:
    """Inputs the comparison runs on: real samples when there are any, generated otherwise."""
    if samples:
        return [
            ("calibration samples", stack_samples(samples, 1)),
            (f"calibration samples x{batch}", stack_samples(samples, batch)),
        ]
    plan = InputPlan(int_ranges=integer_input_ranges(model))
    return [
        ("random", generate_feeds(specs, plan)),
        (
            f"random x{batch}",
            generate_feeds(specs, InputPlan(batch=batch, int_ranges=plan.int_ranges, seed=1)),
        ),
    ]


def _head(calibration: Sequence[Feeds] | Callable[[], Iterable[Feeds]] | None, count: int) -> list[Feeds]:
    """Up to ``count`` calibration samples as a list (a reader function is read only that far)."""
    if calibration is None:
        return []
    if callable(calibration):
        samples: list[Feeds] = []
        for sample in calibration():
            samples.append(sample)
            if len(samples) == count:
                break
        return samples
    return list(calibration[:count])


@dataclass
class _Options:
    """What ``quantize`` was asked for, handed to the per-mode converters."""

    calibration: Sequence[Feeds] | Callable[[], Iterable[Feeds]] | None
    per_channel: bool
    method: str
    activation_symmetric: bool
    calibration_options: Mapping[str, Any]
    budget: AccuracyBudget | None
    sensitivity: bool
    eval_samples: list[Feeds]
    force: bool
    bench_seconds: float
    threads: int | None


def _static(model: ir.Model, options: _Options, result: dict[str, Any]) -> ir.Model:
    from modelport.quantize.int8 import quantize_static
    from modelport.quantize.mixed import mixed_precision
    from modelport.quantize.ranges import collect_ranges
    from modelport.quantize.sensitivity import layer_sensitivity

    if options.calibration is None or (not callable(options.calibration) and not options.calibration):
        raise QuantizationError(
            "int8-static needs calibration data — pass --calib with an .npy/.npz file, a folder of images "
            "or a package.module:function that yields feeds"
        )
    ranges = collect_ranges(
        model,
        options.calibration,
        method=options.method,  # type: ignore[arg-type]
        **dict(options.calibration_options),
    )
    result["ranges"] = ranges
    quant: dict[str, Any] = {"per_channel": options.per_channel, "activation_symmetric": options.activation_symmetric}
    if options.budget is not None:
        mixed = mixed_precision(
            model, options.eval_samples, options.budget, eval_samples=options.eval_samples, ranges=ranges, **quant
        )
        result["mixed"], result["sensitivity"] = mixed, mixed.sensitivity
        if not mixed.met:
            result["warnings"].append(f"the accuracy budget is not met: {mixed.why}")
        elif quantization_kind(mixed.model) == "none":
            result["warnings"].append(f"only FP32 meets the accuracy budget: {mixed.why}")
        if options.sensitivity and result["sensitivity"] is None:  # full INT8 met it: no ranking was needed
            result["sensitivity"] = layer_sensitivity(model, options.eval_samples, ranges=ranges, **quant)
        return mixed.model
    if options.sensitivity:
        result["sensitivity"] = layer_sensitivity(model, options.eval_samples, ranges=ranges, **quant)
    return quantize_static(model, ranges=ranges, **quant)


def _dynamic(model: ir.Model, options: _Options, result: dict[str, Any]) -> ir.Model:
    from modelport.quantize.dynamic import advise_dynamic

    feeds = stack_samples(options.eval_samples, 1) if options.eval_samples else None
    advice = advise_dynamic(
        model,
        feeds=feeds,
        seconds=options.bench_seconds,
        force=options.force,
        per_channel=options.per_channel,
        threads=options.threads,
    )
    result["dynamic"] = advice
    result["warnings"].extend(advice.warnings)
    return advice.model


def _fp16(model: ir.Model, options: _Options, result: dict[str, Any]) -> ir.Model:
    from modelport.quantize.fp16 import convert_fp16

    conversion = convert_fp16(model, feeds=options.eval_samples or None)
    result["fp16"] = conversion
    return conversion.model


_CONVERTERS: dict[str, Callable[[ir.Model, _Options, dict[str, Any]], ir.Model]] = {
    "int8-static": _static,
    "int8-dynamic": _dynamic,
    "fp16": _fp16,
}


def default_method(calibration: object) -> str:
    """The calibration method used when none is given: ``mse`` when the samples can be read twice.

    MSE needs two passes (ranges, then histograms); on the ResNet-18 benchmark it is the one method that
    reaches 30 dB at full INT8 speed (benchmarks/RESULTS.md). A one-shot iterator can only be read once,
    so it gets ``minmax`` (one pass) instead of an error.
    """
    if calibration is None or callable(calibration) or isinstance(calibration, Sequence):
        return "mse"
    logger.info("calibration samples are a one-shot iterator: minmax calibration (mse needs two passes)")
    return "minmax"


def quantize(
    model: ir.Model,
    mode: Mode,
    *,
    calibration: Sequence[Feeds] | Callable[[], Iterable[Feeds]] | None = None,
    per_channel: bool = True,
    method: str | None = None,
    activation_symmetric: bool = False,
    calibration_options: Mapping[str, Any] | None = None,
    budget: AccuracyBudget | None = None,
    sensitivity: bool = False,
    eval_samples: Sequence[Feeds] | None = None,
    force: bool = False,
    floor: SignalTolerance | None = None,
    bench_batch: int = 8,
    bench_seconds: float = 1.5,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
) -> QuantizeResult:
    """Quantize ``model`` and measure output error and speed against the FP32 model.

    ``calibration`` is a list of single-sample feeds or a function returning a fresh iterable of
    them (streamed: see :func:`~modelport.quantize.ranges.collect_ranges`, which
    ``calibration_options`` such as ``memory_budget_mb`` and ``cache_dir`` go to). int8-static
    calibrates once with ``method`` (default: :func:`default_method`); with a ``budget`` it keeps the
    fewest most-sensitive layers in FP32 that meet it (:func:`~modelport.quantize.mixed.mixed_precision`),
    and ``sensitivity=True`` adds the per-layer table. int8-dynamic refuses conv-heavy models unless
    ``force``. Output error is measured on ``eval_samples`` (default: the first 32 calibration samples) at batch 1 and
    ``bench_batch``, otherwise on generated inputs. A result slower than FP32, or below the accuracy
    floor, is returned with a loud warning — never silently. ``providers`` are the ONNX Runtime
    execution providers the comparison and the timing run on (default: CPU) — FP16 pays on a GPU,
    not on most CPUs, so the decision must be measured where the model will run. An already-quantized (QAT) model is
    validated and returned as it is.
    """
    if mode not in _CONVERTERS:
        raise QuantizationError(f"unknown mode '{mode}' — choose fp16, int8-dynamic or int8-static")
    if quantization_kind(model) != "none":
        return _already_quantized(model, mode, threads)
    options = _Options(
        calibration,
        per_channel,
        method or default_method(calibration),
        activation_symmetric,
        calibration_options or {},
        budget,
        sensitivity,
        list(eval_samples) if eval_samples is not None else _head(calibration, 32),
        force,
        bench_seconds,
        threads,
    )
    extra: dict[str, Any] = {"warnings": []}
    quantized = _CONVERTERS[mode](model, options, extra)
    if floor is None:
        # A signal budget is the user's own floor; otherwise the mode's default.
        floor = budget.signal if budget is not None and budget.signal is not None else FLOORS[mode]
    quiet = INTERLEAVED_ORT_CONFIG  # the two are timed against each other
    with (
        OrtRunner(model, providers=providers, intra_op_threads=threads, name="fp32", session_config=quiet) as ref,
        OrtRunner(quantized, providers=providers, intra_op_threads=threads, name=mode, session_config=quiet) as cand,
    ):
        data = _eval_data(model, options.eval_samples, bench_batch, ref.inputs)
        comparison = compare_runners(cand, ref, tolerance=EXACT, data=data)
        fp32_bench, quant_bench = bench_interleaved([ref, cand], data[-1][1], duration=2 * bench_seconds)
    settings = _settings(mode, options, len(options.eval_samples))
    if extra.get("ranges") is not None:
        settings["calibration_samples"] = extra["ranges"].samples
    result = QuantizeResult(quantized, mode, settings, comparison, floor, fp32_bench, quant_bench, **extra)
    _warn(result, bench_batch)
    return result


def _settings(mode: str, options: _Options, eval_count: int) -> dict[str, Any]:
    from modelport.quantize.hardware import default_int8_settings

    settings: dict[str, Any] = {"per_channel": options.per_channel, "evaluation_samples": eval_count}
    if mode == "int8-static":
        hw = default_int8_settings()
        act = "S8" if hw["activation_type"] == "int8" else "U8"
        settings.update(
            method=options.method,
            activation_symmetric=options.activation_symmetric,
            format=f"QDQ ({act}S8{', reduced range' if hw['reduce_range'] else ''})",
            hardware=hw["reason"],
        )
    else:
        settings["format"] = mode
    return settings


def _already_quantized(model: ir.Model, mode: str, threads: int | None) -> QuantizeResult:
    """A QAT (or otherwise quantized) model: check its Q/DQ pairs, run it, and leave it as it is.

    The check that remains meaningful without the FP32 original: ONNX Runtime with its QLinear
    fusions (all optimizations) against the plain QDQ graph (none), within the INT8 floor.
    """
    from modelport.quantize.int8 import check_qat

    summary = check_qat(model)
    floor = FLOORS["int8-static"]
    with (
        OrtRunner(model, intra_op_threads=threads, graph_optimization="disable", name="as given") as ref,
        OrtRunner(model, intra_op_threads=threads, name="fused by ONNX Runtime") as cand,
    ):
        data = _eval_data(model, None, 2, ref.inputs)
        comparison = compare_runners(cand, ref, tolerance=EXACT, data=data)
    note = (
        f"the model is already quantized ({summary.describe()}): its Q/DQ pairs are well formed and it is left "
        f"as it is — {mode} was not applied"
    )
    settings = {"format": summary.kind, "kept_as_is": True}
    result = QuantizeResult(model, mode, settings, comparison, floor, warnings=[note], qat=summary)
    logger.info("%s", note)
    return result


def _warn(result: QuantizeResult, batch: int) -> None:
    if result.slower and result.speedup is not None:
        msg = (
            f"{result.mode} is SLOWER than FP32 at batch {batch}: {result.speedup:.2f}x "
            f"({result.quant_bench.median_ms if result.quant_bench else 0:.2f} ms vs "
            f"{result.fp32_bench.median_ms if result.fp32_bench else 0:.2f} ms) — keep FP32 on this machine"
        )
        result.warnings.append(msg)
        logger.warning("%s", msg)
    failure = result.accuracy_failure
    if failure:
        msg = f"{result.mode} breaks the accuracy floor ({result.floor}): {failure}"
        result.warnings.append(msg)
        logger.warning("%s", msg)
