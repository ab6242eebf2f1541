"""Does ``modelport analyze`` find a configuration that beats the default on a two-model repository?

The question (issue 6): two models share one machine; the repository's default configuration
(no config.yaml: one instance each, no dynamic batching, the server dividing the cores between
the instances) against the configuration the quick (hill-climbing) search finds, both measured
with the real server and one loadtest per model running at the same time.

The repository is built here, in a temporary folder, from two models of different kinds, built
with onnx.helper and seeded numpy weights, each with a dynamic batch axis:

* ``cnn``: ``image[batch, 3, 128, 128] -> logits[batch, 10]``, three stages of two Conv-ReLU (the
  first with stride 2; widths 32/64/128), global pooling and a Gemm. Compute-bound (~2 ms per
  image on one core): a batch costs about its images' worth.
* ``mlp``: ``x[batch, 512] -> y[batch, 10]``, MatMul-Add-ReLU layers 512 -> 2048 -> 2048 -> 2048
  -> 10 (38 MB of weights). Bound by reading its weights (~2.5 ms per call on one core), so a
  batch of 8 costs about what one row does — the kind of model (recommenders, decoders) that
  dynamic batching is for.

:func:`modelport.bench.analyze.analyze` then runs in quick mode: each candidate starts the server
on a copy of the repository with its config.yaml files, drives both models at ``--concurrency``
clients each for ``--max-windows`` windows of ``--window`` seconds (figures from the last three),
and stops the server. At the end the default and the best are measured again back to back (so
drift does not flatter the winner); the table shows those two measurements side by side.

Columns: *infer/s* per model and in total; *p99 ms* per model (client-side, all inferences in the
measured windows); *MiB*: the server's peak resident memory. *found ÷ default*: total throughput
ratio. The verdict line says whether analyze beat the default by more than the noise margin (3 %).

Run: .venv/bin/python benchmarks/analyze_two_models.py [--concurrency 8] [--window 2] [--max-windows 4]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from modelport.bench.analyze import AnalysisResult, Measurement, analyze


def _conv(x: str, i: int, cin: int, cout: int, stride: int, rng: np.random.Generator) -> tuple[list[Any], list[Any]]:
    w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * np.float32(np.sqrt(2.0 / (cin * 9)))
    b = (rng.standard_normal(cout) * 0.01).astype(np.float32)
    inits = [numpy_helper.from_array(w, f"conv{i}.w"), numpy_helper.from_array(b, f"conv{i}.b")]
    conv = helper.make_node(
        "Conv", [x, f"conv{i}.w", f"conv{i}.b"], [f"c{i}"], kernel_shape=[3, 3], strides=[stride] * 2, pads=[1] * 4
    )
    return [conv, helper.make_node("Relu", [f"c{i}"], [f"r{i}"])], inits


def cnn(size: int = 128, widths: tuple[int, ...] = (32, 64, 128), seed: int = 1) -> onnx.ModelProto:
    """Per width a stage of two Conv(3x3)-ReLU (the first with stride 2), then global average
    pooling and a Gemm to 10 logits."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x, cin = "image", 3
    for i, (cout, stride) in enumerate((w, s) for w in widths for s in (2, 1)):
        more_nodes, more_inits = _conv(x, i, cin, cout, stride, rng)
        nodes += more_nodes
        inits += more_inits
        x, cin = f"r{i}", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    fc = (rng.standard_normal((10, cin)) / np.sqrt(cin)).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc.w"), numpy_helper.from_array(np.zeros(10, np.float32), "fc.b")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1))
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])]
    return _model(helper.make_graph(nodes, "cnn", inputs, outputs, inits))


