"""Protobuf messages of the KServe v2 / Triton gRPC protocol (``inference.GRPCInferenceService``).

Why not generated ``_pb2.py`` files: those are tied to the ``protoc`` that wrote them and fail to
import under other protobuf runtimes. Here the ``.proto`` file is described in Python as a
:class:`~google.protobuf.descriptor_pb2.FileDescriptorProto` and turned into message classes at
import time, which works with any protobuf >= 4.

The descriptors go into a private :class:`~google.protobuf.descriptor_pool.DescriptorPool`, not the
default one, so they never clash with ``tritonclient``'s generated ``grpc_service.proto`` (same
package and message names) when both are imported in one process.

Field names, numbers, types and labels are those of Triton's ``grpc_service.proto`` (a superset of
KServe's ``grpc_predict_v2.proto``), so the messages are wire-compatible with every KServe v2 and
Triton client; ``tests/serve/test_serve_grpc.py`` checks each message against ``tritonclient``'s
generated classes. Only the messages the service implements are described: the streaming,
model-configuration, shared-memory, trace and log-settings messages are left out.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "FILE_NAME",
    "PACKAGE",
    "SERVICE",
    "InferBatchStatistics",
    "InferParameter",
    "InferResponseStatistics",
    "InferStatistics",
    "InferTensorContents",
    "MemoryUsage",
    "ModelInferRequest",
    "ModelInferResponse",
    "ModelMetadataRequest",
    "ModelMetadataResponse",
    "ModelReadyRequest",
    "ModelReadyResponse",
    "ModelRepositoryParameter",
    "ModelStatistics",
    "ModelStatisticsRequest",
    "ModelStatisticsResponse",
    "RepositoryIndexRequest",
    "RepositoryIndexResponse",
    "RepositoryModelLoadRequest",
    "RepositoryModelLoadResponse",
    "RepositoryModelUnloadRequest",
    "RepositoryModelUnloadResponse",
    "ServerLiveRequest",
    "ServerLiveResponse",
    "ServerMetadataRequest",
    "ServerMetadataResponse",
    "ServerReadyRequest",
    "ServerReadyResponse",
    "StatisticDuration",
    "file_descriptor_proto",
]

#: The name of the described ``.proto`` file (distinct from Triton's ``grpc_service.proto``).
FILE_NAME: Final = "modelport_grpc_service.proto"
#: The protobuf package of every message, as in Triton and KServe.
PACKAGE: Final = "inference"
#: The full name of the gRPC service.
SERVICE: Final = "inference.GRPCInferenceService"

_FieldProto = descriptor_pb2.FieldDescriptorProto
_SCALARS: Final = {
    "bool": _FieldProto.TYPE_BOOL,
    "bytes": _FieldProto.TYPE_BYTES,
    "double": _FieldProto.TYPE_DOUBLE,
    "float": _FieldProto.TYPE_FLOAT,
    "int32": _FieldProto.TYPE_INT32,
    "int64": _FieldProto.TYPE_INT64,
    "string": _FieldProto.TYPE_STRING,
    "uint32": _FieldProto.TYPE_UINT32,
    "uint64": _FieldProto.TYPE_UINT64,
}


class _Field(NamedTuple):
    """One field of a message.

    ``kind`` is a scalar type name (``"int64"``) or a message name relative to the package
    (``"ModelInferRequest.InferInputTensor"``); ``map_of`` makes the field a
    ``map<string, map_of>`` (then ``kind`` is unused); ``oneof`` names the oneof it belongs to.
    """

    name: str
    number: int
    kind: str
    repeated: bool = False
    map_of: str | None = None
    oneof: str | None = None


def _scalar(name: str, number: int, kind: str, *, oneof: str | None = None) -> _Field:
    return _Field(name, number, kind, oneof=oneof)


def _repeated(name: str, number: int, kind: str) -> _Field:
    return _Field(name, number, kind, repeated=True)


def _map(name: str, number: int, value: str) -> _Field:
    return _Field(name, number, "", map_of=value)


_PARAMETER_CHOICE: Final = "parameter_choice"
_DURATION: Final = "StatisticDuration"

# Every message, in the order of Triton's grpc_service.proto; nested messages are named
# "Outer.Inner" and listed after their outer message.
_MESSAGES: Final[dict[str, tuple[_Field, ...]]] = {
    "ServerLiveRequest": (),
    "ServerLiveResponse": (_scalar("live", 1, "bool"),),
    "ServerReadyRequest": (),
    "ServerReadyResponse": (_scalar("ready", 1, "bool"),),
    "ModelReadyRequest": (_scalar("name", 1, "string"), _scalar("version", 2, "string")),
    "ModelReadyResponse": (_scalar("ready", 1, "bool"),),
    "ServerMetadataRequest": (),
    "ServerMetadataResponse": (
        _scalar("name", 1, "string"),
        _scalar("version", 2, "string"),
        _repeated("extensions", 3, "string"),
    ),
    "ModelMetadataRequest": (_scalar("name", 1, "string"), _scalar("version", 2, "string")),
    "ModelMetadataResponse": (
        _scalar("name", 1, "string"),
        _repeated("versions", 2, "string"),
        _scalar("platform", 3, "string"),
        _repeated("inputs", 4, "ModelMetadataResponse.TensorMetadata"),
        _repeated("outputs", 5, "ModelMetadataResponse.TensorMetadata"),
    ),
    "ModelMetadataResponse.TensorMetadata": (
        _scalar("name", 1, "string"),
        _scalar("datatype", 2, "string"),
        _repeated("shape", 3, "int64"),
    ),
    "InferParameter": (
        _scalar("bool_param", 1, "bool", oneof=_PARAMETER_CHOICE),
        _scalar("int64_param", 2, "int64", oneof=_PARAMETER_CHOICE),
        _scalar("string_param", 3, "string", oneof=_PARAMETER_CHOICE),
        _scalar("double_param", 4, "double", oneof=_PARAMETER_CHOICE),
        _scalar("uint64_param", 5, "uint64", oneof=_PARAMETER_CHOICE),
    ),
    "InferTensorContents": (
        _repeated("bool_contents", 1, "bool"),
        _repeated("int_contents", 2, "int32"),
        _repeated("int64_contents", 3, "int64"),
        _repeated("uint_contents", 4, "uint32"),
        _repeated("uint64_contents", 5, "uint64"),
        _repeated("fp32_contents", 6, "float"),
        _repeated("fp64_contents", 7, "double"),
        _repeated("bytes_contents", 8, "bytes"),
    ),
    "ModelInferRequest": (
        _scalar("model_name", 1, "string"),
        _scalar("model_version", 2, "string"),
        _scalar("id", 3, "string"),
        _map("parameters", 4, "InferParameter"),
        _repeated("inputs", 5, "ModelInferRequest.InferInputTensor"),
        _repeated("outputs", 6, "ModelInferRequest.InferRequestedOutputTensor"),
        _repeated("raw_input_contents", 7, "bytes"),
    ),
    "ModelInferRequest.InferInputTensor": (
        _scalar("name", 1, "string"),
        _scalar("datatype", 2, "string"),
        _repeated("shape", 3, "int64"),
        _map("parameters", 4, "InferParameter"),
        _scalar("contents", 5, "InferTensorContents"),
    ),
    "ModelInferRequest.InferRequestedOutputTensor": (
        _scalar("name", 1, "string"),
        _map("parameters", 2, "InferParameter"),
    ),
    "ModelInferResponse": (
        _scalar("model_name", 1, "string"),
        _scalar("model_version", 2, "string"),
        _scalar("id", 3, "string"),
        _map("parameters", 4, "InferParameter"),
        _repeated("outputs", 5, "ModelInferResponse.InferOutputTensor"),
        _repeated("raw_output_contents", 6, "bytes"),
    ),
    "ModelInferResponse.InferOutputTensor": (
        _scalar("name", 1, "string"),
        _scalar("datatype", 2, "string"),
        _repeated("shape", 3, "int64"),
        _map("parameters", 4, "InferParameter"),
        _scalar("contents", 5, "InferTensorContents"),
    ),
    "ModelStatisticsRequest": (_scalar("name", 1, "string"), _scalar("version", 2, "string")),
    _DURATION: (_scalar("count", 1, "uint64"), _scalar("ns", 2, "uint64")),
    "InferStatistics": (
        _scalar("success", 1, _DURATION),
        _scalar("fail", 2, _DURATION),
        _scalar("queue", 3, _DURATION),
        _scalar("compute_input", 4, _DURATION),
        _scalar("compute_infer", 5, _DURATION),
        _scalar("compute_output", 6, _DURATION),
        _scalar("cache_hit", 7, _DURATION),
        _scalar("cache_miss", 8, _DURATION),
    ),
    "InferResponseStatistics": (
        _scalar("compute_infer", 1, _DURATION),
        _scalar("compute_output", 2, _DURATION),
        _scalar("success", 3, _DURATION),
        _scalar("fail", 4, _DURATION),
        _scalar("empty_response", 5, _DURATION),
        _scalar("cancel", 6, _DURATION),
    ),
    "InferBatchStatistics": (
        _scalar("batch_size", 1, "uint64"),
        _scalar("compute_input", 2, _DURATION),
        _scalar("compute_infer", 3, _DURATION),
        _scalar("compute_output", 4, _DURATION),
    ),
    "MemoryUsage": (
        _scalar("type", 1, "string"),
        _scalar("id", 2, "int64"),
        _scalar("byte_size", 3, "uint64"),
    ),
    "ModelStatistics": (
        _scalar("name", 1, "string"),
        _scalar("version", 2, "string"),
        _scalar("last_inference", 3, "uint64"),
        _scalar("inference_count", 4, "uint64"),
        _scalar("execution_count", 5, "uint64"),
        _scalar("inference_stats", 6, "InferStatistics"),
        _repeated("batch_stats", 7, "InferBatchStatistics"),
        _repeated("memory_usage", 8, "MemoryUsage"),
        _map("response_stats", 9, "InferResponseStatistics"),
    ),
    "ModelStatisticsResponse": (_repeated("model_stats", 1, "ModelStatistics"),),
    "ModelRepositoryParameter": (
        _scalar("bool_param", 1, "bool", oneof=_PARAMETER_CHOICE),
        _scalar("int64_param", 2, "int64", oneof=_PARAMETER_CHOICE),
        _scalar("string_param", 3, "string", oneof=_PARAMETER_CHOICE),
        _scalar("bytes_param", 4, "bytes", oneof=_PARAMETER_CHOICE),
    ),
    "RepositoryIndexRequest": (_scalar("repository_name", 1, "string"), _scalar("ready", 2, "bool")),
    "RepositoryIndexResponse": (_repeated("models", 1, "RepositoryIndexResponse.ModelIndex"),),
    "RepositoryIndexResponse.ModelIndex": (
        _scalar("name", 1, "string"),
        _scalar("version", 2, "string"),
        _scalar("state", 3, "string"),
        _scalar("reason", 4, "string"),
    ),
    "RepositoryModelLoadRequest": (
        _scalar("repository_name", 1, "string"),
        _scalar("model_name", 2, "string"),
        _map("parameters", 3, "ModelRepositoryParameter"),
    ),
    "RepositoryModelLoadResponse": (),
    "RepositoryModelUnloadRequest": (
        _scalar("repository_name", 1, "string"),
        _scalar("model_name", 2, "string"),
        _map("parameters", 3, "ModelRepositoryParameter"),
    ),
    "RepositoryModelUnloadResponse": (),
}


def file_descriptor_proto() -> descriptor_pb2.FileDescriptorProto:
    """The ``.proto`` file of the messages, as a descriptor (a fresh copy on every call)."""
    file = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    # Messages first, fields second: declared nested messages then precede the map entries
    # their outer message gets, the order protoc writes.
    for full_name in _MESSAGES:
        outer, _, inner = full_name.rpartition(".")
        container = messages[outer].nested_type if outer else file.message_type
        messages[full_name] = container.add(name=inner)
    for full_name, fields in _MESSAGES.items():
        for spec in fields:
            _add_field(messages[full_name], full_name, spec)
    return file


def _add_field(message: descriptor_pb2.DescriptorProto, full_name: str, spec: _Field) -> None:
    field = message.field.add(name=spec.name, number=spec.number)
    field.label = _FieldProto.LABEL_REPEATED if spec.repeated or spec.map_of else _FieldProto.LABEL_OPTIONAL
    if spec.map_of is not None:
        # map<string, V> is a repeated field of a nested "<Name>Entry" message marked map_entry.
        entry = message.nested_type.add(name=_camel(spec.name) + "Entry")
        entry.options.map_entry = True
        optional = _FieldProto.LABEL_OPTIONAL
        entry.field.add(name="key", number=1, label=optional, type=_FieldProto.TYPE_STRING)
        entry.field.add(
            name="value",
            number=2,
            label=optional,
            type=_FieldProto.TYPE_MESSAGE,
            type_name=f".{PACKAGE}.{spec.map_of}",
        )
        field.type = _FieldProto.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.{full_name}.{entry.name}"
    elif spec.kind in _SCALARS:
        field.type = _SCALARS[spec.kind]
    else:
        field.type = _FieldProto.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.{spec.kind}"
    if spec.oneof is not None:
        names = [oneof.name for oneof in message.oneof_decl]
        if spec.oneof not in names:
            message.oneof_decl.add(name=spec.oneof)
            names.append(spec.oneof)
        field.oneof_index = names.index(spec.oneof)


def _camel(name: str) -> str:
    """``response_stats`` -> ``ResponseStats``, as protoc names the entry message of a map field."""
    return "".join(word[:1].upper() + word[1:] for word in name.split("_"))


_POOL: Final = descriptor_pool.DescriptorPool()
_POOL.Add(file_descriptor_proto())


def _message_class(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


ServerLiveRequest: Final = _message_class("ServerLiveRequest")
ServerLiveResponse: Final = _message_class("ServerLiveResponse")
ServerReadyRequest: Final = _message_class("ServerReadyRequest")
ServerReadyResponse: Final = _message_class("ServerReadyResponse")
ModelReadyRequest: Final = _message_class("ModelReadyRequest")
ModelReadyResponse: Final = _message_class("ModelReadyResponse")
ServerMetadataRequest: Final = _message_class("ServerMetadataRequest")
ServerMetadataResponse: Final = _message_class("ServerMetadataResponse")
ModelMetadataRequest: Final = _message_class("ModelMetadataRequest")
ModelMetadataResponse: Final = _message_class("ModelMetadataResponse")
InferParameter: Final = _message_class("InferParameter")
InferTensorContents: Final = _message_class("InferTensorContents")
ModelInferRequest: Final = _message_class("ModelInferRequest")
ModelInferResponse: Final = _message_class("ModelInferResponse")
ModelStatisticsRequest: Final = _message_class("ModelStatisticsRequest")
StatisticDuration: Final = _message_class("StatisticDuration")
InferStatistics: Final = _message_class("InferStatistics")
InferResponseStatistics: Final = _message_class("InferResponseStatistics")
InferBatchStatistics: Final = _message_class("InferBatchStatistics")
MemoryUsage: Final = _message_class("MemoryUsage")
ModelStatistics: Final = _message_class("ModelStatistics")
ModelStatisticsResponse: Final = _message_class("ModelStatisticsResponse")
ModelRepositoryParameter: Final = _message_class("ModelRepositoryParameter")
RepositoryIndexRequest: Final = _message_class("RepositoryIndexRequest")
RepositoryIndexResponse: Final = _message_class("RepositoryIndexResponse")
RepositoryModelLoadRequest: Final = _message_class("RepositoryModelLoadRequest")
RepositoryModelLoadResponse: Final = _message_class("RepositoryModelLoadResponse")
RepositoryModelUnloadRequest: Final = _message_class("RepositoryModelUnloadRequest")
RepositoryModelUnloadResponse: Final = _message_class("RepositoryModelUnloadResponse")
