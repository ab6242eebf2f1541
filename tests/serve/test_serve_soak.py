"""Long-running serving checks on a real server process: a soak under 16 clients, load/unload
cycles, and overload. They take minutes, so they run only with ``MODELPORT_SOAK=1`` — which
``benchmarks/serve_vs_peers.py --sections soak`` sets (``MODELPORT_SOAK_SECONDS`` sets the soak
length, 600 by default). Each prints one ``RESULT`` line with its figures for the benchmark table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.deploy.example import example_model
from modelport.ir.serde import save
from modelport.serve import encode_request

from .test_serve_tritonclient import free_port, wait_until_ready

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("MODELPORT_SOAK"), reason="minutes long; run by benchmarks/serve_vs_peers.py --sections soak"
    ),
]

_SERVE = "import sys; from modelport.serve import run_server; run_server(sys.argv[1], port=int(sys.argv[2]))"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def report(name: str, **figures: Any) -> None:
    print(f"RESULT {json.dumps({'test': name, **figures})}", flush=True)


def start_server(repo: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-c", _SERVE, str(repo), str(port)], stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, process, log)
    return process, url, log


@pytest.fixture
def example_repo(tmp_path: Path) -> Iterator[Path]:
    repo = tmp_path / "repo"
    save(example_model(), repo / "cnn" / "1" / "model.onnx")
    yield repo


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Load:
    """``clients`` threads sending one image each, in a closed loop, until stopped."""

    def __init__(self, url: str, clients: int) -> None:
        image = np.random.default_rng(0).random((1, 3, 96, 96), dtype=np.float32)
        self.encoded = encode_request({"image": image}, binary=True, binary_output=True)
        self.url = url
        self.latencies: dict[int, list[float]] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as session:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    response = session.post(
                        "/v2/models/cnn/infer", content=self.encoded.body, headers=self.encoded.headers
                    )
                except httpx.HTTPError as e:
                    with self._lock:
                        self.failures.append(repr(e))
                    continue
                with self._lock:
                    self.latencies.setdefault(response.status_code, []).append(time.perf_counter() - start)
                if response.status_code == 429:  # a well-behaved client waits as told
                    self._stop.wait(float(response.headers["retry-after"]))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def count(self, status: int) -> int:
        with self._lock:
            return len(self.latencies.get(status, []))


def test_soak_16_clients_keeps_rss_growth_under_5_percent(example_repo: Path, tmp_path: Path) -> None:
    seconds = float(os.environ.get("MODELPORT_SOAK_SECONDS", "600"))
    process, url, log = start_server(example_repo, tmp_path)
    try:
        with Load(url, 16) as load:
            time.sleep(max(5.0, seconds * 0.1))  # warm-up: allocator pools and caches fill
            start_rss, start_count = rss_bytes(process.pid), load.count(200)
            time.sleep(seconds * 0.9)
            end_rss, end_count = rss_bytes(process.pid), load.count(200)
    finally:
        stop(process)
    growth = (end_rss - start_rss) / start_rss
    report(
        "soak",
        seconds=seconds,
        requests=end_count - start_count,
        rss_start_mib=round(start_rss / 2**20, 1),
        rss_end_mib=round(end_rss / 2**20, 1),
        growth_percent=round(growth * 100, 2),
    )
    assert load.failures == [], log.read_text()
    assert set(load.latencies) == {200}
    assert growth < 0.05


def test_100_load_unload_cycles_keep_rss_flat(example_repo: Path, tmp_path: Path) -> None:
    process, url, log = start_server(example_repo, tmp_path)
    encoded = Load(url, 0).encoded
    rss: list[int] = []
    try:
        with httpx.Client(base_url=url, timeout=60) as session:
            for cycle in range(100):
                assert session.post("/v2/repository/models/cnn/unload").status_code == 200
                assert session.post("/v2/repository/models/cnn/load").status_code == 200, log.read_text()
                answer = session.post("/v2/models/cnn/infer", content=encoded.body, headers=encoded.headers)
                assert answer.status_code == 200
                if cycle in (9, 99):
                    rss.append(rss_bytes(process.pid))
    finally:
        stop(process)
    growth = (rss[1] - rss[0]) / rss[0]
    report(
        "load_unload",
        cycles=100,
        rss_after_10_mib=round(rss[0] / 2**20, 1),
        rss_after_100_mib=round(rss[1] / 2**20, 1),
        growth_percent=round(growth * 100, 2),
    )
    assert growth < 0.05


def test_overload_is_refused_without_growing_latency_for_admitted_requests(example_repo: Path, tmp_path: Path) -> None:
    """max_queue_size 4: at 4 clients nothing is refused; at 48 clients most requests get 429,
    and the latency of the admitted ones stays within 2x of the 4-client latency (an unbounded
    queue would make it ~12x)."""
    (example_repo / "cnn" / "config.yaml").write_text("max_queue_size: 4\n", encoding="utf-8")
    process, url, log = start_server(example_repo, tmp_path)
    p50: dict[int, float] = {}
    refused: dict[int, int] = {}
    try:
        for clients in (4, 48):
            with Load(url, clients) as load:
                time.sleep(10)
            assert load.failures == [], log.read_text()
            p50[clients] = float(np.median(load.latencies[200]))
            refused[clients] = load.count(429)
    finally:
        stop(process)
    report(
        "overload",
        p50_ms_4_clients=round(p50[4] * 1000, 2),
        p50_ms_48_clients=round(p50[48] * 1000, 2),
        refused_4_clients=refused[4],
        refused_48_clients=refused[48],
    )
    assert refused[4] == 0
    assert refused[48] > 0
    assert p50[48] < 2 * p50[4]
