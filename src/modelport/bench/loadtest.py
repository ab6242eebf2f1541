"""perf_analyzer-grade load testing of any KServe v2 server: :func:`loadtest`.

perf_analyzer cannot be installed from the package registry, yet anyone who serves a model over
KServe v2 (``modelport serve``, Triton, KServe, ...) needs its numbers: throughput and latency
percentiles at each load level, where the time went on the client, and the server's own
breakdown. This module measures them over HTTP (binary tensors or JSON) and gRPC with the cheap
clients of :mod:`modelport.bench.loadclient`.

How a level is measured
    *Closed loop* (``concurrency``): N callers, each on its own connection, send a request, wait
    for its answer and send the next. *Open loop* (``rates``): requests leave on a fixed schedule,
    one every 1/rate seconds, whatever the answers; at most ``max_outstanding`` may be in flight,
    past that the level stops with a warning that the server cannot keep up. Open-loop latency
    counts from the *scheduled* send time, so a server that falls behind shows its queueing
    instead of hiding it (no coordinated omission).

    A level runs measurement windows of ``window_s`` until the throughputs of the last three agree
    within ``stability`` (a fraction of their mean), or ``max_windows`` have run (then
    ``stable=False`` and a warning). Its figures come from its last three windows (all, if fewer):
    latencies of the successful requests that completed in them, errors by kind, and the deltas
    of the server's statistics counters (Triton's ``/v2/models/{m}/stats`` or gRPC
    ``ModelStatistics``) read at their edges.

Bounds
    ``max_requests`` and ``max_seconds`` bound the whole run (levels left over are reported as not
    measured). Before measuring, the model's metadata is read (input names, datatypes, shapes) and
    one probe request is sent and checked, so a wrong model name, input shape or protocol fails at
    once with the server's own message. Only the URL given is contacted.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from modelport.bench.loadclient import PROTOCOLS, Connection, Exchange, LoadtestError, Transport, make_transport
from modelport.errors import ConfigError, ModelportError
from modelport.report.svg import bar_chart_svg, line_chart_svg
from modelport.serve.protocol import numpy_dtype_of, object_array

__all__ = [
    "PROTOCOLS",
    "CheckHook",
    "LevelResult",
    "LoadtestError",
    "LoadtestResult",
    "ServerBreakdown",
    "loadtest",
    "loadtest_async",
    "parse_concurrency_range",
    "parse_rates",
    "parse_shapes",
]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]
#: ``check(inputs, outputs)`` raises (any exception) when a sampled response is wrong.
CheckHook = Callable[[Mapping[str, np.ndarray[Any, Any]], Mapping[str, np.ndarray[Any, Any]]], None]
Mode = Literal["concurrency", "rate"]

#: Different random requests prepared (and cycled through) per run.
RANDOM_VARIANTS: Final = 4
#: Range [low, high) of random integer inputs: small, so that index-like inputs stay valid.
INT_RANGE: Final = (0, 16)
#: The number of consecutive windows that must agree.
STABLE_WINDOWS: Final = 3
#: Most levels a range may expand to.
MAX_LEVELS: Final = 1000


def _now() -> float:
    return time.perf_counter()


# -------------------------------------------------------------------------------------------------
# option parsing


def _range_parts(text: str, flag: str, form: str) -> tuple[str, str, str]:
    parts = text.strip().split(":")
    if len(parts) > 3 or not all(p.strip() for p in parts):
        raise ConfigError(f"{flag} {text!r} is not of the form {form}")
    if len(parts) == 1:
        return parts[0], parts[0], "1"
    return parts[0], parts[1], parts[2] if len(parts) == 3 else "1"


def _expand(start: float, end: float, step: str, flag: str, text: str) -> list[float]:
    """start, start+step (or start*factor for ``xN``), ... up to end inclusive."""
    multiply = step.strip().lower().startswith("x")
    try:
        amount = float(step.strip()[1:] if multiply else step)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} has step {step!r}: give a number, or xN to multiply") from None
    if (multiply and amount <= 1) or amount <= 0:
        raise ConfigError(f"{flag} {text!r} has step {step!r}, which never gets to the end — use a step > 0 or x>1")
    values, value = [], start
    while value <= end * (1 + 1e-9):
        values.append(value)
        if len(values) > MAX_LEVELS:
            raise ConfigError(f"{flag} {text!r} expands to more than {MAX_LEVELS} levels — use a larger step")
        value = value * amount if multiply else value + amount
    return values


def parse_concurrency_range(text: str) -> list[int]:
    """``"1:16:x2"`` -> [1, 2, 4, 8, 16]; ``"1:8:2"`` -> [1, 3, 5, 7]; ``"4"`` -> [4]; ``"1:4"`` -> [1, 2, 3, 4]."""
    flag, form = "--concurrency-range", "START[:END[:STEP]] with STEP a number or xFACTOR, e.g. 1:16:x2"
    start, end, step = _range_parts(text, flag, form)
    try:
        low, high = int(start), int(end)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: START and END must be whole numbers of clients ({form})") from None
    if low < 1 or high < low:
        raise ConfigError(f"{flag} {text!r}: need 1 <= START <= END, got {low} and {high}")
    values = _expand(low, high, step, flag, text)
    if any(v != int(v) for v in values):
        raise ConfigError(f"{flag} {text!r}: the step must give whole numbers of clients")
    return sorted({int(v) for v in values})


def parse_rates(text: str) -> list[float]:
    """Open-loop request rates (requests/s): ``"50,100,200"`` or a range ``"50:200:x2"`` / ``"50:200:50"``."""
    flag, form = "--request-rate", "RATE,RATE,... or START:END[:STEP] (STEP a number or xFACTOR)"
    if "," in text or ":" not in text:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise ConfigError(f"{flag} {text!r} must be numbers of requests/s: {form}") from None
    else:
        start, end, step = _range_parts(text, flag, form)
        try:
            low, high = float(start), float(end)
        except ValueError:
            raise ConfigError(f"{flag} {text!r}: START and END must be numbers of requests/s ({form})") from None
        if high < low:
            raise ConfigError(f"{flag} {text!r}: END {high:g} is below START {low:g}")
        values = _expand(low, high, step, flag, text)
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ConfigError(f"{flag} {text!r}: every rate must be a positive number of requests/s")
    return values


def parse_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``["x=1,3,224,224", "mask=1,128"]`` -> ``{"x": (1, 3, 224, 224), "mask": (1, 128)}``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d < 1 for d in shape):
            raise ConfigError(f"--shape {item!r} is not of the form NAME=D0,D1,... with sizes >= 1, e.g. x=1,3,224,224")
        if name in shapes:
            raise ConfigError(f"--shape gives input {name!r} twice — give each input's shape once")
        shapes[name] = shape
    return shapes


# -------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class ServerBreakdown:
    """Per request, averaged over the measured windows, from the deltas of Triton-style statistics."""

    requests: int
    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float
    batch_sizes: dict[int, int]  # executed batch size -> executions during the windows

    @classmethod
    def between(cls, before: Mapping[str, Any], after: Mapping[str, Any]) -> ServerBreakdown:
        """The breakdown of what happened between two statistics documents (``{"model_stats": [...]}``).

        Entries of several versions are summed. Counters that went down (the model was reloaded)
        raise :class:`LoadtestError`.
        """
        first, last = _Counters.of(before), _Counters.of(after)
        delta = {
            name: (last.durations[name][0] - c, last.durations[name][1] - ns)
            for name, (c, ns) in first.durations.items()
        }
        batches = {size: count - first.batches.get(size, 0) for size, count in last.batches.items()}
        if any(c < 0 or ns < 0 for c, ns in delta.values()) or any(v < 0 for v in batches.values()):
            raise LoadtestError(
                "the server's statistics counters went down between two readings — the model was reloaded or the "
                "server restarted during the measurement; run the load test again"
            )

        def mean_us(name: str) -> float:
            count, ns = delta[name]
            return ns / count / 1e3 if count else 0.0

        return cls(
            requests=delta["success"][0],
            queue_us=mean_us("queue"),
            compute_input_us=mean_us("compute_input"),
            compute_infer_us=mean_us("compute_infer"),
            compute_output_us=mean_us("compute_output"),
            batch_sizes={size: count for size, count in sorted(batches.items()) if count},
        )


@dataclass
class _Counters:
    durations: dict[str, tuple[int, int]]  # name -> (count, ns), summed over versions
    batches: dict[int, int]  # batch size -> executions

    _NAMES = ("success", "queue", "compute_input", "compute_infer", "compute_output")

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> _Counters:
        durations = dict.fromkeys(cls._NAMES, (0, 0))
        batches: dict[int, int] = {}
        try:
            for entry in document["model_stats"]:
                stats = entry.get("inference_stats", {})
                for name in cls._NAMES:
                    count, ns = durations[name]
                    value = stats.get(name, {})
                    durations[name] = (count + int(value.get("count", 0)), ns + int(value.get("ns", 0)))
                for stat in entry.get("batch_stats", []):
                    size = int(stat["batch_size"])
                    batches[size] = batches.get(size, 0) + int(stat.get("compute_infer", {}).get("count", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LoadtestError(
                f"the server's statistics are not in Triton's format ({type(e).__name__}: {e}) — expected "
                '{"model_stats": [{"inference_stats": {...}, "batch_stats": [...]}]}'
            ) from e
        return cls(durations, batches)


@dataclass
class LevelResult:
    """One load level: ``value`` clients (closed loop) or requests/s offered (open loop)."""

    mode: Mode
    value: float
    throughput: float  # successful inferences/s (requests/s x batch)
    requests: int  # successful requests in the measured windows
    errors: dict[str, int]  # "429", "504", "UNAVAILABLE", "timeout", "connection", "check" ... -> count
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    send_ms: float  # client time to send the request (mean)
    wait_ms: float  # from request sent to first response byte (mean)
    receive_ms: float  # first byte to full response (mean)
    server: ServerBreakdown | None  # None when the server has no statistics endpoint
    stable: bool  # three consecutive windows agreed within `stability`
    windows: list[float]  # throughput of each window measured
    sent: int = 0  # requests sent during the level (all windows)
    seconds: float = 0.0  # length of the measured windows
    overloaded: bool = False  # open loop: max_outstanding requests were in flight when the next was due

    @property
    def label(self) -> str:
        if self.mode == "rate":
            return f"{self.value:g} req/s"
        return f"{self.value:g} client{'s' if self.value != 1 else ''}"

    def to_dict(self) -> dict[str, Any]:
        return {key: _json_safe(value) for key, value in asdict(self).items()}


@dataclass
class LoadtestResult:
    """Every level of one load test, with exports (JSON, CSV, HTML)."""

    url: str
    model: str
    version: str | None
    protocol: str
    batch: int
    levels: list[LevelResult]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {key: _json_safe(value) for key, value in asdict(self).items()}

    def to_csv(self) -> str:
        """One row per level, in perf_analyzer's columns (times in microseconds)."""
        return _to_csv(self)

    def to_html(self) -> str:
        """A self-contained page: the table, latency-vs-throughput and per-level plots (inline SVG)."""
        return _to_html(self)


