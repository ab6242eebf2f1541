"""Benchmark reports: a terminal table, CSV, and one self-contained HTML file with inline SVG plots.

Why these forms: the table is for the person at the terminal, JSON (``SweepReport.to_dict``) and
CSV for scripts and spreadsheets, and the HTML page for a reader who wants to *see* the
distribution and the trade-off: a latency histogram per configuration, throughput against batch
size, and latency against throughput (the curve capacity planning reads). The page has no script
and loads nothing (a Content-Security-Policy of ``default-src 'none'`` makes sure of it), so it
opens anywhere, offline, and can be attached to a ticket. Files are written atomically.

The histogram comes from :mod:`modelport.report.svg`; the line chart with axes, ticks and a
legend is drawn here (:func:`line_chart_svg`), equally without a plotting library.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.bench.harness import BenchResult
from modelport.errors import ConfigError
from modelport.report import histogram_svg, write_text_atomic
from modelport.report.svg import Point, Series, line_chart_svg, nice_ticks

if TYPE_CHECKING:
    from rich.console import Console

    from modelport.bench.sweep import SweepReport

__all__ = [
    "CSV_COLUMNS",
    "MAX_HISTOGRAMS",
    "Point",
    "Series",
    "line_chart_svg",
    "nice_ticks",
    "print_report",
    "render_csv",
    "render_html",
    "write_csv",
    "write_html",
]

logger = logging.getLogger(__name__)

#: Histograms drawn in one page at most (one per configuration); the rest are named.
MAX_HISTOGRAMS = 48
_STAGE_ORDER = ("preprocess", "h2d", "compute", "d2h", "postprocess", "end_to_end")

#: Columns of :func:`render_csv` before the per-stage ones.
CSV_COLUMNS = (
    "label",
    "batch",
    "intra_op_threads",
    "inter_op_threads",
    "callers",
    "caller_mode",
    "iterations",
    "windows",
    "windows_used",
    "stabilised",
    "stable",
    "min_ms",
    "mean_ms",
    "median_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "std_ms",
    "cv",
    "throughput",
    "total_seconds",
    "rss_baseline_mb",
    "rss_peak_mb",
    "rss_delta_mb",
    "device_memory_mb",
)


# -------------------------------------------------------------------------------------------------
# shared helpers


def _series_name(config: dict[str, Any], *, without: Sequence[str]) -> str:
    """The settings a line stands for (those in ``without`` vary along it); defaults left out."""
    parts = []
    if "intra_op_threads" not in without and config.get("intra_op_threads"):
        parts.append(f"threads {config['intra_op_threads']}")
    if "inter_op_threads" not in without and config.get("inter_op_threads"):
        parts.append(f"inter-op {config['inter_op_threads']}")
    callers = int(config.get("callers", 1))
    if "callers" not in without and callers > 1:
        parts.append(f"{callers} callers")
    if config.get("caller_mode") == "sessions" and ("callers" in without or callers > 1):
        parts.append("one session per caller")
    return ", ".join(parts) or "default threads, 1 caller"


def _grouped(
    results: Sequence[BenchResult], without: Sequence[str], point: Callable[[BenchResult], Point]
) -> list[Series]:
    groups: dict[str, list[BenchResult]] = {}
    for result in results:
        groups.setdefault(_series_name(result.configuration, without=without), []).append(result)
    return [(name, [point(r) for r in members]) for name, members in groups.items()]


def _stage_names(results: Sequence[BenchResult]) -> list[str]:
    names = list(dict.fromkeys(n for r in results for n in [*r.stages, *r.unmeasured]))
    return sorted(
        names, key=lambda n: (_STAGE_ORDER.index(n.split(".")[0]) if n.split(".")[0] in _STAGE_ORDER else 9, n)
    )


def _stage_cell(result: BenchResult, name: str) -> str:
    if name in result.stages:
        stage = result.stages[name]
        return f"{stage.median_ms:.3f} / {stage.p99_ms:.3f} ({stage.share:.0%})"
    return result.unmeasured.get(name, "")


def _settled(result: BenchResult) -> str:
    if result.stabilised is None:
        return "not judged"
    return "yes" if result.stabilised else "NO"


def _memory(result: BenchResult) -> str:
    memory = result.memory
    if memory is None or memory.delta_mb is None:
        return "n/a"
    text = f"{memory.delta_mb:.1f}"
    if memory.device_mb is not None:
        text += f" (+{memory.device_mb:.0f} dev)"
    return text


# -------------------------------------------------------------------------------------------------
# terminal


def print_report(report: SweepReport, out: Console, err: Console | None = None) -> None:
    """The results table, the stage table (when there are stages), the recommendation and the warnings."""
    from rich.table import Table

    table = Table(title=f"bench {report.model} ({_engine_text(report.engine)})")
    for column in ("configuration", "iters", "windows", "settled", "min", "median", "p90", "p95", "p99", "max"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for column in ("items/s", "CV", "RSS Δ MB"):
        table.add_column(column, justify="right")
    for r in report.results:
        table.add_row(
            r.label,
            str(r.iterations),
            str(len(r.windows_ms)),
            _settled(r),
            *(f"{v:.3f}" for v in (r.min_ms, r.median_ms, r.p90_ms, r.p95_ms, r.p99_ms, r.max_ms)),
            f"{r.throughput:.1f}",
            f"{r.cv:.1%}",
            _memory(r),
        )
    out.print(table)
    out.print("latency in ms per call (one batch); RSS Δ: peak resident memory less that before the session")
    stages = _stage_names(report.results)
    if any(r.stages for r in report.results):
        staged = Table(title="stages: median / p99 ms (share of the mean end to end)")
        staged.add_column("configuration")
        for name in stages:
            staged.add_column(name, justify="right")
        for r in report.results:
            staged.add_row(r.label, *(_stage_cell(r, name) for name in stages))
        out.print(staged)
    else:
        unmeasured = dict(report.results[0].unmeasured) if report.results else {}
        if unmeasured:
            out.print("; ".join(f"{k.upper()}: {v}" for k, v in unmeasured.items()))
    rec = report.recommendation
    out.print(f"[bold]best throughput:[/] {rec.throughput.label} — {rec.throughput.reason}")
    out.print(f"[bold]best latency:[/]    {rec.latency.label} — {rec.latency.reason}")
    for note in rec.notes:
        out.print(f"note: {note}")
    for r in report.results:
        for warning in r.warnings:
            (err or out).print(f"[yellow]warning ({r.label}):[/] {warning}")


def _engine_text(engine: dict[str, Any]) -> str:
    providers = engine.get("providers") or [engine.get("backend", "?")]
    shown = ", ".join(str(p).replace("ExecutionProvider", "") for p in providers)
    return f"{engine.get('backend', '?')} {shown}"


# -------------------------------------------------------------------------------------------------
# CSV


def _csv_row(r: BenchResult, stages: Sequence[str]) -> list[Any]:
    config = r.configuration
    memory = r.memory
    row: list[Any] = [
        r.label,
        r.batch,
        config.get("intra_op_threads", ""),
        config.get("inter_op_threads", ""),
        config.get("callers", 1),
        config.get("caller_mode", "shared"),
        r.iterations,
        len(r.windows_ms),
        r.windows_used,
        "" if r.stabilised is None else r.stabilised,
        r.stable,
        *(f"{v:.6f}" for v in (r.min_ms, r.mean_ms, r.median_ms, r.p90_ms, r.p95_ms, r.p99_ms, r.max_ms, r.std_ms)),
        f"{r.cv:.6f}",
        f"{r.throughput:.6f}",
        f"{r.total_seconds:.6f}",
    ]
    for value in (
        memory.baseline_mb if memory else None,
        memory.peak_mb if memory else None,
        memory.delta_mb if memory else None,
        memory.device_mb if memory else None,
    ):
        row.append("" if value is None else f"{value:.3f}")
    for name in stages:
        if name in r.stages:
            row.extend([f"{r.stages[name].median_ms:.6f}", f"{r.stages[name].p99_ms:.6f}"])
        else:
            note = r.unmeasured.get(name, "")
            row.extend([note, note])
    row.append(" | ".join(r.warnings))
    return row


def render_csv(report: SweepReport) -> str:
    """One row per configuration: settings, statistics, memory, per-stage median and p99, warnings."""
    stages = _stage_names(report.results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    stage_columns = [f"{name}_{stat}_ms" for name in stages for stat in ("median", "p99")]
    writer.writerow([*CSV_COLUMNS, *stage_columns, "warnings"])
    for r in report.results:
        writer.writerow(_csv_row(r, stages))
    return buffer.getvalue()


def write_csv(report: SweepReport, path: str | os.PathLike[str]) -> Path:
    """:func:`render_csv` written atomically to ``path``."""
    return write_text_atomic(path, render_csv(report))


# -------------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 12px; }
td, th { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f2f2f2; } .l { text-align: left; }
.warn { color: #a33; } .note { color: #555; }
figure { display: inline-block; margin: 8px 16px 8px 0; vertical-align: top; }
figcaption { font-size: 12px; color: #555; max-width: 600px; }
pre { background: #f7f7f7; padding: 8px; font-size: 11px; overflow-x: auto; }
"""


