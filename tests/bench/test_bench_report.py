"""Bench reports: the line chart, CSV and JSON content, the self-contained HTML page, the terminal table."""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from modelport.bench.harness import NOT_ON_CPU, BenchResult, MemoryUsage, StageStats, latency_histogram
from modelport.bench.report import (
    CSV_COLUMNS,
    line_chart_svg,
    nice_ticks,
    print_report,
    render_csv,
    render_html,
    write_csv,
    write_html,
)
from modelport.bench.sweep import SweepReport, recommend
from modelport.errors import ConfigError, ModelSaveError


def make_result(
    batch: int,
    throughput: float,
    p99: float,
    *,
    callers: int = 1,
    threads: int | None = None,
    stages: bool = False,
    warnings: list[str] | None = None,
) -> BenchResult:
    latencies = np.linspace(p99 / 4, p99, 50)
    result = BenchResult(
        name="net",
        batch=batch,
        iterations=50,
        warmup=5,
        total_seconds=0.5,
        min_ms=float(latencies.min()),
        mean_ms=float(latencies.mean()),
        median_ms=float(np.median(latencies)),
        p90_ms=p99 * 0.9,
        p95_ms=p99 * 0.95,
        p99_ms=p99,
        max_ms=p99,
        std_ms=float(latencies.std()),
        cv=0.02,
        throughput=throughput,
        warnings=list(warnings or []),
        windows_ms=[1.0, 1.01, 1.0],
        windows_used=3,
        stabilised=True,
        tolerance=0.05,
        unmeasured={"h2d": NOT_ON_CPU, "d2h": NOT_ON_CPU},
        memory=MemoryUsage(100.0, 140.5, 40.5, "VmHWM"),
        configuration={"batch": batch, "intra_op_threads": threads, "callers": callers, "caller_mode": "shared"},
        histogram=latency_histogram(latencies),
    )
    if stages:
        result.stages = {
            name: StageStats(name, ms, ms, ms, ms, ms, ms, ms, ms / 4.0)
            for name, ms in (("preprocess", 1.0), ("compute", 2.5), ("postprocess", 0.5), ("end_to_end", 4.0))
        }
    return result


def make_report(results: list[BenchResult], model: str = "net") -> SweepReport:
    return SweepReport(
        model=model,
        engine={"backend": "onnxruntime", "providers": ["CPUExecutionProvider"]},
        inputs={"x": {"shape": [1, 8], "dtype": "float32", "values": "standard normal"}},
        settings={"warmup": 5, "duration": 1.0},
        host={"cpus": 2, "platform": "Linux"},
        results=results,
        recommendation=recommend(results),
    )


@pytest.fixture
def report() -> SweepReport:
    return make_report(
        [
            make_result(1, 100.0, 2.0),
            make_result(8, 400.0, 20.0, warnings=["unstable: <b>noise</b>"]),
            make_result(1, 150.0, 3.0, callers=2),
            make_result(8, 420.0, 30.0, callers=2),
        ]
    )


# the line chart ---------------------------------------------------------------------------------


def svg_root(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == "svg"
    return root


def test_line_chart_draws_every_point_with_a_tooltip() -> None:
    series = [
        ("a <1>", [(1.0, 10.0, "a at 1"), (2.0, 20.0, "a at 2"), (4.0, 25.0, "a at 4")]),
        ("b", [(1.0, 5.0, "b at 1")]),
    ]
    svg = line_chart_svg(series, title="t & u", x_label="batch", y_label="items/s", log_x=True)
    root = svg_root(svg)
    circles = root.findall("circle")
    assert [c.findtext("title") for c in circles] == ["a at 1", "a at 2", "a at 4", "b at 1"]
    assert len(root.findall("polyline")) == 1  # a single point draws no line
    texts = [t.text for t in root.findall("text")]
    assert "a <1>" in texts and "b" in texts  # the legend, escaped in the source
    assert "a <1>" not in svg
    assert root.findtext("title") == "t & u"
    xs = [float(c.get("cx", "nan")) for c in circles[:3]]
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=0.11)  # log2 scale: 1, 2, 4 evenly spaced
    ys = [float(c.get("cy", "nan")) for c in circles[:3]]
    assert ys[0] > ys[1] > ys[2]  # larger values are drawn higher
    assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_line_chart_linear_axis_starts_at_zero() -> None:
    svg = line_chart_svg([("s", [(10.0, 4.0, "p"), (30.0, 8.0, "q")])], title="t", x_label="x", y_label="y")
    root = svg_root(svg)
    labels = [t.text for t in root.findall("text")]
    assert "0" in labels  # the y axis starts at 0
    assert not any(t.get("x") and t.text == "s" for t in root.findall("text"))  # one series: no legend


