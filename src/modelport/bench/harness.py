"""Latency and throughput measurement, trtexec style: warm-up, timed windows until stable, stages, memory.

Why it is built this way:

- **Windows until stable.** One long run hides drift (turbo clocks, a neighbour process, thermal
  throttling). The harness measures windows (a duration or a number of iterations each) until the
  medians of the last :data:`STABLE_WINDOWS` agree within a tolerance (perf_analyzer's rule:
  ``max / min - 1 <= tolerance``), or until a maximum number of windows; then the result says it
  did not stabilise, in ``stabilised`` and in its warnings, never silently. Statistics are over
  the last :data:`STABLE_WINDOWS` windows: the earlier ones were an extended warm-up.
- **A lean timed loop.** Per iteration: the call, one ``perf_counter_ns``, one store into a
  preallocated list. Latency *i* is stamp *i+1* minus stamp *i*, so the latencies add up to the
  window's wall time and the throughput (items per wall second) agrees with the mean latency. An
  ONNX Runtime runner is called as a hand-written loop calls it, ``session.run(None, feeds)``
  with both arguments spelled out in the loop (bound in a ``functools.partial`` it costs about 1 %
  on a 15 µs call; an int64 ``array`` store costs another 1 % over a list store);
  ``benchmarks/bench_overhead.py`` measures the harness against such a loop.
- **Stages.** With a serving pipeline each iteration times pre-process, compute and post-process
  (and each named stage) apart; on a device (ONNX Runtime with CUDA or TensorRT) an IOBinding
  separates the host-to-device and device-to-host copies from compute. On the CPU there is no
  copy to time, so those stages read "n/a (CPU)": they are never invented.
- **Memory.** Peak resident memory (Linux ``VmHWM``, reset before each measurement through
  ``/proc/self/clear_refs``) less the resident memory before the session was created; device
  memory of this process from ``nvidia-smi`` when a GPU runs the model.
- **Concurrent callers** each run the same loop in a thread (on one shared session, or one
  session each); their latencies pool, and throughput is every item over the window's wall time.

A coefficient of variation above :data:`CV_WARNING` also marks a measurement unstable.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.errors import BackendError, ConfigError, ModelportError
from modelport.runners.base import Feeds, Outputs, Runner
from modelport.verify.inputs import feeds_batch

if TYPE_CHECKING:
    import onnx_ir as ir

    from modelport.serve.pipeline import Pipeline
    from modelport.verify.inputs import InputPlan

__all__ = [
    "CV_WARNING",
    "DEFAULT_MAX_WINDOWS",
    "DEFAULT_TOLERANCE",
    "DEFAULT_WINDOW_SECONDS",
    "INTERLEAVED_ORT_CONFIG",
    "NOT_ON_CPU",
    "STABLE_WINDOWS",
    "BenchResult",
    "BenchSettings",
    "Call",
    "IoBindingCompute",
    "MemoryProbe",
    "MemoryUsage",
    "RunnerWorkload",
    "StageStats",
    "StagedWorkload",
    "Workload",
    "bench",
    "bench_interleaved",
    "bench_runner",
    "device_of",
    "latency_histogram",
    "measure",
    "read_device_memory",
    "window_spread",
    "windows_settled",
]

logger = logging.getLogger(__name__)

#: Coefficient of variation above which a measurement is flagged unstable.
CV_WARNING = 0.10
#: How many consecutive windows must agree for a measurement to count as stable.
STABLE_WINDOWS = 3
#: Default tolerance between the medians of the last windows (max / min - 1).
DEFAULT_TOLERANCE = 0.05
#: Default cap on the number of windows before giving up on stability.
DEFAULT_MAX_WINDOWS = 10
#: Default length of one window when neither iterations nor a duration is given.
DEFAULT_WINDOW_SECONDS = 1.0
#: ONNX Runtime session configuration for runners timed against each other with
#: :func:`bench_interleaved`: a session's worker threads keep spinning for tens of milliseconds
#: after its last run, so in the other session's window they take a core from it (on 2 cores a
#: 75 ms window of a ResNet-like model measured 7.8 ms a run instead of 3.8 ms; two runners with
#: 250 ms windows kept their medians but had a CV of 31-92 % instead of 3-41 %, and with eight
#: runners the medians read 7-36 % high). This stops the spinning when a run
#: returns; the next run wakes the workers, which costs far less than a spinning neighbour.
INTERLEAVED_ORT_CONFIG: Mapping[str, str] = {"session.force_spinning_stop": "1"}
#: What a stage that cannot exist on the host (a copy to or from a device) reports.
NOT_ON_CPU = "n/a (CPU)"
#: Bins of the latency histogram kept in a result (between the minimum and p99; above p99 overflows).
HISTOGRAM_BINS = 20
#: Iterations below which percentiles are called rough.
FEW_ITERATIONS = 20
#: Upper bound of the preallocated stamps of one duration window (it grows past this if needed).
_MAX_PREALLOCATED = 2_000_000
_DEVICE_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
#: What the copies of a device run through ``session.run`` (not an IOBinding) report.
_INSIDE_RUN = "inside compute (session.run copies to and from the device itself)"
#: What one iteration calls: ``function(first, second)``, e.g. ``(session.run, None, feeds)``.
Call = tuple[Callable[[Any, Any], object], Any, Any]
_STATUS = Path("/proc/self/status")
#: The clock of every timed loop (a module attribute so that tests can drive it).
_clock: Callable[[], int] = time.perf_counter_ns
_CLEAR_REFS = Path("/proc/self/clear_refs")


# -------------------------------------------------------------------------------------------------
# settings and results


@dataclass(frozen=True)
class BenchSettings:
    """How one configuration is measured.

    Warm-up runs at least ``warmup`` iterations and at least ``warmup_seconds``. Each window runs
    ``iterations`` calls per caller, or ``duration`` seconds (at least ``min_iterations`` calls
    per caller); without either a window lasts :data:`DEFAULT_WINDOW_SECONDS`. Windows repeat
    until the medians of the last :data:`STABLE_WINDOWS` agree within ``tolerance`` or
    ``max_windows`` were measured; with ``max_windows`` below :data:`STABLE_WINDOWS` exactly that
    many windows run and stability is not judged.
    """

    warmup: int = 5
    warmup_seconds: float = 0.0
    iterations: int | None = None
    duration: float | None = None
    min_iterations: int = 10
    tolerance: float = DEFAULT_TOLERANCE
    max_windows: int = DEFAULT_MAX_WINDOWS

    def __post_init__(self) -> None:
        if self.iterations is not None and self.duration is not None:
            raise ConfigError(
                f"both iterations ({self.iterations}) and duration ({self.duration} s) were given — "
                "a window is bounded by one of them; drop the other"
            )
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"iterations must be >= 1 (got {self.iterations})")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise ConfigError(f"duration must be a positive number of seconds (got {self.duration})")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0 iterations (got {self.warmup})")
        if not (math.isfinite(self.warmup_seconds) and self.warmup_seconds >= 0):
            raise ConfigError(f"warmup_seconds must be >= 0 (got {self.warmup_seconds})")
        if self.min_iterations < 1:
            raise ConfigError(f"min_iterations must be >= 1 (got {self.min_iterations})")
        if not 0 < self.tolerance < 1:
            raise ConfigError(f"stability tolerance must be between 0 and 1 (got {self.tolerance}) — e.g. 0.05 for 5 %")
        if self.max_windows < 1:
            raise ConfigError(f"max_windows must be >= 1 (got {self.max_windows})")

    @property
    def window_seconds(self) -> float | None:
        """Seconds per window, or None when windows are bounded by iterations."""
        if self.iterations is not None:
            return None
        return self.duration if self.duration is not None else DEFAULT_WINDOW_SECONDS

    @property
    def judges_stability(self) -> bool:
        return self.max_windows >= STABLE_WINDOWS


@dataclass
class StageStats:
    """Latency of one stage of an iteration (milliseconds) and its share of the mean end to end."""

    name: str
    min_ms: float
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    share: float


@dataclass
class MemoryUsage:
    """Resident memory before the session existed, its peak while measuring, and device memory.

    ``delta_mb`` is ``peak_mb - baseline_mb``: what creating and running the session cost.
    ``source`` says how the peak was read (and whether it could be reset before the measurement).
    """

    baseline_mb: float | None
    peak_mb: float | None
    delta_mb: float | None
    source: str
    device_mb: float | None = None
    device_source: str = NOT_ON_CPU


@dataclass
class BenchResult:
    """Latency statistics (milliseconds) and throughput (items/s) of one configuration.

    Latencies are per call (one batch); ``iterations`` counts the calls the statistics are over
    (every caller's, in the windows used). ``windows_ms`` holds the median of every window in
    order, ``windows_used`` how many of the last ones the statistics pool, ``stabilised`` whether
    the last :data:`STABLE_WINDOWS` agreed within ``tolerance`` (None: not judged).
    """

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
    windows_ms: list[float] = field(default_factory=list)
    windows_used: int = 1
    stabilised: bool | None = None
    tolerance: float | None = None
    stages: dict[str, StageStats] = field(default_factory=dict)
    unmeasured: dict[str, str] = field(default_factory=dict)
    memory: MemoryUsage | None = None
    configuration: dict[str, Any] = field(default_factory=dict)
    histogram: dict[str, Any] = field(default_factory=dict)

    @property
    def stable(self) -> bool:
        """Low coefficient of variation, and the windows agreed (where that was judged)."""
        return self.cv <= CV_WARNING and self.stabilised is not False

    @property
    def label(self) -> str:
        """The configuration in words, defaults left out: ``batch 8, threads 2, 4 callers (shared session)``."""
        config = self.configuration
        parts = [f"batch {self.batch}"]
        if config.get("intra_op_threads"):
            parts.append(f"threads {config['intra_op_threads']}")
        if config.get("inter_op_threads"):
            parts.append(f"inter-op {config['inter_op_threads']}")
        callers = int(config.get("callers", 1))
        if callers > 1:
            mode = "sessions" if config.get("caller_mode") == "sessions" else "shared session"
            parts.append(f"{callers} callers ({mode})")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stable"] = self.stable
        data["label"] = self.label
        return data


@dataclass(frozen=True)
class _Summary:
    min_ms: float
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, ms: np.ndarray[Any, Any]) -> _Summary:
        p90, p95, p99 = (float(v) for v in np.percentile(ms, [90, 95, 99]))
        return cls(float(ms.min()), float(ms.mean()), float(np.median(ms)), p90, p95, p99, float(ms.max()))


def latency_histogram(ms: np.ndarray[Any, Any], bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Linear bins from the minimum to p99 (where nearly everything is); what lies above p99 overflows.

    A plain min-to-max histogram puts almost every call in its first bin as soon as one call
    stalls; the tail is better told as a count (and by the percentiles).
    """
    if ms.size == 0:
        raise ConfigError("no latencies to draw a histogram of — measure at least one iteration")
    low = float(ms.min())
    high = float(np.percentile(ms, 99))
    if high <= low:
        high = low + max(abs(low) * 1e-3, 1e-6)
    counts, edges = np.histogram(ms[ms <= high], bins=bins, range=(low, high))
    return {
        "edges_ms": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "overflow": int((ms > high).sum()),
        "overflow_from_ms": high,
    }


# -------------------------------------------------------------------------------------------------
# stability


def window_spread(values: Sequence[float]) -> float:
    """``max / min - 1`` of ``values``: 0 when they all agree, infinite when one is 0 and others are not."""
    if not values:
        raise ConfigError("window_spread() needs at least one value")
    low, high = min(values), max(values)
    if high == low:
        return 0.0
    if low <= 0:
        return math.inf
    return high / low - 1


def windows_settled(medians: Sequence[float], tolerance: float) -> bool:
    """Whether the last :data:`STABLE_WINDOWS` medians agree within ``tolerance``."""
    if len(medians) < STABLE_WINDOWS:
        return False
    return window_spread(medians[-STABLE_WINDOWS:]) <= tolerance


def _not_settled_warning(medians: Sequence[float], tolerance: float) -> str:
    last = medians[-STABLE_WINDOWS:]
    shown = ", ".join(f"{m:.4g}" for m in last)
    return (
        f"did not stabilise: the medians of the last {len(last)} windows ({shown} ms) differ by "
        f"{window_spread(last):.1%}, more than the tolerance {tolerance:.1%}, after {len(medians)} windows — "
        "close other work, lengthen the windows (--duration / --iterations) or allow more (--max-windows)"
    )


# -------------------------------------------------------------------------------------------------
# memory


def _proc_status() -> dict[str, int] | None:
    """``VmRSS`` and ``VmHWM`` of this process in kB (Linux), or None where /proc is not there."""
    try:
        text = _STATUS.read_text(encoding="ascii")
    except OSError:
        return None
    found = {key: int(value) for key, value in re.findall(r"^(VmRSS|VmHWM):\s+(\d+)\s+kB", text, re.MULTILINE)}
    return found if len(found) == 2 else None


def _reset_peak() -> str | None:
    """Reset the peak RSS to the current RSS; None when that worked, else why not."""
    try:
        with _CLEAR_REFS.open("w", encoding="ascii") as handle:
            handle.write("5")
    except OSError as e:
        return str(e)
    return None


def _max_rss_kb() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, kB elsewhere


def _parse_compute_apps(text: str, pid: int) -> float | None:
    """MiB used by ``pid`` in ``nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits``."""
    total = None
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid) and fields[1].replace(".", "", 1).isdigit():
            total = (total or 0.0) + float(fields[1])
    return total


