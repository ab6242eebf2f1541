"""The KServe v2 gRPC service (``inference.GRPCInferenceService``) over the server core.

The HTTP app and this service are two thin transports over one ``InferenceCore``: each turns its
wire format into an :class:`~modelport.serve.protocol.InferenceRequest`, awaits ``core.infer``
and encodes the result. This module does the gRPC side, with the message classes of
:mod:`modelport.serve.kserve_pb` and ``grpc.aio`` generic handlers (no generated code)::

    server = await start_grpc_server(core, "0.0.0.0", 8001, max_message_bytes=64 << 20)
    ...
    await server.stop(grace=5.0)

Implemented RPCs: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata,
ModelInfer, ModelStatistics, RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload. The
others of Triton's service (streaming, model config, shared memory, trace, log settings) answer
``UNIMPLEMENTED``, as gRPC does for any method a server does not register.

Inputs sent as ``raw_input_contents`` (what ``tritonclient`` sends) become numpy arrays over the
bytes protobuf hands out (``np.frombuffer``, no copy of ours); typed ``contents`` are accepted
too. Outputs go back as ``raw_output_contents``, one per output, in order. The call's gRPC
deadline becomes the request's ``timeout`` parameter when it is the shorter of the two, so the
core drops work the client has stopped waiting for; a client that cancels cancels its
``core.infer`` call. Errors map to status codes as the HTTP statuses do:

=========================================  ======================  ===========
error                                      gRPC status             HTTP
=========================================  ======================  ===========
ProtocolError, InputError                  INVALID_ARGUMENT        400
ModelNotFoundError                         NOT_FOUND               404
PayloadTooLargeError                       RESOURCE_EXHAUSTED      413
ServerBusyError (``retry-after`` trailer)  UNAVAILABLE             429
ModelNotReadyError                         UNAVAILABLE             503
RequestTimeoutError                        DEADLINE_EXCEEDED       504
anything else (logged)                     INTERNAL                500
=========================================  ======================  ===========

Messages larger than ``max_message_bytes`` are refused by gRPC itself with
``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import numpy as np
from google.protobuf import json_format

from modelport.errors import (
    ConfigError,
    InputError,
    ModelNotFoundError,
    ModelNotReadyError,
    ModelportError,
    PayloadTooLargeError,
    ProtocolError,
    RequestTimeoutError,
    ServerBusyError,
)
from modelport.serve import kserve_pb as pb
from modelport.serve.protocol import (
    InferenceRequest,
    RequestedOutput,
    check_json_values,
    datatype_of,
    numpy_dtype_of,
    object_array,
    parse_shape,
    reject_unsupported_parameters,
    tensor_from_binary,
    tensor_to_binary,
)

__all__ = [
    "GrpcInferenceService",
    "GrpcServer",
    "InferenceCoreLike",
    "InferenceResultLike",
    "encode_infer_response",
    "parse_infer_request",
    "start_grpc_server",
]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]
Handler = Callable[[Any, Any], Awaitable[Any]]


class InferenceResultLike(Protocol):
    """What the service reads from the result of ``core.infer`` (``InferenceResult``)."""

    @property
    def model_name(self) -> str: ...
    @property
    def model_version(self) -> str: ...
    @property
    def id(self) -> str | None: ...
    @property
    def outputs(self) -> Mapping[str, np.ndarray[Any, Any]]: ...


class InferenceCoreLike(Protocol):
    """The part of ``modelport.serve.core.InferenceCore`` the service uses."""

    @property
    def live(self) -> bool: ...
    @property
    def ready(self) -> bool: ...
    def server_metadata(self) -> dict[str, Any]: ...
    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]: ...
    def model_ready(self, name: str, version: str | None = None) -> bool: ...
    async def infer(self, name: str, version: str | None, request: InferenceRequest) -> InferenceResultLike: ...
    def statistics(self, name: str | None = None, version: str | None = None) -> dict[str, Any]: ...
    def repository_index(self) -> list[dict[str, str]]: ...
    async def load_model(self, name: str) -> None: ...
    async def unload_model(self, name: str) -> None: ...


# -------------------------------------------------------------------------------------------------
# the service


class GrpcInferenceService:
    """The RPCs of ``inference.GRPCInferenceService`` over ``core``; :meth:`handler` registers them."""

    def __init__(self, core: InferenceCoreLike) -> None:
        self.core = core

    def handler(self) -> Any:
        """A ``grpc.GenericRpcHandler`` for ``server.add_generic_rpc_handlers``."""
        rpcs: dict[str, tuple[Handler, Any, Any]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
            "ModelStatistics": (self.model_statistics, pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
            "RepositoryIndex": (self.repository_index, pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
            "RepositoryModelLoad": (self.load_model, pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
            "RepositoryModelUnload": (
                self.unload_model,
                pb.RepositoryModelUnloadRequest,
                pb.RepositoryModelUnloadResponse,
            ),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                _guard(name, method),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, (method, request, response) in rpcs.items()
        }
        return grpc.method_handlers_generic_handler(pb.SERVICE, handlers)

    # health and metadata ----------------------------------------------------------------------
    async def server_live(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.core.live)

    async def server_ready(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.core.ready)

    async def model_ready(self, request: Any, context: Any) -> Any:
        name = _model_name(request.name, "ModelReady", "name")
        return pb.ModelReadyResponse(ready=self.core.model_ready(name, request.version or None))

    async def server_metadata(self, request: Any, context: Any) -> Any:
        return _message(self.core.server_metadata(), pb.ServerMetadataResponse())

    async def model_metadata(self, request: Any, context: Any) -> Any:
        name = _model_name(request.name, "ModelMetadata", "name")
        metadata = self.core.model_metadata(name, request.version or None)
        return _message(metadata, pb.ModelMetadataResponse())

    async def model_statistics(self, request: Any, context: Any) -> Any:
        if request.version and not request.name:
            raise ProtocolError(
                f"ModelStatistics names version {request.version!r} but no model — set 'name' too, "
                "or leave both empty for every model"
            )
        statistics = self.core.statistics(request.name or None, request.version or None)
        return _message(statistics, pb.ModelStatisticsResponse())

    # inference --------------------------------------------------------------------------------
    async def model_infer(self, request: Any, context: Any) -> Any:
        name = _model_name(request.model_name, "ModelInfer", "model_name")
        parsed = parse_infer_request(request, deadline_s=context.time_remaining())
        result = await self.core.infer(name, request.model_version or None, parsed)
        return encode_infer_response(result)

    # repository -------------------------------------------------------------------------------
    async def repository_index(self, request: Any, context: Any) -> Any:
        _check_repository(request.repository_name, "RepositoryIndex")
        models = self.core.repository_index()
        if request.ready:
            models = [model for model in models if model.get("state") == "READY"]
        return _message({"models": models}, pb.RepositoryIndexResponse())

    async def load_model(self, request: Any, context: Any) -> Any:
        _check_repository(request.repository_name, "RepositoryModelLoad")
        name = _model_name(request.model_name, "RepositoryModelLoad", "model_name")
        _check_repository_parameters(request.parameters, allowed=frozenset(), rpc="RepositoryModelLoad")
        await self.core.load_model(name)
        return pb.RepositoryModelLoadResponse()

    async def unload_model(self, request: Any, context: Any) -> Any:
        _check_repository(request.repository_name, "RepositoryModelUnload")
        name = _model_name(request.model_name, "RepositoryModelUnload", "model_name")
        # Stages of a pipeline live in its model, so there are no separately loaded dependents:
        # unload_dependents holds either way.
        _check_repository_parameters(request.parameters, allowed=_UNLOAD_PARAMETERS, rpc="RepositoryModelUnload")
        await self.core.unload_model(name)
        return pb.RepositoryModelUnloadResponse()


_UNLOAD_PARAMETERS: Final = frozenset({"unload_dependents"})


def _message(document: Mapping[str, Any], message: Any) -> Any:
    """Fill ``message`` from the core's JSON document (the HTTP body) of the same shape.

    Keys the proto has no field for (the core's extensions to Triton's statistics, such as
    ``stage_stats``) are left out: gRPC clients could not decode them.
    """
    return json_format.ParseDict(document, message, ignore_unknown_fields=True)


def _model_name(name: str, rpc: str, field: str) -> str:
    if not name:
        raise ProtocolError(f"the {rpc} request names no model — set its '{field}' field")
    return name


def _check_repository(repository_name: str, rpc: str) -> None:
    if repository_name:
        raise ProtocolError(
            f"the {rpc} request names repository {repository_name!r}, but this server serves one "
            "repository — leave 'repository_name' empty"
        )


def _check_repository_parameters(parameters: Mapping[str, Any], *, allowed: frozenset[str], rpc: str) -> None:
    unknown = sorted(key for key in parameters if key not in allowed)
    if unknown:
        raise ProtocolError(
            f"the {rpc} request has parameter {', '.join(repr(k) for k in unknown)}, which this server does not "
            "support (a config override or model files sent with the request) — edit the model's files in the "
            "repository and load it again"
        )


# -------------------------------------------------------------------------------------------------
# errors -> status codes


class _Status(NamedTuple):
    code: Any
    message: str
    trailing_metadata: tuple[tuple[str, str], ...] = ()


# Checked in order: a subclass before its base.
_STATUS_CODES: Final[tuple[tuple[type[Exception], Any], ...]] = (
    (PayloadTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    (InputError, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (ModelNotReadyError, grpc.StatusCode.UNAVAILABLE),
    (RequestTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def _status_of(rpc: str, error: Exception) -> _Status:
    """The gRPC status for an error an RPC raised; unexpected errors are logged here."""
    if isinstance(error, ServerBusyError):
        retry_after = max(1, math.ceil(error.retry_after))
        return _Status(
            grpc.StatusCode.UNAVAILABLE,
            f"{error} — the model's request queue is full; retry after {error.retry_after:g} s",
            (("retry-after", str(retry_after)),),
        )
    for kind, code in _STATUS_CODES:
        if isinstance(error, kind):
            return _Status(code, str(error))
    logger.exception("gRPC %s failed", rpc, exc_info=error)
    if isinstance(error, ModelportError):
        return _Status(grpc.StatusCode.INTERNAL, str(error))
    return _Status(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")


def _guard(rpc: str, method: Handler) -> Handler:
    """Answer the errors ``method`` raises with their gRPC status (see the module docstring)."""

    async def guarded(request: Any, context: Any) -> Any:
        try:
            return await method(request, context)
        except Exception as e:
            status = _status_of(rpc, e)
        # context.abort raises (grpc.aio.AbortError), ending the RPC with the status.
        await context.abort(status.code, status.message, trailing_metadata=status.trailing_metadata)
        raise AssertionError("grpc.aio context.abort() returned instead of raising")

    guarded.__name__ = rpc
    return guarded


# -------------------------------------------------------------------------------------------------
# ModelInfer messages <-> InferenceRequest / result

# The InferTensorContents field of each datatype, and the numpy dtype protobuf gives its values.
_CONTENTS: Final[dict[str, tuple[str, np.dtype[Any]]]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "BYTES": ("bytes_contents", np.dtype(object)),
}


def parse_infer_request(message: Any, *, deadline_s: float | None = None) -> InferenceRequest:
    """A ``ModelInferRequest`` as an :class:`InferenceRequest`; :class:`ProtocolError` if malformed.

    ``deadline_s`` is the time left before the call's gRPC deadline (``None``: no deadline); it
    becomes the ``timeout`` parameter (microseconds) when shorter than the one the request sets.
    """
    parameters = _parameters(message.parameters, "the request")
    return InferenceRequest(
        inputs=_decode_inputs(message),
        id=message.id or None,
        outputs=_requested_outputs(message.outputs),
        parameters=_with_deadline(parameters, deadline_s),
    )


def encode_infer_response(result: InferenceResultLike) -> Any:
    """The ``ModelInferResponse`` of a result: every output as ``raw_output_contents``, in order."""
    response = pb.ModelInferResponse(
        model_name=result.model_name,
        model_version=result.model_version,
        id=result.id or "",
    )
    for name, value in result.outputs.items():
        array = np.asarray(value)
        datatype = datatype_of(array.dtype)
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(tensor_to_binary(array, datatype).tobytes())
    return response


def _decode_inputs(message: Any) -> Arrays:
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise ProtocolError(
            f"the request has {len(message.inputs)} inputs but {len(raw)} raw_input_contents — send raw "
            "contents for every input, in the order of 'inputs', or for none"
        )
    inputs: Arrays = {}
    for index, tensor in enumerate(message.inputs):
        if not tensor.name:
            raise ProtocolError(f"inputs[{index}] has no name — set the name of every input")
        where = f"input '{tensor.name}'"
        if tensor.name in inputs:
            raise ProtocolError(f"{where} appears twice — send each input once")
        reject_unsupported_parameters(_parameters(tensor.parameters, where), where)
        dtype = numpy_dtype_of(tensor.datatype)
        shape = parse_shape(list(tensor.shape), where)
        if raw:
            if tensor.HasField("contents"):
                raise ProtocolError(f"{where} has both 'contents' and raw_input_contents — send its values one way")
            inputs[tensor.name] = _from_raw(raw[index], tensor.datatype, dtype, shape, where)
        elif tensor.HasField("contents"):
            inputs[tensor.name] = _from_contents(tensor.contents, tensor.datatype, dtype, shape, where)
        else:
            raise ProtocolError(f"{where} has no values — send them in raw_input_contents or in 'contents'")
    return inputs


def _from_raw(
    raw: bytes, datatype: str, dtype: np.dtype[Any], shape: tuple[int, ...], where: str
) -> np.ndarray[Any, Any]:
    """A view of ``raw`` (no copy), or for ``BYTES`` an object array of its length-prefixed elements."""
    if datatype != "BYTES":
        count = math.prod(shape)
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise ProtocolError(
                f"{where} is {datatype} with shape {list(shape)} ({count} elements, {expected} bytes), "
                f"but its raw_input_contents has {len(raw)} bytes"
            )
    return tensor_from_binary(memoryview(raw), datatype, dtype, shape, where)


def _from_contents(
    contents: Any, datatype: str, dtype: np.dtype[Any], shape: tuple[int, ...], where: str
) -> np.ndarray[Any, Any]:
    if datatype not in _CONTENTS:
        raise ProtocolError(
            f"{where} is {datatype}, which has no InferTensorContents field — send it in raw_input_contents"
        )
    field, wire_dtype = _CONTENTS[datatype]
    others = [descriptor.name for descriptor, _ in contents.ListFields() if descriptor.name != field]
    if others:
        raise ProtocolError(
            f"{where} is {datatype}, whose values belong in contents.{field}, but contents.{others[0]} is set"
        )
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise ProtocolError(
            f"{where} has shape {list(shape)} ({count} elements), but contents.{field} holds {len(values)}"
        )
    if datatype == "BYTES":
        return object_array(list(values)).reshape(shape)
    array = np.array(values, dtype=wire_dtype)
    if count and dtype != wire_dtype:
        # INT8/16 travel as int32 and UINT8/16 as uint32: the values must fit the narrower type.
        check_json_values(array, datatype, dtype, where)
    return array.astype(dtype, copy=False).reshape(shape)


def _requested_outputs(outputs: Any) -> tuple[RequestedOutput, ...] | None:
    if not outputs:
        return None
    requested: list[RequestedOutput] = []
    for index, output in enumerate(outputs):
        if not output.name:
            raise ProtocolError(f"outputs[{index}] has no name — set the name of every requested output")
        where = f"requested output '{output.name}'"
        if any(r.name == output.name for r in requested):
            raise ProtocolError(f"{where} is listed twice in 'outputs' — list each output once")
        reject_unsupported_parameters(_parameters(output.parameters, where), where)
        requested.append(RequestedOutput(output.name, binary=True))
    return tuple(requested)


def _parameters(parameters: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A protobuf map of ``InferParameter`` as Python values."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise ProtocolError(f"parameter {key!r} of {where} has no value — set one of its *_param fields")
        values[key] = getattr(parameter, choice)
    return values


def _with_deadline(parameters: dict[str, Any], deadline_s: float | None) -> dict[str, Any]:
    """Set ``timeout`` (microseconds) to the gRPC deadline when there is none or it is longer.

    Other checks of the value (it must be positive) are the core's, as for HTTP requests.
    """
    given = parameters.get("timeout")
    if given is not None and (isinstance(given, bool) or not isinstance(given, int | float)):
        raise ProtocolError(
            f"the request has parameter timeout {given!r}; it must be a positive number of microseconds"
        )
    if deadline_s is None:
        return parameters
    deadline_us = max(1, int(deadline_s * 1e6))
    if given is not None and given <= deadline_us:
        return parameters
    return {**parameters, "timeout": deadline_us}


# -------------------------------------------------------------------------------------------------
# the server


@dataclass(frozen=True)
class GrpcServer:
    """A started gRPC server: ``port`` is the bound one (the port picked when asked for 0)."""

    server: Any  # grpc.aio.Server
    host: str
    port: int

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, give running ones ``grace`` seconds (``None``: cancel them now)."""
        await self.server.stop(grace)

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