def _json_safe(value: Any) -> Any:
    """NaN (a level without a successful request has no latency) as ``None``, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# -------------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class _InputSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: variable


def _input_specs(metadata: Mapping[str, Any]) -> list[_InputSpec]:
    try:
        specs = [
            _InputSpec(str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t["shape"]))
            for t in metadata["inputs"]
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise LoadtestError(
            f"the model metadata has no usable 'inputs' ({type(e).__name__}: {e}) — expected "
            '[{"name": ..., "datatype": ..., "shape": [...]}, ...] as KServe v2 servers send'
        ) from e
    if not specs:
        raise LoadtestError("the model metadata lists no inputs — there is nothing to send")
    for spec in specs:
        numpy_dtype_of(spec.datatype)  # ProtocolError for a datatype KServe v2 does not have
    return specs


def _resolve_shapes(
    specs: Sequence[_InputSpec], batch: int, shapes: Mapping[str, Sequence[int]]
) -> dict[str, tuple[int, ...]]:
    """The concrete shape of every input: the batch axis gets ``batch``, other variable axes come from ``shapes``."""
    unknown = sorted(set(shapes) - {s.name for s in specs})
    if unknown:
        raise ConfigError(
            f"--shape names {', '.join(repr(n) for n in unknown)}, which the model does not have; "
            f"its inputs are {', '.join(repr(s.name) for s in specs)}"
        )
    resolved: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        given = shapes.get(spec.name)
        if given is not None:
            resolved[spec.name] = _given_shape(spec, tuple(given), batch)
            continue
        dims = list(spec.shape)
        if dims and dims[0] == -1:
            dims[0] = batch
        elif batch != 1:
            raise ConfigError(
                f"input '{spec.name}' has a fixed first dimension (shape {list(spec.shape)}), so the model takes no "
                f"batch axis and requests cannot carry batch {batch} — use batch 1"
            )
        dynamic = [axis for axis, d in enumerate(dims) if d < 0]
        if dynamic:
            example = ",".join(str(d if d >= 0 else 16) for d in dims)
            raise ConfigError(
                f"input '{spec.name}' has variable dimension(s) at axes {dynamic} (shape {list(spec.shape)}) that only "
                f"the batch size cannot fill — give its shape with --shape {spec.name}=D0,D1,... "
                f"(shapes={{'{spec.name}': [...]}}), e.g. --shape {spec.name}={example}"
            )
        resolved[spec.name] = tuple(dims)
    return resolved


def _given_shape(spec: _InputSpec, given: tuple[int, ...], batch: int) -> tuple[int, ...]:
    dims = spec.shape
    batched = bool(dims) and dims[0] == -1
    if batched and len(given) == len(dims) - 1:
        given = (batch, *given)  # the shape without the batch axis, as perf_analyzer takes it
    if len(given) != len(dims):
        raise ConfigError(
            f"--shape {spec.name}={','.join(map(str, given))} has {len(given)} dimensions, but input '{spec.name}' "
            f"has shape {list(dims)} (rank {len(dims)})"
        )
    fixed = [f"axis {a} is {d}" for a, (g, d) in enumerate(zip(given, dims, strict=True)) if d >= 0 and g != d]
    if fixed:
        raise ConfigError(
            f"--shape {spec.name}={','.join(map(str, given))} does not fit input '{spec.name}' of shape {list(dims)}: "
            f"{'; '.join(fixed)} — only the -1 dimensions can be chosen"
        )
    if any(g < 1 for g in given):
        raise ConfigError(f"--shape {spec.name}={','.join(map(str, given))}: every size must be >= 1")
    if batched and given[0] != batch:
        raise ConfigError(
            f"--shape {spec.name}={','.join(map(str, given))} gives {given[0]} rows on the batch axis, but the "
            f"batch is {batch} — make them agree, or leave the batch axis out of --shape"
        )
    return given


def _fill(spec: _InputSpec, shape: tuple[int, ...], kind: str, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    dtype = numpy_dtype_of(spec.datatype)
    if spec.datatype == "BYTES":
        count = math.prod(shape)
        values = [b"" if kind == "zeros" else str(v).encode() for v in rng.integers(*INT_RANGE, size=count)]
        return object_array(values).reshape(shape)
    if kind == "zeros":
        return np.zeros(shape, dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(*INT_RANGE, size=shape).astype(dtype)
    return rng.random(shape, dtype=np.float32).astype(dtype)  # floats in [0, 1)


def _generated(
    specs: Sequence[_InputSpec], kind: str, batch: int, shapes: Mapping[str, Sequence[int]], seed: int
) -> list[Arrays]:
    resolved = _resolve_shapes(specs, batch, shapes)
    rng = np.random.default_rng(seed)
    count = RANDOM_VARIANTS if kind == "random" else 1
    return [{s.name: _fill(s, resolved[s.name], kind, rng) for s in specs} for _ in range(count)]


def _load_file(path: Path, specs: Sequence[_InputSpec]) -> Arrays:
    if not path.is_file():
        raise ConfigError(f"input file '{path}' does not exist — give an .npz (one array per input) or an .npy file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read inputs from '{path}': {e} — save them with np.savez or np.save") from e
    if isinstance(loaded, np.ndarray):
        if len(specs) != 1:
            raise ConfigError(
                f"'{path}' holds one array, but the model has {len(specs)} inputs — save them together with "
                f"np.savez(path, {'=..., '.join(s.name for s in specs)}=...)"
            )
        return {specs[0].name: loaded}
    with loaded:
        return {name: loaded[name] for name in loaded.files}


def _from_file(path: Path, specs: Sequence[_InputSpec], batch: int) -> tuple[list[Arrays], int]:
    """The inputs saved in ``path`` (checked against the metadata) and the batch they carry."""
    arrays = _load_file(path, specs)
    names = [s.name for s in specs]
    missing, extra = [n for n in names if n not in arrays], sorted(set(arrays) - set(names))
    if missing or extra:
        raise ConfigError(
            f"'{path}' holds arrays {sorted(arrays)}, but the model's inputs are {names}"
            + (f"; missing {missing}" if missing else "")
            + (f"; not inputs {extra}" if extra else "")
            + " — name each array after its input"
        )
    feeds: Arrays = {}
    for spec in specs:
        feeds[spec.name] = _file_array(path, spec, arrays[spec.name])
    rows = {feeds[s.name].shape[0] for s in specs if s.shape and s.shape[0] == -1}
    if len(rows) > 1:
        raise ConfigError(f"the inputs in '{path}' disagree on the batch size (first dimensions {sorted(rows)})")
    carried = rows.pop() if rows else 1
    if batch not in (1, carried):
        raise ConfigError(
            f"the inputs in '{path}' carry a batch of {carried}, but batch {batch} was asked for — leave the batch "
            f"at 1 (the file decides) or save {batch} rows"
        )
    return [feeds], carried


def _file_array(path: Path, spec: _InputSpec, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    where = f"input '{spec.name}' in '{path}'"
    if spec.datatype == "BYTES":
        if array.dtype.kind not in "SU":
            raise ConfigError(f"{where} has dtype {array.dtype}, but the model expects BYTES — save strings")
        array = object_array(
            [v.encode() if isinstance(v, str) else bytes(v) for v in array.reshape(-1).tolist()]
        ).reshape(array.shape)
    elif array.dtype != numpy_dtype_of(spec.datatype):
        wanted = numpy_dtype_of(spec.datatype)
        raise ConfigError(
            f"{where} has dtype {array.dtype}, but the model expects {spec.datatype} — save it with "
            f"arr.astype(np.{wanted.name})"
        )
    if array.ndim != len(spec.shape) or any(d >= 0 and d != a for a, d in zip(array.shape, spec.shape, strict=False)):
        raise ConfigError(f"{where} has shape {list(array.shape)}, but the model expects {list(spec.shape)} (-1: any)")
    return array


def _requests(
    metadata: Mapping[str, Any],
    inputs: str | Path,
    batch: int,
    shapes: Mapping[str, Sequence[int]],
    seed: int,
) -> tuple[list[Arrays], int]:
    """The request inputs to cycle through, and the batch each carries."""
    specs = _input_specs(metadata)
    if isinstance(inputs, Path):
        if shapes:
            raise ConfigError("--shape applies to generated inputs; inputs from a file keep the file's shapes")
        return _from_file(inputs, specs, batch)
    if inputs not in ("random", "zeros"):
        raise ConfigError(f"inputs {inputs!r} must be 'random', 'zeros' or the Path of an .npz/.npy file")
    return _generated(specs, inputs, batch, shapes, seed), batch


# -------------------------------------------------------------------------------------------------
# measuring


def _stable(windows: Sequence[float], stability: float) -> bool:
    """Whether the last three window throughputs are each within ``stability`` x their mean of it."""
    if len(windows) < STABLE_WINDOWS:
        return False
    last = windows[-STABLE_WINDOWS:]
    mean = sum(last) / STABLE_WINDOWS
    return all(abs(w - mean) <= stability * mean for w in last)


@dataclass
class _Tally:
    """What the callers of one level saw, in order of completion."""

    ok: list[tuple[float, float, float, float, float]] = field(default_factory=list)  # done, latency, send, wait, recv
    errors: list[tuple[float, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Mark:
    """The edge of a window: when, how much had completed, and the server's counters then."""

    time: float
    ok: int
    errors: int
    stats: Mapping[str, Any] | None