def read_device_memory(pid: int | None = None) -> tuple[float | None, str]:
    """Device memory (MiB) ``pid`` (default: this process) holds on all GPUs, from nvidia-smi, and how it was read."""
    pid = os.getpid() if pid is None else pid
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, "n/a (nvidia-smi not found)"
    query = [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"n/a (nvidia-smi failed: {e})"
    used = _parse_compute_apps(done.stdout, pid)
    if used is None:
        return None, f"n/a (nvidia-smi lists no memory for process {pid})"
    return used, "nvidia-smi, this process, after the measurement"


class MemoryProbe:
    """Resident memory before a session exists (on creation), and the peak while one is measured.

    Create it before the session, call :meth:`start` right before a measurement and :meth:`read`
    after it. On Linux :meth:`start` resets the kernel's peak (VmHWM) to the current resident
    size, so each measurement's peak is its own; where that is refused, or off Linux
    (``getrusage``), the peak is the process's lifetime peak and ``source`` says so.
    """

    def __init__(self) -> None:
        status = _proc_status()
        self._proc = status is not None
        self._baseline_kb: int | None = status["VmRSS"] if status else _max_rss_kb()
        self._reset_error: str | None = None

    def start(self) -> None:
        if self._proc:
            self._reset_error = _reset_peak()

    def read(self, *, device: bool = False) -> MemoryUsage:
        if self._proc:
            status = _proc_status()
            peak_kb = status["VmHWM"] if status else None
            source = (
                "VmHWM (peak resident memory, reset before the measurement) less VmRSS before the session"
                if self._reset_error is None
                else f"VmHWM since the process started (reset refused: {self._reset_error}) less VmRSS before"
            )
        else:
            peak_kb = _max_rss_kb()
            source = "growth of getrusage ru_maxrss (the process's lifetime peak)"
        if peak_kb is None or self._baseline_kb is None:
            usage = MemoryUsage(None, None, None, "n/a (no /proc and no getrusage here)")
        else:
            usage = MemoryUsage(
                baseline_mb=self._baseline_kb / 1024,
                peak_mb=peak_kb / 1024,
                delta_mb=max(peak_kb - self._baseline_kb, 0) / 1024,
                source=source,
            )
        if device:
            usage.device_mb, usage.device_source = read_device_memory()
        return usage


# -------------------------------------------------------------------------------------------------
# what one iteration runs


def _infer_unchecked(runner: Runner, feeds: Feeds) -> Outputs:
    return runner.infer(feeds, check=False)


def _engine_call(runner: Runner, feeds: Feeds) -> Call:
    """The call a tight hand-written loop would make: ``session.run(None, feeds)`` for ONNX Runtime."""
    from modelport.runners.onnxruntime import OrtRunner

    if isinstance(runner, OrtRunner) and all(array.dtype != object for array in feeds.values()):
        return runner.session.run, None, dict(feeds)
    return _infer_unchecked, runner, feeds


def device_of(runner: Runner) -> tuple[str, int] | None:
    """``("cuda", device_id)`` when ``runner`` runs its model on a GPU (ONNX Runtime CUDA/TensorRT), else None."""
    from modelport.runners.onnxruntime import OrtRunner

    if not isinstance(runner, OrtRunner) or not runner.is_active:
        return None
    providers = list(runner.session.get_providers())
    if not providers or providers[0] not in _DEVICE_PROVIDERS:
        return None
    options = runner.session.get_provider_options().get(providers[0], {})
    return "cuda", int(options.get("device_id", 0) or 0)


class IoBindingCompute:
    """Runs an ONNX Runtime session through an IOBinding, so the copies to and from the device are timed apart.

    :meth:`upload` copies the feeds into device buffers kept between iterations (reallocated only
    when a shape changes), :meth:`compute` runs and waits for the device, :meth:`download`
    copies the outputs back. Only a GPU makes the copies meaningful; on ``device_type="cpu"``
    the same calls run (useful to test the mechanics) but are no host-device transfer.
    """

    def __init__(
        self, session: Any, output_names: Sequence[str], device_type: str = "cuda", device_id: int = 0
    ) -> None:
        import onnxruntime as ort

        self._ort = ort
        self._session = session
        self._binding = session.io_binding()
        self._device = (device_type, device_id)
        self._names = list(output_names)
        self._inputs: dict[str, tuple[Any, tuple[int, ...], np.dtype[Any]]] = {}
        self._bind_outputs()

    def _bind_outputs(self) -> None:
        # After a run the binding keeps the outputs ORT allocated and reuses them (no allocation per
        # iteration); a new input shape needs fresh ones, so the outputs are bound again then.
        self._binding.clear_binding_outputs()
        for name in self._names:
            self._binding.bind_output(name, *self._device)

    def upload(self, feeds: Feeds) -> None:
        reshaped = False
        for name, given in feeds.items():
            kept = self._inputs.get(name)
            contiguous = np.ascontiguousarray(given)
            if kept is None or kept[1] != given.shape or kept[2] != given.dtype:
                # a copy: on the CPU the OrtValue would otherwise share (and later overwrite) the caller's array
                value = self._ort.OrtValue.ortvalue_from_numpy(contiguous.copy(), *self._device)
                self._inputs[name] = (value, given.shape, given.dtype)
                self._binding.bind_ortvalue_input(name, value)
                reshaped = reshaped or kept is not None
            else:
                kept[0].update_inplace(contiguous)
        if reshaped:
            self._bind_outputs()
        self._binding.synchronize_inputs()

    def compute(self) -> None:
        self._session.run_with_iobinding(self._binding)
        self._binding.synchronize_outputs()

    def download(self) -> Outputs:
        return dict(zip(self._names, self._binding.copy_outputs_to_cpu(), strict=True))


class Workload(abc.ABC):
    """What one caller runs per iteration: :attr:`call`, plus the stage timings it keeps until :meth:`take`."""

    #: The stages this workload times itself, in order (empty: only end to end).
    stages: tuple[str, ...] = ()

    def __init__(self, batch: int, *, on_device: bool, unmeasured: Mapping[str, str]) -> None:
        self.batch = batch
        #: Whether the model runs on a device (a GPU), so device memory is worth reading.
        self.on_device = on_device
        #: Stages that exist in principle but are not timed apart here, with the reason.
        self.unmeasured = dict(unmeasured)

    @abc.abstractmethod
    def validate(self) -> None:
        """Run one iteration with every check on (feeds validated), untimed."""

    @property
    @abc.abstractmethod
    def call(self) -> Call:
        """What the timed loop calls per iteration: ``(function, first, second)``."""

    def take(self) -> dict[str, list[int]]:
        """Durations (ns) per stage since the last take, and forget them."""
        return {}


class RunnerWorkload(Workload):
    """The model alone on fixed feeds: the engine call and nothing else."""

    def __init__(self, runner: Runner, feeds: Feeds, batch: int | None = None) -> None:
        on_device = device_of(runner) is not None
        copies = _INSIDE_RUN if on_device else NOT_ON_CPU
        super().__init__(
            feeds_batch(runner.inputs, feeds) if batch is None else batch,
            on_device=on_device,
            unmeasured={"h2d": copies, "d2h": copies},
        )
        self._runner = runner
        self._feeds = feeds
        self._call: Call | None = None

    def validate(self) -> None:
        self._runner.infer(self._feeds)
        self._call = _engine_call(self._runner, self._feeds)

    @property
    def call(self) -> Call:
        if self._call is None:
            raise BackendError("the workload was not validated — call validate() before timing it")
        return self._call


class StagedWorkload(Workload):
    """Pre-process, (host-to-device copy,) compute, (device-to-host copy,) post-process, each timed.

    ``pipeline`` (optional) gives the pre- and post-process stages and ``feeds`` are then what a
    client sends; ``device`` (optional) runs compute through an IOBinding. Without a device the
    copies are :data:`NOT_ON_CPU`.
    """

    def __init__(
        self,
        runner: Runner,
        feeds: Feeds,
        batch: int,
        *,
        pipeline: Pipeline | None = None,
        device: IoBindingCompute | None = None,
    ) -> None:
        if pipeline is None and device is None:
            raise ConfigError("a staged workload needs a pipeline or a device — use RunnerWorkload for the model alone")
        on_device = device is not None or device_of(runner) is not None
        copies = NOT_ON_CPU if not on_device else _INSIDE_RUN
        super().__init__(batch, on_device=on_device, unmeasured={} if device else {"h2d": copies, "d2h": copies})
        self._runner = runner
        self._feeds = feeds
        self._pipeline = pipeline
        self._device = device
        self.stages = tuple(
            name
            for name, present in (
                ("preprocess", pipeline is not None),
                ("h2d", device is not None),
                ("compute", True),
                ("d2h", device is not None),
                ("postprocess", pipeline is not None),
            )
            if present
        )
        self._times: dict[str, list[int]] = {
            name: [] for name in ("preprocess", "h2d", "compute", "d2h", "postprocess")
        }
        self._named: dict[str, list[int]] = {}

    def validate(self) -> None:
        feeds, context = self._feeds, None
        if self._pipeline is not None:
            staged = self._pipeline.preprocess(self._feeds)
            feeds, context = staged.feeds, staged.context
        outputs = self._runner.infer(feeds)
        if self._device is not None:
            self._device.upload(feeds)
            self._device.compute()
            outputs = self._device.download()
        if self._pipeline is not None:
            self._pipeline.postprocess(outputs, context)

    @property
    def call(self) -> Call:
        return _staged_step, self, None

    def step(self) -> None:
        """One iteration, each stage timed."""
        clock = _clock
        pipeline, device = self._pipeline, self._device
        t0 = clock()
        feeds, context = self._feeds, None
        if pipeline is not None:
            staged = pipeline.preprocess(feeds)
            feeds, context = staged.feeds, staged.context
            self._record_named(staged.seconds)
        t1 = clock()
        if device is not None:
            device.upload(feeds)
            t2 = clock()
            device.compute()
            t3 = clock()
            outputs = device.download()
            t4 = clock()
        else:
            t2 = t1
            outputs = self._runner.infer(feeds, check=False)
            t3 = t4 = clock()
        if pipeline is not None:
            self._record_named(pipeline.postprocess(outputs, context).seconds)
        t5 = clock()
        times = self._times
        times["preprocess"].append(t1 - t0)
        times["h2d"].append(t2 - t1)
        times["compute"].append(t3 - t2)
        times["d2h"].append(t4 - t3)
        times["postprocess"].append(t5 - t4)

    def _record_named(self, seconds: Mapping[str, float]) -> None:
        for name, value in seconds.items():
            self._named.setdefault(name, []).append(int(value * 1e9))

    def take(self) -> dict[str, list[int]]:
        taken = {name: self._times[name] for name in self.stages}
        taken.update(self._named)
        self._times = {name: [] for name in self._times}
        self._named = {}
        return taken


def _staged_step(workload: StagedWorkload, _: object) -> None:
    workload.step()


# -------------------------------------------------------------------------------------------------
# the timed loop


def _timed_window(
    call: Call, iterations: int | None, seconds: float | None, min_iterations: int, capacity: int
) -> list[int]:
    """Run ``call`` and return n + 1 ``perf_counter_ns`` stamps; latency i is ``stamps[i + 1] - stamps[i]``.

    The stamps are preallocated (from the warm-up's pace for a duration window) so that the loop
    does the call, a clock read and a store per iteration, and nothing else.
    """
    clock = _clock
    function, first, second = call
    if iterations is not None:
        stamps = [0] * (iterations + 1)
        stamps[0] = clock()
        for i in range(1, iterations + 1):
            function(first, second)
            stamps[i] = clock()
        return stamps
    assert seconds is not None
    limit = max(capacity, 16)
    stamps = [0] * (limit + 1)
    stamps[0] = clock()
    deadline = stamps[0] + int(seconds * 1e9)
    start = 1
    while True:
        for n in range(start, limit + 1):
            function(first, second)
            now = clock()
            stamps[n] = now
            if now >= deadline and n >= min_iterations:
                del stamps[n + 1 :]
                return stamps
        # the estimate was short: double the stamps (rare, and outside the steady state)
        start = limit + 1
        stamps.extend([0] * limit)
        limit *= 2


def _run_callers(
    calls: Sequence[Call],
    iterations: int | None,
    seconds: float | None,
    min_iterations: int,
    capacity: int,
    pool: ThreadPoolExecutor | None,
) -> list[list[int]]:
    """One window: every caller runs the timed loop (in its own thread when there are several)."""
    if pool is None or len(calls) == 1:
        return [_timed_window(calls[0], iterations, seconds, min_iterations, capacity)]
    barrier = threading.Barrier(len(calls))

    def one(call: Call) -> list[int]:
        barrier.wait()
        return _timed_window(call, iterations, seconds, min_iterations, capacity)

    futures = [pool.submit(one, call) for call in calls]
    return [future.result() for future in futures]


@dataclass
class _Window:
    """One window: every call's latency, the span of the stamps (throughput), the time it took in all."""

    latencies_ns: np.ndarray[Any, Any]
    wall_ns: int
    elapsed_ns: int
    stages: dict[str, np.ndarray[Any, Any]]

    @classmethod
    def of(cls, stamps: Sequence[Sequence[int]], elapsed_ns: int, stages: Mapping[str, list[int]]) -> _Window:
        arrays = [np.diff(np.asarray(s, dtype=np.int64)) for s in stamps]
        wall = max(s[-1] for s in stamps) - min(s[0] for s in stamps)
        staged = {k: np.asarray(v, dtype=np.int64) for k, v in stages.items()}
        return cls(np.concatenate(arrays), int(wall), max(int(elapsed_ns), int(wall)), staged)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.latencies_ns)) / 1e6