@pytest.mark.parametrize(
    ("series", "log_x", "message"),
    [
        ([], False, r"chart 't' has no series"),
        ([("s", [])], False, r"chart 't': series 's' has no points"),
        ([("s", [(1.0, float("nan"), "")])], False, r"chart 't': series 's' has non-finite points"),
        ([("s", [(0.0, 1.0, "")])], True, r"chart 't': series 's' has x <= 0, which a log scale cannot place"),
    ],
)
def test_line_chart_refuses_bad_data(series: list[Any], log_x: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        line_chart_svg(series, title="t", x_label="x", y_label="y", log_x=log_x)


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (0.0, 437.0), (31.2, 55.9), (3.0, 3.0), (0.001, 0.0042)])
def test_nice_ticks_cover_the_range_in_round_steps(low: float, high: float) -> None:
    ticks = nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high
    steps = np.diff(ticks)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5, 10))
    assert 2 <= len(ticks) <= 8


def test_nice_ticks_refuse_infinite_bounds() -> None:
    with pytest.raises(ConfigError, match=r"cannot place ticks between 0.0 and inf"):
        nice_ticks(0.0, float("inf"))


# CSV and JSON -----------------------------------------------------------------------------------


def test_csv_has_one_row_per_configuration(report: SweepReport) -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert list(rows[0])[: len(CSV_COLUMNS)] == list(CSV_COLUMNS)
    assert list(rows[0])[len(CSV_COLUMNS) :] == [
        "h2d_median_ms",
        "h2d_p99_ms",
        "d2h_median_ms",
        "d2h_p99_ms",
        "warnings",
    ]
    assert [(r["batch"], r["callers"]) for r in rows] == [("1", "1"), ("8", "1"), ("1", "2"), ("8", "2")]
    for row, result in zip(rows, report.results, strict=True):
        assert row["label"] == result.label
        assert float(row["p99_ms"]) == pytest.approx(result.p99_ms, rel=1e-6)
        assert float(row["throughput"]) == pytest.approx(result.throughput, rel=1e-6)
        assert float(row["rss_delta_mb"]) == 40.5
        assert row["device_memory_mb"] == ""
        assert row["stabilised"] == "True" and row["windows"] == "3"
        assert row["h2d_median_ms"] == "n/a (CPU)"
    assert rows[1]["warnings"] == "unstable: <b>noise</b>"


def test_csv_stage_columns(report: SweepReport) -> None:
    staged = make_report([make_result(1, 10.0, 4.0, stages=True)])
    staged.results[0].unmeasured = {"h2d": NOT_ON_CPU, "d2h": NOT_ON_CPU}
    (row,) = list(csv.DictReader(io.StringIO(render_csv(staged))))
    assert row["preprocess_median_ms"] == "1.000000"
    assert row["compute_p99_ms"] == "2.500000"
    assert row["end_to_end_median_ms"] == "4.000000"
    assert row["d2h_p99_ms"] == "n/a (CPU)"
    order = [k for k in row if k.endswith("_median_ms") and k != "median_ms"]
    assert order == [
        "preprocess_median_ms",
        "h2d_median_ms",
        "compute_median_ms",
        "d2h_median_ms",
        "postprocess_median_ms",
        "end_to_end_median_ms",
    ]


def test_json_holds_results_and_recommendation(report: SweepReport) -> None:
    data = json.loads(json.dumps(report.to_dict()))
    assert data["model"] == "net"
    assert data["recommendation"]["throughput"]["label"] == "batch 8, 2 callers (shared session)"
    assert data["recommendation"]["latency"]["label"] == "batch 1"
    first = data["results"][0]
    assert first["histogram"]["counts"] and first["memory"]["delta_mb"] == 40.5
    assert first["unmeasured"] == {"h2d": "n/a (CPU)", "d2h": "n/a (CPU)"}
    assert first["stable"] is True


