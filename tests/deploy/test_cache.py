from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelport.deploy.cache import StageCache, default_cache_dir, hash_path
from modelport.ir.serde import load
from modelport.runners.onnxruntime import OrtRunner

from .deploy_models import write_tiny


def test_key_depends_on_every_ingredient() -> None:
    base = StageCache.key("optimize", {"input": "a", "options": {"x": 1}})
    assert base == StageCache.key("optimize", {"options": {"x": 1}, "input": "a"})  # order-free
    assert base != StageCache.key("optimize", {"input": "b", "options": {"x": 1}})
    assert base != StageCache.key("optimize", {"input": "a", "options": {"x": 2}})
    assert base != StageCache.key("quantize", {"input": "a", "options": {"x": 1}})


def test_put_then_get_returns_record_and_identical_model(tmp_path: Path) -> None:
    model = load(write_tiny(tmp_path / "m.onnx"))
    cache = StageCache(tmp_path / "cache")
    key = StageCache.key("optimize", {"input": "x"})
    digest = cache.put("optimize", key, {"nodes": 5}, model=model, ingredients={"input": "x"}, created="t0")
    entry = cache.get("optimize", key)
    assert entry is not None and entry.record == {"nodes": 5} and entry.created == "t0"
    assert entry.model_hash == digest == hash_path(tmp_path / "cache" / "optimize" / key / "model")
    feeds = {"x": np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)}
    with OrtRunner(model) as a, OrtRunner(entry.model) as b:
        np.testing.assert_array_equal(a.infer(feeds)["y"], b.infer(feeds)["y"])
    assert cache.get("optimize", StageCache.key("optimize", {"input": "y"})) is None


def test_changed_model_file_is_a_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = load(write_tiny(tmp_path / "m.onnx"))
    cache = StageCache(tmp_path / "cache")
    cache.put("optimize", "k", {}, model=model)
    stored = tmp_path / "cache" / "optimize" / "k" / "model" / "model.onnx"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 1
    stored.write_bytes(bytes(data))
    assert cache.get("optimize", "k") is None
    assert "changed since they were stored" in caplog.text


def test_unreadable_record_is_a_miss(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    cache.put("bench", "k", {"a": 1})
    (tmp_path / "bench" / "k" / "record.json").write_text("{not json")
    assert cache.get("bench", "k") is None


def test_disabled_cache_stores_nothing(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "c", enabled=False)
    assert cache.put("bench", "k", {"a": 1}) is None
    assert cache.get("bench", "k") is None
    assert not (tmp_path / "c").exists()


def test_default_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELPORT_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("MODELPORT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "modelport"
