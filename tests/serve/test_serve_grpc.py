"""The KServe v2 gRPC service in-process, driven by the stock ``tritonclient.grpc`` clients.

The service is served over a small fake core (the API of ``InferenceCore``, running numpy
functions) on 127.0.0.1 with a free port. Malformed requests the Triton client refuses to send
go through a plain gRPC channel with ``tritonclient``'s own generated messages. The descriptor
test proves the messages built in ``kserve_pb`` are wire-identical to Triton's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import pytest
import tritonclient.grpc as triton_sync
import tritonclient.grpc.aio as triton
from google.protobuf import descriptor_pb2, descriptor_pool, json_format
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from modelport.errors import (
    BackendError,
    ConfigError,
    InputDtypeError,
    ModelNotFoundError,
    ModelNotReadyError,
    PayloadTooLargeError,
    ProtocolError,
    RequestTimeoutError,
    ServerBusyError,
    UnknownInputError,
)
from modelport.serve import kserve_pb
from modelport.serve.grpc_service import GrpcServer, start_grpc_server
from modelport.serve.protocol import InferenceRequest

pytestmark = pytest.mark.anyio

Arrays = dict[str, np.ndarray[Any, Any]]
MAX_MESSAGE_BYTES = 1 << 20

# -------------------------------------------------------------------------------------------------
# a fake core: the InferenceCore API over numpy functions


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class FakeModel:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    run: Callable[[Arrays, int], Arrays]


@dataclass(frozen=True)
class Result:
    model_name: str
    model_version: str
    id: str | None
    outputs: Arrays
    binary: frozenset[str] = frozenset()


def run_mixed(inputs: Arrays, version: int) -> Arrays:
    x, k, flag = inputs["x"], inputs["k"], inputs["flag"]
    return {
        "y": x * np.float32(2) + np.float32(version),
        "k_next": k + version,
        "flipped": ~flag,
    }


def run_text(inputs: Arrays, version: int) -> Arrays:
    s = inputs["s"]
    return {
        "upper": np.array([e.upper() for e in s.reshape(-1)], dtype=object).reshape(s.shape),
        "length": np.array([len(e) for e in s.reshape(-1)], dtype=np.int32).reshape(s.shape),
    }


MODELS: dict[str, FakeModel] = {
    "mixed": FakeModel(
        inputs=(Tensor("x", "FP32", (-1, 3)), Tensor("k", "INT64", (-1,)), Tensor("flag", "BOOL", (-1,))),
        outputs=(Tensor("y", "FP32", (-1, 3)), Tensor("k_next", "INT64", (-1,)), Tensor("flipped", "BOOL", (-1,))),
        run=run_mixed,
    ),
    "text": FakeModel(
        inputs=(Tensor("s", "BYTES", (-1,)),),
        outputs=(Tensor("upper", "BYTES", (-1,)), Tensor("length", "INT32", (-1,))),
        run=run_text,
    ),
}
VERSIONS = {"mixed": ("1", "2"), "text": ("1",)}
DTYPES = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}


@dataclass
class FakeCore:
    """Serves MODELS like InferenceCore: lookups, loading, statistics, and injectable failures."""

    loaded: set[str] = field(default_factory=lambda: set(MODELS))
    requests: list[InferenceRequest] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    fail_with: Exception | None = None
    barrier: int | None = None
    arrived: int = 0
    cancelled: int = 0
    _all_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _first_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _first_cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    live = True

    @property
    def ready(self) -> bool:
        return self.loaded == set(MODELS)

    def _version(self, name: str, version: str | None) -> str:
        if name not in MODELS:
            raise ModelNotFoundError(f"model '{name}' is not in the repository")
        if version is None:
            return VERSIONS[name][-1]
        if version not in VERSIONS[name]:
            raise ModelNotFoundError(f"model '{name}' has no version {version}")
        return version

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "modelport", "version": "0.test", "extensions": ["binary_tensor_data", "statistics"]}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        chosen = self._version(name, version)
        model = MODELS[name]
        return {
            "name": name,
            "versions": list(VERSIONS[name]) if version is None else [chosen],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in model.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in model.outputs],
        }

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self._version(name, version)
        return name in self.loaded

    async def infer(self, name: str, version: str | None, request: InferenceRequest) -> Result:
        chosen = self._version(name, version)
        self.requests.append(request)
        if name not in self.loaded:
            raise ModelNotReadyError(f"model '{name}' version {chosen} is not loaded — load it first")
        if self.fail_with is not None:
            raise self.fail_with
        await self._wait_for_barrier()
        model = MODELS[name]
        expected = {t.name: t for t in model.inputs}
        if set(request.inputs) != set(expected):
            raise UnknownInputError(f"model '{name}' takes inputs {sorted(expected)}, got {sorted(request.inputs)}")
        for tensor in model.inputs:
            if request.inputs[tensor.name].dtype != DTYPES[tensor.datatype]:
                raise InputDtypeError(f"input '{tensor.name}' has dtype {request.inputs[tensor.name].dtype}")
        outputs = model.run(request.inputs, int(chosen))
        selected = request.select_outputs([t.name for t in model.outputs], model_name=f"model '{name}'")
        self.counts[name, chosen] = self.counts.get((name, chosen), 0) + 1
        return Result(name, chosen, request.id, {o.name: outputs[o.name] for o in selected})

    async def _wait_for_barrier(self) -> None:
        """With ``barrier`` set, hold every request until that many are in flight at once."""
        if self.barrier is None:
            return
        self.arrived += 1
        self._first_arrived.set()
        if self.arrived >= self.barrier:
            self._all_arrived.set()
        try:
            await asyncio.wait_for(self._all_arrived.wait(), timeout=10)
        except asyncio.CancelledError:
            self.cancelled += 1
            self._first_cancelled.set()
            raise

    async def wait_for_arrival(self) -> None:
        await asyncio.wait_for(self._first_arrived.wait(), timeout=10)

    async def wait_for_cancellation(self) -> None:
        await asyncio.wait_for(self._first_cancelled.wait(), timeout=10)

    def statistics(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        if name is None:
            keys = [(n, v) for n in MODELS for v in VERSIONS[n]]
        else:
            chosen = self._version(name, version)
            keys = [(name, v) for v in VERSIONS[name]] if version is None else [(name, chosen)]
        return {"model_stats": [self._model_stats(n, v) for n, v in keys]}

    def _model_stats(self, name: str, version: str) -> dict[str, Any]:
        count = self.counts.get((name, version), 0)
        duration = {"count": count, "ns": 1000 * count}
        zero = {"count": 0, "ns": 0}
        return {
            "name": name,
            "version": version,
            "last_inference": 1_700_000_000_000 if count else 0,
            "inference_count": count,
            "execution_count": count,
            "inference_stats": {
                "success": duration,
                "fail": zero,
                "queue": duration,
                "compute_input": duration,
                "compute_infer": duration,
                "compute_output": duration,
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {"batch_size": 1, "compute_input": duration, "compute_infer": duration, "compute_output": duration}
            ]
            if count
            else [],
            "memory_usage": [],
            # modelport's extensions to Triton's document (gRPC leaves them out)
            "stage_stats": {"pre": duration},
            "rejected": 0,
            "pending": 0,
        }

    def repository_index(self) -> list[dict[str, str]]:
        return [
            {"name": n, "version": v, "state": "READY", "reason": ""}
            if n in self.loaded
            else {"name": n, "version": v, "state": "UNAVAILABLE", "reason": "unloaded"}
            for n in MODELS
            for v in VERSIONS[n]
        ]

    async def load_model(self, name: str) -> None:
        self._version(name, None)
        self.loaded.add(name)

    async def unload_model(self, name: str) -> None:
        self._version(name, None)
        self.loaded.discard(name)


# -------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
async def server(core: FakeCore) -> AsyncIterator[GrpcServer]:
    started = await start_grpc_server(core, "127.0.0.1", 0, max_message_bytes=MAX_MESSAGE_BYTES)
    try:
        yield started
    finally:
        await started.stop(None)


@pytest.fixture
async def client(server: GrpcServer) -> AsyncIterator[Any]:
    async with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
        yield client


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


async def call(channel: Any, method: str, request: Any) -> Any:
    """One RPC with tritonclient's generated messages (``method`` is the RPC name)."""
    response_type = getattr(service_pb2, type(request).__name__.replace("Request", "Response"))
    stub = channel.unary_unary(
        f"/inference.GRPCInferenceService/{method}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_type.FromString,
    )
    return await stub(request)


