"""Latency statistics, interleaved runs and the ONNX Runtime benchmark entry point."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.bench.harness import CV_WARNING, BenchResult, bench, bench_interleaved, bench_runner
from modelport.errors import InputDtypeError
from modelport.ir.serde import save
from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, Outputs
from modelport.runners.fake import FakeRunner

F32 = np.dtype("float32")
INPUTS = [TensorSpec("x", F32, ("N", 3))]
OUTPUTS = [TensorSpec("y", F32, ("N", 3))]


def identity(feeds: Feeds) -> Outputs:
    return {"y": feeds["x"]}


def fake(fn: Callable[[Feeds], Outputs] = identity, name: str = "fake") -> FakeRunner:
    return FakeRunner(fn, INPUTS, OUTPUTS, name=name)


def feeds(batch: int = 2) -> dict[str, np.ndarray[Any, Any]]:
    return {"x": np.zeros((batch, 3), np.float32)}


def assert_ordered(result: BenchResult) -> None:
    assert 0.0 <= result.min_ms <= result.median_ms <= result.p90_ms <= result.p95_ms
    assert result.p95_ms <= result.p99_ms <= result.max_ms
    assert result.min_ms <= result.mean_ms <= result.max_ms


# bench_runner ---------------------------------------------------------------------------------


@pytest.mark.parametrize("iterations", [1, 7, 25])
def test_fixed_iterations(iterations: int) -> None:
    runner = fake()
    with runner:
        result = bench_runner(runner, feeds(3), warmup=4, iterations=iterations)
        assert runner.calls == 4 + iterations
    assert result.iterations == iterations
    assert result.warmup == 4
    assert result.batch == 3
    assert result.name == "fake"
    assert result.engine == {"backend": "fake", "function": "identity"}
    assert_ordered(result)
    assert result.total_seconds >= result.mean_ms * iterations / 1e3
    np.testing.assert_allclose(result.throughput, 3 * 1e3 / result.mean_ms, rtol=1e-9)


def test_few_iterations_warn() -> None:
    with fake() as runner:
        few = bench_runner(runner, feeds(), warmup=1, iterations=5)
        many = bench_runner(runner, feeds(), warmup=1, iterations=20)
    assert "only 5 timed iterations: percentiles are rough" in few.warnings
    assert not any("timed iterations" in w for w in many.warnings)


def test_duration_bounds_the_run() -> None:
    def slow(f: Feeds) -> Outputs:
        time.sleep(0.002)
        return identity(f)

    with fake(slow) as runner:
        result = bench_runner(runner, feeds(), warmup=1, duration=0.05, min_iterations=3)
    assert result.total_seconds >= 0.05
    assert result.total_seconds < 1.0
    assert 3 <= result.iterations <= 26  # at most 0.05 s / 2 ms + the one that crosses the line
    assert result.min_ms >= 2.0


def test_min_iterations_outlast_the_duration() -> None:
    def slow(f: Feeds) -> Outputs:
        time.sleep(0.002)
        return identity(f)

    with fake(slow) as runner:
        result = bench_runner(runner, feeds(), warmup=1, duration=0.001, min_iterations=8)
    assert result.iterations == 8


def test_alternating_latency_is_flagged_unstable() -> None:
    delays = iter([0.001, 0.020] * 100)

    def jittery(f: Feeds) -> Outputs:
        time.sleep(next(delays))
        return identity(f)

    with fake(jittery) as runner:
        result = bench_runner(runner, feeds(), warmup=1, iterations=10)
    assert result.min_ms >= 1.0
    assert result.max_ms >= 20.0
    assert result.cv > CV_WARNING
    assert not result.stable
    assert any(w.startswith("unstable: coefficient of variation") for w in result.warnings)
    assert result.to_dict()["stable"] is False


def test_steady_latency_median() -> None:
    def steady(f: Feeds) -> Outputs:
        time.sleep(0.005)
        return identity(f)

    with fake(steady) as runner:
        result = bench_runner(runner, feeds(), warmup=1, iterations=20)
    # sleep overshoot is a fraction of a millisecond on an idle machine
    np.testing.assert_allclose(result.median_ms, 5.0, rtol=0.0, atol=3.0)


def test_feeds_validated_before_timing() -> None:
    runner = fake()
    with runner:
        with pytest.raises(InputDtypeError, match=r"arr\.astype\(np\.float32\)"):
            bench_runner(runner, {"x": np.zeros((1, 3), np.float64)}, iterations=3)
        assert runner.calls == 0


def test_explicit_name() -> None:
    with fake() as runner:
        assert bench_runner(runner, feeds(), warmup=0, iterations=2, name="custom").name == "custom"


# bench_interleaved ----------------------------------------------------------------------------


def test_interleaved_one_result_per_runner() -> None:
    def slow(f: Feeds) -> Outputs:
        time.sleep(0.001)
        return identity(f)

    runners = [fake(name="a"), fake(slow, name="b"), fake(name="c")]
    for runner in runners:
        runner.activate()
    try:
        results = bench_interleaved(runners, feeds(4), duration=0.06, rounds=2, warmup=2)
        calls = [r.calls for r in runners]
    finally:
        for runner in runners:
            runner.deactivate()
    assert [r.name for r in results] == ["a", "b", "c"]
    for result, n_calls in zip(results, calls, strict=True):
        assert result.batch == 4
        assert result.warmup == 2
        assert result.iterations >= 3 * 2  # at least three per window, two rounds
        assert n_calls == 2 + result.iterations
        assert_ordered(result)
    assert results[1].min_ms >= 1.0


def test_interleaved_stops_when_settled() -> None:
    def slow(f: Feeds) -> Outputs:
        time.sleep(0.002)
        return identity(f)

    seen: list[list[list[float]]] = []

    def settled(medians: list[list[float]]) -> bool:
        seen.append(medians)
        return len(medians[0]) == 3

    runners = [fake(name="a"), fake(slow, name="b")]
    for runner in runners:
        runner.activate()
    try:
        results = bench_interleaved(runners, feeds(), duration=0.8, rounds=8, warmup=1, settled=settled)
    finally:
        for runner in runners:
            runner.deactivate()
    assert [len(m[0]) for m in seen] == [1, 2, 3]  # asked after every round; the third ended it
    assert all(len(m[0]) == len(m[1]) for m in seen)
    assert seen[-1][1][0] >= 2.0 > seen[-1][0][0]  # window medians in ms, per runner
    assert [len(r.windows_ms) for r in results] == [3, 3]  # of the 8 rounds allowed


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        ({}, True),  # ORT's default pool: its workers spin after every run
        ({"session_config": {"session.force_spinning_stop": "1"}}, False),  # INTERLEAVED_ORT_CONFIG
        ({"session_config": {"session.intra_op.allow_spinning": "0"}}, False),
        ({"intra_op_threads": 1}, False),  # no workers at all
    ],
)
def test_interleaved_warns_about_sessions_that_keep_spinning(
    options: dict[str, Any], warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from modelport.runners.onnxruntime import OrtRunner

    model = ir.from_onnx_text(
        '<ir_version: 8, opset_import: ["" : 17]> g (float[1, 8] x) => (float[1, 8] y) { y = Relu(x) }'
    )
    x = {"x": np.ones((1, 8), np.float32)}
    with (
        OrtRunner(model, name="a", **options) as a,
        OrtRunner(model, name="b", **options) as b,
        caplog.at_level("WARNING", logger="modelport.bench.harness"),
    ):
        bench_interleaved([a, b], x, duration=0.02, rounds=1, warmup=1)
    messages = [r.getMessage() for r in caplog.records if "keep spinning" in r.getMessage()]
    if warned:
        assert messages == [
            f"{n}: its ONNX Runtime workers keep spinning after each run and will slow the other runners' windows "
            "— build it with session_config=INTERLEAVED_ORT_CONFIG"
            for n in ("a", "b")
        ]
    else:
        assert messages == []


# bench (ONNX Runtime) -------------------------------------------------------------------------


def write_model(folder: Path, signature: str, body: str) -> Path:
    model = ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g {signature}
        {{
            {body}
        }}
        """
    )
    return save(model, folder / "m.onnx")


