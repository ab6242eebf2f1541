"""The peer servers of benchmarks/serve_vs_peers.py: a hand-written FastAPI app and a LitServe API.

Each serves one ONNX model with the ONNX Runtime session settings serve_vs_peers.py passes: those
modelport's repository gives the model (CPU provider, graph optimizations ``ORT_ENABLE_ALL``,
intra-op threads budgeted to the cores, any session config entries), so the comparison is of
serving, not of engines. Without options, ONNX Runtime's defaults.
Both are written the way their documentation shows, with the cheapest encoding each supports well:

* **FastAPI** (``POST /predict``): the body is the raw float32 image (``application/octet-stream``,
  shape fixed by the model, batch 1); ``session.run`` goes to the thread pool with
  ``run_in_threadpool`` (anyio's default limit of 40 threads, so concurrent requests run
  concurrently in the one session); the response is the raw float32 logits. No JSON at all: cheaper
  than the KServe binary format modelport parses.
* **LitServe** (``POST /predict``): ``ls.LitAPI`` with ``decode_request`` / ``predict`` /
  ``encode_response`` and default settings (one inference worker process, one API server process,
  ``max_batch_size=1``, queues from a multiprocessing manager). LitServe's request handler reads
  JSON (or a form), so the image travels as base64 in ``{"input": "..."}`` and the logits come back
  as ``{"output": "<base64>"}`` — the cheapest encoding it takes without a custom spec.

Run: ``python benchmarks/_serve_peers.py fastapi|litserve MODEL.onnx PORT [--intra-op-threads N]
[--inter-op-threads N] [--graph-optimization all] [--session-config KEY=VALUE ...]`` (binds 127.0.0.1). Ready
when ``GET /health`` answers 200. LitServe starts its inference worker with the ``spawn`` method,
which unpickles the LitAPI subclass by its module-level name: that is why ``litserve`` is imported
at the top of this script rather than inside a function. No ``from __future__ import annotations``
here: FastAPI and LitServe read the endpoints' annotations at run time.
"""

import argparse
import base64
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import litserve as ls  # type: ignore[import-untyped]
import numpy as np

logger = logging.getLogger(__name__)

PEERS = ("fastapi", "litserve")


@dataclass(frozen=True)
class SessionSettings:
    """What serve_vs_peers.py passes so that the peers' session is set up as modelport's."""

    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    graph_optimization: str = "all"
    config: tuple[tuple[str, str], ...] = ()


_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED"}


class Predictor:
    """One ONNX Runtime session for a one-input, one-output model with a batch axis."""

    def __init__(self, model: str, settings: SessionSettings) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _LEVELS.get(settings.graph_optimization, "ORT_ENABLE_ALL")
        )
        if settings.intra_op_threads is not None:
            options.intra_op_num_threads = settings.intra_op_threads
        if settings.inter_op_threads is not None:
            options.inter_op_num_threads = settings.inter_op_threads
        for key, value in settings.config:
            options.add_session_config_entry(key, value)
        self.session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        (spec,) = self.session.get_inputs()
        self.input_name = spec.name
        self.shape = (1, *spec.shape[1:])

    def run(self, image: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        output: np.ndarray[Any, Any] = self.session.run(None, {self.input_name: image})[0]
        return output

    def run_bytes(self, body: bytes) -> bytes:
        """Raw float32 image in, raw float32 output out."""
        return self.run(np.frombuffer(body, dtype=np.float32).reshape(self.shape)).tobytes()


# --------------------------------------------------------------------------------------------------
# FastAPI + uvicorn
# --------------------------------------------------------------------------------------------------


def fastapi_app(model: str, settings: SessionSettings) -> Any:
    from fastapi import FastAPI, Request, Response
    from fastapi.concurrency import run_in_threadpool

    predictors: list[Predictor] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        predictors.append(Predictor(model, settings))
        yield
        predictors.clear()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ready": bool(predictors)}

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        body = await request.body()
        logits = await run_in_threadpool(predictors[0].run_bytes, body)
        return Response(content=logits, media_type="application/octet-stream")

    return app


def serve_fastapi(model: str, port: int, settings: SessionSettings) -> None:
    import uvicorn

    uvicorn.run(fastapi_app(model, settings), host="127.0.0.1", port=port, log_level="warning")


# --------------------------------------------------------------------------------------------------
# LitServe
# --------------------------------------------------------------------------------------------------


class CnnLitAPI(ls.LitAPI):  # type: ignore[misc]  # litserve ships no type information
    """The LitServe way: setup / decode_request / predict / encode_response."""

    def __init__(self, model: str, settings: SessionSettings) -> None:
        super().__init__()
        self.model_path = model
        self.settings = settings

    def setup(self, device: str) -> None:
        self.predictor = Predictor(self.model_path, self.settings)

    # No annotation on purpose: LitServe reads it to choose how to parse the body, and without one
    # it reads the JSON (``await request.json()``), as its documentation's examples do.
    def decode_request(self, request) -> np.ndarray[Any, Any]:  # type: ignore[no-untyped-def]
        raw = base64.b64decode(request["input"])
        return np.frombuffer(raw, dtype=np.float32).reshape(self.predictor.shape)

    def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return self.predictor.run(x)

    def encode_response(self, output: np.ndarray[Any, Any]) -> dict[str, str]:
        return {"output": base64.b64encode(output.tobytes()).decode("ascii")}


def serve_litserve(model: str, port: int, settings: SessionSettings) -> None:
    server = ls.LitServer(CnnLitAPI(model, settings), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("peer", choices=PEERS)
    parser.add_argument("model", help="the .onnx file to serve")
    parser.add_argument("port", type=int, help="TCP port on 127.0.0.1")
    parser.add_argument("--intra-op-threads", type=int, help="default: ONNX Runtime's (one per physical core)")
    parser.add_argument("--inter-op-threads", type=int)
    parser.add_argument("--graph-optimization", choices=("disable", "basic", "extended", "all"), default="all")
    parser.add_argument("--session-config", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    pairs = [entry.partition("=") for entry in args.session_config]
    bad = [entry for entry, (_, sep, _) in zip(args.session_config, pairs, strict=True) if not sep]
    if bad:
        parser.error(f"--session-config takes KEY=VALUE, got {bad}")
    args.settings = SessionSettings(
        args.intra_op_threads, args.inter_op_threads, args.graph_optimization, tuple((k, v) for k, _, v in pairs)
    )
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logger.info("serving %s with %s on port %d (%s)", args.model, args.peer, args.port, args.settings)
    if args.peer == "fastapi":
        serve_fastapi(args.model, args.port, args.settings)
    else:
        serve_litserve(args.model, args.port, args.settings)


if __name__ == "__main__":
    main(sys.argv[1:])