def _warm_up(calls: Sequence[Call], settings: BenchSettings, pool: ThreadPoolExecutor | None) -> int:
    """Untimed runs (beyond the validating one); returns the stamps to preallocate for one duration window."""
    runs: list[list[int]] = []
    rest = max(settings.warmup - 1, 0)  # validate() ran the first
    if rest:
        runs = _run_callers(calls, rest, None, 1, 0, pool)
    spent = max((s[-1] - s[0] for s in runs), default=0) / 1e9
    if settings.warmup_seconds > spent:
        runs += _run_callers(calls, None, settings.warmup_seconds - spent, 1, 1024, pool)
    window = settings.window_seconds
    if window is None:
        return 0
    busy_ns = sum(s[-1] - s[0] for s in runs)
    count = sum(len(s) - 1 for s in runs)
    if not count or busy_ns <= 0:
        return 1024
    return int(min(_MAX_PREALLOCATED, window * 1e9 / (busy_ns / count) * 1.25 + 16))


def _merge(taken: Sequence[Mapping[str, list[int]]]) -> dict[str, list[int]]:
    merged: dict[str, list[int]] = {}
    for stages in taken:
        for name, values in stages.items():
            merged.setdefault(name, []).extend(values)
    return merged


def _measure_windows(
    workloads: Sequence[Workload], settings: BenchSettings, capacity: int, pool: ThreadPoolExecutor | None
) -> list[_Window]:
    calls = [w.call for w in workloads]
    windows: list[_Window] = []
    for _ in range(settings.max_windows):
        start = _clock()
        stamps = _run_callers(
            calls, settings.iterations, settings.window_seconds, settings.min_iterations, capacity, pool
        )
        elapsed = _clock() - start
        windows.append(_Window.of(stamps, elapsed, _merge([w.take() for w in workloads])))
        if settings.judges_stability and windows_settled([w.median_ms for w in windows], settings.tolerance):
            break
    return windows


