"""Bundles: a model repository in one ``.tar.gz`` that ``modelport serve`` serves directly.

A bundle holds one top-level folder: the repository's files, a fresh ``manifest.json`` (the sha256
of every file, the generated ones included), ``MODEL_CARD.md`` (see card.py) and
``requirements.txt`` pinned to the versions installed when it was packed.

Packing must not launder a tampered repository: when the repository has a manifest, its files are
checked against it before anything is written, and the digests taken while the files are streamed
into the archive are compared with it again, so a file changed in between is caught too. Only
``rewrite_manifest`` accepts the files as they are (and rewrites the repository's manifest). The
archive is written to a temporary file next to the output and renamed into place.

Opening is defensive: members must be plain files and folders (no links, devices, absolute paths
or ``..``), extraction uses tarfile's ``data`` filter as a second line of defence, and the manifest
is verified before anything loads. :func:`open_bundle` extracts into a private temporary folder
and removes it on exit.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from modelport import __version__
from modelport.errors import ModelSaveError, RepositoryError
from modelport.pack.checksum import (
    MANIFEST_NAME,
    FileDigest,
    compare_digests,
    describe_mismatches,
    list_files,
    manifest_text,
    read_manifest,
    write_manifest,
)

if TYPE_CHECKING:
    from modelport.pack.card import CardInfo

__all__ = [
    "BUNDLE_SUFFIXES",
    "CARD_NAME",
    "REQUIREMENTS_NAME",
    "PackResult",
    "extract_bundle",
    "is_bundle",
    "open_bundle",
    "pack",
    "pinned_requirements",
    "rewrite_manifest",
]

logger = logging.getLogger(__name__)

BUNDLE_SUFFIXES = (".tar.gz", ".tgz")
CARD_NAME = "MODEL_CARD.md"
REQUIREMENTS_NAME = "requirements.txt"
#: Files a bundle generates at its top; a repository's own copies are replaced, not packed twice.
GENERATED = (CARD_NAME, REQUIREMENTS_NAME, MANIFEST_NAME)
_CHUNK = 1 << 20
_FIX_TAMPERED = (
    "restore the files (re-run `modelport deploy`), or pass --rewrite-manifest (rewrite_manifest=True) "
    "to accept them as they are now"
)
#: Bytes added so far and in all: for a progress bar.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PackResult:
    """What :func:`pack` wrote."""

    path: Path
    #: The folder at the top of the archive (what :func:`open_bundle` yields).
    top: str
    #: Every file in the archive (relative to ``top``) with its digest, the manifest excepted.
    files: dict[str, FileDigest] = field(repr=False)
    models: list[str]
    manifest_rewritten: bool


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a bundle (by its suffix) rather than a model file or a repository folder."""
    return str(path).endswith(BUNDLE_SUFFIXES)


def pack(
    repository: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    report: str | os.PathLike[str] | None = None,
    card: CardInfo | None = None,
    force: bool = False,
    rewrite_manifest: bool = False,
    packed_at: datetime | None = None,
    progress: Progress | None = None,
) -> PackResult:
    """Pack a model repository into a ``.tar.gz`` bundle with a manifest, a model card and requirements.

    ``report`` is the deploy ``report.json`` whose accuracy and latency the card copies; ``card``
    states intended use, limitations and license. Refuses to overwrite ``output`` unless ``force``,
    and refuses a repository whose files do not match its manifest unless ``rewrite_manifest``.
    """
    from modelport.pack.card import describe_models, read_report, render_card
    from modelport.serve.repository import ModelRepository

    root, target = Path(repository), Path(output)
    if not root.is_dir():
        raise RepositoryError(
            f"'{root}' is not a repository folder — pack needs REPO/<name>/<version>/model.onnx "
            "(`modelport deploy` writes one under deploy-out/repository)"
        )
    _check_output(target, root, force)
    # A malformed repository fails here, before anything is written (a manifest about to be rewritten is not read).
    served = ModelRepository(root, verify=not rewrite_manifest)
    deploy_report = read_report(report) if report is not None else None
    expected = _checked_manifest(root) if not rewrite_manifest else None
    stamp = packed_at or datetime.now(timezone.utc)
    generated = {
        CARD_NAME: render_card(describe_models(served), info=card, report=deploy_report, packed_at=stamp).encode(),
        REQUIREMENTS_NAME: pinned_requirements(stamp).encode(),
    }
    if rewrite_manifest:
        write_manifest(root)
        expected = read_manifest(root).files
        logger.info("rewrote %s: the repository's files as they are now are accepted", root / MANIFEST_NAME)
    top = _top_name(target)
    files = [name for name in list_files(root) if name not in GENERATED]
    tmp = _temporary(target)
    try:
        digests = _write_archive(tmp, root, top, files, generated, progress)
        if expected is not None:
            _guard(root, expected, {name: digests[name].sha256 for name in files})
        _publish(tmp, target, force)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("packed %d files of %s into %s", len(digests), root, target)
    return PackResult(target, top, digests, served.models, rewrite_manifest)


