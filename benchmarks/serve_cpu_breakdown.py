"""Where a served request's CPU time goes: each thread of the server process, per request.

Issue 7 asks for served ÷ raw ≥ 0.90 on a 2-core machine where every core is busy: the server's
event loop, ONNX Runtime's threads and the load client all share them, so the ratio is raw CPU per
image over (raw CPU + everything else). This script starts one server from benchmarks/serve_vs_peers.py
on its CNN, drives it with benchmarks/_load.py, and prints each thread's CPU seconds (user/sys from
/proc) over the window, divided by the requests completed.

Run: .venv/bin/python benchmarks/serve_cpu_breakdown.py [--server modelport] [--clients 4] [--seconds 10]
     [--config 'allow_spinning: false']
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import serve_vs_peers as peers
from _load import write_requests

CLOCK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, tuple[str, float, float]]:
    """tid -> (name, user s, sys s) for every thread of ``pid``."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            continue  # the thread ended
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(tid)] = (name, int(fields[11]) / CLOCK, int(fields[12]) / CLOCK)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--server", default="modelport", choices=sorted(peers.SERVERS))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--config", default="", help="config.yaml text for the modelport servers")
    parser.add_argument("--out", type=Path, default=Path("/tmp/serve-cpu-breakdown"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.out / f"run-{os.getpid()}"
    folder.mkdir()
    bench = peers.prepare(folder, argparse.Namespace(width=48, image=224, modelport_config=args.config))
    server = peers.SERVERS[args.server]
    requests = bench.folder / f"{args.server}.requests"
    write_requests(requests, [server.encode(x) for x in bench.images])
    with peers.ServerProcess(server, bench) as process:
        peers.run_load(process, requests, args.clients, 2.0, 1.0)  # warm up
        before = thread_cpu(process.process.pid)
        result = peers.run_load(process, requests, args.clients, args.seconds, 0.5)
        after = thread_cpu(process.process.pid)
    done = int(result.get("completed") or 0)
    if not done:
        raise SystemExit(f"no request completed: {result.get('status')}")
    print(
        f"{args.server}, {args.clients} clients, {done} requests in {args.seconds:.0f} s ({done / args.seconds:.1f}/s)"
    )
    print("| thread | name | user ms/req | sys ms/req | total ms/req |")
    print("|---|---|---|---|---|")
    total = 0.0
    for tid, (name, user, system) in sorted(after.items()):
        _, user0, system0 = before.get(tid, (name, 0.0, 0.0))
        du, ds = (user - user0) * 1e3 / done, (system - system0) * 1e3 / done
        total += du + ds
        if du + ds > 0.01:
            print(f"| {tid} | {name} | {du:.2f} | {ds:.2f} | {du + ds:.2f} |")
    print(f"| all | | | | {total:.2f} |")


if __name__ == "__main__":
    main()
