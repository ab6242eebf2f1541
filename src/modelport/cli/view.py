"""modelport view MODEL: the graph in Netron on 127.0.0.1 (``--no-browser`` prints the URL)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("view", help="open the model's graph in Netron, served locally")
    p.add_argument("model", help=".onnx file")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL instead of opening a browser")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modelport.view import start_viewer

    viewer = start_viewer(args.model, host=args.host, port=args.port, browse=not args.no_browser)
    print(f"Netron: {viewer.url}  (model {viewer.model}; Ctrl-C to stop)", flush=True)
    try:
        viewer.wait()
    except KeyboardInterrupt:
        return 0
    return 0