def measure(
    workloads: Sequence[Workload],
    settings: BenchSettings,
    *,
    name: str,
    engine: Mapping[str, Any] | None = None,
    configuration: Mapping[str, Any] | None = None,
    memory: MemoryProbe | None = None,
) -> BenchResult:
    """Warm up, then time windows of ``workloads`` (one per concurrent caller) until stable.

    Each workload is validated once (its feeds checked) before anything is timed. ``memory``
    (created before the session) adds the peak resident memory of the measurement.
    """
    if not workloads:
        raise ConfigError(f"nothing to measure for '{name}': give one workload per caller (at least one)")
    for workload in workloads:
        workload.validate()
    calls = [w.call for w in workloads]
    pool = ThreadPoolExecutor(len(calls), thread_name_prefix="modelport-bench") if len(calls) > 1 else None
    try:
        capacity = _warm_up(calls, settings, pool)
        for workload in workloads:
            workload.take()  # drop the warm-up's stage timings
        if memory is not None:
            memory.start()
        windows = _measure_windows(workloads, settings, capacity, pool)
    except ModelportError:
        raise
    except Exception as e:
        raise BackendError(f"'{name}' failed while being measured: {e}") from e
    finally:
        if pool is not None:
            pool.shutdown()
    used = windows[-STABLE_WINDOWS:] if settings.judges_stability else windows
    stabilised = (
        windows_settled([w.median_ms for w in windows], settings.tolerance) if settings.judges_stability else None
    )
    result = _result(name, workloads[0], settings.warmup, windows, used, dict(engine or {}))
    result.stabilised = stabilised
    result.tolerance = settings.tolerance if settings.judges_stability else None
    result.configuration = {"batch": result.batch, **dict(configuration or {})}
    if stabilised is False:
        result.warnings.append(_not_settled_warning(result.windows_ms, settings.tolerance))
    if memory is not None:
        result.memory = memory.read(device=workloads[0].on_device)
    return result