def mixed_feeds(batch: int = 2, seed: int = 0) -> Arrays:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, 3)).astype(np.float32),
        "k": rng.integers(-(2**40), 2**40, size=batch, dtype=np.int64),
        "flag": rng.random(batch) > 0.5,
    }


def triton_inputs(feeds: Arrays, module: Any = triton) -> list[Any]:
    inputs = []
    for name, value in feeds.items():
        datatype = {"float32": "FP32", "int64": "INT64", "bool": "BOOL", "object": "BYTES"}[value.dtype.name]
        tensor = module.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def expected_mixed(feeds: Arrays, version: int) -> Arrays:
    """The reference, in float64 for the float output."""
    return {
        "y": feeds["x"].astype(np.float64) * 2 + version,
        "k_next": feeds["k"] + version,
        "flipped": np.logical_not(feeds["flag"]),
    }


def assert_mixed(result: Any, feeds: Arrays, version: int) -> None:
    expected = expected_mixed(feeds, version)
    y = result.as_numpy("y")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected["y"], rtol=1e-6, atol=1e-6)
    k_next = result.as_numpy("k_next")
    assert k_next.dtype == np.int64
    np.testing.assert_array_equal(k_next, expected["k_next"])
    flipped = result.as_numpy("flipped")
    assert flipped.dtype == np.bool_
    np.testing.assert_array_equal(flipped, expected["flipped"])