class _Budget:
    """The run's bounds: requests that may still be sent, and the deadline."""

    def __init__(self, max_requests: int | None, deadline: float) -> None:
        self.max_requests = max_requests
        self.deadline = deadline
        self.sent = 0

    @property
    def exhausted(self) -> bool:
        return self.max_requests is not None and self.sent >= self.max_requests

    def out_of_time(self) -> bool:
        return _now() >= self.deadline

    def take(self) -> bool:
        """Count one request to send; ``False`` once ``max_requests`` have been sent."""
        if self.exhausted:
            return False
        self.sent += 1
        return True


class _Checker:
    """Decodes a sample of responses (the first of each level, then every ``every``-th) and checks them."""

    def __init__(self, transport: Transport, outputs: Sequence[str], check: CheckHook | None, every: int) -> None:
        self.transport = transport
        self.outputs = list(outputs)
        self.check = check
        self.every = every
        self.count = 0
        self.first_failure: dict[str, str] = {}

    def reset(self) -> None:
        """A new level: its first response is checked."""
        self.count = 0

    def want(self) -> bool:
        self.count += 1
        return (self.count - 1) % self.every == 0

    def verify(self, index: int, payload: Any) -> str | None:
        """``None`` when the response is right, else the error kind (``"decode"`` or ``"check"``)."""
        try:
            outputs = self.transport.decode(payload)
        except (ModelportError, ValueError) as e:
            return self._failed("decode", f"{type(e).__name__}: {e}")
        missing = [name for name in self.outputs if name not in outputs]
        if missing:
            return self._failed("check", f"outputs {missing} are missing from the response (it has {sorted(outputs)})")
        if self.check is not None:
            try:
                self.check(self.transport.requests[index], outputs)
            except Exception as e:
                return self._failed("check", f"{type(e).__name__}: {e}")
        return None

    def _failed(self, kind: str, message: str) -> str:
        if kind not in self.first_failure:
            self.first_failure[kind] = message
            logger.info("a response failed its %s: %s", kind, message)
        return kind


