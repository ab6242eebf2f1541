"""The measurement core: windows until stable, statistics, warm-up, stages, callers, memory, devices.

Timing is driven by a fake clock (``harness._clock``) that only the runner and the pipeline stages
advance, so every statistic here is exact and no assertion depends on how fast the machine is.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.bench import harness
from modelport.bench.harness import (
    NOT_ON_CPU,
    BenchSettings,
    IoBindingCompute,
    MemoryProbe,
    RunnerWorkload,
    StagedWorkload,
    bench_interleaved,
    device_of,
    latency_histogram,
    measure,
    read_device_memory,
    window_spread,
    windows_settled,
)
from modelport.errors import BackendError, ConfigError, InputError
from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, Outputs, Runner
from modelport.runners.fake import FakeRunner
from modelport.runners.onnxruntime import OrtRunner
from modelport.serve.pipeline import Pipeline, PipelineConfig

F32 = np.dtype("float32")
INPUTS = [TensorSpec("x", F32, ("N", 3))]
OUTPUTS = [TensorSpec("y", F32, ("N", 3))]


class FakeClock:
    """Nanoseconds that pass only when something advances them."""

    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += round(ms * 1e6)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(harness, "_clock", fake)
    return fake


def scripted(clock: FakeClock, durations_ms: Iterable[float], name: str = "scripted") -> FakeRunner:
    """A runner whose i-th call takes ``durations_ms[i]`` on the fake clock."""
    durations: Iterator[float] = iter(durations_ms)

    def run(feeds: Feeds) -> Outputs:
        clock.advance_ms(next(durations))
        return {"y": feeds["x"]}

    return FakeRunner(run, INPUTS, OUTPUTS, name=name)


def feeds(batch: int = 2) -> dict[str, np.ndarray[Any, Any]]:
    return {"x": np.zeros((batch, 3), np.float32)}


def windows(*per_window: tuple[float, int]) -> list[float]:
    """Durations for consecutive windows: (milliseconds, calls) each."""
    return [ms for ms, calls in per_window for _ in range(calls)]


# settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": 5, "duration": 1.0}, r"both iterations \(5\) and duration \(1.0 s\) were given"),
        ({"iterations": 0}, r"iterations must be >= 1 \(got 0\)"),
        ({"duration": 0.0}, r"duration must be a positive number of seconds \(got 0.0\)"),
        ({"duration": float("nan")}, r"duration must be a positive number of seconds \(got nan\)"),
        ({"warmup": -1}, r"warmup must be >= 0 iterations \(got -1\)"),
        ({"warmup_seconds": -0.5}, r"warmup_seconds must be >= 0 \(got -0.5\)"),
        ({"min_iterations": 0}, r"min_iterations must be >= 1 \(got 0\)"),
        ({"tolerance": 0.0}, r"stability tolerance must be between 0 and 1 \(got 0.0\) — e.g. 0.05 for 5 %"),
        ({"tolerance": 1.5}, r"stability tolerance must be between 0 and 1 \(got 1.5\)"),
        ({"max_windows": 0}, r"max_windows must be >= 1 \(got 0\)"),
    ],
)
def test_settings_refuse_nonsense(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BenchSettings(**kwargs)


def test_settings_window_length() -> None:
    assert BenchSettings().window_seconds == harness.DEFAULT_WINDOW_SECONDS
    assert BenchSettings(duration=0.3).window_seconds == 0.3
    assert BenchSettings(iterations=7).window_seconds is None
    assert BenchSettings(max_windows=3).judges_stability
    assert not BenchSettings(max_windows=2).judges_stability


# stability rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "spread"),
    [([10.0], 0.0), ([10.0, 10.0, 10.0], 0.0), ([10.0, 10.5, 11.0], 0.1), ([2.0, 1.0], 1.0), ([0.0, 0.0], 0.0)],
)
def test_window_spread_is_max_over_min(values: list[float], spread: float) -> None:
    assert window_spread(values) == pytest.approx(spread, rel=1e-12)


def test_window_spread_edge_cases() -> None:
    assert window_spread([0.0, 1.0]) == float("inf")
    with pytest.raises(ConfigError, match=r"window_spread\(\) needs at least one value"):
        window_spread([])


@pytest.mark.parametrize(
    ("medians", "settled"),
    [
        ([10.0, 10.0], False),  # fewer than three windows never settle
        ([10.0, 10.2, 10.4], True),  # 4 % apart
        ([10.0, 10.2, 10.6], False),  # 6 % apart
        ([30.0, 10.0, 10.2, 10.4], True),  # only the last three count
        ([10.0, 10.2, 10.4, 30.0], False),
    ],
)
def test_windows_settle_on_the_last_three(medians: list[float], settled: bool) -> None:
    assert windows_settled(medians, 0.05) is settled


# windows until stable ---------------------------------------------------------------------------


def test_windows_repeat_until_the_last_three_agree(clock: FakeClock) -> None:
    runner = scripted(clock, [1.0, *windows((10.0, 5), (20.0, 5), (10.0, 5), (10.2, 5), (10.3, 5), (99.0, 50))])
    settings = BenchSettings(warmup=1, iterations=5, max_windows=10, tolerance=0.05)
    with runner:
        result = measure([RunnerWorkload(runner, feeds(2))], settings, name="m")
        assert runner.calls == 1 + 25  # the validating call, then five windows of five
    assert result.windows_ms == pytest.approx([10.0, 20.0, 10.0, 10.2, 10.3], rel=1e-9)
    assert result.stabilised is True
    assert result.stable
    assert result.tolerance == 0.05
    assert result.windows_used == 3
    assert result.iterations == 15  # statistics pool the last three windows only
    assert (result.min_ms, result.median_ms, result.max_ms) == pytest.approx((10.0, 10.2, 10.3), rel=1e-9)
    np.testing.assert_allclose(result.throughput, 2 * 15 / (5 * (10.0 + 10.2 + 10.3) / 1e3), rtol=1e-9)
    np.testing.assert_allclose(result.total_seconds, 5 * (10.0 + 10.2 + 10.3) / 1e3, rtol=1e-9)
    assert not any("stabilise" in w for w in result.warnings)


def test_failure_to_stabilise_is_stated(clock: FakeClock) -> None:
    runner = scripted(clock, [1.0, *windows((10.0, 5), (10.5, 5), (11.0, 5), (10.0, 5))])
    settings = BenchSettings(warmup=1, iterations=5, max_windows=4, tolerance=0.01)
    with runner:
        result = measure([RunnerWorkload(runner, feeds())], settings, name="m")
    assert result.windows_ms == pytest.approx([10.0, 10.5, 11.0, 10.0], rel=1e-9)
    assert result.stabilised is False
    assert result.cv < harness.CV_WARNING  # steady calls: only the windows disagree ...
    assert not result.stable  # ... and that alone makes the result unstable
    message = (
        "did not stabilise: the medians of the last 3 windows (10.5, 11, 10 ms) differ by 10.0%, more than the "
        "tolerance 1.0%, after 4 windows"
    )
    assert any(w.startswith(message) for w in result.warnings)
    assert result.to_dict()["stable"] is False


def test_fewer_windows_than_three_are_not_judged(clock: FakeClock) -> None:
    runner = scripted(clock, [1.0, *windows((10.0, 4), (30.0, 4))])
    with runner:
        result = measure(
            [RunnerWorkload(runner, feeds())], BenchSettings(warmup=1, iterations=4, max_windows=2), name="m"
        )
    assert result.windows_ms == pytest.approx([10.0, 30.0], rel=1e-9)
    assert result.stabilised is None
    assert result.tolerance is None
    assert result.windows_used == 2  # every window counts
    assert result.iterations == 8
    assert not any("stabilise" in w for w in result.warnings)


def test_statistics_are_exact(clock: FakeClock) -> None:
    order = np.random.default_rng(0).permutation(np.arange(1, 101)).astype(float)
    runner = scripted(clock, [1.0, *order])
    with runner:
        result = measure(
            [RunnerWorkload(runner, feeds(4))], BenchSettings(warmup=1, iterations=100, max_windows=1), name="m"
        )
    values = np.arange(1, 101, dtype=float)
    assert (result.min_ms, result.max_ms) == (1.0, 100.0)
    assert result.mean_ms == pytest.approx(50.5, rel=1e-12)
    assert result.median_ms == pytest.approx(50.5, rel=1e-12)
    for q, got in ((90, result.p90_ms), (95, result.p95_ms), (99, result.p99_ms)):
        assert got == pytest.approx(float(np.percentile(values, q)), rel=1e-12)
    assert result.std_ms == pytest.approx(float(values.std()), rel=1e-12)
    assert result.cv == pytest.approx(float(values.std()) / 50.5, rel=1e-12)
    assert result.throughput == pytest.approx(4 * 100 / 5.05, rel=1e-12)
    hist = result.histogram
    assert sum(hist["counts"]) + hist["overflow"] == 100
    assert hist["overflow"] == 1  # only the 100 ms call lies above p99 (99.01 ms)
    assert len(hist["edges_ms"]) == harness.HISTOGRAM_BINS + 1
    assert hist["edges_ms"][0] == 1.0
    assert hist["edges_ms"][-1] == pytest.approx(result.p99_ms, rel=1e-12)
    json.dumps(result.to_dict())  # JSON-ready as it is


# warm-up and windows bounded by time --------------------------------------------------------------


def test_warmup_counts_iterations_then_seconds(clock: FakeClock) -> None:
    runner = scripted(clock, itertools.repeat(10.0))
    settings = BenchSettings(warmup=4, warmup_seconds=0.05, iterations=5, max_windows=1)
    with runner:
        result = measure([RunnerWorkload(runner, feeds())], settings, name="m")
        # validate + 3 more warm-up iterations (30 ms), then 20 ms more warm-up (2 calls), then 5 timed
        assert runner.calls == 1 + 3 + 2 + 5
    assert result.iterations == 5
    assert result.warmup == 4


def test_duration_windows_stop_at_the_deadline(clock: FakeClock) -> None:
    runner = scripted(clock, itertools.repeat(10.0))
    with runner:
        result = measure(
            [RunnerWorkload(runner, feeds())], BenchSettings(warmup=1, duration=0.05, min_iterations=1), name="m"
        )
    assert result.windows_ms == [10.0, 10.0, 10.0]  # equal windows settle at once
    assert result.iterations == 15  # 50 ms / 10 ms per window
    assert result.stabilised is True


def test_min_iterations_outlast_a_short_duration(clock: FakeClock) -> None:
    runner = scripted(clock, itertools.repeat(100.0))
    settings = BenchSettings(warmup=1, duration=0.01, min_iterations=3, max_windows=1)
    with runner:
        result = measure([RunnerWorkload(runner, feeds())], settings, name="m")
    assert result.iterations == 3


def test_a_window_outgrows_its_preallocated_stamps(clock: FakeClock) -> None:
    # warm-up calls of 50 ms predict 17 stamps for a 50 ms window; the window then runs 5000 calls
    runner = scripted(clock, itertools.chain([50.0] * 3, itertools.repeat(0.01)))
    settings = BenchSettings(warmup=3, duration=0.05, max_windows=1)
    with runner:
        result = measure([RunnerWorkload(runner, feeds())], settings, name="m")
    assert result.iterations == 5000
    assert result.median_ms == pytest.approx(0.01, rel=1e-9)


# concurrent callers (real threads, real clock: only counts are asserted) --------------------------


def identity(feeds: Feeds) -> Outputs:
    return {"y": feeds["x"]}


def test_callers_on_separate_sessions_each_run_every_iteration() -> None:
    runners = [FakeRunner(identity, INPUTS, OUTPUTS, name=f"r{i}") for i in range(3)]
    for runner in runners:
        runner.activate()
    try:
        settings = BenchSettings(warmup=2, iterations=4, max_windows=3, tolerance=0.99)
        result = measure(
            [RunnerWorkload(r, feeds(2)) for r in runners], settings, name="m", configuration={"callers": 3}
        )
        calls = [r.calls for r in runners]
    finally:
        for runner in runners:
            runner.deactivate()
    windows_run = len(result.windows_ms)
    assert calls == [2 + 4 * windows_run] * 3  # validate + 1 warm-up, then 4 per window
    assert result.iterations == 3 * 4 * result.windows_used
    assert result.configuration == {"batch": 2, "callers": 3}
    assert result.label == "batch 2, 3 callers (shared session)"


def test_callers_sharing_one_session_pool_their_latencies() -> None:
    with FakeRunner(identity, INPUTS, OUTPUTS) as runner:
        settings = BenchSettings(warmup=1, iterations=6, max_windows=1)
        result = measure([RunnerWorkload(runner, feeds(3)) for _ in range(2)], settings, name="m")
    assert result.iterations == 12
    assert result.batch == 3
    assert result.throughput > 0


def test_a_failing_caller_fails_the_measurement() -> None:
    seen = itertools.count()

    def flaky(feeds: Feeds) -> Outputs:
        if next(seen) >= 3:
            raise RuntimeError("device lost")
        return identity(feeds)

    runner = FakeRunner(flaky, INPUTS, OUTPUTS, name="flaky")
    # an error that is no ModelportError (FakeRunner raises the RuntimeError as it is) becomes a BackendError
    with runner, pytest.raises(BackendError, match=r"'flaky' failed while being measured: device lost"):
        measure([RunnerWorkload(runner, feeds())], BenchSettings(warmup=1, iterations=5, max_windows=1), name="flaky")


def test_measure_refuses_nothing_and_unvalidated_workloads() -> None:
    with pytest.raises(ConfigError, match=r"nothing to measure for 'm': give one workload per caller"):
        measure([], BenchSettings(), name="m")
    with FakeRunner(identity, INPUTS, OUTPUTS) as runner:
        workload = RunnerWorkload(runner, feeds())
        with pytest.raises(BackendError, match=r"the workload was not validated — call validate\(\) before timing it"):
            _ = workload.call


def test_bad_feeds_fail_before_any_timing(clock: FakeClock) -> None:
    runner = scripted(clock, itertools.repeat(1.0))
    with runner:
        with pytest.raises(InputError, match=r"arr\.astype\(np\.float32\)"):
            measure([RunnerWorkload(runner, {"x": np.zeros((1, 3), np.float64)})], BenchSettings(), name="m")
        assert runner.calls == 0


def test_interleaved_refuses_bad_arguments() -> None:
    with pytest.raises(ConfigError, match=r"bench_interleaved\(\) needs at least one runner"):
        bench_interleaved([], feeds())
    runner = FakeRunner(identity, INPUTS, OUTPUTS)
    with runner, pytest.raises(ConfigError, match=r"needs rounds >= 1 and duration > 0 \(got 0, 1.0\)"):
        bench_interleaved([runner], feeds(), duration=1.0, rounds=0)


# stages -----------------------------------------------------------------------------------------

STAGE_MODULE = """
CLOCK = None

