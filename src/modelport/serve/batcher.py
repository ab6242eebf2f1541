"""The request queue of one model version, its instances, and dynamic batching.

Every request for a model version becomes a job in one bounded FIFO queue. Each instance is a
coroutine paired with its own single thread (so one ONNX Runtime session is always driven by the
same thread): it takes the first waiting job and, when batching is on, keeps collecting jobs
until the batch has ``max_batch_size`` rows, reaches a preferred size with nothing else waiting,
or ``max_queue_delay`` has passed since it started collecting. Waiting is an asyncio future with a
deadline (``loop.call_at``); nothing polls.

The contract with the batch function (the serving rules in STYLE.md):

- it always gets a list (one job without batching) and runs in the instance's thread;
- it returns one result or one exception per job, in order — an exception fails only its job;
  a list of another length is a hard error naming both counts, failing the whole batch;
- a job whose client went away or timed out before it ran is skipped, never computed.

A full queue refuses the job at once (:class:`ServerBusyError` with a suggested retry delay)
instead of letting latency grow for everyone admitted.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from modelport.errors import ModelNotReadyError, ServerBusyError
from modelport.serve.stats import ModelStats

__all__ = ["BatchFunction", "DynamicBatcher", "Executed"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Executed(Generic[R]):
    """What a batch function returns: one result or exception per item, and where time went."""

    results: list[R | BaseException]
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)


#: ``fn(items) -> Executed``, run in an instance's thread; one function per instance.
BatchFunction = Callable[[list[T]], Executed[R]]


@dataclass(eq=False)
class _Job(Generic[T]):
    item: T
    rows: int
    future: asyncio.Future[Any]
    arrived_ns: int


class _Stop:
    """Queued after the last job when the batcher stops: each instance exits on one."""


_STOP = _Stop()


class DynamicBatcher(Generic[T, R]):
    """A bounded queue in front of ``len(functions)`` instances, batching when ``max_batch_size`` > 1.

    ``max_batch_size`` counts rows (axis 0 of the inputs); a job brings ``rows`` of them.
    ``max_queue_delay`` (seconds) is how long an instance waits for more jobs to fill a batch.
    """

    def __init__(
        self,
        label: str,
        functions: Sequence[BatchFunction[T, R]],
        *,
        max_batch_size: int = 0,
        max_queue_delay: float = 0.0,
        preferred_batch_sizes: Sequence[int] = (),
        max_queue_size: int = 64,
        stats: ModelStats | None = None,
    ) -> None:
        if not functions:
            raise ValueError("a batcher needs at least one instance")
        self.label = label
        self._functions = list(functions)
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self.preferred = frozenset(preferred_batch_sizes)
        self.max_queue_size = max_queue_size
        self.stats = stats if stats is not None else ModelStats(label, 0)
        self._jobs: collections.deque[_Job[T] | _Stop] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._executors: list[ThreadPoolExecutor] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._busy_since: list[float | None] = [None] * len(self._functions)
        self._service_seconds = 0.0  # running mean of one batch, for Retry-After
        self._accepting = False
        self._queued = 0

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    @property
    def instances(self) -> int:
        return len(self._functions)

    @property
    def queued(self) -> int:
        """Jobs waiting for an instance (including ones cancelled but not yet skipped)."""
        return self._queued

    # lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the instances on the running event loop."""
        for index in range(self.instances):
            self._executors.append(ThreadPoolExecutor(1, thread_name_prefix=f"modelport-{self.label}-{index}"))
            self._tasks.append(asyncio.create_task(self._instance(index), name=f"{self.label} instance {index}"))
        self._accepting = True

    async def stop(self) -> None:
        """Refuse new jobs, finish every admitted one, then stop the instances and their threads."""
        self._accepting = False
        for _ in self._tasks:
            self._push(_STOP)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for executor in self._executors:
            executor.shutdown(wait=True)
        self._executors.clear()

    def stuck(self, after: float) -> bool:
        """True when an instance has been running one batch for more than ``after`` seconds."""
        now = time.monotonic()
        return any(since is not None and now - since > after for since in self._busy_since)

    # submitting -------------------------------------------------------------------------------
    async def submit(self, item: T, rows: int = 1) -> R:
        """Queue ``item`` and wait for its result.

        Raises :class:`ServerBusyError` at once when the queue is full. Cancelling the caller
        (client gone, timeout) drops the job if it has not run yet.
        """
        if not self._accepting:
            raise ModelNotReadyError(f"{self.label} is not accepting requests — it is stopping or unloaded")
        if self._queued >= self.max_queue_size:
            self.stats.request_dropped("rejected")
            retry = self.retry_after()
            raise ServerBusyError(
                f"{self.label} has {self._queued} requests queued, its limit (max_queue_size) — "
                f"retry in {retry:g} s, or raise max_queue_size / instance_count",
                retry_after=retry,
            )
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued += 1
        self.stats.queue_size(self._queued)
        self._push(_Job(item, rows, future, time.perf_counter_ns()))
        return await future

    def retry_after(self) -> float:
        """Seconds until the queue is likely to have room again (at least 1)."""
        waves = self._queued / self.instances
        return float(max(1, math.ceil(waves * self._service_seconds)))

    def _push(self, job: _Job[T] | _Stop) -> None:
        self._jobs.append(job)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                break

    async def _next(self, deadline: float | None) -> _Job[T] | _Stop | None:
        """The next queued entry; ``None`` when ``deadline`` (loop time) passes first."""
        loop = asyncio.get_running_loop()
        while not self._jobs:
            if deadline is not None and loop.time() >= deadline:
                return None
            waiter: asyncio.Future[bool] = loop.create_future()
            self._waiters.append(waiter)
            timer = loop.call_at(deadline, _expire, waiter) if deadline is not None else None
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
        job = self._jobs.popleft()
        if isinstance(job, _Job):
            self._queued -= 1
            self.stats.queue_size(self._queued)
        return job

    # instances --------------------------------------------------------------------------------
    async def _instance(self, index: int) -> None:
        while True:
            first = await self._next(None)
            if isinstance(first, _Stop) or first is None:
                return
            if first.future.done():  # cancelled or timed out while queued
                continue
            batch = [first]
            if self.batching:
                await self._collect(batch)
            await self._run(index, batch)

    async def _collect(self, batch: list[_Job[T]]) -> None:
        """Add queued jobs to ``batch`` until it is full or the delay is over.

        A job that does not fit (or the stop marker) goes back to the front of the queue.
        """
        deadline = asyncio.get_running_loop().time() + self.max_queue_delay
        rows = sum(job.rows for job in batch)
        while rows < self.max_batch_size:
            if rows in self.preferred and not self._jobs:
                break
            job = await self._next(deadline)
            if job is None:
                return
            if isinstance(job, _Stop) or rows + job.rows > self.max_batch_size:
                self._put_back(job)  # first in line for whichever instance is free first
                return None
            if not job.future.done():
                batch.append(job)
                rows += job.rows

    def _put_back(self, job: _Job[T] | _Stop) -> None:
        self._jobs.appendleft(job)
        if isinstance(job, _Job):
            self._queued += 1
            self.stats.queue_size(self._queued)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                break

    async def _run(self, index: int, batch: list[_Job[T]]) -> None:
        batch = [job for job in batch if not job.future.done()]  # callers gone while it was collecting
        if not batch:
            return
        loop = asyncio.get_running_loop()
        start_ns = time.perf_counter_ns()
        for job in batch:
            self.stats.queued(start_ns - job.arrived_ns)
        self._busy_since[index] = time.monotonic()
        try:
            work = functools.partial(_call, self.label, self._functions[index], [j.item for j in batch])
            executed = await loop.run_in_executor(self._executors[index], work)
            if len(executed.results) != len(batch):
                raise RuntimeError(
                    f"the batch function of {self.label} returned {len(executed.results)} results "
                    f"for {len(batch)} requests — it must return one result or exception per request"
                )
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # the error belongs to the requests, not to the instance
            logger.exception("%s: batch of %d failed", self.label, len(batch))
            executed = Executed(results=[e] * len(batch))
        finally:
            self._busy_since[index] = None
        elapsed = (time.perf_counter_ns() - start_ns) / 1e9
        self._service_seconds = elapsed if self._service_seconds == 0 else 0.9 * self._service_seconds + 0.1 * elapsed
        self.stats.batch_done(
            sum(j.rows for j in batch), len(batch), executed.input_ns, executed.infer_ns, executed.output_ns
        )
        for stage, seconds in executed.stage_seconds.items():
            self.stats.stage_done(stage, seconds)
        # Counted here, in the same step as the batch, so a statistics reading never sees one without the other.
        done_ns = time.perf_counter_ns()
        for job, result in zip(batch, executed.results, strict=True):
            if job.future.done():
                continue
            self.stats.request_done(not isinstance(result, BaseException), done_ns - job.arrived_ns)
            if isinstance(result, StopIteration):  # futures refuse it
                job.future.set_exception(RuntimeError(f"the batch function of {self.label} returned {result!r}"))
            elif isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)


def _call(label: str, function: BatchFunction[T, R], items: list[T]) -> Executed[R]:
    """Run a batch function; a StopIteration it raises would never reach the event loop."""
    try:
        return function(items)
    except StopIteration as e:
        raise RuntimeError(f"the batch function of {label} raised StopIteration: {e!r}") from e


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