def _result(
    name: str,
    workload: Workload,
    warmup: int,
    windows: Sequence[_Window],
    used: Sequence[_Window],
    engine: dict[str, Any],
) -> BenchResult:
    latencies = np.concatenate([w.latencies_ns for w in used])
    wall_ns = sum(w.wall_ns for w in used)
    ms = latencies / 1e6
    summary = _Summary.of(ms)
    std = float(ms.std())
    result = BenchResult(
        name=name,
        batch=workload.batch,
        iterations=int(ms.size),
        warmup=warmup,
        total_seconds=sum(w.elapsed_ns for w in used) / 1e9,
        min_ms=summary.min_ms,
        mean_ms=summary.mean_ms,
        median_ms=summary.median_ms,
        p90_ms=summary.p90_ms,
        p95_ms=summary.p95_ms,
        p99_ms=summary.p99_ms,
        max_ms=summary.max_ms,
        std_ms=std,
        cv=std / summary.mean_ms if summary.mean_ms > 0 else 0.0,
        throughput=workload.batch * ms.size / (wall_ns / 1e9) if wall_ns > 0 else 0.0,
        engine=engine,
        windows_ms=[w.median_ms for w in windows],
        windows_used=len(used),
        unmeasured=dict(workload.unmeasured),
        histogram=latency_histogram(ms),
    )
    result.stages = _stage_stats(used, summary.mean_ms, ms)
    if not result.cv <= CV_WARNING:
        result.warnings.append(
            f"unstable: coefficient of variation {result.cv:.1%} > {CV_WARNING:.0%} — the machine is busy "
            "or the run is too short; close other work or raise --duration"
        )
    if ms.size < FEW_ITERATIONS:
        result.warnings.append(f"only {ms.size} timed iterations: percentiles are rough")
    return result


