"""The KServe v2 HTTP server as a Starlette application.

Routes (Open Inference Protocol)::

    GET  /v2/health/live                          200 while the process serves
    GET  /v2/health/ready                         200 once every model version is loaded
    GET  /v2                                      server metadata
    GET  /v2/models/{m}[/versions/{v}]            model metadata (-1 marks a variable dimension)
    GET  /v2/models/{m}[/versions/{v}]/ready      model readiness
    POST /v2/models/{m}[/versions/{v}]/infer      inference, JSON or binary tensors

Models are loaded when the application starts (its lifespan) and freed when it stops. Each model
version gets its own thread pool of ``instance_count`` threads; a request is parsed, validated,
run and encoded there, so the event loop only moves bytes. Errors come back as
``{"error": "..."}``: a malformed request or bad feeds are 400, an unknown model or version 404,
a model that is not loaded 503, anything else 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelport import __version__
from modelport.errors import InputError, ModelNotFoundError, ModelportError, ProtocolError
from modelport.ir.specs import TensorSpec
from modelport.runners.base import check_feeds
from modelport.serve.protocol import HEADER_LENGTH, datatype_of, encode_response, parse_request
from modelport.serve.repository import ModelRepository, ServedModel

__all__ = ["PLATFORM", "SERVER_EXTENSIONS", "create_app"]

logger = logging.getLogger(__name__)

#: The platform reported in model metadata (the name Triton uses for ONNX Runtime models).
PLATFORM = "onnxruntime_onnx"
#: Protocol extensions this server implements, advertised in the server metadata.
SERVER_EXTENSIONS = ("binary_tensor_data",)

Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(repository: ModelRepository) -> Starlette:
    """A Starlette application that serves ``repository`` over the KServe v2 HTTP protocol.

    The repository is loaded when the application starts and unloaded when it stops.
    """
    server = _Server(repository)
    model_routes: list[tuple[str, Endpoint, str]] = [
        ("", server.model_metadata, "GET"),
        ("/ready", server.model_ready, "GET"),
        ("/infer", server.infer, "POST"),
    ]
    routes = [
        Route("/v2/health/live", _guard(server.live), methods=["GET"]),
        Route("/v2/health/ready", _guard(server.ready), methods=["GET"]),
        Route("/v2", _guard(server.metadata), methods=["GET"]),
    ]
    for suffix, endpoint, method in model_routes:
        for prefix in (
            "/v2/models/{model_name}",
            "/v2/models/{model_name}/versions/{model_version}",
        ):
            routes.append(Route(prefix + suffix, _guard(endpoint), methods=[method]))
    return Starlette(
        routes=routes,
        lifespan=server.lifespan,
        exception_handlers={HTTPException: _http_error},
    )


class _Server:
    """The state behind the routes: the repository and one thread pool per model version."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        self.pools: dict[tuple[str, int], ThreadPoolExecutor] = {}

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.repository.load()
        try:
            for model in self.repository:
                self.pools[model.name, model.version] = ThreadPoolExecutor(
                    max_workers=model.config.instance_count,
                    thread_name_prefix=f"modelport-{model.name}-{model.version}",
                )
            yield
        finally:
            pools, self.pools = self.pools, {}
            for pool in pools.values():
                pool.shutdown(wait=True)
            self.repository.unload()

    # health and metadata ----------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = bool(self.pools) and self.repository.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 400)

    async def metadata(self, request: Request) -> Response:
        return JSONResponse({"name": "modelport", "version": __version__, "extensions": list(SERVER_EXTENSIONS)})

    async def model_metadata(self, request: Request) -> Response:
        model = self._model(request)
        if not model.ready:
            return _not_loaded(model)
        versioned = "model_version" in request.path_params
        versions = [model.version] if versioned else self.repository.versions(model.name)
        runner = model.runner
        return JSONResponse(
            {
                "name": model.name,
                "versions": [str(v) for v in versions],
                "platform": PLATFORM,
                "inputs": [_tensor_metadata(spec) for spec in runner.inputs],
                "outputs": [_tensor_metadata(spec) for spec in runner.outputs],
            }
        )

    async def model_ready(self, request: Request) -> Response:
        model = self._model(request)
        ready = model.ready and (model.name, model.version) in self.pools
        return JSONResponse({"name": model.name, "ready": ready}, status_code=200 if ready else 400)

    # inference --------------------------------------------------------------------------------
    async def infer(self, request: Request) -> Response:
        model = self._model(request)
        pool = self.pools.get((model.name, model.version))
        if pool is None or not model.ready:
            return _not_loaded(model)
        encoding = request.headers.get("content-encoding", "identity")
        if encoding != "identity":
            raise ProtocolError(f"Content-Encoding {encoding!r} is not supported — send the request uncompressed")
        body = await request.body()
        header_length = request.headers.get(HEADER_LENGTH)
        work = functools.partial(_infer, model, body, header_length)
        return await asyncio.get_running_loop().run_in_executor(pool, work)

    def _model(self, request: Request) -> ServedModel:
        params = request.path_params
        return self.repository.get(params["model_name"], params.get("model_version"))


def _infer(model: ServedModel, body: bytes, header_length: str | None) -> Response:
    """Parse, validate, run and encode one request (in the model's thread pool)."""
    parsed = parse_request(body, header_length)
    runner = model.runner
    selected = parsed.select_outputs([s.name for s in runner.outputs], model_name=model.label)
    check_feeds(runner.inputs, parsed.inputs, model_name=model.label)
    model.check_batch(parsed.inputs)
    results = runner.infer(parsed.inputs, check=False)
    encoded = encode_response(
        {o.name: results[o.name] for o in selected},
        model_name=model.name,
        model_version=str(model.version),
        request_id=parsed.id,
        binary={o.name for o in selected if o.binary},
    )
    return Response(encoded.body, headers=encoded.headers)


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    # An unknown rank cannot be written as a list of dimensions; it is reported as one
    # variable dimension.
    dims = spec.shape if spec.shape is not None else (None,)
    return {
        "name": spec.name,
        "datatype": datatype_of(spec.dtype),
        "shape": [d if isinstance(d, int) else -1 for d in dims],
    }


# errors ---------------------------------------------------------------------------------------


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _not_loaded(model: ServedModel) -> Response:
    return _error(503, f"{model.label} is not loaded — the server is starting or stopping")


def _guard(endpoint: Endpoint) -> Endpoint:
    """Turn the errors an endpoint raises into ``{"error": ...}`` responses."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ModelNotFoundError as e:
            return _error(404, str(e))
        except (ProtocolError, InputError) as e:
            return _error(400, str(e))
        except ModelportError as e:
            logger.exception("%s %s failed", request.method, request.url.path)
            return _error(500, str(e))
        except Exception as e:
            logger.exception("%s %s failed", request.method, request.url.path)
            return _error(500, f"internal error: {type(e).__name__}: {e}")

    return guarded


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (unknown path, wrong method) in the protocol's error format."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.url.path} — see GET /v2 and /v2/models/<name>"
    else:
        message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)
