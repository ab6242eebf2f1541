"""Model statistics in Triton's format and the Prometheus metrics, fed by real batches.

The counters are checked after jobs went through a :class:`DynamicBatcher` whose clock the test
sets by hand, so queue times are exact numbers rather than measurements; the Prometheus side is
read back from the exposition text the ``/metrics`` route serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import anyio
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelport.errors import ServerBusyError
from modelport.serve import batcher as batcher_module
from modelport.serve.batcher import DynamicBatcher, Executed
from modelport.serve.stats import Duration, Metrics, ModelStats

from .batcher_helpers import LIMIT, Clock, Gate, settle

pytestmark = pytest.mark.anyio

INFERENCE_STATS = {
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
}
TRITON_KEYS = {
    "name",
    "version",
    "last_inference",
    "inference_count",
    "execution_count",
    "inference_stats",
    "batch_stats",
    "memory_usage",
}
EXTENSION_KEYS = {"stage_stats", "rejected", "timeouts", "cancelled", "pending"}


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition text, keyed by sample name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition(metrics))
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[name, frozenset(labels.items())]


def series_of(metrics: Metrics, model: str) -> list[str]:
    return sorted({name for name, labels in samples(metrics) if ("model", model) in labels})


# statistics of real batches -------------------------------------------------------------------
async def run_batches(stats: ModelStats, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four requests through a batcher (max 4 rows): batches of rows 1, 4 (2 + 2) and 1; item -4 fails.

    The batcher's clock reads 0 when request 1 arrives and starts, 1000 ns when the others arrive
    and 5000 ns when they start, so they each waited 4000 ns.
    """
    clock = Clock(ns=0)
    monkeypatch.setattr(batcher_module, "time", clock)
    gate = Gate()

    def model(items: list[int]) -> Executed[int]:
        if items == [1]:
            gate.hold()
        results: list[int | BaseException] = [ValueError("negative") if i < 0 else i * 10 for i in items]
        return Executed(
            results, input_ns=10 * len(items), infer_ns=100, output_ns=1000, stage_seconds={"pre": 0.25, "post": 0.5}
        )

    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        "cnn", [model], max_batch_size=4, max_queue_delay=0.0, stats=stats
    )
    batcher.start()
    try:
        with anyio.fail_after(LIMIT):
            first = asyncio.create_task(batcher.submit(1))
            await gate.entered()
            clock.ns = 1000
            rest = [asyncio.create_task(batcher.submit(item, rows)) for item, rows in ((2, 2), (3, 2), (-4, 1))]
            await settle(lambda: batcher.queued == 3, "three jobs queued")
            clock.ns = 5000
            gate.open()
            for task in (first, *rest):
                with contextlib.suppress(ValueError):  # -4 fails; the batcher counts it as failed
                    await task
    finally:
        gate.open()
        await batcher.stop()


async def test_as_dict_is_tritons_model_stats_with_consistent_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = ModelStats("cnn", 2)
    before = int(time.time() * 1000)
    await run_batches(stats, monkeypatch)
    after = int(time.time() * 1000)
    doc = stats.as_dict()

    assert set(doc) == TRITON_KEYS | EXTENSION_KEYS
    assert set(doc["inference_stats"]) == INFERENCE_STATS
    assert (doc["name"], doc["version"]) == ("cnn", "2")
    assert before <= doc["last_inference"] <= after
    assert doc["inference_count"] == 6  # rows
    assert doc["execution_count"] == 3  # batches
    inference = doc["inference_stats"]
    # Arrival to answer on the fake clock: the first job 0 -> 5000, the others 1000 -> 5000.
    assert inference["success"] == {"count": 3, "ns": 5000 + 4000 + 4000}
    assert inference["fail"] == {"count": 1, "ns": 4000}
    assert inference["queue"] == {"count": 4, "ns": 0 + 3 * 4000}
    # Triton counts compute time once per request, with its batch's duration.
    assert inference["compute_input"] == {"count": 4, "ns": 10 * 1 + (20 * 2) + 10 * 1}
    assert inference["compute_infer"] == {"count": 4, "ns": 100 * 4}
    assert inference["compute_output"] == {"count": 4, "ns": 1000 * 4}
    assert inference["cache_hit"] == inference["cache_miss"] == {"count": 0, "ns": 0}
    assert doc["batch_stats"] == [
        {
            "batch_size": 1,
            "compute_input": {"count": 2, "ns": 20},
            "compute_infer": {"count": 2, "ns": 200},
            "compute_output": {"count": 2, "ns": 2000},
        },
        {
            "batch_size": 4,
            "compute_input": {"count": 1, "ns": 20},
            "compute_infer": {"count": 1, "ns": 100},
            "compute_output": {"count": 1, "ns": 1000},
        },
    ]
    batch_stats = doc["batch_stats"]
    assert sum(b["compute_infer"]["count"] for b in batch_stats) == doc["execution_count"]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batch_stats) == doc["inference_count"]
    assert inference["queue"]["count"] == inference["success"]["count"] + inference["fail"]["count"]
    assert doc["stage_stats"] == {"pre": {"count": 3, "ns": 750_000_000}, "post": {"count": 3, "ns": 1_500_000_000}}
    assert doc["memory_usage"] == []
    assert (doc["rejected"], doc["timeouts"], doc["cancelled"], doc["pending"]) == (0, 0, 0, 0)