def _stage_stats(windows: Sequence[_Window], mean_ms: float, end_to_end: np.ndarray[Any, Any]) -> dict[str, StageStats]:
    names = list(dict.fromkeys(name for w in windows for name in w.stages))
    if not names:
        return {}
    stats: dict[str, StageStats] = {}
    for name in [*names, "end_to_end"]:
        if name == "end_to_end":
            ms = end_to_end
        else:
            ms = np.concatenate([w.stages.get(name, np.empty(0, np.int64)) for w in windows]) / 1e6
        if ms.size == 0:
            continue
        s = _Summary.of(ms)
        stats[name] = StageStats(
            name=name,
            min_ms=s.min_ms,
            mean_ms=s.mean_ms,
            median_ms=s.median_ms,
            p90_ms=s.p90_ms,
            p95_ms=s.p95_ms,
            p99_ms=s.p99_ms,
            max_ms=s.max_ms,
            share=s.mean_ms / mean_ms if mean_ms > 0 else 0.0,
        )
    return stats


# -------------------------------------------------------------------------------------------------
# entry points


def bench_runner(
    runner: Runner,
    feeds: Feeds,
    *,
    warmup: int = 5,
    iterations: int | None = None,
    duration: float | None = None,
    min_iterations: int = 10,
    name: str | None = None,
    max_windows: int = 1,
    tolerance: float = DEFAULT_TOLERANCE,
) -> BenchResult:
    """Time ``runner`` on ``feeds`` (an active runner). Feeds are validated once, before timing.

    One window of ``iterations`` calls or ``duration`` seconds (2 s when neither is given) by
    default; ``max_windows`` >= 3 repeats windows until their medians agree within ``tolerance``.
    """
    if iterations is None and duration is None:
        duration = 2.0
    settings = BenchSettings(
        warmup=warmup,
        iterations=iterations,
        duration=duration,
        min_iterations=min_iterations,
        tolerance=tolerance,
        max_windows=max_windows,
    )
    workload = RunnerWorkload(runner, feeds)
    return measure([workload], settings, name=name or runner.name, engine=runner.describe())