@dataclass
class _Context:
    """Everything a level needs."""

    transport: Transport
    checker: _Checker
    budget: _Budget
    batch: int
    window_s: float
    stability: float
    max_windows: int
    timeout_s: float
    max_outstanding: int
    has_stats: bool
    warnings: list[str]
    progress: Callable[[str], None] | None

    async def stats(self) -> Mapping[str, Any] | None:
        if not self.has_stats:
            return None
        try:
            return await self.transport.statistics()
        except LoadtestError as e:
            self.warn(f"reading the server's statistics failed, so a level has no server breakdown: {e}")
            return None

    def warn(self, message: str) -> None:
        logger.info("warning: %s", message)  # returned in LoadtestResult.warnings, not printed twice
        self.warnings.append(message)

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)


class _Driver:
    """Sends the requests of one level; ``finished`` is set when it stops by itself and has drained."""

    def __init__(self, ctx: _Context, tally: _Tally) -> None:
        self.ctx = ctx
        self.tally = tally
        self.finished = asyncio.Event()
        self.stopping = False
        self.sent = 0
        self.overloaded_after: float | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        raise NotImplementedError

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _one(self, connection: Connection, index: int, scheduled: float | None) -> None:
        """One request; its latency counts from ``scheduled`` (open loop) or from now."""
        keep = self.ctx.checker.want()
        start = _now() if scheduled is None else scheduled
        exchange: Exchange = await connection.infer(index, keep=keep)
        done = _now()
        error = exchange.error
        if error is None and keep:
            error = self.ctx.checker.verify(index, exchange.payload)
        if error is None:
            self.tally.ok.append((done, done - start, exchange.send, exchange.wait, exchange.receive))
        else:
            self.tally.errors.append((done, error))

    async def wait(self, seconds: float) -> bool:
        """Wait ``seconds`` or until the driver finished by itself (then ``True``)."""
        try:
            await asyncio.wait_for(self.finished.wait(), max(seconds, 0.0))
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self, grace: float) -> None:
        """Stop sending; give requests in flight ``grace`` seconds, then cancel them."""
        self.stopping = True
        tasks = list(self.tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if task.cancelled():
                continue
            error = task.exception()
            if error is not None:
                raise error  # a bug in a caller, not an error of the server: surface it


class _ClosedLoop(_Driver):
    def __init__(self, ctx: _Context, tally: _Tally, concurrency: int) -> None:
        super().__init__(ctx, tally)
        self.concurrency = concurrency
        self.running = 0

    def start(self) -> None:
        self.running = self.concurrency
        for number in range(self.concurrency):
            self._spawn(self._caller(number))

    async def _caller(self, number: int) -> None:
        variants = len(self.ctx.transport.requests)
        connection = await self.ctx.transport.connect()
        index = number
        try:
            while not self.stopping and self.ctx.budget.take():
                self.sent += 1
                await self._one(connection, index % variants, None)
                index += 1
        finally:
            await connection.close()
            self.running -= 1
            if self.running == 0:
                self.finished.set()


class _OpenLoop(_Driver):
    def __init__(self, ctx: _Context, tally: _Tally, rate: float) -> None:
        super().__init__(ctx, tally)
        self.rate = rate
        self.idle: list[Connection] = []
        self.in_flight = 0
        self.scheduler: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self) -> None:
        self.scheduler = asyncio.ensure_future(self._schedule())

    async def _schedule(self) -> None:
        variants = len(self.ctx.transport.requests)
        start = _now()
        while not self.stopping:
            due = start + self.sent / self.rate
            delay = due - _now()
            if delay > 0:
                await asyncio.sleep(delay)
                if self.stopping:
                    break
            if self.in_flight >= self.ctx.max_outstanding:
                self.overloaded_after = due - start
                break
            if not self.ctx.budget.take():
                break
            self.in_flight += 1
            self._spawn(self._send(due, self.sent % variants))
            self.sent += 1
        if self.tasks:  # stopped by itself (budget, overload): let what is in flight finish, then say so
            await asyncio.wait(list(self.tasks), timeout=self.ctx.timeout_s)
        self.finished.set()

    async def _send(self, due: float, index: int) -> None:
        connection = self.idle.pop() if self.idle else await self.ctx.transport.connect()
        try:
            await self._one(connection, index, due)
        except BaseException:
            await connection.close()  # cancelled mid-request: the connection is in an unknown state
            raise
        finally:
            self.in_flight -= 1
        self.idle.append(connection)

    async def stop(self, grace: float) -> None:
        self.scheduler.cancel()  # it may be asleep until the next send is due
        [outcome] = await asyncio.gather(self.scheduler, return_exceptions=True)
        if isinstance(outcome, Exception):
            raise outcome  # a bug in the scheduler: surface it
        try:
            await super().stop(grace)
        finally:
            idle, self.idle = self.idle, []
            for connection in idle:
                await connection.close()


