"""modelport bench MODEL: trtexec-style latency and throughput — windows until stable, stages, sweeps, reports.

A thin layer over :func:`modelport.bench.sweep.run_sweep`: it turns the options into a
:class:`SweepSpec` and :class:`BenchSettings`, checks that the report files can be written before
measuring anything, and prints the table (or JSON) and writes CSV / HTML.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modelport.cli._common import (
    add_json,
    add_plan,
    console,
    emit_json,
    parse_csv_ints,
    plan_from_args,
)
from modelport.errors import ConfigError

if TYPE_CHECKING:
    from modelport.bench.harness import BenchSettings
    from modelport.bench.sweep import Progress, SweepSpec

__all__ = ["add_parser", "parse_image_size", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="latency percentiles, throughput and memory; windows until stable; stages; sweeps; JSON/CSV/HTML",
        description=(
            "Measure a model on ONNX Runtime: warm-up, then windows until the medians of the last three agree "
            "within --stable (or --max-windows is reached, which is reported). Lists (1,8) and --sweep measure "
            "every combination and recommend the best configuration for throughput and for latency."
        ),
    )
    p.add_argument("model", help="path to an .onnx file")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, help="seconds per measurement window (default 1)")
    stop.add_argument("--iterations", type=int, help="timed iterations per window and caller")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up iterations (default %(default)s)")
    p.add_argument("--warmup-seconds", type=float, default=0.0, help="warm up for at least this many seconds too")
    p.add_argument("--stable", type=float, help="tolerance between the last three window medians (default 0.05)")
    p.add_argument("--max-windows", type=int, help="windows before giving up on stability (default 10)")
    sweep = p.add_argument_group("configurations (lists are comma separated; every combination is measured)")
    sweep.add_argument("--threads", help="ONNX Runtime intra-op threads (default: its own, one per physical core)")
    sweep.add_argument("--inter-threads", help="ONNX Runtime inter-op threads (default: its own)")
    sweep.add_argument("--callers", help="concurrent callers, each a thread running the loop (default 1)")
    sweep.add_argument(
        "--caller-mode",
        default="shared",
        help="shared: the callers share one session; sessions: one session each (default %(default)s)",
    )
    sweep.add_argument(
        "--sweep",
        metavar="DIMS",
        help="sweep batch, threads, inter-threads, callers over default ranges (batch 1..32, threads and callers "
        "1..cores, inter-threads 1,2) unless their values are listed",
    )
    p.add_argument(
        "--pipeline",
        metavar="CONFIG",
        help="a model config.yaml with a 'pipeline:' key: time pre-process, compute and post-process per iteration",
    )
    p.add_argument(
        "--image-size",
        default="480x640",
        metavar="HxW",
        help="size of the synthetic JPEGs sent to a pipeline's image stage (default %(default)s)",
    )
    p.add_argument("--providers", help="ONNX Runtime execution providers, comma separated, or 'auto' (default: CPU)")
    add_plan(p, batch_default="1")
    add_json(p)
    p.add_argument("--csv", metavar="FILE", help="write one row per configuration to FILE")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report with plots to FILE")
    p.set_defaults(run=run)


def parse_image_size(text: str) -> tuple[int, int]:
    """``"480x640"`` -> ``(480, 640)`` (height, width)."""
    height, sep, width = text.lower().partition("x")
    if not sep or not height.strip().isdigit() or not width.strip().isdigit() or 0 in (int(height), int(width)):
        raise ConfigError(f"--image-size '{text}' must be HEIGHTxWIDTH with sizes >= 1, e.g. 480x640")
    return int(height), int(width)


def _values(text: str | None, flag: str, dimension: str, dims: list[str]) -> tuple[Any, ...]:
    from modelport.bench.sweep import default_values

    if text is not None:
        return tuple(parse_csv_ints(text, flag))
    if dimension in dims:
        return default_values(dimension)
    return (None,) if dimension != "callers" else (1,)


def _spec(args: argparse.Namespace) -> SweepSpec:
    from modelport.bench.sweep import SweepSpec, default_values, parse_dimensions

    dims = parse_dimensions(args.sweep) if args.sweep else []
    # --sweep batch wins over --batch left at its default; a listed --batch keeps its list
    batches = (
        default_values("batch") if "batch" in dims and args.batch == "1" else parse_csv_ints(args.batch, "--batch")
    )
    return SweepSpec(
        batches=tuple(batches),
        intra_op_threads=_values(args.threads, "--threads", "threads", dims),
        inter_op_threads=_values(args.inter_threads, "--inter-threads", "inter-threads", dims),
        callers=_values(args.callers, "--callers", "callers", dims),
        caller_mode=args.caller_mode,
    )


def _settings(args: argparse.Namespace) -> BenchSettings:
    from modelport.bench.harness import BenchSettings

    given: dict[str, Any] = {"warmup": args.warmup, "warmup_seconds": args.warmup_seconds}
    for key, value in (
        ("iterations", args.iterations),
        ("duration", args.duration),
        ("tolerance", args.stable),
        ("max_windows", args.max_windows),
    ):
        if value is not None:
            given[key] = value
    return BenchSettings(**given)


def _check_target(path: str, flag: str) -> None:
    """Fail before measuring, not after, when a report cannot be written where asked."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} '{target}' is a folder — give a file name")
    if not target.parent.is_dir():
        raise ConfigError(f"{flag} '{target}': folder '{target.parent}' does not exist — create it first")


def _providers(text: str | None) -> list[str] | Literal["auto"] | None:
    if text is None:
        return None
    if text.strip() == "auto":
        return "auto"
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise ConfigError(f"--providers '{text}' names no provider — e.g. CUDAExecutionProvider,CPUExecutionProvider")
    return names


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    """A progress bar on a terminal's stderr; nothing when stderr is a pipe or a file."""
    err = console(stderr=True)
    if not enabled or not err.is_terminal:
        yield None
        return
    from rich.progress import Progress as Bar

    with Bar(console=err, transient=True) as bar:
        task = bar.add_task("measuring", total=None)

        def update(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        yield update


def run(args: argparse.Namespace) -> int:
    from modelport.bench.report import print_report, write_csv, write_html
    from modelport.bench.sweep import run_sweep

    spec = _spec(args)
    settings = _settings(args)
    image_size = parse_image_size(args.image_size)
    providers = _providers(args.providers)
    for path, flag in ((args.csv, "--csv"), (args.html, "--html")):
        if path is not None:
            _check_target(path, flag)
    with _progress(enabled=not args.json) as progress:
        report = run_sweep(
            args.model,
            spec,
            settings,
            plan=plan_from_args(args),
            pipeline=args.pipeline,
            image_size=image_size,
            providers=providers,
            progress=progress,
        )
    written = []
    if args.csv is not None:
        written.append(write_csv(report, args.csv))
    if args.html is not None:
        written.append(write_html(report, args.html))
    if args.json:
        emit_json(report.to_dict())
        return 0
    out = console()
    print_report(report, out, console(stderr=True))
    for path in written:
        out.print(f"wrote {path}")
    return 0
