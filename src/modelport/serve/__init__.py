"""Serving over the KServe v2 (Open Inference Protocol): HTTP and gRPC.

``protocol`` is the HTTP wire format, ``repository`` the models served and their configuration
(``pbtxt`` reads Triton's), ``core`` the transport-independent server (instances, queues,
``batcher``, ``stats``, reload, drain), ``pipeline`` pre- and post-processing stages, ``app`` the
Starlette application, ``grpc_service`` the gRPC service, ``server`` runs them::

    from modelport.serve import run_server
    run_server("models/", grpc_port=8001)   # REPO/<name>/<version>/model.onnx, or one .onnx file
"""

from modelport.serve.app import create_app
from modelport.serve.batcher import DynamicBatcher, Executed
from modelport.serve.core import InferenceCore, InferenceResult, ServerOptions
from modelport.serve.pipeline import Pipeline, PipelineConfig
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
    DynamicBatching,
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
    "DynamicBatcher",
    "DynamicBatching",
    "EncodedBody",
    "Executed",
    "InferenceCore",
    "InferenceRequest",
    "InferenceResponse",
    "InferenceResult",
    "LatestVersions",
    "ModelConfig",
    "ModelRepository",
    "Pipeline",
    "PipelineConfig",
    "RequestedOutput",
    "ServedModel",
    "ServerOptions",
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