def _histogram(result: BenchResult) -> str:
    hist = result.histogram
    edges, counts = hist["edges_ms"], hist["counts"]
    labels = [f"{edges[i]:.3g}" for i in range(len(counts))]
    svg_counts = [*counts, hist["overflow"]]
    labels.append(f"> p99 {hist['overflow_from_ms']:.3g}")
    return histogram_svg(
        svg_counts,
        labels,
        title=f"latency (ms) of {result.label}: {result.iterations} calls",
        log_scale=False,
        highlight_from=len(counts),
    )


def _throughput_vs_batch(results: Sequence[BenchResult]) -> str:
    series = _grouped(
        results,
        ("batch",),
        lambda r: (float(r.batch), r.throughput, f"{r.label}: {r.throughput:.4g} items/s"),
    )
    batches = sorted({r.batch for r in results})
    log_x = batches[-1] / batches[0] >= 4
    return line_chart_svg(
        [(name, sorted(points)) for name, points in series],
        title="throughput vs batch size",
        x_label="batch size",
        y_label="items / s",
        log_x=log_x,
        x_ticks=[float(b) for b in batches],
    )


def _latency_vs_throughput(results: Sequence[BenchResult]) -> str:
    series = _grouped(
        results,
        ("batch", "callers"),
        lambda r: (
            r.throughput,
            r.p99_ms,
            f"{r.label}: {r.throughput:.4g} items/s, p99 {r.p99_ms:.4g} ms, median {r.median_ms:.4g} ms",
        ),
    )
    return line_chart_svg(
        [(name, sorted(points)) for name, points in series],
        title="p99 latency vs throughput",
        x_label="throughput (items / s)",
        y_label="p99 latency (ms)",
    )