def raw_request(model: str = "mixed") -> Any:
    """A valid ModelInferRequest for 'mixed' (batch 1) built from tritonclient's messages."""
    request = service_pb2.ModelInferRequest(model_name=model)
    tensors: dict[str, tuple[str, list[int], np.ndarray[Any, Any]]] = {
        "x": ("FP32", [1, 3], np.array([[1, 2, 3]], dtype=np.float32)),
        "k": ("INT64", [1], np.array([7], dtype=np.int64)),
        "flag": ("BOOL", [1], np.array([True])),
    }
    for name, (datatype, shape, value) in tensors.items():
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(value.tobytes())
    return request


# -------------------------------------------------------------------------------------------------
# messages


def test_messages_match_tritonclient_descriptors() -> None:
    """Every message: the same fields (names, numbers, types, labels, message types, oneofs, maps)."""
    ours = kserve_pb.file_descriptor_proto()
    assert (ours.package, ours.syntax) == ("inference", "proto3")
    compared = []
    for message in ours.message_type:
        theirs = descriptor_pb2.DescriptorProto()
        getattr(service_pb2, message.name).DESCRIPTOR.CopyToProto(theirs)
        built = descriptor_pb2.DescriptorProto()
        getattr(kserve_pb, message.name).DESCRIPTOR.CopyToProto(built)
        assert built == message
        assert _fields(message) == _fields(theirs), message.name
        assert message == theirs, message.name
        compared.append(message.name)
    required = {
        *(f"{rpc}{kind}" for rpc in ("ServerLive", "ServerReady", "ModelReady") for kind in ("Request", "Response")),
        *(
            f"{rpc}{kind}"
            for rpc in ("ServerMetadata", "ModelMetadata", "ModelInfer")
            for kind in ("Request", "Response")
        ),
        *(f"{rpc}{kind}" for rpc in ("ModelStatistics", "RepositoryIndex") for kind in ("Request", "Response")),
        *(f"Repository{rpc}{kind}" for rpc in ("ModelLoad", "ModelUnload") for kind in ("Request", "Response")),
        "InferParameter",
        "InferTensorContents",
        "ModelStatistics",
        "InferStatistics",
        "StatisticDuration",
        "InferBatchStatistics",
    }
    assert required <= set(compared)


def _fields(message: descriptor_pb2.DescriptorProto, prefix: str = "") -> list[tuple[Any, ...]]:
    """Every field of a message and its nested messages, with what decides its wire format."""
    rows: list[tuple[Any, ...]] = []
    for f in message.field:
        oneof = message.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None
        rows.append((prefix + f.name, f.number, f.type, f.label, f.type_name, oneof))
    for nested in message.nested_type:
        rows.append((prefix + nested.name, "map_entry", nested.options.map_entry))
        rows.extend(_fields(nested, f"{prefix}{nested.name}."))
    return sorted(rows, key=repr)


def test_messages_round_trip_with_tritonclient() -> None:
    ours = kserve_pb.ModelInferRequest(model_name="m", model_version="2", id="r")
    ours.parameters["timeout"].int64_param = 5
    ours.parameters["priority"].uint64_param = 2**63
    ours.parameters["ratio"].double_param = 0.25
    tensor = ours.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    tensor.parameters["flag"].bool_param = True
    tensor.contents.fp32_contents.extend([1.5, -2.0])
    ours.outputs.add(name="y").parameters["note"].string_param = "s"
    ours.raw_input_contents.append(b"\x00\x01")
    theirs = service_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    as_dict = json_format.MessageToDict(ours, preserving_proto_field_name=True)
    assert json_format.MessageToDict(theirs, preserving_proto_field_name=True) == as_dict
    back = kserve_pb.ModelInferRequest.FromString(theirs.SerializeToString())
    assert back == ours


def test_messages_live_in_a_private_pool() -> None:
    with pytest.raises(KeyError, match=kserve_pb.FILE_NAME):
        descriptor_pool.Default().FindFileByName(kserve_pb.FILE_NAME)
    assert kserve_pb.ModelInferRequest.DESCRIPTOR.file.name == kserve_pb.FILE_NAME
    assert service_pb2.ModelInferRequest.DESCRIPTOR.file.name == "grpc_service.proto"


# -------------------------------------------------------------------------------------------------
# health and metadata


async def test_health(client: Any) -> None:
    assert await client.is_server_live()
    assert await client.is_server_ready()
    assert await client.is_model_ready("mixed")
    assert await client.is_model_ready("mixed", "1")