def bench_interleaved(
    runners: Sequence[Runner],
    feeds: Feeds,
    *,
    duration: float = 2.0,
    rounds: int = 4,
    warmup: int = 3,
    settled: Callable[[list[list[float]]], bool] | None = None,
) -> list[BenchResult]:
    """Time several runners on the same feeds in alternating short windows.

    A side-by-side comparison run one after the other is at the mercy of whatever else the
    machine did meanwhile; alternating windows spreads that noise over all contenders alike.
    Each window runs at least three calls; the statistics pool every window of a runner.
    ``settled``, called after each round with every runner's window medians so far (ms), ends
    the comparison early when it returns True (a verdict that more rounds would not change).
    ONNX Runtime runners with a thread pool should be built with :data:`INTERLEAVED_ORT_CONFIG`.
    """
    if not runners:
        raise ConfigError("bench_interleaved() needs at least one runner")
    if rounds < 1 or not duration > 0:
        raise ConfigError(f"bench_interleaved() needs rounds >= 1 and duration > 0 (got {rounds}, {duration})")
    workloads = [RunnerWorkload(runner, feeds) for runner in runners]
    for workload in workloads:
        workload.validate()
    if len(runners) > 1:
        for runner in runners:
            _warn_if_spinning(runner)
    calls = [w.call for w in workloads]
    for call in calls:
        _timed_window(call, max(warmup - 1, 0), None, 1, 0)
    window = duration / (rounds * len(runners))
    windows: list[list[_Window]] = [[] for _ in runners]
    for _ in range(rounds):
        for i, call in enumerate(calls):
            start = _clock()
            stamps = _timed_window(call, None, window, 3, 1024)
            windows[i].append(_Window.of([stamps], _clock() - start, {}))
        if settled is not None and settled([[w.median_ms for w in runs] for runs in windows]):
            break
    return [
        _result(runner.name, workload, warmup, runs, runs, runner.describe())
        for runner, workload, runs in zip(runners, workloads, windows, strict=True)
    ]


