"""modelport deploy [MODEL]: inspect → optimize → quantize → compare → bench → repository."""

from __future__ import annotations

import argparse

from modelport.cli._common import add_json, console, emit_json

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("deploy", help="the main job, end to end (default: the built-in example model)")
    p.add_argument("model", nargs="?", help=".onnx file (default: built-in ResNet-style example)")
    p.add_argument("-o", "--output", default="deploy-out", help="output folder (default %(default)s)")
    p.add_argument("--calib", help="calibration data: .npy, .npz or a folder of images")
    p.add_argument("--preprocess", help="preprocessing for an image folder (see 'quantize --help')")
    p.add_argument("--batch", type=int, default=8, help="batch N for compare and bench (default %(default)s)")
    p.add_argument(
        "--bench-seconds",
        type=float,
        default=2.0,
        help="seconds per benchmark pair (default %(default)s)",
    )
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    p.add_argument("--name", help="model name in the repository (default: file stem)")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from modelport.deploy.job import STAGES, deploy
    from modelport.deploy.report import bench_table
    from modelport.quantize.calibration import parse_preprocess

    pre = parse_preprocess(args.preprocess) if args.preprocess else None
    err = console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        disable=args.json,
    ) as progress:
        tasks = {s: progress.add_task(f"[dim]{s}", total=1, start=False) for s in STAGES}
        current: list[str] = []

        def step(stage: str, text: str) -> None:
            if current:
                progress.update(tasks[current[-1]], completed=1)
            current.append(stage)
            progress.start_task(tasks[stage])
            progress.update(tasks[stage], description=f"{stage}: {text}")

        result = deploy(
            args.model,
            args.output,
            calib=args.calib,
            preprocess=pre,
            batch=args.batch,
            bench_seconds=args.bench_seconds,
            threads=args.threads,
            name=args.name,
            progress=step,
        )
        progress.update(tasks[current[-1]], completed=1)
    if args.json:
        emit_json(result.to_dict())
        return 0 if result.comparison_passed else 1
    out = console()
    table = Table(title=f"{result.name}: input FP32 vs final {result.chosen}")
    for col in ("batch", "model", "median ms", "p90 ms", "p99 ms", "items/s", "CV", "speedup"):
        table.add_column(col, justify="right")
    for row in bench_table(result):
        table.add_row(*row)
    out.print(table)
    out.print(f"chosen: [bold]{result.chosen}[/] — {result.choice_reason}")
    worst = result.comparison.worst()
    if worst is not None:
        out.print(
            f"output error vs input model: max abs {worst.max_abs:.3g}, cosine {worst.cosine:.6f}, "
            f"SQNR {worst.sqnr_db:.1f} dB ({result.comparison_floor}: "
            f"{'pass' if result.comparison_passed else 'FAIL'})"
        )
    out.print(f"repository: {result.repository}   report: {result.outdir / 'report.md'}")
    for warning in result.warnings:
        err.print(f"[bold yellow]warning:[/] {warning}")
    return 0 if result.comparison_passed else 1
