"""modelport export MODULE:FACTORY -o out.onnx: PyTorch -> ONNX, validated against eager."""

from __future__ import annotations

import argparse

from modelport.cli._common import add_json, console, emit_json

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="export a PyTorch module to ONNX and validate it against eager PyTorch")
    p.add_argument(
        "factory",
        help="package.module:function or path/to/file.py:function returning an nn.Module (or (module, example_inputs))",
    )
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:SHAPE[:DTYPE]",
        help="input spec, e.g. image:1x3x224x224 or ids:1x128:int64 (repeatable)",
    )
    p.add_argument("--output-name", action="append", default=[], metavar="NAME", help="output names, in order")
    p.add_argument(
        "--dynamic",
        action="append",
        default=[],
        metavar="NAME:AXIS=LABEL",
        help="make an axis dynamic, e.g. image:0=batch (repeatable)",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default %(default)s)")
    p.add_argument(
        "--exporter",
        choices=["legacy", "dynamo"],
        default="legacy",
        help="torch.onnx exporter (default %(default)s)",
    )
    p.add_argument(
        "--second-batch",
        type=int,
        default=2,
        help="second batch size to validate (default %(default)s)",
    )
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modelport.export import export_torch, parse_dynamic_axes, parse_input_specs

    result = export_torch(
        args.factory,
        args.output,
        inputs=parse_input_specs(args.input) or None,
        output_names=args.output_name or None,
        dynamic_axes=parse_dynamic_axes(args.dynamic) or None,
        opset=args.opset,
        exporter=args.exporter,
        second_batch=args.second_batch,
    )
    if args.json:
        emit_json(result.to_dict())
        return 0 if result.passed else 1
    out, err = console(), console(stderr=True)
    out.print(f"exported {args.factory} → {result.path} ({result.exporter}, opset {result.opset})")
    for comparison in result.comparisons:
        for d in comparison.diffs:
            status = "[green]ok[/]" if d.passed else f"[red]MISMATCH[/] {d.reason}"
            out.print(
                f"  batch {comparison.batch} '{d.name}': max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g} {status}"
            )
    if result.second_batch_skipped:
        err.print(f"[yellow]second batch not checked:[/] {result.second_batch_skipped}")
    for line in result.notes + result.warnings:
        err.print(f"[yellow]note:[/] {line}")
    if not result.passed:
        for line in result.failures():
            err.print(f"[bold red]error:[/] {line}")
        return 1
    return 0
