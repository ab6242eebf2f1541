"""The deploy report as one self-contained HTML page: what a person reads after ``modelport deploy``.

One file that opens anywhere and can be attached to a ticket: inline CSS and inline SVG charts from
:mod:`modelport.report.svg` — no script, font, image or stylesheet fetched from anywhere. Every string
that comes from a model or a user is escaped. Each section is a ``<section id=...>`` and each chart a
``<figure class="chart">``, which is what the browser test checks for.

Sections: verdict and goals, model summary, stages (ran or reused), per-pass table, quantization
(sensitivity chart, layers kept in FP32), verification (tables and one error histogram per output),
accuracy, benchmark plots (latency distribution, FP32 vs final, throughput vs batch), the serving
config, and the commands that reproduce the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

import yaml

from modelport.report.svg import bar_chart_svg, histogram_svg, line_chart_svg
from modelport.verify.diff import HISTOGRAM_BINS

if TYPE_CHECKING:
    from modelport.deploy.job import DeployResult

__all__ = ["SECTIONS", "render_html"]

#: Section ids, in page order (a section without data says so instead of disappearing).
SECTIONS = (
    "verdict",
    "model",
    "stages",
    "optimize",
    "quantize",
    "verification",
    "accuracy",
    "benchmark",
    "serving",
    "reproduce",
)
#: Most sensitive layers drawn in the sensitivity chart (the table lists them all).
MAX_SENSITIVITY_BARS = 20

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222;font-size:14px}
h1{margin:0;font-size:22px}h2{border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:1.6em;font-size:17px}
h3{font-size:14px;margin:1em 0 .3em}header{padding:.8em 1em;border-radius:6px}
header.pass{background:#e3f4e1}header.fail{background:#fbe3df}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 7px;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.fail{color:#a1260d}.ok{color:#2b7a2b}.muted{color:#777}li{margin:.2em 0}
figure{display:inline-block;margin:.3em 1em .3em 0;vertical-align:top}figcaption{font-size:12px;color:#555}
pre{background:#f6f6f6;padding:.6em;border-radius:4px;overflow-x:auto}
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return _e(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return format(value, spec)


def _section(key: str, heading: str, content: str) -> str:
    return f'<section id="{key}"><h2>{_e(heading)}</h2>{content}</section>'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(svg: str, caption: str) -> str:
    return f'<figure class="chart">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


def _empty(text: str) -> str:
    return f'<p class="muted">{_e(text)}</p>'


def _verdict(result: DeployResult) -> str:
    ok = result.succeeded
    goals = "".join(
        f'<li class="{"ok" if g.passed else "fail"}">{_e(g.name)}: '
        f"{'met' if g.passed else 'MISSED'} — {_e(g.detail)}</li>"
        for g in result.goals
    )
    warnings = "".join(f'<li class="fail">{_e(w)}</li>' for w in result.warnings)
    return (
        f'<header class="{"pass" if ok else "fail"}"><h1>Deploy report: {_e(result.name)}</h1>'
        f"<p>{'All checks and goals met.' if ok else 'A check or goal was missed — see below.'} "
        f"Shipped <b>{_e(result.chosen)}</b>: {_e(result.choice_reason)}</p></header>"
        + _section(
            "verdict",
            "Goals",
            (f"<ul>{goals}</ul>" if goals else _empty("The recipe sets no goals."))
            + (f"<h3>Warnings</h3><ul>{warnings}</ul>" if warnings else ""),
        )
    )


def _bytes(value: Any) -> int:
    """Parameter bytes: a total, or a per-dtype mapping of them."""
    if isinstance(value, dict):
        return int(sum(value.values()))
    return int(value or 0)


def _model(result: DeployResult) -> str:
    s = result.summary
    from modelport.deploy.report import shape_text

    rows = [["input", _e(i["name"]), _e(i["dtype"]), _e(shape_text(i))] for i in s["inputs"]]
    rows += [["output", _e(o["name"]), _e(o["dtype"]), _e(shape_text(o))] for o in s["outputs"]]
    facts = (
        f"<p>Source: {_e(result.source)}. {s['node_count']} nodes, {s['parameter_count']:,} parameters "
        f"({_bytes(s.get('parameter_bytes')):,} bytes), MACs {_num(s.get('macs'), ',')}, opsets {_e(s.get('opsets'))}, "
        f"quantization: {_e(s.get('quantization'))}.</p>"
    )
    ops = sorted(s.get("op_histogram", {}).items(), key=lambda kv: -kv[1])[:12]
    chart = (
        _figure(bar_chart_svg([(op, float(n)) for op, n in ops], title="nodes per op type"), "op types") if ops else ""
    )
    return _section("model", "Model", facts + _table(["", "name", "dtype", "shape"], rows) + chart)


def _stages(result: DeployResult) -> str:
    rows = [
        [
            _e(s.name),
            f'<span class="{"ok" if s.status == "reused" else ""}">{_e(s.status)}</span>',
            _num(s.seconds, ".2f"),
            _e(s.key),
            _e(s.note),
        ]
        for s in result.stages
    ]
    reused = result.reused
    line = f"<p>Reused from the cache: {_e(', '.join(reused))}.</p>" if reused else "<p>No stage was reused.</p>"
    return _section("stages", "Stages", _table(["stage", "status", "seconds", "cache key", "note"], rows) + line)


def _optimize(result: DeployResult) -> str:
    o = result.optimize
    if o is None:
        return _section("optimize", "Optimize", _empty("The optimize stage was disabled."))
    rows = [
        [
            _e(p["name"]),
            _e(p["status"]),
            f"{p['nodes_before']} → {p['nodes_after']}",
            f"{p['bytes_before']:,} → {p['bytes_after']:,}",
            _num(p.get("max_abs_error")),
            _e(p.get("tolerance", "")),
            _e(p.get("reason", "")),
        ]
        for p in o["steps"]
    ]
    text = (
        f"<p>Nodes {o['nodes_before']} → {o['nodes_after']}, "
        f"every pass verified at batch {_e(o['verified_batches'])}.</p>"
    )
    return _section(
        "optimize",
        "Optimize (every pass verified)",
        text + _table(["pass", "status", "nodes", "bytes", "max abs err", "tolerance", "note"], rows),
    )


def _quantize(result: DeployResult) -> str:
    q = result.quantize
    if q is None:
        return _section("quantize", "Quantize", _empty("The quantize stage was disabled."))
    parts = [
        f"<p>Calibration: {_e(result.calibration)}.</p>",
        f"<p>{_e(q['mode'])}: worst output SQNR {_num(q['worst_sqnr_db'], '.1f')} dB, worst cosine "
        f"{_num(q['worst_cosine'], '.5f')}, {_num(q.get('speedup'), '.2f')}x the speed of FP32. "
        f"{'Shipped' if q.get('shipped') else 'Not shipped'}: {_e(q.get('reason', ''))}</p>",
    ]
    sensitivity = q.get("sensitivity") or (q.get("mixed_precision") or {}).get("sensitivity")
    if sensitivity and sensitivity.get("rows"):
        rows = [r for r in sensitivity["rows"] if not r.get("error")][:MAX_SENSITIVITY_BARS]
        finite = [
            float(r["sqnr_db"]) for r in rows if isinstance(r["sqnr_db"], int | float) and math.isfinite(r["sqnr_db"])
        ]
        cap = max(finite, default=100.0)
        bars = [(f"{r['node']} ({r['op_type']})", _bar_value(r["sqnr_db"], cap)) for r in rows]
        if bars:
            parts.append(
                _figure(
                    bar_chart_svg(bars, title="SQNR with only this layer in INT8 (lower = more sensitive)", unit=" dB"),
                    f"{len(sensitivity['rows'])} layers measured on {sensitivity.get('eval_samples')} samples, "
                    f"all-INT8 SQNR {_num(sensitivity['full_int8']['sqnr_db'], '.1f')} dB",
                )
            )
    else:
        parts.append(_empty("No per-layer sensitivity was measured (set stages.quantize.sensitivity: true)."))
    kept = (q.get("mixed_precision") or {}).get("kept_fp32") or []
    fp16_kept = q.get("fp16_kept_fp32") or {}
    if kept:
        parts.append(
            "<h3>Layers kept in FP32</h3>" + _table(["layer", "why"], [[_e(k.get("node")), _e(k)] for k in kept])
        )
    elif fp16_kept:
        parts.append(
            "<h3>Nodes kept in FP32</h3>" + _table(["node", "why"], [[_e(k), _e(v)] for k, v in fp16_kept.items()])
        )
    else:
        parts.append("<p>Layers kept in FP32: none.</p>")
    return _section("quantize", "Quantize", "".join(parts))


def _bar_value(value: Any, cap: float) -> float:
    if isinstance(value, int | float) and math.isfinite(value):
        return max(float(value), 0.0)
    return cap  # "inf": no measurable error


def _verification(result: DeployResult) -> str:
    report = result.compare.get("report") or {"runs": []}
    rows, figures = [], []
    for run in report["runs"]:
        for d in run["outputs"]:
            rows.append(
                [
                    _e(run["fill"]),
                    str(run["batch"]),
                    _e(d["name"]),
                    _num(d["max_abs"]),
                    _num(d["mean_abs"]),
                    _num(d["cosine"], ".6f"),
                    _num(d["sqnr_db"], ".1f"),
                    '<span class="ok">pass</span>'
                    if d["passed"]
                    else f'<span class="fail">FAIL: {_e(d.get("reason", ""))}</span>',
                ]
            )
            counts = d.get("histogram") or []
            if counts and sum(counts):
                title = f"|error| of '{d['name']}', batch {run['batch']}"
                figures.append(_figure(histogram_svg(counts, HISTOGRAM_BINS, title=title), f"{sum(counts):,} elements"))
    content = f"<p>Final model vs the input model. Criterion: {_e(result.compare.get('criterion'))}.</p>"
    content += _table(["inputs", "batch", "output", "max abs", "mean abs", "cosine", "SQNR dB", "result"], rows)
    content += "<h3>Error histograms</h3>" + ("".join(figures) or _empty("No output was compared."))
    if result.surgery is not None:
        srows = [
            [
                _e(s["recipe"]),
                f"{s['nodes_before']} → {s['nodes_after']}",
                "kept" if s["passed"] else "changed (intended)",
            ]
            for s in result.surgery["steps"]
        ]
        content += "<h3>Surgery</h3>" + _table(["recipe", "nodes", "outputs it had"], srows)
    return _section("verification", "Verification", content)


def _accuracy(result: DeployResult) -> str:
    a = result.accuracy
    if a is None:
        return _section("accuracy", "Accuracy", _empty("No dataset and metric in the recipe (stages.verify.dataset)."))
    rows = [
        ["input model", _num(a["reference_score"], ".4f")],
        ["final model", _num(a["candidate_score"], ".4f")],
        ["delta", _num(a["delta"], "+.4f")],
    ]
    text = (
        f"<p>{_e(a['metric'])} on {a['samples']} samples from {_e(a.get('source', ''))}; "
        f"{len(a['regressions'])} samples got worse, {len(a['improvements'])} better.</p>"
    )
    return _section("accuracy", "Accuracy", text + _table(["model", _e(a["metric"])], rows))


def _latency_figure(b: dict[str, Any]) -> str:
    h = b.get("histogram") or {}
    edges, counts = h.get("edges_ms") or [], h.get("counts") or []
    if not counts:
        return ""
    labels = [f"{edges[i]:.2f}" for i in range(len(counts))]
    title = f"latency of {b['name']}, batch {b['batch']} (ms, bin start)"
    caption = f"median {b['median_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms; {h.get('overflow', 0)} calls above p99"
    return _figure(histogram_svg(counts, labels, title=title, log_scale=False), caption)


def _benchmark(result: DeployResult) -> str:
    from modelport.deploy.report import bench_table

    if not result.bench:
        return _section("benchmark", "Benchmark", _empty("Nothing was benchmarked."))
    table = _table(
        ["batch", "model", "median ms", "p90 ms", "p99 ms", "items/s", "CV", "speedup"],
        [[_e(c) for c in row] for row in bench_table(result)],
    )
    latency = "".join(_latency_figure(b) for b in result.bench if b["batch"] == max(x["batch"] for x in result.bench))
    bars = [(f"{b['name']} b{b['batch']}", float(b["median_ms"])) for b in result.bench]
    compare = _figure(bar_chart_svg(bars, title="median latency: input FP32 vs final", unit=" ms"), "lower is better")
    series = []
    for name in dict.fromkeys(b["name"] for b in result.bench):
        points = [
            (float(b["batch"]), float(b["throughput"]), f"{b['throughput']:.1f}/s")
            for b in result.bench
            if b["name"] == name
        ]
        series.append((name, sorted(points)))
    batches = sorted({float(b["batch"]) for b in result.bench})
    throughput = _figure(
        line_chart_svg(
            series,
            title="throughput vs batch",
            x_label="batch",
            y_label="items/s",
            log_x=len(batches) > 1,
            x_ticks=batches,
        ),
        "higher is better",
    )
    return _section(
        "benchmark",
        "Benchmark (side by side, interleaved)",
        table + "<h3>Latency distribution</h3>" + latency + "<h3>FP32 vs final</h3>" + compare + throughput,
    )


def _serving(result: DeployResult) -> str:
    config = yaml.safe_dump(result.serve_config, sort_keys=False)
    return _section(
        "serving",
        "Serving config",
        f"<p>{_e(result.repository)}/{_e(result.name)}/config.yaml:</p><pre>{_e(config)}</pre>",
    )


def _reproduce(result: DeployResult) -> str:
    recipe = yaml.safe_dump(result.recipe.model_dump(mode="json"), sort_keys=False)
    commands = "\n".join(result.commands())
    return _section(
        "reproduce",
        "Reproduce",
        f"<pre>{_e(commands)}</pre><h3>Resolved recipe (recipe.yaml)</h3><pre>{_e(recipe)}</pre>",
    )


def render_html(result: DeployResult) -> str:
    """The whole report as one HTML string."""
    body = "".join(
        (
            _verdict(result),
            _model(result),
            _stages(result),
            _optimize(result),
            _quantize(result),
            _verification(result),
            _accuracy(result),
            _benchmark(result),
            _serving(result),
            _reproduce(result),
        )
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>modelport deploy: {_e(result.name)}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )
