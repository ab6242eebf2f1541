"""Render an HTML report in headless Chromium: the layout check and the screenshot.

A report that is valid HTML can still show an empty chart or a collapsed section; only a browser's
layout says what a person will see. Chromium (Debian packages ``chromium`` / ``chromium-driver``)
is driven from the command line: ``--dump-dom`` after a small measuring script has run, and
``--screenshot``. Nothing is fetched: the page is a local file and the report has no external assets.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from modelport.errors import ConfigError

__all__ = ["find_chromium", "measure_layout", "screenshot"]

logger = logging.getLogger(__name__)

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Measures every section and every chart once the page has laid out, into a body attribute.
_MEASURE = """<script>
(function () {
  const out = {sections: {}, charts: []};
  for (const s of document.querySelectorAll('section')) {
    const r = s.getBoundingClientRect();
    out.sections[s.id] = {width: r.width, height: r.height, text: s.innerText.trim().length};
  }
  for (const f of document.querySelectorAll('figure.chart')) {
    const svg = f.querySelector('svg');
    const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const marks = svg ? svg.querySelectorAll('rect,path,line,circle,polyline').length : 0;
    out.charts.push({section: f.closest('section').id, width: r.width, height: r.height, marks: marks,
                     title: svg ? (svg.querySelector('title') || {}).textContent || '' : ''});
  }
  document.body.setAttribute('data-layout', JSON.stringify(out));
})();
</script>"""


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], profile: Path, timeout: float) -> str:
    browser = find_chromium()
    if browser is None:
        raise ConfigError("no Chromium found on PATH — install the 'chromium' package (apt-get install chromium)")
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise ConfigError(f"Chromium failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def measure_layout(page: str | os.PathLike[str], *, width: int = 1200, timeout: float = 90.0) -> dict[str, Any]:
    """Size and content of every ``<section>`` and every ``figure.chart`` of ``page`` as laid out by Chromium."""
    source = Path(page)
    text = source.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="modelport-chromium-") as tmp:
        probe = Path(tmp) / source.name
        probe.write_text(text.replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
        dom = _run([f"--window-size={width},2000", "--dump-dom", probe.as_uri()], Path(tmp) / "profile", timeout)
    match = re.search(r'data-layout="([^"]*)"', dom)
    if match is None:
        raise ConfigError("Chromium rendered the page but the measuring script did not run — is JavaScript disabled?")
    layout: dict[str, Any] = json.loads(html.unescape(match.group(1)))
    return layout


def screenshot(
    page: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    width: int = 1200,
    height: int = 6000,
    timeout: float = 90.0,
) -> Path:
    """A PNG of ``page`` as Chromium draws it."""
    out = Path(target).resolve()
    with tempfile.TemporaryDirectory(prefix="modelport-chromium-") as tmp:
        _run(
            [f"--window-size={width},{height}", f"--screenshot={out}", Path(page).resolve().as_uri()],
            Path(tmp),
            timeout,
        )
    if not out.is_file():
        raise ConfigError(f"Chromium ran but wrote no screenshot at '{out}'")
    logger.info("screenshot of %s written to %s", page, out)
    return out
