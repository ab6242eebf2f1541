"""modelport batch-infer MODEL_OR_REPO --input DIR_OR_PARQUET --output DIR: offline inference to parquet.

A thin layer over :func:`modelport.batch.batch_infer`: locally by default, on Ray Data with --ray.
"""

from __future__ import annotations

import argparse

from modelport.cli._common import add_json, console, emit_json

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "batch-infer",
        help="run a model over a folder of images / .npy / .npz files or parquet, writing parquet",
        description=(
            "Offline inference with the server's pre- and post-processing. Input: a folder of images (the model's "
            "config.yaml needs an image pipeline stage), of .npy files (one sample each, single-input models), of "
            ".npz files (one array per input name), or a parquet file or folder (one column per input, an optional "
            "'id' column). Output: parquet with an 'id' column and one column per model output."
        ),
    )
    p.add_argument("source", metavar="MODEL_OR_REPO", help="an .onnx file or a repository REPO/<name>/<version>/")
    p.add_argument("--input", required=True, metavar="DIR_OR_PARQUET", help="the samples (see above)")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the parquet results (created whole)")
    p.add_argument("--model", metavar="NAME", help="the model to run, in a repository of several")
    p.add_argument("--batch-size", type=int, default=32, help="samples per model run (default %(default)s)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    ray = p.add_argument_group("Ray Data")
    ray.add_argument("--ray", action="store_true", help="run on Ray Data (map_batches), needs the 'ray' extra")
    ray.add_argument("--ray-address", metavar="ADDRESS", help="join this Ray cluster (default: start a local Ray)")
    ray.add_argument("--actors", type=int, metavar="N", help="at most N model actors (default: CPUs - 1)")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from modelport.batch import batch_infer, find_inputs
    from modelport.errors import ConfigError

    if not args.ray and (args.ray_address is not None or args.actors is not None):
        raise ConfigError("--ray-address and --actors apply to Ray Data runs — add --ray")
    total = find_inputs(args.input).count_rows()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
        disable=args.json or args.ray,  # Ray Data shows its own progress
    ) as progress:
        task = progress.add_task("batch-infer", total=total)
        result = batch_infer(
            args.source,
            args.input,
            args.output,
            model=args.model,
            batch_size=args.batch_size,
            use_ray=args.ray,
            force=args.force,
            ray_address=args.ray_address,
            actors=args.actors,
            on_rows=lambda rows: progress.advance(task, rows),
        )
    if args.json:
        emit_json(result.to_dict())
        return 0
    console().print(
        f"{result.model}: {result.rows} rows -> {result.output} ({len(result.files)} parquet file(s), "
        f"{result.engine}, {result.seconds:.2f} s)"
    )
    return 0