async def _measure_level(ctx: _Context, mode: Mode, value: float) -> LevelResult:
    tally = _Tally()
    ctx.checker.reset()
    driver: _Driver = _ClosedLoop(ctx, tally, int(value)) if mode == "concurrency" else _OpenLoop(ctx, tally, value)
    label = f"concurrency {value:g}" if mode == "concurrency" else f"rate {value:g}/s"
    marks = [_Mark(_now(), 0, 0, await ctx.stats())]
    windows: list[float] = []
    stable = False
    cut_by: str | None = None  # the bound that ended the level before it stabilised
    driver.start()
    try:
        while len(windows) < ctx.max_windows:
            end = min(marks[-1].time + ctx.window_s, ctx.budget.deadline)
            finished = await driver.wait(end - _now())
            mark = _Mark(_now(), len(tally.ok), len(tally.errors), await ctx.stats())
            windows.append(_window_throughput(marks[-1], mark, ctx.batch))
            marks.append(mark)
            ctx.say(f"{label}: window {len(windows)}, {windows[-1]:.1f} infer/s")
            if finished or ctx.budget.out_of_time():
                cut_by = "max_requests" if ctx.budget.exhausted else "max_seconds" if ctx.budget.out_of_time() else None
                break
            if _stable(windows, ctx.stability):
                stable = True
                break
    finally:
        await driver.stop(ctx.timeout_s)
    result = _level_result(ctx, mode, value, tally, marks, windows, stable=stable)
    result.sent = driver.sent
    _level_warnings(ctx, result, label, driver, cut_by)
    return result