def _results_table(results: Sequence[BenchResult]) -> str:
    head = (
        "<tr><th class='l'>configuration</th><th>iterations</th><th>windows</th><th>settled</th><th>min</th>"
        "<th>median</th><th>p90</th><th>p95</th><th>p99</th><th>max</th><th>items/s</th><th>CV</th>"
        "<th>RSS Δ MB</th></tr>"
    )
    rows = []
    for r in results:
        cells = [
            str(r.iterations),
            str(len(r.windows_ms)),
            _settled(r),
            *(f"{v:.3f}" for v in (r.min_ms, r.median_ms, r.p90_ms, r.p95_ms, r.p99_ms, r.max_ms)),
            f"{r.throughput:.1f}",
            f"{r.cv:.1%}",
            _memory(r),
        ]
        rows.append(f"<tr><td class='l'>{escape(r.label)}</td>{''.join(f'<td>{escape(c)}</td>' for c in cells)}</tr>")
    return f"<table id='results'>{head}{''.join(rows)}</table>"


def _stages_table(results: Sequence[BenchResult]) -> str:
    stages = _stage_names(results)
    if not any(r.stages for r in results):
        unmeasured = results[0].unmeasured
        shown = "; ".join(f"{k.upper()}: {v}" for k, v in unmeasured.items())
        return f"<p class='note' id='stages'>No pipeline: one stage, the model. {escape(shown)}</p>" if shown else ""
    head = "<tr><th class='l'>configuration</th>" + "".join(f"<th>{escape(s)}</th>" for s in stages) + "</tr>"
    rows = [
        f"<tr><td class='l'>{escape(r.label)}</td>"
        + "".join(f"<td>{escape(_stage_cell(r, s))}</td>" for s in stages)
        + "</tr>"
        for r in results
    ]
    return (
        "<h2>Stages</h2><p class='note'>median / p99 ms per iteration (share of the mean end to end)</p>"
        f"<table id='stages'>{head}{''.join(rows)}</table>"
    )


