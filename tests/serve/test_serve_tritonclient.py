"""The server as a real process on a TCP port, driven by the stock Triton HTTP client."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

Arrays = dict[str, np.ndarray[Any, Any]]
Reference = Callable[[Path, Arrays], Arrays]

_SERVE = "import sys; from modelport.serve import run_server; " + (
    "run_server(sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]), grpc_port=int(sys.argv[3]), log_level='info')"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the server was not ready after 30 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(repo_dir: Path, tmp_path_factory: pytest.TempPathFactory, grpc_port: int) -> Iterator[str]:
    """``host:port`` (HTTP) of a server process serving ``repo_dir``, also on gRPC at ``grpc_port``;
    stopped with SIGTERM afterwards."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(repo_dir), str(port), str(grpc_port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process, log)
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"the server did not stop within 15 s of SIGTERM:\n{log.read_text()}")
    output = log.read_text()
    # uvicorn re-raises the signal it handled once it has shut down cleanly.
    assert code in (0, -signal.SIGTERM), output
    assert "Application shutdown complete." in output, output
    assert "Traceback" not in output, output


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server, connection_timeout=10, network_timeout=10)
    try:
        yield client
    finally:
        client.close()


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mixed")
    assert client.is_model_ready("mixed", "1")
    assert not client.is_model_ready("nope")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("mixed", "2")
    assert metadata["platform"] == "onnxruntime_onnx"
    assert [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]] == [
        ("x", "FP32", [-1, 3]),
        ("k", "INT64", [-1]),
    ]


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
def test_inference_matches_onnxruntime(
    client: triton.InferenceServerClient,
    repo_dir: Path,
    reference: Reference,
    feeds: Arrays,
    binary_in: bool,
    binary_out: bool,
) -> None:
    inputs = []
    for name, datatype in (("x", "FP32"), ("k", "INT64")):
        tensor = triton.InferInput(name, list(feeds[name].shape), datatype)
        tensor.set_data_from_numpy(feeds[name], binary_data=binary_in)
        inputs.append(tensor)
    names = ["y", "k_next", "positive"]
    outputs = [triton.InferRequestedOutput(n, binary_data=binary_out) for n in names]
    result = client.infer("mixed", inputs, model_version="1", outputs=outputs, request_id="t-1")
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "mixed",
        "1",
        "t-1",
    )
    expected = reference(repo_dir / "mixed" / "1" / "model.onnx", feeds)
    for name in names:
        got = result.as_numpy(name)
        assert got is not None and got.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got, expected[name])


def test_all_outputs_by_default_and_strings(
    client: triton.InferenceServerClient, repo_dir: Path, reference: Reference, feeds: Arrays
) -> None:
    tensors = []
    for name, datatype in (("x", "FP32"), ("k", "INT64")):
        tensor = triton.InferInput(name, list(feeds[name].shape), datatype)
        tensor.set_data_from_numpy(feeds[name])
        tensors.append(tensor)
    result = client.infer("mixed", tensors)  # no outputs named: all of them, as binary data
    expected = reference(repo_dir / "mixed" / "2" / "model.onnx", feeds)
    for name, value in expected.items():
        np.testing.assert_array_equal(result.as_numpy(name), value)

    text = np.array([b"triton", "héllo".encode()], dtype=np.object_)
    for binary in (True, False):
        strings = triton.InferInput("s", [2], "BYTES")
        strings.set_data_from_numpy(text, binary_data=binary)
        output = triton.InferRequestedOutput("t", binary_data=binary)
        got = client.infer("text", [strings], outputs=[output]).as_numpy("t")
        assert got is not None
        assert [v if isinstance(v, bytes) else v.encode() for v in got.tolist()] == text.tolist()


def test_errors_reach_the_client(client: triton.InferenceServerClient, feeds: Arrays) -> None:
    tensor = triton.InferInput("x", list(feeds["x"].shape), "FP32")
    tensor.set_data_from_numpy(feeds["x"])
    with pytest.raises(InferenceServerException, match=r"model 'nope' is not in repository"):
        client.infer("nope", [tensor])
    with pytest.raises(InferenceServerException, match=r"needs input 'k', which was not given"):
        client.infer("mixed", [tensor])


# the same over gRPC ------------------------------------------------------------------------------


@pytest.fixture
def grpc_client(server: str, grpc_port: int) -> Iterator[triton_grpc.InferenceServerClient]:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        yield client
    finally:
        client.close()


def test_grpc_health_and_metadata(grpc_client: triton_grpc.InferenceServerClient) -> None:
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("mixed", "1")
    metadata = grpc_client.get_model_metadata("mixed", "2", as_json=True)
    assert metadata["platform"] == "onnxruntime_onnx"
    assert [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]] == [
        ("x", "FP32", ["-1", "3"]),
        ("k", "INT64", ["-1"]),
    ]


def test_grpc_inference_matches_onnxruntime(
    grpc_client: triton_grpc.InferenceServerClient, repo_dir: Path, reference: Reference, feeds: Arrays
) -> None:
    inputs = []
    for name, datatype in (("x", "FP32"), ("k", "INT64")):
        tensor = triton_grpc.InferInput(name, list(feeds[name].shape), datatype)
        tensor.set_data_from_numpy(feeds[name])
        inputs.append(tensor)
    names = ["y", "k_next", "positive"]
    outputs = [triton_grpc.InferRequestedOutput(n) for n in names]
    result = grpc_client.infer("mixed", inputs, model_version="1", outputs=outputs, request_id="g-1")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("mixed", "1", "g-1")
    expected = reference(repo_dir / "mixed" / "1" / "model.onnx", feeds)
    for name in names:
        got = result.as_numpy(name)
        assert got is not None and got.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got, expected[name])
    text = np.array([b"triton", "héllo".encode()], dtype=np.object_)
    strings = triton_grpc.InferInput("s", [2], "BYTES")
    strings.set_data_from_numpy(text)
    assert grpc_client.infer("text", [strings]).as_numpy("t").tolist() == text.tolist()


def test_grpc_errors_and_statistics(grpc_client: triton_grpc.InferenceServerClient, feeds: Arrays) -> None:
    tensor = triton_grpc.InferInput("x", list(feeds["x"].shape), "FP32")
    tensor.set_data_from_numpy(feeds["x"])
    with pytest.raises(InferenceServerException, match=r"model 'nope' is not in repository"):
        grpc_client.infer("nope", [tensor])
    with pytest.raises(InferenceServerException, match=r"needs input 'k', which was not given"):
        grpc_client.infer("mixed", [tensor])
    k = triton_grpc.InferInput("k", list(feeds["k"].shape), "INT64")
    k.set_data_from_numpy(feeds["k"])
    grpc_client.infer("mixed", [tensor, k], model_version="1")
    stats = grpc_client.get_inference_statistics("mixed", "1", as_json=True)["model_stats"][0]
    assert stats["name"] == "mixed" and int(stats["inference_count"]) >= 3
