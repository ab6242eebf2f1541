"""`make demo`: deploy the built-in model, serve it, and call it with the stock Triton client.

1. ``modelport deploy`` on the built-in ResNet-style CNN (inspect, optimize, quantize, compare,
   bench) writes build/demo/repository and the reports build/demo/report.{html,md,json}; where
   Chromium is installed, a screenshot of the HTML report goes to build/demo/report.png.
2. ``modelport serve`` runs the repository as a real process on 127.0.0.1.
3. ``tritonclient.http`` sends binary and JSON requests; outputs are checked against in-process
   ONNX Runtime, and the served latency is measured.
4. The server is shut down.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path("build/demo")
MODEL = "example_resnet"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(client: object, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited early with code {proc.returncode}")
        try:
            if client.is_server_ready():  # type: ignore[attr-defined]
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready after {timeout:.0f} s")


def _screenshot(page: Path) -> None:
    from modelport.report.browser import find_chromium, screenshot

    if find_chromium() is None:
        print("   (no Chromium here: no screenshot of the report)")
        return
    try:
        shot = screenshot(page, page.with_suffix(".png"))
    except Exception as e:  # a screenshot is a convenience; the demo goes on without it
        print(f"   (screenshot failed: {e})")
        return
    print(f"== screenshot of the report: {shot}")


def main() -> int:
    import tritonclient.http as httpclient

    from modelport.deploy.example import EXAMPLE_INPUT, EXAMPLE_OUTPUT, example_calibration
    from modelport.runners.onnxruntime import OrtRunner

    cli = [sys.executable, "-m", "modelport.cli.main"]
    print("== modelport deploy (built-in example model)", flush=True)
    subprocess.run([*cli, "deploy", "-o", str(OUT)], check=True)
    print(f"\n== HTML report: {(OUT / 'report.html').resolve()}  (also report.md, report.json)")
    _screenshot(OUT / "report.html")
    print()
    report = (OUT / "report.md").read_text()
    print("## Benchmark" + report.split("## Benchmark")[1].split("## Serve")[0].rstrip())

    port = free_port()
    print(f"\n== modelport serve {OUT / 'repository'} on 127.0.0.1:{port}", flush=True)
    server = subprocess.Popen([*cli, "serve", str(OUT / "repository"), "--host", "127.0.0.1", "--port", str(port)])
    try:
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        wait_ready(client, server)
        images = example_calibration(8)
        model_path = OUT / "repository" / MODEL / "1" / "model.onnx"
        with OrtRunner(model_path) as runner:
            expected = runner.infer({EXAMPLE_INPUT: images})[EXAMPLE_OUTPUT]
        for binary in (True, False):
            inp = httpclient.InferInput(EXAMPLE_INPUT, list(images.shape), "FP32")
            inp.set_data_from_numpy(images, binary_data=binary)
            out = httpclient.InferRequestedOutput(EXAMPLE_OUTPUT, binary_data=binary)
            got = client.infer(MODEL, [inp], outputs=[out]).as_numpy(EXAMPLE_OUTPUT)
            same = got is not None and np.array_equal(got, expected)
            kind = "binary" if binary else "JSON  "
            top1 = got.argmax(1).tolist() if got is not None else None
            verdict = "== in-process ONNX Runtime" if same else "DIFFERS from in-process ONNX Runtime"
            print(f"tritonclient.http {kind} batch 8: top-1 {top1} {verdict}")
            if not same:
                return 1
        one = images[:1]
        inp = httpclient.InferInput(EXAMPLE_INPUT, list(one.shape), "FP32")
        inp.set_data_from_numpy(one, binary_data=True)
        latencies = []
        for _ in range(60):
            t0 = time.perf_counter()
            client.infer(MODEL, [inp])
            latencies.append((time.perf_counter() - t0) * 1e3)
        lat = np.asarray(latencies[10:])
        print(
            f"served latency, batch 1, binary, 1 client: p50 {np.median(lat):.2f} ms, "
            f"p90 {np.percentile(lat, 90):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        print("== server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
