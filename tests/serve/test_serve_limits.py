"""The HTTP layer's limits and failure answers (413, 429 + Retry-After, 504, 503), statistics,
Prometheus metrics, the repository API, draining, disconnects and the structured access log."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request

from modelport.runners.base import Feeds, Outputs
from modelport.serve import ModelRepository, create_app, encode_request
from modelport.serve.app import _unless_disconnected
from modelport.serve.core import InferenceCore, ServerOptions

from .serve_models import mixed_model, write_version

pytestmark = pytest.mark.anyio


def make_app(root: Path, config: str = "", **options: Any) -> Starlette:
    write_version(root, "mixed", 1, mixed_model())
    (root / "mixed" / "config.yaml").write_text(config, encoding="utf-8")
    return create_app(ModelRepository(root), ServerOptions(**options))


@pytest.fixture
async def serving(tmp_path: Path) -> AsyncIterator[Any]:
    apps: list[tuple[Any, httpx.AsyncClient]] = []

    async def start(config: str = "", **options: Any) -> tuple[Starlette, httpx.AsyncClient]:
        app = make_app(tmp_path, config, **options)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://modelport")
        apps.append((lifespan, client))
        return app, client

    yield start
    for lifespan, client in apps:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


def body(rows: int = 1) -> tuple[bytes, dict[str, str]]:
    encoded = encode_request(
        {"x": np.ones((rows, 3), np.float32), "k": np.arange(rows, dtype=np.int64)}, binary=True, binary_output=True
    )
    return encoded.body, encoded.headers


def block_engine(app: Starlette, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make the model's engine block on its first call until released."""
    runner = app.state.core.repository.get("mixed").runner
    real = runner._infer
    entered, release = threading.Event(), threading.Event()

    def blocked(feeds: Feeds) -> Outputs:
        if not entered.is_set():
            entered.set()
            release.wait(10)
        return real(feeds)

    monkeypatch.setattr(runner, "_infer", blocked)
    return entered, release


async def until(event: threading.Event) -> None:
    with anyio.fail_after(10):
        while not event.is_set():
            await asyncio.sleep(0.005)


async def test_a_body_over_the_limit_is_413_with_the_limit(serving: Any) -> None:
    _, client = await serving(max_request_bytes=100)
    content, headers = body(rows=8)
    response = await client.post("/v2/models/mixed/infer", content=content, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"].startswith(f"the request body is {len(content)} bytes, over this server's limit")
    assert "limit of 100 bytes" in response.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        for start in range(0, len(content), 50):
            yield content[start : start + 50]

    streamed = await client.post("/v2/models/mixed/infer", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert "the request body is at least 150 bytes, over this server's limit of 100 bytes" in streamed.json()["error"]


async def test_a_full_queue_is_429_with_retry_after(serving: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app, client = await serving("max_queue_size: 1\n")
    entered, release = block_engine(app, monkeypatch)
    content, headers = body()
    running = asyncio.create_task(client.post("/v2/models/mixed/infer", content=content, headers=headers))
    await until(entered)
    queued = asyncio.create_task(client.post("/v2/models/mixed/infer", content=content, headers=headers))
    with anyio.fail_after(10):
        while app.state.core.statistics("mixed")["model_stats"][0]["pending"] == 0:
            await asyncio.sleep(0.005)
    refused = await client.post("/v2/models/mixed/infer", content=content, headers=headers)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "has 1 requests queued, its limit (max_queue_size)" in refused.json()["error"]
    release.set()
    assert (await running).status_code == 200
    assert (await queued).status_code == 200


async def test_a_request_over_its_timeout_is_504(serving: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app, client = await serving("timeout_ms: 30\n")
    entered, release = block_engine(app, monkeypatch)
    content, headers = body()
    running = asyncio.create_task(client.post("/v2/models/mixed/infer", content=content, headers=headers))
    await until(entered)
    late = await client.post("/v2/models/mixed/infer", content=content, headers=headers)
    assert late.status_code == 504
    assert "did not finish within 30 ms" in late.json()["error"]
    release.set()
    assert (await running).status_code == 504  # the first one also ran past 30 ms


async def test_a_bad_timeout_parameter_is_400(serving: Any) -> None:
    _, client = await serving()
    doc = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0, 0, 0]},
            {"name": "k", "datatype": "INT64", "shape": [1], "data": [1]},
        ],
        "parameters": {"timeout": "soon"},
    }
    response = await client.post("/v2/models/mixed/infer", json=doc)
    assert response.status_code == 400
    assert "request parameter 'timeout' must be a positive number of microseconds, got 'soon'" in response.text


