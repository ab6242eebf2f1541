"""The KServe v2 HTTP server as a Starlette application over an :class:`InferenceCore`.

Routes (Open Inference Protocol, plus Triton's statistics and repository extensions)::

    GET  /v2/health/live                          200 while the process serves
    GET  /v2/health/ready                         200 when every model is loaded and none is stuck, 400 otherwise
    GET  /v2                                      server metadata
    GET  /v2/models/{m}[/versions/{v}]            model metadata (-1 marks a variable dimension)
    GET  /v2/models/{m}[/versions/{v}]/ready      model readiness
    POST /v2/models/{m}[/versions/{v}]/infer      inference, JSON or binary tensors
    GET  /v2/models[/{m}[/versions/{v}]]/stats    Triton-compatible statistics
    POST /v2/repository/index                     every model version on disk and its state
    POST /v2/repository/models/{m}/load|unload    load (or reload) and unload a model
    GET  /metrics                                 Prometheus metrics

Errors come back as ``{"error": "..."}``: a malformed request or bad feeds are 400, an unknown
model 404, a body over the size limit 413 (the limit in the message), a full queue 429 with
``Retry-After``, a model that is not loaded 503, a request over its timeout 504, anything else
500. Binary request bodies are decoded zero-copy (numpy views of the body); inference runs in the
model's instance threads, so the event loop only moves bytes. A client that disconnects while its
request waits cancels it. While the server drains, every response carries ``Connection: close``
so that clients reconnect elsewhere. One structured (JSON) line per request goes to the
``modelport.access`` logger at INFO.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelport.errors import (
    InputError,
    ModelNotFoundError,
    ModelNotReadyError,
    ModelportError,
    PayloadTooLargeError,
    ProtocolError,
    RepositoryError,
    RequestTimeoutError,
    ServerBusyError,
)
from modelport.serve.core import PLATFORM, SERVER_EXTENSIONS, InferenceCore, InferenceResult, ServerOptions
from modelport.serve.protocol import HEADER_LENGTH, encode_response, parse_request
from modelport.serve.repository import ModelRepository

__all__ = ["PLATFORM", "SERVER_EXTENSIONS", "create_app"]

logger = logging.getLogger(__name__)
access_log = logging.getLogger("modelport.access")

Endpoint = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")

# JSON bodies (and JSON outputs) bigger than this are parsed (encoded) in a worker thread, so a
# large JSON tensor does not stall the event loop; smaller ones are cheaper to do in place.
_INLINE_JSON_BYTES = 64 * 1024
_INLINE_JSON_ELEMENTS = 16 * 1024
# Binary tensor data in a request body starts on this boundary (see _read_body).
_ALIGN = 64


def create_app(
    source: ModelRepository | InferenceCore,
    options: ServerOptions | None = None,
    *,
    on_startup: Callable[[InferenceCore], Awaitable[Any]] | None = None,
    on_shutdown: Callable[[InferenceCore], Awaitable[Any]] | None = None,
) -> Starlette:
    """A Starlette application that serves a repository (or a core) over KServe v2 HTTP.

    The models are loaded when the application starts and freed when it stops; ``on_startup`` and
    ``on_shutdown`` run after loading and before freeing (the gRPC server hooks in there).
    """
    core = source if isinstance(source, InferenceCore) else InferenceCore(source, options)
    http = _Http(core, on_startup, on_shutdown)
    model_routes: list[tuple[str, Endpoint, str]] = [
        ("", http.model_metadata, "GET"),
        ("/ready", http.model_ready, "GET"),
        ("/infer", http.infer, "POST"),
        ("/stats", http.statistics, "GET"),
    ]
    routes = [
        Route("/v2/health/live", _guard(http, http.live), methods=["GET"]),
        Route("/v2/health/ready", _guard(http, http.ready), methods=["GET"]),
        Route("/v2", _guard(http, http.metadata), methods=["GET"]),
        Route("/v2/models/stats", _guard(http, http.statistics), methods=["GET"]),
        Route("/v2/repository/index", _guard(http, http.repository_index), methods=["POST"]),
        Route("/v2/repository/models/{model_name}/load", _guard(http, http.load), methods=["POST"]),
        Route("/v2/repository/models/{model_name}/unload", _guard(http, http.unload), methods=["POST"]),
        Route("/metrics", _guard(http, http.metrics), methods=["GET"]),
    ]
    for suffix, endpoint, method in model_routes:
        for prefix in (
            "/v2/models/{model_name}",
            "/v2/models/{model_name}/versions/{model_version}",
        ):
            routes.append(Route(prefix + suffix, _guard(http, endpoint), methods=[method]))
    app = Starlette(routes=routes, lifespan=http.lifespan, exception_handlers={HTTPException: _http_error})
    app.state.core = core
    return app


class _Http:
    """The routes, over one core."""

    def __init__(
        self,
        core: InferenceCore,
        on_startup: Callable[[InferenceCore], Awaitable[Any]] | None,
        on_shutdown: Callable[[InferenceCore], Awaitable[Any]] | None,
    ) -> None:
        self.core = core
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.core.start()
        try:
            if self._on_startup is not None:
                await self._on_startup(self.core)
            yield
        finally:
            try:
                if self._on_shutdown is not None:
                    await self._on_shutdown(self.core)
            finally:
                await self.core.stop()

    # health and metadata ----------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": self.core.live})

    async def ready(self, request: Request) -> Response:
        ready = self.core.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 400)

    async def metadata(self, request: Request) -> Response:
        return JSONResponse(self.core.server_metadata())

    async def model_metadata(self, request: Request) -> Response:
        name, version = _model_params(request)
        return JSONResponse(self.core.model_metadata(name, version))

    async def model_ready(self, request: Request) -> Response:
        name, version = _model_params(request)
        ready = self.core.model_ready(name, version)
        return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 400)

    # inference --------------------------------------------------------------------------------
    async def infer(self, request: Request) -> Response:
        name, version = _model_params(request)
        encoding = request.headers.get("content-encoding", "identity")
        if encoding != "identity":
            raise ProtocolError(f"Content-Encoding {encoding!r} is not supported — send the request uncompressed")
        body = await _read_body(request, self.core.options.max_request_bytes)
        header_length = request.headers.get(HEADER_LENGTH)
        if header_length is None and len(body) > _INLINE_JSON_BYTES:
            parsed = await asyncio.to_thread(parse_request, body, header_length)
        else:
            parsed = parse_request(body, header_length)
        result = await _unless_disconnected(request, self.core.infer(name, version, parsed))
        if _json_heavy(result):
            return await asyncio.to_thread(_response, result)
        return _response(result)

    async def statistics(self, request: Request) -> Response:
        name = request.path_params.get("model_name")
        version = request.path_params.get("model_version")
        return JSONResponse(self.core.statistics(name, version))

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.core.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # repository -------------------------------------------------------------------------------
    async def repository_index(self, request: Request) -> Response:
        body = await request.body()
        ready_only = False
        if body.strip():
            try:
                doc = json.loads(body)
            except json.JSONDecodeError as e:
                raise ProtocolError(f"the repository index request is not valid JSON: {e}") from e
            if not isinstance(doc, dict) or not isinstance(doc.get("ready", False), bool):
                raise ProtocolError('the repository index request must be {"ready": true|false}')
            ready_only = doc.get("ready", False)
        index = self.core.repository_index()
        if ready_only:
            index = [entry for entry in index if entry["state"] == "READY"]
        return JSONResponse(index)

    async def load(self, request: Request) -> Response:
        await self.core.load_model(request.path_params["model_name"])
        return Response(status_code=200)

    async def unload(self, request: Request) -> Response:
        await self.core.unload_model(request.path_params["model_name"])
        return Response(status_code=200)


def _model_params(request: Request) -> tuple[str, str | None]:
    params = request.path_params
    return params["model_name"], params.get("model_version")


async def _read_body(request: Request, limit: int) -> bytes | memoryview:
    """The request body, refused with :class:`PayloadTooLargeError` as soon as it passes ``limit`` bytes.

    A binary body of known length is read straight into a buffer placed so that its tensor data
    starts on a 64-byte boundary: numpy views of it need no aligning copy, and the chunks need no
    joining copy.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(_too_large(int(declared), limit), limit=limit)
    header = request.headers.get(HEADER_LENGTH, "")
    if declared is not None and declared.isdigit() and header.isdigit() and int(header) <= int(declared):
        return await _read_aligned(request, int(declared), int(header))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(_too_large(size, limit, at_least=True), limit=limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read_aligned(request: Request, size: int, header_length: int) -> memoryview:
    buffer = np.empty(size + _ALIGN, dtype=np.uint8)
    start = -(buffer.ctypes.data + header_length) % _ALIGN
    view = buffer.data[start : start + size]
    filled = 0
    async for chunk in request.stream():
        end = filled + len(chunk)
        if end > size:
            raise ProtocolError(f"the request body is longer than its Content-Length of {size} bytes")
        view[filled:end] = chunk
        filled = end
    if filled != size:
        raise ProtocolError(f"the request body has {filled} bytes, but its Content-Length says {size}")
    return view


def _too_large(size: int, limit: int, *, at_least: bool = False) -> str:
    seen = f"{'at least ' if at_least else ''}{size} bytes"
    return (
        f"the request body is {seen}, over this server's limit of {limit} bytes — send fewer rows per request, "
        "or start the server with a larger --max-request-bytes"
    )


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (a queued request is dropped).

    One watcher task per request waits for the ASGI ``http.disconnect`` message and cancels the
    request's own task; nothing polls.
    """
    handler = asyncio.current_task()
    assert handler is not None
    watcher = asyncio.get_running_loop().create_task(_cancel_on_disconnect(request, handler))
    try:
        return await work
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            if hasattr(handler, "uncancel"):  # Python 3.11+: this cancellation is handled here
                handler.uncancel()
            raise ClientDisconnect() from None
        raise
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(request: Request, task: asyncio.Task[Any]) -> None:
    await _disconnect(request)
    task.cancel()


async def _disconnect(request: Request) -> None:
    """Return when the client goes away (the ASGI server sends ``http.disconnect``)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _json_heavy(result: InferenceResult) -> bool:
    return any(name not in result.binary and a.size > _INLINE_JSON_ELEMENTS for name, a in result.outputs.items())


def _response(result: InferenceResult) -> Response:
    encoded = encode_response(
        result.outputs,
        model_name=result.model_name,
        model_version=result.model_version,
        request_id=result.id,
        binary=result.binary,
    )
    return Response(encoded.body, headers=encoded.headers)


# errors ---------------------------------------------------------------------------------------


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _error_response(error: Exception, request: Request) -> Response:
    """The protocol's answer to an error an endpoint raised."""
    if isinstance(error, ModelNotFoundError):
        return _error(404, str(error))
    if isinstance(error, ModelNotReadyError):
        return _error(503, str(error))
    if isinstance(error, PayloadTooLargeError):
        return _error(413, str(error))
    if isinstance(error, ProtocolError | InputError | RepositoryError):
        return _error(400, str(error))
    if isinstance(error, ServerBusyError):
        return _error(429, str(error), {"Retry-After": str(int(error.retry_after))})
    if isinstance(error, RequestTimeoutError):
        return _error(504, str(error))
    logger.exception("%s %s failed", request.method, request.url.path, exc_info=error)
    if isinstance(error, ModelportError):
        return _error(500, str(error))
    return _error(500, f"internal error: {type(error).__name__}: {error}")


def _guard(http: _Http, endpoint: Endpoint) -> Endpoint:
    """Turn the errors an endpoint raises into ``{"error": ...}`` responses; log the request."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        start = time.perf_counter()
        try:
            response = await endpoint(request)
        except ClientDisconnect:
            response = Response(status_code=499)  # nobody reads it; logged as nginx does
        except Exception as e:
            response = _error_response(e, request)
        if http.core.draining:
            response.headers["Connection"] = "close"
        if access_log.isEnabledFor(logging.INFO):
            _log_access(request, response, time.perf_counter() - start)
        return response

    return guarded


def _log_access(request: Request, response: Response, seconds: float) -> None:
    client = request.client
    record = {
        "ts": round(time.time(), 6),
        "client": f"{client.host}:{client.port}" if client else None,
        "method": request.method,
        "path": request.url.path,
        "status": response.status_code,
        "ms": round(seconds * 1000, 3),
        "bytes_in": int(request.headers.get("content-length") or 0),
        "bytes_out": len(response.body) if hasattr(response, "body") else None,
        "model": request.path_params.get("model_name"),
        "version": request.path_params.get("model_version"),
    }
    access_log.info("%s", json.dumps(record, separators=(",", ":")))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (unknown path, wrong method) in the protocol's error format."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.url.path} — see GET /v2 and /v2/models/<name>"
    else:
        message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)