async def start_grpc_server(core: InferenceCoreLike, host: str, port: int, *, max_message_bytes: int) -> GrpcServer:
    """Serve ``core`` over gRPC on ``host:port`` (``port`` 0 picks a free port: see ``.port``).

    Call inside the running event loop. ``max_message_bytes`` bounds requests and responses;
    gRPC refuses larger ones with ``RESOURCE_EXHAUSTED``. Raises :class:`ConfigError` when the
    address cannot be bound (in use, or not an address of this machine).
    """
    if isinstance(max_message_bytes, bool) or not isinstance(max_message_bytes, int) or max_message_bytes <= 0:
        raise ConfigError(f"max_message_bytes is {max_message_bytes!r}; it must be a positive number of bytes")
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Without this, a second server on a used port would share it silently.
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((GrpcInferenceService(core).handler(),))
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    cause: RuntimeError | None = None
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:  # grpcio >= 1.58 raises; older versions return 0
        bound, cause = 0, e
    if not bound:
        await server.stop(None)
        raise ConfigError(
            f"cannot listen for gRPC on {address}: the port is in use or the host is not an address of this "
            "machine — choose another gRPC port (0 picks a free one) or stop the process that holds it"
        ) from cause
    await server.start()
    logger.info("gRPC server listening on %s:%d", host, bound)
    return GrpcServer(server, host, bound)
