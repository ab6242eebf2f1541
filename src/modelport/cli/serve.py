"""modelport serve MODEL_OR_REPO: KServe v2 over HTTP (and gRPC with --grpc-port)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve a model or a repository over KServe v2 (HTTP, gRPC)")
    p.add_argument("source", help="an .onnx file or a repository folder REPO/<name>/<version>/model.onnx")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default %(default)s)")
    p.add_argument("--grpc-port", type=int, default=None, help="also serve KServe v2 gRPC on this port")
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=64 * 1024 * 1024,
        help="largest request body accepted; larger ones get 413 (default %(default)s)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="re-read the repository this often and hot-reload changed models (default: off)",
    )
    p.add_argument(
        "--stuck-after",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a model whose batch runs longer than this reports not-ready (default %(default)s)",
    )
    p.add_argument(
        "--drain-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="after SIGTERM, keep answering while not-ready this long before closing (default %(default)s)",
    )
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modelport.errors import ConfigError
    from modelport.serve.core import ServerOptions
    from modelport.serve.server import run_server

    for flag, value in (("--max-request-bytes", args.max_request_bytes), ("--stuck-after", args.stuck_after)):
        if value <= 0:
            raise ConfigError(f"{flag} must be positive, got {value}")
    for flag, value in (("--poll-interval", args.poll_interval), ("--drain-delay", args.drain_delay)):
        if value is not None and value < 0:
            raise ConfigError(f"{flag} must not be negative, got {value}")
    options = ServerOptions(
        max_request_bytes=args.max_request_bytes,
        poll_interval=args.poll_interval or None,
        stuck_after=args.stuck_after,
        drain_delay=args.drain_delay,
    )
    run_server(
        args.source,
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        log_level=args.log_level,
        options=options,
    )
    return 0
