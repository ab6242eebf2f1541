"""The deploy report: ``report.md`` for people, ``report.json`` for tools."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelport.deploy.job import DeployResult

__all__ = ["bench_table", "render_markdown", "write_reports"]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "—" if x is None else format(x, spec)


def bench_table(result: DeployResult) -> list[list[str]]:
    """Rows: batch, model, median/p90/p99 ms, throughput, CV, speedup vs input."""
    rows = []
    for b in result.bench:
        base = next(x for x in result.bench if x.batch == b.batch and x.name == "fp32 (input)")
        rows.append(
            [
                str(b.batch),
                b.name,
                f"{b.median_ms:.2f}",
                f"{b.p90_ms:.2f}",
                f"{b.p99_ms:.2f}",
                f"{b.throughput:.1f}",
                f"{b.cv:.1%}",
                f"{base.median_ms / b.median_ms:.2f}x",
            ]
        )
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(r) + " |" for r in rows)
    return "\n".join(lines)


def render_markdown(result: DeployResult) -> str:
    s = result.summary
    parts = [f"# Deploy report: {result.name}", "", f"Source: {result.source}", ""]
    parts += [
        "## Model",
        "",
        _table(
            ["", "name", "dtype", "shape"],
            [["input", i.name, str(i.dtype), i.shape_str()] for i in s.inputs]
            + [["output", o.name, str(o.dtype), o.shape_str()] for o in s.outputs],
        ),
        "",
        f"{s.node_count} nodes, {s.parameter_count:,} parameters, MACs {_fmt(s.macs, ',')} "
        f"(at {s.macs_input_shapes}), quantization: {s.quantization}",
        "",
    ]
    o = result.optimized
    parts += [
        "## Optimize (every pass verified against the input model)",
        "",
        _table(
            ["pass", "status", "nodes", "bytes", "max abs err", "tolerance", "note"],
            [
                [
                    p.name,
                    p.status,
                    f"{p.nodes_before} → {p.nodes_after}",
                    f"{p.bytes_before:,} → {p.bytes_after:,}",
                    _fmt(p.max_abs_error),
                    p.tolerance,
                    p.reason,
                ]
                for p in o.steps
            ],
        ),
        "",
        f"Nodes {o.nodes_before} → {o.nodes_after}; verified at batch {o.verified_batches}.",
        "",
    ]
    q = result.quantized
    if q is not None:
        parts += [
            "## Quantize",
            "",
            f"Calibration: {result.calibration}.",
            "",
            f"INT8 static ({q.settings.get('format')}, per-channel={q.settings.get('per_channel')}): "
            f"worst output SQNR {q.worst_sqnr_db:.1f} dB, worst cosine {q.worst_cosine:.5f}, "
            f"speed vs FP32 {_fmt(q.speedup, '.2f')}x.",
            "",
        ]
    parts += ["## Chosen", "", f"**{result.chosen}** — {result.choice_reason}", ""]
    parts += [
        "## Compare: final vs input model",
        "",
        f"Criterion: {result.comparison_floor}",
        "",
        _table(
            ["inputs", "batch", "output", "max abs", "mean abs", "cosine", "SQNR dB", "result"],
            [
                [
                    r.fill,
                    str(r.batch),
                    d.name,
                    _fmt(d.max_abs),
                    _fmt(d.mean_abs),
                    f"{d.cosine:.6f}",
                    _fmt(d.sqnr_db, ".1f"),
                    "pass" if d.passed else f"FAIL: {d.reason}",
                ]
                for r in result.comparison.runs
                for d in r.diffs
            ],
        ),
        "",
    ]
    parts += [
        "## Benchmark (ONNX Runtime CPU, side by side)",
        "",
        _table(
            ["batch", "model", "median ms", "p90 ms", "p99 ms", "items/s", "CV", "speedup"],
            bench_table(result),
        ),
        "",
    ]
    if result.repository is not None:
        parts += ["## Serve", "", "```", f"modelport serve {result.repository}", "```", ""]
    if result.warnings:
        parts += ["## Warnings", "", *[f"- {w}" for w in result.warnings], ""]
    return "\n".join(parts)


def write_reports(result: DeployResult) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.json`` into the result's output folder."""
    md = result.outdir / "report.md"
    js = result.outdir / "report.json"
    _atomic_write(md, render_markdown(result))
    _atomic_write(js, json.dumps(result.to_dict(), indent=2, default=str))
    return md, js
