"""modelport inspect MODEL: what a model is."""

from __future__ import annotations

import argparse

from modelport.cli._common import add_json, console, emit_json, parse_dims

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("inspect", help="inputs/outputs, ops, weights, MACs, quantization state")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--batch", type=int, default=1, help="batch size used for the MAC count")
    p.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="LABEL=SIZE",
        help="size of a named dynamic dim",
    )
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from modelport.ir.serde import load
    from modelport.ir.summary import summarize

    summary = summarize(load(args.model), batch=args.batch, dims=parse_dims(args.dim))
    if args.json:
        emit_json(summary.to_dict())
        return 0
    out = console()
    io = Table(title=f"{args.model}", show_lines=False)
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind, specs in (("input", summary.inputs), ("output", summary.outputs)):
        for spec in specs:
            io.add_row(kind, spec.name, str(spec.dtype), spec.shape_str())
    out.print(io)
    out.print(f"IR {summary.ir_version}, opsets {summary.opsets}, producer '{summary.producer}'")
    out.print(f"{summary.node_count} nodes; quantization: {summary.quantization}")
    out.print("ops: " + ", ".join(f"{k} {v}" for k, v in summary.op_histogram.items()))
    weights = ", ".join(f"{k} {v:,} B" for k, v in summary.parameter_bytes.items()) or "none"
    out.print(f"parameters: {summary.parameter_count:,} ({weights})")
    if summary.file_bytes is not None:
        out.print(f"file: {summary.file_bytes:,} bytes")
    macs = f"{summary.macs:,}" if summary.macs is not None else "unknown (shapes not inferable)"
    out.print(f"MACs: {macs} at {summary.macs_input_shapes}")
    if summary.dynamic_axes:
        out.print("dynamic axes: " + "; ".join(f"{n} {a}" for n, a in summary.dynamic_axes.items()))
    return 0
