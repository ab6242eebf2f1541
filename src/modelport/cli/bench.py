"""modelport bench MODEL: latency percentiles, throughput, stability."""

from __future__ import annotations

import argparse

from modelport.cli._common import (
    add_json,
    add_plan,
    console,
    emit_json,
    parse_csv_ints,
    plan_from_args,
)
from modelport.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="latency min/mean/median/p90/p95/p99, throughput, CV warning")
    p.add_argument("model", help="path to an .onnx file")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, help="seconds to run each batch size (default 2)")
    stop.add_argument("--iterations", type=int, help="timed iterations per batch size")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs (default %(default)s)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    add_plan(p, batch_default="1")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from modelport.bench.harness import bench

    if args.iterations is not None and args.iterations < 1:
        raise ConfigError("--iterations must be >= 1")
    if args.duration is not None and args.duration <= 0:
        raise ConfigError("--duration must be > 0")
    results = bench(
        args.model,
        batches=parse_csv_ints(args.batch, "--batch"),
        duration=args.duration,
        iterations=args.iterations,
        warmup=args.warmup,
        threads=args.threads,
        plan=plan_from_args(args),
    )
    if args.json:
        emit_json([r.to_dict() for r in results])
        return 0
    table = Table(title=f"bench {args.model} (ONNX Runtime CPU, threads={args.threads or 'default'})")
    for col in ("batch", "iters", "min", "mean", "median", "p90", "p95", "p99", "items/s", "CV"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            str(r.batch),
            str(r.iterations),
            *(f"{v:.2f}" for v in (r.min_ms, r.mean_ms, r.median_ms, r.p90_ms, r.p95_ms, r.p99_ms)),
            f"{r.throughput:.1f}",
            f"{r.cv:.1%}",
        )
    out = console()
    out.print(table)
    out.print("latency in ms per call; inputs generated, not counted")
    for r in results:
        for w in r.warnings:
            console(stderr=True).print(f"[yellow]warning (batch {r.batch}):[/] {w}")
    return 0
