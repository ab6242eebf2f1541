"""Transport clients for ``modelport loadtest``: KServe v2 over HTTP/1.1 (binary or JSON) and gRPC.

Why not ``tritonclient``, ``httpx`` or ``aiohttp``: a load generator shares the machine with the
server it measures, and stock clients build and parse every request in Python, which costs a large
share of a core at a few hundred requests per second. These clients do the least that is honest:

* every request is encoded once, up front, as the exact bytes that go on the wire (for HTTP the
  request line, headers and body; for gRPC the serialized ``ModelInferRequest``);
* HTTP runs over raw asyncio streams, one keep-alive connection per caller; a response is parsed
  as far as its status, headers and body length, and decoded into tensors only when it is sampled
  for checking;
* gRPC goes through ``grpc.aio`` with raw bytes in and out (no per-call serializer), over one
  HTTP/2 channel; every response is parsed as a ``ModelInferResponse`` (cheap, in C), tensors only
  when sampled.

Each call reports where its time went (seconds):

=========  ===================================================  ====================================
split      HTTP                                                 gRPC
=========  ===================================================  ====================================
send       writing the request until the socket took it         starting the call
wait       from then to the first byte of the response          until the response message arrived
receive    first byte to the last byte of the body              parsing the response message
=========  ===================================================  ====================================

Only the address given is contacted: no redirect is followed and no other host is looked up.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol
from urllib.parse import quote, urlsplit

import numpy as np

from modelport.errors import ConfigError, LoadtestError, ModelNotFoundError
from modelport.serve.protocol import (
    HEADER_LENGTH,
    datatype_of,
    decode_response,
    encode_request,
    numpy_dtype_of,
    object_array,
    tensor_from_binary,
    tensor_to_binary,
)

__all__ = [
    "PROTOCOLS",
    "Connection",
    "Exchange",
    "GrpcTransport",
    "HttpTarget",
    "HttpTransport",
    "LoadtestError",
    "Transport",
    "make_transport",
]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]

#: The transports :func:`make_transport` knows.
PROTOCOLS: Final = ("http", "http-json", "grpc")

_SERVICE: Final = "/inference.GRPCInferenceService/"
_GRPC_DEFAULT_PORT: Final = 8001
#: Statuses of a statistics request that mean "this server has no statistics endpoint".
_NO_STATISTICS: Final = (404, 405, 501)
#: The ``InferTensorContents`` field of each datatype (for servers that send typed contents).
_CONTENTS: Final = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_DURATIONS: Final = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


def _now() -> float:
    return time.perf_counter()


@dataclass(frozen=True)
class Exchange:
    """The outcome of one inference call: ``error`` is ``None`` on success, else its kind
    (an HTTP status such as ``"429"``, a gRPC status name, ``"timeout"``, ``"connection"``...).

    ``payload`` is the raw response, kept only when the caller asked for it (to check it).
    """

    error: str | None
    send: float
    wait: float
    receive: float
    payload: Any = None


class Connection(Protocol):
    """One caller's line to the server: a keep-alive HTTP connection, or a handle on the gRPC channel."""

    async def infer(self, index: int, *, keep: bool) -> Exchange:
        """Send pre-encoded request ``index`` and wait for its response."""
        ...

    async def close(self) -> None: ...


