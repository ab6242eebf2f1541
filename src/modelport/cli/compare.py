"""modelport compare A [B]: outputs of two models / engines on identical inputs."""

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
    p = sub.add_parser("compare", help="compare outputs of two models or two engines; exit 1 on mismatch")
    p.add_argument("model_a", help="candidate: .onnx path (or MODULE:FACTORY with --backend torch)")
    p.add_argument("model_b", nargs="?", help="reference (default: model A on the reference backend)")
    p.add_argument(
        "--backend",
        action="append",
        choices=["onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "openvino", "torch"],
        help="engine for A, then for B (default: onnxruntime)",
    )
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default %(default)g)")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default %(default)g)")
    p.add_argument("--fill", default="random", help="input kinds: random,ones,zeros (default %(default)s)")
    add_plan(p, batch_default="1,2")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from modelport.verify.api import compare
    from modelport.verify.tolerance import Tolerance

    fills = [f.strip() for f in args.fill.split(",") if f.strip()]
    bad = [f for f in fills if f not in ("random", "ones", "zeros")]
    if bad:
        raise ConfigError(f"--fill {','.join(bad)} unknown; choose from random, ones, zeros")
    report = compare(
        args.model_a,
        args.model_b,
        backends=args.backend or ["onnxruntime"],
        batches=parse_csv_ints(args.batch, "--batch"),
        tolerance=Tolerance(args.atol, args.rtol),
        plan=plan_from_args(args),
        fills=fills,
    )
    if args.json:
        emit_json(report.to_dict())
        return 0 if report.passed else 1
    out = console()
    for problem in report.signature:
        out.print(f"[red]signature:[/] {problem}")
    for note in report.notes:
        out.print(f"[yellow]note:[/] {note}")
    table = Table(title=f"{report.candidate} vs {report.reference} ({report.tolerance})")
    for col in (
        "batch",
        "inputs",
        "output",
        "max abs",
        "max rel",
        "mean abs",
        "cosine",
        "needs atol",
        "result",
    ):
        table.add_column(col)
    for run_ in report.runs:
        for d in run_.diffs:
            table.add_row(
                str(run_.batch),
                run_.fill,
                d.name,
                f"{d.max_abs:.3g}",
                f"{d.max_rel:.3g}",
                f"{d.mean_abs:.3g}",
                f"{d.cosine:.6f}",
                f"{d.required_atol:.3g}",
                "[green]pass[/]" if d.passed else f"[red]FAIL[/] {d.reason}",
            )
    out.print(table)
    out.print("[green]outputs match[/]" if report.passed else "[bold red]MISMATCH[/]")
    return 0 if report.passed else 1
