"""The KServe v2 (Open Inference Protocol) wire format: tensors, requests and responses.

Requests and responses are JSON, optionally followed by raw tensors (Triton's binary tensor data
extension): the ``Inference-Header-Content-Length`` header then gives the length of the JSON
part, every binary tensor carries a ``binary_data_size`` parameter, and the raw tensors follow the
JSON in the order they appear in it, little-endian, row-major, without padding. ``BYTES``
elements are each a 4-byte little-endian length followed by the bytes.

This module is pure: it turns bytes into numpy arrays and back, and raises
:class:`~modelport.errors.ProtocolError` with a message that says what is wrong and how to fix it
for anything malformed. Binary tensors are decoded without a copy (:func:`numpy.frombuffer`)
when their offset in the body is aligned for their dtype.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from modelport.errors import ProtocolError

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "EncodedBody",
    "InferenceRequest",
    "InferenceResponse",
    "RequestedOutput",
    "check_json_values",
    "datatype_of",
    "decode_response",
    "encode_request",
    "encode_response",
    "numpy_dtype_of",
    "object_array",
    "parse_request",
    "parse_shape",
    "reject_unsupported_parameters",
    "tensor_from_binary",
    "tensor_to_binary",
]

#: The HTTP header that gives the length of the JSON part of a body with binary tensors.
HEADER_LENGTH: Final = "Inference-Header-Content-Length"

#: KServe v2 datatype -> numpy dtype. ``BYTES`` tensors are object arrays of ``bytes``.
DATATYPES: Final[Mapping[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_DATATYPE_OF: Final = {dtype: name for name, dtype in DATATYPES.items()}
# JSON numbers numpy may decode for each datatype kind: booleans only for BOOL, integers for the
# integer types, integers or floats for the float types.
_JSON_KINDS: Final = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_KIND_NAMES: Final = {
    "b": "booleans",
    "i": "integers",
    "u": "integers",
    "f": "floating-point numbers",
    "U": "strings",
    "O": "mixed or out-of-range values",
}
# Parameters of Triton extensions that are not implemented (the shared memory and
# classification extensions).
_UNSUPPORTED_PARAMETERS: Final = {
    "shared_memory_region": ("the shared memory extension", "send the tensor in the request"),
    "classification": ("the classification extension", "post-process the output on the client"),
}
_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_LENGTH_PREFIX: Final = struct.Struct("<I")


def numpy_dtype_of(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a KServe v2 datatype name (``"FP32"`` -> ``float32``)."""
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise ProtocolError(f"unknown datatype {datatype!r} — use one of {', '.join(DATATYPES)}") from None


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The KServe v2 datatype name of a numpy dtype (``float32`` -> ``"FP32"``)."""
    name = _DATATYPE_OF.get(np.dtype(dtype).newbyteorder("="))
    if name is None:
        raise ProtocolError(
            f"numpy dtype {dtype} has no KServe v2 datatype — the protocol carries only "
            f"{', '.join(str(d) for d in DATATYPES.values())}"
        )
    return name


# -------------------------------------------------------------------------------------------------
# data types


@dataclass(frozen=True)
class RequestedOutput:
    """An output a request asks for, and whether it is to come back as binary data."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferenceRequest:
    """A parsed inference request.

    ``outputs`` is ``None`` when the request names no outputs (then all are returned, binary when
    ``binary_output`` is set). Input arrays decoded from binary data may be read-only views of the
    request body.
    """

    inputs: dict[str, np.ndarray[Any, Any]]
    id: str | None = None
    outputs: tuple[RequestedOutput, ...] | None = None
    binary_output: bool = False
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def select_outputs(self, available: Sequence[str], *, model_name: str = "the model") -> list[RequestedOutput]:
        """The outputs to return, in order; an unknown output name is a :class:`ProtocolError`."""
        if self.outputs is None:
            return [RequestedOutput(name, self.binary_output) for name in available]
        unknown = [o.name for o in self.outputs if o.name not in available]
        if unknown:
            raise ProtocolError(
                f"{model_name} has no output named {', '.join(repr(n) for n in unknown)}; "
                f"its outputs are {', '.join(repr(n) for n in available)}"
            )
        return list(self.outputs)