async def test_readiness_follows_the_core(client: Any, core: FakeCore) -> None:
    core.loaded.discard("text")
    assert not await client.is_server_ready()
    assert not await client.is_model_ready("text")
    assert await client.is_model_ready("mixed")


@pytest.mark.parametrize(("name", "version"), [("nope", ""), ("mixed", "9")])
async def test_model_ready_unknown_is_not_found(client: Any, name: str, version: str) -> None:
    with pytest.raises(InferenceServerException, match=f"model '{name}'") as error:
        await client.is_model_ready(name, version)
    assert error.value.status() == "StatusCode.NOT_FOUND"


async def test_server_metadata(client: Any) -> None:
    metadata = await client.get_server_metadata(as_json=True)
    assert metadata == {"name": "modelport", "version": "0.test", "extensions": ["binary_tensor_data", "statistics"]}


async def test_model_metadata(client: Any) -> None:
    metadata = await client.get_model_metadata("mixed", as_json=True)
    assert metadata == {
        "name": "mixed",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": ["-1", "3"]},
            {"name": "k", "datatype": "INT64", "shape": ["-1"]},
            {"name": "flag", "datatype": "BOOL", "shape": ["-1"]},
        ],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": ["-1", "3"]},
            {"name": "k_next", "datatype": "INT64", "shape": ["-1"]},
            {"name": "flipped", "datatype": "BOOL", "shape": ["-1"]},
        ],
    }
    versioned = await client.get_model_metadata("text", "1")
    assert list(versioned.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in versioned.inputs] == [("s", "BYTES", [-1])]


async def test_model_metadata_unknown_model(client: Any) -> None:
    with pytest.raises(InferenceServerException, match="model 'nope' is not in the repository") as error:
        await client.get_model_metadata("nope")
    assert error.value.status() == "StatusCode.NOT_FOUND"


async def test_unimplemented_rpc(client: Any) -> None:
    with pytest.raises(InferenceServerException, match="Method not found") as error:
        await client.get_model_config("mixed")
    assert error.value.status() == "StatusCode.UNIMPLEMENTED"


# -------------------------------------------------------------------------------------------------
# inference


@pytest.mark.parametrize("version", ["1", "2"])
async def test_infer_fp32_int64_bool(client: Any, version: str) -> None:
    feeds = mixed_feeds(batch=4)
    result = await client.infer("mixed", triton_inputs(feeds), model_version=version, request_id="req-7")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("mixed", version, "req-7")
    assert [o.name for o in response.outputs] == ["y", "k_next", "flipped"]
    assert [list(o.shape) for o in response.outputs] == [[4, 3], [4], [4]]
    assert_mixed(result, feeds, int(version))


async def test_infer_latest_version_without_id(client: Any) -> None:
    feeds = mixed_feeds()
    result = await client.infer("mixed", triton_inputs(feeds))
    response = result.get_response()
    assert (response.model_version, response.id) == ("2", "")
    assert_mixed(result, feeds, 2)


async def test_infer_inputs_are_views_of_the_request(client: Any, core: FakeCore) -> None:
    feeds = mixed_feeds()
    await client.infer("mixed", triton_inputs(feeds))
    x = core.requests[-1].inputs["x"]
    assert not x.flags.owndata
    assert not x.flags.writeable
    root: Any = x
    while isinstance(root, np.ndarray):
        root = root.base
    assert isinstance(root, memoryview)
    assert isinstance(root.obj, bytes)


async def test_infer_bytes(client: Any) -> None:
    text = np.array(["héllo".encode(), b"", b"w\x00rld", b"\xff\xfe"], dtype=object)
    result = await client.infer("text", triton_inputs({"s": text}))
    assert result.as_numpy("upper").tolist() == [e.upper() for e in text]
    length = result.as_numpy("length")
    assert length.dtype == np.int32
    np.testing.assert_array_equal(length, [6, 0, 5, 2])


async def test_requested_outputs_subset(client: Any, core: FakeCore) -> None:
    feeds = mixed_feeds()
    outputs = [triton.InferRequestedOutput("k_next"), triton.InferRequestedOutput("y")]
    result = await client.infer("mixed", triton_inputs(feeds), outputs=outputs)
    assert [o.name for o in result.get_response().outputs] == ["k_next", "y"]
    assert result.as_numpy("flipped") is None
    expected = expected_mixed(feeds, 2)
    np.testing.assert_array_equal(result.as_numpy("k_next"), expected["k_next"])
    np.testing.assert_allclose(result.as_numpy("y"), expected["y"], rtol=1e-6, atol=1e-6)
    requested = core.requests[-1].outputs
    assert requested is not None
    assert [(o.name, o.binary) for o in requested] == [("k_next", True), ("y", True)]


