"""Integrity manifests: the sha256 of every file in a folder, written and verified.

A manifest is what lets a server refuse files that are not the ones that were verified and
benchmarked (as Triton's checksum repository agent does): ``deploy`` writes one for every
repository it produces, ``pack`` writes a fresh one into every bundle, and ``serve`` checks each
model version's files against it before creating a session. Paths in a manifest are relative,
``/``-separated, and never leave the folder; the manifest itself (``manifest.json`` at the top)
is not listed.

A check reports every problem at once as :class:`Mismatch` values — a file that changed, one that
is missing, one that is not listed — each carrying the expected and actual sha256, so a message
can say which file and which digests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NamedTuple

from modelport.errors import RepositoryError

__all__ = [
    "MANIFEST_NAME",
    "FileDigest",
    "Manifest",
    "Mismatch",
    "compare_digests",
    "describe_mismatches",
    "list_files",
    "manifest_text",
    "read_manifest",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
ALGORITHM = "sha256"
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Characters of a digest shown in messages: enough to tell two digests apart at a glance.
PREFIX = 12


class FileDigest(NamedTuple):
    """The sha256 (hex) and size in bytes of one file."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class Mismatch:
    """One file that does not match its manifest: ``modified``, ``missing`` or ``unlisted``."""

    path: str
    problem: Literal["modified", "missing", "unlisted"]
    expected: str | None = None
    actual: str | None = None

    def __str__(self) -> str:
        if self.problem == "modified":
            return (
                f"{self.path}: sha256 on disk is {_short(self.actual)}, the manifest lists "
                f"{_short(self.expected)} (modified or corrupt)"
            )
        if self.problem == "missing":
            return f"{self.path}: missing (the manifest lists sha256 {_short(self.expected)})"
        return f"{self.path}: not in the manifest (sha256 on disk {_short(self.actual)})"


def _short(digest: str | None) -> str:
    return f"{digest[:PREFIX]}…" if digest else "?"


@dataclass(frozen=True)
class Manifest:
    """A parsed ``manifest.json``: relative path -> expected sha256, for the folder it lies in."""

    path: Path
    files: Mapping[str, str]

    @property
    def root(self) -> Path:
        """The folder the listed paths are relative to."""
        return self.path.parent

    def covering(self, include: Callable[[str], bool] | None = None) -> dict[str, str]:
        """The listed files (those ``include`` accepts), path -> sha256."""
        return {name: digest for name, digest in sorted(self.files.items()) if include is None or include(name)}

    def check(self, include: Callable[[str], bool] | None = None) -> list[Mismatch]:
        """Hash the files on disk (those ``include`` accepts) and compare them with the manifest."""
        present = [name for name in list_files(self.root) if include is None or include(name)]
        actual = {name: sha256_file(self.root / name) for name in present}
        return compare_digests(self.covering(include), actual)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def list_files(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative, ``/``-separated, sorted), except its top-level manifest."""
    names = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(name for name in names if name != MANIFEST_NAME)


def compare_digests(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[Mismatch]:
    """Every difference between listed digests and the digests of the files found, sorted by path."""
    problems = []
    for name in sorted(set(expected) | set(actual)):
        want, have = expected.get(name), actual.get(name)
        if have is None:
            problems.append(Mismatch(name, "missing", expected=want))
        elif want is None:
            problems.append(Mismatch(name, "unlisted", actual=have))
        elif want != have:
            problems.append(Mismatch(name, "modified", expected=want, actual=have))
    return problems


def write_manifest(folder: str | os.PathLike[str], digests: Mapping[str, FileDigest] | None = None) -> Path:
    """Write ``folder/manifest.json`` listing the sha256 and size of every file under it.

    ``digests`` (path -> :class:`FileDigest`) are written as given instead of hashing the folder:
    for a caller that has just hashed the files while copying them.
    """
    root = Path(folder)
    if digests is None:
        digests = {
            name: FileDigest(sha256_file(root / name), (root / name).stat().st_size) for name in list_files(root)
        }
    target = root / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".manifest-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(manifest_text(digests))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %s (%d files)", target, len(digests))
    return target


def manifest_text(digests: Mapping[str, FileDigest]) -> str:
    """The JSON text of a manifest listing ``digests``."""
    files = {name: {"sha256": d.sha256, "bytes": d.bytes} for name, d in sorted(digests.items())}
    return json.dumps({"algorithm": ALGORITHM, "files": files}, indent=2, sort_keys=True) + "\n"


def read_manifest(folder: str | os.PathLike[str]) -> Manifest:
    """Parse ``folder/manifest.json``; :class:`RepositoryError` if it is absent or malformed."""
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        raise RepositoryError(f"'{Path(folder)}' has no {MANIFEST_NAME} — write one with write_manifest()")
    fix = "rewrite it with `modelport pack REPO --rewrite-manifest` (or write_manifest())"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RepositoryError(f"'{path}' is not a modelport manifest: it is not JSON ({e}) — {fix}") from e
    listed = raw.get("files") if isinstance(raw, dict) else None
    if not isinstance(listed, dict):
        raise RepositoryError(
            f"'{path}' is not a modelport manifest: expected an object with 'files' mapping each path to "
            f'{{"sha256": ...}}, got {_kind(raw)} — {fix}'
        )
    algorithm = raw.get("algorithm", ALGORITHM)
    if algorithm != ALGORITHM:
        raise RepositoryError(f"'{path}' uses checksum algorithm {algorithm!r}; modelport reads '{ALGORITHM}' — {fix}")
    return Manifest(path=path, files={name: _entry(path, name, entry, fix) for name, entry in listed.items()})


def _entry(path: Path, name: str, entry: Any, fix: str) -> str:
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or "\\" in name or ".." in parts or name != PurePosixPath(name).as_posix():
        raise RepositoryError(
            f"'{path}' is not a modelport manifest: it lists {name!r}, which is not a plain relative path "
            f"inside the folder (no leading '/', no '..', '/' as separator) — {fix}"
        )
    digest = entry.get("sha256") if isinstance(entry, dict) else None
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise RepositoryError(
            f"'{path}' is not a modelport manifest: the entry of {name!r} must be "
            f'{{"sha256": <64 lowercase hex digits>}}, got {entry!r} — {fix}'
        )
    return digest


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)}"
    return f"a JSON {type(value).__name__}"


def verify_manifest(folder: str | os.PathLike[str]) -> list[str]:
    """Problems found when checking ``folder`` against its manifest (empty list: intact)."""
    return [str(problem) for problem in read_manifest(folder).check()]


def describe_mismatches(problems: Iterable[Mismatch]) -> str:
    """Problems joined for one message."""
    return "; ".join(str(problem) for problem in problems)
