from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelport.deploy.html import SECTIONS, render_html
from modelport.deploy.job import DeployResult, run_recipe
from modelport.deploy.recipe import parse_recipe
from modelport.report.browser import find_chromium, measure_layout, screenshot

from .deploy_models import quick_recipe, write_tiny

#: Charts each section must show (at least), by the start of their SVG title.
CHARTS = {
    "model": ["nodes per op type"],
    "quantize": ["SQNR with only this layer in INT8"],
    "verification": ["|error| of 'y', batch 1", "|error| of 'y', batch 2"],
    "benchmark": [
        "latency of fp32 (input)",
        "latency of final",
        "median latency: input FP32 vs final",
        "throughput vs batch",
    ],
}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> DeployResult:
    tmp = tmp_path_factory.mktemp("html")
    model = write_tiny(tmp / "tiny.onnx")
    data = quick_recipe(model, tmp / "out", tmp / "cache", quantize={"keep": "always"})
    data["goals"] = {"latency_ms": 1e-6}
    return run_recipe(parse_recipe(data))


def test_every_section_and_chart_is_in_the_page(deployed: DeployResult) -> None:
    page = (deployed.outdir / "report.html").read_text()
    assert page == render_html(deployed)
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    titles = re.findall(r"<title>([^<]*)</title>", page)
    for charts in CHARTS.values():
        for title in charts:
            assert any(t.startswith(title.replace("'", "&#x27;")) for t in titles), title
    assert "MISSED" in page and "missed by" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the report must not fetch anything"


def test_names_from_the_model_are_escaped(deployed: DeployResult) -> None:
    evil = DeployResult(**{**deployed.__dict__, "name": "<script>alert(1)</script>"})
    page = render_html(evil)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(deployed: DeployResult, tmp_path: Path) -> None:
    layout = measure_layout(deployed.outdir / "report.html")
    for section in SECTIONS:
        box = layout["sections"][section]
        assert box["width"] > 0 and box["height"] > 0 and box["text"] > 0, section
    for section, titles in CHARTS.items():
        drawn = [c for c in layout["charts"] if c["section"] == section]
        for title in titles:
            chart = next((c for c in drawn if c["title"].startswith(title)), None)
            assert chart is not None, f"{section}: no chart '{title}'"
            assert chart["width"] > 100 and chart["height"] > 50 and chart["marks"] > 0, chart
    shot = screenshot(deployed.outdir / "report.html", tmp_path / "report.png", height=3000)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
