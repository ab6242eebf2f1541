"""Latency and throughput measurement, trtexec style.

Warm-up runs are discarded; then the model runs for a fixed number of iterations or a duration.
Latency statistics are per call (one batch); throughput counts items (batch x calls per second).
A coefficient of variation above :data:`CV_WARNING` marks the measurement as unstable.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.runners.base import Runner
from modelport.verify.inputs import (
    InputPlan,
    effective_batch,
    feeds_batch,
    generate_feeds,
    integer_input_ranges,
    merge_ranges,
)

__all__ = ["CV_WARNING", "BenchResult", "bench", "bench_interleaved", "bench_runner"]

logger = logging.getLogger(__name__)

#: Coefficient of variation above which a measurement is flagged unstable.
CV_WARNING = 0.10


@dataclass
class BenchResult:
    """Latency statistics (milliseconds) and throughput (items/s) of one configuration."""

    name: str
    batch: int
    iterations: int
    warmup: int
    total_seconds: float
    min_ms: float
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    cv: float
    throughput: float
    engine: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def stable(self) -> bool:
        return self.cv <= CV_WARNING

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["stable"] = self.stable
        return data


def _stats(
    name: str,
    batch: int,
    warmup: int,
    latencies: np.ndarray[Any, Any],
    total: float,
    engine: dict[str, Any],
) -> BenchResult:
    ms = latencies * 1e3
    mean = float(ms.mean())
    std = float(ms.std())
    result = BenchResult(
        name=name,
        batch=batch,
        iterations=len(ms),
        warmup=warmup,
        total_seconds=total,
        min_ms=float(ms.min()),
        mean_ms=mean,
        median_ms=float(np.median(ms)),
        p90_ms=float(np.percentile(ms, 90)),
        p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)),
        max_ms=float(ms.max()),
        std_ms=std,
        cv=std / mean if mean > 0 else 0.0,
        throughput=batch * len(ms) / float(latencies.sum()) if latencies.sum() > 0 else 0.0,
        engine=engine,
    )
    if not result.stable:
        result.warnings.append(
            f"unstable: coefficient of variation {result.cv:.1%} > {CV_WARNING:.0%} — the machine is busy "
            "or the run is too short; close other work or raise --duration"
        )
    if len(ms) < 20:
        result.warnings.append(f"only {len(ms)} timed iterations: percentiles are rough")
    return result


def bench_runner(
    runner: Runner,
    feeds: Mapping[str, np.ndarray[Any, Any]],
    *,
    warmup: int = 5,
    iterations: int | None = None,
    duration: float | None = None,
    min_iterations: int = 10,
    name: str | None = None,
) -> BenchResult:
    """Time ``runner.infer(feeds)`` on an active runner. Feeds are validated once, before timing."""
    runner.infer(feeds)  # validates the feeds and is the first warm-up run
    for _ in range(max(warmup - 1, 0)):
        runner.infer(feeds, check=False)
    if iterations is None and duration is None:
        duration = 2.0
    latencies: list[float] = []
    clock = time.perf_counter
    start = clock()
    deadline = start + duration if duration is not None else None
    while True:
        t0 = clock()
        runner.infer(feeds, check=False)
        latencies.append(clock() - t0)
        n = len(latencies)
        if iterations is not None and n >= iterations:
            break
        if deadline is not None and clock() >= deadline and n >= min_iterations:
            break
    total = clock() - start
    batch = feeds_batch(runner.inputs, feeds)
    return _stats(name or runner.name, batch, warmup, np.asarray(latencies), total, runner.describe())


def bench_interleaved(
    runners: Sequence[Runner],
    feeds: Mapping[str, np.ndarray[Any, Any]],
    *,
    duration: float = 2.0,
    rounds: int = 4,
    warmup: int = 3,
) -> list[BenchResult]:
    """Time several runners on the same feeds in alternating short windows.

    A side-by-side comparison run one after the other is at the mercy of whatever else the
    machine did meanwhile; alternating windows spreads that noise over all contenders alike.
    """
    windows: list[list[float]] = [[] for _ in runners]
    totals = [0.0 for _ in runners]
    for runner in runners:
        runner.infer(feeds)
        for _ in range(max(warmup - 1, 0)):
            runner.infer(feeds, check=False)
    window = duration / (rounds * len(runners))
    clock = time.perf_counter
    for _ in range(rounds):
        for i, runner in enumerate(runners):
            start = clock()
            n = 0
            while n < 3 or clock() - start < window:
                t0 = clock()
                runner.infer(feeds, check=False)
                windows[i].append(clock() - t0)
                n += 1
            totals[i] += clock() - start
    batch = feeds_batch(runners[0].inputs, feeds)
    return [
        _stats(r.name, batch, warmup, np.asarray(lat), total, r.describe())
        for r, lat, total in zip(runners, windows, totals, strict=True)
    ]


def bench(
    model: ir.Model | str | os.PathLike[str],
    *,
    batches: Sequence[int] = (1,),
    duration: float | None = None,
    iterations: int | None = None,
    warmup: int = 5,
    threads: int | None = None,
    plan: InputPlan | None = None,
    name: str | None = None,
) -> list[BenchResult]:
    """Benchmark a model on ONNX Runtime (CPU) at each batch size, on generated inputs."""
    from modelport.ir.serde import load
    from modelport.runners.onnxruntime import OrtRunner

    loaded = model if isinstance(model, ir.Model) else load(model)
    plan = plan or InputPlan()
    plan = replace(plan, int_ranges=merge_ranges(integer_input_ranges(loaded), plan.int_ranges))
    results = []
    with OrtRunner(loaded, intra_op_threads=threads, name=name or loaded.graph.name or "model") as runner:
        for batch in batches:
            effective = effective_batch(runner.inputs, batch)
            feeds = generate_feeds(runner.inputs, replace(plan, batch=effective))
            result = bench_runner(runner, feeds, warmup=warmup, iterations=iterations, duration=duration)
            if effective != batch:
                result.warnings.append(f"batch {batch} requested, but the model fixes axis 0 to {effective}")
            results.append(result)
    return results