async def test_prometheus_text_carries_the_same_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics()
    stats = ModelStats("cnn", 2, metrics)
    await run_batches(stats, monkeypatch)
    text = exposition(metrics)
    assert 'modelport_inference_count_total{model="cnn",version="2"} 6.0' in text
    assert 'modelport_inference_exec_count_total{model="cnn",version="2"} 3.0' in text

    labels = {"model": "cnn", "version": "2"}
    assert value(metrics, "modelport_inference_requests_total", outcome="success", **labels) == 3
    assert value(metrics, "modelport_inference_requests_total", outcome="failure", **labels) == 1
    assert value(metrics, "modelport_request_duration_seconds_count", **labels) == 4
    # 5000 + 4000 + 4000 + 4000 ns on the fake clock (see run_batches).
    assert value(metrics, "modelport_request_duration_seconds_sum", **labels) == pytest.approx(17e-6, rel=1e-9)
    assert value(metrics, "modelport_batch_size_count", **labels) == 3
    assert value(metrics, "modelport_batch_size_sum", **labels) == 6
    assert value(metrics, "modelport_batch_size_bucket", le="1.0", **labels) == 2
    assert value(metrics, "modelport_batch_size_bucket", le="2.0", **labels) == 2
    assert value(metrics, "modelport_batch_size_bucket", le="4.0", **labels) == 3
    assert value(metrics, "modelport_queue_duration_seconds_count", **labels) == 4
    assert value(metrics, "modelport_queue_duration_seconds_sum", **labels) == pytest.approx(12000e-9, rel=1e-9)
    for phase, ns in (("input", 10 + 20 + 10), ("infer", 300), ("output", 3000)):
        assert value(metrics, "modelport_compute_duration_seconds_count", phase=phase, **labels) == 3
        assert value(metrics, "modelport_compute_duration_seconds_sum", phase=phase, **labels) == pytest.approx(
            ns * 1e-9, rel=1e-9
        )
    assert value(metrics, "modelport_stage_duration_seconds_count", stage="pre", **labels) == 3
    assert value(metrics, "modelport_stage_duration_seconds_sum", stage="pre", **labels) == pytest.approx(0.75)
    assert value(metrics, "modelport_stage_duration_seconds_sum", stage="post", **labels) == pytest.approx(1.5)
    assert value(metrics, "modelport_queue_size", **labels) == 0


async def test_a_full_queue_counts_a_rejection_and_shows_the_queue_size() -> None:
    metrics = Metrics()
    stats = ModelStats("busy", 1, metrics)
    gate = Gate()

    def model(items: list[int]) -> Executed[int]:
        if items == [1]:
            gate.hold()
        return Executed(results=[item * 10 for item in items])

    batcher: DynamicBatcher[int, int] = DynamicBatcher("busy", [model], max_queue_size=2, stats=stats)
    batcher.start()
    labels = {"model": "busy", "version": "1"}
    try:
        with anyio.fail_after(LIMIT):
            first = asyncio.create_task(batcher.submit(1))
            await gate.entered()
            waiting = [asyncio.create_task(batcher.submit(item)) for item in (2, 3)]
            await settle(lambda: batcher.queued == 2, "two jobs queued")
            assert value(metrics, "modelport_queue_size", **labels) == 2
            assert stats.as_dict()["pending"] == 2
            with pytest.raises(ServerBusyError, match=r"busy has 2 requests queued"):
                await batcher.submit(4)
            assert value(metrics, "modelport_inference_requests_total", outcome="rejected", **labels) == 1
            assert stats.as_dict()["rejected"] == 1
            gate.open()
            assert [await task for task in (first, *waiting)] == [10, 20, 30]
            assert value(metrics, "modelport_queue_size", **labels) == 0
            assert stats.as_dict()["pending"] == 0
    finally:
        gate.open()
        await batcher.stop()
    assert stats.as_dict()["batch_stats"][0]["batch_size"] == 1  # batching off: one row per execution


