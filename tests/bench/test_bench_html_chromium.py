"""The HTML bench report in a real browser: headless Chromium renders it, the plots reach the DOM, nothing errs.

Chromium's console messages (script errors, resources refused by the page's Content-Security-Policy)
go to stderr with ``--enable-logging=stderr``; a control page proves that those messages are seen,
so "no console message" on the report means something. Skipped where no Chromium is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import onnx_ir as ir
import pytest

from modelport.bench.harness import BenchSettings
from modelport.bench.report import write_html
from modelport.bench.sweep import SweepSpec, run_sweep
from modelport.ir.serde import save

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "headless_shell")


@pytest.fixture(scope="module")
def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        f"no headless Chromium here (looked for {', '.join(BROWSERS)}) — install it, e.g. 'apt-get install chromium'"
    )


def render(browser: str, page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM Chromium built from ``page``, and its console messages."""
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_console_messages_are_seen(browser: str, tmp_path: Path) -> None:
    page = tmp_path / "control.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        "</head><body><img src='https://example.invalid/x.png'><script>console.log('ran')</script></body></html>",
        encoding="utf-8",
    )
    _, console = render(browser, page, tmp_path / "profile")
    assert any("example.invalid" in line and "Content Security Policy" in line for line in console), console
    assert any("inline script" in line for line in console), console


def test_report_renders_with_its_plots_and_no_console_message(browser: str, tmp_path: Path) -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        mlp (float[N, 8] x) => (float[N, 8] y)
        {
            t = Relu(x)
            y = Add(t, x)
        }
        """
    )
    path = save(model, tmp_path / "mlp.onnx")
    settings = BenchSettings(warmup=1, iterations=5, max_windows=1)
    report = run_sweep(path, SweepSpec(batches=(1, 4), intra_op_threads=(1,), callers=(1, 2)), settings)
    page = write_html(report, tmp_path / "report.html")
    dom, console = render(browser, page, tmp_path / "profile")
    assert console == []
    assert dom.count("<svg") == 2 + len(report.results)  # two line charts and a histogram per configuration
    for figure in ("throughput-vs-batch", "latency-vs-throughput", "latency-histograms"):
        assert re.search(rf'<(figure|div) id="{figure}">\s*(<figure class="histogram">)?<svg', dom), figure
    assert dom.count("<circle") == 2 * len(report.results)  # every configuration is a point in both line charts
    assert dom.count("<polyline") >= 2
    assert report.results[0].label in dom
    assert '<table id="results">' in dom