async def test_statistics_and_metrics_endpoints(serving: Any) -> None:
    _, client = await serving("max_batch_size: 4\n")
    content, headers = body(rows=3)
    for _ in range(2):
        assert (await client.post("/v2/models/mixed/infer", content=content, headers=headers)).status_code == 200
    stats = (await client.get("/v2/models/mixed/stats")).json()["model_stats"]
    assert [(s["name"], s["version"], s["inference_count"], s["execution_count"]) for s in stats] == [
        ("mixed", "1", 6, 2)
    ]
    assert stats[0]["batch_stats"][0]["batch_size"] == 3
    assert stats[0]["inference_stats"]["success"]["count"] == 2
    assert (await client.get("/v2/models/stats")).json()["model_stats"][0]["name"] == "mixed"
    assert (await client.get("/v2/models/mixed/versions/1/stats")).json()["model_stats"][0]["version"] == "1"
    metrics = (await client.get("/metrics")).text
    assert 'modelport_inference_requests_total{model="mixed",outcome="success",version="1"} 2.0' in metrics
    assert 'modelport_inference_count_total{model="mixed",version="1"} 6.0' in metrics
    assert 'modelport_batch_size_bucket{le="4.0",model="mixed",version="1"} 2.0' in metrics


async def test_repository_endpoints(serving: Any) -> None:
    _, client = await serving()
    index = await client.post("/v2/repository/index")
    assert index.json() == [{"name": "mixed", "version": "1", "state": "READY", "reason": ""}]
    assert (await client.post("/v2/repository/models/mixed/unload")).status_code == 200
    assert (await client.post("/v2/repository/index", json={"ready": True})).json() == []
    content, headers = body()
    gone = await client.post("/v2/models/mixed/infer", content=content, headers=headers)
    assert gone.status_code == 404
    assert "not loaded — load it with POST /v2/repository/models/mixed/load" in gone.json()["error"]
    assert (await client.post("/v2/repository/models/mixed/load")).status_code == 200
    assert (await client.post("/v2/models/mixed/infer", content=content, headers=headers)).status_code == 200
    bad = await client.post("/v2/repository/index", content=b"[1]")
    assert bad.status_code == 400
    assert bad.json() == {"error": 'the repository index request must be {"ready": true|false}'}
    missing = await client.post("/v2/repository/models/nope/load")
    assert missing.status_code == 404


async def test_draining_reports_not_ready_and_closes_connections(serving: Any) -> None:
    app, client = await serving()
    content, headers = body()
    app.state.core.begin_drain()
    ready = await client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (400, {"ready": False})
    served = await client.post("/v2/models/mixed/infer", content=content, headers=headers)
    assert served.status_code == 200  # still answered
    assert served.headers["connection"] == "close"


async def test_access_log_is_one_json_line_per_request(serving: Any, caplog: pytest.LogCaptureFixture) -> None:
    _, client = await serving()
    content, headers = body()
    with caplog.at_level(logging.INFO, logger="modelport.access"):
        await client.post("/v2/models/mixed/versions/1/infer", content=content, headers=headers)
    (record,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "modelport.access"]
    assert record["path"] == "/v2/models/mixed/versions/1/infer"
    assert (record["status"], record["model"], record["version"]) == (200, "mixed", "1")
    assert record["bytes_in"] == len(content)
    assert record["ms"] >= 0


async def test_a_disconnected_client_cancels_its_queued_request() -> None:
    """_unless_disconnected cancels the work when the ASGI server reports http.disconnect."""
    started, cancelled = asyncio.Event(), asyncio.Event()
    disconnect = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def work() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "done"

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    waiting = asyncio.create_task(_unless_disconnected(request, work()))
    await started.wait()
    disconnect.set()
    with pytest.raises(ClientDisconnect):
        await waiting
    assert cancelled.is_set()


async def test_work_finishing_first_returns_its_result() -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    async def work() -> str:
        return "done"

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    assert await _unless_disconnected(request, work()) == "done"


def test_core_can_be_shared(tmp_path: Path) -> None:
    write_version(tmp_path, "mixed", 1, mixed_model())
    core = InferenceCore(ModelRepository(tmp_path))
    assert create_app(core).state.core is core
