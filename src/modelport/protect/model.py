"""Encrypting and decrypting model files, and reading encrypted ones straight into memory.

Two forms, told apart by their first bytes (:func:`encryption_mode`), so any reader can tell an
encrypted file from a plain one without parsing it:

* **whole file** — a sealed container (:mod:`modelport.protect.crypto`) holding the ONNX file;
* **weights only** — an ONNX file with a readable graph and the sealed model inside
  (:mod:`modelport.protect.preview`).

Readers never write plaintext: :func:`open_encrypted` returns the model's bytes, which
:func:`modelport.ir.serde.load` parses and :class:`~modelport.runners.onnxruntime.OrtRunner` hands
to ONNX Runtime as bytes. Only :func:`decrypt_model`, asked to, writes a plaintext file (mode 0600).
Both writers go through a temporary file in the target folder and a rename, and never overwrite
their input.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any, NamedTuple

from modelport.errors import ModelLoadError, ModelSaveError
from modelport.protect.crypto import MAX_PAYLOAD_BYTES, Mode, key_id, looks_sealed, seal, unseal
from modelport.protect.errors import EncryptedModelError
from modelport.protect.keys import active_key, check_key
from modelport.protect.preview import build_preview, looks_like_preview, open_preview

__all__ = [
    "ENCRYPTED_META",
    "Decrypted",
    "decrypt_bytes",
    "decrypt_model",
    "encrypt_model",
    "encryption_mode",
    "is_encrypted",
    "open_encrypted",
    "save_encrypted",
]

logger = logging.getLogger(__name__)

#: Key in ``onnx_ir.Model.meta`` that :func:`modelport.ir.serde.load` sets on a model it decrypted
#: (the value is the :class:`Mode` label).
ENCRYPTED_META = "modelport.encrypted"
_SNIFF_BYTES = 64


class Decrypted(NamedTuple):
    """A decrypted model: how it was stored, and its ONNX bytes."""

    mode: Mode
    payload: bytes


def encryption_mode(path: str | os.PathLike[str]) -> Mode | None:
    """How the file at ``path`` is encrypted, from its first bytes; None for a plain (or unreadable) file.

    Reads 64 bytes, parses nothing. A weights-only file re-saved by another tool is not recognised
    here (its marker moved); :func:`modelport.ir.serde.load` still recognises it.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError:
        return None
    if looks_sealed(head):
        return Mode.WHOLE
    if looks_like_preview(head):
        return Mode.WEIGHTS_ONLY
    return None


def is_encrypted(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` is a model encrypted by modelport (see :func:`encryption_mode`)."""
    return encryption_mode(path) is not None


def decrypt_bytes(data: bytes, key: bytes | None, *, what: str) -> Decrypted:
    """Authenticate and decrypt the content of an encrypted model file (either form).

    Raises MissingKeyError without a key, DecryptionError for a wrong key or a modified file,
    NotEncryptedError for a plain file.
    """
    if looks_sealed(data):
        mode, payload = unseal(data, key, what=what, expect=Mode.WHOLE)
        return Decrypted(mode, payload)
    return Decrypted(Mode.WEIGHTS_ONLY, open_preview(data, key, what=what))


def open_encrypted(path: str | os.PathLike[str], key: bytes | None = None) -> Decrypted | None:
    """The decrypted model in the file at ``path``, in memory; None when the file is not encrypted.

    ``key`` defaults to the active key (:func:`modelport.protect.active_key`).
    """
    if encryption_mode(path) is None:
        return None
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read encrypted model file '{file}': {e}") from e
    return decrypt_bytes(data, key if key is not None else active_key(), what=f"model file '{file}'")


def encrypt_model(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], key: bytes, *, weights_only: bool = False
) -> Path:
    """Encrypt the ONNX model at ``src`` with AES-256-GCM into ``dst``; return ``dst``.

    Whole-file mode seals the file as it is (a model with external data is sealed with its weights
    inline). ``weights_only`` writes an ONNX file whose graph stays readable. Refuses an input that
    is already encrypted, an output that is the input, and models over 2 GiB.
    """
    import onnx_ir as ir

    from modelport.ir import serde

    key = check_key(key)
    source, target = _paths(src, dst)
    if is_encrypted(source):
        raise EncryptedModelError(f"'{source}' is already encrypted — encrypt the plaintext model instead")
    model = serde.load(source)
    if ENCRYPTED_META in model.meta:
        raise EncryptedModelError(
            f"'{source}' is already encrypted (a weights-only file re-saved by another tool) — "
            "encrypt the plaintext model instead"
        )
    if serde.weight_bytes(model) > MAX_PAYLOAD_BYTES:
        raise EncryptedModelError(
            f"'{source}' holds {serde.weight_bytes(model):,} bytes of weights, over the 2 GiB limit of one encrypted "
            "model (one ONNX protobuf) — models this large cannot be encrypted yet"
        )
    has_external = any(
        isinstance(value.const_value, ir.ExternalTensor)
        for graph in model.graphs()
        for value in graph.initializers.values()
    )
    payload = serde.to_bytes(model) if has_external else source.read_bytes()
    mode = Mode.WEIGHTS_ONLY if weights_only else Mode.WHOLE
    sealed = seal(payload, key, mode)
    data = build_preview(payload, sealed, key_id=key_id(key)) if weights_only else sealed
    _write_atomic(target, data, private=False)
    logger.info("encrypted %s -> %s (%s, key id %s)", source, target, mode.label, key_id(key))
    return target


def save_encrypted(model: Any, dst: str | os.PathLike[str], key: bytes) -> Path:
    """Write an in-memory model straight to an encrypted file (whole-file mode): no plaintext on disk."""
    from modelport.ir import serde

    key = check_key(key)
    target = Path(dst)
    sealed = seal(serde.to_bytes(model), key, Mode.WHOLE)
    _write_atomic(target, sealed, private=False)
    logger.info("wrote %s encrypted (key id %s)", target, key_id(key))
    return target


def decrypt_model(src: str | os.PathLike[str], dst: str | os.PathLike[str], key: bytes) -> Path:
    """Decrypt the encrypted model at ``src`` into a plain ONNX file ``dst`` (mode 0600); return ``dst``.

    Nothing is written unless the whole file authenticates. Refuses a plain input and an output
    that is the input.
    """
    key = check_key(key)
    source, target = _paths(src, dst)
    if not source.is_file():
        raise ModelLoadError(f"model file '{source}' does not exist — check the path")
    try:
        data = source.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read model file '{source}': {e}") from e
    decrypted = decrypt_bytes(data, key, what=f"model file '{source}'")
    _write_atomic(target, decrypted.payload, private=True)
    logger.info("decrypted %s -> %s (%s)", source, target, decrypted.mode.label)
    return target


def _paths(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> tuple[Path, Path]:
    source, target = Path(src), Path(dst)
    if target.resolve() == source.resolve():
        raise ModelSaveError(f"refusing to overwrite the input model '{source}' — choose another output path")
    if target.is_dir():
        raise ModelSaveError(f"output path '{target}' is a directory — give a file name ending in .onnx")
    return source, target


def _write_atomic(target: Path, data: bytes, *, private: bool) -> None:
    """Write ``data`` to ``target`` through a temporary file in the same folder and a rename.

    ``private`` files (decrypted models) get mode 0600; others the usual 0666 less the umask.
    """
    folder = target.parent if str(target.parent) else Path(".")
    temp = folder / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as e:
        raise ModelSaveError(f"writing '{target}' failed: {e} — nothing was written there") from e
    finally:
        temp.unlink(missing_ok=True)
