"""Model protection: AES-256-GCM encryption of model files, decrypted only in memory when loading.

``encrypt_model`` seals a whole ONNX file, or (``weights_only=True``) writes an ONNX file whose
graph stays readable while every weight is encrypted. Every reader in modelport — ``load``,
``OrtRunner``, and through them every command and the serving repository — recognises an
encrypted file by its first bytes and decrypts it in memory with the *active key*
(:func:`use_key`, the CLI's ``--key-file``, or ``MODELPORT_KEY_FILE`` / ``MODELPORT_KEY``).
A wrong key, a missing key and a modified file are refused with an error that says which.

Importing this package is cheap: ``cryptography`` and ``onnx`` are imported when first used.

::

    from modelport.protect import encrypt_model, generate_key, use_key
    key = generate_key("model.key")
    encrypt_model("model.onnx", "model.enc.onnx", key)
    with use_key(key):
        model = modelport.ir.load("model.enc.onnx")
"""

from __future__ import annotations

from modelport.protect.crypto import Mode, key_id
from modelport.protect.errors import (
    DecryptionError,
    EncryptedModelError,
    KeyFileError,
    MissingKeyError,
    NotEncryptedError,
)
from modelport.protect.keys import (
    ENV_KEY,
    ENV_KEY_FILE,
    KEY_BYTES,
    active_key,
    generate_key,
    key_from_environment,
    load_key,
    parse_key,
    set_active_key,
    use_key,
)
from modelport.protect.model import (
    ENCRYPTED_META,
    Decrypted,
    decrypt_bytes,
    decrypt_model,
    encrypt_model,
    encryption_mode,
    is_encrypted,
    open_encrypted,
    save_encrypted,
)

__all__ = [
    "ENCRYPTED_META",
    "ENV_KEY",
    "ENV_KEY_FILE",
    "KEY_BYTES",
    "Decrypted",
    "DecryptionError",
    "EncryptedModelError",
    "KeyFileError",
    "MissingKeyError",
    "Mode",
    "NotEncryptedError",
    "active_key",
    "decrypt_bytes",
    "decrypt_model",
    "encrypt_model",
    "encryption_mode",
    "generate_key",
    "is_encrypted",
    "key_from_environment",
    "key_id",
    "load_key",
    "open_encrypted",
    "parse_key",
    "save_encrypted",
    "set_active_key",
    "use_key",
]