def mlp(sizes: tuple[int, ...] = (512, 2048, 2048, 2048, 10), seed: int = 2) -> onnx.ModelProto:
    """MatMul-Add-ReLU layers of the given widths (the last without ReLU)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "x"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"fc{i}.w"),
            numpy_helper.from_array(np.zeros(fan_out, np.float32), f"fc{i}.b"),
        ]
        nodes.append(helper.make_node("MatMul", [x, f"fc{i}.w"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"fc{i}.b"], [f"a{i}"]))
        x = f"a{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])]
    return _model(helper.make_graph(nodes, "mlp", inputs, outputs, inits))


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model


def build_repository(root: Path) -> None:
    """REPO/cnn/1/model.onnx and REPO/mlp/1/model.onnx, no config.yaml (the defaults)."""
    for name, model in (("cnn", cnn()), ("mlp", mlp())):
        folder = root / name / "1"
        folder.mkdir(parents=True)
        onnx.save(model, folder / "model.onnx")


def _row(label: str, m: Measurement, names: list[str]) -> list[str]:
    cells = [label]
    for name in names:
        load = m.loads.get(name)
        cells += [f"{load.throughput:.1f}", f"{load.p99_ms:.2f}"] if load is not None else ["—", "—"]
    cells += [f"{m.throughput:.1f}", f"{m.p99_ms:.2f}", f"{m.memory_mb:.0f}" if m.memory_mb else "—"]
    if not m.feasible:
        cells[0] += f" ({'; '.join(m.violations)})"
    return cells


def _markdown(head: list[str], rows: list[list[str]]) -> None:
    print("\n| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_table(result: AnalysisResult, command: str, seconds: float) -> None:
    names = list(result.concurrency)
    head = [
        "config",
        *[f"{n} {col}" for n in names for col in ("infer/s", "p99 ms")],
        "total infer/s",
        "worst p99",
        "MiB",
    ]
    pair = result.comparison
    load = ", ".join(f"{n} at {c} clients" for n, c in result.concurrency.items())
    print(f"\n## analyze: two models on {result.cores} cores, {load}")
    print(f"\ncommand: {command}")
    print(f"search: {result.mode}, {len(result.measurements)} candidates measured in {seconds:.0f} s")
    if pair is None:
        print("no candidate met the constraints")
        return
    print("\nEvery candidate, in the order measured:")
    _markdown(head, [_row(f"{i}. {m.candidate.label}", m, names) for i, m in enumerate(result.measurements, 1)])
    where = "measured again back to back after the search" if result.confirmation else "from the search"
    print(f"\nDefault against found ({where}):")
    _markdown(head, [_row("default", pair[0], names), _row("found", pair[1], names)])
    print(f"\ndefault: {pair[0].candidate.label}")
    print(f"found:   {pair[1].candidate.label}")
    gain = result.gain or 0.0
    verdict = "beats" if gain > 1.03 else "does NOT beat"
    print(f"\nfound ÷ default (total throughput): {gain:.2f}× — analyze {verdict} the default (margin 3 %)")
    for note in result.notes:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=8, help="clients per model (default %(default)s)")
    parser.add_argument("--window", type=float, default=2.0, help="seconds per window (default %(default)s)")
    parser.add_argument("--max-windows", type=int, default=4, help="windows per candidate (default %(default)s)")
    parser.add_argument("--batching", default="off,0,1,4", help="delays to search (default %(default)s)")
    parser.add_argument("--html", type=Path, help="also write the HTML report here")
    parser.add_argument("--json", type=Path, help="also write the full result as JSON here")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every candidate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    batching: list[float | None] = [None if b == "off" else float(b) for b in args.batching.split(",")]
    with tempfile.TemporaryDirectory(prefix="analyze-bench-") as temp:
        repo = Path(temp) / "repo"
        build_repository(repo)
        command = (
            f"modelport analyze REPO --search quick --concurrency {args.concurrency} --batching {args.batching} "
            f"--max-batch 8 --window {args.window:g} --max-windows {args.max_windows}"
        )
        started = time.monotonic()

        def progress(m: Measurement) -> None:
            print(f"  {m.candidate.label}: {m.throughput:.1f} infer/s, p99 {m.p99_ms:.2f} ms", file=sys.stderr)

        result = analyze(
            repo,
            concurrency=args.concurrency,
            mode="quick",
            batching=batching,
            max_batch=[8],
            window_s=args.window,
            max_windows=args.max_windows,
            progress=progress,
        )
        print_table(result, command, time.monotonic() - started)
        if args.html:
            result.write_html(args.html)
        if args.json:
            result.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
