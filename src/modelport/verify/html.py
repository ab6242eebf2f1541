"""A :class:`~modelport.verify.report.VerifyReport` as one self-contained HTML page.

One file that opens anywhere and can be attached to a ticket: inline CSS, inline SVG charts from
:mod:`modelport.report.svg`, no script, no font, image or stylesheet fetched from anywhere. Every
string that comes from a model or a user (names, messages, settings) is escaped.

The page follows the report's sections: verdict, findings, engines, signature, outputs per run,
one error histogram per output, batch consistency, NaN/Inf, accuracy with its regressions, speed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from modelport.report.svg import bar_chart_svg, histogram_svg
from modelport.verify.compare import BatchComparison
from modelport.verify.diff import HISTOGRAM_BINS, HISTOGRAM_EDGES, OutputDiff
from modelport.verify.report import VerifyReport

__all__ = ["render_html"]

#: Rows of the regressions table shown (the count is always given).
MAX_REGRESSION_ROWS = 50

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222;font-size:14px}
h1{margin:0;font-size:22px}h2{border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:1.6em;font-size:17px}
h3{font-size:14px;margin:1em 0 .3em}
header{padding:.8em 1em;border-radius:6px}header.pass{background:#e3f4e1}header.fail{background:#fbe3df}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 7px;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.fail{color:#a1260d}.warn{color:#8a6200}.ok{color:#2b7a2b}li{margin:.2em 0}
figure{display:inline-block;margin:.3em 1em .3em 0}figcaption{font-size:12px;color:#555}
.muted{color:#777}
"""


