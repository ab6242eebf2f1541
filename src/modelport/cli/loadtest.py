"""modelport loadtest URL --model NAME: perf_analyzer-style load test of a KServe v2 server."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from modelport.cli._common import add_json, console, emit_json
from modelport.errors import ConfigError

if TYPE_CHECKING:
    from modelport.bench.loadtest import LoadtestResult

__all__ = ["add_parser", "run"]

_PROTOCOLS = ("http", "http-json", "grpc")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "loadtest",
        help="load-test a KServe v2 server: throughput, latency percentiles, client and server breakdown",
    )
    p.add_argument("url", help="the server: http://HOST:PORT for HTTP, HOST:PORT or grpc://HOST:PORT for gRPC")
    p.add_argument("--model", required=True, help="name of the served model")
    p.add_argument("--model-version", default=None, help="version to target (default: the server's choice)")
    p.add_argument(
        "--protocol",
        choices=_PROTOCOLS,
        default="http",
        help="http (binary tensors), http-json or grpc (default %(default)s)",
    )
    load = p.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency-range",
        metavar="START:END:STEP",
        help="closed loop: concurrent clients, e.g. 1:16:x2 or 1:8:2 (default 1)",
    )
    load.add_argument("--request-rate", metavar="RATES", help="open loop: requests/s, e.g. 50,100,200 or 50:400:x2")
    group = p.add_argument_group("inputs")
    group.add_argument("--input", default="random", help="random, zeros, or an .npz/.npy file (default %(default)s)")
    group.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help="shape of an input with variable dimensions, e.g. x=1,3,224,224 (repeatable)",
    )
    group.add_argument("--batch", type=int, default=1, help="rows per request on the batch axis (default 1)")
    measure = p.add_argument_group("measurement")
    measure.add_argument("--window", type=float, default=2.0, help="seconds per measurement window (default 2)")
    measure.add_argument(
        "--stability", type=float, default=0.1, help="three windows must agree within this fraction (default 0.1)"
    )
    measure.add_argument("--max-windows", type=int, default=10, help="windows per level at most (default 10)")
    measure.add_argument("--max-requests", type=int, default=None, help="stop after sending this many requests")
    measure.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds")
    measure.add_argument("--timeout", type=float, default=30.0, help="seconds one request may take (default 30)")
    out = p.add_argument_group("output")
    out.add_argument("--csv", metavar="FILE", help="write one row per level (perf_analyzer columns)")
    out.add_argument("--html", metavar="FILE", help="write a self-contained HTML report with plots")
    add_json(p)
    p.set_defaults(run=run)


def _inputs(value: str) -> Literal["random", "zeros"] | Path:
    if value == "random":
        return "random"
    if value == "zeros":
        return "zeros"
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"--input {value!r} is neither 'random', 'zeros' nor an existing .npz/.npy file")
    return path


def run(args: argparse.Namespace) -> int:
    from modelport.bench.loadtest import loadtest, parse_concurrency_range, parse_rates, parse_shapes
    from modelport.report import write_text_atomic

    concurrency = parse_concurrency_range(args.concurrency_range) if args.concurrency_range else None
    rates = parse_rates(args.request_rate) if args.request_rate else None
    with console(stderr=True).status(f"load-testing {args.model} at {args.url} ...") as status:
        result = loadtest(
            args.url,
            args.model,
            version=args.model_version,
            protocol=args.protocol,
            concurrency=concurrency,
            rates=rates,
            inputs=_inputs(args.input),
            batch=args.batch,
            window_s=args.window,
            stability=args.stability,
            max_windows=args.max_windows,
            max_requests=args.max_requests,
            max_seconds=args.max_seconds,
            timeout_s=args.timeout,
            shapes=parse_shapes(args.shape),
            progress=status.update,
        )
    if args.csv:
        write_text_atomic(args.csv, result.to_csv())
    if args.html:
        write_text_atomic(args.html, result.to_html())
    if args.json:
        emit_json(result.to_dict())
    else:
        _print_table(result)
    for warning in result.warnings:
        console(stderr=True).print(f"[yellow]warning:[/] {warning}", markup=True)
    return 0


def _ms(value: float, digits: int = 2) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def _print_table(result: LoadtestResult) -> None:
    from rich.table import Table

    version = f" v{result.version}" if result.version else ""
    table = Table(title=f"loadtest {result.model}{version} at {result.url} ({result.protocol}, batch {result.batch})")
    columns: tuple[str, ...] = ("level", "infer/s", "p50", "p90", "p95", "p99", "mean", "send", "wait", "recv")
    columns += ("queue µs", "infer µs", "errors", "stable")
    for column in columns:
        table.add_column(column, justify="left" if column in ("level", "errors") else "right")
    for level in result.levels:
        server = level.server
        table.add_row(
            level.label,
            f"{level.throughput:.1f}",
            *(_ms(v) for v in (level.p50_ms, level.p90_ms, level.p95_ms, level.p99_ms, level.mean_ms)),
            *(_ms(v, 3) for v in (level.send_ms, level.wait_ms, level.receive_ms)),
            f"{server.queue_us:.0f}" if server else "–",
            f"{server.compute_infer_us:.0f}" if server else "–",
            ", ".join(f"{k}: {v}" for k, v in level.errors.items()) or "0",
            "yes" if level.stable else "no",
        )
    out = console()
    out.print(table)
    out.print("latency in ms per request (successful ones, last three windows); server figures per request")
