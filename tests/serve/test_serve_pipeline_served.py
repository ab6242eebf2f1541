"""A served pipeline end to end: PNG bytes in, decoded and resized by the server, the model run,
softmax/top-k with labels out; per-stage statistics; a bad image fails only its own request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette

from modelport.ir.serde import save
from modelport.serve import HEADER_LENGTH, ModelRepository, create_app, decode_response, encode_request

from .serve_models import LABELS, classifier, expected_top, png

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    save(classifier(), tmp_path / "classify" / "1" / "model.onnx")
    (tmp_path / "classify" / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    (tmp_path / "classify" / "config.yaml").write_text(
        "max_batch_size: 8\n"
        "dynamic_batching: {max_queue_delay_ms: 5}\n"
        "pipeline:\n"
        "  preprocess:\n"
        "    - {kind: image, input: image, size: [8, 8], resize: stretch, mean: [0, 0, 0], std: [1, 1, 1]}\n"
        "  postprocess:\n"
        "    - {kind: classification, top_k: 2, labels: labels.txt}\n",
        encoding="utf-8",
    )
    app = create_app(ModelRepository(tmp_path))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://modelport") as http,
    ):
        yield app, http


async def post(http: httpx.AsyncClient, images: list[bytes]) -> httpx.Response:
    tensor = np.empty(len(images), dtype=object)
    tensor[:] = images
    encoded = encode_request({"image": tensor}, binary=True, binary_output=True)
    return await http.post("/v2/models/classify/infer", content=encoded.body, headers=encoded.headers)


async def test_png_bytes_in_labels_out(client: tuple[Starlette, httpx.AsyncClient]) -> None:
    app, http = client
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, size=(16, 12, 3), dtype=np.uint8) for _ in range(5)]
    responses = await asyncio.gather(
        *(post(http, [png(p)]) for p in pictures[:3]), post(http, [png(p) for p in pictures[3:]])
    )
    got: list[tuple[np.ndarray[Any, Any], list[bytes]]] = []
    for response in responses:
        assert response.status_code == 200, response.text
        outputs = decode_response(response.content, response.headers.get(HEADER_LENGTH)).outputs
        assert set(outputs) == {"scores", "indices", "labels"}
        got += [(outputs["scores"][i], list(outputs["labels"][i])) for i in range(len(outputs["scores"]))]
    for picture, (scores, labels) in zip(pictures, got, strict=True):
        want_scores, want_labels = expected_top(picture, 2)
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=2e-6)
        assert [label.decode() for label in labels] == want_labels
    stats = app.state.core.statistics("classify")["model_stats"][0]
    assert set(stats["stage_stats"]) == {"preprocess.image", "postprocess.classification"}
    assert stats["stage_stats"]["preprocess.image"]["count"] >= 1
    assert stats["inference_count"] == 5


async def test_metadata_shows_what_clients_send(client: tuple[Starlette, httpx.AsyncClient]) -> None:
    _, http = client
    metadata = (await http.get("/v2/models/classify")).json()
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in metadata["outputs"]] == ["scores", "indices", "labels"]


async def test_a_bad_image_fails_only_its_own_request(client: tuple[Starlette, httpx.AsyncClient]) -> None:
    _, http = client
    good = png(np.zeros((8, 8, 3), np.uint8))
    bad, fine = await asyncio.gather(post(http, [b"not an image"]), post(http, [good]))
    assert bad.status_code == 400
    assert "preprocess.image" in bad.json()["error"]
    assert fine.status_code == 200
