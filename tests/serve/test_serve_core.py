"""InferenceCore with real ONNX Runtime sessions: batches that form, timeouts, stuck instances,
thread budgeting, the repository API, and hot reload that swaps versions without failing a request."""

from __future__ import annotations

import asyncio
import shutil
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from modelport.errors import ModelNotFoundError, RepositoryError, RequestTimeoutError
from modelport.runners.base import Feeds, Outputs
from modelport.serve import InferenceRequest
from modelport.serve.core import InferenceCore

from .serve_models import mixed_model, write_version

pytestmark = pytest.mark.anyio

Arrays = dict[str, np.ndarray[Any, Any]]
Reference = Callable[[Path, Arrays], Arrays]


def make_repo(root: Path, config: str = "", versions: tuple[int, ...] = (1,)) -> Path:
    for version in versions:
        write_version(root, "mixed", version, mixed_model(offset=version))
    (root / "mixed" / "config.yaml").write_text(config, encoding="utf-8")
    return root


def request(rows: int, seed: int = 0, **parameters: Any) -> InferenceRequest:
    rng = np.random.default_rng(seed)
    inputs = {
        "x": rng.standard_normal((rows, 3)).astype(np.float32),
        "k": rng.integers(-5, 5, size=rows, dtype=np.int64),
    }
    return InferenceRequest(inputs=inputs, parameters=parameters)


class Gate:
    """Wraps a runner's engine call so that the first call blocks until released."""

    def __init__(self, real: Callable[[Feeds], Outputs]) -> None:
        self.real = real
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []

    def __call__(self, feeds: Feeds) -> Outputs:
        self.batches.append(len(feeds["x"]))
        if len(self.batches) == 1:
            self.entered.set()
            self.release.wait(10)
        return self.real(feeds)


async def wait_for(event: threading.Event) -> None:
    with anyio.fail_after(10):
        while not event.is_set():
            await asyncio.sleep(0.005)


def gate(core: InferenceCore, monkeypatch: pytest.MonkeyPatch, version: int | None = None) -> Gate:
    runner = core.repository.get("mixed", version).runner
    wrapped = Gate(runner._infer)
    monkeypatch.setattr(runner, "_infer", wrapped)
    return wrapped


# batching ---------------------------------------------------------------------------------------


