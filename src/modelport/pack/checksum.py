"""Integrity manifests: the sha256 of every file in a folder, written and verified."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from modelport.errors import RepositoryError

__all__ = ["MANIFEST_NAME", "sha256_file", "verify_manifest", "write_manifest"]

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


def write_manifest(folder: str | os.PathLike[str]) -> Path:
    """Write ``folder/manifest.json`` listing the sha256 and size of every file under it."""
    root = Path(folder)
    entries = {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in _files(root)
    }
    target = root / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".manifest-")
    with os.fdopen(fd, "w") as f:
        json.dump({"algorithm": "sha256", "files": entries}, f, indent=2, sort_keys=True)
    os.replace(tmp, target)
    return target


def verify_manifest(folder: str | os.PathLike[str]) -> list[str]:
    """Problems found when checking ``folder`` against its manifest (empty list: intact)."""
    root = Path(folder)
    manifest = root / MANIFEST_NAME
    if not manifest.exists():
        raise RepositoryError(f"'{root}' has no {MANIFEST_NAME} — write one with write_manifest()")
    try:
        listed = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise RepositoryError(f"'{manifest}' is not a modelport manifest: {e}") from e
    if not isinstance(listed, dict) or not all(
        isinstance(entry, dict) and isinstance(entry.get("sha256"), str) for entry in listed.values()
    ):
        raise RepositoryError(
            f"'{manifest}' is not a modelport manifest: 'files' must map each path to {{\"sha256\": ...}} — "
            "rewrite it with write_manifest()"
        )
    problems = []
    present = {p.relative_to(root).as_posix() for p in _files(root)}
    for name, entry in sorted(listed.items()):
        path = root / name
        if name not in present:
            problems.append(f"{name}: missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest (modified or corrupt)")
    problems.extend(f"{name}: not in the manifest" for name in sorted(present - set(listed)))
    return problems
