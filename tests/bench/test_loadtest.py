"""loadtest against the real modelport server (a process on TCP ports) and a scripted fake server.

No timing assertions: every check is on counts (requests sent, answered, counted by the server),
on the numbers the server itself reports, or on pure functions.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import math
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.bench import loadclient
from modelport.bench.loadtest import (
    LevelResult,
    LoadtestError,
    LoadtestResult,
    ServerBreakdown,
    _stable,
    loadtest,
    loadtest_async,
    parse_concurrency_range,
    parse_rates,
    parse_shapes,
)
from modelport.cli import loadtest as loadtest_cli
from modelport.errors import ConfigError, ModelNotFoundError
from modelport.ir.serde import save
from modelport.serve.protocol import encode_response, parse_request

Arrays = Mapping[str, np.ndarray[Any, Any]]

# Quick levels: three windows always agree within 100 %, so each level runs exactly three windows.
QUICK: dict[str, Any] = {"window_s": 0.1, "max_windows": 3, "stability": 1.0}

_SERVE = "import sys; from modelport.serve import ServerOptions, run_server; " + (
    "run_server(sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]), grpc_port=int(sys.argv[3]), "
    "options=ServerOptions(drain_delay=0))"
)


def affine_model() -> ir.Model:
    """y = 2x + 1 and k_next = k + 1 over a dynamic batch."""
    return ir.from_onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        affine (float[batch, 4] x, int64[batch] k) => (float[batch, 4] y, int64[batch] k_next)
        {
            two = Constant<value = float {2.0}>()
            one = Constant<value = float {1.0}>()
            doubled = Mul(x, two)
            y = Add(doubled, one)
            step = Constant<value = int64 {1}>()
            k_next = Add(k, step)
        }
        """
    )


def seq_model() -> ir.Model:
    """A variable batch and a variable length: y = -x."""
    return ir.from_onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        seq (float[batch, n] x) => (float[batch, n] y)
        {
            y = Neg(x)
        }
        """
    )


def check_affine(inputs: Arrays, outputs: Arrays) -> None:
    np.testing.assert_allclose(outputs["y"], inputs["x"] * 2 + 1, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(outputs["k_next"], inputs["k"] + 1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(HTTP URL, gRPC address) of a modelport server process serving affine and seq."""
    repo = tmp_path_factory.mktemp("repo")
    for name, model in (("affine", affine_model()), ("seq", seq_model())):
        save(model, repo / name / "1" / "model.onnx")
        (repo / name / "config.yaml").write_text("max_batch_size: 8\n", encoding="utf-8")
    port, grpc_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(repo), str(port), str(grpc_port)], stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
            try:
                urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the server was not ready after 30 s:\n{log.read_text()}")
                time.sleep(0.05)
        yield url, f"127.0.0.1:{grpc_port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "Traceback" not in log.read_text(), log.read_text()


def target(server: tuple[str, str], protocol: str) -> str:
    return server[1] if protocol == "grpc" else server[0]


# option parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:16:x2", [1, 2, 4, 8, 16]),
        ("1:8:2", [1, 3, 5, 7]),
        ("4", [4]),
        ("1:4", [1, 2, 3, 4]),
        ("2:20:x3", [2, 6, 18]),
    ],
)
def test_parse_concurrency_range(text: str, expected: list[int]) -> None:
    assert parse_concurrency_range(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "not of the form"),
        ("1:2:3:4", "not of the form"),
        ("a:4", "whole numbers"),
        ("0:4", "need 1 <= START <= END"),
        ("8:4", "need 1 <= START <= END"),
        ("1:8:x1", "never gets to the end"),
        ("1:8:0", "never gets to the end"),
        ("1:8:y", "give a number, or xN"),
        ("1:8:0.5", "whole numbers of clients"),
        ("1:100000", "more than 1000 levels"),
    ],
)
def test_parse_concurrency_range_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_concurrency_range(text)


