"""The Starlette app in-process: every route, JSON and binary inference against ONNX Runtime,
error responses, the lifespan, and concurrent requests running off the event loop."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette

from modelport.runners.base import Feeds, Outputs
from modelport.serve import (
    HEADER_LENGTH,
    ModelRepository,
    create_app,
    decode_response,
    encode_request,
)

pytestmark = pytest.mark.anyio

Arrays = dict[str, np.ndarray[Any, Any]]
Reference = Callable[[Path, Arrays], Arrays]


@pytest.fixture
def repository(repo_dir: Path) -> ModelRepository:
    return ModelRepository(repo_dir)


@pytest.fixture
def app(repository: ModelRepository) -> Starlette:
    return create_app(repository)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app with its lifespan running (models loaded)."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://modelport") as client,
    ):
        yield client


async def infer(client: httpx.AsyncClient, path: str, inputs: Arrays, **options: Any) -> tuple[httpx.Response, Arrays]:
    encoded = encode_request(inputs, **options)
    response = await client.post(path, content=encoded.body, headers=encoded.headers)
    assert response.status_code == 200, response.text
    decoded = decode_response(response.content, response.headers.get(HEADER_LENGTH))
    return response, decoded.outputs


def assert_outputs_equal(got: Arrays, expected: Arrays) -> None:
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value)


# health and metadata --------------------------------------------------------------------------


async def test_health(client: httpx.AsyncClient) -> None:
    live = await client.get("/v2/health/live")
    ready = await client.get("/v2/health/ready")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


async def test_server_metadata(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "modelport"
    assert isinstance(body["version"], str)
    assert "binary_tensor_data" in body["extensions"]


async def test_model_metadata(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/models/mixed")
    assert response.status_code == 200
    assert response.json() == {
        "name": "mixed",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "k", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "k_next", "datatype": "INT64", "shape": [-1]},
            {"name": "positive", "datatype": "BOOL", "shape": [-1]},
        ],
    }


async def test_versioned_model_metadata(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/models/text/versions/1")
    assert response.status_code == 200
    body = response.json()
    assert body["versions"] == ["1"]
    assert body["inputs"] == [{"name": "s", "datatype": "BYTES", "shape": [-1]}]


@pytest.mark.parametrize("path", ["/v2/models/mixed/ready", "/v2/models/mixed/versions/1/ready"])
async def test_model_ready(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert (response.status_code, response.json()) == (200, {"name": "mixed", "ready": True})


# inference ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
async def test_json_inference_matches_onnxruntime(
    client: httpx.AsyncClient, repo_dir: Path, reference: Reference, feeds: Arrays, version: int
) -> None:
    path = f"/v2/models/mixed/versions/{version}/infer"
    response, outputs = await infer(client, path, feeds, request_id="req-1")
    assert response.headers["content-type"] == "application/json"
    assert HEADER_LENGTH.lower() not in response.headers
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (
        "mixed",
        str(version),
        "req-1",
    )
    assert_outputs_equal(outputs, reference(repo_dir / "mixed" / str(version) / "model.onnx", feeds))


async def test_binary_inference_matches_onnxruntime(
    client: httpx.AsyncClient, repo_dir: Path, reference: Reference, feeds: Arrays
) -> None:
    response, outputs = await infer(client, "/v2/models/mixed/infer", feeds, binary=True, binary_output=True)
    assert response.headers["content-type"] == "application/octet-stream"
    assert int(response.headers[HEADER_LENGTH]) < len(response.content)
    header = json.loads(response.content[: int(response.headers[HEADER_LENGTH])])
    assert all("data" not in o for o in header["outputs"])
    assert_outputs_equal(outputs, reference(repo_dir / "mixed" / "2" / "model.onnx", feeds))


async def test_requested_outputs_mix_binary_and_json(
    client: httpx.AsyncClient, repo_dir: Path, reference: Reference, feeds: Arrays
) -> None:
    response, outputs = await infer(
        client,
        "/v2/models/mixed/versions/1/infer",
        feeds,
        binary={"k"},
        outputs={"positive": False, "y": True},
    )
    header = json.loads(response.content[: int(response.headers[HEADER_LENGTH])])
    assert [(o["name"], "data" in o) for o in header["outputs"]] == [
        ("positive", True),
        ("y", False),
    ]
    expected = reference(repo_dir / "mixed" / "1" / "model.onnx", feeds)
    assert_outputs_equal(outputs, {"positive": expected["positive"], "y": expected["y"]})


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_bytes_inference(client: httpx.AsyncClient, binary: bool) -> None:
    text = np.array(["héllo".encode(), b"", b"world"], dtype=object)
    _, outputs = await infer(client, "/v2/models/text/infer", {"s": text}, binary=binary, binary_output=binary)
    assert outputs["t"].tolist() == text.tolist()


async def test_nested_json_data(client: httpx.AsyncClient) -> None:
    request = {
        "inputs": [
            {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [[1.0, 2.0, 3.0]]},
            {"name": "k", "shape": [1], "datatype": "INT64", "data": [1]},
        ],
        "outputs": [{"name": "y"}],
    }
    response = await client.post("/v2/models/mixed/versions/1/infer", json=request)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [1, 3], "data": [2.0, 3.0, 4.0]}]


# errors ---------------------------------------------------------------------------------------


def _json_request(**inputs: tuple[str, list[int], Any]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": shape, "data": data}
            for name, (datatype, shape, data) in inputs.items()
        ]
    }


_GOOD = {"x": ("FP32", [1, 3], [1, 2, 3]), "k": ("INT64", [1], [4])}


@pytest.mark.parametrize(
    ("path", "request_body", "status", "match"),
    [
        (
            "/v2/models/nope/infer",
            _json_request(**_GOOD),
            404,
            r"model 'nope' is not in repository .*; it serves 'mixed', 'text'",
        ),
        (
            "/v2/models/mixed/versions/9/infer",
            _json_request(**_GOOD),
            404,
            r"model 'mixed' has no version '9' being served — served versions: 1, 2",
        ),
        (
            "/v2/models/mixed/infer",
            _json_request(**_GOOD, z=("FP32", [1], [0])),
            400,
            r"model 'mixed' version 2 has no input named 'z'; its inputs are 'x', 'k'",
        ),
        (
            "/v2/models/mixed/infer",
            _json_request(x=_GOOD["x"]),
            400,
            r"model 'mixed' version 2 needs input 'k', which was not given",
        ),
        (
            "/v2/models/mixed/infer",
            _json_request(x=_GOOD["x"], k=("INT32", [1], [4])),
            400,
            r"input 'k' has dtype int32, but the model expects int64 — convert it",
        ),
        (
            "/v2/models/mixed/infer",
            _json_request(x=("FP32", [3], [1, 2, 3]), k=_GOOD["k"]),
            400,
            r"input 'x' has rank 1 \(shape \[3\]\), but the model expects rank 2 \[batch, 3\]",
        ),
        (
            "/v2/models/mixed/infer",
            _json_request(x=("FP32", [1, 4], [1, 2, 3, 4]), k=_GOOD["k"]),
            400,
            r"input 'x' has size 4 on axis 1 .* but the model fixes that axis to 3",
        ),
        (
            "/v2/models/mixed/infer",
            _json_request(x=("FP32", [9, 3], [0] * 27), k=("INT64", [9], [0] * 9)),
            400,
            r"input 'x' of model 'mixed' version 2 has batch size 9 .* max_batch_size is 8",
        ),
        (
            "/v2/models/mixed/infer",
            {"inputs": [{"name": "x", "datatype": "FP32", "data": [1, 2, 3]}]},
            400,
            r"input 'x' has no 'shape' field, which is required",
        ),
        ("/v2/models/mixed/infer", {"id": "a"}, 400, r"the request has no 'inputs' field"),
        (
            "/v2/models/mixed/infer",
            {**_json_request(**_GOOD), "outputs": [{"name": "score"}]},
            400,
            r"model 'mixed' version 2 has no output named 'score'; its outputs are 'y', 'k_next'",
        ),
        (
            "/v2/models/mixed/infer",
            _json_request(x=("FP32", [2, 3], [0] * 6), k=("INT64", [3], [0] * 3)),
            400,
            r"the inputs of model 'mixed' version 2 disagree on the batch size \(axis 0\): 'x': 2, 'k': 3",
        ),
    ],
)
async def test_inference_errors(
    client: httpx.AsyncClient, path: str, request_body: Any, status: int, match: str
) -> None:
    response = await client.post(path, json=request_body)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]
    assert re.search(match, response.json()["error"]), response.json()["error"]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/mixed/infer", content=b'{"inputs": [}')
    assert response.status_code == 400
    assert response.json()["error"].startswith("the request is not valid JSON: Expecting value")


async def test_compressed_requests_are_refused(client: httpx.AsyncClient, feeds: Arrays) -> None:
    encoded = encode_request(feeds)
    headers = {"Content-Encoding": "gzip"}
    response = await client.post("/v2/models/mixed/infer", content=encoded.body, headers=headers)
    assert response.status_code == 400
    assert response.json() == {"error": "Content-Encoding 'gzip' is not supported — send the request uncompressed"}


async def test_binary_body_shorter_than_its_header_says(client: httpx.AsyncClient, feeds: Arrays) -> None:
    encoded = encode_request(feeds, binary=True)
    truncated = encoded.body[:-5]
    response = await client.post("/v2/models/mixed/infer", content=truncated, headers=encoded.headers)
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        "input 'k' declares binary_data_size 24 at offset 36 of the binary data, but only 55 "
        "bytes follow the JSON header"
    )


async def test_header_length_beyond_the_body(client: httpx.AsyncClient, feeds: Arrays) -> None:
    encoded = encode_request(feeds, binary=True)
    headers = {HEADER_LENGTH: str(len(encoded.body) + 1)}
    response = await client.post("/v2/models/mixed/infer", content=encoded.body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == (
        f"{HEADER_LENGTH} is {len(encoded.body) + 1}, but the request body has "
        f"{len(encoded.body)} bytes — the header must be the length of the JSON part, which "
        "the body must contain"
    )


async def test_unknown_model_metadata_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/text/versions/3/ready"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "error" in response.json()


async def test_unknown_route_and_method_answer_in_the_error_format(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.get("/v2/models/mixed/explain")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no route /v2/models/mixed/explain — see GET /v2 and /v2/models/<name>"}
    wrong = await client.get("/v2/models/mixed/infer")
    assert wrong.status_code == 405
    assert wrong.json() == {"error": "GET /v2/models/mixed/infer: Method Not Allowed"}
    assert wrong.headers["allow"] == "POST"


# lifespan -------------------------------------------------------------------------------------


async def test_models_are_loaded_on_startup_and_freed_on_shutdown(
    app: Starlette, repository: ModelRepository, feeds: Arrays
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://modelport") as client:
        assert not repository.ready
        not_ready = await client.get("/v2/health/ready")
        assert (not_ready.status_code, not_ready.json()) == (400, {"ready": False})
        model_ready = await client.get("/v2/models/mixed/ready")
        assert (model_ready.status_code, model_ready.json()) == (
            400,
            {"name": "mixed", "ready": False},
        )
        encoded = encode_request(feeds)
        refused = await client.post("/v2/models/mixed/infer", content=encoded.body)
        assert refused.status_code == 503
        assert refused.json() == {"error": "model 'mixed' version 2 is not loaded — the server is starting or stopping"}
        metadata = await client.get("/v2/models/mixed")
        assert metadata.status_code == 503

        async with app.router.lifespan_context(app):
            assert repository.ready
            assert (await client.get("/v2/health/ready")).status_code == 200
            assert (await client.post("/v2/models/mixed/infer", content=encoded.body)).is_success
        assert not repository.ready
        assert (await client.get("/v2/health/ready")).status_code == 400


# concurrency ----------------------------------------------------------------------------------


async def test_concurrent_requests_run_in_parallel_off_the_event_loop(
    app: Starlette,
    repository: ModelRepository,
    client: httpx.AsyncClient,
    repo_dir: Path,
    reference: Reference,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """32 requests with distinct data at once: each gets its own answer, and up to
    instance_count (4) inferences run at the same time in the model's thread pool."""
    runners = repository.get("mixed", 2).runners
    assert len(runners) == 4
    lock = threading.Lock()
    running = peak = 0
    loop_threads: set[int] = set()

    def slow(real_infer: Callable[[Feeds], Outputs], feeds: Feeds) -> Outputs:
        nonlocal running, peak
        loop_threads.add(threading.get_ident())
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.03)
            return real_infer(feeds)
        finally:
            with lock:
                running -= 1

    for runner in runners:
        monkeypatch.setattr(runner, "_infer", functools.partial(slow, runner._infer))
    rng = np.random.default_rng(1)
    batches: list[Arrays] = [
        {
            "x": rng.standard_normal((i % 5 + 1, 3)).astype(np.float32),
            "k": rng.integers(-9, 9, size=i % 5 + 1, dtype=np.int64),
        }
        for i in range(32)
    ]
    event_loop_thread = threading.get_ident()
    results = await asyncio.gather(
        *(
            infer(client, "/v2/models/mixed/infer", b, binary=i % 2 == 0, binary_output=i % 3 == 0)
            for i, b in enumerate(batches)
        )
    )
    path = repo_dir / "mixed" / "2" / "model.onnx"
    for batch, (_, outputs) in zip(batches, results, strict=True):
        assert_outputs_equal(outputs, reference(path, batch))
    assert peak == 4
    assert event_loop_thread not in loop_threads
    assert len(loop_threads) == 4
