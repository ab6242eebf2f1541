"""modelport debug SUBCOMMAND: find what breaks a model.

``bisect`` finds the first layer where two models (or one model on two engines) diverge;
``reduce`` shrinks a failing model to a minimal sub-model that still fails and saves it with its
inputs. Each subcommand is one ``_add_<name>`` function here with its own ``run``; the
``debug`` command alone prints this help.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.cli._common import add_json, add_output, add_plan, console, emit_json, parse_csv_ints, plan_from_args

if TYPE_CHECKING:
    import numpy as np

    from modelport.verify.bisect import BisectResult
    from modelport.verify.inputs import InputPlan
    from modelport.verify.reduce import ReduceResult

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "debug", help="find what breaks a model: the first diverging layer, or a minimal failing sub-model"
    )
    p.set_defaults(run=run, debug_parser=p)
    debug_sub = p.add_subparsers(dest="debug_command", metavar="SUBCOMMAND")
    _add_bisect(debug_sub)
    _add_reduce(debug_sub)


def run(args: argparse.Namespace) -> int:
    """``modelport debug`` without a subcommand: print the help."""
    parser: argparse.ArgumentParser = args.debug_parser
    parser.print_help()
    return 2


def _one_batch_plan(args: argparse.Namespace, command: str) -> InputPlan:
    """The generated-input plan of a debug command, which runs at exactly one batch size."""
    from modelport.errors import ConfigError

    batches = parse_csv_ints(args.batch, "--batch")
    if len(batches) != 1:
        raise ConfigError(f"--batch {args.batch}: {command} runs at one batch size — give one, e.g. --batch 4")
    plan = plan_from_args(args)
    plan.batch = batches[0]
    return plan


# ------------------------------------------------------------------------------------------ bisect


def _add_bisect(debug_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "find the first layer where a candidate diverges from a reference (exit 1 when they diverge)"
    p = debug_sub.add_parser("bisect", help=text, description=text)
    p.add_argument("candidate", help="the suspect .onnx (optimized, quantized, converted...)")
    p.add_argument("reference", nargs="?", help="the trusted .onnx (default: the candidate, on the second backend)")
    p.add_argument(
        "--backend",
        action="append",
        choices=["onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "openvino"],
        help="engine of the candidate, then of the reference (default: onnxruntime for both)",
    )
    p.add_argument(
        "--rtol", type=float, default=1e-4, help="divergence: max|c-r| > atol + rtol*max|r| (default %(default)g)"
    )
    p.add_argument("--atol", type=float, default=1e-6, help="see --rtol (default %(default)g)")
    p.add_argument("--per-probe", type=int, default=3, help="tensors marked as outputs per run (default %(default)s)")
    p.add_argument("--data", help="run on the first sample of this .npz/.npy/image folder instead of generated inputs")
    add_plan(p)
    add_json(p)
    p.set_defaults(run=_run_bisect)


def _run_bisect(args: argparse.Namespace) -> int:
    from modelport.errors import ConfigError
    from modelport.verify.bisect import bisect

    backends = args.backend or ["onnxruntime"]
    if args.reference is None and len(backends) != 2:
        raise ConfigError(
            "give a reference model, or the same model on two engines: --backend openvino --backend onnxruntime"
        )
    plan = _one_batch_plan(args, "bisect")
    plan.fill = "realistic"
    reference = args.reference or args.candidate
    feeds = _first_sample(args.data, reference) if args.data else None
    result = bisect(
        args.candidate,
        reference,
        backends=backends,
        feeds=feeds,
        plan=plan,
        rtol=args.rtol,
        atol=args.atol,
        per_probe=args.per_probe,
    )
    if args.json:
        emit_json(result.to_dict())
    else:
        _print_bisect(result)
    return 1 if result.diverged else 0


def _first_sample(data: str, model: str) -> dict[str, np.ndarray[Any, Any]]:
    from modelport.ir.serde import load
    from modelport.ir.specs import specs_of
    from modelport.verify.dataset import load_dataset

    dataset = load_dataset(data, specs_of(load(model).graph.inputs), limit=1)
    return dataset.samples[0]


def _print_bisect(result: BisectResult) -> None:
    from rich.table import Table

    out = console()
    matching = result.matching
    by = ", ".join(f"{count} by {how}" for how, count in sorted(matching.counts().items()))
    out.print(f"paired {len(matching.pairs)} tensors ({by}) of {result.candidate} with {result.reference}")
    for side, names in (("candidate", matching.unmatched_candidate), ("reference", matching.unmatched_reference)):
        if names:
            shown = ", ".join(names[:8]) + (f" … ({len(names)} in all)" if len(names) > 8 else "")
            out.print(f"[yellow]unpaired in the {side}:[/] {shown}")
    table = Table(title=f"tensors compared ({result.runs} runs per side, at most {result.most_marked} marked per run)")
    for col in ("candidate tensor", "reference tensor", "paired by", "relative error", "result"):
        table.add_column(col)
    for check in result.checks:
        verdict = f"[red]diverges[/] {check.reason}" if check.diverged else "[green]agrees[/]"
        pair = check.pair
        table.add_row(pair.candidate, pair.reference, pair.how, f"{check.relative:.3g}", verdict)
    out.print(table)
    for note in result.notes:
        out.print(f"[yellow]note:[/] {note}")
    if result.first is not None:
        reference_nodes = ", ".join(f"{op} '{name}'" for name, op in result.reference_nodes)
        out.print(f"[bold red]{result.summary()}[/]")
        out.print(f"in the reference: {reference_nodes}; {len(result.agreeing_inputs)} inputs checked and agreeing")
    else:
        out.print(f"[bold]{result.summary()}[/]")
    out.print(f"[dim]{result.seconds:.2f} s[/]")


# ------------------------------------------------------------------------------------------ reduce


def _add_reduce(debug_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "shrink a failing model to a minimal sub-model that still fails; save it with its inputs"
    p = debug_sub.add_parser("reduce", help=text, description=text)
    p.add_argument("model", help="path to the failing .onnx file")
    p.add_argument(
        "--check",
        required=True,
        help="what 'still fails' means: nan[:BACKEND] (NaN/Inf outputs from finite inputs), error[:BACKEND] "
        "(the engine raises), compare:A,B[:ATOL,RTOL] (two engines disagree), package.module:function "
        "(function(model, feeds) -> bool), or a command line where {model} is the candidate's path "
        "({feeds}: an .npz of its inputs) and a non-zero exit means it still fails",
    )
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds one run of a check command may take (default %(default)g)"
    )
    add_output(p)
    add_plan(p)
    add_json(p)
    p.set_defaults(run=_run_reduce)


def _run_reduce(args: argparse.Namespace) -> int:
    from modelport.errors import ModelSaveError
    from modelport.ir.serde import load
    from modelport.verify.reduce import reduce_model

    if not args.in_place and Path(args.output).resolve() == Path(args.model).resolve():
        raise ModelSaveError(
            f"refusing to overwrite the input model '{args.model}' with the reproducer — choose another output "
            "path, or pass --in-place"
        )
    plan = _one_batch_plan(args, "reduce")
    model = load(args.model)
    if args.json:
        result = reduce_model(model, args.check, plan=plan, timeout=args.timeout)
    else:
        with console(stderr=True).status("reducing…") as status:
            result = reduce_model(
                model,
                args.check,
                plan=plan,
                timeout=args.timeout,
                progress=lambda step: status.update(
                    f"reducing… {step.phase}: {step.nodes} nodes {'fail' if step.failing else 'pass'}"
                ),
            )
    model_path, npz_path = result.save(args.output, in_place=args.in_place)
    if args.json:
        emit_json(
            {
                "model": args.model,
                "output": str(model_path),
                "feeds": None if npz_path is None else str(npz_path),
                **result.to_dict(),
            }
        )
        return 0
    _print_reduce(result, args.model, model_path, npz_path)
    return 0


def _print_reduce(result: ReduceResult, source: str, model_path: Path, npz_path: Path | None) -> None:
    from rich.table import Table

    out = console()
    out.print(
        f"[bold]{source}[/]: {result.original_nodes} → [bold green]{len(result.nodes)}[/] nodes still failing "
        f"[dim]{result.check}[/] — {result.checks_run} checks ({result.cache_hits} repeats answered from memory, "
        f"{result.captures} capture runs) in {result.seconds:.2f} s"
    )
    steps = Table(title="steps")
    for col in ("#", "phase", "nodes", "result", "detail"):
        steps.add_column(col)
    for i, step in enumerate(result.steps):
        verdict = "[red]fails[/]" if step.failing else "[green]passes[/]"
        steps.add_row(str(i), step.phase, str(step.nodes), verdict, step.detail)
    out.print(steps)
    kept = Table(title="reproducer")
    kept.add_column("node")
    kept.add_column("op")
    for node in result.nodes:
        kept.add_row(node.name or "[dim](unnamed)[/]", node.op_type)
    out.print(kept)
    out.print(f"inputs {result.inputs} → outputs {result.outputs}: {result.detail}")
    for note in result.notes:
        out.print(f"[yellow]note:[/] {note}")
    written = f"{model_path}" + (f" and its inputs {npz_path}" if npz_path is not None else "")
    out.print(f"wrote {written}")
