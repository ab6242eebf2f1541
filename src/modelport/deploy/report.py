"""The deploy report: ``report.md`` and ``report.html`` for people, ``report.json`` for tools.

All three are rendered from :meth:`DeployResult.to_dict`-level data (plain dicts), which is also what
the cache stores, so a run that reused every stage reports exactly what the original run measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.report import write_text_atomic

if TYPE_CHECKING:
    from modelport.deploy.job import DeployResult

__all__ = ["bench_table", "render_markdown", "shape_text", "write_reports"]


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    return format(x, spec)


def shape_text(spec: dict[str, Any]) -> str:
    shape = spec.get("shape")
    if shape is None:
        return "?"
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def bench_table(result: DeployResult) -> list[list[str]]:
    """Rows: batch, model, median/p90/p99 ms, throughput, CV, speedup vs input."""
    rows = []
    for b in result.bench:
        base = next(x for x in result.bench if x["batch"] == b["batch"] and x["name"] == "fp32 (input)")
        rows.append(
            [
                str(b["batch"]),
                b["name"],
                f"{b['median_ms']:.2f}",
                f"{b['p90_ms']:.2f}",
                f"{b['p99_ms']:.2f}",
                f"{b['throughput']:.1f}",
                f"{b['cv']:.1%}",
                f"{base['median_ms'] / b['median_ms']:.2f}x",
            ]
        )
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(r) + " |" for r in rows)
    return "\n".join(lines)


def _model_md(result: DeployResult) -> list[str]:
    s = result.summary
    rows = [["input", i["name"], str(i["dtype"]), shape_text(i)] for i in s["inputs"]]
    rows += [["output", o["name"], str(o["dtype"]), shape_text(o)] for o in s["outputs"]]
    return [
        "## Model",
        "",
        _table(["", "name", "dtype", "shape"], rows),
        "",
        f"{s['node_count']} nodes, {s['parameter_count']:,} parameters, MACs {_fmt(s.get('macs'), ',')}, "
        f"quantization: {s.get('quantization')}",
        "",
    ]


def _stages_md(result: DeployResult) -> list[str]:
    rows = [[s.name, s.status, f"{s.seconds:.2f}", s.key, s.note] for s in result.stages]
    reused = result.reused
    line = f"Reused from the cache: {', '.join(reused)}." if reused else "No stage was reused from the cache."
    return ["## Stages", "", _table(["stage", "status", "seconds", "cache key", "note"], rows), "", line, ""]


def _optimize_md(o: dict[str, Any]) -> list[str]:
    rows = [
        [
            p["name"],
            p["status"],
            f"{p['nodes_before']} → {p['nodes_after']}",
            f"{p['bytes_before']:,} → {p['bytes_after']:,}",
            _fmt(p.get("max_abs_error")),
            str(p.get("tolerance", "")),
            str(p.get("reason", "")),
        ]
        for p in o["steps"]
    ]
    return [
        "## Optimize (every pass verified against the input model)",
        "",
        _table(["pass", "status", "nodes", "bytes", "max abs err", "tolerance", "note"], rows),
        "",
        f"Nodes {o['nodes_before']} → {o['nodes_after']}; verified at batch {o['verified_batches']}.",
        "",
    ]


def _quantize_md(result: DeployResult, q: dict[str, Any]) -> list[str]:
    settings = q.get("settings", {})
    lines = [
        "## Quantize",
        "",
        f"Calibration: {result.calibration}.",
        "",
        f"{q['mode']} (per-channel={settings.get('per_channel')}): "
        f"worst output SQNR {_fmt(q['worst_sqnr_db'], '.1f')} dB, "
        f"worst cosine {_fmt(q['worst_cosine'], '.5f')}, speed vs FP32 {_fmt(q.get('speedup'), '.2f')}x.",
        "",
    ]
    mixed = q.get("mixed_precision")
    if mixed and mixed.get("kept_fp32"):
        kept = ", ".join(f"{k['node']}" for k in mixed["kept_fp32"])
        lines += [f"Layers kept in FP32 to meet {mixed.get('budget')}: {kept}.", ""]
    return lines


def _compare_md(result: DeployResult) -> list[str]:
    report = result.compare.get("report") or {"runs": []}
    rows = [
        [
            r["fill"],
            str(r["batch"]),
            d["name"],
            _fmt(d["max_abs"]),
            _fmt(d["mean_abs"]),
            _fmt(d["cosine"], ".6f"),
            _fmt(d["sqnr_db"], ".1f"),
            "pass" if d["passed"] else f"FAIL: {d.get('reason', '')}",
        ]
        for r in report["runs"]
        for d in r["outputs"]
    ]
    return [
        "## Compare: final vs input model",
        "",
        f"Criterion: {result.compare.get('criterion')}",
        "",
        _table(["inputs", "batch", "output", "max abs", "mean abs", "cosine", "SQNR dB", "result"], rows),
        "",
    ]


def _accuracy_md(a: dict[str, Any]) -> list[str]:
    return [
        "## Accuracy",
        "",
        f"{a['metric']} on {a['samples']} samples ({a.get('source', '')}"
        f"{'' if a['labelled'] else ', unlabelled: agreement with the input model'}): "
        f"input {a['reference_score']:.4f}, final {a['candidate_score']:.4f} (delta {a['delta']:+.4f}); "
        f"{len(a['regressions'])} samples got worse, {len(a['improvements'])} better.",
        "",
    ]


def _goals_md(result: DeployResult) -> list[str]:
    if not result.goals:
        return []
    rows = [
        [g.name, _fmt(g.goal, "g"), _fmt(g.measured, ".4g"), "met" if g.passed else "MISSED", g.detail]
        for g in result.goals
    ]
    return ["## Goals", "", _table(["goal", "target", "measured", "result", "detail"], rows), ""]


def render_markdown(result: DeployResult) -> str:
    parts = [f"# Deploy report: {result.name}", "", f"Source: {result.source}", ""]
    parts += _goals_md(result)
    parts += _model_md(result)
    parts += _stages_md(result)
    if result.optimize is not None:
        parts += _optimize_md(result.optimize)
    if result.surgery is not None:
        rows = [
            [s["recipe"], f"{s['nodes_before']} → {s['nodes_after']}", "pass" if s["passed"] else "changed"]
            for s in result.surgery["steps"]
        ]
        parts += ["## Surgery", "", _table(["recipe", "nodes", "shared outputs"], rows), ""]
    if result.quantize is not None:
        parts += _quantize_md(result, result.quantize)
    parts += ["## Chosen", "", f"**{result.chosen}** — {result.choice_reason}", ""]
    parts += _compare_md(result)
    if result.accuracy is not None:
        parts += _accuracy_md(result.accuracy)
    parts += [
        "## Benchmark (side by side, interleaved)",
        "",
        _table(["batch", "model", "median ms", "p90 ms", "p99 ms", "items/s", "CV", "speedup"], bench_table(result)),
        "",
    ]
    if result.repository is not None:
        parts += ["## Serve", "", "```", f"modelport serve {result.repository}", "```", ""]
    parts += ["## Reproduce", "", "```", *result.commands(), "```", ""]
    if result.warnings:
        parts += ["## Warnings", "", *[f"- {w}" for w in result.warnings], ""]
    return "\n".join(parts)


def write_reports(result: DeployResult) -> tuple[Path, Path, Path]:
    """Write ``report.md``, ``report.json`` and ``report.html`` into the result's output folder."""
    from modelport.deploy.html import render_html

    result.outdir.mkdir(parents=True, exist_ok=True)
    md = write_text_atomic(result.outdir / "report.md", render_markdown(result))
    js = write_text_atomic(result.outdir / "report.json", json.dumps(result.to_dict(), indent=2, default=str))
    html = write_text_atomic(result.outdir / "report.html", render_html(result))
    return md, js, html