def pre(feeds):
    CLOCK.advance_ms(2.0)
    return {"x": feeds["x"] + 1}

def post(outputs):
    CLOCK.advance_ms(1.0)
    return outputs
"""


@pytest.fixture
def stage_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> str:
    """A module of python pipeline stages that take 2 ms (pre) and 1 ms (post) of fake time."""
    (tmp_path / "bench_stage_fns.py").write_text(STAGE_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bench_stage_fns", raising=False)
    module = importlib.import_module("bench_stage_fns")
    monkeypatch.setattr(module, "CLOCK", clock)
    return "bench_stage_fns"


def python_pipeline(module: str, runner: Runner) -> Pipeline:
    config = PipelineConfig.model_validate(
        {
            "preprocess": [{"kind": "python", "entry_point": f"{module}:pre"}],
            "postprocess": [{"kind": "python", "entry_point": f"{module}:post"}],
        }
    )
    return Pipeline.build(config, runner.inputs, runner.outputs, base_dir=Path("."))


def test_pipeline_stages_are_timed_apart(clock: FakeClock, stage_functions: str) -> None:
    seen: list[np.ndarray[Any, Any]] = []

    def model(feeds: Feeds) -> Outputs:
        clock.advance_ms(5.0)
        seen.append(feeds["x"])
        return {"y": feeds["x"]}

    with FakeRunner(model, INPUTS, OUTPUTS) as runner:
        pipeline = python_pipeline(stage_functions, runner)
        workload = StagedWorkload(runner, feeds(2), 2, pipeline=pipeline)
        result = measure([workload], BenchSettings(warmup=2, iterations=6, max_windows=3), name="m")
    np.testing.assert_array_equal(seen[-1], np.ones((2, 3), np.float32))  # the model got the pre-processed feeds
    assert workload.stages == ("preprocess", "compute", "postprocess")
    assert list(result.stages) == [
        "preprocess",
        "compute",
        "postprocess",
        "preprocess.python",
        "postprocess.python",
        "end_to_end",
    ]
    expected = {"preprocess": 2.0, "compute": 5.0, "postprocess": 1.0, "end_to_end": 8.0}
    for name, ms in expected.items():
        stage = result.stages[name]
        assert (stage.min_ms, stage.median_ms, stage.p99_ms, stage.max_ms) == pytest.approx((ms,) * 4, rel=1e-9)
        assert stage.share == pytest.approx(ms / 8.0, rel=1e-9)
    assert result.median_ms == pytest.approx(8.0, rel=1e-9)
    assert result.unmeasured == {"h2d": NOT_ON_CPU, "d2h": NOT_ON_CPU}
    assert result.iterations == 18
    json.dumps(result.to_dict())


def test_staged_workload_needs_a_pipeline_or_a_device() -> None:
    runner = FakeRunner(identity, INPUTS, OUTPUTS)
    with (
        runner,
        pytest.raises(ConfigError, match=r"a staged workload needs a pipeline or a device — use RunnerWorkload"),
    ):
        StagedWorkload(runner, feeds(), 2)


def test_plain_cpu_workload_reports_the_copies_as_not_applicable() -> None:
    with FakeRunner(identity, INPUTS, OUTPUTS) as runner:
        result = measure(
            [RunnerWorkload(runner, feeds())], BenchSettings(warmup=1, iterations=3, max_windows=1), name="m"
        )
    assert result.stages == {}
    assert result.unmeasured == {"h2d": "n/a (CPU)", "d2h": "n/a (CPU)"}


# devices ----------------------------------------------------------------------------------------


def relu_model() -> ir.Model:
    return ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 8] y)
        {
            t = Relu(x)
            y = Add(t, x)
        }
        """
    )


def test_cpu_session_has_no_device() -> None:
    with OrtRunner(relu_model(), intra_op_threads=1) as runner:
        assert device_of(runner) is None
    with FakeRunner(identity, INPUTS, OUTPUTS) as fake:
        assert device_of(fake) is None


def test_iobinding_mechanics_on_the_cpu() -> None:
    """The IOBinding path (used on GPUs) gives session.run's outputs and rebinds when a shape changes.

    On the CPU its "copies" are no host-device transfer, so the public path never uses it there;
    this test runs it on the CPU only to check the mechanics.
    """
    rng = np.random.default_rng(0)
    runner = OrtRunner(relu_model(), intra_op_threads=1)
    with runner:
        compute = IoBindingCompute(runner.session, ["y"], "cpu", 0)
        sent = []
        for batch in (2, 2, 5):
            x = rng.standard_normal((batch, 8)).astype(np.float32)
            sent.append((x, x.copy()))
            compute.upload({"x": x})
            compute.compute()
            np.testing.assert_array_equal(compute.download()["y"], np.maximum(x, 0) + x)
        for given, original in sent:
            np.testing.assert_array_equal(given, original)  # the caller's arrays are never written to
        workload = StagedWorkload(runner, {"x": x}, 5, device=compute)
        probe = MemoryProbe()
        result = measure([workload], BenchSettings(warmup=1, iterations=4, max_windows=1), name="m", memory=probe)
    assert list(result.stages) == ["h2d", "compute", "d2h", "end_to_end"]
    assert result.unmeasured == {}
    assert result.memory is not None
    assert result.memory.device_source.startswith("n/a")  # no GPU here to ask


