"""Inline SVG charts (valid XML, one bar per value, escaped labels) and atomic report writes."""

from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from modelport.errors import ConfigError, ModelSaveError
from modelport.report import bar_chart_svg, histogram_svg, write_text_atomic


def rects(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == "svg"
    return root.findall("rect")


def test_histogram_has_one_bar_per_bin_with_counts() -> None:
    svg = histogram_svg([0, 5, 1000, 0], ["0", "small", "big", "huge"], title="errors of 'y'")
    bars = rects(svg)
    assert len(bars) == 4
    heights = [float(b.get("height", "nan")) for b in bars]
    assert heights[0] == 0.0 and heights[3] == 0.0
    assert 0.0 < heights[1] < heights[2]  # log scale: 5 still visible next to 1000
    assert heights[1] > 0.2 * heights[2]
    assert [b.findtext("title") for b in bars] == ["0: 0", "small: 5", "big: 1000", "huge: 0"]
    root = ET.fromstring(svg)
    assert root.findtext("title") == "errors of 'y'"
    texts = [t.text for t in root.findall("text")]
    assert texts[:3] == ["0", "5", "small"]  # label of bin 0; count then label of bin 1


def test_histogram_linear_scale_and_highlight() -> None:
    svg = histogram_svg([10, 20], ["a", "b"], title="t", log_scale=False, highlight_from=1)
    bars = rects(svg)
    assert float(bars[1].get("height", "0")) == pytest.approx(2 * float(bars[0].get("height", "0")), rel=1e-2)
    assert bars[0].get("fill") != bars[1].get("fill")


def test_histogram_escapes_labels() -> None:
    svg = histogram_svg([1], ["<script>&"], title="<t>")
    assert "<script>" not in svg
    assert rects(svg)[0].findtext("title") == "<script>&: 1"


@pytest.mark.parametrize(
    ("counts", "labels", "message"),
    [
        ([1, 2], ["a"], r"histogram 'h' has 2 counts but 1 labels"),
        ([], [], r"histogram 'h' has no bins"),
        ([1, -1], ["a", "b"], r"histogram 'h' has a negative count -1"),
    ],
)
def test_histogram_rejects_bad_input(counts: list[int], labels: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        histogram_svg(counts, labels, title="h")


def test_bar_chart_lengths_follow_values() -> None:
    svg = bar_chart_svg([("candidate batch 1", 2.0), ("reference batch 1", 4.0)], title="latency", unit="ms")
    bars = rects(svg)
    assert len(bars) == 2
    widths = [float(b.get("width", "nan")) for b in bars]
    assert widths[1] == pytest.approx(2 * widths[0], rel=1e-3)
    assert bars[0].findtext("title") == "candidate batch 1: 2 ms"
    assert "http" not in svg


@pytest.mark.parametrize(
    ("bars", "message"),
    [([], r"bar chart 'b' has no bars"), ([("x", -1.0)], r"negative or non-finite values for \['x'\]")],
)
def test_bar_chart_rejects_bad_input(bars: list[tuple[str, float]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bar_chart_svg(bars, title="b")


def test_bar_chart_of_zeros_draws_empty_bars() -> None:
    bars = rects(bar_chart_svg([("a", 0.0)], title="z"))
    assert float(bars[0].get("width", "nan")) == 0.0


# atomic writes ---------------------------------------------------------------------------------


def test_write_text_atomic_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_text_atomic(target, "first")
    assert target.read_text() == "first"
    assert write_text_atomic(target, "second ✓") == target
    assert target.read_text(encoding="utf-8") == "second ✓"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary file left


def test_write_text_atomic_uses_the_usual_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = write_text_atomic(tmp_path / "r.html", "<html></html>")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_write_text_atomic_refuses_a_missing_folder_or_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelSaveError, match=r"folder '.*missing' does not exist — create it"):
        write_text_atomic(tmp_path / "missing" / "r.json", "{}")
    with pytest.raises(ModelSaveError, match=r"it is a folder — give a file name"):
        write_text_atomic(tmp_path, "{}")


def test_write_text_atomic_keeps_the_old_file_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "r.json"
    target.write_text("old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ModelSaveError, match=r"cannot write '.*r.json': disk full"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