def test_files_are_written_atomically(report: SweepReport, tmp_path: Path) -> None:
    csv_path = write_csv(report, tmp_path / "r.csv")
    html_path = write_html(report, tmp_path / "r.html")
    assert csv_path.read_text(encoding="utf-8") == render_csv(report)
    assert html_path.read_text(encoding="utf-8") == render_html(report)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.html"]  # no temporary file left over
    with pytest.raises(ModelSaveError, match=r"folder '.*missing' does not exist — create it"):
        write_csv(report, tmp_path / "missing" / "r.csv")
    with pytest.raises(ModelSaveError, match=r"it is a folder — give a file name"):
        write_html(report, tmp_path)


# HTML -------------------------------------------------------------------------------------------


def svgs(html: str) -> list[ET.Element]:
    return [svg_root(m) for m in re.findall(r"<svg .*?</svg>", html, flags=re.DOTALL)]


def test_html_has_the_three_plots_and_nothing_external(report: SweepReport) -> None:
    html = render_html(report)
    charts = svgs(html)
    assert len(charts) == 2 + len(report.results)
    titles = [c.findtext("title") for c in charts]
    assert titles[:2] == ["throughput vs batch size", "p99 latency vs throughput"]
    assert all(t is not None and t.startswith("latency (ms) of ") for t in titles[2:])
    for figure in ("throughput-vs-batch", "latency-vs-throughput", "latency-histograms"):
        assert f"id='{figure}'" in html
    # throughput vs batch: one line per caller setting, a point per configuration
    assert len(charts[0].findall("circle")) == 4
    assert len(charts[0].findall("polyline")) == 2
    # histograms: 20 bins + the overflow bar
    assert len(charts[2].findall("rect")) == 21
    assert "default-src 'none'" in html
    for external in ("<script", "<link", "src=", "url(", "@import", "http://", "https://"):
        assert external not in html
    assert "<b>noise</b>" not in html and "&lt;b&gt;noise&lt;/b&gt;" in html


def test_html_stage_table_and_notes() -> None:
    staged = render_html(make_report([make_result(1, 10.0, 4.0, stages=True)]))
    assert "<table id='stages'>" in staged
    assert "1.000 / 1.000 (25%)" in staged and "n/a (CPU)" in staged
    plain = render_html(make_report([make_result(1, 10.0, 4.0)], model="<m>"))
    assert "No pipeline: one stage, the model. H2D: n/a (CPU); D2H: n/a (CPU)" in plain
    assert "modelport bench: &lt;m&gt;" in plain


def test_html_caps_the_histograms() -> None:
    from modelport.bench import report as report_module

    many = make_report([make_result(b, 10.0 * b, 1.0 + b) for b in range(1, report_module.MAX_HISTOGRAMS + 3)])
    html = render_html(many)
    assert html.count("class='histogram'") == report_module.MAX_HISTOGRAMS
    assert "2 more configurations not drawn" in html


def test_html_needs_results() -> None:
    empty = make_report([make_result(1, 1.0, 1.0)])
    empty.results = []
    with pytest.raises(ConfigError, match=r"the report of 'net' has no results"):
        render_html(empty)


# the terminal -----------------------------------------------------------------------------------


def test_table_recommendation_and_warnings(report: SweepReport) -> None:
    out = Console(record=True, width=200)
    err = Console(record=True, width=200)
    print_report(report, out, err)
    text = out.export_text()
    for label in ("batch 1", "batch 8", "batch 1, 2 callers (shared session)"):
        assert label in text
    assert "best throughput: batch 8, 2 callers (shared session) — highest throughput: 420 items/s" in text
    assert "best latency:    batch 1 — lowest p99 at batch 1: 2 ms" in text
    assert "H2D: n/a (CPU); D2H: n/a (CPU)" in text
    assert "40.5" in text  # RSS delta
    assert "warning (batch 8): unstable: <b>noise</b>" in err.export_text()


def test_table_with_stages() -> None:
    out = Console(record=True, width=200)
    print_report(make_report([make_result(1, 10.0, 4.0, stages=True)]), out)
    text = out.export_text()
    assert "stages: median / p99 ms (share of the mean end to end)" in text
    assert "2.500 / 2.500 (62%)" in text  # a share of 0.625, rounded half to even
