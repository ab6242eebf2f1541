"""``modelport view``: open a model's graph in Netron, served locally (no internet needed).

Engineers would rather look than read. The ``netron`` package ships the whole viewer (HTML and
JavaScript) and a small HTTP server; we serve the model on 127.0.0.1 only, check the file first so a
bad path gets our clear error instead of a blank page, and print the URL for machines without a
browser (``--no-browser``, e.g. over SSH with port forwarding).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from modelport.errors import ConfigError, ModelLoadError

__all__ = ["Viewer", "start_viewer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Viewer:
    """A running Netron server for one model."""

    host: str
    port: int
    model: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        import netron

        netron.stop((self.host, self.port))

    def wait(self) -> None:
        """Block until interrupted (Ctrl-C), then stop."""
        import netron

        try:
            netron.wait()
        finally:
            self.stop()


def start_viewer(
    model: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0, browse: bool = True
) -> Viewer:
    """Serve ``model`` with Netron on ``host:port`` (0: a free port) and optionally open a browser."""
    path = Path(model)
    if not path.is_file():
        raise ModelLoadError(f"model file '{path}' does not exist — check the path")
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, got {port}")
    from modelport.ir.serde import load

    load(path)  # a file that is not a readable ONNX model fails here, with the reason
    try:
        import netron
    except ImportError as e:
        raise ConfigError("modelport view needs the 'netron' package — pip install netron") from e
    address = netron.serve(str(path), None, (host, port), browse=browse)
    bound_host, bound_port = address
    viewer = Viewer(str(bound_host), int(bound_port), path)
    logger.info("Netron serves %s at %s", path, viewer.url)
    return viewer
