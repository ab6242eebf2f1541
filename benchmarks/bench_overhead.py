"""Harness overhead: modelport bench's measured throughput vs a hand-written tight ``session.run`` loop.

The harness is only trustworthy if timing a model does not slow it down. For each model this runs,
on ONE ONNX Runtime session, interleaved windows (the order alternates every round, so drift and
neighbours hit both sides alike):

  * hand loop  — ``for _ in range(n): session.run(None, feeds)`` between two ``perf_counter`` calls;
                 throughput = n x batch / elapsed;
  * modelport  — :func:`modelport.bench.harness.measure` on a ``RunnerWorkload`` of the same runner,
                 ``n`` iterations in one window: the throughput modelport itself reports;
  * Runner.infer — for reference: the same loop through ``runner.infer(feeds, check=False)``, the
                 generic path (what the harness avoids by calling ``session.run`` directly).

It prints, per model, the median throughput of each and three ratios modelport / hand loop: of the
medians, paired per round (median, min-max), and pooled over all rounds (total items over total
time). Target: the paired median within 2 % of 1. The min-max spread of the paired ratios is the
noise floor of the machine at the time (on a shared 2-core VM, several percent per window); more
rounds of short windows narrow the median.

It also times both loops around a call that does nothing, which isolates what the harness's loop
itself adds per call (a clock read and a store into a preallocated list): the call time below
which that would exceed 2 % follows from it.

Models: the built-in example CNN (96x96, batch 1: a few milliseconds a call) and a small MLP
(256 wide, batch 1: tens of microseconds a call, where a per-call overhead would show most).

Run: .venv/bin/python benchmarks/bench_overhead.py --rounds 100 --window 0.2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.bench.harness import BenchSettings, Call, RunnerWorkload, Workload, measure
from modelport.deploy.example import example_model
from modelport.runners.onnxruntime import OrtRunner

TARGET = 0.02


def mlp_model(width: int = 256, layers: int = 3) -> ir.Model:
    """x [N, width] -> ``layers`` x (MatMul + Add + Relu), random weights (seeded)."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    current = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        b = rng.standard_normal(width).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
            helper.make_node("Relu", [f"a{i}"], [f"h{i}"]),
        ]
        current = f"h{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", width])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return ir.serde.deserialize_model(proto)


@dataclass
class Contender:
    name: str
    throughputs: list[float] = field(default_factory=list)


def hand_loop(run: Callable[..., Any], feeds: dict[str, np.ndarray[Any, Any]], n: int, batch: int) -> float:
    """The loop anyone would write: items per second over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        run(None, feeds)
    return n * batch / (time.perf_counter() - start)


def infer_loop(runner: OrtRunner, feeds: dict[str, np.ndarray[Any, Any]], n: int, batch: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        runner.infer(feeds, check=False)
    return n * batch / (time.perf_counter() - start)


def harness_window(runner: OrtRunner, feeds: dict[str, np.ndarray[Any, Any]], n: int) -> float:
    settings = BenchSettings(warmup=1, iterations=n, max_windows=1)
    return measure([RunnerWorkload(runner, feeds)], settings, name=runner.name).throughput


def _noop(first: object, second: object) -> None:
    return None


class NoopWorkload(Workload):
    """A call that does nothing: what remains is the harness's own loop."""

    def __init__(self) -> None:
        super().__init__(1, on_device=False, unmeasured={})

    def validate(self) -> None:
        return None

    @property
    def call(self) -> Call:
        return _noop, None, None


def loop_overhead(rounds: int, n: int = 1_000_000) -> dict[str, float]:
    """Nanoseconds per no-op call: a bare ``for`` loop vs the harness (medians of interleaved rounds)."""
    hand, ours = [], []
    settings = BenchSettings(warmup=1, iterations=n, max_windows=1)
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            _noop(None, None)
        hand.append((time.perf_counter() - start) / n * 1e9)
        ours.append(1e9 / measure([NoopWorkload()], settings, name="noop").throughput)
    return {"hand_ns": statistics.median(hand), "harness_ns": statistics.median(ours)}


