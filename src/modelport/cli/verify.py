"""modelport verify A [B]: every check after a conversion, a verdict, and JSON / HTML reports.

Exit status: 0 when every check passes, 1 when one fails, 2 when the input is bad (an unknown
fill, a missing file, a malformed option).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from modelport.cli._common import add_json, add_plan, console, emit_json, parse_csv_ints, plan_from_args

if TYPE_CHECKING:
    from rich.console import Console

    from modelport.verify.inputs import InputPlan
    from modelport.verify.report import VerifyReport

__all__ = ["add_parser", "run"]

_BACKENDS = ["onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "openvino", "torch"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="check a model against its reference: signature, outputs at batch 1 and N, NaN/Inf, accuracy, "
        "speed; exit 1 on failure",
    )
    p.add_argument("model_a", help="candidate: .onnx path (or MODULE:FACTORY with --backend torch)")
    p.add_argument("model_b", nargs="?", help="reference (default: model A on the reference backend)")
    p.add_argument(
        "--backend",
        action="append",
        choices=_BACKENDS,
        help="engine for A, then for B (default: onnxruntime, all optimizations against none)",
    )
    p.add_argument("--data", help="user data: .npz (one array per input, 'labels'), .npy, or a folder of images")
    p.add_argument("--metric", help="accuracy metric: top1, top5, top<K> or package.module:function")
    p.add_argument("--output", help="the output the metric scores (default: the first)")
    p.add_argument("--max-accuracy-drop", type=float, default=0.0, help="accepted score drop (default %(default)g)")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default %(default)g)")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default %(default)g)")
    p.add_argument("--lsb", type=int, default=0, help="tolerance of integer outputs in LSBs (default %(default)s)")
    p.add_argument(
        "--fill",
        default="realistic,ones",
        help="generated inputs: realistic,random,ones,zeros (default %(default)s)",
    )
    p.add_argument("--report", metavar="PATH", help="write the JSON report here")
    p.add_argument("--html", metavar="PATH", help="write a self-contained HTML report here")
    add_plan(p, batch_default="1,4")
    add_json(p)
    p.set_defaults(run=run)


def _fills(text: str) -> list[str]:
    from modelport.errors import ConfigError
    from modelport.verify.inputs import FILLS

    fills = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in fills if f not in FILLS]
    if bad or not fills:
        raise ConfigError(f"--fill '{text}': unknown {', '.join(bad) or 'empty list'} — choose from {', '.join(FILLS)}")
    return fills


def _plan(args: argparse.Namespace) -> InputPlan:
    return plan_from_args(args)


def run(args: argparse.Namespace) -> int:
    from modelport.report import write_text_atomic
    from modelport.verify.api import verify
    from modelport.verify.html import render_html
    from modelport.verify.tolerance import Tolerance

    report = verify(
        args.model_a,
        args.model_b,
        backends=args.backend or ["onnxruntime"],
        batches=parse_csv_ints(args.batch, "--batch"),
        tolerance=Tolerance(args.atol, args.rtol),
        lsb=args.lsb,
        plan=_plan(args),
        fills=_fills(args.fill),
        data=args.data,
        metric=args.metric,
        output=args.output,
        max_accuracy_drop=args.max_accuracy_drop,
    )
    if args.report:
        write_text_atomic(args.report, report.to_json())
    if args.html:
        write_text_atomic(args.html, render_html(report))
    if args.json:
        emit_json(report.to_dict())
    else:
        _print(report, console())
    return 0 if report.passed else 1


def _print(report: VerifyReport, out: Console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{report.candidate} vs {report.reference} ({report.tolerance}, {report.lsb} LSB)"))
    for col in ("batch", "inputs", "output", "max abs", "needs atol", "cosine", "LSB", "NaN c/r", "result"):
        table.add_column(col)
    runs = [(str(r.batch), r.fill, r) for r in report.runs]
    if report.data is not None:
        runs.append(("1", f"data ({report.data.samples})", report.data.comparison))
    for batch, fill, run_ in runs:
        for d in run_.diffs:
            table.add_row(
                batch,
                escape(fill),
                escape(d.name),
                f"{d.max_abs:.3g}",
                f"{d.required_atol:.3g}",
                f"{d.cosine:.6f}",
                "-" if d.max_lsb is None else str(d.max_lsb),
                f"{d.nan_candidate}/{d.nan_reference}",
                "[green]pass[/]" if d.passed else "[red]FAIL[/]",
            )
    out.print(table)
    consistent = sum(b.passed for b in report.batch_consistency)
    if report.batch_consistency:
        out.print(f"batch consistency: {consistent} of {len(report.batch_consistency)} checks pass")
    if report.accuracy is not None:
        acc = report.accuracy
        out.print(
            f"accuracy ({escape(acc.metric)}, {acc.samples} samples): reference {acc.reference_score:.4f}, "
            f"candidate {acc.candidate_score:.4f} ({acc.delta:+.4f}), {len(acc.regressions)} regressions"
        )
    for s in report.speed:
        out.print(
            f"speed: {s.side} batch {s.batch}: {s.mean_ms:.3f} ms mean over {s.runs} runs", style="dim", markup=False
        )
    for f in report.findings:
        colour = "red" if f.severity == "fail" else "yellow"
        out.print(f"[{colour}]{f.severity}:[/] {escape(f.message)}")
    verdict = escape(report.verdict)
    out.print(f"[green]{verdict}[/]" if report.passed else f"[bold red]{verdict}[/]")