class Transport(abc.ABC):
    """A KServe v2 client for one model: metadata, statistics, and pre-encoded inference requests.

    Use as an async context manager (``async with make_transport(...) as t``); call
    :meth:`prepare` with the request inputs before :meth:`connect`.
    """

    protocol: str

    def __init__(self, url: str, model: str, version: str | None, timeout_s: float) -> None:
        self.url = url
        self.model = model
        self.version = version
        self.timeout_s = timeout_s
        self.requests: list[Arrays] = []

    @property
    def label(self) -> str:
        """The model as messages name it: ``'resnet'`` or ``'resnet' version 2``."""
        return repr(self.model) + (f" version {self.version}" if self.version else "")

    async def __aenter__(self) -> Transport:
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def metadata(self) -> dict[str, Any]:
        """The model's KServe v2 metadata (``name``, ``inputs`` with ``name``/``datatype``/``shape``...)."""

    @abc.abstractmethod
    async def statistics(self) -> dict[str, Any] | None:
        """Triton's statistics document of the model (``{"model_stats": [...]}``); ``None`` when the
        server has no statistics endpoint."""

    def prepare(self, requests: Sequence[Arrays]) -> None:
        """Encode each request's inputs once; :meth:`Connection.infer` sends them by index."""
        if not requests:
            raise ConfigError("no requests to prepare — give at least one set of inputs")
        self.requests = list(requests)
        self._encode(self.requests)

    @abc.abstractmethod
    def _encode(self, requests: list[Arrays]) -> None: ...

    @abc.abstractmethod
    async def connect(self) -> Connection: ...

    @abc.abstractmethod
    def decode(self, payload: Any) -> Arrays:
        """The output tensors of a kept response; :class:`~modelport.errors.ProtocolError` if malformed."""


def make_transport(protocol: str, url: str, model: str, version: str | None, timeout_s: float) -> Transport:
    """The client for ``protocol`` (one of :data:`PROTOCOLS`) aimed at ``url``."""
    if not model:
        raise ConfigError("no model name given — name the served model to load-test (--model NAME)")
    if protocol == "grpc":
        return GrpcTransport(url, model, version, timeout_s)
    if protocol in ("http", "http-json"):
        return HttpTransport(url, model, version, timeout_s, binary=protocol == "http")
    raise ConfigError(f"unknown protocol {protocol!r} — use one of {', '.join(PROTOCOLS)}")


def _missing_model(label: str, where: str, detail: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"the server at {where} has no model {label} ({detail}) — check the model name and version "
        "(the server's repository index lists them)"
    )


# -------------------------------------------------------------------------------------------------
# HTTP/1.1