def _warn_if_spinning(runner: Runner) -> None:
    """Warn about an ONNX Runtime session whose idle workers would slow the others' windows."""
    from modelport.runners.onnxruntime import OrtRunner

    if not isinstance(runner, OrtRunner) or runner.intra_op_threads == 1:  # one thread: no workers
        return
    config = runner.session_config
    if config.get("session.force_spinning_stop") == "1" or config.get("session.intra_op.allow_spinning") == "0":
        return
    logger.warning(
        "%s: its ONNX Runtime workers keep spinning after each run and will slow the other runners' "
        "windows — build it with session_config=INTERLEAVED_ORT_CONFIG",
        runner.name,
    )


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
    max_windows: int = 1,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[BenchResult]:
    """Benchmark a model on ONNX Runtime (CPU) at each batch size, on generated inputs.

    One window per batch size by default (``duration`` 2 s when neither it nor ``iterations`` is
    given); ``max_windows`` >= 3 repeats windows until stable. For thread and caller sweeps,
    pipelines and recommendations use :func:`modelport.bench.sweep.run_sweep`.
    """
    from modelport.bench.sweep import SweepSpec, run_sweep

    if iterations is None and duration is None:
        duration = 2.0
    settings = BenchSettings(
        warmup=warmup, iterations=iterations, duration=duration, tolerance=tolerance, max_windows=max_windows
    )
    spec = SweepSpec(batches=tuple(batches), intra_op_threads=(threads,))
    return run_sweep(model, spec, settings, plan=plan, name=name).results
