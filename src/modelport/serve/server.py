"""Run the KServe v2 HTTP server with uvicorn."""

from __future__ import annotations

import os

import uvicorn

from modelport.errors import ConfigError
from modelport.serve.app import create_app
from modelport.serve.repository import ModelRepository

__all__ = ["LOG_LEVELS", "run_server"]

#: uvicorn's log levels.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def run_server(
    source: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
) -> None:
    """Serve a model file or a model repository folder until the process is interrupted.

    The repository is scanned before the port is bound, so a malformed one fails at once; the
    models are loaded when the application starts. Blocks until SIGINT or SIGTERM.
    """
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"unknown log level {log_level!r} — use one of {', '.join(LOG_LEVELS)}")
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is outside 0..65535 — pick a free TCP port")
    repository = ModelRepository(source)
    app = create_app(repository)

    # lifespan="on": a model that fails to load stops the server instead of being skipped.
    uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="on")