def test_parse_rates() -> None:
    assert parse_rates("50,100,200") == [50.0, 100.0, 200.0]
    assert parse_rates("50:200:x2") == [50.0, 100.0, 200.0]
    assert parse_rates("50:200:50") == [50.0, 100.0, 150.0, 200.0]
    assert parse_rates("0.5") == [0.5]
    with pytest.raises(ConfigError, match="must be numbers of requests/s"):
        parse_rates("50,fast")
    with pytest.raises(ConfigError, match="positive number"):
        parse_rates("0,10")
    with pytest.raises(ConfigError, match="below START"):
        parse_rates("200:50")


def test_parse_shapes() -> None:
    assert parse_shapes(["x=1,3,224,224", "mask=1,128"]) == {"x": (1, 3, 224, 224), "mask": (1, 128)}
    for bad in ("x", "x=", "=1,2", "x=1,a", "x=0,3"):
        with pytest.raises(ConfigError, match="not of the form NAME=D0,D1"):
            parse_shapes([bad])
    with pytest.raises(ConfigError, match="twice"):
        parse_shapes(["x=1", "x=2"])


# pure logic -------------------------------------------------------------------------------------


def test_stability_needs_three_agreeing_windows() -> None:
    assert _stable([100, 130, 101, 99, 100], 0.1)
    assert not _stable([100, 130, 101], 0.1)  # 130 is 18 % over the mean of the three
    assert not _stable([100, 100], 0.1)  # fewer than three windows
    assert _stable([90, 100, 110], 0.1)  # each within 10 % of the mean 100
    assert not _stable([89, 100, 111], 0.1)
    assert _stable([0, 0, 0], 0.1)


def _stats(success: int, queue_ns: int, infer_ns: int, batches: dict[int, int]) -> dict[str, Any]:
    def duration(count: int, ns: int) -> dict[str, int]:
        return {"count": count, "ns": ns}

    return {
        "name": "m",
        "version": "1",
        "inference_stats": {
            "success": duration(success, 0),
            "queue": duration(success, queue_ns),
            "compute_input": duration(success, 2_000 * success),
            "compute_infer": duration(success, infer_ns),
            "compute_output": duration(success, 1_000 * success),
        },
        "batch_stats": [{"batch_size": size, "compute_infer": duration(count, 0)} for size, count in batches.items()],
    }


def test_server_breakdown_is_the_delta_of_the_counters() -> None:
    before = {"model_stats": [_stats(10, 50_000, 900_000, {1: 10}), _stats(5, 0, 0, {})]}
    after = {"model_stats": [_stats(30, 90_000, 2_900_000, {1: 14, 4: 4}), _stats(15, 10_000, 100_000, {2: 5})]}
    breakdown = ServerBreakdown.between(before, after)
    # versions are summed: 20 + 10 more successes; queue (40 000 + 10 000) ns over 30 requests
    assert breakdown.requests == 30
    assert breakdown.queue_us == pytest.approx(50_000 / 30 / 1e3, rel=1e-12)
    assert breakdown.compute_infer_us == pytest.approx(2_100_000 / 30 / 1e3, rel=1e-12)
    assert breakdown.compute_input_us == pytest.approx(2.0, rel=1e-12)
    assert breakdown.compute_output_us == pytest.approx(1.0, rel=1e-12)
    assert breakdown.batch_sizes == {1: 4, 2: 5, 4: 4}
    with pytest.raises(LoadtestError, match="counters went down"):
        ServerBreakdown.between(after, before)
    with pytest.raises(LoadtestError, match="not in Triton's format"):
        ServerBreakdown.between({"model_stats": [{"batch_stats": [{}]}]}, after)