def rewrite_manifest(repository: str | os.PathLike[str]) -> Path:
    """Accept a repository's files as they are now: check its layout, then rewrite its manifest."""
    from modelport.serve.repository import ModelRepository

    root = Path(repository)
    if not root.is_dir():
        raise RepositoryError(f"'{root}' is not a repository folder — pass the folder that holds manifest.json")
    ModelRepository(root, verify=False)  # a malformed repository is refused, not signed
    target = write_manifest(root)
    logger.info("rewrote %s: the repository's files as they are now are accepted", target)
    return target


def _check_output(target: Path, root: Path, force: bool) -> None:
    if not is_bundle(target):
        raise ModelSaveError(f"bundle output '{target}' must end with .tar.gz or .tgz — e.g. -o bundle.tar.gz")
    if target.is_dir():
        raise ModelSaveError(f"bundle output '{target}' is a folder — name a file, e.g. {target}/bundle.tar.gz")
    if target.exists() and not force:
        raise ModelSaveError(f"'{target}' already exists — pass --force (force=True) to replace it")
    if target.resolve().is_relative_to(root.resolve()):
        raise ModelSaveError(
            f"bundle output '{target}' lies inside the repository '{root}' it packs — write it elsewhere"
        )


def _checked_manifest(root: Path) -> Mapping[str, str] | None:
    """The repository manifest's digests, after checking the files (None: it has no manifest)."""
    if not (root / MANIFEST_NAME).exists():
        logger.info("'%s' has no %s: the bundle's manifest records the files as they are now", root, MANIFEST_NAME)
        return None
    manifest = read_manifest(root)
    problems = manifest.check(lambda name: name not in GENERATED)
    if problems:
        raise RepositoryError(
            f"repository '{root}' does not match its manifest: {describe_mismatches(problems)} — packing it "
            f"would hide the change; {_FIX_TAMPERED}"
        )
    return manifest.files


def _guard(root: Path, expected: Mapping[str, str], packed: Mapping[str, str]) -> None:
    """The files as streamed into the archive must still be the ones the manifest lists."""
    listed = {name: digest for name, digest in expected.items() if name not in GENERATED}
    problems = compare_digests(listed, packed)
    if problems:
        raise RepositoryError(
            f"repository '{root}' changed while it was being packed: {describe_mismatches(problems)} — "
            f"nothing was written; pack again once it is stable, or {_FIX_TAMPERED}"
        )


def _top_name(target: Path) -> str:
    name = target.name
    for suffix in BUNDLE_SUFFIXES:
        name = name.removesuffix(suffix)
    return name if name and not name.startswith(".") else "bundle"


