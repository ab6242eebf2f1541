"""modelport serve MODEL_OR_REPO: KServe v2 over HTTP."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve a model or a repository over KServe v2 (HTTP)")
    p.add_argument("source", help="an .onnx file or a repository folder REPO/<name>/<version>/model.onnx")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modelport.serve.server import run_server

    run_server(args.source, host=args.host, port=args.port, log_level=args.log_level)
    return 0
