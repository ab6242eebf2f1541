"""Run the server: KServe v2 over HTTP (uvicorn) and, optionally, gRPC, sharing one core.

Stopping is graceful. On SIGTERM the server first reports not-ready (``/v2/health/ready`` 400,
every response ``Connection: close``) while it keeps answering for ``drain_delay`` seconds, so a
load balancer takes it out of rotation; then it stops accepting connections, finishes every
request already admitted, frees the models and exits. A second SIGTERM, or SIGINT (Ctrl-C), skips
the delay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from modelport.errors import ConfigError
from modelport.serve.app import create_app
from modelport.serve.core import InferenceCore, ServerOptions
from modelport.serve.repository import ModelRepository

if TYPE_CHECKING:
    from modelport.serve.grpc_service import GrpcServer

__all__ = ["LOG_LEVELS", "run_server"]

logger = logging.getLogger(__name__)

#: uvicorn's log levels.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def run_server(
    source: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    grpc_port: int | None = None,
    log_level: str = "warning",
    options: ServerOptions | None = None,
) -> None:
    """Serve a model file or a model repository folder until SIGTERM or SIGINT.

    The repository is scanned before any port is bound, so a malformed one fails at once; the
    models are loaded when the application starts. ``grpc_port`` also serves the KServe v2 gRPC
    protocol on that port.
    """
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"unknown log level {log_level!r} — use one of {', '.join(LOG_LEVELS)}")
    for what, number in (("port", port), ("gRPC port", grpc_port)):
        if number is not None and not 0 <= number <= 65535:
            raise ConfigError(f"{what} {number} is outside 0..65535 — pick a free TCP port")
    options = options or ServerOptions()
    _configure_logging(log_level)
    core = InferenceCore(ModelRepository(source), options)
    grpc_server: list[GrpcServer] = []

    async def start_grpc(core: InferenceCore) -> None:
        if grpc_port is None:
            return
        from modelport.serve.grpc_service import start_grpc_server  # grpc loads only when asked for

        grpc_server.append(await start_grpc_server(core, host, grpc_port, max_message_bytes=options.max_request_bytes))

    async def stop_grpc(core: InferenceCore) -> None:
        for server in grpc_server:
            await server.stop(30)  # running calls finish first

    app = create_app(core, on_startup=start_grpc, on_shutdown=stop_grpc)
    # lifespan="on": a model that fails to load stops the server instead of being skipped.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        access_log=False,  # modelport.access logs one structured line per request instead
        timeout_graceful_shutdown=60,
    )
    _DrainingServer(config, core, options.drain_delay).run()


def _configure_logging(level: str) -> None:
    """Print modelport's log (and its JSON access lines) next to uvicorn's, at the same level.

    The library never configures handlers; the server process is an application, as uvicorn is.
    """
    number = logging.DEBUG if level == "trace" else getattr(logging, level.upper())
    root = logging.getLogger("modelport")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(number)
    access = logging.getLogger("modelport.access")
    if not access.handlers:
        plain = logging.StreamHandler()
        plain.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(plain)
        access.propagate = False
    access.setLevel(number)


class _DrainingServer(uvicorn.Server):
    """uvicorn, with a not-ready period before a SIGTERM shutdown (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, core: InferenceCore, drain_delay: float) -> None:
        super().__init__(config)
        self.core = core
        self.drain_delay = drain_delay
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.core.draining or self._loop is None or self.drain_delay <= 0:
            super().handle_exit(sig, frame)
            return
        # Runs in the signal handler: only set a flag and schedule the real exit on the loop.
        self.core.begin_drain()
        self._loop.call_soon_threadsafe(self._loop.call_later, self.drain_delay, super().handle_exit, sig, frame)
