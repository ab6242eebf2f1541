"""The sealed container: AES-256-GCM over a whole payload, with an authenticated 32-byte header.

Layout (big-endian)::

    offset  size  field
         0     8  magic  b"\\x89MPENC\\r\\n"  (a non-ASCII first byte and a CRLF, as PNG: text-mode
                                            transfers that rewrite line ends are caught as corruption)
         8     1  format version (1)
         9     1  mode: 1 = whole file, 2 = weights only (the container inside a readable graph)
        10     2  flags, 0 (a reader refuses flags it does not know)
        12     8  key id: the first 8 bytes of SHA-256("modelport key id v1" || key)
        20    12  nonce, random for every container
        32     n  ciphertext (as long as the payload)
      32+n    16  GCM tag

The whole header is the GCM associated data, so changing any header byte — the mode, the version,
the nonce, the key id — fails authentication exactly like changing the ciphertext does.

Why these choices:

* **AES-GCM from ``cryptography``** is an AEAD: one key gives secrecy and integrity, and a tampered
  file is refused before a single decrypted byte is used. The payload is decrypted in one call, so
  there is no streaming mode whose early output could be acted on before the tag is checked.
* **A random 96-bit nonce per file** is safe for up to 2**32 files per key (NIST SP 800-38D); a
  model key encrypts a handful of files, far from that bound.
* **The key id** lets a wrong key be told apart from a modified file: a mismatching id means "wrong
  key", a matching id with a failing tag means "modified". It reveals nothing about the key (a
  truncated hash of 256 random bits) and is itself authenticated.
* **One payload of at most 2 GiB - 1 bytes**: that is the most ``cryptography`` encrypts in one call,
  and also the most one ONNX protobuf (the payload) can hold, so the limit costs nothing extra.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import struct
from dataclasses import dataclass

from modelport.protect.errors import DecryptionError, EncryptedModelError, MissingKeyError
from modelport.protect.keys import ENV_KEY_FILE, check_key

__all__ = [
    "FORMAT_VERSION",
    "HEADER_BYTES",
    "MAGIC",
    "MAX_PAYLOAD_BYTES",
    "TAG_BYTES",
    "Header",
    "Mode",
    "key_id",
    "looks_sealed",
    "read_header",
    "seal",
    "unseal",
]

logger = logging.getLogger(__name__)

MAGIC = b"\x89MPENC\r\n"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sBBH8s12s")
HEADER_BYTES = _HEADER.size
TAG_BYTES = 16
NONCE_BYTES = 12
MAX_PAYLOAD_BYTES = (1 << 31) - 1
_KEY_ID_DOMAIN = b"modelport key id v1"


class Mode(enum.Enum):
    """What a container holds: a whole model file, or the model behind a readable graph."""

    WHOLE = 1
    WEIGHTS_ONLY = 2

    @property
    def label(self) -> str:
        return "whole file" if self is Mode.WHOLE else "weights only"


@dataclass(frozen=True)
class Header:
    """The authenticated header of a container."""

    version: int
    mode: Mode
    key_id: str
    nonce: bytes

    def pack(self) -> bytes:
        return _HEADER.pack(MAGIC, self.version, self.mode.value, 0, bytes.fromhex(self.key_id), self.nonce)


def key_id(key: bytes) -> str:
    """A short public name of a key (16 hex characters), stored in every container it seals."""
    return hashlib.sha256(_KEY_ID_DOMAIN + check_key(key)).digest()[:8].hex()


def looks_sealed(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts with the container magic."""
    return head.startswith(MAGIC)


def seal(payload: bytes, key: bytes, mode: Mode) -> bytes:
    """Encrypt ``payload`` into a container (header + ciphertext + tag)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(payload) > MAX_PAYLOAD_BYTES:
        raise EncryptedModelError(
            f"the model is {len(payload):,} bytes, over the {MAX_PAYLOAD_BYTES:,}-byte limit of one encrypted "
            "payload (the same 2 GiB limit as one ONNX protobuf) — models with more weights cannot be encrypted yet"
        )
    nonce = os.urandom(NONCE_BYTES)
    header = Header(FORMAT_VERSION, mode, key_id(key), nonce).pack()
    return header + AESGCM(key).encrypt(nonce, payload, header)


def read_header(data: bytes, *, what: str) -> Header:
    """The header of a container, checked for magic, version, flags, mode and length."""
    if not looks_sealed(data):
        raise EncryptedModelError(f"{what} does not start with the modelport encryption header")
    if len(data) < HEADER_BYTES + TAG_BYTES:
        raise DecryptionError(
            f"{what} is {len(data)} bytes, shorter than an encrypted model's header and tag "
            f"({HEADER_BYTES + TAG_BYTES} bytes) — the file is truncated; copy it again"
        )
    _magic, version, mode, flags, kid, nonce = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise EncryptedModelError(
            f"{what} is encrypted in format version {version}, but this modelport reads version {FORMAT_VERSION} — "
            "upgrade modelport (or, if the file should be version 1, it is corrupt)"
        )
    if flags != 0 or mode not in (m.value for m in Mode):
        raise EncryptedModelError(
            f"{what} has an encryption header with mode {mode} and flags {flags:#06x}, but this modelport knows "
            "modes 1-2 and no flags — the file is corrupt or from a newer modelport"
        )
    return Header(version, Mode(mode), bytes(kid).hex(), bytes(nonce))


def unseal(data: bytes, key: bytes | None, *, what: str, expect: Mode | None = None) -> tuple[Mode, bytes]:
    """Authenticate and decrypt a container; return its mode and payload.

    Raises :class:`MissingKeyError` when ``key`` is None, :class:`DecryptionError` when the key is
    not the one the file was sealed with or when any byte of the file was changed.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = read_header(data, what=what)
    if expect is not None and header.mode is not expect:
        raise EncryptedModelError(
            f"{what} holds a '{header.mode.label}' container where a '{expect.label}' one belongs — "
            "the file was assembled from parts of different files; encrypt the model again"
        )
    if key is None:
        raise MissingKeyError(
            f"{what} is encrypted (key id {header.key_id}) — pass --key-file KEYFILE or set {ENV_KEY_FILE}"
        )
    given = key_id(key)
    if given != header.key_id:
        raise DecryptionError(
            f"{what} was encrypted with key id {header.key_id}, but the key given has id {given} — the key is "
            "wrong (pass the key the model was encrypted with), or the header was modified; "
            "nothing was decrypted, loaded or written"
        )
    try:
        payload = AESGCM(key).decrypt(header.nonce, memoryview(data)[HEADER_BYTES:], data[:HEADER_BYTES])
    except InvalidTag as e:
        raise DecryptionError(
            f"{what} failed authentication (AES-GCM tag mismatch): the key matches its key id {header.key_id}, so "
            "the file was modified or corrupted after encryption — restore it from a good copy; "
            "nothing was decrypted, loaded or written"
        ) from e
    logger.debug("decrypted %s (%s, %d bytes)", what, header.mode.label, len(payload))
    return header.mode, payload
