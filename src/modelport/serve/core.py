"""The transport-independent server: models loaded, their queues, statistics, reloads and draining.

HTTP (serve/app.py) and gRPC (serve/grpc_service.py) are thin layers over one
:class:`InferenceCore`. It owns, per served model version, a :class:`DynamicBatcher` whose
instances each drive their own ONNX Runtime session in their own thread, and the version's
:class:`ModelStats`. It validates a request on the event loop (cheap), queues it, and returns the
outputs the request asked for.

Lifecycle. :meth:`start` loads every model of the repository; :meth:`begin_drain` makes the server
report not-ready while it keeps answering (so a load balancer stops sending); :meth:`stop` lets
every admitted request finish, then frees the sessions. With ``poll_interval`` set, the
repository is re-read periodically: a new or changed version is loaded next to the old one and
swapped in only once it is ready; the old one finishes its admitted requests and is freed. The
repository API (:meth:`load_model`, :meth:`unload_model`) does the same on demand.

Readiness is honest: a model version whose instance has been running one batch for longer than
``stuck_after`` seconds reports not-ready, and so does the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelport import __version__
from modelport.errors import (
    InputShapeError,
    ModelNotReadyError,
    ModelportError,
    ProtocolError,
    RepositoryError,
    RequestTimeoutError,
)
from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, check_feeds
from modelport.runners.onnxruntime import OrtRunner
from modelport.serve.batcher import DynamicBatcher, Executed
from modelport.serve.protocol import InferenceRequest, RequestedOutput, datatype_of
from modelport.serve.repository import ModelRepository, RepositoryChanges, ServedModel
from modelport.serve.stats import Metrics, ModelStats
from modelport.system import cpu_count

__all__ = ["PLATFORM", "SERVER_EXTENSIONS", "InferenceCore", "InferenceResult", "ServerOptions"]

logger = logging.getLogger(__name__)

#: The platform reported in model metadata (the name Triton uses for ONNX Runtime models).
PLATFORM = "onnxruntime_onnx"
#: Protocol extensions this server implements, advertised in the server metadata.
SERVER_EXTENSIONS = ("binary_tensor_data", "statistics", "model_repository", "schedule_policy")


@dataclass(frozen=True)
class ServerOptions:
    """Server-wide settings (per-model ones live in each model's config.yaml).

    ``max_request_bytes`` caps a request body (413 beyond it). ``poll_interval`` (seconds) turns
    on hot reload from the repository folder. ``stuck_after`` (seconds) is how long one batch may
    run before its model reports not-ready. ``drain_delay`` (seconds) is how long a server told to
    stop keeps answering while reporting not-ready, before it stops accepting connections.
    """

    max_request_bytes: int = 64 * 1024 * 1024
    poll_interval: float | None = None
    stuck_after: float = 60.0
    drain_delay: float = 1.0


@dataclass(frozen=True)
class InferenceResult:
    """The outputs a request asked for (all when it named none), in order."""

    model_name: str
    model_version: str
    id: str | None
    outputs: dict[str, np.ndarray[Any, Any]]
    #: Names the (HTTP) request asked to get back as binary data.
    binary: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Work:
    """One admitted request, as handed to a batch function."""

    request: InferenceRequest
    selected: tuple[RequestedOutput, ...]
    rows: int


@dataclass(eq=False)
class _Loaded:
    """The runtime of one served model version."""

    model: ServedModel
    batcher: DynamicBatcher[_Work, InferenceResult]
    stats: ModelStats
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    output_names: list[str] = field(default_factory=list)


class InferenceCore:
    """Serves the models of a :class:`ModelRepository`; see the module docstring."""

    def __init__(self, repository: ModelRepository, options: ServerOptions | None = None) -> None:
        self.repository = repository
        self.options = options or ServerOptions()
        self.metrics = Metrics()
        self._loaded: dict[ServedModel, _Loaded] = {}
        self._states: dict[tuple[str, int], tuple[str, str]] = {}
        # Versions that failed to load, by the files they had: not retried until the files change.
        self._failed: dict[tuple[str, int], tuple[tuple[Any, ...], Exception]] = {}
        self._started = False
        self._draining = False
        self._poller: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one load/unload/reload at a time

    # lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load every served model version; on a failure, free what was loaded and raise."""
        threads = max(1, cpu_count() // max(1, sum(len(m.runners) for m in self.repository)))
        try:
            for model in self.repository:
                await self._bring_up(model, threads)
        except BaseException:
            await self._retire(list(self._loaded))
            raise
        self._started = True
        if self.options.poll_interval is not None:
            self._poller = asyncio.create_task(self._poll(self.options.poll_interval), name="modelport reload")

    def begin_drain(self) -> None:
        """Report not-ready from now on, but keep answering requests."""
        if not self._draining:
            logger.info("draining: readiness is now false; admitted and new requests are still answered")
        self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining

    async def stop(self) -> None:
        """Finish every admitted request, then free every session."""
        self._draining = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await self._retire(list(self._loaded))
        self._started = False

    async def _bring_up(self, model: ServedModel, threads: int) -> None:
        self._states[model.name, model.version] = ("LOADING", "")
        try:
            await asyncio.to_thread(model.load, intra_op_threads=threads)
        except Exception as e:
            self._states[model.name, model.version] = ("UNAVAILABLE", f"failed to load: {e}")
            raise
        stats = ModelStats(model.name, model.version, self.metrics)
        instances = [_batch_function(model, runner) for runner in model.runners]
        batching = model.config.dynamic_batching
        batcher: DynamicBatcher[_Work, InferenceResult] = DynamicBatcher(
            model.label,
            instances,
            max_batch_size=model.config.max_batch_size if batching is not None else 0,
            max_queue_delay=batching.max_queue_delay_ms / 1000 if batching is not None else 0.0,
            preferred_batch_sizes=batching.preferred_batch_sizes if batching is not None else (),
            max_queue_size=model.config.max_queue_size,
            stats=stats,
        )
        batcher.start()
        self._loaded[model] = _Loaded(
            model, batcher, stats, model.inputs, model.outputs, [s.name for s in model.outputs]
        )
        self._states[model.name, model.version] = ("READY", "")

    async def _retire(self, models: Sequence[ServedModel], *, state: str = "UNAVAILABLE", reason: str = "") -> None:
        """Stop the queues of ``models`` (admitted requests finish) and free their sessions."""
        for model in models:
            loaded = self._loaded.pop(model, None)
            self._states[model.name, model.version] = ("UNLOADING", reason)
            if loaded is not None:
                await loaded.batcher.stop()
                loaded.stats.forget()
            await asyncio.to_thread(model.unload)
            self._states[model.name, model.version] = (state, reason)
            logger.info("unloaded %s", model.label)

    # health and metadata ----------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        """Started, not draining, and every served model version loaded and not stuck."""
        if not self._started or self._draining:
            return False
        return all(self._ready(model) for model in self.repository)

    def _ready(self, model: ServedModel) -> bool:
        loaded = self._loaded.get(model)
        return loaded is not None and model.ready and not loaded.batcher.stuck(self.options.stuck_after)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "modelport", "version": __version__, "extensions": list(SERVER_EXTENSIONS)}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        loaded = self._require(name, version)
        versions = [loaded.model.version] if version is not None else self.repository.versions(name)
        return {
            "name": name,
            "versions": [str(v) for v in versions],
            "platform": PLATFORM,
            "inputs": [_tensor_metadata(spec) for spec in loaded.inputs],
            "outputs": [_tensor_metadata(spec) for spec in loaded.outputs],
        }

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether a model version can serve now; a model on disk but unloaded is not ready (as Triton)."""
        if name not in self.repository.models and name in self.repository.on_disk:
            return False
        return self._ready(self.repository.get(name, version))

    def _require(self, name: str, version: str | None) -> _Loaded:
        model = self.repository.get(name, version)
        loaded = self._loaded.get(model)
        if loaded is None:
            state, reason = self._states.get((model.name, model.version), ("UNAVAILABLE", ""))
            why = f"it is {state.lower()} ({reason})" if reason else "the server is starting or stopping"
            raise ModelNotReadyError(f"{model.label} is not loaded — {why}")
        return loaded

    # inference --------------------------------------------------------------------------------
    async def infer(self, name: str, version: str | None, request: InferenceRequest) -> InferenceResult:
        """Validate, queue and run one request; raise a ModelportError subclass on failure."""
        loaded = self._require(name, version)
        model = loaded.model
        if model.pipeline is None:  # a pipeline checks its own inputs (an image may come as bytes or pixels)
            check_feeds(loaded.inputs, request.inputs, model_name=model.label)
        model.check_batch(request.inputs)
        selected = tuple(request.select_outputs(loaded.output_names, model_name=model.label))
        rows = _rows(request.inputs, model) if model.config.max_batch_size > 0 else 1
        timeout = _timeout(request, model)
        stats = loaded.stats
        stats.in_flight(1)
        dropped = ""  # answered requests (and rejected ones) are counted by the batcher
        try:
            work = loaded.batcher.submit(_Work(request, selected, rows), rows)
            return await (asyncio.wait_for(work, timeout) if timeout is not None else work)
        except TimeoutError as e:
            dropped = "timeout"
            raise RequestTimeoutError(
                f"request to {model.label} did not finish within {(timeout or 0) * 1000:g} ms — raise the request's "
                "'timeout' parameter or the model's timeout_ms, or add instances"
            ) from e
        except asyncio.CancelledError:
            dropped = "cancelled"
            raise
        finally:
            stats.in_flight(-1)
            if dropped:
                stats.request_dropped(dropped)

    # statistics -------------------------------------------------------------------------------
    def statistics(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        """Triton's statistics document for one model (all its served versions, or one) or all."""
        if name is None:
            chosen = list(self.repository)
        elif version is None:
            chosen = [self.repository.get(name, v) for v in self.repository.versions(name)]
        else:
            chosen = [self.repository.get(name, version)]
        stats = [self._loaded[m].stats.as_dict() for m in chosen if m in self._loaded]
        return {"model_stats": stats}

    # repository -------------------------------------------------------------------------------
    def repository_index(self) -> list[dict[str, str]]:
        """Every model version on disk with its state (READY, LOADING, UNLOADING, UNAVAILABLE)."""
        index = []
        for name, versions in self.repository.on_disk.items():
            for version in versions:
                state, reason = self._states.get((name, version), ("UNAVAILABLE", "not served (version_policy)"))
                index.append({"name": name, "version": str(version), "state": state, "reason": reason})
        return index

    async def load_model(self, name: str) -> None:
        """Load model ``name`` from its folder (re-read); a loaded one is reloaded if its files changed."""
        async with self._lock:
            changes = await asyncio.to_thread(self.repository.rescan, name)
            if name in changes.errors:
                raise RepositoryError(changes.errors[name])
            # Asked explicitly: try again even a version that failed with the same files.
            self._failed = {key: value for key, value in self._failed.items() if key[0] != name}
            failed = await self._switch(changes)
            if failed:
                raise failed[0]

    async def unload_model(self, name: str) -> None:
        """Stop serving model ``name``: admitted requests finish, then its sessions are freed."""
        async with self._lock:
            self.repository.get(name)  # ModelNotFoundError for an unknown or unloaded model
            removed = self.repository.remove(name)
            await self._retire(removed, reason="unloaded")

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._lock:
                    changes = await asyncio.to_thread(self.repository.rescan)
                    for name, error in changes.errors.items():
                        logger.error("not reloading model '%s': %s", name, error)
                    if changes.added or changes.removed:
                        await self._switch(changes)
            except Exception:
                logger.exception("reloading repository '%s' failed; serving what was loaded", self.repository.root)

    async def _switch(self, changes: RepositoryChanges) -> list[Exception]:
        """Load what is new next to what serves, swap, then retire what is gone."""
        models = {name: dict(versions) for name, versions in changes.models.items()}
        threads = max(1, cpu_count() // max(1, sum(len(m.runners) for v in models.values() for m in v.values())))
        failed: list[Exception] = []
        for model in changes.added:
            key = (model.name, model.version)
            try:
                known = self._failed.get(key)
                if known is not None and known[0] == model.stamp:
                    raise known[1]
                await self._bring_up(model, threads)
            except Exception as e:  # keep serving the old version, report the new one
                if self._failed.get(key, ((), None))[1] is not e:
                    logger.error("could not load %s, keeping the versions that serve: %s", model.label, e)
                self._failed[key] = (model.stamp, e)
                failed.append(e)
                models.pop(model.name, None)
                keep = {m.version: m for m in self.repository if m.name == model.name}
                if keep:
                    models[model.name] = keep
        for model in changes.added:
            if models.get(model.name, {}).get(model.version) is not model and model in self._loaded:
                await self._retire([model])
        served = {m for versions in models.values() for m in versions.values()}
        gone = [m for m in self._loaded if m not in served]
        self.repository.apply(models)
        await self._retire(gone, reason="replaced or removed")
        return failed


# the batch function ----------------------------------------------------------------------------


def _batch_function(model: ServedModel, runner: OrtRunner) -> Any:
    """The function an instance runs in its thread: stack the requests, run once, split."""

    def run(items: list[_Work]) -> Executed[InferenceResult]:
        return _execute(model, runner, items)

    return run


def _execute(model: ServedModel, runner: OrtRunner, items: list[_Work]) -> Executed[InferenceResult]:
    results: list[InferenceResult | BaseException] = [ModelportError("not run")] * len(items)
    executed: Executed[InferenceResult] = Executed(results=results)
    start = time.perf_counter_ns()
    prepared = [_prepare(model, runner, item, executed) for item in items]
    executed.input_ns += time.perf_counter_ns() - start
    # Requests whose model inputs agree beyond axis 0 run as one batch; others as separate batches.
    ready: dict[int, _Ready] = {}
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, outcome in enumerate(prepared):
        if isinstance(outcome, BaseException):
            results[index] = outcome
            continue
        ready[index] = outcome
        key = tuple((name, a.shape[1:] if len(items) > 1 else ()) for name, a in outcome[0].items())
        groups.setdefault(key, []).append(index)
    for indices in groups.values():
        _run_group(model, runner, items, ready, indices, executed)
    return executed


#: One request's model feeds and its pipeline context.
_Ready = tuple[Feeds, Any]
_Prepared = _Ready | BaseException


def _prepare(model: ServedModel, runner: OrtRunner, item: _Work, executed: Executed[Any]) -> _Prepared:
    """One request's model feeds (after its pre-processing stages) and its pipeline context."""
    if model.pipeline is None:
        return item.request.inputs, None
    try:
        staged = model.pipeline.preprocess(item.request.inputs)
        check_feeds(runner.inputs, staged.feeds, model_name=model.label)
    except Exception as e:
        return e
    _add_seconds(executed, staged.seconds)
    return staged.feeds, staged.context


def _add_seconds(executed: Executed[Any], seconds: dict[str, float]) -> None:
    for stage, value in seconds.items():
        executed.stage_seconds[stage] = executed.stage_seconds.get(stage, 0.0) + value


def _run_group(
    model: ServedModel,
    runner: OrtRunner,
    items: list[_Work],
    ready: dict[int, _Ready],
    indices: list[int],
    executed: Executed[InferenceResult],
) -> None:
    start = time.perf_counter_ns()
    feeds_of = [ready[i][0] for i in indices]
    if len(indices) == 1:
        feeds = feeds_of[0]
    else:
        feeds = {n: np.concatenate([f[n] for f in feeds_of], axis=0) for n in feeds_of[0]}
    stacked = time.perf_counter_ns()
    try:
        outputs = runner.infer(feeds, check=False)
    except Exception as e:
        if len(indices) == 1:
            executed.results[indices[0]] = e
            return
        # One request may be what breaks the batch: run each alone, so only it fails.
        for index in indices:
            _run_group(model, runner, items, ready, [index], executed)
        return
    inferred = time.perf_counter_ns()
    offset = 0
    for index, own in zip(indices, feeds_of, strict=True):
        rows = _rows_of(own) if len(indices) > 1 else None
        mine = outputs if rows is None else {n: v[offset : offset + rows] for n, v in outputs.items()}
        offset += rows or 0
        executed.results[index] = _finish(model, items[index], mine, ready[index][1], executed)
    executed.input_ns += stacked - start
    executed.infer_ns += inferred - stacked
    executed.output_ns += time.perf_counter_ns() - inferred


def _finish(
    model: ServedModel, work: _Work, outputs: Feeds, context: Any, executed: Executed[Any]
) -> InferenceResult | BaseException:
    """Post-process one request's outputs and keep the ones it asked for."""
    if model.pipeline is not None:
        try:
            staged = model.pipeline.postprocess(outputs, context)
        except Exception as e:
            return e
        _add_seconds(executed, staged.seconds)
        outputs = staged.feeds
    return InferenceResult(
        model_name=model.name,
        model_version=str(model.version),
        id=work.request.id,
        outputs={o.name: outputs[o.name] for o in work.selected},
        binary=frozenset(o.name for o in work.selected if o.binary),
    )


def _rows_of(feeds: Feeds) -> int:
    return int(next(a.shape[0] for a in feeds.values() if a.ndim > 0))


# helpers --------------------------------------------------------------------------------------


def _rows(feeds: Feeds, model: ServedModel) -> int:
    """The batch size of a request (axis 0, the same for every input)."""
    sizes = {name: a.shape[0] for name, a in feeds.items() if a.ndim > 0}
    if not sizes:
        return 1
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"'{n}': {s}" for n, s in sizes.items())
        raise InputShapeError(
            f"the inputs of {model.label} disagree on the batch size (axis 0): {listed} — "
            "send the same number of rows in every input"
        )
    return int(next(iter(sizes.values())))


def _timeout(request: InferenceRequest, model: ServedModel) -> float | None:
    """Seconds this request may take: its ``timeout`` parameter (µs, as Triton) or the model's ``timeout_ms``."""
    limits = []
    if model.config.timeout_ms is not None:
        limits.append(model.config.timeout_ms / 1000)
    value = request.parameters.get("timeout")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ProtocolError(f"request parameter 'timeout' must be a positive number of microseconds, got {value!r}")
        limits.append(value / 1e6)
    return min(limits) if limits else None


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    # An unknown rank cannot be written as a list of dimensions; it is reported as one
    # variable dimension.
    dims = spec.shape if spec.shape is not None else (None,)
    return {
        "name": spec.name,
        "datatype": datatype_of(spec.dtype),
        "shape": [d if isinstance(d, int) else -1 for d in dims],
    }