async def test_unknown_requested_output(client: Any) -> None:
    outputs = [triton.InferRequestedOutput("nope")]
    with pytest.raises(InferenceServerException, match="has no output named 'nope'") as error:
        await client.infer("mixed", triton_inputs(mixed_feeds()), outputs=outputs)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"


async def test_infer_with_the_sync_client(server: GrpcServer) -> None:
    feeds = mixed_feeds(batch=3, seed=5)

    def infer() -> Any:
        with triton_sync.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
            assert client.is_server_ready()
            return client.infer("mixed", triton_inputs(feeds, triton_sync), model_version="1")

    result = await anyio.to_thread.run_sync(infer)
    assert_mixed(result, feeds, 1)


async def test_concurrent_requests(client: Any, core: FakeCore) -> None:
    """16 requests in flight at once (the fake core holds each until all 16 have arrived)."""
    core.barrier = 16
    feeds = [mixed_feeds(batch=1 + i % 4, seed=i) for i in range(16)]
    results = await asyncio.gather(
        *(client.infer("mixed", triton_inputs(f), request_id=f"r{i}") for i, f in enumerate(feeds))
    )
    for i, (result, f) in enumerate(zip(results, feeds, strict=True)):
        assert result.get_response().id == f"r{i}"
        assert_mixed(result, f, 2)


async def test_client_cancel_cancels_the_core_call(channel: Any, core: FakeCore) -> None:
    """A call the client gives up on stops waiting in the core (the fake holds it until then)."""
    core.barrier = 2
    stub = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=service_pb2.ModelInferRequest.SerializeToString,
        response_deserializer=service_pb2.ModelInferResponse.FromString,
    )
    pending = stub(raw_request())
    await core.wait_for_arrival()
    assert pending.cancel()
    await core.wait_for_cancellation()
    assert (core.arrived, core.cancelled) == (1, 1)
    with pytest.raises(asyncio.CancelledError):
        await pending


async def test_expired_deadline(client: Any, core: FakeCore) -> None:
    core.barrier = 2
    with pytest.raises(InferenceServerException, match="Deadline Exceeded") as error:
        await client.infer("mixed", triton_inputs(mixed_feeds()), client_timeout=0.2)
    assert error.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    await core.wait_for_cancellation()
    assert core.requests[-1].parameters["timeout"] <= 1_000_000


async def test_typed_contents(channel: Any, core: FakeCore) -> None:
    request = service_pb2.ModelInferRequest(model_name="mixed", model_version="1")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 3]).contents.fp32_contents.extend([1.5, -2.0, 0.25])
    request.inputs.add(name="k", datatype="INT64", shape=[1]).contents.int64_contents.append(-(2**62))
    request.inputs.add(name="flag", datatype="BOOL", shape=[1]).contents.bool_contents.append(True)
    response = await call(channel, "ModelInfer", request)
    result = triton_sync.InferResult(response)
    np.testing.assert_allclose(result.as_numpy("y"), [[4.0, -3.0, 1.5]], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("k_next"), [-(2**62) + 1])
    np.testing.assert_array_equal(result.as_numpy("flipped"), [False])
    assert core.requests[-1].inputs["x"].dtype == np.float32


async def test_typed_contents_narrow_integers_and_bytes(channel: Any, core: FakeCore) -> None:
    """INT8 values travel in int_contents; BYTES in bytes_contents (checked on the decoded request)."""
    request = service_pb2.ModelInferRequest(model_name="text")
    request.inputs.add(name="s", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"ab", b"c"])
    result = triton_sync.InferResult(await call(channel, "ModelInfer", request))
    assert result.as_numpy("upper").tolist() == [b"AB", b"C"]

    core.fail_with = ProtocolError("stop after decoding")
    request = service_pb2.ModelInferRequest(model_name="mixed")
    request.inputs.add(name="q", datatype="INT8", shape=[3]).contents.int_contents.extend([-128, 0, 127])
    request.inputs.add(name="u", datatype="UINT16", shape=[1]).contents.uint_contents.append(65535)
    with pytest.raises(grpc.aio.AioRpcError, match="stop after decoding"):
        await call(channel, "ModelInfer", request)
    decoded = core.requests[-1].inputs
    assert decoded["q"].dtype == np.int8
    np.testing.assert_array_equal(decoded["q"], [-128, 0, 127])
    assert decoded["u"].dtype == np.uint16
    np.testing.assert_array_equal(decoded["u"], [65535])


Edit = Callable[[Any], None]


def with_contents(datatype: str, shape: list[int], field_name: str, values: list[Any]) -> Edit:
    """Replace the inputs by one input 'v' sent in typed contents."""

    def edit(request: Any) -> None:
        del request.raw_input_contents[:]
        del request.inputs[:]
        tensor = request.inputs.add(name="v", datatype=datatype, shape=shape)
        getattr(tensor.contents, field_name).extend(values)

    return edit