def compare(
    name: str, model: ir.Model, shape: tuple[int, ...], rounds: int, window: float, threads: int
) -> dict[str, Any]:
    feeds = {"x" if name == "mlp" else "image": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    batch = shape[0]
    runner = OrtRunner(model, intra_op_threads=threads, name=name)
    with runner:
        run = runner.session.run
        for _ in range(20):  # warm-up, and the cost of one call
            run(None, feeds)
        start = time.perf_counter()
        for _ in range(20):
            run(None, feeds)
        n = max(20, int(window / ((time.perf_counter() - start) / 20)))
        hand, ours, infer = Contender("hand loop"), Contender("modelport"), Contender("Runner.infer")
        for i in range(rounds):
            steps: list[tuple[Contender, Callable[[], float]]] = [
                (hand, lambda: hand_loop(run, feeds, n, batch)),
                (ours, lambda: harness_window(runner, feeds, n)),
                (infer, lambda: infer_loop(runner, feeds, n, batch)),
            ]
            for contender, step in steps if i % 2 == 0 else steps[::-1]:
                contender.throughputs.append(step())
    ratios = [o / h for o, h in zip(ours.throughputs, hand.throughputs, strict=True)]
    return {
        "model": name,
        "batch": batch,
        "iterations_per_window": n,
        "rounds": rounds,
        "median_items_per_s": {c.name: statistics.median(c.throughputs) for c in (hand, ours, infer)},
        "ratio_of_medians": statistics.median(ours.throughputs) / statistics.median(hand.throughputs),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_pooled": sum(1 / h for h in hand.throughputs) / sum(1 / o for o in ours.throughputs),
        "infer_ratio_median": statistics.median(
            i / h for i, h in zip(infer.throughputs, hand.throughputs, strict=True)
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds per model (default %(default)s)")
    parser.add_argument("--window", type=float, default=0.5, help="seconds per window (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default %(default)s)")
    parser.add_argument("--models", default="example,mlp", help="comma separated: example, mlp (default %(default)s)")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    cases = {
        "example": (example_model(), (1, 3, 96, 96)),
        "mlp": (mlp_model(), (1, 256)),
    }
    rows = []
    for name in args.models.split(","):
        model, shape = cases[name.strip()]
        rows.append(compare(name.strip(), model, shape, args.rounds, args.window, args.threads))
    table = Table(
        title=f"harness overhead: {args.rounds} interleaved rounds of {args.window} s, {args.threads} thread(s); "
        "ratios are modelport / hand loop"
    )
    for column in ("model", "calls/window", "hand loop items/s", "modelport items/s", "Runner.infer items/s"):
        table.add_column(column, justify="right")
    for column in ("medians", "paired (median, min-max)", "pooled", "within 2 %"):
        table.add_column(column, justify="right")
    for row in rows:
        med = row["median_items_per_s"]
        table.add_row(
            row["model"],
            str(row["iterations_per_window"]),
            f"{med['hand loop']:.1f}",
            f"{med['modelport']:.1f}",
            f"{med['Runner.infer']:.1f}",
            f"{row['ratio_of_medians']:.4f}",
            f"{row['ratio_median']:.4f} ({row['ratio_min']:.3f}-{row['ratio_max']:.3f})",
            f"{row['ratio_pooled']:.4f}",
            "yes" if abs(row["ratio_median"] - 1) <= TARGET else "NO",
        )
    out = Console(width=max(Console().width, 150))
    out.print(table)
    loop = loop_overhead(max(3, args.rounds // 4))
    added = loop["harness_ns"] - loop["hand_ns"]
    out.print(
        f"no-op call: hand loop {loop['hand_ns']:.0f} ns, harness {loop['harness_ns']:.0f} ns per call — the harness "
        f"adds {added:.0f} ns, which is 2 % of a call of {added / TARGET / 1e3:.1f} us"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"models": rows, "noop_loop": loop}, handle, indent=2)
    return 0 if all(abs(r["ratio_median"] - 1) <= TARGET for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