@pytest.mark.gpu
def test_cuda_session_times_the_copies_apart() -> None:
    from modelport.bench.sweep import workload_for

    runner = OrtRunner(relu_model(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with runner:
        assert device_of(runner) == ("cuda", 0)
        x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
        workload = workload_for(runner, {"x": x}, 4, None)
        result = measure(
            [workload], BenchSettings(warmup=2, iterations=10, max_windows=1), name="m", memory=MemoryProbe()
        )
    assert {"h2d", "compute", "d2h", "end_to_end"} <= set(result.stages)
    assert result.unmeasured == {}
    assert result.memory is not None
    assert result.memory.device_mb is not None and result.memory.device_mb > 0


@pytest.mark.gpu
def test_cuda_runner_workload_says_copies_are_inside_compute() -> None:
    with OrtRunner(relu_model(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]) as runner:
        workload = RunnerWorkload(runner, {"x": np.zeros((1, 8), np.float32)})
    assert workload.on_device
    assert workload.unmeasured["h2d"].startswith("inside compute")


def test_nvidia_smi_output_is_read_for_this_process() -> None:
    text = "123, 456\n777, 1024\n777, 512\nbad line\n"
    assert harness._parse_compute_apps(text, 777) == 1536.0
    assert harness._parse_compute_apps(text, 5) is None


def test_device_memory_without_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert read_device_memory() == (None, "n/a (nvidia-smi not found)")


def test_device_memory_from_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []
    answer = f"1, 100\n{os.getpid()}, 2048\n"

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        asked.append(command)
        if answer == "fail":
            raise subprocess.CalledProcessError(3, command)
        return subprocess.CompletedProcess(command, 0, stdout=answer, stderr="")

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(subprocess, "run", fake_run)
    assert read_device_memory() == (2048.0, "nvidia-smi, this process, after the measurement")
    assert asked[0] == ["/usr/bin/nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
    assert read_device_memory(pid=99999999) == (None, "n/a (nvidia-smi lists no memory for process 99999999)")
    answer = "fail"
    used, source = read_device_memory()
    assert used is None
    assert source.startswith("n/a (nvidia-smi failed: Command")


# memory -----------------------------------------------------------------------------------------


def status_file(path: Path, rss_kb: int, hwm_kb: int) -> Path:
    path.write_text(f"Name:\tpython\nVmHWM:\t  {hwm_kb} kB\nVmRSS:\t  {rss_kb} kB\n", encoding="ascii")
    return path


def test_memory_probe_reads_the_peak_over_the_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status = status_file(tmp_path / "status", rss_kb=100 * 1024, hwm_kb=400 * 1024)
    clear = tmp_path / "clear_refs"
    clear.write_text("", encoding="ascii")
    monkeypatch.setattr(harness, "_STATUS", status)
    monkeypatch.setattr(harness, "_CLEAR_REFS", clear)
    probe = MemoryProbe()  # baseline: VmRSS 100 MiB
    probe.start()
    assert clear.read_text(encoding="ascii") == "5"  # the kernel's request to reset VmHWM
    status_file(status, rss_kb=150 * 1024, hwm_kb=180 * 1024)
    usage = probe.read()
    assert (usage.baseline_mb, usage.peak_mb, usage.delta_mb) == (100.0, 180.0, 80.0)
    assert usage.source.startswith("VmHWM (peak resident memory, reset before the measurement)")
    assert usage.device_mb is None
    assert usage.device_source == NOT_ON_CPU


def test_memory_probe_says_when_the_peak_could_not_be_reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "_STATUS", status_file(tmp_path / "status", 100 * 1024, 900 * 1024))
    monkeypatch.setattr(harness, "_CLEAR_REFS", tmp_path / "missing" / "clear_refs")
    probe = MemoryProbe()
    probe.start()
    usage = probe.read()
    assert usage.delta_mb == 800.0
    assert usage.source.startswith("VmHWM since the process started (reset refused:")


def test_memory_probe_without_proc_uses_getrusage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "_STATUS", tmp_path / "no-status")
    probe = MemoryProbe()
    probe.start()
    usage = probe.read()
    assert usage.source == "growth of getrusage ru_maxrss (the process's lifetime peak)"
    assert usage.delta_mb is not None and usage.delta_mb >= 0


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_memory_probe_sees_a_real_allocation() -> None:
    probe = MemoryProbe()
    probe.start()
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
    usage = probe.read()
    del block
    assert usage.delta_mb is not None
    assert usage.delta_mb >= 60.0


# histogram --------------------------------------------------------------------------------------


def test_histogram_of_equal_latencies_and_of_nothing() -> None:
    hist = latency_histogram(np.full(10, 3.0))
    assert sum(hist["counts"]) == 10
    assert hist["overflow"] == 0
    with pytest.raises(ConfigError, match=r"no latencies to draw a histogram of"):
        latency_histogram(np.empty(0))