def render_html(report: VerifyReport) -> str:
    """The whole report as an HTML document (a string; write it with ``write_text_atomic``)."""
    title = f"modelport verify: {report.candidate} vs {report.reference}"
    body = [
        _verdict(report),
        _findings(report),
        _engines(report),
        _signature(report),
        _outputs(report),
        _histograms(report),
        _batch_consistency(report),
        _nonfinite(report),
        _accuracy(report),
        _speed(report),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# helpers --------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return escape(str(value))


def _section(key: str, heading: str, content: str) -> str:
    return f'<section id="{key}"><h2>{escape(heading)}</h2>{content}</section>'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """``rows`` hold HTML already (escape cells with :func:`_e` or :func:`_num`)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(cell if cell.startswith("<td") else f"<td>{cell}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(value: float | int | None, spec: str = ".3g") -> str:
    if value is None:
        return '<td class="num">–</td>'
    if isinstance(value, float) and not math.isfinite(value):
        return f'<td class="num">{escape(str(value))}</td>'
    return f'<td class="num">{format(value, spec) if isinstance(value, float) else value}</td>'


def _result(passed: bool, reason: str = "") -> str:
    if passed:
        return '<td class="ok">pass</td>'
    return f'<td class="fail">FAIL {escape(reason)}</td>'


def _setting(value: Any) -> str:
    """An engine setting as text: lists joined, mappings as JSON."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _shape(shape: Sequence[Any] | None) -> str:
    if shape is None:
        return "[unknown rank]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


# sections -------------------------------------------------------------------------------------


def _verdict(report: VerifyReport) -> str:
    state = "pass" if report.passed else "fail"
    tol = f"{report.tolerance}; integer outputs: {report.lsb} LSB"
    return (
        f'<header id="verdict" class="{state}"><h1>{escape(report.verdict)}</h1>'
        f"<p>candidate <b>{_e(report.candidate)}</b> against reference <b>{_e(report.reference)}</b> "
        f"&middot; tolerance {escape(tol)}</p></header>"
    )


def _findings(report: VerifyReport) -> str:
    findings = report.findings
    if not findings:
        return _section("findings", "Findings", '<p class="ok">No problems found.</p>')
    items = "".join(
        f'<li class="{f.severity}"><b>{escape(f.severity)}</b> [{escape(f.check)}] {escape(f.message)}</li>'
        for f in findings
    )
    return _section("findings", "Findings", f"<ul>{items}</ul>")


def _engines(report: VerifyReport) -> str:
    sides = ("candidate", "reference")
    keys = list(dict.fromkeys(k for side in sides for k in report.engines.get(side, {})))
    rows = [[_e(k), *(_e(_setting(report.engines.get(side, {}).get(k, "–"))) for side in sides)] for k in keys]
    return _section("engines", "Engines", _table(["setting", *sides], rows))


def _signature(report: VerifyReport) -> str:
    rows = []
    for t in report.signature.tensors:
        cand = f"{t.candidate.dtype} {_shape(t.candidate.shape)}" if t.candidate else "–"
        ref = f"{t.reference.dtype} {_shape(t.reference.shape)}" if t.reference else "–"
        status = (
            _result(False, "; ".join(t.differences))
            if t.differences
            else ('<td class="ok">same</td>' if not t.notes else f'<td class="warn">{_e("; ".join(t.notes))}</td>')
        )
        rows.append([_e(t.kind), _e(t.name), _e(cand), _e(ref), status])
    counts = "".join(f'<p class="fail">{_e(c)}</p>' for c in report.signature.counts)
    return _section(
        "signature", "Signature", counts + _table(["kind", "name", "candidate", "reference", "result"], rows)
    )


_OUTPUT_HEADER = [
    "output",
    "result",
    "max abs",
    "max rel",
    "mean abs",
    "cosine",
    "SQNR dB",
    "needs atol",
    "needs rtol",
    "max LSB",
    "differing",
    "NaN c/r",
    "Inf c/r",
]


def _diff_row(d: OutputDiff) -> list[str]:
    return [
        _e(d.name),
        _result(d.passed, d.reason),
        _num(d.max_abs),
        _num(d.max_rel),
        _num(d.mean_abs),
        _num(d.cosine, ".6f"),
        _num(d.sqnr_db, ".1f"),
        _num(d.required_atol),
        _num(d.required_rtol),
        _num(d.max_lsb),
        _num(d.differing),
        _e(f"{d.nan_candidate}/{d.nan_reference}"),
        _e(f"{d.inf_candidate}/{d.inf_reference}"),
    ]


def _inputs_line(run: BatchComparison) -> str:
    parts = [
        f"{name} {_shape(info.get('shape'))} {info.get('dtype', '')}: {info.get('values', '')}"
        for name, info in run.inputs.items()
        if isinstance(info, dict)
    ]
    return f'<p class="muted">inputs: {escape("; ".join(parts))}</p>'


def _outputs(report: VerifyReport) -> str:
    parts = [f'<p class="muted">{_e(n)}</p>' for n in report.notes]
    for run in report.runs:
        parts.append(f"<h3>batch {run.batch}, {_e(run.fill)} inputs</h3>{_inputs_line(run)}")
        parts.append(_table(_OUTPUT_HEADER, (_diff_row(d) for d in run.diffs)))
    if report.data is not None:
        data = report.data
        failed = f"; {data.failed_count} failing: {', '.join(data.failed_samples)}" if data.failed_count else ""
        parts.append(f"<h3>user data: {_e(data.source)} ({data.samples} samples{_e(failed)})</h3>")
        parts.append(_inputs_line(data.comparison))
        parts.append(_table(_OUTPUT_HEADER, (_diff_row(d) for d in data.comparison.diffs)))
    if not report.runs and report.data is None:
        parts.append('<p class="fail">No outputs were compared.</p>')
    return _section("outputs", "Outputs", "".join(parts))


def _highlight_from(report: VerifyReport, integer: bool) -> int:
    """First histogram bin at or beyond the tolerance (bins: 0, <1e-9, decades..., >=1e2, non-finite)."""
    limit = float(report.lsb) if integer else report.tolerance.atol
    if limit <= 0:
        return 1
    for i, lower in enumerate(HISTOGRAM_EDGES):
        if lower >= limit:
            return i + 2
    return len(HISTOGRAM_BINS) - 1  # beyond the last decade: only non-finite values are surely out


def _histograms(report: VerifyReport) -> str:
    sums = report.histograms()
    if not sums:
        return _section("histograms", "Error histograms", '<p class="muted">No output was compared.</p>')
    integer = {d.name for run, _ in report.comparisons() for d in run.diffs if d.max_lsb is not None}
    figures = []
    for name, counts in sums.items():
        is_int = name in integer
        start = _highlight_from(report, is_int)
        limit = f"{report.lsb} LSB" if is_int else f"atol={report.tolerance.atol:g}"
        svg = histogram_svg(counts, HISTOGRAM_BINS, title=f"|error| of output '{name}'", highlight_from=start)
        caption = f"output '{name}': {sum(counts)} elements over all runs; red bins are at or beyond {limit}"
        figures.append(f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>")
    return _section("histograms", "Error histograms", "".join(figures))


def _batch_consistency(report: VerifyReport) -> str:
    if not report.batch_consistency:
        text = "Not checked: no batch size above 1 was run."
        return _section("batch-consistency", "Batch consistency", f'<p class="muted">{text}</p>')
    rows = []
    for check in report.batch_consistency:
        for o in check.outputs:
            worst = o.worst
            result = _result(o.passed, worst.reason if worst is not None else "")
            if o.note:
                result = f'<td class="warn">{_e(o.note)}</td>'
            rows.append(
                [
                    _e(check.side),
                    _e(check.runner),
                    _num(check.batch),
                    _e(check.fill),
                    _e(o.output),
                    _e(", ".join(map(str, check.rows))),
                    _e(", ".join(map(str, o.rows_differing)) or "none"),
                    _num(worst.max_abs if worst else None),
                    _num(worst.max_lsb if worst else None),
                    result,
                ]
            )
    header = [
        "side",
        "runner",
        "batch",
        "inputs",
        "output",
        "rows checked",
        "rows differing",
        "max abs",
        "max LSB",
        "result",
    ]
    intro = '<p class="muted">Each row of batch N against the same sample run alone at batch 1, on each side.</p>'
    return _section("batch-consistency", "Batch consistency", intro + _table(header, rows))


def _nonfinite(report: VerifyReport) -> str:
    entries = report.nonfinite()
    if not entries:
        return _section("nonfinite", "NaN / Inf", '<p class="ok">No NaN or Inf in any output.</p>')
    rows = [
        [_e(e.output), _e(e.side), _num(e.nan), _num(e.inf), _e(f"{e.other_nan}/{e.other_inf}"), _e(e.where)]
        for e in entries
    ]
    return _section(
        "nonfinite", "NaN / Inf", _table(["output", "side", "NaN", "Inf", "other side NaN/Inf", "where"], rows)
    )


def _accuracy(report: VerifyReport) -> str:
    acc = report.accuracy
    if acc is None:
        text = "Not measured: give data with labels, or a metric (--data, --metric)."
        return _section("accuracy", "Accuracy", f'<p class="muted">{text}</p>')
    what = acc.metric if acc.labelled else f"{acc.metric} (agreement with the reference: the data has no labels)"
    summary = _table(
        ["metric", "samples", "reference", "candidate", "delta", "regressions", "improvements"],
        [
            [
                _e(what),
                _num(acc.samples),
                _num(acc.reference_score, ".4f"),
                _num(acc.candidate_score, ".4f"),
                _num(acc.delta, "+.4f"),
                _num(len(acc.regressions)),
                _num(len(acc.improvements)),
            ]
        ],
    )
    if not acc.regressions:
        return _section("accuracy", "Accuracy", summary + '<p class="ok">No sample regressed.</p>')
    shown = acc.regressions[:MAX_REGRESSION_ROWS]
    rows = [
        [
            _num(c.index),
            _e(c.name),
            _e(c.label),
            _e(c.reference),
            _e(c.candidate),
            _num(c.reference_score, ".3g"),
            _num(c.candidate_score, ".3g"),
        ]
        for c in shown
    ]
    more = len(acc.regressions) - len(shown)
    tail = f'<p class="muted">and {more} more (all are in the JSON report)</p>' if more > 0 else ""
    regressions = "<h3>Regressions</h3>" + _table(
        ["index", "sample", "label", "reference", "candidate", "ref score", "cand score"], rows
    )
    return _section("accuracy", "Accuracy", summary + regressions + tail)


def _speed(report: VerifyReport) -> str:
    if not report.speed:
        return _section("speed", "Speed", '<p class="muted">No inference was timed.</p>')
    bars = [(f"{s.side} batch {s.batch}", s.mean_ms) for s in report.speed]
    chart = bar_chart_svg(bars, title="mean inference latency", unit="ms")
    rows = [[_e(s.side), _e(s.runner), _num(s.batch), _num(s.runs), _num(s.mean_ms, ".3f")] for s in report.speed]
    note = '<p class="muted">Mean engine time over the runs verify made (informational, not a benchmark).</p>'
    return _section("speed", "Speed", note + chart + _table(["side", "runner", "batch", "runs", "mean ms"], rows))
