"""Serving over the KServe v2 (Open Inference Protocol) HTTP API.

``protocol`` is the wire format, ``repository`` the models served and their configuration,
``app`` the Starlette application, ``server`` runs it with uvicorn::

    from modelport.serve import run_server
    run_server("models/")            # REPO/<name>/<version>/model.onnx, or one .onnx file
"""

from modelport.serve.app import create_app
from modelport.serve.protocol import (
    DATATYPES,
    HEADER_LENGTH,
    EncodedBody,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    datatype_of,
    decode_response,
    encode_request,
    encode_response,
    numpy_dtype_of,
    parse_request,
)
from modelport.serve.repository import (
    AllVersions,
    LatestVersions,
    ModelConfig,
    ModelRepository,
    ServedModel,
    SpecificVersions,
    VersionPolicy,
    read_config,
)
from modelport.serve.server import run_server

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "AllVersions",
    "EncodedBody",
    "InferenceRequest",
    "InferenceResponse",
    "LatestVersions",
    "ModelConfig",
    "ModelRepository",
    "RequestedOutput",
    "ServedModel",
    "SpecificVersions",
    "VersionPolicy",
    "create_app",
    "datatype_of",
    "decode_response",
    "encode_request",
    "encode_response",
    "numpy_dtype_of",
    "parse_request",
    "read_config",
    "run_server",
]
