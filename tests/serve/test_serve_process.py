"""The server as a real process: SIGTERM while clients are sending drops nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from modelport.serve import encode_request

from .serve_models import mixed_model, write_version
from .test_serve_tritonclient import free_port, wait_until_ready

_SERVE = (
    "import sys; from modelport.serve import run_server; from modelport.serve.core import ServerOptions; "
    "run_server(sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]), log_level='info', "
    "options=ServerOptions(drain_delay=float(sys.argv[3])))"
)


def test_sigterm_under_load_answers_every_admitted_request(tmp_path: Path) -> None:
    """8 clients keep one request each in flight (7 of them queued behind the one instance). On
    SIGTERM the server turns not-ready and marks every response ``Connection: close``; a client
    stops sending once it sees that (as a load balancer would). Every request sent gets a 200."""
    write_version(tmp_path, "mixed", 1, mixed_model())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(tmp_path), str(port), "1.5"], stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_until_ready(url, process, log)
        encoded = encode_request({"x": np.ones((1, 3), np.float32), "k": np.array([1])}, binary=True)
        outcomes: list[tuple[int, bool]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=url, timeout=30) as session:
                while True:
                    try:
                        response = session.post("/v2/models/mixed/infer", content=encoded.body, headers=encoded.headers)
                    except httpx.HTTPError as e:
                        with lock:
                            errors.append(e)
                        return
                    closing = response.headers.get("connection") == "close"
                    with lock:
                        outcomes.append((response.status_code, closing))
                    if closing:
                        return

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        ready = httpx.get(f"{url}/v2/health/ready", timeout=5)
        for thread in threads:
            thread.join(30)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    answered = len(outcomes)
    record = {"test": "sigterm", "clients": 8, "answered": answered, "dropped": len(errors), "exit_code": code}
    print(f"RESULT {json.dumps(record)}")
    assert errors == [], output
    assert ready.status_code == 400  # not ready while draining, but answering
    assert {status for status, _ in outcomes} == {200}
    assert sum(closing for _, closing in outcomes) == 8  # each client was told to go elsewhere
    assert len(outcomes) > 8
    assert code in (0, -signal.SIGTERM), output
    assert "draining: readiness is now false" in output
    assert "Application shutdown complete." in output
    assert "Traceback" not in output
