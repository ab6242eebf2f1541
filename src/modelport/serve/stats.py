"""Per-model statistics in Triton's format, and the same figures as Prometheus metrics.

Triton's statistics extension (``GET /v2/models/{m}/stats``) is what perf_analyzer and
model_analyzer read for the server-side breakdown of a request: time queued, time preparing the
batch (``compute_input``), running the engine (``compute_infer``) and splitting and encoding the
results (``compute_output``), with one entry per executed batch size so a user can see which
batches formed. modelport keeps those counters per model version, adds the time of each pipeline
stage (``stage_stats``, a modelport extension), and mirrors everything into Prometheus metrics
labelled by model and version.

All updates happen on the event loop (the batcher records after an instance's thread returns),
so the counters need no lock.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Duration", "Metrics", "ModelStats"]

# Latency buckets in seconds: 100 µs to 10 s.
_SECONDS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class Duration:
    """A count and the total nanoseconds of one kind of event (Triton's StatisticDuration)."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class _BatchStat:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


class Metrics:
    """The Prometheus metrics of one server (its own registry, so two servers never mix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model", "version")
        self.requests = Counter(
            "modelport_inference_requests",
            "Inference requests by outcome (success, failure, rejected, timeout, cancelled).",
            (*labels, "outcome"),
            registry=self.registry,
        )
        self.inferences = Counter(
            "modelport_inference_count", "Rows (batch entries) inferred.", labels, registry=self.registry
        )
        self.executions = Counter(
            "modelport_inference_exec_count", "Batches executed by the engine.", labels, registry=self.registry
        )
        self.request_seconds = Histogram(
            "modelport_request_duration_seconds",
            "Time from a request's arrival at the model to its result.",
            labels,
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "modelport_queue_duration_seconds",
            "Time waiting for an instance.",
            labels,
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.compute_seconds = Histogram(
            "modelport_compute_duration_seconds",
            "Time per batch by phase: input (pre-process, stack), infer (engine), output (split, post-process).",
            (*labels, "phase"),
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "modelport_stage_duration_seconds",
            "Time per pipeline stage, summed over the requests of a batch.",
            (*labels, "stage"),
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "modelport_batch_size", "Rows per executed batch.", labels, buckets=_BATCH_SIZES, registry=self.registry
        )
        self.in_flight = Gauge(
            "modelport_inflight_requests", "Requests admitted and not yet answered.", labels, registry=self.registry
        )
        self.queued = Gauge("modelport_queue_size", "Requests waiting for an instance.", labels, registry=self.registry)


class ModelStats:
    """The statistics of one model version; :meth:`as_dict` is Triton's ``model_stats`` entry."""

    def __init__(self, name: str, version: int, metrics: Metrics | None = None) -> None:
        self.name = name
        self.version = str(version)
        self.last_inference_ms = 0
        self.inference_count = 0
        self.execution_count = 0
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.rejected = 0
        self.timeouts = 0
        self.cancelled = 0
        self.pending = 0
        self.batches: dict[int, _BatchStat] = {}
        self.stages: dict[str, Duration] = {}
        self._metrics = metrics
        self._labels = (name, self.version)
        # Labelled children, looked up once: labels() validates and locks on every call.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *extra: str) -> Any:
        key = (id(metric), extra)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*self._labels, *extra)
        return child

    # recording --------------------------------------------------------------------------------
    def request_done(self, ok: bool, total_ns: int) -> None:
        """A request this model answered (``ok``) or failed, ``total_ns`` after it arrived."""
        (self.success if ok else self.fail).add(total_ns)
        if self._metrics is not None:
            self._child(self._metrics.requests, "success" if ok else "failure").inc()
            self._child(self._metrics.request_seconds).observe(total_ns / 1e9)

    def request_dropped(self, outcome: str) -> None:
        """A request refused (``rejected``: queue full), timed out, or ``cancelled`` by its client."""
        if outcome == "rejected":
            self.rejected += 1
        elif outcome == "timeout":
            self.timeouts += 1
            self.fail.add(0)
        else:
            self.cancelled += 1
        if self._metrics is not None:
            self._child(self._metrics.requests, outcome).inc()

    def queued(self, ns: int) -> None:
        self.queue.add(ns)
        if self._metrics is not None:
            self._child(self._metrics.queue_seconds).observe(ns / 1e9)

    def batch_done(self, rows: int, requests: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One executed batch of ``rows`` rows from ``requests`` requests."""
        self.execution_count += 1
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)
        # Triton counts compute durations once per request, with the batch's time.
        self.compute_input.add(input_ns * requests, requests)
        self.compute_infer.add(infer_ns * requests, requests)
        self.compute_output.add(output_ns * requests, requests)
        stat = self.batches.setdefault(rows, _BatchStat())
        stat.compute_input.add(input_ns)
        stat.compute_infer.add(infer_ns)
        stat.compute_output.add(output_ns)
        if self._metrics is not None:
            m = self._metrics
            self._child(m.inferences).inc(rows)
            self._child(m.executions).inc()
            self._child(m.batch_size).observe(rows)
            for phase, ns in (("input", input_ns), ("infer", infer_ns), ("output", output_ns)):
                self._child(m.compute_seconds, phase).observe(ns / 1e9)

    def stage_done(self, stage: str, seconds: float) -> None:
        self.stages.setdefault(stage, Duration()).add(int(seconds * 1e9))
        if self._metrics is not None:
            self._child(self._metrics.stage_seconds, stage).observe(seconds)

    def forget(self) -> None:
        """Drop this version's Prometheus series (an unloaded version must not grow the registry)."""
        m, labels = self._metrics, self._labels
        self._children.clear()
        if m is None:
            return
        series: list[tuple[Any, tuple[str, ...]]] = [
            (metric, labels)
            for metric in (
                m.inferences,
                m.executions,
                m.request_seconds,
                m.queue_seconds,
                m.batch_size,
                m.in_flight,
                m.queued,
            )
        ]
        series += [(m.requests, (*labels, o)) for o in ("success", "failure", "rejected", "timeout", "cancelled")]
        series += [(m.compute_seconds, (*labels, p)) for p in ("input", "infer", "output")]
        series += [(m.stage_seconds, (*labels, stage)) for stage in self.stages]
        for metric, values in series:
            with contextlib.suppress(KeyError):  # a series never recorded
                metric.remove(*values)

    def in_flight(self, delta: int) -> None:
        if self._metrics is not None:
            self._child(self._metrics.in_flight).inc(delta)

    def queue_size(self, size: int) -> None:
        self.pending = size
        if self._metrics is not None:
            self._child(self._metrics.queued).set(size)

    # reporting --------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """Triton's ``model_stats`` entry.

        Extensions: ``stage_stats`` per pipeline stage, the ``rejected``, ``timeouts`` and
        ``cancelled`` counts, and ``pending`` (requests queued now).
        """
        zero = Duration().as_dict()
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": stat.compute_input.as_dict(),
                    "compute_infer": stat.compute_infer.as_dict(),
                    "compute_output": stat.compute_output.as_dict(),
                }
                for size, stat in sorted(self.batches.items())
            ],
            "memory_usage": [],
            "stage_stats": {stage: d.as_dict() for stage, d in self.stages.items()},
            "rejected": self.rejected,
            "timeouts": self.timeouts,
            "cancelled": self.cancelled,
            "pending": self.pending,
        }
