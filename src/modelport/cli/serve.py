"""modelport serve MODEL_OR_REPO_OR_BUNDLE: KServe v2 over HTTP (and gRPC with --grpc-port).

A bundle (``.tar.gz`` from ``modelport pack``) is extracted into a private temporary folder and
verified against its manifest before anything loads; the folder is removed when the server stops.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from collections.abc import Iterator
from types import FrameType

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve a model or a repository over KServe v2 (HTTP, gRPC)")
    p.add_argument(
        "source",
        help="an .onnx file, a repository folder REPO/<name>/<version>/model.onnx, "
        "or a bundle written by `modelport pack` (.tar.gz)",
    )
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
    ray = p.add_argument_group("Ray Serve")
    ray.add_argument("--ray", action="store_true", help="deploy on Ray Serve (needs the 'ray' extra)")
    scale = ray.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, metavar="N", help="a fixed number of replicas (default 1)")
    scale.add_argument("--autoscale", metavar="MIN:MAX", help="let Ray Serve keep MIN to MAX replicas, following load")
    ray.add_argument("--ray-address", metavar="ADDRESS", help="join this Ray cluster (default: a local Ray, 127.0.0.1)")
    ray.add_argument(
        "--cpus-per-replica",
        type=float,
        default=1.0,
        metavar="N",
        help="CPUs reserved per replica (default %(default)s)",
    )
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
    if not args.ray and (args.replicas is not None or args.autoscale is not None or args.ray_address is not None):
        raise ConfigError("--replicas, --autoscale and --ray-address apply to Ray Serve — add --ray")
    if args.ray and args.grpc_port is not None:
        raise ConfigError("--grpc-port does not apply with --ray: Ray Serve's proxy serves HTTP — drop one of them")
    with _opened(args.source) as source:
        if args.ray:
            from modelport.serve.ray_serve import parse_autoscale, run_ray_serve

            run_ray_serve(
                source,
                host=args.host,
                port=args.port,
                options=options,
                replicas=args.replicas,
                autoscale=parse_autoscale(args.autoscale) if args.autoscale is not None else None,
                num_cpus=args.cpus_per_replica,
                address=args.ray_address,
            )
            return 0
        run_server(
            source,
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
            log_level=args.log_level,
            options=options,
        )
    return 0


@contextlib.contextmanager
def _opened(source: str) -> Iterator[str | os.PathLike[str]]:
    """The path to serve: a bundle is extracted and verified first (and removed afterwards)."""
    from modelport.pack.bundle import is_bundle, open_bundle

    if not is_bundle(source):
        yield source
        return
    with _sigterm_unwinds(), open_bundle(source) as root:
        yield root


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` so the extracted bundle is removed.

    uvicorn re-raises the SIGTERM it caught once it has shut down; with the default handler that
    kills the process before any ``finally`` runs.
    """

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
