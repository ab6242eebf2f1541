"""modelport optimize MODEL -o OUT: verified graph optimization."""

from __future__ import annotations

import argparse

from modelport.cli._common import (
    add_json,
    add_output,
    add_plan,
    console,
    emit_json,
    parse_csv_ints,
    plan_from_args,
)

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("optimize", help="run verified optimization passes; broken passes are rolled back")
    p.add_argument("model", help="path to an .onnx file")
    add_output(p)
    p.add_argument("--passes", help="comma-separated pass names (default: the pipeline of --target)")
    p.add_argument(
        "--target",
        choices=("generic", "onnxruntime"),
        default="generic",
        help="generic: standard ONNX for any engine (default); onnxruntime: may use ORT contrib ops",
    )
    p.add_argument(
        "--verify",
        choices=("auto", "full", "region", "off"),
        default="auto",
        help="how each pass is checked: whole model, rewritten regions (auto above 512 MiB of weights), or off",
    )
    p.add_argument(
        "--verify-each",
        action="store_true",
        help="check after every pass (default: once after all of them, pass by pass only if that fails)",
    )
    p.add_argument(
        "--no-measure",
        dest="measure",
        action="store_false",
        help="do not time passes that can make the target slower (keep them when correct and smaller)",
    )
    add_plan(p, batch_default="1,2")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from modelport.ir.serde import load, save
    from modelport.passes.manager import optimize

    model = load(args.model)
    passes = [p.strip() for p in args.passes.split(",")] if args.passes else None
    result = optimize(
        model,
        passes,
        target=args.target,
        plan=plan_from_args(args),
        batches=parse_csv_ints(args.batch, "--batch"),
        verify=args.verify,
        verify_each=args.verify_each,
        measure=args.measure,
    )
    save(result.model, args.output, in_place=args.in_place)
    if args.json:
        emit_json({"output": args.output, **result.to_dict()})
        return 0
    table = Table(title=f"optimize {args.model} -> {args.output} (target {result.target})")
    for col in ("pass", "status", "nodes", "bytes", "max abs err", "tolerance", "seconds", "note"):
        table.add_column(col)
    for s in result.steps:
        err = "—" if s.max_abs_error is None else f"{s.max_abs_error:.3g}"
        table.add_row(
            s.name,
            s.status,
            f"{s.nodes_before}→{s.nodes_after}",
            f"{s.bytes_before:,}→{s.bytes_after:,}",
            err,
            s.tolerance,
            f"{s.seconds:.3f}",
            s.reason,
        )
    out = console()
    out.print(table)
    out.print(
        f"nodes {result.nodes_before} → {result.nodes_after}, bytes {result.bytes_before:,} → "
        f"{result.bytes_after:,}; verification: {result.verification}; "
        f"{result.seconds:.2f} s"
    )
    for step in result.reverted:
        out.print(f"[yellow]reverted[/] {step.name}: {step.reason}")
    for step in result.rolled_back:
        console(stderr=True).print(f"[bold red]rolled back[/] {step.name}: {step.reason}")
    return 0