async def test_concurrent_requests_form_one_batch(
    tmp_path: Path, started: Callable[..., Any], reference: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the only instance is busy, 7 requests of 1-2 rows queue up; they then run as one
    batch of 10 rows (max_batch_size 16, a long delay) and each caller gets its own rows back."""
    root = make_repo(tmp_path, "max_batch_size: 16\ndynamic_batching:\n  max_queue_delay_ms: 20\n")
    core = await started(root)
    engine = gate(core, monkeypatch)
    first = asyncio.create_task(core.infer("mixed", None, request(1, seed=99)))
    await wait_for(engine.entered)
    requests = [request(1 + i % 2, seed=i) for i in range(7)]
    tasks = [asyncio.create_task(core.infer("mixed", None, r)) for r in requests]
    await asyncio.sleep(0.05)  # let every request reach the queue
    engine.release.set()
    results = await asyncio.gather(first, *tasks)
    assert engine.batches == [1, 10]
    path = root / "mixed" / "1" / "model.onnx"
    for req, result in zip(requests, results[1:], strict=True):
        expected = reference(path, dict(req.inputs))
        assert list(result.outputs) == ["y", "k_next", "positive"]
        for name, value in expected.items():
            np.testing.assert_allclose(result.outputs[name], value, rtol=0, atol=1e-6)
    stats = core.statistics("mixed")["model_stats"][0]
    assert [b["batch_size"] for b in stats["batch_stats"]] == [1, 10]
    assert (stats["inference_count"], stats["execution_count"]) == (11, 2)
    assert stats["inference_stats"]["success"]["count"] == 8


async def test_batching_is_off_by_default(
    tmp_path: Path, started: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    core = await started(make_repo(tmp_path, "max_batch_size: 16\n"))
    engine = gate(core, monkeypatch)
    first = asyncio.create_task(core.infer("mixed", None, request(1)))
    await wait_for(engine.entered)
    tasks = [asyncio.create_task(core.infer("mixed", None, request(2, seed=i))) for i in range(3)]
    await asyncio.sleep(0.05)
    engine.release.set()
    await asyncio.gather(first, *tasks)
    assert engine.batches == [1, 2, 2, 2]


# timeouts and stuck instances -------------------------------------------------------------------


async def test_a_request_over_its_timeout_is_dropped_from_the_queue(
    tmp_path: Path, started: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    core = await started(make_repo(tmp_path))
    engine = gate(core, monkeypatch)
    first = asyncio.create_task(core.infer("mixed", None, request(1)))
    await wait_for(engine.entered)
    with pytest.raises(RequestTimeoutError, match=r"request to model 'mixed' version 1 did not finish within 20 ms"):
        await core.infer("mixed", None, request(1, timeout=20_000))
    engine.release.set()
    await first
    await core.infer("mixed", None, request(2))
    assert engine.batches == [1, 2]  # the timed-out request never ran
    stats = core.statistics("mixed")["model_stats"][0]
    assert stats["timeouts"] == 1
    assert stats["inference_stats"]["success"]["count"] == 2


async def test_a_stuck_instance_makes_the_model_not_ready(
    tmp_path: Path, started: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    core = await started(make_repo(tmp_path), stuck_after=30.0)
    engine = gate(core, monkeypatch)
    clock = [1000.0]
    fake_time = types.SimpleNamespace(monotonic=lambda: clock[0], perf_counter_ns=__import__("time").perf_counter_ns)
    monkeypatch.setattr("modelport.serve.batcher.time", fake_time)
    task = asyncio.create_task(core.infer("mixed", None, request(1)))
    await wait_for(engine.entered)
    assert core.ready and core.model_ready("mixed")
    clock[0] += 31
    assert not core.model_ready("mixed")
    assert not core.ready
    engine.release.set()
    await task
    assert core.ready and core.model_ready("mixed")


# threads ----------------------------------------------------------------------------------------


async def test_unset_thread_counts_share_the_cores_between_instances(
    tmp_path: Path, started: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_repo(tmp_path, "instance_count: 2\n")
    write_version(tmp_path, "other", 1, mixed_model())
    (tmp_path / "other" / "config.yaml").write_text("instance_count: 2\nintra_op_threads: 3\n", encoding="utf-8")
    monkeypatch.setattr("modelport.serve.core.cpu_count", lambda: 8)
    core = await started(tmp_path)
    assert [r.intra_op_threads for r in core.repository.get("mixed").runners] == [2, 2]
    assert [r.intra_op_threads for r in core.repository.get("other").runners] == [3, 3]  # explicit wins


# repository API and hot reload ------------------------------------------------------------------


async def test_unload_and_load_a_model(tmp_path: Path, started: Callable[..., Any]) -> None:
    core = await started(make_repo(tmp_path))
    runner = core.repository.get("mixed").runner
    await core.unload_model("mixed")
    assert not runner.is_active
    assert core.repository_index() == [{"name": "mixed", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}]
    with pytest.raises(ModelNotFoundError, match=r"model 'mixed' is in repository .* but not loaded — load it with"):
        await core.infer("mixed", None, request(1))
    with pytest.raises(ModelNotFoundError, match=r"model 'mixed' is in repository"):
        await core.unload_model("mixed")
    await core.load_model("mixed")
    assert core.repository_index() == [{"name": "mixed", "version": "1", "state": "READY", "reason": ""}]
    result = await core.infer("mixed", None, request(1))
    assert result.model_version == "1"


async def test_loading_a_broken_config_keeps_the_old_one_serving(tmp_path: Path, started: Callable[..., Any]) -> None:
    root = make_repo(tmp_path)
    core = await started(root)
    (root / "mixed" / "config.yaml").write_text("instance_count: 0\n", encoding="utf-8")
    with pytest.raises(RepositoryError, match=r"config.yaml' is invalid: instance_count"):
        await core.load_model("mixed")
    assert (await core.infer("mixed", None, request(1))).model_version == "1"
    with pytest.raises(ModelNotFoundError, match=r"model 'nope' has no folder in repository"):
        await core.load_model("nope")


async def test_hot_reload_swaps_in_a_new_version_without_failing_a_request(
    tmp_path: Path, started: Callable[..., Any]
) -> None:
    root = make_repo(tmp_path)
    core = await started(root, poll_interval=0.05)
    old = core.repository.get("mixed")
    versions: list[str] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            versions.append((await core.infer("mixed", None, request(1))).model_version)

    clients = [asyncio.create_task(client()) for _ in range(3)]
    await asyncio.sleep(0.1)
    write_version(root, "mixed", 2, mixed_model(offset=2))
    with anyio.fail_after(20):
        while core.repository.versions("mixed") != [2]:
            await asyncio.sleep(0.02)
        while old.ready:
            await asyncio.sleep(0.02)
        marker = len(versions)
        while len(versions) < marker + 10:
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*clients)  # any failed request would raise here
    assert versions[0] == "1" and versions[-1] == "2"
    assert sorted(set(versions)) == ["1", "2"]
    assert [e["state"] for e in core.repository_index()] == ["UNAVAILABLE", "READY"]


async def test_hot_reload_keeps_serving_when_the_new_version_fails_to_load(
    tmp_path: Path, started: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    root = make_repo(tmp_path)
    core = await started(root, poll_interval=0.05)
    broken = root / "mixed" / "2" / "model.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"\x08\x07garbage")
    with anyio.fail_after(20):
        while not any(e["version"] == "2" and e["reason"] for e in core.repository_index()):
            await asyncio.sleep(0.02)
    entry = next(e for e in core.repository_index() if e["version"] == "2")
    assert entry["state"] == "UNAVAILABLE"
    assert "ONNX Runtime could not load model 'mixed'" in entry["reason"]
    assert core.repository.versions("mixed") == [1]
    assert (await core.infer("mixed", None, request(1))).model_version == "1"
    shutil.rmtree(broken.parent)
