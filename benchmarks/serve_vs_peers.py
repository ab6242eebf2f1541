"""Serving: modelport's KServe v2 server vs FastAPI and LitServe, against raw in-process ONNX Runtime.

The question (issue 7): what share of raw in-process ONNX Runtime throughput does a server deliver,
and how much latency does it add, on a small CNN whose own latency is ~8 ms? Everything runs in one
invocation, side by side, on the same model file and the same ONNX Runtime session settings.

Section ``robustness`` runs the long serving tests (tests/serve/test_serve_soak.py with
``MODELPORT_SOAK=1``, and tests/serve/test_serve_process.py): a ``--soak-seconds`` soak at 16
clients (RSS growth), 100 load/unload cycles (RSS), overload against a bounded queue (429s, admitted
latency), SIGTERM under load (nothing dropped); it prints their figures.

Section ``throughput`` (the default; ``--sections`` picks, more sections register in ``SECTIONS``):

1. **The model**: a plain CNN built here with torch (8 Conv-BN-ReLU layers, widths ``--width`` x
   1/2/4/8, four stride-2 stages, global pooling, 1000 logits), input ``image`` ``[batch, 3, 224,
   224]`` float32 with a dynamic batch axis, exported once (legacy exporter, opset 17) into a
   temporary folder. ``--width 48`` lands at ~7-9 ms per image at batch 1 with 2 threads; the
   measured value is printed. Eight distinct random images (seed 0) are sent round-robin, and the
   reference logits of each come from the same ONNX Runtime session at batch 1.
2. **raw**: ``session.run`` in a tight loop in this process. A sweep over batches 1, 2, 4, 8, 16
   (``--seconds`` / 3 each) picks the best batch; batch 1 and that batch are then timed again in
   the interleaved rounds below, and *raw* is the better of the two in images/s. The session is the
   one modelport's repository builds for the model with its default config
   (``ModelRepository(model.onnx).get("model").runner``: one instance, intra-op threads budgeted
   to the cores); the FastAPI and LitServe sessions get the same settings. All are printed.
3. **modelport**: ``run_server(repo)`` as a real process on 127.0.0.1 (uvicorn; ``--modelport-config``
   writes ``config.yaml`` next to the model for trying settings; raw does not change with it),
   requests in the KServe v2 binary format (``Inference-Header-Content-Length``: a JSON header with
   ``binary_data_size`` per input and ``binary_data_output: true``, then the raw tensor), one image
   per request. **modelport-batching** is the same server with opportunistic dynamic batching
   (``max_batch_size: 16``, ``max_queue_delay_ms: 0``: what waits while the instance is busy runs as
   one batch; nothing waits for more, so a lone request is not delayed).
4. **FastAPI** and **LitServe** baselines (benchmarks/_serve_peers.py, where each app is described):
   FastAPI takes the raw float32 image as ``application/octet-stream`` and returns raw logits
   (cheaper than KServe binary: no JSON); LitServe takes ``{"input": base64}`` JSON and returns
   ``{"output": base64}`` (its request handler reads JSON).
5. **Load** (benchmarks/_load.py): a separate process, closed-loop asyncio clients on keep-alive
   sockets with pre-encoded requests, at ``--clients`` 1, 4, 16 concurrent connections; every
   latency recorded; sampled responses decoded and compared with the reference logits (atol 1e-4),
   every response's length counted.

**Same minute, interleaved.** This machine drifts (~10 % over a few minutes even when idle) and is
shared. All servers run at once (idle, each uses < 1 % CPU), and every row — raw at batch 1, raw at
the best batch, each server at each client count — is timed in ``--rounds`` windows of
``--seconds`` / ``--rounds`` (plus ``--warmup`` seconds of load before each served window), the rows
taking turns, in reverse order every other round. A row's numbers pool its windows, so drift and
other users' load fall on every row alike; the JSON keeps each window's images/s.

Columns: *img/s* (completed requests / measured seconds, one image each); *served÷raw*: img/s over
raw; *p50 / p99 ms*: request latency seen by the client; *added p50 ms* (1 client): served p50 minus
raw batch-1 p50; *server CPU s/1k*: utime + stime of the server's whole process tree per 1000
requests (LitServe runs five processes: its launcher, API server and inference worker, and
multiprocessing's manager and resource tracker); raw rows show the same for ``session.run`` alone,
so the difference is what serving costs; *client CPU s/1k*: the load generator's; *others %*: CPU
the rest of the machine used meanwhile, as a share of all cores (high values flag disturbed rows);
*verified*: sampled responses within atol 1e-4 of the reference.

Targets (issue 7): served÷raw ≥ 0.90 at 4 and 16 clients, added p50 ≤ 1 ms at 1 client.

Run: .venv/bin/python benchmarks/serve_vs_peers.py [--seconds 15] [--rounds 3] [--warmup 1]
     [--clients 1,4,16] [--servers modelport,fastapi,litserve] [--sections throughput] [--width 48]
     [--image 224] [--modelport-config 'instance_count: 1'] [--json PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import Request, machine_cpu_seconds, write_requests
from _peer_models import export_cnn

HERE = Path(__file__).resolve().parent

Array = np.ndarray[Any, Any]

MODEL_NAME = "cnn"
INPUT, OUTPUT, CLASSES = "image", "logits", 1000
IMAGES = 8  # distinct images, sent round-robin
RAW_BATCHES = (1, 2, 4, 8, 16)
ATOL = 1e-4
RATIO_TARGET, ADDED_MS_TARGET, RATIO_CLIENTS = 0.90, 1.0, (4, 16)
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0

#: The config of the "modelport-batching" row: batch whatever waits while the instance is busy,
#: never wait for more (delay 0), so a lone request is not delayed.
BATCHING_CONFIG = "max_batch_size: 16\ndynamic_batching: {max_queue_delay_ms: 0}\n"

_MODELPORT_SERVE = (
    "import sys; from modelport.serve import run_server; "
    "run_server(sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')"
)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ==================================================================================================
# The model and its inputs
# ==================================================================================================


def build_cnn(folder: Path, width: int, image: int) -> tuple[Path, str]:
    """A plain CNN with a dynamic batch axis, exported to ``folder/cnn.onnx``."""
    import torch
    from torch import nn

    def conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    cin = 3
    for multiple in (1, 2, 4, 8):
        layers += conv_bn_relu(cin, width * multiple, 2) + conv_bn_relu(width * multiple, width * multiple, 1)
        cin = width * multiple
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, CLASSES)).eval()
    path = folder / "cnn.onnx"
    export_cnn(model, torch.zeros(1, 3, image, image), path, input_name=INPUT, output_name=OUTPUT)
    description = (
        f"CNN: 8 Conv-BN-ReLU (widths {width}-{8 * width}, 4 stride-2 stages), global pool, FC {CLASSES}; "
        f"input {INPUT} [batch, 3, {image}, {image}] float32 ({3 * image * image * 4 // 1024} KiB per image)"
    )
    return path, description


def make_images(image: int) -> list[Array]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 3, image, image), dtype=np.float32) for _ in range(IMAGES)]


@dataclass
class Bench:
    """What every section shares: the model laid out as a repository, its inputs and reference outputs."""

    folder: Path
    model: Path  # REPO/cnn/1/model.onnx
    repository: Path
    description: str
    images: list[Array]
    references: list[Array] = field(default_factory=list)
    session_settings: dict[str, Any] = field(default_factory=dict)
    peer_options: list[str] = field(default_factory=list)  # the same session settings for _serve_peers.py


def prepare(folder: Path, args: argparse.Namespace) -> Bench:
    log(f"[model] building the CNN (width {args.width}, {args.image}x{args.image}) and exporting it")
    exported, description = build_cnn(folder, args.width, args.image)
    repository = folder / "repo"
    model = repository / MODEL_NAME / "1" / "model.onnx"
    model.parent.mkdir(parents=True)
    exported.replace(model)
    if args.modelport_config:
        (repository / MODEL_NAME / "config.yaml").write_text(args.modelport_config + "\n")
    batching = folder / "repo-batching" / MODEL_NAME
    (batching / "1").mkdir(parents=True)
    os.link(model, batching / "1" / "model.onnx")
    (batching / "config.yaml").write_text(BATCHING_CONFIG)
    bench = Bench(folder, model, repository, description, make_images(args.image))
    with served_runner(bench) as runner:
        bench.references = [runner.session.run(None, {INPUT: x})[0] for x in bench.images]
        bench.session_settings = session_settings(runner)
        bench.peer_options = peer_options(runner)
    return bench


@contextlib.contextmanager
def served_runner(bench: Bench) -> Iterator[Any]:
    """The OrtRunner modelport's repository builds for the model with its default config, activated.

    ``ModelRepository(file)`` serves one .onnx file with the default config (one instance, intra-op
    threads budgeted to the cores): the settings the server uses without ``--modelport-config``, so
    raw stays the same whatever that option tries.
    """
    from modelport.serve.repository import ModelRepository

    repository = ModelRepository(bench.model)
    with repository:
        yield repository.get(bench.model.stem).runner


def session_settings(runner: Any) -> dict[str, Any]:
    options = runner.session.get_session_options()
    settings = dict(runner.describe())
    settings["session intra_op_num_threads"] = options.intra_op_num_threads or f"0 = ORT default ({_cores()} cores)"
    settings["session inter_op_num_threads"] = options.inter_op_num_threads or "0 = ORT default"
    settings["session execution_mode"] = str(options.execution_mode).rsplit(".", 1)[-1]
    return settings


def peer_options(runner: Any) -> list[str]:
    options = []
    for flag, value in (
        ("--intra-op-threads", runner.intra_op_threads),
        ("--inter-op-threads", runner.inter_op_threads),
    ):
        if value is not None:
            options += [flag, str(value)]
    if runner.graph_optimization != "all":
        options += ["--graph-optimization", runner.graph_optimization]
    for key, value in runner.session_config.items():
        options += ["--session-config", f"{key}={value}"]
    return options


def _cores() -> int:
    return len(os.sched_getaffinity(0))


# ==================================================================================================
# Raw in-process ONNX Runtime
# ==================================================================================================


@dataclass
class RawWindow:
    """One timed stretch of ``session.run`` calls at one batch size."""

    batch: int
    latencies: list[float]
    elapsed: float
    cpu: float  # this process
    machine_busy: float
    machine_total: float


@dataclass
class RawRow:
    """Raw throughput at one batch size over one or more windows."""

    batch: int
    images_per_s: float
    p50_ms: float  # per session.run call
    p99_ms: float
    cpu_s_per_1000: float  # process CPU per 1000 images
    calls: int
    others_pct: float  # CPU used by other processes, share of all cores
    window_images_per_s: list[float] = field(default_factory=list)


def raw_feeds(images: Sequence[Array], batch: int) -> list[dict[str, Array]]:
    return [{INPUT: np.concatenate([images[(i + j) % len(images)] for j in range(batch)])} for i in range(len(images))]


def time_raw(session: Any, feeds: Sequence[dict[str, Array]], seconds: float) -> RawWindow:
    for feed in feeds[:2]:  # warm-up: the first runs after a pause allocate and wake threads
        session.run(None, feed)
    latencies: list[float] = []
    busy0, total0 = machine_cpu_seconds()
    cpu0, start = time.process_time(), time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        session.run(None, feeds[len(latencies) % len(feeds)])
        done = time.perf_counter()
        latencies.append(done - now)
        now = done
    cpu = time.process_time() - cpu0
    busy1, total1 = machine_cpu_seconds()
    batch = len(feeds[0][INPUT])
    return RawWindow(batch, latencies, now - start, cpu, busy1 - busy0, total1 - total0)


def raw_row(windows: Sequence[RawWindow]) -> RawRow:
    latencies = [t for w in windows for t in w.latencies]
    batch = windows[0].batch
    count = len(latencies) * batch
    cpu = sum(w.cpu for w in windows)
    ms = np.array(latencies) * 1e3
    others = sum(w.machine_busy for w in windows) - cpu
    return RawRow(
        batch=batch,
        images_per_s=count / sum(w.elapsed for w in windows),
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        cpu_s_per_1000=cpu / count * 1000,
        calls=len(latencies),
        others_pct=100 * max(0.0, others) / sum(w.machine_total for w in windows),
        window_images_per_s=[len(w.latencies) * batch / w.elapsed for w in windows],
    )


# ==================================================================================================
# Servers as processes
# ==================================================================================================


@dataclass(frozen=True)
class Server:
    """How to start one server, talk to it and read its answers."""

    name: str
    path: str  # the inference route
    ready_path: str
    encoding: str  # for the table notes
    command: Callable[[Bench, int], list[str]]
    encode: Callable[[Array], Request]
    decode: Callable[[dict[str, str], bytes], Array]


def _modelport_encode(image: Array) -> Request:
    from modelport.serve.protocol import encode_request

    encoded = encode_request({INPUT: image}, binary=True, binary_output=True)
    return Request(encoded.headers, encoded.body)


def _modelport_decode(headers: dict[str, str], body: bytes) -> Array:
    from modelport.serve.protocol import HEADER_LENGTH, decode_response

    return decode_response(body, headers.get(HEADER_LENGTH.lower())).outputs[OUTPUT]


def _peer_command(peer: str) -> Callable[[Bench, int], list[str]]:
    def command(bench: Bench, port: int) -> list[str]:
        return [sys.executable, str(HERE / "_serve_peers.py"), peer, str(bench.model), str(port), *bench.peer_options]

    return command


def _raw_decode(headers: dict[str, str], body: bytes) -> Array:
    return np.frombuffer(body, dtype=np.float32).reshape(1, CLASSES)


def _base64_encode(image: Array) -> Request:
    body = json.dumps({"input": base64.b64encode(image.tobytes()).decode("ascii")}).encode()
    return Request({"Content-Type": "application/json"}, body)


def _base64_decode(headers: dict[str, str], body: bytes) -> Array:
    raw = base64.b64decode(json.loads(body)["output"])
    return np.frombuffer(raw, dtype=np.float32).reshape(1, CLASSES)


SERVERS: dict[str, Server] = {
    "modelport": Server(
        "modelport",
        f"/v2/models/{MODEL_NAME}/infer",
        "/v2/health/ready",
        "KServe v2 binary: JSON header + raw FP32 in, JSON header + raw FP32 out; default config",
        lambda bench, port: [sys.executable, "-c", _MODELPORT_SERVE, str(bench.repository), str(port)],
        _modelport_encode,
        _modelport_decode,
    ),
    "modelport-batching": Server(
        "modelport-batching",
        f"/v2/models/{MODEL_NAME}/infer",
        "/v2/health/ready",
        "as modelport, with opportunistic batching: " + " ".join(BATCHING_CONFIG.split()),
        lambda bench, port: [sys.executable, "-c", _MODELPORT_SERVE, str(bench.folder / "repo-batching"), str(port)],
        _modelport_encode,
        _modelport_decode,
    ),
    "fastapi": Server(
        "fastapi",
        "/predict",
        "/health",
        "raw FP32 octet-stream in and out (no JSON); session.run via run_in_threadpool",
        _peer_command("fastapi"),
        lambda image: Request({"Content-Type": "application/octet-stream"}, image.tobytes()),
        _raw_decode,
    ),
    "litserve": Server(
        "litserve",
        "/predict",
        "/health",
        'JSON {"input": base64 FP32} in, {"output": base64 FP32} out; defaults, 1 worker',
        _peer_command("litserve"),
        _base64_encode,
        _base64_decode,
    ),
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A server started in its own process group, awaited until ready, stopped with SIGTERM.

    Sections that test shutdown or reload use :attr:`process` and :meth:`stop` directly.
    """

    def __init__(self, server: Server, bench: Bench) -> None:
        self.server = server
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = bench.folder / f"{server.name}-{self.port}.log"
        self.startup_s = 0.0
        self.exit_code: int | None = None
        started = time.perf_counter()
        with self.log_path.open("wb") as sink:
            self.process = subprocess.Popen(
                server.command(bench, self.port),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: LitServe's workers stop with it
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - started

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.server.name} exited with {self.process.returncode}: {self.log_tail()}")
            with (
                contextlib.suppress(OSError),  # refused, reset, 503 while loading
                urllib.request.urlopen(self.url + self.server.ready_path, timeout=2) as reply,
            ):
                if reply.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.server.name} was not ready after {READY_TIMEOUT_S:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "no output"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # workers left behind by the group leader
            os.killpg(self.process.pid, signal.SIGKILL)
        self.exit_code = self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_load(server: ServerProcess, requests: Path, clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    """benchmarks/_load.py in its own process against ``server`` for one window; its JSON result."""
    command = [
        sys.executable,
        str(HERE / "_load.py"),
        server.url + server.server.path,
        *("--requests", str(requests), "--clients", str(clients)),
        *("--warmup", str(warmup), "--seconds", str(seconds)),
        *("--watch-pid", str(server.process.pid)),
    ]
    timeout = warmup + seconds + 60
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"status": f"load generator hung (> {timeout:.0f} s)"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"load generator failed: {tail[:200]}"}
    return {"status": "ok", **json.loads(done.stdout)}


def merge_loads(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The windows of one row (one per round) as one result: counts and CPU summed, latencies pooled."""
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        return failed[0]
    errors: Counter[str] = Counter()
    lengths: Counter[str] = Counter()
    for result in results:
        errors.update(result["errors"])
        lengths.update(result["body_lengths"])
    return {
        "status": "ok",
        "seconds": sum(r["seconds"] for r in results),
        "completed": sum(r["completed"] for r in results),
        "latencies_s": [t for r in results for t in r["latencies_s"]],
        "errors": dict(errors),
        "client_crashes": [c for r in results for c in r["client_crashes"]],
        "body_lengths": dict(lengths),
        "samples": [sample for r in results for sample in r["samples"]],
        "server_pids": results[-1]["server_pids"],
        "cpu_s": {key: sum(r["cpu_s"][key] for r in results) for key in results[0]["cpu_s"]},
        "window_images_per_s": [r["completed"] / r["seconds"] for r in results],
    }


# ==================================================================================================
# Checking and summarising one row
# ==================================================================================================


@dataclass
class ServedRow:
    server: str
    clients: int
    status: str = "ok"
    images_per_s: float | None = None
    ratio: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    p90_ms: float | None = None
    max_ms: float | None = None
    added_p50_ms: float | None = None
    server_cpu_s_per_1000: float | None = None
    client_cpu_s_per_1000: float | None = None
    others_pct: float | None = None
    completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    verified: str = "—"
    max_abs_diff: float | None = None
    server_processes: int = 0
    window_images_per_s: list[float] = field(default_factory=list)


def _disturbance(result: dict[str, Any]) -> float:
    """CPU other processes used in a load run's windows, as a share of all cores."""
    cpu: dict[str, float] = result["cpu_s"]
    return 100 * max(0.0, cpu["machine_busy"] - cpu["server"] - cpu["client"]) / cpu["machine_total"]


def verify(server: Server, result: dict[str, Any], references: Sequence[Array]) -> tuple[str, float | None]:
    """Decode the sampled responses and compare them with the reference logits; check every length."""
    worst, good = 0.0, 0
    lengths = set()
    for sample in result["samples"]:
        body = base64.b64decode(sample["body"])
        lengths.add(str(len(body)))
        try:
            output = server.decode(sample["headers"], body)
        except Exception as e:
            return f"FAIL: undecodable response ({type(e).__name__}: {e})"[:120], None
        reference = references[sample["request"]]
        if output.shape != reference.shape:
            return f"FAIL: output shape {list(output.shape)}, expected {list(reference.shape)}", None
        diff = float(np.max(np.abs(output - reference)))
        worst = max(worst, diff)
        good += diff <= ATOL
    total = len(result["samples"])
    odd = sorted(set(result["body_lengths"]) - lengths)
    if odd:
        return f"FAIL: unsampled responses of other lengths ({', '.join(odd)} bytes)", worst
    if total == 0:
        return "FAIL: no responses", None
    mark = "" if good == total else "FAIL: "
    return f"{mark}{good}/{total}", worst


def summarize(
    server: Server, clients: int, result: dict[str, Any], bench: Bench, raw: RawRow, best: float
) -> ServedRow:
    row = ServedRow(server.name, clients, status=result["status"])
    if row.status != "ok":
        return row
    row.errors = result["errors"]
    row.completed = result["completed"]
    if result["client_crashes"]:
        row.status = f"client crashed: {result['client_crashes'][0][:120]}"
    if not row.completed:
        row.status = "no request completed"
        return row
    ms = np.array(result["latencies_s"]) * 1e3
    row.images_per_s = row.completed / result["seconds"]
    row.window_images_per_s = result["window_images_per_s"]
    row.ratio = row.images_per_s / best
    row.p50_ms, row.p90_ms, row.p99_ms = (float(np.percentile(ms, q)) for q in (50, 90, 99))
    row.max_ms = float(ms.max())
    if clients == 1:
        row.added_p50_ms = row.p50_ms - raw.p50_ms
    cpu = result["cpu_s"]
    row.server_cpu_s_per_1000 = cpu["server"] / row.completed * 1000
    row.server_processes = len(result["server_pids"])
    row.client_cpu_s_per_1000 = cpu["client"] / row.completed * 1000
    row.others_pct = _disturbance(result)
    row.verified, row.max_abs_diff = verify(server, result, bench.references)
    return row


# ==================================================================================================
# Section: throughput
# ==================================================================================================


def start_servers(bench: Bench, names: Sequence[str], stack: contextlib.ExitStack) -> dict[str, Any]:
    """Each server started and awaited (stopped when ``stack`` closes); a failed start is its error text."""
    started: dict[str, Any] = {}
    for name in names:
        log(f"[{name}] starting the server")
        try:
            started[name] = stack.enter_context(ServerProcess(SERVERS[name], bench))
        except RuntimeError as e:
            started[name] = str(e)[:300]
    return started


def interleave(bench: Bench, args: argparse.Namespace, raw_batches: Sequence[int], servers: dict[str, Any]) -> Any:
    """Every row timed in ``--rounds`` windows, the rows taking turns (reversed every other round).

    Returns (raw windows by batch, load results by (server, clients)).
    """
    window = args.seconds / args.rounds
    running = [name for name, process in servers.items() if isinstance(process, ServerProcess)]
    requests = {name: bench.folder / f"{name}.requests" for name in running}
    for name, path in requests.items():
        write_requests(path, [SERVERS[name].encode(image) for image in bench.images])
    units: list[tuple[str, int]] = [("raw", b) for b in raw_batches]
    units += [(name, clients) for clients in args.clients for name in running]
    raw: dict[int, list[RawWindow]] = {b: [] for b in raw_batches}
    loads: dict[tuple[str, int], list[dict[str, Any]]] = {u: [] for u in units if u[0] != "raw"}
    with served_runner(bench) as runner:
        feeds = {b: raw_feeds(bench.images, b) for b in raw_batches}
        for round_ in range(args.rounds):
            for name, number in units if round_ % 2 == 0 else units[::-1]:
                where = f"[round {round_ + 1}/{args.rounds}]"
                if name == "raw":
                    log(f"{where} raw session.run, batch {number}: {window:g} s")
                    raw[number].append(time_raw(runner.session, feeds[number], window))
                    continue
                log(f"{where} {name}, {number} client(s): {args.warmup:g} s warm-up, {window:g} s window")
                loads[name, number].append(run_load(servers[name], requests[name], number, window, args.warmup))
    return raw, loads


def throughput_section(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    sweep_s = max(1.0, args.seconds / 3)
    with served_runner(bench) as runner:
        sweep = []
        for batch in RAW_BATCHES:
            log(f"[sweep] raw session.run, batch {batch}: {sweep_s:g} s")
            sweep.append(raw_row([time_raw(runner.session, raw_feeds(bench.images, batch), sweep_s)]))
    best_batch = max(sweep, key=lambda r: r.images_per_s).batch
    raw_batches = sorted({1, best_batch})
    with contextlib.ExitStack() as stack:
        servers = start_servers(bench, args.servers, stack)
        raw_windows, loads = interleave(bench, args, raw_batches, servers)
    raw = [raw_row(raw_windows[b]) for b in raw_batches]
    best = max(r.images_per_s for r in raw)
    blocks: dict[str, Any] = {}
    for name, process in servers.items():
        if not isinstance(process, ServerProcess):
            blocks[name] = {"startup_s": None, "exit_code": None, "rows": [ServedRow(name, 0, status=process)]}
            continue
        rows = [
            summarize(SERVERS[name], clients, merge_loads(loads[name, clients]), bench, raw[0], best)
            for clients in args.clients
        ]
        blocks[name] = {"startup_s": process.startup_s, "exit_code": process.exit_code, "rows": rows}
    return {
        "section": "throughput",
        "sweep": sweep,
        "sweep_seconds": sweep_s,
        "best_batch": best_batch,
        "raw": raw,
        "raw_images_per_s": best,
        "servers": blocks,
        "encodings": {name: SERVERS[name].encoding for name in args.servers},
    }


def _fmt(value: float | None, digits: int, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def _raw_line(label: str, raw: RawRow, best: float) -> str:
    return (
        f"| {label} | batch {raw.batch} | {raw.images_per_s:.1f} | {raw.images_per_s / best:.2f} "
        f"| {raw.p50_ms:.2f} | {raw.p99_ms:.2f} | — | {raw.cpu_s_per_1000:.2f} | — | {raw.others_pct:.0f} | — | ok |"
    )


def _served_line(row: ServedRow) -> str:
    errors = sum(row.errors.values())
    status = row.status if not errors else f"{row.status}; {errors} errors: {next(iter(row.errors))[:80]}"
    return (
        f"| {row.server} | {row.clients} | {_fmt(row.images_per_s, 1)} | {_fmt(row.ratio, 2)} "
        f"| {_fmt(row.p50_ms, 2)} | {_fmt(row.p99_ms, 2)} | {_fmt(row.added_p50_ms, 2)} "
        f"| {_fmt(row.server_cpu_s_per_1000, 2)} | {_fmt(row.client_cpu_s_per_1000, 3)} "
        f"| {_fmt(row.others_pct, 0)} | {row.verified} | {status} |"
    )


def print_throughput(result: dict[str, Any]) -> None:
    best = result["raw_images_per_s"]
    model_ms = result["raw"][0].p50_ms
    print(f"\n### Throughput: served vs raw in-process ONNX Runtime (raw = {best:.1f} img/s)\n")
    print(f"The model takes {model_ms:.2f} ms per image at batch 1 (raw p50).\n")
    print(
        "| server | clients | img/s | served÷raw | p50 ms | p99 ms | added p50 ms | server CPU s/1k "
        "| client CPU s/1k | others % | verified | status |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for raw in result["raw"]:
        print(_raw_line("raw ORT in-process", raw, best))
    for block in result["servers"].values():
        for row in block["rows"]:
            print(_served_line(row))
    sweep_best = max(r.images_per_s for r in result["sweep"])
    for raw in result["sweep"]:
        print(_raw_line(f"raw ORT, batch sweep ({result['sweep_seconds']:g} s)", raw, sweep_best))
    print()
    for name, encoding in result["encodings"].items():
        block = result["servers"][name]
        ready = _fmt(block["startup_s"], 1)
        print(f"* {name}: {encoding}; ready {ready} s after start, exit code {block['exit_code']}")
    print()
    for name in ("modelport", "modelport-batching"):
        print(throughput_summary(result, name))


def throughput_summary(result: dict[str, Any], name: str = "modelport") -> str:
    served = result["servers"].get(name)
    if served is None:
        return f"summary: {name} was not run (--servers)"
    rows = {row.clients: row for row in served["rows"]}
    parts = []
    for clients in RATIO_CLIENTS:
        row = rows.get(clients)
        ratio = row.ratio if row is not None else None
        verdict = "—" if ratio is None else ("yes" if ratio >= RATIO_TARGET else "NO")
        parts.append(f"served÷raw ≥ {RATIO_TARGET} at {clients} clients: {verdict} ({_fmt(ratio, 2)})")
    one = rows.get(1)
    added = one.added_p50_ms if one is not None else None
    verdict = "—" if added is None else ("yes" if added <= ADDED_MS_TARGET else "NO")
    parts.append(f"added p50 ≤ {ADDED_MS_TARGET:g} ms at 1 client: {verdict} ({_fmt(added, 2, ' ms')})")
    return f"summary ({name}): " + " · ".join(parts)


# ==================================================================================================
# Driver
# ==================================================================================================

Section = Callable[[Bench, argparse.Namespace], dict[str, Any]]
Printer = Callable[[dict[str, Any]], None]

# ==================================================================================================
# Section: robustness (soak, load/unload cycles, overload, SIGTERM under load)
# ==================================================================================================

ROBUSTNESS_TESTS = ("tests/serve/test_serve_soak.py", "tests/serve/test_serve_process.py")


def robustness_section(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Run the long serving tests (marked ``slow``, skipped by ``make test``) and collect their figures.

    They start their own server processes on the built-in example CNN; each prints one ``RESULT``
    line. Pass/fail comes from pytest; the figures from the RESULT lines.
    """
    log(f"[robustness] soak {args.soak_seconds:g} s at 16 clients, 100 load/unload cycles, overload, SIGTERM")
    env = {**os.environ, "MODELPORT_SOAK": "1", "MODELPORT_SOAK_SECONDS": str(args.soak_seconds)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "-m",
        "slow or not slow",
        *ROBUSTNESS_TESTS,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=HERE.parent, env=env, capture_output=True, text=True, check=False)
    figures = [json.loads(line[len("RESULT ") :]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    return {
        "section": "robustness",
        "command": " ".join(["MODELPORT_SOAK=1", f"MODELPORT_SOAK_SECONDS={args.soak_seconds:g}", *command[1:]]),
        "returncode": done.returncode,
        "pytest": summary,
        "figures": figures,
        "seconds": time.perf_counter() - started,
    }


def print_robustness(result: dict[str, Any]) -> None:
    print(f"\n### Robustness ({result['seconds']:.0f} s): `{result['command']}`\n")
    print("| test | figures |")
    print("|---|---|")
    for figure in result["figures"]:
        name = figure.pop("test")
        print(f"| {name} | {', '.join(f'{k} {v}' for k, v in figure.items())} |")
    verdict = "all passed" if result["returncode"] == 0 else f"FAILED (exit {result['returncode']})"
    print(f"\npytest: {result['pytest']} — {verdict}")


#: name -> (measure, print).
SECTIONS: dict[str, tuple[Section, Printer]] = {
    "throughput": (throughput_section, print_throughput),
    "robustness": (robustness_section, print_robustness),
}


def versions() -> str:
    parts = []
    dists = ("modelport", "onnxruntime", "numpy", "torch", "uvicorn", "starlette", "uvloop", "httptools")
    for dist in (*dists, "fastapi", "litserve"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def _machine() -> str:
    from modelport.quantize.hardware import machine

    return f"{machine()}, {os.cpu_count()} CPUs ({_cores()} usable)"


def http_stack() -> str:
    """What uvicorn picks by itself (loop="auto", http="auto"): the same for all three servers."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"uvicorn with {loop} and {http} (its auto choice) for every server; load generator on {loop}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="throughput", help=f"comma-separated, from: {', '.join(SECTIONS)}")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"comma-separated, from: {', '.join(SERVERS)}")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients, comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds of each row, over all rounds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each window")
    parser.add_argument("--rounds", type=int, default=3, help="windows per row, the rows taking turns")
    parser.add_argument("--width", type=int, default=48, help="channels of the CNN's first stage")
    parser.add_argument("--image", type=int, default=224, help="height and width of the input image")
    parser.add_argument("--modelport-config", default="", help="YAML written to the served model's config.yaml")
    parser.add_argument("--soak-seconds", type=float, default=600.0, help="length of the soak (section robustness)")
    parser.add_argument("--out", type=Path, help="keep the model, requests and server logs in this folder")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    args.servers = [s for s in args.servers.split(",") if s]
    for option, chosen, known in (("--sections", args.sections, SECTIONS), ("--servers", args.servers, SERVERS)):
        unknown = [s for s in chosen if s not in known]
        if unknown:
            parser.error(f"{option}: unknown {unknown} — choose from {', '.join(known)}")
    try:
        args.clients = [int(c) for c in args.clients.split(",") if c]
    except ValueError:
        parser.error(f"--clients must be integers separated by commas, got {args.clients!r}")
    return args


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        bench = prepare(folder, args)
        for name in args.sections:
            results.append(SECTIONS[name][0](bench, args))
    print(f"Versions: {versions()}; {_machine()}.")
    print(f"Load average (1 min) at start / end: {load_before:.1f} / {os.getloadavg()[0]:.1f}.")
    print(f"Model: {bench.description}.")
    print(f"ONNX Runtime session (server and raw alike): {bench.session_settings}.")
    print(
        f"HTTP: {http_stack()}. Each row: {args.seconds:g} s in {args.rounds} interleaved windows, "
        f"{args.warmup:g} s of load before each served window."
    )
    if args.modelport_config:
        print(f"modelport config.yaml: {args.modelport_config!r}")
    for result in results:
        SECTIONS[result["section"]][1](result)
    print(f"\nWhole run: {time.perf_counter() - started:.0f} s")
    if args.json:
        document = {
            "versions": versions(),
            "machine": _machine(),
            "model": bench.description,
            "session": bench.session_settings,
            "http": http_stack(),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "sections": _jsonable(results),
        }
        args.json.write_text(json.dumps(document, indent=1, default=str))


if __name__ == "__main__":
    main()