def _recommendation(report: SweepReport) -> str:
    rec = report.recommendation
    items = [
        f"<li><b>best throughput:</b> {escape(rec.throughput.label)} — {escape(rec.throughput.reason)}</li>",
        f"<li><b>best latency:</b> {escape(rec.latency.label)} — {escape(rec.latency.reason)}</li>",
        *(f"<li class='note'>{escape(note)}</li>" for note in rec.notes),
    ]
    return f"<h2>Recommendation</h2><ul id='recommendation'>{''.join(items)}</ul>"


def _figures(results: Sequence[BenchResult]) -> str:
    shown = results[:MAX_HISTOGRAMS]
    histograms = "".join(
        f"<figure class='histogram'>{_histogram(r)}<figcaption>{escape(r.label)}: bins from the minimum to p99; "
        "the last bar counts the calls above p99</figcaption></figure>"
        for r in shown
    )
    if len(results) > len(shown):
        histograms += f"<p class='note'>{len(results) - len(shown)} more configurations not drawn</p>"
    return (
        "<h2>Plots</h2>"
        f"<figure id='throughput-vs-batch'>{_throughput_vs_batch(results)}"
        "<figcaption>items per second at each batch size, one line per thread/caller setting</figcaption></figure>"
        f"<figure id='latency-vs-throughput'>{_latency_vs_throughput(results)}"
        "<figcaption>p99 latency against throughput: each point a configuration (hover for details)"
        "</figcaption></figure>"
        f"<h2>Latency histograms</h2><div id='latency-histograms'>{histograms}</div>"
    )


def render_html(report: SweepReport) -> str:
    """One self-contained page: recommendation, tables, the three plots, warnings, settings."""
    if not report.results:
        raise ConfigError(f"the report of '{report.model}' has no results — measure at least one configuration")
    warnings = [f"<li class='warn'>{escape(r.label)}: {escape(w)}</li>" for r in report.results for w in r.warnings]
    details = {
        "engine": report.engine,
        "host": report.host,
        "settings": report.settings,
        "inputs": report.inputs,
        "pipeline": report.pipeline,
    }
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>modelport bench: {escape(report.model)}</title><style>{_CSS}</style></head><body>"
        f"<h1>modelport bench: {escape(report.model)}</h1>"
        f"<p class='note'>{escape(_engine_text(report.engine))} on {escape(str(report.host.get('platform', '?')))}, "
        f"{escape(str(report.host.get('cpus', '?')))} CPUs. Latency in ms per call (one batch).</p>"
        f"{_recommendation(report)}"
        f"<h2>Results</h2>{_results_table(report.results)}"
        f"{_stages_table(report.results)}"
        f"{_figures(report.results)}"
        f"<h2>Warnings</h2><ul id='warnings'>{''.join(warnings) or '<li>none</li>'}</ul>"
        f"<h2>Settings and inputs</h2><pre>{escape(json.dumps(details, indent=2, default=str))}</pre>"
        "</body></html>\n"
    )


def write_html(report: SweepReport, path: str | os.PathLike[str]) -> Path:
    """:func:`render_html` written atomically to ``path``."""
    return write_text_atomic(path, render_html(report))
