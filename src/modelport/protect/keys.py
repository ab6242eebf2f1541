"""Keys: reading them from files and the environment, creating them, and the process's active key.

A key is 32 random bytes (AES-256). People move keys through secret stores, Kubernetes secrets and
environment variables, which carry text better than bytes, so a key file may hold the 32 raw bytes
or the same bytes as 64 hex characters or as base64; :func:`generate_key` writes hex.

Where a key comes from, first match wins:

1. the key given to :func:`use_key` / :func:`set_active_key` (the CLI's ``--key-file``);
2. ``MODELPORT_KEY_FILE`` (a path) or ``MODELPORT_KEY`` (the key as hex or base64 text). Both may
   be set only if they hold the same key — two different keys would make the choice a guess.

The active key is *process* state, not context state: ONNX Runtime sessions are built on worker
threads (the serving repository, the batcher), which do not inherit a ``contextvars`` context, and
every one of them must see the key the command was started with. The environment is read on every
lookup, never cached, so a key rotated in a mounted secret is picked up by the next load.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import string
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modelport.protect.errors import KeyFileError

__all__ = [
    "ENV_KEY",
    "ENV_KEY_FILE",
    "KEY_BYTES",
    "active_key",
    "check_key",
    "generate_key",
    "key_from_environment",
    "load_key",
    "parse_key",
    "set_active_key",
    "use_key",
]

logger = logging.getLogger(__name__)

KEY_BYTES = 32
ENV_KEY = "MODELPORT_KEY"
ENV_KEY_FILE = "MODELPORT_KEY_FILE"
_HOW_TO_CREATE = "create one with `modelport encrypt --new-key KEYFILE`"


class _ActiveKey:
    """The process's active key, behind a lock (sessions are built on many threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: bytes | None = None

    def swap(self, key: bytes | None) -> bytes | None:
        with self.lock:
            previous, self.key = self.key, key
        return previous

    def get(self) -> bytes | None:
        with self.lock:
            return self.key


_ACTIVE = _ActiveKey()


def check_key(key: bytes) -> bytes:
    """``key`` itself if it is 32 bytes; raise :class:`KeyFileError` otherwise."""
    if not isinstance(key, bytes | bytearray):
        raise KeyFileError(f"a key must be bytes, not {type(key).__name__} — read it with modelport.protect.load_key")
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"the key has {len(key)} bytes, but AES-256 needs {KEY_BYTES} — {_HOW_TO_CREATE}")
    return bytes(key)


def parse_key(data: bytes, *, what: str) -> bytes:
    """A key from the content of a key file or variable: 32 raw bytes, 64 hex characters, or base64.

    ``what`` names the source in error messages ("key file 'k.key'").
    """
    if len(data) == KEY_BYTES:
        return bytes(data)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise KeyFileError(
            f"{what} holds {len(data)} bytes that are not text, so it is not a raw {KEY_BYTES}-byte key and not "
            f"hex or base64 either — {_HOW_TO_CREATE}"
        ) from None
    if not text:
        raise KeyFileError(f"{what} is empty — {_HOW_TO_CREATE}")
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass  # 64 characters that are not hex: maybe base64 of something else; report below
    decoded = _base64(text)
    if decoded is not None and len(decoded) == KEY_BYTES:
        return decoded
    if all(c in string.hexdigits for c in text):
        seen = f"{len(text)} hex characters"
    elif decoded is not None:
        seen = f"base64 of {len(decoded)} bytes"
    else:
        seen = f"{len(text)} characters that are neither hex nor base64"
    raise KeyFileError(
        f"{what} holds {seen}, but a key is {KEY_BYTES} raw bytes, {2 * KEY_BYTES} hex characters, or base64 of "
        f"{KEY_BYTES} bytes — {_HOW_TO_CREATE}"
    )


def _base64(text: str) -> bytes | None:
    """``text`` decoded as base64 (standard or URL-safe alphabet, padding optional); None if it is not."""
    normalized = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(normalized + "=" * (-len(normalized) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _read_key_file(path: str | os.PathLike[str], *, what: str) -> bytes:
    file = Path(path)
    if file.is_dir():
        raise KeyFileError(f"{what} '{file}' is a folder — give the path of the key file inside it")
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} '{file}' does not exist — check the path, or {_HOW_TO_CREATE}") from None
    except OSError as e:
        raise KeyFileError(f"cannot read {what} '{file}': {e} — check its permissions") from e
    return parse_key(data, what=f"{what} '{file}'")


def key_from_environment() -> bytes | None:
    """The key named by ``MODELPORT_KEY_FILE`` or held by ``MODELPORT_KEY``; None when neither is set."""
    path = os.environ.get(ENV_KEY_FILE, "").strip()
    text = os.environ.get(ENV_KEY, "").strip()
    from_file = _read_key_file(path, what=f"${ENV_KEY_FILE} key file") if path else None
    from_text = parse_key(text.encode("utf-8"), what=f"${ENV_KEY}") if text else None
    if from_file is not None and from_text is not None and not secrets.compare_digest(from_file, from_text):
        raise KeyFileError(
            f"${ENV_KEY_FILE} and ${ENV_KEY} are both set and hold different keys — unset the one that is wrong"
        )
    return from_file if from_file is not None else from_text


def load_key(key_file: str | os.PathLike[str] | None = None) -> bytes:
    """The key in ``key_file``, or without one the key from the environment (see the module docstring).

    Raises :class:`KeyFileError` when the file is missing or malformed, or when no key is found.
    """
    if key_file is not None:
        return _read_key_file(key_file, what="key file")
    key = key_from_environment()
    if key is None:
        raise KeyFileError(f"no key was given — pass --key-file KEYFILE or set ${ENV_KEY_FILE} (or ${ENV_KEY})")
    return key


def generate_key(path: str | os.PathLike[str]) -> bytes:
    """Create a new random key, write it to ``path`` as hex (mode 0600) and return it.

    An existing file is never overwritten: replacing a key makes every model encrypted with it
    unreadable. The file appears complete or not at all (written aside, then hard-linked into place).
    """
    target = Path(path)
    if target.exists():
        raise KeyFileError(
            f"key file '{target}' already exists — a new key would replace it and lock out every model "
            "encrypted with it; choose another path"
        )
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise KeyFileError(f"cannot create key file '{target}': folder '{folder}' does not exist — create it first")
    key = secrets.token_bytes(KEY_BYTES)
    temp = folder / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp, target)  # fails, unlike a rename, if the target appeared meanwhile
    except FileExistsError:
        raise KeyFileError(f"key file '{target}' appeared while it was being created — choose another path") from None
    except OSError as e:
        raise KeyFileError(f"cannot create key file '{target}': {e}") from e
    finally:
        temp.unlink(missing_ok=True)
    logger.info("created key file %s", target)
    return key


def set_active_key(key: bytes | None) -> None:
    """Make ``key`` the key every load in this process decrypts with (None: back to the environment)."""
    _ACTIVE.swap(None if key is None else check_key(key))


@contextmanager
def use_key(key: bytes | None) -> Iterator[None]:
    """Make ``key`` the active key inside the block, and restore the previous one after it.

    The key is process-wide (see the module docstring): every thread sees it while the block runs,
    so nest blocks from one thread (a command, a test), not from concurrent ones.
    """
    previous = _ACTIVE.swap(None if key is None else check_key(key))
    try:
        yield
    finally:
        _ACTIVE.swap(previous)


def active_key() -> bytes | None:
    """The key to decrypt with: the one set by :func:`use_key`, else the environment's, else None."""
    key = _ACTIVE.get()
    return key if key is not None else key_from_environment()
