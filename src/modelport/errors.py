"""The exception hierarchy of modelport.

Every error the library raises on purpose derives from :class:`ModelportError`, so a caller can
catch one type. Messages say what failed, for which object, what was seen, what was expected and
how to fix it; the underlying cause is chained with ``raise ... from``.

::

    ModelportError
    ├── ModelLoadError          a file is missing, is not ONNX, or is truncated
    │   ├── EncryptedModelError   (modelport.protect) an encrypted model cannot be opened
    │   │   ├── MissingKeyError   it is encrypted and no key was given
    │   │   └── DecryptionError   wrong key, or the file was modified
    │   └── NotEncryptedError     decrypting a file that is not encrypted
    ├── ModelSaveError          the output cannot be written (or would overwrite the input)
    ├── InvalidModelError       the model loads but is not valid (checker, unsupported construct)
    ├── InputError              feeds do not match a model's inputs
    │   ├── UnknownInputError   a feed names an input the model does not have (or misses one)
    │   ├── InputDtypeError     a feed has the wrong dtype
    │   └── InputShapeError     a feed has the wrong rank or a wrong static dimension
    ├── BackendError            an engine is unknown, unavailable, or failed while running
    ├── ExportError             PyTorch -> ONNX export failed or does not match eager PyTorch
    ├── PassError               an optimization pass failed or was rolled back
    ├── QuantizationError       quantization could not be done (bad calibration data, mode, ...)
    ├── CalibrationDataError    calibration data cannot be read or does not fit the model
    ├── VerificationError       two models or engines disagree beyond tolerance
    ├── ConfigError             a configuration file or option is invalid
    │   └── KeyFileError          (modelport.protect) a key file or key variable is malformed
    ├── RepositoryError         a model repository is malformed, or a model/version is unknown
    │   ├── ModelNotFoundError  a model or version is not in the repository
    │   └── ModelNotReadyError  a model is known but not loaded (starting, stopping, unloaded, stuck)
    ├── ProtocolError           a KServe v2 request is malformed
    │   └── PayloadTooLargeError  a request body is over the server's size limit
    ├── ServerBusyError         a model's request queue is full (retry later)
    ├── RequestTimeoutError     a request did not finish within its timeout
    └── LoadtestError           a load test cannot go on (server unreachable, refusing, answering garbage)
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CalibrationDataError",
    "ConfigError",
    "ExportError",
    "InputDtypeError",
    "InputError",
    "InputShapeError",
    "InvalidModelError",
    "LoadtestError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "ModelSaveError",
    "ModelportError",
    "PassError",
    "PayloadTooLargeError",
    "ProtocolError",
    "QuantizationError",
    "RepositoryError",
    "RequestTimeoutError",
    "ServerBusyError",
    "UnknownInputError",
    "VerificationError",
]


class ModelportError(Exception):
    """Base class of every error modelport raises on purpose."""


class ModelLoadError(ModelportError):
    """A model file is missing, is not an ONNX model, or is truncated."""


class ModelSaveError(ModelportError):
    """A model cannot be written where asked."""


class InvalidModelError(ModelportError):
    """A model loads but is not valid for the requested operation."""


class InputError(ModelportError):
    """Feeds do not match the inputs a model declares."""


class UnknownInputError(InputError):
    """A feed names an input the model does not have, or a required input is missing."""


class InputDtypeError(InputError):
    """A feed has a dtype other than the one the model declares."""


class InputShapeError(InputError):
    """A feed has the wrong rank, or a static dimension with the wrong size."""


class BackendError(ModelportError):
    """An engine is unknown, not installed, or failed while running."""


class ExportError(ModelportError):
    """Export from PyTorch failed, or the exported model disagrees with eager PyTorch."""


class PassError(ModelportError):
    """An optimization pass failed."""


class QuantizationError(ModelportError):
    """Quantization could not be performed."""


class CalibrationDataError(ModelportError):
    """Calibration data cannot be read or does not fit the model's inputs."""


class VerificationError(ModelportError):
    """Two models or engines disagree beyond the stated tolerance."""


class ConfigError(ModelportError):
    """A configuration file or option is invalid."""


class RepositoryError(ModelportError):
    """A model repository is malformed."""


class ModelNotFoundError(RepositoryError):
    """A model, or a version of it, is not in the repository."""


class ProtocolError(ModelportError):
    """A KServe v2 request is malformed."""


class ModelNotReadyError(RepositoryError):
    """A model version is known but cannot serve now: loading, unloading, unloaded, or stuck."""


class PayloadTooLargeError(ProtocolError):
    """A request body is larger than the server accepts."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class ServerBusyError(ModelportError):
    """A model's request queue is full; ``retry_after`` is a suggested wait in seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTimeoutError(ModelportError):
    """A request did not finish within its timeout (it was dropped from the queue if still there)."""


class LoadtestError(ModelportError):
    """The load test cannot go on: the server is unreachable, refuses the request, or answers garbage."""
