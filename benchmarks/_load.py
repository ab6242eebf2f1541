"""A closed-loop HTTP/1.1 load generator cheap enough to share two cores with the server it drives.

benchmarks/serve_vs_peers.py measures how much of raw ONNX Runtime throughput a server delivers on
a 2-core machine, so every CPU cycle the client spends is a cycle the server does not get. Stock
clients (httpx, aiohttp, tritonclient) parse and build requests in Python per call and cost a large
share of a core at a few hundred requests per second. This one does the least that is still honest:

* every request is encoded once, up front, as the exact bytes sent on the wire (request line,
  headers, body); a client cycles through them;
* one keep-alive connection per simulated client over ``asyncio.open_connection`` (uvloop when it
  is installed), a closed loop: send, read the whole response, send the next;
* minimal response parsing: status line, headers, a ``Content-Length`` body (chunked bodies are
  read too, in case a server streams);
* a warm-up, then a fixed window; every latency of a request that completed inside the window is
  kept; a sample of response bodies (each client's first in the window, then every 50th) comes back raw so
  the caller can check them against the engine's own output — a server that returns garbage fast
  cannot win — and the length of every body is counted, so one odd response among the unsampled
  shows up too;
* CPU seconds (utime + stime from ``/proc``) of the server's process tree, of this process, and of
  the whole machine, read at the window's two edges.

Run in its own process, never in the server's::

    python benchmarks/_load.py http://127.0.0.1:8000/predict --requests REQS --clients 16 \\
        --warmup 2 --seconds 15 --watch-pid SERVER_PID

``REQS`` is written by :func:`write_requests` (serve_vs_peers.py does it). One JSON document goes to
stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import json
import os
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Request", "read_requests", "write_requests"]

_FRAME = struct.Struct("<II")  # lengths of the JSON headers and of the body
_SAMPLE_EVERY = 50
_MAX_SAMPLES = 64
_CLK_TCK = os.sysconf("SC_CLK_TCK")

Response = tuple[int, dict[str, str], bytes]  # status, lower-cased headers, body


@dataclass(frozen=True)
class Request:
    """One request to send: its extra headers and body (method POST, path from the URL)."""

    headers: dict[str, str]
    body: bytes


def write_requests(path: Path, requests: Sequence[Request]) -> None:
    """Store requests for the load process: per request, two lengths, its headers as JSON, its body."""
    with path.open("wb") as sink:
        for request in requests:
            header = json.dumps(request.headers).encode()
            sink.write(_FRAME.pack(len(header), len(request.body)))
            sink.write(header)
            sink.write(request.body)


def read_requests(path: Path) -> list[Request]:
    data = path.read_bytes()
    requests, offset = [], 0
    while offset < len(data):
        header_size, body_size = _FRAME.unpack_from(data, offset)
        offset += _FRAME.size
        headers = json.loads(data[offset : offset + header_size])
        offset += header_size
        requests.append(Request(headers, data[offset : offset + body_size]))
        offset += body_size
    if not requests:
        raise SystemExit(f"{path} holds no requests — write them with write_requests()")
    return requests


def encode_http(host: str, port: int, path: str, request: Request) -> bytes:
    """The whole HTTP/1.1 request as it goes on the wire."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(request.body)}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


# --------------------------------------------------------------------------------------------------
# CPU accounting from /proc
# --------------------------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads); 0 once it has exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (servers that fork workers: LitServe, uvicorn --workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine so far, all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


@dataclass
class CpuMark:
    """CPU counters at one instant."""

    server: float
    client: float
    machine_busy: float
    machine_total: float

    @classmethod
    def now(cls, server_pids: Sequence[int]) -> CpuMark:
        times = os.times()
        busy, total = machine_cpu_seconds()
        return cls(sum(process_cpu_seconds(p) for p in server_pids), times.user + times.system, busy, total)


# --------------------------------------------------------------------------------------------------
# The clients
# --------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients saw; only requests that completed inside the window count."""

    window: tuple[float, float] = (float("inf"), float("inf"))
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    lengths: Counter[int] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    sampled: set[int] = field(default_factory=set)
    reconnects: int = 0
    stop: bool = False

    def record(self, client: int, index: int, started: float, response: Response) -> None:
        done = time.perf_counter()
        if not self.window[0] <= done <= self.window[1]:
            return
        status, headers, body = response
        if status != 200:
            self.errors[f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"] += 1
            return
        self.latencies.append(done - started)
        self.lengths[len(body)] += 1
        first = client not in self.sampled
        if (first or len(self.latencies) % _SAMPLE_EVERY == 0) and len(self.samples) < _MAX_SAMPLES:
            self.sampled.add(client)
            self.samples.append(
                {"client": client, "request": index, "headers": headers, "body": base64.b64encode(body).decode()}
            )


async def read_response(reader: asyncio.StreamReader) -> Response:
    """One HTTP/1.1 response: (status, lower-cased headers, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return status, headers, await _read_chunked(reader)
    raise ConnectionError(f"response {status_line!r} has neither Content-Length nor chunked encoding")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers expected: the empty line
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def client(number: int, host: str, port: int, wire: Sequence[bytes], tally: Tally) -> None:
    """A closed loop on one keep-alive connection; client ``n`` starts at request ``n`` of the list."""
    reader, writer = await asyncio.open_connection(host, port)
    count = 0
    try:
        while not tally.stop:
            index = (number + count) % len(wire)
            started = time.perf_counter()
            try:
                writer.write(wire[index])
                await writer.drain()
                response = await read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                tally.errors[f"connection: {type(e).__name__}: {e}"] += 1
                tally.reconnects += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            tally.record(number, index, started, response)
            count += 1
    finally:
        writer.close()


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    wire = [encode_http(host, port, url.path or "/", r) for r in read_requests(args.requests)]
    tally = Tally()
    tasks = [asyncio.create_task(client(n, host, port, wire, tally)) for n in range(args.clients)]
    await asyncio.sleep(args.warmup)
    pids = process_tree(args.watch_pid) if args.watch_pid else []
    start_mark, start = CpuMark.now(pids), time.perf_counter()
    tally.window = (start, start + args.seconds)
    await asyncio.sleep(args.seconds)
    end_mark, end = CpuMark.now(pids), time.perf_counter()
    tally.stop = True
    failed = [t for t in tasks if t.done() and t.exception() is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "url": args.url,
        "clients": args.clients,
        "seconds": end - start,
        "completed": len(tally.latencies),
        "latencies_s": tally.latencies,
        "errors": dict(tally.errors),
        "client_crashes": [repr(t.exception()) for t in failed],
        "reconnects": tally.reconnects,
        "body_lengths": {str(k): v for k, v in tally.lengths.items()},
        "samples": tally.samples,
        "server_pids": pids,
        "cpu_s": {
            "server": end_mark.server - start_mark.server,
            "client": end_mark.client - start_mark.client,
            "machine_busy": end_mark.machine_busy - start_mark.machine_busy,
            "machine_total": end_mark.machine_total - start_mark.machine_total,
        },
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url", help="http://HOST:PORT/PATH to POST to")
    parser.add_argument("--requests", type=Path, required=True, help="file written by write_requests()")
    parser.add_argument("--clients", type=int, default=1, help="concurrent connections, one request in flight each")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the window opens")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the measured window")
    parser.add_argument("--watch-pid", type=int, default=0, help="server process whose tree's CPU time to measure")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    use_uvloop = args.loop == "uvloop" or (args.loop == "auto" and importlib.util.find_spec("uvloop") is not None)
    if use_uvloop:
        import uvloop

        result = uvloop.run(drive(args))
    else:
        result = asyncio.run(drive(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