# the real server --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "http-json", "grpc"])
def test_closed_loop_checks_every_response(server: tuple[str, str], protocol: str) -> None:
    checked: list[int] = []

    def check(inputs: Arrays, outputs: Arrays) -> None:
        check_affine(inputs, outputs)
        checked.append(len(outputs["y"]))

    result = loadtest(
        target(server, protocol), "affine", protocol=protocol, concurrency=[1, 4], batch=2, check=check,  # type: ignore[arg-type]
        check_every=1, **QUICK,
    )  # fmt: skip
    assert result.protocol == protocol
    assert result.batch == 2
    assert [level.value for level in result.levels] == [1, 4]
    # Every response (the probe's too) was decoded and checked, and each carried 2 rows.
    assert len(checked) == 1 + sum(level.sent for level in result.levels)
    assert set(checked) == {2}
    for level in result.levels:
        assert level.errors == {}
        assert level.stable
        assert len(level.windows) == 3
        assert level.requests > 0
        assert level.throughput == pytest.approx(level.requests * 2 / level.seconds, rel=1e-9)
        assert level.p50_ms <= level.p90_ms <= level.p95_ms <= level.p99_ms
        assert level.send_ms >= 0 and level.wait_ms > 0 and level.receive_ms >= 0
        assert level.server is not None
        # Each request ran alone on the server (no dynamic batching): one execution of 2 rows each
        # (a reading may fall between a batch's end and its request's, so the counts may differ by those in flight).
        assert set(level.server.batch_sizes) == {2}
        assert abs(level.server.batch_sizes[2] - level.server.requests) <= int(level.value)
        # The server counted the requests the client saw, give or take those in flight at the two edges.
        assert abs(level.server.requests - level.requests) <= 2 * int(level.value)
        assert level.server.compute_infer_us > 0
    assert result.warnings == []