def _window_throughput(first: _Mark, last: _Mark, batch: int) -> float:
    seconds = last.time - first.time
    return (last.ok - first.ok) * batch / seconds if seconds > 0 else 0.0


def _level_result(
    ctx: _Context, mode: Mode, value: float, tally: _Tally, marks: list[_Mark], windows: list[float], *, stable: bool
) -> LevelResult:
    """The figures of the last three windows (or all, if fewer)."""
    first, last = marks[-min(STABLE_WINDOWS, len(windows)) - 1], marks[-1]
    ok = np.array(tally.ok[first.ok : last.ok], dtype=np.float64).reshape(-1, 5) * 1e3
    errors = Counter(kind for _, kind in tally.errors[first.errors : last.errors])
    seconds = last.time - first.time
    latency = ok[:, 1]
    p50, p90, p95, p99 = np.percentile(latency, [50, 90, 95, 99]) if len(latency) else [math.nan] * 4
    server = None
    if first.stats is not None and last.stats is not None:
        try:
            server = ServerBreakdown.between(first.stats, last.stats)
        except LoadtestError as e:
            ctx.warn(f"{mode} {value:g}: no server breakdown: {e}")

    def mean(column: int) -> float:
        return float(ok[:, column].mean()) if len(ok) else math.nan

    return LevelResult(
        mode=mode,
        value=value,
        throughput=len(ok) * ctx.batch / seconds if seconds > 0 else 0.0,
        requests=len(ok),
        errors=dict(sorted(errors.items())),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=mean(1),
        send_ms=mean(2),
        wait_ms=mean(3),
        receive_ms=mean(4),
        server=server,
        stable=stable,
        windows=windows,
        seconds=seconds,
    )


def _level_warnings(ctx: _Context, result: LevelResult, label: str, driver: _Driver, cut_by: str | None) -> None:
    windows = f"{', '.join(f'{w:.1f}' for w in result.windows)} infer/s"
    if driver.overloaded_after is not None:
        result.overloaded = True
        ctx.warn(
            f"{label}: the server cannot keep up — {ctx.max_outstanding} requests were still outstanding when the "
            f"next was due, {driver.overloaded_after:.2f} s into the level, so it stopped; lower the rate "
            "(or raise max_outstanding)"
        )
    elif cut_by is not None:
        ctx.warn(
            f"{label}: {cut_by} ended the level after {len(result.windows)} window(s) ({windows}), before three "
            "windows could agree — its figures are from what was measured"
        )
    elif not result.stable:
        ctx.warn(
            f"{label}: throughput did not stabilise within {len(result.windows)} window(s) ({windows}; need 3 within "
            f"{ctx.stability:.0%}) — use longer windows or more of them"
        )
    for kind, message in ctx.checker.first_failure.items():
        if result.errors.get(kind):
            ctx.warn(f"{label}: {result.errors[kind]} response(s) failed the {kind}; first: {message}")
    if not result.requests:
        ctx.warn(f"{label}: no request succeeded in the measured windows (errors: {result.errors or 'none'})")


async def _probe(transport: Transport, checker: _Checker) -> None:
    """Send one request before measuring: a wrong input or model fails here with the server's words."""
    connection = await transport.connect()
    try:
        exchange = await connection.infer(0, keep=True)
    finally:
        await connection.close()
    if exchange.error is not None:
        raise LoadtestError(
            f"the first inference request to model {transport.label} failed with {exchange.error}"
            f"{_server_words(exchange.payload)} — fix the inputs (shape, batch, input file) or the server first"
        )
    kind = checker.verify(0, exchange.payload)
    if kind is not None:
        raise LoadtestError(
            f"the first response of model {transport.label} failed its {kind}: {checker.first_failure[kind]}"
        )
    checker.first_failure.clear()


async def _statistics_missing(transport: Transport, url: str) -> str | None:
    """Why levels will have no server breakdown (no or unusable statistics endpoint), or ``None``."""
    try:
        document = await transport.statistics()
        if document is None:
            return f"the server at {url} has no statistics endpoint, so levels have no server breakdown"
        _Counters.of(document)
    except LoadtestError as e:
        return f"the statistics of the server at {url} are unusable, so levels have no server breakdown: {e}"
    return None


def _server_words(payload: Any) -> str:
    body = getattr(payload, "body", payload)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return f" ({str(body)[:300]})" if body else ""


# -------------------------------------------------------------------------------------------------
# the entry points


