"""Building blocks for human-readable reports: inline SVG charts and atomic file writes.

Reports (``verify``, later ``deploy``) are single self-contained files that open anywhere —
no scripts, no fonts or stylesheets fetched from the network — so the charts are drawn here as
plain inline SVG, without a plotting library. Reports are written atomically: a reader (a CI job
collecting artifacts, a browser reloading) never sees half a file.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from modelport.errors import ModelSaveError
from modelport.report.svg import bar_chart_svg, histogram_svg

__all__ = ["bar_chart_svg", "histogram_svg", "write_text_atomic"]

logger = logging.getLogger(__name__)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a rename.

    The rename is atomic on POSIX and Windows, so ``path`` holds either the old content or the
    complete new one, never a partial write; the temporary file is removed on failure.
    """
    target = Path(path)
    if target.is_dir():
        raise ModelSaveError(f"cannot write '{target}': it is a folder — give a file name")
    folder = target.parent
    if not folder.is_dir():
        raise ModelSaveError(f"cannot write '{target}': folder '{folder}' does not exist — create it")
    # Opened with "x" (not mkstemp) so the file gets the usual permissions (0o666 less the umask).
    temp = folder / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(temp, "x", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, target)
    except OSError as e:
        temp.unlink(missing_ok=True)
        raise ModelSaveError(f"cannot write '{target}': {e}") from e
    logger.info("wrote %s (%d bytes)", target, len(text.encode("utf-8")))
    return target
