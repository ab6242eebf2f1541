"""modelport analyze REPO: the serving configuration that gets the most out of the machine.

A thin layer over :func:`modelport.bench.analyze.analyze`: parses the search space and the
constraints, prints each candidate as it is measured, then the table of candidates and the best
configuration against the default; ``--apply`` writes the winner into the repository.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from modelport.cli._common import add_json, console, emit_json, parse_csv_ints
from modelport.errors import ConfigError

if TYPE_CHECKING:
    from modelport.bench.analyze import AnalysisResult, Measurement

__all__ = ["add_parser", "parse_batching", "parse_concurrency", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "analyze",
        help="search batching, instances and threads of the models in a repository under latency/memory limits",
    )
    p.add_argument("repo", help="a model repository folder REPO/<name>/<version>/model.onnx")
    p.add_argument("--model", help="models to analyze together, comma separated (default: all in REPO)")
    p.add_argument(
        "--concurrency",
        default="8",
        help="concurrent clients per model while measuring: one number for all, or a=4,b=8 (default %(default)s)",
    )
    limits = p.add_argument_group("constraints")
    limits.add_argument("--p99-ms", type=float, help="p99 latency budget of every model, in ms")
    limits.add_argument("--min-throughput", type=float, help="minimum inferences/s of every model")
    limits.add_argument("--max-memory-mb", type=float, help="largest peak resident memory of the server, in MiB")
    space = p.add_argument_group("search space")
    space.add_argument("--search", choices=["quick", "exhaustive"], default="quick", help="hill climbing or the grid")
    space.add_argument("--instances", help="instance counts to try, e.g. 1,2 (default: 1, 2, 4 ... up to the cores)")
    space.add_argument("--threads", help="intra-op threads per instance to try (default: 1, 2, 4 ... up to the cores)")
    space.add_argument(
        "--batching", default="off,0,1,5", help="dynamic batching: off and/or queue delays in ms (default %(default)s)"
    )
    space.add_argument("--max-batch", default="8", help="max batch sizes to try with batching on (default %(default)s)")
    space.add_argument("--max-candidates", type=int, help="measure at most this many candidates")
    space.add_argument(
        "--allow-oversubscribe",
        action="store_true",
        help="also try instances × threads over the number of cores",
    )
    measure = p.add_argument_group("measurement")
    measure.add_argument(
        "--window", type=float, default=2.0, help="seconds per measurement window (default %(default)s)"
    )
    measure.add_argument(
        "--max-windows",
        type=int,
        default=4,
        help="windows per candidate; figures from the last three (default %(default)s)",
    )
    measure.add_argument(
        "--no-confirm", action="store_true", help="do not measure the default and the best again at the end"
    )
    out = p.add_argument_group("output")
    out.add_argument("--apply", action="store_true", help="write the best settings into REPO/<model>/config.yaml")
    out.add_argument("--html", metavar="FILE", help="write an HTML report (scatter of candidates, Pareto front)")
    out.add_argument("--json-file", metavar="FILE", help="write the full result as JSON")
    add_json(p)
    p.set_defaults(run=run)


def parse_concurrency(text: str) -> int | dict[str, int]:
    """``8`` (every model) or ``a=4,b=8``."""
    if "=" not in text:
        if not text.strip().isdigit() or int(text) < 1:
            raise ConfigError(_BAD_CONCURRENCY.format(text=text))
        return int(text)
    table: dict[str, int] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if not name.strip() or not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(_BAD_CONCURRENCY.format(text=text))
        table[name.strip()] = int(value)
    return table


_BAD_CONCURRENCY = "--concurrency '{text}' must be one number of clients >= 1 (8) or name=clients pairs (a=4,b=8)"


def parse_batching(text: str) -> list[float | None]:
    """``off,0,1,5``: None for off, else queue delays in ms."""
    values: list[float | None] = []
    for item in (part.strip() for part in text.split(",")):
        if item == "off":
            values.append(None)
            continue
        try:
            values.append(float(item))
        except ValueError:
            raise ConfigError(
                f"--batching '{text}' must list 'off' and/or queue delays in ms, e.g. off,0,1,5 (got '{item}')"
            ) from None
    return values


def run(args: argparse.Namespace) -> int:
    from modelport.bench.analyze import Constraints, analyze, apply_best

    if args.window <= 0:
        raise ConfigError(f"--window must be positive seconds, got {args.window}")
    constraints = Constraints(p99_ms=args.p99_ms, min_throughput=args.min_throughput, max_memory_mb=args.max_memory_mb)
    log = console(stderr=True)

    def progress(m: Measurement) -> None:
        verdict = "ok" if m.feasible else "; ".join(m.violations)
        log.print(f"  {m.candidate.label}: {m.throughput:.1f} infer/s, p99 {m.p99_ms:.2f} ms — {verdict}")

    result = analyze(
        args.repo,
        models=[m.strip() for m in args.model.split(",") if m.strip()] if args.model else None,
        concurrency=parse_concurrency(args.concurrency),
        constraints=constraints,
        mode=args.search,
        instances=parse_csv_ints(args.instances, "--instances") if args.instances else None,
        threads=parse_csv_ints(args.threads, "--threads") if args.threads else None,
        batching=parse_batching(args.batching),
        max_batch=parse_csv_ints(args.max_batch, "--max-batch"),
        window_s=args.window,
        max_windows=args.max_windows,
        max_candidates=args.max_candidates,
        allow_oversubscribe=args.allow_oversubscribe,
        confirm=not args.no_confirm,
        progress=progress,
    )
    if args.html:
        result.write_html(args.html)
    if args.json_file:
        result.write_json(args.json_file)
    if args.json:
        applied = apply_best(args.repo, result) if args.apply else []
        data = result.to_dict()
        data["applied"] = [{"model": a.model, "path": str(a.path), "suggested": a.suggested} for a in applied]
        emit_json(data)
    else:
        _print(result)
        for item in apply_best(args.repo, result) if args.apply else []:
            console().print(item.message)
    return 0 if result.best is not None else 1


def _print(result: AnalysisResult) -> None:
    from rich.table import Table

    out = console()
    names = list(result.concurrency)
    table = Table(title=f"modelport analyze {result.repo} ({result.mode}, {result.cores} cores)")
    for col in ("#", "settings", *(f"{n} infer/s" for n in names), "total", "worst p99 ms", "MiB", "Pareto", "verdict"):
        table.add_column(col, justify="left" if col in ("settings", "verdict") else "right")
    front = {id(m) for m in result.pareto}
    for i, m in enumerate(result.measurements, 1):
        loads = [f"{m.loads[n].throughput:.1f}" if n in m.loads else "—" for n in names]
        mark = " (best)" if m is result.best else (" (default)" if m is result.default else "")
        table.add_row(
            str(i),
            m.candidate.label + mark,
            *loads,
            f"{m.throughput:.1f}" if m.ok else "—",
            f"{m.p99_ms:.2f}" if m.ok else "—",
            f"{m.memory_mb:.0f}" if m.memory_mb is not None else "—",
            "*" if id(m) in front else "",
            "; ".join(m.violations) or "ok",
        )
    out.print(table)
    for note in result.notes:
        out.print(f"[yellow]note:[/] {note}")
    pair = result.comparison
    if pair is None:
        out.print("[red]no candidate met the constraints[/] — relax them or widen the search")
        return
    default, best = pair
    where = "measured again back to back" if result.confirmation else "from the search"
    out.print(
        f"default: {default.throughput:.1f} infer/s, p99 {default.p99_ms:.2f} ms; best: {best.throughput:.1f} "
        f"infer/s, p99 {best.p99_ms:.2f} ms ({where}); gain {result.gain or 0:.2f}×"
    )
    out.print(f"best: {best.candidate.label}")