def _levels(concurrency: Sequence[int] | None, rates: Sequence[float] | None) -> tuple[Mode, list[float]]:
    if concurrency is not None and rates is not None:
        raise ConfigError("give a concurrency range or request rates, not both (closed loop or open loop)")
    if rates is not None:
        values = [float(r) for r in rates]
        if not values or any(not math.isfinite(r) or r <= 0 for r in values):
            raise ConfigError(f"request rates {list(rates)} must be positive numbers of requests/s")
        return "rate", values
    levels = list(concurrency) if concurrency is not None else [1]
    if not levels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in levels):
        raise ConfigError(f"concurrency levels {levels} must be whole numbers >= 1")
    return "concurrency", [float(c) for c in levels]


def _check_settings(values: Mapping[str, float | int | None]) -> None:
    """Every numeric option positive (``max_windows``, ``max_requests``, ``batch`` at least 1)."""
    for name, value in values.items():
        if value is None:
            continue
        if name in ("batch", "max_windows", "max_requests", "check_every", "max_outstanding"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        elif not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{name} must be a positive number, got {value!r}")


async def loadtest_async(
    url: str,
    model: str,
    *,
    version: str | None = None,
    protocol: Literal["http", "http-json", "grpc"] = "http",
    concurrency: Sequence[int] | None = None,
    rates: Sequence[float] | None = None,
    inputs: Literal["random", "zeros"] | Path = "random",
    batch: int = 1,
    window_s: float = 2.0,
    stability: float = 0.10,
    max_windows: int = 10,
    max_requests: int | None = None,
    max_seconds: float | None = None,
    timeout_s: float = 30.0,
    shapes: Mapping[str, Sequence[int]] | None = None,
    check: CheckHook | None = None,
    check_every: int = 100,
    max_outstanding: int = 256,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> LoadtestResult:
    """:func:`loadtest` inside a running event loop."""
    mode, values = _levels(concurrency, rates)
    _check_settings(
        {
            "batch": batch,
            "window_s": window_s,
            "stability": stability,
            "max_windows": max_windows,
            "max_requests": max_requests,
            "max_seconds": max_seconds,
            "timeout_s": timeout_s,
            "check_every": check_every,
            "max_outstanding": max_outstanding,
        }
    )
    deadline = _now() + max_seconds if max_seconds is not None else math.inf
    warnings: list[str] = []
    async with make_transport(protocol, url, model, version, timeout_s) as transport:
        metadata = await transport.metadata()
        requests, carried = _requests(metadata, inputs, batch, shapes or {}, seed)
        transport.prepare(requests)
        outputs = [str(t.get("name")) for t in metadata.get("outputs", []) if isinstance(t, dict)]
        checker = _Checker(transport, outputs, check, check_every)
        await _probe(transport, checker)
        missing = await _statistics_missing(transport, url)
        if missing is not None:
            logger.info("warning: %s", missing)
            warnings.append(missing)
        ctx = _Context(
            transport=transport,
            checker=checker,
            budget=_Budget(max_requests, deadline),
            batch=carried,
            window_s=window_s,
            stability=stability,
            max_windows=max_windows,
            timeout_s=timeout_s,
            max_outstanding=max_outstanding,
            has_stats=missing is None,
            warnings=warnings,
            progress=progress,
        )
        levels = await _run_levels(ctx, mode, values)
    return LoadtestResult(url, model, version, transport.protocol, carried, levels, warnings)


async def _run_levels(ctx: _Context, mode: Mode, values: list[float]) -> list[LevelResult]:
    levels: list[LevelResult] = []
    for position, value in enumerate(values):
        left = ", ".join(f"{v:g}" for v in values[position:])
        if ctx.budget.exhausted or ctx.budget.out_of_time():
            bound = "max_requests" if ctx.budget.exhausted else "max_seconds"
            ctx.warn(f"{bound} reached: {mode} level(s) {left} not measured")
            break
        level = await _measure_level(ctx, mode, value)
        levels.append(level)
        if level.overloaded and position + 1 < len(values):
            ctx.warn(f"higher {mode} level(s) {', '.join(f'{v:g}' for v in values[position + 1 :])} not measured")
            break
    return levels


def loadtest(
    url: str,
    model: str,
    *,
    version: str | None = None,
    protocol: Literal["http", "http-json", "grpc"] = "http",
    concurrency: Sequence[int] | None = None,
    rates: Sequence[float] | None = None,
    inputs: Literal["random", "zeros"] | Path = "random",
    batch: int = 1,
    window_s: float = 2.0,
    stability: float = 0.10,
    max_windows: int = 10,
    max_requests: int | None = None,
    max_seconds: float | None = None,
    timeout_s: float = 30.0,
    shapes: Mapping[str, Sequence[int]] | None = None,
    check: CheckHook | None = None,
    check_every: int = 100,
    max_outstanding: int = 256,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> LoadtestResult:
    """Load-test model ``model`` on the KServe v2 server at ``url``; see the module docstring.

    ``concurrency`` (closed loop, default ``[1]``) or ``rates`` (open loop, requests/s) give the
    levels. ``inputs`` are generated (``"random"``: integers in [0, 16), floats in [0, 1);
    ``"zeros"``) with the batch axis set to ``batch`` and other variable dimensions from
    ``shapes``, or read from an .npz/.npy file (then the file sets the batch). ``check(inputs,
    outputs)`` runs on the first response of each level and every ``check_every``-th; a failure
    counts as an error of kind ``"check"``. ``max_outstanding`` bounds open-loop requests in
    flight. ``progress`` receives a line per measured window. Runs its own event loop (uvloop when
    installed, for HTTP); from async code call :func:`loadtest_async`.
    """
    work = loadtest_async(
        url, model, version=version, protocol=protocol, concurrency=concurrency, rates=rates, inputs=inputs,
        batch=batch, window_s=window_s, stability=stability, max_windows=max_windows, max_requests=max_requests,
        max_seconds=max_seconds, timeout_s=timeout_s, shapes=shapes, check=check, check_every=check_every,
        max_outstanding=max_outstanding, seed=seed, progress=progress,
    )  # fmt: skip
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        work.close()
        raise ConfigError("loadtest() was called inside a running event loop — await loadtest_async(...) instead")
    if protocol != "grpc":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(work)
    return asyncio.run(work)


# -------------------------------------------------------------------------------------------------
# exports

_CSV_COLUMNS: Final = (
    "Inferences/Second",
    "Client Send",
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "Client Recv",
    "p50 latency",
    "p90 latency",
    "p95 latency",
    "p99 latency",
    "Avg latency",
    "Requests",
    "Errors",
    "Stable",
)


def _us(ms: float) -> str:
    return "" if not math.isfinite(ms) else str(round(ms * 1000))


def _network_us(level: LevelResult) -> float:
    """The wait the server's own figures do not explain (network, HTTP handling), in microseconds."""
    if level.server is None or not math.isfinite(level.wait_ms):
        return level.wait_ms * 1000
    s = level.server
    return max(0.0, level.wait_ms * 1000 - s.queue_us - s.compute_input_us - s.compute_infer_us - s.compute_output_us)


def _to_csv(result: LoadtestResult) -> str:
    first = "Concurrency" if all(level.mode == "concurrency" for level in result.levels) else "Request Rate"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow((first, *_CSV_COLUMNS))
    for level in result.levels:
        s = level.server
        server = (
            [str(round(v)) for v in (s.queue_us, s.compute_input_us, s.compute_infer_us, s.compute_output_us)]
            if s is not None
            else ["", "", "", ""]
        )
        network = _network_us(level)
        writer.writerow(
            (
                f"{level.value:g}",
                f"{level.throughput:.2f}",
                _us(level.send_ms),
                "" if not math.isfinite(network) else str(round(network)),
                *server,
                _us(level.receive_ms),
                *(_us(v) for v in (level.p50_ms, level.p90_ms, level.p95_ms, level.p99_ms, level.mean_ms)),
                level.requests,
                sum(level.errors.values()),
                "yes" if level.stable else "no",
            )
        )
    return out.getvalue()


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222;font-size:14px}
h1{margin:0;font-size:22px}h2{border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:1.6em;font-size:17px}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 7px;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}.warn{color:#8a6200}
figure{display:inline-block;margin:.3em 1em .3em 0;vertical-align:top}figcaption{font-size:12px;color:#555}
"""


def _cell(value: float, digits: int = 2) -> str:
    return '<td class="num">' + ("–" if not math.isfinite(value) else f"{value:.{digits}f}") + "</td>"


def _html_table(result: LoadtestResult) -> str:
    head = (
        "level", "infer/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "mean ms", "send ms", "wait ms", "recv ms",
        "server queue µs", "compute in µs", "compute infer µs", "compute out µs", "batches", "requests", "errors",
        "stable",
    )  # fmt: skip
    rows = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for level in result.levels:
        s = level.server
        server = [s.queue_us, s.compute_input_us, s.compute_infer_us, s.compute_output_us] if s else [math.nan] * 4
        batches = ", ".join(f"{k}×{v}" for k, v in s.batch_sizes.items()) if s else "–"
        errors = ", ".join(f"{k}: {v}" for k, v in level.errors.items()) or "0"
        cells = [f"<td>{escape(level.label)}</td>", _cell(level.throughput, 1)]
        cells += [_cell(v) for v in (level.p50_ms, level.p90_ms, level.p95_ms, level.p99_ms, level.mean_ms)]
        cells += [_cell(v, 3) for v in (level.send_ms, level.wait_ms, level.receive_ms)]
        cells += [_cell(v, 0) for v in server]
        cells += [f"<td>{escape(batches)}</td>", f'<td class="num">{level.requests}</td>', f"<td>{escape(errors)}</td>"]
        cells.append(f"<td>{'yes' if level.stable else 'no'}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _charts(result: LoadtestResult) -> list[str]:
    measured = [level for level in result.levels if math.isfinite(level.p99_ms)]
    if not measured:
        return ["<p>No level had a successful request: nothing to plot.</p>"]
    series = [
        (name, [(level.throughput, getattr(level, f"{name}_ms"), level.label) for level in measured])
        for name in ("p50", "p99")
    ]
    return [
        _figure(
            line_chart_svg(series, x_label="inferences/s", y_label="latency ms", title="Latency vs throughput"),
            "p50 and p99 latency against throughput, one point per level",
        ),
        _figure(
            bar_chart_svg(
                [(level.label, level.throughput) for level in result.levels],
                title="Throughput per level",
                unit="infer/s",
            ),
            "throughput per level",
        ),
        _figure(
            bar_chart_svg(
                [(level.label, level.p99_ms) for level in measured], title="p99 latency per level", unit="ms"
            ),
            "p99 latency per level",
        ),
    ]


def _to_html(result: LoadtestResult) -> str:
    version = f" version {result.version}" if result.version else ""
    title = f"modelport loadtest: {result.model}{version} at {result.url}"
    warnings = "".join(f'<li class="warn">{escape(w)}</li>' for w in result.warnings)
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p>protocol {escape(result.protocol)}, batch {result.batch} per request; latencies of successful requests "
        "in the last three windows of each level; server figures per request from the server's statistics.</p>",
        "<h2>Levels</h2>",
        _html_table(result),
        "<h2>Plots</h2>",
        *_charts(result),
    ]
    if warnings:
        body += ["<h2>Warnings</h2>", f"<ul>{warnings}</ul>"]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
