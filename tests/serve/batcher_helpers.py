"""Helpers shared by the batcher and statistics tests: a gate that holds a batch function in its
instance thread, a hand-set clock for the batcher, and a bounded wait for the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import anyio

LIMIT = 5.0  # seconds: bound on a test that would otherwise hang, never an expectation


class Gate:
    """Holds a batch function inside its instance thread until the test opens it."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inside = asyncio.Event()
        self._open = threading.Event()

    def hold(self) -> None:
        """Called in the instance thread: announce the batch, then wait for :meth:`open`."""
        self._loop.call_soon_threadsafe(self._inside.set)
        if not self._open.wait(LIMIT * 2):
            raise RuntimeError("the test never opened the gate")

    async def entered(self) -> None:
        with anyio.fail_after(LIMIT):
            await self._inside.wait()

    def open(self) -> None:
        self._open.set()


class Clock:
    """Stands in for the ``time`` module inside the batcher: ``monotonic`` and ``perf_counter_ns`` set by hand
    (``ns=None`` keeps the real ``perf_counter_ns``)."""

    def __init__(self, now: float = 100.0, ns: int | None = None) -> None:
        self.now = now
        self.ns = ns

    def monotonic(self) -> float:
        return self.now

    def perf_counter_ns(self) -> int:
        return self.ns if self.ns is not None else time.perf_counter_ns()


async def settle(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop run what is ready until ``condition`` holds (bounded by rounds, not time)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"the event loop settled without this happening: {what}")
