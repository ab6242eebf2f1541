"""run_server fails fast on bad arguments, before it binds a port or loads a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.errors import ConfigError, RepositoryError
from modelport.serve import run_server


def test_empty_repository_fails_before_serving(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"has no model folders"):
        run_server(tmp_path, port=0)


def test_unknown_log_level(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown log level 'loud' — use one of critical, error"):
        run_server(tmp_path, log_level="loud")


def test_port_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"port 70000 is outside 0..65535"):
        run_server(tmp_path, port=70000)
