"""modelport debug SUBCOMMAND: find what breaks a model.

``reduce`` shrinks a failing model to a minimal sub-model that still fails and saves it with its
inputs. Each subcommand is one ``_add_<name>`` function here with its own ``run``; the
``debug`` command alone prints this help.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from modelport.cli._common import add_json, add_output, add_plan, console, emit_json, parse_csv_ints, plan_from_args

if TYPE_CHECKING:
    from modelport.verify.reduce import ReduceResult

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("debug", help="find what breaks a model: reduce it to a minimal failing sub-model")
    p.set_defaults(run=run, debug_parser=p)
    debug_sub = p.add_subparsers(dest="debug_command", metavar="SUBCOMMAND")
    _add_reduce(debug_sub)


def run(args: argparse.Namespace) -> int:
    """``modelport debug`` without a subcommand: print the help."""
    parser: argparse.ArgumentParser = args.debug_parser
    parser.print_help()
    return 2


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
    from modelport.errors import ConfigError, ModelSaveError
    from modelport.ir.serde import load
    from modelport.verify.reduce import reduce_model

    if not args.in_place and Path(args.output).resolve() == Path(args.model).resolve():
        raise ModelSaveError(
            f"refusing to overwrite the input model '{args.model}' with the reproducer — choose another output "
            "path, or pass --in-place"
        )
    batches = parse_csv_ints(args.batch, "--batch")
    if len(batches) != 1:
        raise ConfigError(f"--batch {args.batch}: reduce runs at one batch size — give one, e.g. --batch 4")
    plan = plan_from_args(args)
    plan.batch = batches[0]
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
