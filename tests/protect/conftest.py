"""Fixtures of the protection tests: the MLP saved as a plain file, fixed keys, no ambient key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from protect_models import mlp_proto

from modelport.protect import ENV_KEY, ENV_KEY_FILE, set_active_key


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No key from the environment or from another test leaks into a test (or out of it)."""
    monkeypatch.delenv(ENV_KEY, raising=False)
    monkeypatch.delenv(ENV_KEY_FILE, raising=False)
    set_active_key(None)
    yield
    set_active_key(None)


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