def test_server_breakdown_matches_the_servers_own_statistics(
    server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The breakdown is the delta of the documents the server returned at the edges of the windows."""
    documents: list[dict[str, Any]] = []
    original = loadclient.HttpTransport.statistics

    async def recording(self: loadclient.HttpTransport) -> dict[str, Any] | None:
        document = await original(self)
        assert document is not None
        documents.append(document)
        return document

    monkeypatch.setattr(loadclient.HttpTransport, "statistics", recording)
    before = get_json(f"{server[0]}/v2/models/affine/stats")
    result = loadtest(server[0], "affine", concurrency=[2], **QUICK)
    after = get_json(f"{server[0]}/v2/models/affine/stats")
    # One reading to see that the endpoint exists, then the level's edges: start and three windows.
    assert len(documents) == 5
    level = result.levels[0]
    assert level.server is not None
    first = documents[1]["model_stats"][0]["inference_stats"]
    last = documents[4]["model_stats"][0]["inference_stats"]

    def per_request_us(name: str) -> float:
        count = last[name]["count"] - first[name]["count"]
        return float((last[name]["ns"] - first[name]["ns"]) / count / 1e3)

    assert level.server.requests == last["success"]["count"] - first["success"]["count"]
    for name in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert getattr(level.server, f"{name}_us") == pytest.approx(per_request_us(name), rel=1e-12)
    # The readings lie between the test's own, and the server answered every request sent (plus the probe).
    success = [d["model_stats"][0]["inference_stats"]["success"]["count"] for d in (before, *documents, after)]
    assert success == sorted(success)
    assert success[-1] - success[0] == 1 + level.sent


def test_open_loop_sends_on_schedule(server: tuple[str, str]) -> None:
    result = loadtest(server[0], "affine", rates=[200], window_s=0.2, max_windows=3, stability=1.0, check_every=1)
    level = result.levels[0]
    assert level.mode == "rate" and level.value == 200
    assert level.errors == {}
    # Requests leave on the schedule whatever the answers: about rate x the level's length.
    assert level.sent == pytest.approx(200 * level.seconds, rel=0.15, abs=3)
    assert level.requests <= level.sent


def test_open_loop_stops_when_the_server_cannot_keep_up(server: tuple[str, str]) -> None:
    # A million requests/s are all due at once; two may be outstanding, so the third finds them in flight.
    result = loadtest(server[0], "affine", rates=[1e6, 2e6], max_outstanding=2, **QUICK)
    [level] = result.levels
    assert level.overloaded
    assert level.sent == 2
    assert not level.stable
    assert any("cannot keep up" in w and "2 requests were still outstanding" in w for w in result.warnings)
    assert any("level(s) 2e+06 not measured" in w for w in result.warnings)


def test_max_requests_bounds_the_run(server: tuple[str, str]) -> None:
    result = loadtest(server[0], "affine", concurrency=[3, 6], max_requests=30, window_s=10.0, max_windows=3)
    [level] = result.levels
    assert level.sent == 30
    # The budget ended the only window once the last answer was in: every request is accounted for.
    assert len(level.windows) == 1
    assert level.requests + sum(level.errors.values()) == 30
    assert any("max_requests reached: concurrency level(s) 6 not measured" in w for w in result.warnings)
    assert any("concurrency 3: max_requests ended the level after 1 window(s)" in w for w in result.warnings)


def test_max_seconds_bounds_the_run(server: tuple[str, str]) -> None:
    result = loadtest(server[0], "affine", concurrency=[1, 2], max_seconds=0.25, window_s=0.1, stability=1e-9)
    assert [level.value for level in result.levels] == [1]
    assert not result.levels[0].stable
    assert any("concurrency 1: max_seconds ended the level after" in w for w in result.warnings)
    assert any("max_seconds reached: concurrency level(s) 2 not measured" in w for w in result.warnings)


def test_zero_inputs_and_batch_axis(server: tuple[str, str]) -> None:
    seen: list[tuple[int, ...]] = []

    def check(inputs: Arrays, outputs: Arrays) -> None:
        assert not inputs["x"].any() and not inputs["k"].any()
        np.testing.assert_array_equal(outputs["y"], np.ones((5, 4), np.float32))
        seen.append(outputs["y"].shape)

    result = loadtest(server[0], "affine", inputs="zeros", batch=5, check=check, max_requests=5, max_windows=1)
    assert result.batch == 5
    assert seen and set(seen) == {(5, 4)}


def test_variable_dimensions_need_a_shape(server: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"input 'x' has variable dimension\(s\) at axes \[1\].*--shape x="):
        loadtest(server[0], "seq", max_requests=1)

    shapes: list[tuple[int, ...]] = []

    def check(inputs: Arrays, outputs: Arrays) -> None:
        np.testing.assert_array_equal(outputs["y"], -inputs["x"])
        shapes.append(outputs["y"].shape)

    # The shape without the batch axis (perf_analyzer's way), or with it.
    for given in ([7], [3, 7]):
        loadtest(server[1], "seq", protocol="grpc", batch=3, shapes={"x": given}, check=check, max_requests=3)
    assert set(shapes) == {(3, 7)}
    with pytest.raises(ConfigError, match="gives 2 rows on the batch axis, but the batch is 3"):
        loadtest(server[0], "seq", batch=3, shapes={"x": [2, 7]})
    with pytest.raises(ConfigError, match="has 3 dimensions, but input 'x' has shape"):
        loadtest(server[0], "seq", shapes={"x": [1, 2, 3]})
    with pytest.raises(ConfigError, match="names 'y', which the model does not have"):
        loadtest(server[0], "seq", shapes={"y": [1, 2]})
    with pytest.raises(ConfigError, match=r"axis 1 is 4 — only the -1 dimensions"):
        loadtest(server[0], "affine", shapes={"x": [1, 5]})


def test_inputs_from_files(server: tuple[str, str], tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    k = np.array([5, 6, 7], dtype=np.int64)
    np.savez(tmp_path / "feeds.npz", x=x, k=k)
    seen: list[bool] = []

    def check(inputs: Arrays, outputs: Arrays) -> None:
        np.testing.assert_array_equal(inputs["x"], x)
        check_affine(inputs, outputs)
        seen.append(True)

    result = loadtest(server[0], "affine", inputs=tmp_path / "feeds.npz", check=check, check_every=1, max_requests=4)
    assert result.batch == 3  # the file decides
    assert len(seen) == 5  # the probe and the four requests

    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ConfigError, match="holds one array, but the model has 2 inputs"):
        loadtest(server[0], "affine", inputs=tmp_path / "x.npy")
    np.savez(tmp_path / "wrong.npz", x=x.astype(np.float64), k=k)
    with pytest.raises(ConfigError, match=r"dtype float64, but the model expects FP32 — save it with arr.astype"):
        loadtest(server[0], "affine", inputs=tmp_path / "wrong.npz")
    np.savez(tmp_path / "missing.npz", x=x)
    with pytest.raises(ConfigError, match=r"missing \['k'\]"):
        loadtest(server[0], "affine", inputs=tmp_path / "missing.npz")
    with pytest.raises(ConfigError, match="carry a batch of 3, but batch 2"):
        loadtest(server[0], "affine", inputs=tmp_path / "feeds.npz", batch=2)
    with pytest.raises(ConfigError, match="does not exist"):
        loadtest(server[0], "affine", inputs=tmp_path / "nothing.npz")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unknown_model_fails_before_measuring(server: tuple[str, str], protocol: str) -> None:
    with pytest.raises(ModelNotFoundError, match="has no model 'nope'"):
        loadtest(target(server, protocol), "nope", protocol=protocol)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unreachable_server(protocol: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(LoadtestError, match=r"(cannot reach|failed with UNAVAILABLE).* running"):
        loadtest(address, "affine", protocol=protocol, timeout_s=5)  # type: ignore[arg-type]


def test_a_request_the_server_refuses_fails_before_measuring(server: tuple[str, str]) -> None:
    with pytest.raises(LoadtestError, match=r"failed with 400 \(.*max_batch_size is 8"):
        loadtest(server[0], "affine", batch=9)
    with pytest.raises(LoadtestError, match=r"failed with INVALID_ARGUMENT \(.*max_batch_size is 8"):
        loadtest(server[1], "affine", protocol="grpc", batch=9)


def test_wrong_answers_are_counted(server: tuple[str, str]) -> None:
    def always_wrong(inputs: Arrays, outputs: Arrays) -> None:
        raise AssertionError("y is off")

    with pytest.raises(
        LoadtestError, match="first response of model 'affine' failed its check: AssertionError: y is off"
    ):
        loadtest(server[0], "affine", check=always_wrong)

    calls = 0

    def wrong_after_probe(inputs: Arrays, outputs: Arrays) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise AssertionError("y is off")

    result = loadtest(
        server[0], "affine", check=wrong_after_probe, check_every=1, max_requests=10, max_windows=1, window_s=10.0
    )
    [level] = result.levels
    assert level.errors == {"check": 10}
    assert level.requests == 0
    assert math.isnan(level.p50_ms)
    assert any("10 response(s) failed the check; first: AssertionError: y is off" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"concurrency": [1], "rates": [10.0]}, "not both"),
        ({"concurrency": [0]}, "whole numbers >= 1"),
        ({"rates": [-1.0]}, "positive numbers of requests/s"),
        ({"batch": 0}, "batch must be a whole number >= 1"),
        ({"window_s": 0.0}, "window_s must be a positive number"),
        ({"max_requests": 0}, "max_requests must be a whole number >= 1"),
        ({"protocol": "udp"}, "unknown protocol 'udp'"),
        ({"inputs": "ones"}, "must be 'random', 'zeros' or the Path"),
    ],
)
def test_bad_options(server: tuple[str, str], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        loadtest(server[0], "affine", **kwargs)


@pytest.mark.parametrize(
    ("url", "protocol", "match"),
    [
        ("ftp://host:1", "http", "scheme 'ftp'"),
        ("http://:80", "http", "names no host"),
        ("http://h:1/?a=b", "http", "query or fragment"),
        ("http://h:99999", "http", "invalid port"),
        ("grpc://h:1/path", "grpc", "not a gRPC address"),
    ],
)
def test_bad_urls(url: str, protocol: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        loadtest(url, "m", protocol=protocol)  # type: ignore[arg-type]


# a server that is not modelport -----------------------------------------------------------------


class _FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    infers = 0  # of model echo
    lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that gave up on a slow answer closed its connection: nothing to report


class _FakeKServe(BaseHTTPRequestHandler):
    """A KServe v2 server without Triton's statistics: model echo answers every third inference with 429,
    model slow answers after 0.3 s."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes
    server: _FakeServer

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v2/models/slow/stats":  # not Triton's format
            self._send(200, b'{"model_stats": [{"inference_stats": []}]}', {"Content-Type": "application/json"})
        elif self.path in ("/v2/models/echo", "/v2/models/slow"):
            tensor = {"name": "x", "datatype": "FP32", "shape": [-1, 2]}
            doc = {"name": self.path.rsplit("/", 1)[1], "inputs": [tensor], "outputs": [{**tensor, "name": "y"}]}
            self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})
        else:
            self._send(404, b'{"error": "not found"}', {"Content-Type": "application/json"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = parse_request(body, self.headers.get("Inference-Header-Content-Length"))
        if self.path.startswith("/v2/models/slow/"):
            time.sleep(0.3)
            busy = False
        else:
            with self.server.lock:
                self.server.infers += 1
                busy = self.server.infers % 3 == 0
        if busy:
            self._send(429, b'{"error": "queue full"}', {"Content-Type": "application/json"})
            return
        encoded = encode_response({"y": request.inputs["x"]}, model_name="echo", binary=["y"])
        self._send(200, encoded.body, encoded.headers)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def fake_server() -> Iterator[str]:
    httpd = _FakeServer(("127.0.0.1", 0), _FakeKServe)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_any_kserve_server_errors_by_status_and_no_statistics(fake_server: str) -> None:
    def check(inputs: Arrays, outputs: Arrays) -> None:
        np.testing.assert_array_equal(outputs["y"], inputs["x"])

    result = loadtest(fake_server, "echo", concurrency=[1], max_requests=30, window_s=10.0, check=check, check_every=1)
    [level] = result.levels
    # The probe was inference 1; of inferences 2..31 the ten multiples of 3 got 429.
    assert level.errors == {"429": 10}
    assert level.requests == 20
    assert level.server is None
    assert [w for w in result.warnings if "statistics" in w] == [
        f"the server at {fake_server} has no statistics endpoint, so levels have no server breakdown"
    ]


def test_a_request_over_its_timeout(fake_server: str) -> None:
    with pytest.raises(LoadtestError, match="request to model 'slow' failed with timeout"):
        loadtest(fake_server, "slow", timeout_s=0.05)


def test_unusable_statistics_are_skipped(fake_server: str) -> None:
    result = loadtest(fake_server, "slow", max_requests=1, window_s=10.0)
    assert result.levels[0].server is None
    assert result.levels[0].requests == 1
    warning, *others = result.warnings
    assert "statistics of the server at" in warning and "are unusable" in warning
    assert "not in Triton's format" in warning
    assert others == [
        f"concurrency 1: max_requests ended the level after 1 window(s) ({result.levels[0].windows[0]:.1f} infer/s), "
        "before three windows could agree — its figures are from what was measured"
    ]


@pytest.fixture
def fake_grpc_server() -> Iterator[str]:
    """A KServe v2 gRPC server with metadata and inference only; every third inference is UNAVAILABLE."""
    import grpc

    from modelport.serve import kserve_pb as pb

    infers = 0

    def metadata(request: Any, context: Any) -> Any:
        tensor = {"datatype": "INT32", "shape": [-1]}
        return pb.ModelMetadataResponse(
            name=request.name, inputs=[{"name": "x", **tensor}], outputs=[{"name": "y", **tensor}]
        )

    def infer(request: Any, context: Any) -> Any:
        nonlocal infers
        infers += 1
        if infers % 3 == 0:
            context.abort(grpc.StatusCode.UNAVAILABLE, "busy")
        response = pb.ModelInferResponse(model_name=request.model_name)
        response.outputs.add(name="y", datatype="INT32", shape=request.inputs[0].shape)
        response.raw_output_contents.append(request.raw_input_contents[0])
        return response

    rpcs = {
        "ModelMetadata": (metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ModelInfer": (infer, pb.ModelInferRequest, pb.ModelInferResponse),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=request.FromString, response_serializer=response.SerializeToString
        )
        for name, (method, request, response) in rpcs.items()
    }
    server = grpc.server(ThreadPoolExecutor(max_workers=1))  # one worker: the count of calls has no race
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(pb.SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"grpc://127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_grpc_server_without_statistics(fake_grpc_server: str) -> None:
    def check(inputs: Arrays, outputs: Arrays) -> None:
        np.testing.assert_array_equal(outputs["y"], inputs["x"])

    result = loadtest(
        fake_grpc_server, "echo", protocol="grpc", batch=3, max_requests=30, window_s=10.0, check=check, check_every=1
    )
    [level] = result.levels
    assert level.errors == {"UNAVAILABLE": 10}
    assert level.requests == 20
    assert level.server is None
    assert sum("no statistics endpoint" in w for w in result.warnings) == 1


def test_loadtest_async_inside_an_event_loop(server: tuple[str, str]) -> None:
    async def main() -> LoadtestResult:
        with pytest.raises(ConfigError, match=r"inside a running event loop — await loadtest_async"):
            loadtest(server[0], "affine")
        return await loadtest_async(server[0], "affine", concurrency=[2], max_requests=6, window_s=10.0)

    result = asyncio.run(main())
    assert result.levels[0].sent == 6


# exports ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured(server: tuple[str, str]) -> LoadtestResult:
    return loadtest(server[0], "affine", concurrency=[1, 2], **QUICK)


def test_json_export(measured: LoadtestResult) -> None:
    data = json.loads(json.dumps(measured.to_dict(), allow_nan=False))
    assert data["model"] == "affine" and data["protocol"] == "http" and data["batch"] == 1
    assert [level["value"] for level in data["levels"]] == [1, 2]
    level = data["levels"][0]
    assert level["p99_ms"] == measured.levels[0].p99_ms
    assert level["server"]["requests"] == measured.levels[0].server.requests  # type: ignore[union-attr]
    assert len(level["windows"]) == 3


def test_csv_export(measured: LoadtestResult) -> None:
    rows = list(csv.DictReader(io.StringIO(measured.to_csv())))
    assert [row["Concurrency"] for row in rows] == ["1", "2"]
    for row, level in zip(rows, measured.levels, strict=True):
        assert float(row["Inferences/Second"]) == pytest.approx(level.throughput, abs=0.005)
        assert int(row["p99 latency"]) == round(level.p99_ms * 1000)
        assert int(row["Client Send"]) == round(level.send_ms * 1000)
        assert level.server is not None
        assert int(row["Server Queue"]) == round(level.server.queue_us)
        assert int(row["Requests"]) == level.requests
        assert row["Errors"] == "0" and row["Stable"] == "yes"


def test_html_export_is_self_contained(measured: LoadtestResult) -> None:
    page = measured.to_html()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 3
    assert "Latency vs throughput" in page and "p99 latency per level" in page
    outside = page.replace(measured.url, "")
    for external in ("http://", "https://", "<script", "src=", "href=", "url("):
        assert external not in outside


def test_html_escapes_and_survives_a_level_without_successes() -> None:
    nan = math.nan
    level = LevelResult(
        "rate", 10.0, 0.0, 0, {"<500>": 3}, nan, nan, nan, nan, nan, nan, nan, nan, None, False, [0.0], sent=3
    )
    result = LoadtestResult("http://h:1", "<script>alert(1)</script>", None, "http", 1, [level], ["<b>careful</b>"])
    page = result.to_html()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;b&gt;careful&lt;/b&gt;" in page
    assert "nothing to plot" in page
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["levels"][0]["p50_ms"] is None
    [row] = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert row["Request Rate"] == "10" and row["p50 latency"] == "" and row["Errors"] == "3"


# the command ------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="modelport")
    loadtest_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


def test_cli_json_csv_html(server: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["loadtest", server[1], "--model", "affine", "--protocol", "grpc", "--concurrency-range", "1:2:x2"]
    argv += ["--batch", "2", "--window", "0.1", "--max-windows", "3", "--stability", "1"]
    argv += ["--csv", str(tmp_path / "r.csv"), "--html", str(tmp_path / "r.html"), "--json"]
    assert run_cli(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["protocol"] == "grpc" and data["batch"] == 2
    assert [level["value"] for level in data["levels"]] == [1, 2]
    assert all(level["errors"] == {} and level["requests"] > 0 for level in data["levels"])
    assert len(list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))) == 2
    assert "<svg" in (tmp_path / "r.html").read_text()


def test_cli_table(server: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["loadtest", server[0], "--model", "affine", "--request-rate", "100", "--max-requests", "5"]
    assert run_cli([*argv, "--window", "5"]) == 0
    out = capsys.readouterr().out
    assert "100 req/s" in out and "infer/s" in out


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--concurrency-range", "0:4"], "need 1 <= START"),
        (["--request-rate", "x"], "must be numbers of requests/s"),
        (["--shape", "x"], "not of the form NAME=D0"),
        (["--input", "no-such-file.npz"], "neither 'random', 'zeros' nor an existing"),
    ],
)
def test_cli_bad_options(extra: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run_cli(["loadtest", "http://127.0.0.1:1", "--model", "m", *extra])
