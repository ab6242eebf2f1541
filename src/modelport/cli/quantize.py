"""modelport quantize MODEL --mode ...: convert precision, then measure error and speed vs FP32."""

from __future__ import annotations

import argparse

from modelport.cli._common import add_json, add_output, console, emit_json
from modelport.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("quantize", help="fp16 / int8-dynamic / int8-static (QDQ), checked against FP32")
    p.add_argument("model", help="path to an FP32 .onnx file")
    p.add_argument("--mode", required=True, choices=["fp16", "int8-dynamic", "int8-static"])
    add_output(p)
    p.add_argument("--calib", help="calibration data: .npy, .npz (one array per input) or a folder of images")
    p.add_argument(
        "--preprocess",
        help="for image folders, e.g. size=224x224,layout=NCHW,color=RGB,"
        "mean=0.485:0.456:0.406,std=0.229:0.224:0.225,scale=1/255",
    )
    p.add_argument(
        "--method",
        default="minmax",
        choices=["minmax", "entropy", "percentile"],
        help="calibration method (default %(default)s)",
    )
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales (default per-channel)")
    p.add_argument("--batch", type=int, default=8, help="batch size for the speed check (default %(default)s)")
    p.add_argument("--allow-slower", action="store_true", help="exit 0 even if the result is slower than FP32")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modelport.ir.serde import load, save
    from modelport.ir.specs import specs_of
    from modelport.quantize.api import quantize
    from modelport.quantize.calibration import load_calibration, parse_preprocess

    model = load(args.model)
    samples = None
    if args.calib:
        pre = parse_preprocess(args.preprocess) if args.preprocess else None
        samples = load_calibration(args.calib, specs_of(model.graph.inputs), preprocess=pre)
    elif args.preprocess:
        raise ConfigError("--preprocess applies to --calib image folders; give --calib too")
    result = quantize(
        model,
        args.mode,
        calibration=samples,
        per_channel=not args.per_tensor,
        method=args.method,
        bench_batch=args.batch,
    )
    save(result.model, args.output, in_place=args.in_place)
    failure = result.accuracy_failure
    code = 1 if failure or (result.slower and not args.allow_slower) else 0
    if args.json:
        emit_json({"output": args.output, **result.to_dict()})
        return code
    out, err = console(), console(stderr=True)
    fp32, q = result.fp32_bench, result.quant_bench
    out.print(f"{args.mode} written to {args.output}")
    out.print(
        f"output error vs FP32: worst SQNR {result.worst_sqnr_db:.1f} dB, worst cosine "
        f"{result.worst_cosine:.6f} (floor: {result.floor})"
    )
    if fp32 and q and result.speedup:
        out.print(
            f"speed at batch {q.batch}: FP32 {fp32.median_ms:.2f} ms, {args.mode} {q.median_ms:.2f} ms "
            f"→ {result.speedup:.2f}x"
        )
    for warning in result.warnings:
        err.print(f"[bold red]WARNING:[/] {warning}")
    return code
