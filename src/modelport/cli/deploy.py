"""modelport deploy [MODEL | --config deploy.yaml]: source → optimize → surgery → quantize → compare → bench → write."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from modelport.cli._common import add_json, console, emit_json

if TYPE_CHECKING:
    from modelport.deploy.recipe import Recipe

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("deploy", help="the main job, end to end (default: the built-in example model)")
    p.add_argument("model", nargs="?", help=".onnx file (default: built-in ResNet-style example)")
    p.add_argument("--config", help="a deploy recipe (YAML); the options below then override nothing")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved recipe (every default filled in) and exit",
    )
    p.add_argument("-o", "--output", help="output folder (default deploy-out)")
    p.add_argument("--calib", help="calibration data: .npy, .npz or a folder of images")
    p.add_argument("--preprocess", help="preprocessing for an image folder (see 'quantize --help')")
    p.add_argument("--batch", type=int, help="batch N for compare and bench (default 8)")
    p.add_argument("--bench-seconds", type=float, help="seconds per benchmark pair (default 2)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    p.add_argument("--name", help="model name in the repository (default: file stem)")
    p.add_argument("--cache-dir", help="stage cache folder (default $MODELPORT_CACHE_DIR or ~/.cache/modelport)")
    p.add_argument("--no-cache", action="store_true", help="run every stage, store nothing")
    add_json(p)
    p.set_defaults(run=run)


_FLAGS = ("model", "output", "calib", "preprocess", "batch", "bench_seconds", "threads", "name")


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe: ``--config`` as written, or the default recipe with the command-line options."""
    from modelport.deploy.job import default_recipe
    from modelport.deploy.recipe import load_recipe
    from modelport.errors import ConfigError

    if args.config:
        clash = [
            f"--{f.replace('_', '-')}" if f != "model" else "MODEL" for f in _FLAGS if getattr(args, f) is not None
        ]
        if clash:
            raise ConfigError(
                f"{', '.join(clash)} cannot be combined with --config (they would silently fight the recipe) — "
                "put them in the recipe instead"
            )
        recipe = load_recipe(args.config)
    else:
        recipe = default_recipe(
            args.model,
            args.output or "deploy-out",
            calib=args.calib,
            preprocess=args.preprocess,
            batch=8 if args.batch is None else args.batch,
            bench_seconds=2.0 if args.bench_seconds is None else args.bench_seconds,
            threads=args.threads,
            name=args.name,
        )
    if args.no_cache or args.cache_dir:
        cache = recipe.cache.model_copy(
            update={"enabled": not args.no_cache, "dir": args.cache_dir or recipe.cache.dir}
        )
        recipe = recipe.model_copy(update={"cache": cache})
    return recipe


def run(args: argparse.Namespace) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from modelport.deploy.job import STAGES, run_recipe
    from modelport.deploy.recipe import resolved_yaml

    recipe = recipe_from_args(args)
    if args.print_config:
        sys.stdout.write(resolved_yaml(recipe))
        return 0
    err = console(stderr=True)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, disable=args.json
    ) as progress:
        tasks = {s: progress.add_task(f"[dim]{s}", total=1, start=False) for s in STAGES}
        current: list[str] = []

        def step(stage: str, text: str) -> None:
            if current:
                progress.update(tasks[current[-1]], completed=1)
            current.append(stage)
            progress.start_task(tasks[stage])
            progress.update(tasks[stage], description=f"{stage}: {text}")

        result = run_recipe(recipe, progress=step)
        if current:
            progress.update(tasks[current[-1]], completed=1)
    if args.json:
        emit_json(result.to_dict())
        return 0 if result.succeeded else 1
    _print_summary(result)
    return 0 if result.succeeded else 1


def _print_summary(result: object) -> None:
    from rich.table import Table

    from modelport.deploy.goals import worst_sqnr
    from modelport.deploy.job import DeployResult
    from modelport.deploy.report import bench_table

    assert isinstance(result, DeployResult)
    out, err = console(), console(stderr=True)
    table = Table(title=f"{result.name}: input FP32 vs final {result.chosen}")
    for col in ("batch", "model", "median ms", "p90 ms", "p99 ms", "items/s", "CV", "speedup"):
        table.add_column(col, justify="right")
    for row in bench_table(result):
        table.add_row(*row)
    out.print(table)
    out.print(f"chosen: [bold]{result.chosen}[/] — {result.choice_reason}")
    sqnr = worst_sqnr(result)
    if sqnr is not None:
        verdict = "pass" if result.comparison_passed else "FAIL"
        out.print(
            f"output error vs input model: worst SQNR {sqnr:.1f} dB ({result.compare.get('criterion')}: {verdict})"
        )
    for goal in result.goals:
        out.print(f"goal {goal.name}: {'[green]met[/]' if goal.passed else '[red]MISSED[/]'} — {goal.detail}")
    reused = result.reused
    ran = [s.name for s in result.stages if s.status == "ran"]
    out.print(f"stages run: {', '.join(ran) or 'none'}; reused from the cache: {', '.join(reused) or 'none'}")
    out.print(f"repository: {result.repository}")
    out.print(f"report: {result.outdir / 'report.html'} (also report.md, report.json)")
    for warning in result.warnings:
        err.print(f"[bold yellow]warning:[/] {warning}")