@dataclass(frozen=True)
class HttpTarget:
    """Where HTTP requests go: ``http[s]://HOST[:PORT][/PREFIX]`` (no scheme means ``http``)."""

    host: str
    port: int
    tls: bool
    prefix: str

    @classmethod
    def parse(cls, url: str) -> HttpTarget:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https"):
            raise ConfigError(f"URL {url!r} has scheme {parts.scheme!r} — HTTP load tests need http:// or https://")
        if not parts.hostname:
            raise ConfigError(f"URL {url!r} names no host — give it as http://HOST:PORT")
        if parts.query or parts.fragment:
            raise ConfigError(f"URL {url!r} has a query or fragment — give the server's base URL, http://HOST:PORT")
        try:
            port = parts.port
        except ValueError as e:
            raise ConfigError(f"URL {url!r} has an invalid port ({e}) — give it as http://HOST:PORT") from e
        tls = parts.scheme == "https"
        return cls(parts.hostname, port or (443 if tls else 80), tls, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes
    close: bool


class _HttpConnection:
    """One keep-alive HTTP/1.1 connection, opened on first use and reopened after it closes."""

    def __init__(self, target: HttpTarget) -> None:
        self.target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, wire: bytes) -> tuple[_Response, float, float, float]:
        """Send ``wire``; the response and the send, wait and receive seconds.

        A kept-alive connection the server has closed in the meantime fails before any byte of
        a response arrives; the request is then sent once more on a new connection.
        """
        reused = self._writer is not None
        try:
            return await self._request_once(wire)
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            await self.close()
            if not reused or (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                raise
        return await self._request_once(wire)

    async def _request_once(self, wire: bytes) -> tuple[_Response, float, float, float]:
        start = _now()
        if self._writer is None:
            context = ssl.create_default_context() if self.target.tls else None
            self._reader, self._writer = await asyncio.open_connection(self.target.host, self.target.port, ssl=context)
        reader, writer = self._reader, self._writer
        assert reader is not None
        writer.write(wire)
        await writer.drain()
        sent = _now()
        first = await reader.readexactly(1)
        arrived = _now()
        response = await _read_response(reader, first)
        done = _now()
        if response.close:
            await self.close()
        return response, sent - start, arrived - sent, done - arrived

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):  # the peer went first
                await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader, first: bytes) -> _Response:
    """One HTTP/1.1 response after its first byte; :class:`ValueError` if it is not HTTP."""
    head = first + await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/") or not rest[:3].isdigit():
        raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:  # delimited by the end of the connection
        body, close = await reader.read(), True
    return _Response(status, headers, body, close)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the empty line
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class HttpTransport(Transport):
    """KServe v2 over HTTP/1.1: binary tensors (``binary=True``, Triton's extension) or plain JSON."""

    def __init__(self, url: str, model: str, version: str | None, timeout_s: float, *, binary: bool) -> None:
        super().__init__(url, model, version, timeout_s)
        self.target = HttpTarget.parse(url)
        self.binary = binary
        self.protocol = "http" if binary else "http-json"
        path = f"{self.target.prefix}/v2/models/{quote(model, safe='')}"
        if version:
            path += f"/versions/{quote(version, safe='')}"
        self.model_path = path
        self.wire: list[bytes] = []
        self._control = _HttpConnection(self.target)

    async def open(self) -> None:
        return None  # connections open on first use

    async def close(self) -> None:
        await self._control.close()

    async def get(self, path: str) -> tuple[int, Any]:
        """GET ``path`` on the control connection: the status and the JSON body (``None`` if not JSON)."""
        wire = f"GET {path} HTTP/1.1\r\nHost: {self.target.authority}\r\nAccept: application/json\r\n\r\n"
        try:
            response, *_ = await asyncio.wait_for(self._control.request(wire.encode("latin-1")), self.timeout_s)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError) as e:
            await self._control.close()
            raise LoadtestError(
                f"cannot reach the KServe v2 server at {self.target.authority} (GET {path}: "
                f"{type(e).__name__}: {e}) — is it running, and is this its HTTP port?"
            ) from e
        try:
            document = json.loads(response.body) if response.body else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            document = None
        return response.status, document

    async def metadata(self) -> dict[str, Any]:
        status, document = await self.get(self.model_path)
        if status == 404:
            raise _missing_model(self.label, self.target.authority, f"GET {self.model_path}: 404 {_detail(document)}")
        if status != 200 or not isinstance(document, dict):
            raise LoadtestError(
                f"GET {self.model_path} on {self.target.authority} answered {status} {_detail(document)} — "
                "expected 200 with the model's metadata; is this a KServe v2 server?"
            )
        return document

    async def statistics(self) -> dict[str, Any] | None:
        path = f"{self.model_path}/stats"
        status, document = await self.get(path)
        if status in _NO_STATISTICS:
            return None
        if status != 200 or not isinstance(document, dict) or not isinstance(document.get("model_stats"), list):
            raise LoadtestError(
                f"GET {path} on {self.target.authority} answered {status} {_detail(document)} — expected 200 "
                "with Triton's statistics document"
            )
        return document

    def _encode(self, requests: list[Arrays]) -> None:
        self.wire = [self._encode_one(inputs) for inputs in requests]

    def _encode_one(self, inputs: Arrays) -> bytes:
        body = encode_request(inputs, binary=self.binary, binary_output=self.binary)
        lines = [
            f"POST {self.model_path}/infer HTTP/1.1",
            f"Host: {self.target.authority}",
            f"Content-Length: {len(body.body)}",
            *(f"{name}: {value}" for name, value in body.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body.body

    async def connect(self) -> Connection:
        return _HttpInferConnection(self)

    def decode(self, payload: Any) -> Arrays:
        assert isinstance(payload, _Response)
        return dict(decode_response(payload.body, payload.headers.get(HEADER_LENGTH.lower())).outputs)


def _detail(document: Any) -> str:
    """The ``error`` a KServe server put in its answer, for a message."""
    if isinstance(document, dict) and "error" in document:
        return f"({str(document['error'])[:300]})"
    return ""


class _HttpInferConnection:
    def __init__(self, transport: HttpTransport) -> None:
        self._transport = transport
        self._connection = _HttpConnection(transport.target)

    async def infer(self, index: int, *, keep: bool) -> Exchange:
        start = _now()
        try:
            response, send, wait, receive = await asyncio.wait_for(
                self._connection.request(self._transport.wire[index]), self._transport.timeout_s
            )
        except asyncio.TimeoutError:
            return await self._failed("timeout", start)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return await self._failed("connection", start)
        except ValueError:
            return await self._failed("protocol", start)
        error = None if response.status == 200 else str(response.status)
        return Exchange(error, send, wait, receive, response if keep else None)

    async def _failed(self, kind: str, start: float) -> Exchange:
        await self._connection.close()
        return Exchange(kind, 0.0, _now() - start, 0.0)

    async def close(self) -> None:
        await self._connection.close()


# -------------------------------------------------------------------------------------------------
# gRPC


def _grpc_target(url: str) -> tuple[str, bool]:
    """``HOST:PORT`` and whether to use TLS, from ``grpc[s]://HOST:PORT``, ``HOST:PORT`` or ``http://...``."""
    parts = urlsplit(url if "://" in url else f"grpc://{url}")
    if parts.scheme not in ("grpc", "grpcs", "http", "https"):
        raise ConfigError(
            f"URL {url!r} has scheme {parts.scheme!r} — gRPC load tests need HOST:PORT or grpc://HOST:PORT"
        )
    if not parts.hostname or parts.path.strip("/") or parts.query or parts.fragment:
        raise ConfigError(f"URL {url!r} is not a gRPC address — give it as HOST:PORT or grpc://HOST:PORT")
    try:
        port = parts.port or _GRPC_DEFAULT_PORT
    except ValueError as e:
        raise ConfigError(f"URL {url!r} has an invalid port ({e}) — give it as HOST:PORT") from e
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", parts.scheme in ("grpcs", "https")


class GrpcTransport(Transport):
    """KServe v2 over gRPC (``inference.GRPCInferenceService``), tensors as ``raw_input_contents``."""

    protocol = "grpc"

    def __init__(self, url: str, model: str, version: str | None, timeout_s: float) -> None:
        super().__init__(url, model, version, timeout_s)
        self.target, self.tls = _grpc_target(url)
        self.wire: list[bytes] = []
        self._channel: Any = None
        self.infer_rpc: Any = None

    async def open(self) -> None:
        import grpc
        import grpc.aio

        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        if self.tls:
            self._channel = grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials(), options=options)
        else:
            self._channel = grpc.aio.insecure_channel(self.target, options=options)
        # No serializers: the request goes as the bytes prepared once, the response comes back as bytes.
        self.infer_rpc = self._channel.unary_unary(_SERVICE + "ModelInfer")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _call(self, method: str, request: Any, response_type: Any) -> Any:
        rpc = self._channel.unary_unary(
            _SERVICE + method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return await rpc(request, timeout=self.timeout_s)

    def _unreachable(self, rpc: str, error: Any) -> LoadtestError:
        return LoadtestError(
            f"gRPC {rpc} for model {self.label} on {self.target} failed with {error.code().name}: {error.details()} "
            "— is a KServe v2 server running there, and is this its gRPC port?"
        )

    async def metadata(self) -> dict[str, Any]:
        import grpc
        import grpc.aio

        from modelport.serve import kserve_pb as pb

        request = pb.ModelMetadataRequest(name=self.model, version=self.version or "")
        try:
            message = await self._call("ModelMetadata", request, pb.ModelMetadataResponse)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise _missing_model(self.label, self.target, f"ModelMetadata: NOT_FOUND {e.details()}") from e
            raise self._unreachable("ModelMetadata", e) from e
        return {
            "name": message.name,
            "versions": list(message.versions),
            "platform": message.platform,
            "inputs": [_tensor_metadata(t) for t in message.inputs],
            "outputs": [_tensor_metadata(t) for t in message.outputs],
        }

    async def statistics(self) -> dict[str, Any] | None:
        import grpc
        import grpc.aio

        from modelport.serve import kserve_pb as pb

        request = pb.ModelStatisticsRequest(name=self.model, version=self.version or "")
        try:
            message = await self._call("ModelStatistics", request, pb.ModelStatisticsResponse)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise self._unreachable("ModelStatistics", e) from e
        return {"model_stats": [_model_stats(entry) for entry in message.model_stats]}

    def _encode(self, requests: list[Arrays]) -> None:
        from modelport.serve import kserve_pb as pb

        self.wire = []
        for inputs in requests:
            message = pb.ModelInferRequest(model_name=self.model, model_version=self.version or "")
            for name, value in inputs.items():
                array = np.asarray(value)
                datatype = datatype_of(array.dtype)
                message.inputs.add(name=name, datatype=datatype, shape=array.shape)
                message.raw_input_contents.append(tensor_to_binary(array, datatype).tobytes())
            self.wire.append(message.SerializeToString())

    async def connect(self) -> Connection:
        return _GrpcInferConnection(self)

    def decode(self, payload: Any) -> Arrays:
        outputs: Arrays = {}
        raw = list(payload.raw_output_contents)
        for index, tensor in enumerate(payload.outputs):
            where = f"output '{tensor.name}'"
            dtype = numpy_dtype_of(tensor.datatype)
            shape = tuple(int(d) for d in tensor.shape)
            if raw:
                outputs[tensor.name] = tensor_from_binary(memoryview(raw[index]), tensor.datatype, dtype, shape, where)
                continue
            values = list(getattr(tensor.contents, _CONTENTS.get(tensor.datatype, "bytes_contents")))
            array = object_array(values) if tensor.datatype == "BYTES" else np.array(values).astype(dtype)
            outputs[tensor.name] = array.reshape(shape)
        return outputs


def _tensor_metadata(tensor: Any) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": [int(d) for d in tensor.shape]}


def _model_stats(entry: Any) -> dict[str, Any]:
    """A ``ModelStatistics`` message as the HTTP endpoint's JSON entry (the fields loadtest reads)."""

    def duration(message: Any) -> dict[str, int]:
        return {"count": int(message.count), "ns": int(message.ns)}

    return {
        "name": entry.name,
        "version": entry.version,
        "inference_stats": {name: duration(getattr(entry.inference_stats, name)) for name in _DURATIONS},
        "batch_stats": [
            {
                "batch_size": int(stat.batch_size),
                "compute_input": duration(stat.compute_input),
                "compute_infer": duration(stat.compute_infer),
                "compute_output": duration(stat.compute_output),
            }
            for stat in entry.batch_stats
        ],
    }


class _GrpcInferConnection:
    def __init__(self, transport: GrpcTransport) -> None:
        self._transport = transport

    async def infer(self, index: int, *, keep: bool) -> Exchange:
        import grpc.aio
        from google.protobuf.message import DecodeError

        from modelport.serve import kserve_pb as pb

        transport = self._transport
        start = _now()
        call = transport.infer_rpc(transport.wire[index], timeout=transport.timeout_s)
        started = _now()
        try:
            raw = await call
        except grpc.aio.AioRpcError as e:
            return Exchange(e.code().name, started - start, _now() - started, 0.0, e.details() if keep else None)
        arrived = _now()
        try:
            message = pb.ModelInferResponse.FromString(raw)
        except DecodeError:
            return Exchange("protocol", started - start, arrived - started, _now() - arrived)
        return Exchange(None, started - start, arrived - started, _now() - arrived, message if keep else None)

    async def close(self) -> None:
        return None  # the channel is the transport's