@dataclass(frozen=True)
class InferenceResponse:
    """A decoded inference response (see :func:`decode_response`)."""

    model_name: str
    outputs: dict[str, np.ndarray[Any, Any]]
    model_version: str | None = None
    id: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EncodedBody:
    """A request or response body; ``header_length`` is set when binary tensors follow the JSON."""

    body: bytes
    header_length: int | None = None

    @property
    def content_type(self) -> str:
        return "application/json" if self.header_length is None else "application/octet-stream"

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers to send with the body (``Content-Type`` and the header length)."""
        headers = {"Content-Type": self.content_type}
        if self.header_length is not None:
            headers[HEADER_LENGTH] = str(self.header_length)
        return headers


# -------------------------------------------------------------------------------------------------
# requests


def parse_request(body: bytes | memoryview, header_length: str | int | None = None) -> InferenceRequest:
    """Parse an inference request body.

    ``header_length`` is the value of the ``Inference-Header-Content-Length`` header (``None``
    when absent: the body is JSON only). Raises :class:`ProtocolError` for anything malformed.
    """
    doc, binary = _split_body(body, header_length, what="request")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"request 'id' must be a string, got {_json_type(request_id)}")
    parameters = _parameters(doc, "the request")
    binary_output = _bool_parameter(parameters, "binary_data_output", "the request")
    inputs = _decode_tensors(_required(doc, "inputs", list, "the request"), binary, kind="input")
    outputs = _requested_outputs(doc.get("outputs"), default_binary=binary_output)
    return InferenceRequest(
        inputs=inputs,
        id=request_id,
        outputs=outputs,
        binary_output=binary_output,
        parameters=parameters,
    )


def encode_request(
    inputs: Mapping[str, np.ndarray[Any, Any]],
    *,
    binary: bool | Collection[str] = False,
    outputs: Mapping[str, bool] | None = None,
    binary_output: bool = False,
    request_id: str | None = None,
) -> EncodedBody:
    """Encode an inference request (the client side of :func:`parse_request`).

    ``binary`` sends all inputs (``True``) or the named ones as binary data; ``outputs`` maps the
    requested output names to whether each should come back binary (``None``: all outputs, binary
    when ``binary_output``).
    """
    doc: dict[str, Any] = {}
    if request_id is not None:
        doc["id"] = request_id
    if binary_output:
        doc["parameters"] = {"binary_data_output": True}
    names: set[str] = set()
    if binary is True:
        names = set(inputs)
    elif not isinstance(binary, bool):
        names = set(binary)
    doc["inputs"], chunks = _encode_tensors(inputs, binary=names)
    if outputs is not None:
        doc["outputs"] = [{"name": name, "parameters": {"binary_data": flag}} for name, flag in outputs.items()]
    return _join(doc, chunks)


def _requested_outputs(value: Any, *, default_binary: bool) -> tuple[RequestedOutput, ...] | None:
    if value is None or value == []:
        # No outputs named (an empty list too, as in KServe's own server): return them all.
        return None
    if not isinstance(value, list):
        raise ProtocolError(f"request 'outputs' must be a list, got {_json_type(value)}")
    requested: list[RequestedOutput] = []
    for index, entry in enumerate(value):
        where = f"outputs[{index}]"
        if not isinstance(entry, dict):
            raise ProtocolError(f"{where} must be an object, got {_json_type(entry)}")
        name = _required(entry, "name", str, where)
        where = f"requested output '{name}'"
        if any(r.name == name for r in requested):
            raise ProtocolError(f"{where} is listed twice in 'outputs' — list each output once")
        parameters = _parameters(entry, where)
        reject_unsupported_parameters(parameters, where)
        flag = parameters.get("binary_data", default_binary)
        if not isinstance(flag, bool):
            raise ProtocolError(f"{where} has parameter binary_data {flag!r}; it must be true or false")
        requested.append(RequestedOutput(name, flag))
    return tuple(requested)


# -------------------------------------------------------------------------------------------------
# responses


def encode_response(
    outputs: Mapping[str, np.ndarray[Any, Any]],
    *,
    model_name: str,
    model_version: str | None = None,
    request_id: str | None = None,
    binary: Collection[str] = (),
) -> EncodedBody:
    """Encode an inference response; outputs named in ``binary`` are sent as binary data.

    The outputs appear in the order of ``outputs``. ``request_id`` is echoed when given.
    """
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"], chunks = _encode_tensors(outputs, binary=set(binary))
    return _join(doc, chunks)


def decode_response(body: bytes, header_length: str | int | None = None) -> InferenceResponse:
    """Decode an inference response (the client side of :func:`encode_response`)."""
    doc, binary = _split_body(body, header_length, what="response")
    model_name = _required(doc, "model_name", str, "the response")
    version = doc.get("model_version")
    response_id = doc.get("id")
    outputs = _decode_tensors(_required(doc, "outputs", list, "the response"), binary, kind="output")
    return InferenceResponse(
        model_name=model_name,
        outputs=outputs,
        model_version=None if version is None else str(version),
        id=None if response_id is None else str(response_id),
        parameters=_parameters(doc, "the response"),
    )


# -------------------------------------------------------------------------------------------------
# body framing


def _split_body(
    body: bytes | memoryview, header_length: str | int | None, *, what: str
) -> tuple[dict[str, Any], memoryview | None]:
    """The JSON document of a body and the binary data after it (``None`` when there is none)."""
    if header_length is None:
        return _load_json(bytes(body), what), None
    length = _header_length(header_length, len(body), what)
    view = memoryview(body)
    return _load_json(view[:length].tobytes(), what), view[length:]


def _header_length(value: str | int, body_size: int, what: str) -> int:
    try:
        length = int(value)
    except ValueError:
        raise ProtocolError(
            f"{HEADER_LENGTH} is {value!r}, which is not a byte count — send the length of the "
            f"JSON part of the {what} in bytes"
        ) from None
    if length == 0:
        raise ProtocolError(
            f"{HEADER_LENGTH}: 0 (a raw binary {what} without a JSON header) is not supported — "
            "send a JSON header that describes the tensors, followed by their bytes"
        )
    if length < 0 or length > body_size:
        raise ProtocolError(
            f"{HEADER_LENGTH} is {length}, but the {what} body has {body_size} bytes — the header "
            "must be the length of the JSON part, which the body must contain"
        )
    return length


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except UnicodeDecodeError as e:
        raise ProtocolError(
            f"the JSON part of the {what} is not UTF-8 text ({e}) — if the body carries binary "
            f"tensors, set the {HEADER_LENGTH} header to the length of the JSON part"
        ) from e
    except json.JSONDecodeError as e:
        raise ProtocolError(
            f"the {what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno} — "
            f"if binary tensors follow the JSON, set the {HEADER_LENGTH} header"
        ) from e
    if not isinstance(doc, dict):
        raise ProtocolError(f"the {what} must be a JSON object, got {_json_type(doc)}")
    return doc


def _join(doc: dict[str, Any], chunks: list[memoryview]) -> EncodedBody:
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return EncodedBody(header)
    return EncodedBody(b"".join([header, *chunks]), header_length=len(header))


# -------------------------------------------------------------------------------------------------
# tensors


def _decode_tensors(entries: list[Any], binary: memoryview | None, *, kind: str) -> dict[str, np.ndarray[Any, Any]]:
    """Decode the tensor list of a request (``kind="input"``) or response (``"output"``)."""
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ProtocolError(f"{kind}s[{index}] must be an object, got {_json_type(entry)}")
        name = _required(entry, "name", str, f"{kind}s[{index}]")
        where = f"{kind} '{name}'"
        if name in tensors:
            raise ProtocolError(f"{where} appears twice — send each {kind} once")
        datatype = _required(entry, "datatype", str, where)
        dtype = numpy_dtype_of(datatype)
        shape = parse_shape(_required(entry, "shape", list, where), where)
        size = _binary_size(entry, where)
        if size is None:
            if "data" not in entry:
                raise ProtocolError(
                    f"{where} has no 'data' and no binary_data_size parameter — send its values "
                    "in 'data', or as binary data after the JSON"
                )
            tensors[name] = _from_json(entry["data"], datatype, dtype, shape, where)
            continue
        chunk = _binary_chunk(binary, offset, size, where, entry)
        tensors[name] = tensor_from_binary(chunk, datatype, dtype, shape, where)
        offset += size
    if binary is not None and offset != len(binary):
        raise ProtocolError(
            f"{len(binary)} bytes of binary data follow the JSON header, but the {kind}s declare "
            f"{offset} (the sum of their binary_data_size) — {HEADER_LENGTH} or a "
            "binary_data_size is wrong"
        )
    return tensors


def _binary_size(entry: dict[str, Any], where: str) -> int | None:
    parameters = _parameters(entry, where)
    reject_unsupported_parameters(parameters, where)
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ProtocolError(f"{where} has binary_data_size {size!r}; it must be a non-negative integer")
    return size


def _binary_chunk(binary: memoryview | None, offset: int, size: int, where: str, entry: dict[str, Any]) -> memoryview:
    if binary is None:
        raise ProtocolError(
            f"{where} has a binary_data_size parameter, but the body has no {HEADER_LENGTH} "
            "header — set it to the length of the JSON part"
        )
    if "data" in entry:
        raise ProtocolError(f"{where} has both 'data' and binary_data_size — send its values one way only")
    if offset + size > len(binary):
        raise ProtocolError(
            f"{where} declares binary_data_size {size} at offset {offset} of the binary data, "
            f"but only {len(binary)} bytes follow the JSON header — {HEADER_LENGTH} or a "
            "binary_data_size is wrong, or the body is truncated"
        )
    return binary[offset : offset + size]


def parse_shape(value: list[Any], where: str) -> tuple[int, ...]:
    for dim in value:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise ProtocolError(f"{where} has shape {value}; every dimension must be a non-negative integer")
    return tuple(value)


def tensor_from_binary(
    chunk: memoryview, datatype: str, dtype: np.dtype[Any], shape: tuple[int, ...], where: str
) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_from_binary(chunk, count, where).reshape(shape)
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise ProtocolError(
            f"{where} is {datatype} with shape {list(shape)}, which is {expected} bytes, but its "
            f"binary_data_size is {len(chunk)}"
        )
    array = np.frombuffer(chunk, dtype=dtype.newbyteorder("<"), count=count)
    if not _LITTLE_ENDIAN:
        array = array.astype(dtype)
    elif not array.flags.aligned:
        # The tensor starts at an offset its dtype does not divide: engines get an aligned copy.
        array = array.copy()
    if datatype == "BOOL" and count and array.view(np.uint8).max() > 1:
        raise ProtocolError(f"{where} is BOOL, but its binary data holds bytes other than 0 and 1")
    return array.reshape(shape)


def _bytes_from_binary(chunk: memoryview, count: int, where: str) -> np.ndarray[Any, Any]:
    elements: list[bytes] = []
    offset = 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise ProtocolError(
                f"{where}: BYTES element {len(elements)} has a truncated length prefix — each "
                "element is a 4-byte little-endian length followed by that many bytes"
            )
        (length,) = _LENGTH_PREFIX.unpack_from(chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise ProtocolError(
                f"{where}: BYTES element {len(elements)} declares {length} bytes, but only "
                f"{len(chunk) - offset} remain in its binary data"
            )
        elements.append(chunk[offset : offset + length].tobytes())
        offset += length
    if len(elements) != count:
        raise ProtocolError(
            f"{where} has {count} elements by its shape, but its binary data holds {len(elements)} BYTES elements"
        )
    return object_array(elements)


def _from_json(
    data: Any, datatype: str, dtype: np.dtype[Any], shape: tuple[int, ...], where: str
) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if datatype == "BYTES":
        elements = _json_strings(data, where)
        if len(elements) != count:
            raise ProtocolError(
                f"{where} has shape {list(shape)} ({count} elements), but its data holds {len(elements)}"
            )
        return object_array(elements).reshape(shape)
    try:
        array = np.asarray(data)
    except ValueError as e:
        raise ProtocolError(
            f"{where} has ragged data (nested lists of different lengths) — send it nested as {list(shape)} or flat"
        ) from e
    if array.size != count:
        raise ProtocolError(f"{where} has shape {list(shape)} ({count} elements), but its data holds {array.size}")
    if array.ndim > 1 and array.shape != shape:
        raise ProtocolError(
            f"{where} has shape {list(shape)}, but its nested data has shape {list(array.shape)} "
            "— nest it like the shape, or send it flat"
        )
    if count and dtype.kind in "iu" and array.dtype.kind == "f":
        return _json_integers(data, array, datatype, dtype, where).reshape(shape)
    if count:
        check_json_values(array, datatype, dtype, where)
    return array.astype(dtype, copy=False).reshape(shape)


def _json_integers(
    data: Any, approx: np.ndarray[Any, Any], datatype: str, dtype: np.dtype[Any], where: str
) -> np.ndarray[Any, Any]:
    """Integers numpy read as floats: real fractions, or integers beyond int64 mixed with others
    (which numpy promotes to float64); decode the latter exactly."""
    try:
        exact = np.asarray(data, dtype=dtype)
    except OverflowError as e:
        raise ProtocolError(
            f"{where} is {datatype}, but its data holds values outside its range ({e}) — send it as a wider datatype"
        ) from e
    if not np.array_equal(exact.astype(np.float64), approx.reshape(exact.shape)):
        raise ProtocolError(f"{where} is {datatype}, but its data holds floating-point numbers, not integers")
    return exact


def check_json_values(array: np.ndarray[Any, Any], datatype: str, dtype: np.dtype[Any], where: str) -> None:
    if array.dtype.kind not in _JSON_KINDS[dtype.kind]:
        seen = _KIND_NAMES.get(array.dtype.kind, f"values of type {array.dtype}")
        wanted = _KIND_NAMES[dtype.kind]
        raise ProtocolError(f"{where} is {datatype}, but its data holds {seen}, not {wanted}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise ProtocolError(
                f"{where} is {datatype}, but its data holds {bad}, outside [{info.min}, "
                f"{info.max}] — send it as a wider datatype"
            )


def _json_strings(data: Any, where: str) -> list[bytes]:
    if isinstance(data, str):
        return [data.encode()]
    if not isinstance(data, list):
        raise ProtocolError(f"{where} is BYTES, but its data holds {_json_type(data)}, not strings")
    elements: list[bytes] = []
    for item in data:
        elements.extend(_json_strings(item, where))
    return elements


def object_array(elements: Sequence[object]) -> np.ndarray[Any, Any]:
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array


def _encode_tensors(
    tensors: Mapping[str, np.ndarray[Any, Any]], *, binary: Collection[str]
) -> tuple[list[dict[str, Any]], list[memoryview]]:
    entries: list[dict[str, Any]] = []
    chunks: list[memoryview] = []
    for name, value in tensors.items():
        array = np.asarray(value)
        datatype = datatype_of(array.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if name in binary:
            chunk = tensor_to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": chunk.nbytes}
            chunks.append(chunk)
        else:
            entry["data"] = _to_json(array, datatype, name)
        entries.append(entry)
    return entries, chunks


def tensor_to_binary(array: np.ndarray[Any, Any], datatype: str) -> memoryview:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for element in array.reshape(-1):
            raw = _element_bytes(element)
            parts.append(_LENGTH_PREFIX.pack(len(raw)))
            parts.append(raw)
        return memoryview(b"".join(parts))
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return little.reshape(-1).view(np.uint8).data


def _to_json(array: np.ndarray[Any, Any], datatype: str, name: str) -> list[Any]:
    flat = array.reshape(-1)
    if datatype != "BYTES":
        values: list[Any] = flat.tolist()
        return values
    try:
        return [_element_bytes(element).decode() for element in flat]
    except UnicodeDecodeError as e:
        raise ProtocolError(
            f"tensor '{name}' holds bytes that are not UTF-8 text and cannot be sent as JSON — "
            "request it as binary data (binary_data: true)"
        ) from e


def _element_bytes(element: object) -> bytes:
    if isinstance(element, bytes):
        return element
    if isinstance(element, str):
        return element.encode()
    raise ProtocolError(f"a BYTES tensor holds a {type(element).__name__}; its elements must be bytes or str")


# -------------------------------------------------------------------------------------------------
# JSON helpers


def _required(doc: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in doc:
        raise ProtocolError(f"{where} has no '{key}' field, which is required")
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = _TYPE_NAMES.get(kind, kind.__name__)
        raise ProtocolError(f"'{key}' of {where} must be {expected}, got {_json_type(value)}")
    return value


def _parameters(doc: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = doc.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ProtocolError(f"'parameters' of {where} must be an object, got {_json_type(parameters)}")
    return parameters


def _bool_parameter(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"{where} has parameter {key} {value!r}; it must be true or false")
    return value


_TYPE_NAMES: Final[dict[type, str]] = {str: "a string", list: "a list", dict: "an object"}


def reject_unsupported_parameters(parameters: dict[str, Any], where: str) -> None:
    """Fail on parameters of protocol extensions this module does not implement, rather than
    answer as if they had not been asked for."""
    for key, (extension, fix) in _UNSUPPORTED_PARAMETERS.items():
        if key in parameters:
            raise ProtocolError(
                f"{where} has parameter {key}, which belongs to {extension}; this server does not implement it — {fix}"
            )


def _json_type(value: Any) -> str:
    """How a JSON value reads in a message: ``the string 'abc'``, ``a list``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, int | float):
        return f"the number {value}"
    return _TYPE_NAMES.get(type(value), type(value).__name__)
