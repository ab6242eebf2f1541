"""modelport quantize MODEL --mode ...: convert precision, then measure error and speed vs FP32."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

from modelport.cli._common import add_json, add_output, console, emit_json
from modelport.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from modelport.ir.specs import TensorSpec
    from modelport.quantize.api import QuantizeResult
    from modelport.quantize.mixed import AccuracyBudget

__all__ = ["add_parser", "run"]

#: A Python entry point ("package.module:function") rather than a path.
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("quantize", help="fp16 / int8-dynamic / int8-static (QDQ), checked against FP32")
    p.add_argument("model", help="path to an FP32 .onnx file (an already-quantized model is checked and kept)")
    p.add_argument("--mode", required=True, choices=["fp16", "int8-dynamic", "int8-static"])
    add_output(p)
    calib = p.add_argument_group("calibration (int8-static)")
    calib.add_argument(
        "--calib",
        help="calibration data: .npy, .npz (one array per input), a folder of images, "
        "or package.module:function returning an iterable of feeds",
    )
    calib.add_argument(
        "--preprocess",
        help="for image folders, e.g. size=224x224,layout=NCHW,color=RGB,"
        "mean=0.485:0.456:0.406,std=0.229:0.224:0.225,scale=1/255",
    )
    calib.add_argument(
        "--method",
        default=None,
        choices=["minmax", "entropy", "percentile", "mse"],
        help="calibration method (default: mse, or minmax for a reader that can only be read once)",
    )
    calib.add_argument("--percentile", type=float, default=99.999, help="for --method percentile (%(default)s)")
    calib.add_argument("--memory-budget", type=float, default=512, help="MB of tensors per calibration run (512)")
    calib.add_argument("--cache-dir", help="keep calibration ranges here, keyed by model + data + settings")
    calib.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales (default per-channel)")
    calib.add_argument("--symmetric-activations", action="store_true", help="symmetric activation ranges")
    budget = p.add_argument_group("accuracy budget and sensitivity (int8-static)")
    budget.add_argument("--sensitivity", action="store_true", help="print the per-layer sensitivity table")
    budget.add_argument("--min-sqnr", type=float, help="budget: every output keeps this SQNR (dB) vs FP32")
    budget.add_argument("--min-cosine", type=float, default=0.0, help="budget: and this cosine vs FP32")
    budget.add_argument("--data", help="budget: a labelled dataset (.npz with 'labels', or class folders)")
    budget.add_argument("--metric", default="top1", help="budget: top1, top5 or package.module:function (top1)")
    budget.add_argument("--max-drop", type=float, help="budget: largest metric drop vs FP32 (0.005 = half a point)")
    p.add_argument("--force", action="store_true", help="int8-dynamic: quantize a conv-heavy model anyway")
    p.add_argument("--batch", type=int, default=8, help="batch size for the speed check (default %(default)s)")
    p.add_argument("--allow-slower", action="store_true", help="exit 0 even if the result is slower than FP32")
    add_json(p)
    p.set_defaults(run=run)


def _calibration(args: argparse.Namespace, specs: list[TensorSpec]) -> Any:
    from modelport.quantize.calibration import entry_point_reader, load_calibration, parse_preprocess

    if not args.calib:
        if args.preprocess:
            raise ConfigError("--preprocess applies to --calib image folders; give --calib too")
        return None
    if _ENTRY_POINT.match(args.calib):
        return entry_point_reader(args.calib, specs)
    pre = parse_preprocess(args.preprocess) if args.preprocess else None
    return load_calibration(args.calib, specs, preprocess=pre)


def _budget(args: argparse.Namespace, specs: list[TensorSpec]) -> AccuracyBudget | None:
    from modelport.quantize.mixed import AccuracyBudget

    if args.min_sqnr is not None and (args.data or args.max_drop is not None):
        raise ConfigError("give one accuracy budget: --min-sqnr (signal floor) OR --data with --max-drop (task metric)")
    if args.min_sqnr is not None:
        return AccuracyBudget.floor(args.min_sqnr, args.min_cosine)
    if args.data or args.max_drop is not None:
        if not args.data or args.max_drop is None:
            raise ConfigError("a task-metric budget needs both --data PATH and --max-drop, e.g. --max-drop 0.005")
        from modelport.verify.dataset import load_dataset

        return AccuracyBudget.task(load_dataset(args.data, specs), args.metric, max_drop=args.max_drop)
    return None


def run(args: argparse.Namespace) -> int:
    from modelport.ir.serde import load, save
    from modelport.ir.specs import specs_of
    from modelport.quantize.api import quantize

    model = load(args.model)
    specs = specs_of(model.graph.inputs)
    options: dict[str, Any] = {"memory_budget_mb": args.memory_budget, "cache_dir": args.cache_dir}
    if args.method == "percentile":
        options["percentile"] = args.percentile
    result = quantize(
        model,
        args.mode,
        calibration=_calibration(args, specs),
        per_channel=not args.per_tensor,
        method=args.method,
        activation_symmetric=args.symmetric_activations,
        calibration_options=options,
        budget=_budget(args, specs),
        sensitivity=args.sensitivity,
        force=args.force,
        bench_batch=args.batch,
    )
    save(result.model, args.output, in_place=args.in_place)
    failure = result.accuracy_failure
    missed = result.mixed is not None and not result.mixed.met
    code = 1 if failure or missed or (result.slower and not args.allow_slower) else 0
    if args.json:
        emit_json({"output": args.output, **result.to_dict()})
        return code
    _print(result, args)
    return code


def _print(result: QuantizeResult, args: argparse.Namespace) -> None:
    out, err = console(), console(stderr=True)
    fp32, q = result.fp32_bench, result.quant_bench
    out.print(f"{args.mode} written to {args.output} ({result.settings.get('format', args.mode)})")
    if result.ranges is not None:
        cached = ", from cache" if result.ranges.from_cache else ""
        out.print(f"calibrated: {result.ranges.method}, {result.ranges.samples} samples{cached}")
    out.print(
        f"output error vs FP32: worst SQNR {result.worst_sqnr_db:.1f} dB, worst cosine "
        f"{result.worst_cosine:.6f} (floor: {result.floor})"
    )
    if fp32 and q and result.speedup:
        out.print(
            f"speed at batch {q.batch}: FP32 {fp32.median_ms:.2f} ms, {args.mode} {q.median_ms:.2f} ms "
            f"→ {result.speedup:.2f}x"
        )
    _print_details(out, result)
    for warning in result.warnings:
        err.print(f"[bold red]WARNING:[/] {warning}")


def _print_details(out: Console, result: QuantizeResult) -> None:
    from rich.table import Table

    if result.sensitivity is not None:
        table = Table(title="per-layer sensitivity (only that layer INT8), most sensitive first")
        for col in ("layer", "op", "SQNR dB", "cosine"):
            table.add_column(col)
        for row in result.sensitivity.rows[:15]:
            table.add_row(row.node, row.op_type, f"{row.sqnr_db:.1f}", f"{row.cosine:.6f}")
        out.print(table)
    if result.mixed is not None:
        verdict = "met" if result.mixed.met else "[red]NOT met[/]"
        out.print(f"accuracy budget {verdict}: {result.mixed.why}")
        for kept in result.mixed.kept_fp32:
            out.print(f"  kept in FP32: {kept.op_type} '{kept.node}' — {kept.reason}")
        accuracy = result.mixed.accuracy
        if accuracy is not None:
            out.print(
                f"{accuracy.metric} on {accuracy.samples} samples: FP32 {accuracy.reference_score:.4f}, "
                f"quantized {accuracy.candidate_score:.4f} ({accuracy.delta:+.4f}); "
                f"{len(accuracy.regressions)} samples worse, {len(accuracy.improvements)} better"
            )
            for change in accuracy.regressions[:10]:
                out.print(
                    f"  worse: {change.name} (label {change.label}): FP32 {change.reference} → {change.candidate}"
                )
    if result.dynamic is not None:
        out.print(f"dynamic INT8: {result.dynamic.summary()}")
    if result.fp16 is not None:
        for node, why in list(result.fp16.blocked.items())[:20]:
            out.print(f"  kept in FP32: '{node}' — {why}")
