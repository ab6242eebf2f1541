"""Optimize a 2.25 GiB model with external data: time, peak RSS, and the output after a move.

The model is built here, streamed to disk tensor by tensor (it never exists in memory at once):
an MLP tower of 36 layers ``x -> MatMul(W_i[4096, 4096]) -> Add(b_i) -> Relu`` with the litter
exporters leave behind (Identity, inference Dropout, a same-type Cast, a Shape -> Gather ->
Unsqueeze -> Concat -> Reshape flatten at the end). 36 x 64 MiB = 2.25 GiB of weights.

``modelport optimize`` runs in a child process so that its peak RSS is its own; the output
folder is then moved and the moved model is loaded and run in ONNX Runtime against the input
model on the same data.

Target (issue 3): optimized in <= 5 s with <= 0.5 GB peak RSS.

    .venv/bin/python benchmarks/large_model.py [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HIDDEN = 4096
LAYERS = 36


def build(path: Path, layers: int = LAYERS, hidden: int = HIDDEN) -> int:
    """Write the model and its ``.data`` file; return the weight bytes."""
    from onnx import TensorProto, helper

    data_name = path.name + ".data"
    rng = np.random.default_rng(0)
    initializers = []
    nodes = []
    offset = 0
    with open(path.parent / data_name, "wb") as data:

        def external(name: str, array: np.ndarray) -> None:
            nonlocal offset
            raw = np.ascontiguousarray(array).tobytes()
            data.write(raw)
            tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(array.shape))
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
            initializers.append(tensor)

        h = "x"
        for i in range(layers):
            # Scaled so that activations stay O(1) through the tower.
            weight = rng.random((hidden, hidden), dtype=np.float32)
            weight -= 0.5
            weight *= np.float32(np.sqrt(12.0 / hidden))  # unit variance per output
            external(f"w{i}", weight)
            del weight
            initializers.append(helper.make_tensor(f"b{i}", TensorProto.FLOAT, [hidden], np.zeros(hidden, np.float32)))
            nodes += [
                helper.make_node("Identity", [h], [f"id{i}"]),
                helper.make_node("MatMul", [f"id{i}", f"w{i}"], [f"mm{i}"]),
                helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"]),
                helper.make_node("Relu", [f"add{i}"], [f"relu{i}"]),
                helper.make_node("Dropout", [f"relu{i}"], [f"drop{i}"]),
                helper.make_node("Cast", [f"drop{i}"], [f"h{i}"], to=TensorProto.FLOAT),
            ]
            h = f"h{i}"
    nodes += [
        helper.make_node("Shape", [h], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "width"], ["target"], axis=0),
        helper.make_node("Reshape", [h, "target"], ["y"]),
    ]
    initializers += [
        helper.make_tensor("zero", TensorProto.INT64, [], [0]),
        helper.make_tensor("axes0", TensorProto.INT64, [1], [0]),
        helper.make_tensor("width", TensorProto.INT64, [1], [hidden]),
    ]
    graph = helper.make_graph(
        nodes,
        "tower",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", hidden])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.write_bytes(model.SerializeToString())
    return offset


_CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from modelport.ir.serde import load, save
from modelport.passes.manager import optimize
t_import = time.perf_counter()
model = load(sys.argv[1])
t_load = time.perf_counter()
result = optimize(model)
t_opt = time.perf_counter()
save(result.model, sys.argv[2], external_data=True)
t_save = time.perf_counter()
print(json.dumps({
    "import_s": t_import - t0, "load_s": t_load - t_import, "optimize_s": t_opt - t_load,
    "save_s": t_save - t_opt, "total_s": t_save - t_import,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "nodes": [result.nodes_before, result.nodes_after], "verification": result.verification,
    "steps": [[s.name, s.status, s.nodes_before, s.nodes_after, round(s.seconds, 3), s.reason] for s in result.steps],
}))
"""


def _run_both(original: Path, optimized: Path) -> float:
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((2, HIDDEN)).astype(np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    outs = []
    for path in (original, optimized):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outs.append(session.run(None, {"x": x})[0])
        del session
    return float(np.max(np.abs(outs[0] - outs[1])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="where to build (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="modelport-large-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        source = work / "in" / "tower.onnx"
        source.parent.mkdir(exist_ok=True)
        data = source.parent / (source.name + ".data")
        if args.keep and source.exists() and data.exists():
            weights = data.stat().st_size  # built by an earlier --keep run
            print(f"reusing {source} ({weights / 2**30:.2f} GiB of weights)")
        else:
            t0 = time.perf_counter()
            weights = build(source)
            print(f"built {source} ({weights / 2**30:.2f} GiB of weights) in {time.perf_counter() - t0:.1f} s")
        for old in (work / "out", work / "moved"):
            shutil.rmtree(old, ignore_errors=True)
        out = work / "out" / "tower.onnx"
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(source), str(out)], capture_output=True, text=True, check=False
        )
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return 1
        report = json.loads(child.stdout.strip().splitlines()[-1])
        moved = work / "moved"
        shutil.move(str(out.parent), moved)
        diff = _run_both(source, moved / "tower.onnx")
        budget_ok = report["total_s"] <= 5.0 and report["peak_rss_mb"] <= 500
        print()
        print("| model | weights | nodes | load s | optimize s | save s | total s | peak RSS MB | verification |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(
            f"| tower-36x4096 | {weights / 2**30:.2f} GiB | {report['nodes'][0]} → {report['nodes'][1]} | "
            f"{report['load_s']:.2f} | {report['optimize_s']:.2f} | {report['save_s']:.2f} | "
            f"{report['total_s']:.2f} | {report['peak_rss_mb']:.0f} | {report['verification']} |"
        )
        print()
        for step in report["steps"]:
            print("   ", *step)
        print(f"moved output loads and runs; max abs diff vs input model: {diff:.3g}")
        print(f"target (<= 5 s, <= 0.5 GB peak RSS): {'met' if budget_ok else 'NOT met'}")
        return 0 if budget_ok and diff <= 1e-4 else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