def _temporary(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _publish(tmp: Path, target: Path, force: bool) -> None:
    if target.exists() and not force:  # created while packing
        raise ModelSaveError(f"'{target}' already exists — pass --force (force=True) to replace it")
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


# writing the archive ---------------------------------------------------------------------------


class _HashingReader:
    """A file object that hashes what tarfile reads from it: the digest is of the archived bytes."""

    def __init__(self, source: IO[bytes], progress: Callable[[int], None]) -> None:
        self._source = source
        self._progress = progress
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.digest.update(data)
        self._progress(len(data))
        return data


def _write_archive(
    tmp: Path,
    root: Path,
    top: str,
    files: list[str],
    generated: dict[str, bytes],
    progress: Progress | None,
) -> dict[str, FileDigest]:
    total = sum((root / name).stat().st_size for name in files)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    digests: dict[str, FileDigest] = {}
    with tarfile.open(tmp, "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info(top, tarfile.DIRTYPE, 0))
        for name in files:
            with (root / name).open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                reader = _HashingReader(f, advance)
                tar.addfile(_info(f"{top}/{name}", tarfile.REGTYPE, size), reader)
            digests[name] = FileDigest(reader.digest.hexdigest(), size)
        for name, data in generated.items():
            digests[name] = _add_bytes(tar, f"{top}/{name}", data)
        _add_bytes(tar, f"{top}/{MANIFEST_NAME}", manifest_text(digests).encode())
    return digests


def _info(name: str, kind: bytes, size: int) -> tarfile.TarInfo:
    """A member owned by nobody in particular (no user or group names leak into the bundle)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = int(time.time())
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> FileDigest:
    import io

    tar.addfile(_info(name, tarfile.REGTYPE, len(data)), io.BytesIO(data))
    return FileDigest(hashlib.sha256(data).hexdigest(), len(data))


def pinned_requirements(now: datetime | None = None) -> str:
    """``requirements.txt`` pinning modelport and its runtime dependencies to the installed versions."""
    stamp = now or datetime.now(timezone.utc)
    lines = [
        f"# Pinned by `modelport pack` on {stamp:%Y-%m-%d} (Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}): the versions this bundle was packed with.",
        f"modelport=={__version__}",
    ]
    try:
        declared = importlib.metadata.requires("modelport") or []
    except importlib.metadata.PackageNotFoundError:
        declared = []
        lines.insert(1, "# modelport is not installed as a distribution here: its dependencies are not listed")
    for requirement in declared:
        spec, _, marker = (part.strip() for part in requirement.partition(";"))
        if "extra" in marker:
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
        if match is None:
            continue
        name = match.group(0)
        try:
            pinned = f"{name}=={importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            lines.append(f"# {name}: not installed where this bundle was packed ({requirement})")
            continue
        lines.append(f"{pinned}; {marker}" if marker else pinned)
    return "\n".join(lines) + "\n"


# opening a bundle ------------------------------------------------------------------------------


@contextmanager
def open_bundle(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Extract a bundle into a private temporary folder, verify it, yield its repository root, clean up.

    Raises :class:`RepositoryError` for an unreadable archive, an unsafe member, a missing manifest
    or a file that does not match it — before anything could load.
    """
    scratch = Path(tempfile.mkdtemp(prefix="modelport-bundle-"))
    try:
        yield extract_bundle(path, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        logger.debug("removed %s", scratch)


def extract_bundle(path: str | os.PathLike[str], into: str | os.PathLike[str]) -> Path:
    """Extract a bundle safely into ``into`` and verify its manifest; returns the repository root."""
    source, folder = Path(path), Path(into)
    if not source.is_file():
        raise RepositoryError(f"bundle '{source}' does not exist — check the path (write one with `modelport pack`)")
    try:
        with tarfile.open(source, "r:gz") as tar:
            members = tar.getmembers()
            top = _check_members(source, members)
            _check_space(source, members, folder)
            tar.extractall(folder, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise RepositoryError(
            f"bundle '{source}' cannot be read as a .tar.gz ({e}) — it is truncated or not a bundle; "
            "pack it again with `modelport pack`"
        ) from e
    root = folder / top if top else folder
    if not (root / MANIFEST_NAME).exists():
        raise RepositoryError(
            f"bundle '{source}' has no {MANIFEST_NAME} — its files cannot be verified; "
            "pack it with `modelport pack`, which writes one"
        )
    problems = read_manifest(root).check()
    if problems:
        raise RepositoryError(
            f"bundle '{source}' does not match its manifest: {describe_mismatches(problems)} — "
            "it was modified or corrupted after packing; get an intact copy or pack it again"
        )
    logger.info("opened bundle %s into %s", source, root)
    return root


#: Space kept free on the extraction disk beyond what the bundle needs.
_SPARE_BYTES = 256 * 1024 * 1024


def _check_space(source: Path, members: list[tarfile.TarInfo], folder: Path) -> None:
    """Refuse a bundle that would not fit on the disk it is extracted to (a gzip bomb, or a full disk)."""
    needed = sum(m.size for m in members if m.isfile())
    free = shutil.disk_usage(folder).free
    if needed + _SPARE_BYTES > free:
        raise RepositoryError(
            f"bundle '{source}' unpacks to {needed / 2**30:.2f} GiB, but only {free / 2**30:.2f} GiB are free in "
            f"'{folder}' (and {_SPARE_BYTES >> 20} MiB are kept spare) — free some space, or point TMPDIR at a "
            "larger disk"
        )


def _check_members(source: Path, members: list[tarfile.TarInfo]) -> str:
    """Refuse anything but plain files and folders inside the archive; returns the single top folder ('' if none)."""
    tops = set()
    for member in members:
        parts = PurePosixPath(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or re.match(r"[A-Za-z]:", member.name):
            raise RepositoryError(
                f"bundle '{source}' holds '{member.name}', a path outside the bundle (absolute or with '..') "
                "— refusing to extract it; bundles hold only relative paths"
            )
        if not (member.isfile() or member.isdir()):
            raise RepositoryError(
                f"bundle '{source}' holds '{member.name}', a {_kind(member)} — refusing to extract it; "
                "bundles hold only plain files and folders"
            )
        if parts:
            tops.add(parts[0] if len(parts) > 1 or member.isdir() else "")
    return next(iter(tops)) if len(tops) == 1 else ""


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symbolic link to '{member.linkname}'"
    if member.islnk():
        return f"hard link to '{member.linkname}'"
    if member.isdev():
        return "device or FIFO"
    return f"member of tar type {member.type!r}"