# recording without a batcher ------------------------------------------------------------------
def test_a_fresh_model_has_zero_statistics() -> None:
    zero = {"count": 0, "ns": 0}
    assert ModelStats("fresh", 7).as_dict() == {
        "name": "fresh",
        "version": "7",
        "last_inference": 0,
        "inference_count": 0,
        "execution_count": 0,
        "inference_stats": dict.fromkeys(INFERENCE_STATS, zero),
        "batch_stats": [],
        "memory_usage": [],
        "stage_stats": {},
        "rejected": 0,
        "timeouts": 0,
        "cancelled": 0,
        "pending": 0,
    }


def test_duration_accumulates_counts_and_nanoseconds() -> None:
    duration = Duration()
    duration.add(500)
    duration.add(1500, count=3)
    assert duration.as_dict() == {"count": 4, "ns": 2000}


def test_dropped_requests_are_counted_by_outcome() -> None:
    metrics = Metrics()
    stats = ModelStats("m", 1, metrics)
    stats.request_dropped("rejected")
    stats.request_dropped("timeout")
    stats.request_dropped("timeout")
    stats.request_dropped("cancelled")
    doc = stats.as_dict()
    assert (doc["rejected"], doc["timeouts"], doc["cancelled"]) == (1, 2, 1)
    assert doc["inference_stats"]["fail"] == {"count": 2, "ns": 0}  # a timeout is a failed request
    assert doc["inference_stats"]["success"] == {"count": 0, "ns": 0}
    labels = {"model": "m", "version": "1"}
    for outcome, count in (("rejected", 1), ("timeout", 2), ("cancelled", 1)):
        assert value(metrics, "modelport_inference_requests_total", outcome=outcome, **labels) == count


def test_in_flight_gauge_follows_admitted_requests() -> None:
    metrics = Metrics()
    stats = ModelStats("m", 1, metrics)
    stats.in_flight(1)
    stats.in_flight(1)
    assert value(metrics, "modelport_inflight_requests", model="m", version="1") == 2
    stats.in_flight(-1)
    assert value(metrics, "modelport_inflight_requests", model="m", version="1") == 1


def test_without_metrics_the_statistics_still_count() -> None:
    stats = ModelStats("m", 1)
    stats.request_done(True, 10)
    stats.queued(5)
    stats.batch_done(2, 2, 1, 2, 3)
    stats.stage_done("pre", 1e-6)
    stats.in_flight(1)
    stats.queue_size(3)
    stats.forget()
    doc = stats.as_dict()
    assert (doc["inference_count"], doc["execution_count"]) == (2, 1)
    assert doc["stage_stats"] == {"pre": {"count": 1, "ns": 1000}}


def record_everything(stats: ModelStats) -> None:
    stats.request_done(True, 1000)
    stats.request_done(False, 1000)
    for outcome in ("rejected", "timeout", "cancelled"):
        stats.request_dropped(outcome)
    stats.queued(1000)
    stats.batch_done(2, 2, 10, 20, 30)
    stats.stage_done("decode", 0.001)
    stats.in_flight(1)
    stats.queue_size(1)


def test_forget_removes_only_that_versions_series() -> None:
    metrics = Metrics()
    old, new, other = ModelStats("cnn", 1, metrics), ModelStats("cnn", 2, metrics), ModelStats("bert", 1, metrics)
    for stats in (old, new, other):
        record_everything(stats)
    before = series_of(metrics, "cnn")
    assert 'version="1"' in exposition(metrics)

    old.forget()
    text = exposition(metrics)
    assert 'model="cnn",version="1"' not in text and 'model="cnn",outcome="success",version="1"' not in text
    assert not [line for line in text.splitlines() if 'model="cnn"' in line and 'version="1"' in line]
    assert series_of(metrics, "cnn") == before  # version 2 still has every series
    assert value(metrics, "modelport_inference_count_total", model="cnn", version="2") == 2
    assert value(metrics, "modelport_inference_count_total", model="bert", version="1") == 2
    assert old.as_dict()["inference_count"] == 2  # the statistics document is not Prometheus

    old.forget()  # twice, and on series never recorded, is harmless
    ModelStats("never", 1, metrics).forget()
    assert value(metrics, "modelport_inference_count_total", model="cnn", version="2") == 2


def test_forget_leaves_no_series_at_all_for_a_sole_model() -> None:
    metrics = Metrics()
    stats = ModelStats("solo", 3, metrics)
    record_everything(stats)
    assert series_of(metrics, "solo")
    stats.forget()
    assert series_of(metrics, "solo") == []
    assert "solo" not in exposition(metrics)


def test_metrics_instances_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()  # a shared registry would refuse the second's names
    assert first.registry is not second.registry
    ModelStats("cnn", 1, first).batch_done(4, 1, 0, 0, 0)
    assert value(first, "modelport_inference_count_total", model="cnn", version="1") == 4
    assert series_of(second, "cnn") == []
    assert "modelport_" not in generate_latest(REGISTRY).decode()