def test_bench_onnx_file_at_several_batches(tmp_path: Path) -> None:
    path = write_model(tmp_path, "(float[N, 8] x) => (float[N, 8] y)", "t = Relu(x)\n y = Add(t, x)")
    results = bench(path, batches=(1, 4), iterations=5, warmup=1, threads=1)
    assert [r.batch for r in results] == [1, 4]
    for result in results:
        assert result.iterations == 5
        assert result.engine["backend"] == "onnxruntime"
        assert result.engine["intra_op_threads"] == 1
        assert_ordered(result)
        assert not any("requested" in w for w in result.warnings)


def test_bench_static_batch_warns(tmp_path: Path) -> None:
    path = write_model(tmp_path, "(float[1, 8] x) => (float[1, 8] y)", "y = Relu(x)")
    results = bench(path, batches=(1, 4), iterations=3, warmup=1, name="static")
    assert [r.batch for r in results] == [1, 1]
    assert [r.name for r in results] == ["static", "static"]
    assert "batch 4 requested, but the model fixes axis 0 to 1" in results[1].warnings
    assert not any("requested" in w for w in results[0].warnings)


def test_bench_in_memory_model_with_token_ids(tmp_path: Path) -> None:
    table = ", ".join(["0.25"] * 40)
    model = ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        embed (int64[N, S] ids) => (float[N, S, 4] y)
        <float[10, 4] table = {{{table}}}>
        {{
            y = Gather(table, ids)
        }}
        """
    )
    # ids drawn beyond the 10-row table would make ONNX Runtime fail: the range comes from the graph
    results = bench(model, batches=(2,), iterations=3, warmup=1)
    assert results[0].batch == 2
    assert results[0].name == "embed"


def test_bench_auxiliary_static_input(tmp_path: Path) -> None:
    path = write_model(tmp_path, "(float[1] scale, float[N, 8] x) => (float[N, 8] y)", "y = Mul(x, scale)")
    results = bench(path, batches=(1, 4), iterations=3, warmup=1)
    assert not any("requested" in w for r in results for w in r.warnings)
    assert [r.batch for r in results] == [1, 4]