def with_first_input(key: str, value: Any) -> Edit:
    def edit(request: Any) -> None:
        if key == "shape":
            del request.inputs[0].shape[:]
            request.inputs[0].shape.extend(value)
        else:
            setattr(request.inputs[0], key, value)

    return edit


def with_raw(index: int, data: bytes) -> Edit:
    def edit(request: Any) -> None:
        request.raw_input_contents[index] = data

    return edit


def drop_last_raw(request: Any) -> None:
    del request.raw_input_contents[-1]


def drop_all_raw(request: Any) -> None:
    del request.raw_input_contents[:]


def duplicate_input(request: Any) -> None:
    request.inputs[1].name = "x"


def raw_and_contents(request: Any) -> None:
    request.inputs[0].contents.fp32_contents.extend([1, 2, 3])


def shared_memory(request: Any) -> None:
    request.inputs[0].parameters["shared_memory_region"].string_param = "r"


def classification(request: Any) -> None:
    request.outputs.add(name="y").parameters["classification"].int64_param = 3


def string_timeout(request: Any) -> None:
    request.parameters["timeout"].string_param = "soon"


def empty_parameter(request: Any) -> None:
    request.parameters["p"].Clear()


def output_twice(request: Any) -> None:
    request.outputs.add(name="y")
    request.outputs.add(name="y")


def no_model(request: Any) -> None:
    request.model_name = ""


MALFORMED = [
    pytest.param(
        with_raw(0, b"\x00" * 8),
        r"input 'x' is FP32 with shape \[1, 3\] \(3 elements, 12 bytes\), but its raw_input_contents has 8 bytes",
        id="raw size",
    ),
    pytest.param(drop_last_raw, "the request has 3 inputs but 2 raw_input_contents", id="raw count"),
    pytest.param(with_raw(2, b"\x02"), "input 'flag' is BOOL, but its binary data holds bytes other", id="bool"),
    pytest.param(duplicate_input, "input 'x' appears twice", id="duplicate"),
    pytest.param(raw_and_contents, "input 'x' has both 'contents' and raw_input_contents", id="both"),
    pytest.param(drop_all_raw, "input 'x' has no values", id="no values"),
    pytest.param(with_first_input("shape", [-1, 3]), r"input 'x' has shape \[-1, 3\]; every dimension", id="dim"),
    pytest.param(with_first_input("datatype", "FLOAT"), "unknown datatype 'FLOAT'", id="datatype"),
    pytest.param(with_first_input("name", ""), r"inputs\[0\] has no name", id="no name"),
    pytest.param(shared_memory, "shared_memory_region, which belongs to the shared memory extension", id="shm"),
    pytest.param(classification, "classification, which belongs to the classification extension", id="class"),
    pytest.param(string_timeout, "parameter timeout 'soon'; it must be a positive number", id="timeout"),
    pytest.param(empty_parameter, "parameter 'p' of the request has no value", id="empty parameter"),
    pytest.param(output_twice, "requested output 'y' is listed twice", id="output twice"),
    pytest.param(no_model, "the ModelInfer request names no model", id="no model"),
    pytest.param(
        with_contents("FP16", [1], "fp32_contents", [1.0]), "FP16, which has no InferTensorContents", id="fp16"
    ),
    pytest.param(
        with_contents("FP32", [2], "fp64_contents", [1.0, 2.0]),
        r"FP32, whose values belong in contents.fp32_contents, but contents.fp64_contents is set",
        id="contents field",
    ),
    pytest.param(
        with_contents("INT64", [2, 2], "int64_contents", [1, 2, 3]),
        r"shape \[2, 2\] \(4 elements\), but contents.int64_contents holds 3",
        id="contents count",
    ),
    pytest.param(
        with_contents("INT8", [2], "int_contents", [1, 200]),
        r"INT8, but its data holds 200, outside \[-128, 127\]",
        id="int8 range",
    ),
]


