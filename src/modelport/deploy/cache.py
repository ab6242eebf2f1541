"""The deploy cache: every stage's output stored under a key that can only match the same work.

Olive's users meet caches that mix up two models and stale results after an upgrade. Here a key is
the sha256 of everything the stage's output depends on: the content hash of its input model(s) (never
a path or a name), the stage's options, the content of any data it reads, and the versions of the
tools and runtimes involved (plus the machine, for timings). Two different models therefore never
share an entry, and changing one option re-runs only the stages whose keys include it.

An entry is a folder ``<dir>/<stage>/<key>/`` holding ``record.json`` (what the stage measured, and
the key's ingredients for inspection) and, for stages that produce a model, ``model/model.onnx``
(with its external data file, if any; the model's hash covers the whole folder). It is
written to a temporary folder and renamed into place, so a crash never leaves half an entry; a
model file whose hash no longer matches its record is treated as a miss and replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import onnx_ir as ir

from modelport.ir.serde import load, save, to_bytes

__all__ = [
    "CacheEntry",
    "StageCache",
    "default_cache_dir",
    "hash_bytes",
    "hash_model",
    "hash_path",
    "machine_fingerprint",
    "tool_versions",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TOOLS = ("modelport", "onnx", "onnx-ir", "onnxruntime", "numpy")


def default_cache_dir() -> Path:
    """``$MODELPORT_CACHE_DIR``, else ``$XDG_CACHE_HOME/modelport``, else ``~/.cache/modelport``."""
    explicit = os.environ.get("MODELPORT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelport"


@cache
def tool_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages a stage's output depends on."""
    versions = {}
    for name in (*_TOOLS, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@cache
def machine_fingerprint() -> dict[str, Any]:
    """What a timing depends on besides the model: the CPU model and the number of cores."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.system()}


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_path(path: str | os.PathLike[str]) -> str:
    """Content hash of a file, or of a folder (every file's relative path and content, in order)."""
    root = Path(path)
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        digest.update(f.relative_to(root).as_posix().encode() if f != root else b"")
        digest.update(b"\0")
        with f.open("rb") as stream:
            for block in iter(lambda: stream.read(_CHUNK), b""):
                digest.update(block)
    return digest.hexdigest()


def hash_model(model: ir.Model) -> str:
    """Content hash of a model: its serialized bytes (weights included)."""
    return hash_bytes(to_bytes(model))


@dataclass
class CacheEntry:
    """A stored stage output: what it measured, and the model it produced (if any)."""

    key: str
    record: dict[str, Any]
    model: ir.Model | None
    model_hash: str | None
    created: str


class StageCache:
    """Content-addressed store of stage outputs under ``root`` (disabled: every lookup misses)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled

    @staticmethod
    def key(stage: str, ingredients: dict[str, Any]) -> str:
        """The entry key: sha256 of the stage name and its ingredients as canonical JSON."""
        text = json.dumps({"stage": stage, **ingredients}, sort_keys=True, default=str, separators=(",", ":"))
        return hash_bytes(text.encode())

    def _folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def get(self, stage: str, key: str) -> CacheEntry | None:
        if not self.enabled:
            return None
        folder = self._folder(stage, key)
        record_path = folder / "record.json"
        if not record_path.is_file():
            return None
        try:
            stored = json.loads(record_path.read_text())
            model, model_hash = None, stored.get("model_hash")
            if model_hash is not None:
                if hash_path(folder / "model") != model_hash:
                    logger.warning(
                        "cache entry %s/%s: model files changed since they were stored; recomputing", stage, key
                    )
                    return None
                model = load(folder / "model" / "model.onnx")
            return CacheEntry(key, stored["record"], model, model_hash, stored.get("created", "?"))
        except (OSError, ValueError, KeyError) as e:
            logger.warning("cache entry %s/%s is unreadable (%s); recomputing", stage, key, e)
            return None

    def put(
        self,
        stage: str,
        key: str,
        record: dict[str, Any],
        *,
        model: ir.Model | None = None,
        ingredients: dict[str, Any] | None = None,
        created: str = "",
    ) -> str | None:
        """Store an entry; returns the content hash of the stored model (None without one)."""
        if not self.enabled:
            return hash_model(model) if model is not None else None
        model_hash = None
        target = self._folder(stage, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key[:12]}-"))
        try:
            if model is not None:
                (staging / "model").mkdir()
                save(model, staging / "model" / "model.onnx")
                model_hash = hash_path(staging / "model")
            payload = {
                "stage": stage,
                "created": created,
                "model_hash": model_hash,
                "ingredients": ingredients or {},
                "record": record,
            }
            (staging / "record.json").write_text(json.dumps(payload, indent=1, default=str))
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            logger.warning("could not store cache entry %s/%s: %s", stage, key, e)
        return model_hash
