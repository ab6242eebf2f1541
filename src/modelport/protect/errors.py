"""The errors of model protection, each a subclass of an existing :mod:`modelport.errors` class.

They derive from the classes callers already catch: a model that cannot be decrypted is a model
that cannot be loaded (:class:`~modelport.errors.ModelLoadError`), a key file that cannot be read
is an invalid option (:class:`~modelport.errors.ConfigError`). Catching ``ModelportError`` still
catches all of them::

    ModelLoadError
    ├── EncryptedModelError   an encrypted model cannot be used as asked
    │   ├── MissingKeyError   it is encrypted, and no key was given
    │   └── DecryptionError   authentication failed: wrong key, or the file was modified
    └── NotEncryptedError     decrypting a file that is not encrypted
    ConfigError
    └── KeyFileError          a key file or key variable is missing, unreadable or malformed
"""

from __future__ import annotations

from modelport.errors import ConfigError, ModelLoadError

__all__ = ["DecryptionError", "EncryptedModelError", "KeyFileError", "MissingKeyError", "NotEncryptedError"]


class EncryptedModelError(ModelLoadError):
    """An encrypted model cannot be used as asked (encrypted twice, malformed header, ...)."""


class MissingKeyError(EncryptedModelError):
    """A model is encrypted and no key was given (no ``--key-file``, no ``MODELPORT_KEY_FILE``)."""


class DecryptionError(EncryptedModelError):
    """AES-GCM authentication failed: the key is wrong, or the file was modified after encryption."""


class NotEncryptedError(ModelLoadError):
    """A file given to ``decrypt`` carries no modelport encryption."""


class KeyFileError(ConfigError):
    """A key file or key environment variable is missing, unreadable, or not a 256-bit key."""
