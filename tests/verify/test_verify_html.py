"""render_html: every section present and non-empty, one SVG per chart, nothing external, all text escaped."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, Outputs
from modelport.runners.fake import FakeRunner
from modelport.verify.api import verify_runners
from modelport.verify.html import render_html
from modelport.verify.report import VerifyReport
from modelport.verify.tolerance import Tolerance

F32 = np.dtype("float32")
SECTIONS = (
    "verdict",
    "findings",
    "engines",
    "signature",
    "outputs",
    "histograms",
    "batch-consistency",
    "nonfinite",
    "accuracy",
    "speed",
)
VOID = {"meta", "br", "hr", "img", "input", "link"}
SVG_LEAVES = {"rect", "line"}
HOSTILE = "<b>x</b>&\"'"


class Page(HTMLParser):
    """Section texts, SVG element counts, and every tag and attribute seen."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.section: str | None = None
        self.text: dict[str, str] = {}
        self.svgs: list[dict[str, int]] = []
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str | None]] = []
        self.unbalanced: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes += attrs
        ident = dict(attrs).get("id")
        if tag in ("section", "header") and ident:
            self.section = ident
            self.text.setdefault(ident, "")
        if tag == "svg":
            self.svgs.append({})
        elif self.svgs and "svg" in self.stack:
            self.svgs[-1][tag] = self.svgs[-1].get(tag, 0) + 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes += attrs
        if self.svgs and "svg" in self.stack:
            self.svgs[-1][tag] = self.svgs[-1].get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.unbalanced.append(tag)
            return
        self.stack.pop()
        if tag in ("section", "header"):
            self.section = None

    def handle_data(self, data: str) -> None:
        if self.section is not None:
            self.text[self.section] += data


def logits(feeds: Feeds) -> Outputs:
    x = feeds["x"]
    return {HOSTILE: x * 2, "label": np.argmax(x, axis=1, keepdims=True).astype(np.int64)}


def worse(feeds: Feeds) -> Outputs:
    out = logits(feeds)
    scores = out[HOSTILE].copy()
    scores[1:] += 0.3  # rows after the first: wrong at batch > 1
    scores[:, 0] += 1.5  # flips the top-1 class of sample 6 in the data below
    return {HOSTILE: scores, "label": np.argmax(scores, axis=1, keepdims=True).astype(np.int64)}


@pytest.fixture(scope="module")
def failing_report(tmp_path_factory: pytest.TempPathFactory) -> VerifyReport:
    inputs = [TensorSpec("x", F32, ("N", 4))]
    outputs = [TensorSpec(HOSTILE, F32, ("N", 4)), TensorSpec("label", np.dtype("int64"), ("N", 1))]
    x = np.random.default_rng(5).standard_normal((12, 4)).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, x=x, labels=np.argmax(x, axis=1))
    cand = FakeRunner(worse, inputs, outputs, name=f"cand {HOSTILE}")
    ref = FakeRunner(logits, inputs, outputs, name="ref")
    return verify_runners(
        cand, ref, batches=(1, 3), fills=("realistic", "ones"), data=path, metric="top1", output=HOSTILE
    )


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def test_every_section_present_and_non_empty(failing_report: VerifyReport) -> None:
    page = parse(render_html(failing_report))
    assert page.unbalanced == []
    assert page.stack == []
    for key in SECTIONS:
        assert page.text.get(key, "").strip(), key
    assert page.text["verdict"].startswith("FAIL:")
    assert "batch 3" in page.text["outputs"] and "user data" in page.text["outputs"]
    assert "Regressions" in page.text["accuracy"]
    assert failing_report.accuracy is not None
    assert [c.name for c in failing_report.accuracy.regressions] == ["sample 6"]
    assert "sample 6" in page.text["accuracy"]
    assert "rows differing" in page.text["batch-consistency"]
    for finding in failing_report.findings:
        assert finding.message in page.text["findings"]


def test_one_histogram_per_output_and_a_speed_chart(failing_report: VerifyReport) -> None:
    page = parse(render_html(failing_report))
    assert len(failing_report.histograms()) == 2
    assert len(page.svgs) == 3  # two outputs + speed
    for svg in page.svgs:
        assert svg.get("rect", 0) > 0
        assert svg.get("title", 0) > 0
    assert page.svgs[0]["rect"] == 15  # one bar per histogram bin


def test_nothing_external_and_no_script(failing_report: VerifyReport) -> None:
    html = render_html(failing_report)
    page = parse(html)
    assert "script" not in page.tags
    assert not {"link", "img", "iframe", "object", "embed"} & page.tags
    assert not [name for name, _ in page.attributes if name in ("src", "href") or name.startswith("on")]
    for marker in ("http:", "https:", "url(", "@import", "//"):
        assert marker not in html


def test_every_string_is_escaped(failing_report: VerifyReport) -> None:
    html = render_html(failing_report)
    assert HOSTILE not in html
    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;&amp;" in html
    page = parse(html)
    assert HOSTILE in page.text["outputs"]  # shown to the reader as typed


def test_passing_report_says_so(tmp_path: Path) -> None:
    inputs = [TensorSpec("x", F32, ("N", 4))]
    outputs = [TensorSpec("y", F32, ("N", 4))]

    def same(feeds: Feeds) -> Outputs:
        return {"y": feeds["x"] + 1}

    report = verify_runners(
        FakeRunner(same, inputs, outputs, name="a"),
        FakeRunner(same, inputs, outputs, name="b"),
        batches=(1,),
        fills=("ones",),
        tolerance=Tolerance(0.0, 0.0),
    )
    page = parse(render_html(report))
    assert page.text["verdict"].startswith("PASS: 1 comparison within tolerance")
    assert "No problems found." in page.text["findings"]
    assert "Not checked: no batch size above 1 was run." in page.text["batch-consistency"]
    assert "Not measured" in page.text["accuracy"]
    assert "No NaN or Inf" in page.text["nonfinite"]
    assert len(page.svgs) == 2  # one output histogram + speed
    assert len(render_html(report)) < 20_000  # compact