@pytest.mark.parametrize(("edit", "message"), MALFORMED)
async def test_malformed_requests(channel: Any, edit: Edit, message: str) -> None:
    request = raw_request()
    edit(request)
    with pytest.raises(grpc.aio.AioRpcError, match=message) as error:
        await call(channel, "ModelInfer", request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_truncated_bytes_element(channel: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="text")
    request.inputs.add(name="s", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x05\x00\x00\x00ab")
    with pytest.raises(grpc.aio.AioRpcError, match="BYTES element 0 declares 5 bytes, but only 2 remain") as error:
        await call(channel, "ModelInfer", request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -------------------------------------------------------------------------------------------------
# errors and limits


ERRORS = [
    (ModelNotFoundError("model 'x' is not in the repository"), "NOT_FOUND", "model 'x' is not in the repository"),
    (ModelNotReadyError("model 'x' is unloading"), "UNAVAILABLE", "model 'x' is unloading"),
    (ProtocolError("input 'x' is malformed"), "INVALID_ARGUMENT", "input 'x' is malformed"),
    (InputDtypeError("input 'x' has dtype float64"), "INVALID_ARGUMENT", "input 'x' has dtype float64"),
    (PayloadTooLargeError("request is 9 MiB, over 8 MiB", limit=8 << 20), "RESOURCE_EXHAUSTED", "over 8 MiB"),
    (
        ServerBusyError("model 'x' has 64 requests queued", retry_after=0.5),
        "UNAVAILABLE",
        r"64 requests queued — the model's request queue is full; retry after 0.5 s",
    ),
    (RequestTimeoutError("request timed out after 10 ms"), "DEADLINE_EXCEEDED", "timed out after 10 ms"),
    (BackendError("onnxruntime failed: bad alloc"), "INTERNAL", "onnxruntime failed: bad alloc"),
    (RuntimeError("boom"), "INTERNAL", "internal error: RuntimeError: boom"),
]


@pytest.mark.parametrize(("error", "status", "message"), ERRORS, ids=[type(e[0]).__name__ for e in ERRORS])
async def test_error_status_codes(
    client: Any, core: FakeCore, caplog: pytest.LogCaptureFixture, error: Exception, status: str, message: str
) -> None:
    core.fail_with = error
    with (
        caplog.at_level(logging.ERROR, logger="modelport.serve.grpc_service"),
        pytest.raises(InferenceServerException, match=message) as raised,
    ):
        await client.infer("mixed", triton_inputs(mixed_feeds()))
    assert raised.value.status() == f"StatusCode.{status}"
    logged = [r for r in caplog.records if r.name == "modelport.serve.grpc_service"]
    if status == "INTERNAL":
        assert len(logged) == 1
        assert logged[0].getMessage() == "gRPC ModelInfer failed"
        assert logged[0].exc_info is not None
        assert logged[0].exc_info[1] is error
    else:
        assert logged == []


async def test_busy_sends_retry_after(channel: Any, core: FakeCore) -> None:
    core.fail_with = ServerBusyError("model 'mixed' has 64 requests queued", retry_after=2.2)
    with pytest.raises(grpc.aio.AioRpcError, match="queue is full") as error:
        await call(channel, "ModelInfer", raw_request())
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ("retry-after", "3") in tuple(error.value.trailing_metadata())


async def test_unloaded_model_is_unavailable(client: Any, core: FakeCore) -> None:
    core.loaded.discard("mixed")
    with pytest.raises(InferenceServerException, match="model 'mixed' version 2 is not loaded") as error:
        await client.infer("mixed", triton_inputs(mixed_feeds()))
    assert error.value.status() == "StatusCode.UNAVAILABLE"


async def test_input_errors_from_the_core(client: Any) -> None:
    feeds = mixed_feeds()
    del feeds["flag"]
    with pytest.raises(InferenceServerException, match=r"takes inputs \['flag', 'k', 'x'\]") as error:
        await client.infer("mixed", triton_inputs(feeds))
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"


async def test_grpc_deadline_becomes_the_timeout(client: Any, core: FakeCore) -> None:
    feeds = mixed_feeds()
    await client.infer("mixed", triton_inputs(feeds))
    assert "timeout" not in core.requests[-1].parameters

    # gRPC may round a deadline up when it encodes it in the grpc-timeout header, hence the slack.
    await client.infer("mixed", triton_inputs(feeds), client_timeout=30)
    timeout = core.requests[-1].parameters["timeout"]
    assert isinstance(timeout, int)
    assert 0 < timeout <= 30_500_000

    await client.infer("mixed", triton_inputs(feeds), client_timeout=30, timeout=60_000_000)
    assert 0 < core.requests[-1].parameters["timeout"] <= 30_500_000

    await client.infer("mixed", triton_inputs(feeds), client_timeout=30, timeout=1_000)
    assert core.requests[-1].parameters["timeout"] == 1_000

    # A value the core refuses (it must be positive) reaches the core unchanged.
    await client.infer("mixed", triton_inputs(feeds), client_timeout=30, timeout=0)
    assert core.requests[-1].parameters["timeout"] == 0

    await client.infer("mixed", triton_inputs(feeds), timeout=2_500, parameters={"custom": "v", "n": 3})
    assert core.requests[-1].parameters == {"timeout": 2_500, "custom": "v", "n": 3}


async def test_message_size_limit(core: FakeCore) -> None:
    server = await start_grpc_server(core, "127.0.0.1", 0, max_message_bytes=64 << 10)
    try:
        async with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
            small = mixed_feeds(batch=100)
            assert_mixed(await client.infer("mixed", triton_inputs(small)), small, 2)
            large = mixed_feeds(batch=10_000)
            with pytest.raises(InferenceServerException, match="larger than max") as error:
                await client.infer("mixed", triton_inputs(large))
            assert error.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    finally:
        await server.stop(None)


async def test_port_in_use(core: FakeCore, server: GrpcServer) -> None:
    with pytest.raises(ConfigError, match=rf"cannot listen for gRPC on 127.0.0.1:{server.port}: the port is in use"):
        await start_grpc_server(core, "127.0.0.1", server.port, max_message_bytes=MAX_MESSAGE_BYTES)


@pytest.mark.parametrize("limit", [0, -1, True])
async def test_invalid_message_limit(core: FakeCore, limit: int) -> None:
    with pytest.raises(ConfigError, match=r"max_message_bytes is .*; it must be a positive number of bytes"):
        await start_grpc_server(core, "127.0.0.1", 0, max_message_bytes=limit)


# -------------------------------------------------------------------------------------------------
# statistics and repository


async def test_statistics(client: Any) -> None:
    for _ in range(2):
        await client.infer("mixed", triton_inputs(mixed_feeds()), model_version="1")
    stats = await client.get_inference_statistics("mixed", "1")
    assert len(stats.model_stats) == 1
    model = stats.model_stats[0]
    assert (model.name, model.version, model.inference_count, model.execution_count) == ("mixed", "1", 2, 2)
    assert model.last_inference == 1_700_000_000_000
    inference = model.inference_stats
    assert (inference.success.count, inference.success.ns) == (2, 2000)
    assert (inference.fail.count, inference.queue.count, inference.compute_infer.ns) == (0, 2, 2000)
    assert [(b.batch_size, b.compute_infer.count) for b in model.batch_stats] == [(1, 2)]

    every = await client.get_inference_statistics()
    assert [(m.name, m.version, m.inference_count) for m in every.model_stats] == [
        ("mixed", "1", 2),
        ("mixed", "2", 0),
        ("text", "1", 0),
    ]
    as_json = await client.get_inference_statistics("text", as_json=True)
    assert as_json["model_stats"][0]["name"] == "text"


async def test_statistics_errors(client: Any, channel: Any) -> None:
    with pytest.raises(InferenceServerException, match="model 'nope' is not in the repository") as error:
        await client.get_inference_statistics("nope")
    assert error.value.status() == "StatusCode.NOT_FOUND"
    request = service_pb2.ModelStatisticsRequest(version="1")
    with pytest.raises(grpc.aio.AioRpcError, match="names version '1' but no model") as raw_error:
        await call(channel, "ModelStatistics", request)
    assert raw_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_repository_index_load_unload(client: Any, core: FakeCore) -> None:
    index = await client.get_model_repository_index(as_json=True)
    assert index["models"] == [
        {"name": "mixed", "version": "1", "state": "READY"},
        {"name": "mixed", "version": "2", "state": "READY"},
        {"name": "text", "version": "1", "state": "READY"},
    ]
    await client.unload_model("text")
    assert not await client.is_model_ready("text")
    index = await client.get_model_repository_index()
    assert [(m.name, m.state, m.reason) for m in index.models][-1] == ("text", "UNAVAILABLE", "unloaded")
    with pytest.raises(InferenceServerException, match="model 'text' version 1 is not loaded") as error:
        await client.infer("text", triton_inputs({"s": np.array([b"a"], dtype=object)}))
    assert error.value.status() == "StatusCode.UNAVAILABLE"
    await client.load_model("text")
    assert await client.is_model_ready("text")
    result = await client.infer("text", triton_inputs({"s": np.array([b"a"], dtype=object)}))
    assert result.as_numpy("upper").tolist() == [b"A"]


async def test_repository_index_ready_only(channel: Any, core: FakeCore) -> None:
    core.loaded.discard("mixed")
    response = await call(channel, "RepositoryIndex", service_pb2.RepositoryIndexRequest(ready=True))
    assert [(m.name, m.version, m.state) for m in response.models] == [("text", "1", "READY")]


async def test_unload_dependents_is_accepted(client: Any, core: FakeCore) -> None:
    await client.unload_model("mixed", unload_dependents=True)
    assert "mixed" not in core.loaded


async def test_repository_errors(client: Any, channel: Any) -> None:
    with pytest.raises(InferenceServerException, match="model 'nope' is not in the repository") as error:
        await client.load_model("nope")
    assert error.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match="parameter 'config', which this server does not") as error:
        await client.load_model("mixed", config='{"max_batch_size": 4}')
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    request = service_pb2.RepositoryModelLoadRequest(repository_name="other", model_name="mixed")
    with pytest.raises(grpc.aio.AioRpcError, match="names repository 'other', but this server serves one"):
        await call(channel, "RepositoryModelLoad", request)
    request = service_pb2.RepositoryModelUnloadRequest()
    with pytest.raises(grpc.aio.AioRpcError, match="the RepositoryModelUnload request names no model"):
        await call(channel, "RepositoryModelUnload", request)
