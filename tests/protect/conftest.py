"""Fixtures of the protection tests: the MLP as a plain file, and fixed keys (tests/conftest.py clears any other)."""

from __future__ import annotations

from pathlib import Path

import pytest
from protect_models import mlp_proto


@pytest.fixture
def key() -> bytes:
    return bytes(range(32))


@pytest.fixture
def other_key() -> bytes:
    return bytes(range(100, 132))


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """The MLP as a plain ONNX file in its own folder."""
    path = tmp_path / "plain" / "mlp.onnx"
    path.parent.mkdir()
    path.write_bytes(mlp_proto().SerializeToString())
    return path
