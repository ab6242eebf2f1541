"""The dynamic batcher on its own, driven by plain Python batch functions (no ONNX).

Nothing here measures time. A test decides when a batch function returns by holding it on a
:class:`Gate` (a ``threading.Event`` the instance thread waits on, announced to the event loop by
an ``asyncio.Event``), lets queued submits settle by yielding to the loop a bounded number of
times, and moves the batcher's clock by hand where the logic reads it. Each test runs under
``anyio.fail_after`` so a batch that waits for a long ``max_queue_delay`` it should have skipped
shows up as a failure, not a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

from modelport.errors import ModelNotReadyError, ServerBusyError
from modelport.serve import batcher as batcher_module
from modelport.serve.batcher import DynamicBatcher, Executed

from .batcher_helpers import LIMIT, Clock, Gate, settle

pytestmark = pytest.mark.anyio


class Model:
    """A batch function answering ``item * 10`` (a ``ValueError`` result for a negative item).

    It records every list it gets and the thread it ran in; the first calls wait on ``gates``.
    """

    def __init__(self, gates: Sequence[Gate] = ()) -> None:
        self.batches: list[list[int]] = []
        self.threads: list[threading.Thread] = []
        self._gates = deque(gates)
        self._lock = threading.Lock()

    def __call__(self, items: list[int]) -> Executed[int]:
        with self._lock:
            self.batches.append(items)
            self.threads.append(threading.current_thread())
            gate = self._gates.popleft() if self._gates else None
        if gate is not None:
            gate.hold()
        results: list[int | BaseException] = [
            ValueError(f"item {item} is negative") if item < 0 else item * 10 for item in items
        ]
        return Executed(results=results)

    @property
    def items(self) -> list[int]:
        return [item for batch in self.batches for item in batch]


@contextlib.asynccontextmanager
async def running(batcher: DynamicBatcher[Any, Any], *gates: Gate) -> AsyncIterator[DynamicBatcher[Any, Any]]:
    """Start ``batcher``; on the way out open every gate (a failed test must not hang) and stop it."""
    batcher.start()
    try:
        yield batcher
    finally:
        for gate in gates:
            gate.open()
        await batcher.stop()


def submit(batcher: DynamicBatcher[int, int], item: int, rows: int = 1) -> asyncio.Task[int]:
    return asyncio.create_task(batcher.submit(item, rows))


async def submit_and_take(batcher: DynamicBatcher[int, int], item: int) -> asyncio.Task[int]:
    """Submit ``item`` to an idle batcher and return once an instance has taken it off the queue."""
    task = submit(batcher, item)
    await settle(lambda: batcher.queued == 1 or task.done(), "the job to be admitted")
    await settle(lambda: batcher.queued == 0, "an instance to take the job")
    return task


# forming batches ------------------------------------------------------------------------------
async def test_queued_jobs_form_the_next_batch_up_to_max_batch_size() -> None:
    gate = Gate()
    model = Model([gate])
    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [model], max_batch_size=4, max_queue_delay=0.0)
    with anyio.fail_after(LIMIT):
        async with running(batcher, gate):
            first = submit(batcher, 1)
            await gate.entered()
            waiting = [submit(batcher, item) for item in range(2, 7)]
            await settle(lambda: batcher.queued == 5, "five jobs queued behind the blocked instance")
            assert model.batches == [[1]]
            gate.open()
            assert await first == 10
            assert [await task for task in waiting] == [20, 30, 40, 50, 60]
    assert model.batches == [[1], [2, 3, 4, 5], [6]]
    assert all(type(batch) is list for batch in model.batches)
    assert batcher.stats.execution_count == 3
    assert batcher.stats.inference_count == 6


@pytest.mark.parametrize("max_batch_size", [0, 1, 8])
async def test_a_single_job_reaches_the_batch_function_as_a_list(max_batch_size: int) -> None:
    model = Model()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [model], max_batch_size=max_batch_size)
    assert batcher.batching is (max_batch_size > 1)
    with anyio.fail_after(LIMIT):
        async with running(batcher):
            assert await batcher.submit(7) == 70
    assert model.batches == [[7]]
    assert type(model.batches[0]) is list


async def test_batching_off_runs_every_job_alone_in_arrival_order() -> None:
    gate = Gate()
    model = Model([gate])
    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [model], max_batch_size=0)
    with anyio.fail_after(LIMIT):
        async with running(batcher, gate):
            first = submit(batcher, 1)
            await gate.entered()
            waiting = [submit(batcher, item) for item in (2, 3, 4)]
            await settle(lambda: batcher.queued == 3, "three jobs queued")
            gate.open()
            assert [await task for task in (first, *waiting)] == [10, 20, 30, 40]
    assert model.batches == [[1], [2], [3], [4]]


async def test_rows_bound_a_batch_and_a_job_that_does_not_fit_starts_the_next() -> None:
    gate = Gate()
    model = Model([gate])
    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [model], max_batch_size=4, max_queue_delay=0.0)
    with anyio.fail_after(LIMIT):
        async with running(batcher, gate):
            first = submit(batcher, 1, rows=3)
            await gate.entered()
            waiting = [submit(batcher, 2, rows=3), submit(batcher, 3, rows=3), submit(batcher, 4, rows=1)]
            await settle(lambda: batcher.queued == 3, "three jobs queued")
            gate.open()
            assert [await task for task in (first, *waiting)] == [10, 20, 30, 40]
    # 3 + 3 > 4: job 2 runs alone, job 3 opens the next batch and job 4 (3 + 1 = 4 rows) joins it.
    assert model.batches == [[1], [2], [3, 4]]
    assert sorted(batcher.stats.batches) == [3, 4]
    assert batcher.stats.inference_count == 10


async def test_a_preferred_size_dispatches_without_waiting_for_the_delay() -> None:
    gate = Gate()
    model = Model([gate])
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        "m", [model], max_batch_size=8, max_queue_delay=30.0, preferred_batch_sizes=[2, 3]
    )
    # With a 30 s delay, only the preferred sizes can finish these batches inside fail_after.
    with anyio.fail_after(LIMIT):
        async with running(batcher, gate):
            pair = [submit(batcher, 1), submit(batcher, 2)]
            await gate.entered()
            assert model.batches == [[1, 2]]
            # Three more queue up; at 2 rows a third is still waiting, so the batch grows to 3.
            triple = [submit(batcher, item) for item in (3, 4, 5)]
            await settle(lambda: batcher.queued == 3, "three jobs queued")
            gate.open()
            assert [await task for task in (*pair, *triple)] == [10, 20, 30, 40, 50]
            # A single job that brings a preferred number of rows goes alone at once.
            assert await batcher.submit(6, rows=2) == 60
    assert model.batches == [[1, 2], [3, 4, 5], [6]]


async def test_zero_queue_delay_runs_a_lone_job_alone() -> None:
    model = Model()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [model], max_batch_size=8, max_queue_delay=0.0)
    with anyio.fail_after(LIMIT):
        async with running(batcher):
            assert await batcher.submit(5) == 50
            assert await batcher.submit(6) == 60
    assert model.batches == [[5], [6]]


# failures -------------------------------------------------------------------------------------
async def test_an_exception_result_fails_only_its_own_request() -> None:
    model = Model()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [model], max_batch_size=3, max_queue_delay=30.0)
    with anyio.fail_after(LIMIT):
        async with running(batcher):
            tasks = [submit(batcher, 1), submit(batcher, -2), submit(batcher, 3)]
            assert await tasks[0] == 10
            with pytest.raises(ValueError, match="item -2 is negative"):
                await tasks[1]
            assert await tasks[2] == 30
    assert model.batches == [[1, -2, 3]]


async def test_a_wrong_number_of_results_fails_the_whole_batch_naming_both_counts() -> None:
    def short(items: list[int]) -> Executed[int]:
        return Executed(results=[item * 10 for item in items[:-1]])

    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [short], max_batch_size=3, max_queue_delay=30.0)
    with anyio.fail_after(LIMIT):
        async with running(batcher):
            tasks = [submit(batcher, item) for item in (1, 2, 3)]
            for task in tasks:
                with pytest.raises(RuntimeError, match=r"returned 2 results for 3 requests — it must return one"):
                    await task
            assert batcher.stats.execution_count == 1


@pytest.mark.parametrize("max_batch_size", [0, 2])
async def test_a_raising_batch_function_fails_its_batch_and_the_batcher_keeps_serving(max_batch_size: int) -> None:
    seen: list[list[int]] = []

    def fragile(items: list[int]) -> Executed[int]:
        seen.append(items)
        if 666 in items:
            raise ValueError("engine exploded on item 666")
        return Executed(results=[item * 10 for item in items])

    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        "m", [fragile], max_batch_size=max_batch_size, max_queue_delay=30.0
    )
    with anyio.fail_after(LIMIT):
        async with running(batcher):
            doomed = [submit(batcher, 666)] + ([submit(batcher, 1)] if batcher.batching else [])
            for task in doomed:
                with pytest.raises(ValueError, match="engine exploded on item 666"):
                    await task
            later = [submit(batcher, 4)] + ([submit(batcher, 5)] if batcher.batching else [])
            assert [await task for task in later] == [40, 50][: len(later)]
    assert seen == ([[666, 1], [4, 5]] if batcher.batching else [[666], [4]])


async def test_a_batch_function_that_breaks_its_contract_by_returning_a_list_fails_the_batch() -> None:
    def bare(items: list[int]) -> Any:
        return [item * 10 for item in items]  # not an Executed

    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [bare])
    with anyio.fail_after(LIMIT):
        async with running(batcher):
            with pytest.raises(AttributeError, match="results"):
                await batcher.submit(1)


@pytest.mark.parametrize("how", ["raised", "returned"])
async def test_a_stop_iteration_from_the_batch_function_fails_its_requests_only(how: str) -> None:
    def leaky(items: list[int]) -> Executed[int]:
        if 13 in items:
            if how == "raised":
                next(iter([]))  # user code exhausting an iterator
            return Executed(results=[StopIteration("exhausted")] * len(items))
        return Executed(results=[item * 10 for item in items])

    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [leaky])
    batcher.start()
    try:
        with anyio.fail_after(0.5):  # a hang bound: a thread hop takes far less
            with pytest.raises(RuntimeError, match="StopIteration"):
                await batcher.submit(13)
            assert await batcher.submit(2) == 20  # the instance still serves
    finally:
        with anyio.move_on_after(0.5):  # stop() would wait forever on a hung instance
            await batcher.stop()


# cancelled and timed-out callers --------------------------------------------------------------
@pytest.mark.parametrize("max_batch_size", [0, 4])
async def test_cancelled_and_timed_out_callers_are_skipped(max_batch_size: int) -> None:
    gate = Gate()
    model = Model([gate])
    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [model], max_batch_size=max_batch_size, max_queue_delay=0.0)
    with anyio.fail_after(LIMIT):
        async with running(batcher, gate):
            first = submit(batcher, 1)
            await gate.entered()
            cancelled, kept = submit(batcher, 2), submit(batcher, 3)
            await settle(lambda: batcher.queued == 2, "two jobs queued")
            cancelled.cancel()
            await settle(cancelled.done, "the cancelled caller to finish")
            # The instance is held by the gate, so this wait can only end by the timeout.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(batcher.submit(4), timeout=0.05)
            last = submit(batcher, 5)
            await settle(lambda: batcher.queued == 4, "the abandoned jobs still queued until skipped")
            gate.open()
            assert [await first, await kept, await last] == [10, 30, 50]
            assert cancelled.cancelled()
    assert model.batches == ([[1], [3, 5]] if max_batch_size else [[1], [3], [5]])
    assert 2 not in model.items and 4 not in model.items
    assert batcher.queued == 0
    assert batcher.stats.queue.count == 3  # only the jobs that ran waited for an instance


async def test_a_caller_cancelled_while_its_batch_is_collecting_is_skipped() -> None:
    model = Model()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [model], max_batch_size=2, max_queue_delay=30.0)
    with anyio.fail_after(LIMIT):
        async with running(batcher):
            first = await submit_and_take(batcher, 1)
            assert not first.done()
            first.cancel()  # job 1 now waits in the batch being collected, not in the queue
            await settle(first.done, "the cancelled caller to finish")
            others = [submit(batcher, 2), submit(batcher, 3)]
            await asyncio.sleep(0)  # both submits run their admission before this task resumes
        # stop() dispatched whatever was still collecting.
        assert [await task for task in others] == [20, 30]
    assert 1 not in model.items, f"the cancelled job's item was computed: batches {model.batches}"


# the queue bound ------------------------------------------------------------------------------
async def test_a_full_queue_refuses_at_once_with_a_retry_delay() -> None:
    gate = Gate()
    model = Model([gate])
    batcher: DynamicBatcher[int, int] = DynamicBatcher("busy", [model], max_queue_size=2)
    with anyio.fail_after(LIMIT):
        async with running(batcher, gate):
            first = submit(batcher, 1)
            await gate.entered()
            waiting = [submit(batcher, 2), submit(batcher, 3)]
            await settle(lambda: batcher.queued == 2, "two jobs queued")
            with pytest.raises(
                ServerBusyError, match=r"busy has 2 requests queued, its limit \(max_queue_size\) — retry in 1 s"
            ) as refused:
                await batcher.submit(4)
            assert refused.value.retry_after >= 1
            assert batcher.stats.rejected == 1
            assert batcher.queued == 2  # the refused job took no place
            gate.open()
            assert [await task for task in (first, *waiting)] == [10, 20, 30]
            assert await batcher.submit(5) == 50  # room again once the queue drained
    assert 4 not in model.items
    assert batcher.stats.rejected == 1


async def test_retry_after_scales_with_the_measured_batch_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(ns=0)
    monkeypatch.setattr(batcher_module, "time", clock)
    gates = [Gate()]

    def slow(items: list[int]) -> Executed[int]:
        clock.ns = (clock.ns or 0) + 3_000_000_000  # every batch "takes" 3 s on the batcher's clock
        if items == [2]:
            gates[0].hold()
        return Executed(results=[item * 10 for item in items])

    batcher: DynamicBatcher[int, int] = DynamicBatcher("slow", [slow], max_queue_size=2)
    with anyio.fail_after(LIMIT):
        async with running(batcher, *gates):
            assert await batcher.submit(1) == 10
            held = submit(batcher, 2)
            await gates[0].entered()
            waiting = [submit(batcher, 3), submit(batcher, 4)]
            await settle(lambda: batcher.queued == 2, "two jobs queued")
            # Two queued jobs, one instance, 3 s a batch: room in about 6 s.
            with pytest.raises(ServerBusyError, match=r"retry in 6 s") as refused:
                await batcher.submit(5)
            assert refused.value.retry_after == 6.0
            gates[0].open()
            assert [await task for task in (held, *waiting)] == [20, 30, 40]


# instances ------------------------------------------------------------------------------------
async def test_instances_run_batches_at_the_same_time_in_their_own_threads() -> None:
    gates = [Gate(), Gate(), Gate()]
    models = [Model([gate]) for gate in gates]
    batcher: DynamicBatcher[int, int] = DynamicBatcher("trio", models)
    assert batcher.instances == 3
    with anyio.fail_after(LIMIT):
        async with running(batcher, *gates):
            tasks = [submit(batcher, item) for item in (1, 2, 3)]
            for gate in gates:
                await gate.entered()  # all three batches are inside their functions at once
            threads = [model.threads[0] for model in models]
            for gate in gates:
                gate.open()
            assert [await task for task in tasks] == [10, 20, 30]
    assert [model.batches for model in models] == [[[1]], [[2]], [[3]]]
    assert len({thread.ident for thread in threads}) == 3
    assert threading.main_thread() not in threads and threading.current_thread() not in threads
    assert [thread.name.rsplit("_", 1)[0] for thread in threads] == [f"modelport-trio-{i}" for i in range(3)]
    assert not any(thread.is_alive() for thread in threads)  # stop() shut the instance threads down


async def test_an_instance_keeps_its_thread_across_batches() -> None:
    model = Model()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [model])
    with anyio.fail_after(LIMIT):
        async with running(batcher):
            for item in range(4):
                assert await batcher.submit(item) == item * 10
    assert len({thread.ident for thread in model.threads}) == 1


async def test_a_job_that_does_not_fit_is_taken_by_an_idle_instance() -> None:
    gate = Gate()
    busy, idle = Model([gate]), Model()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("pair", [busy, idle], max_batch_size=4, max_queue_delay=0.0)
    with anyio.fail_after(LIMIT):
        async with running(batcher, gate):
            first, second = submit(batcher, 1, rows=3), submit(batcher, 2, rows=3)
            await gate.entered()  # instance 0 runs job 1; 3 + 3 rows > 4, so job 2 is left over
            try:
                # instance 1 is idle: job 2 should not wait for instance 0's batch.
                with anyio.fail_after(1.0):
                    assert await asyncio.shield(second) == 20
            finally:
                gate.open()
                assert await first == 10
                await second
    assert idle.batches == [[2]]


# stopping -------------------------------------------------------------------------------------
async def test_stop_finishes_admitted_jobs_then_refuses_new_ones() -> None:
    gate = Gate()
    model = Model([gate])
    batcher: DynamicBatcher[int, int] = DynamicBatcher("drain", [model], max_batch_size=4, max_queue_delay=0.0)
    batcher.start()
    with anyio.fail_after(LIMIT):
        try:
            first = submit(batcher, 1)
            await gate.entered()
            waiting = [submit(batcher, 2), submit(batcher, 3)]
            await settle(lambda: batcher.queued == 2, "two jobs queued")
            stopping = asyncio.create_task(batcher.stop())
            await asyncio.sleep(0)  # stop() runs up to its first wait: it refuses from here on
            with pytest.raises(
                ModelNotReadyError, match="drain is not accepting requests — it is stopping or unloaded"
            ):
                await batcher.submit(9)
            assert not stopping.done()  # still draining: job 1 is held
            gate.open()
            await stopping
        finally:
            gate.open()
        assert [await task for task in (first, *waiting)] == [10, 20, 30]
        with pytest.raises(ModelNotReadyError, match="drain is not accepting requests"):
            await batcher.submit(10)
    assert model.batches == [[1], [2, 3]]
    assert not any(t.name.startswith("modelport-drain-") for t in threading.enumerate())


async def test_stop_dispatches_a_batch_that_is_still_collecting() -> None:
    model = Model()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [model], max_batch_size=8, max_queue_delay=30.0)
    batcher.start()
    with anyio.fail_after(LIMIT):  # far below the 30 s delay
        task = await submit_and_take(batcher, 1)
        await batcher.stop()
        assert await task == 10
    assert model.batches == [[1]]


async def test_stop_with_nothing_queued_returns_and_can_repeat() -> None:
    batcher: DynamicBatcher[int, int] = DynamicBatcher("idle", [Model(), Model()])
    with anyio.fail_after(LIMIT):
        await batcher.stop()  # never started
        batcher.start()
        await batcher.stop()
        await batcher.stop()
    with pytest.raises(ModelNotReadyError, match="idle is not accepting requests"):
        await batcher.submit(1)


async def test_submit_before_start_is_refused() -> None:
    batcher: DynamicBatcher[int, int] = DynamicBatcher("cold", [Model()])
    with pytest.raises(ModelNotReadyError, match="cold is not accepting requests — it is stopping or unloaded"):
        await batcher.submit(1)


def test_a_batcher_needs_an_instance() -> None:
    with pytest.raises(ValueError, match="a batcher needs at least one instance"):
        DynamicBatcher("none", [])


# stuck instances ------------------------------------------------------------------------------
async def test_stuck_while_a_batch_runs_longer_than_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(now=100.0)
    monkeypatch.setattr(batcher_module, "time", clock)
    gate = Gate()
    model = Model([gate])
    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [model])
    with anyio.fail_after(LIMIT):
        async with running(batcher, gate):
            assert not batcher.stuck(10.0)  # idle
            task = submit(batcher, 1)
            await gate.entered()  # started at clock 100
            assert not batcher.stuck(10.0)
            clock.now = 110.0
            assert not batcher.stuck(10.0)  # exactly the limit is not over it
            clock.now = 110.5
            assert batcher.stuck(10.0)
            assert not batcher.stuck(20.0)
            gate.open()
            assert await task == 10
            clock.now = 1000.0
            assert not batcher.stuck(10.0)


async def test_not_stuck_after_a_batch_function_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(now=100.0)
    monkeypatch.setattr(batcher_module, "time", clock)

    def broken(items: list[int]) -> Executed[int]:
        raise OSError("device lost")

    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", [broken])
    with anyio.fail_after(LIMIT):
        async with running(batcher):
            with pytest.raises(OSError, match="device lost"):
                await batcher.submit(1)
            clock.now = 1000.0
            assert not batcher.stuck(10.0)
