"""``quantize``: convert, then prove it — output error against FP32 and speed against FP32."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from modelport.bench.harness import BenchResult, bench_interleaved
from modelport.errors import QuantizationError
from modelport.ir.summary import quantization_kind
from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.compare import CompareReport, compare_runners
from modelport.verify.inputs import InputPlan, generate_feeds, integer_input_ranges
from modelport.verify.tolerance import EXACT, SignalTolerance

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


def _convert(model: ir.Model, mode: Mode, samples: Sequence[Feeds] | None, per_channel: bool, method: str) -> ir.Model:
    from modelport.quantize.fp16 import to_fp16
    from modelport.quantize.int8 import quantize_dynamic, quantize_static

    if mode == "fp16":
        return to_fp16(model)
    if mode == "int8-dynamic":
        return quantize_dynamic(model, per_channel=per_channel)
    if mode == "int8-static":
        if not samples:
            raise QuantizationError(
                "int8-static needs calibration data — pass --calib with an .npy/.npz file or a folder of images"
            )
        return quantize_static(model, samples, per_channel=per_channel, method=method)  # type: ignore[arg-type]
    raise QuantizationError(f"unknown mode '{mode}' — choose fp16, int8-dynamic or int8-static")


def quantize(
    model: ir.Model,
    mode: Mode,
    *,
    calibration: Sequence[Feeds] | None = None,
    per_channel: bool = True,
    method: str = "minmax",
    floor: SignalTolerance | None = None,
    bench_batch: int = 8,
    bench_seconds: float = 1.5,
    threads: int | None = None,
) -> QuantizeResult:
    """Quantize ``model`` and measure output error and speed against the FP32 model.

    Output error is measured on the calibration samples when given (at batch 1 and
    ``bench_batch``), otherwise on generated inputs. A result slower than FP32, or below the
    accuracy floor, is returned with a loud warning — never silently.
    """
    already = quantization_kind(model)
    if already != "none":
        raise QuantizationError(f"the model is already quantized ({already}) — quantize the FP32 original instead")
    quantized = _convert(model, mode, calibration, per_channel, method)
    floor = floor or FLOORS[mode]
    settings = {
        "per_channel": per_channel,
        "method": method if mode == "int8-static" else None,
        "calibration_samples": len(calibration) if calibration else 0,
        "format": "QDQ (U8S8)" if mode == "int8-static" else mode,
    }
    with (
        OrtRunner(model, intra_op_threads=threads, name="fp32") as ref,
        OrtRunner(quantized, intra_op_threads=threads, name=mode) as cand,
    ):
        data = _eval_data(model, calibration, bench_batch, ref.inputs)
        comparison = compare_runners(cand, ref, tolerance=EXACT, data=data)
        bench_feeds = data[-1][1]
        fp32_bench, quant_bench = bench_interleaved([ref, cand], bench_feeds, duration=2 * bench_seconds)
    result = QuantizeResult(quantized, mode, settings, comparison, floor, fp32_bench, quant_bench)
    _warn(result, bench_batch)
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
