"""Graph optimization: modelport vs onnxslim, onnxsim, the onnxscript optimizer and ONNX Runtime offline.

Side by side in one run, on CNN / transformer / detector graphs built in code with torch and on real
models shipped in packages (see benchmarks/_peer_models.py). Every tool runs in a fresh subprocess,
so its peak RSS (VmHWM) is its own — interpreter and imports included — and a crash or a
hang is one row of the table, not the end of the run. Each tool is used the way its documentation
shows, with default settings:

  * modelport    — ``modelport.passes.manager.optimize`` (default pipeline, every pass verified in
                   ONNX Runtime at batch 1 and 2; ``--target`` is passed when optimize accepts it);
  * modelport-nv — the same with ``verify=False`` (diagnostic row: what the verification costs);
  * onnxslim     — ``onnxslim.slim(proto)``;
  * onnxsim      — ``onnxsim.simplify(proto)``;
  * onnxscript   — ``onnxscript.optimizer.optimize(ir_model)``;
  * ort-basic    — ``SessionOptions.optimized_model_filepath`` at ORT_ENABLE_BASIC (portable);
  * ort-extended — the same at ORT_ENABLE_EXTENDED (com.microsoft ops: CPU/ORT-specific, marked †
                   and only compared for node count with modelport when ``--target onnxruntime``).

Columns. *tool s*: the optimize call alone, each tool's modules imported before the clock starts
(onnxsim and onnxslim import onnxruntime at module import; for modelport, which imports it on
first use, the child imports it first); for ORT: creating the session that writes the file;
*total s*: load + optimize + save inside the child; *peak RSS*: of the child process; *create ms*:
ONNX Runtime session creation at its default level (ENABLE_ALL), median of 3; *lat off / lat all*:
median ms at batch 1 over ``--repeat`` runs with graph optimizations disabled / at ENABLE_ALL,
2 intra-op threads, every row timed in the same interleaved rounds; *max abs diff*: of every
output against the input model (ONNX Runtime, optimizations off) on the same inputs at batch 1
and — when the input model has a dynamic batch — batch 2. Inputs are realistic: token ids inside
the vocabulary, padding masks of 0/1, byte values.

A *regression* is: the tool crashed or timed out, its output does not load or run, it no longer
accepts batch 2 ("frozen batch", a known failure mode of shape-specializing simplifiers), an output
changed shape, or an output differs by more than 1e-4 + 1e-4·|reference| anywhere. Ratios ("×best",
"×fastest") are against the best peer: fewest nodes among peers without a regression (ort-extended
excluded unless the target is onnxruntime), shortest tool time among peers without a regression
(a fast tool whose output does not load sets no bar).

Run: .venv/bin/python benchmarks/optimize_vs_peers.py [--models resnet18,bert-legacy,...] [--repeat 10]
     [--out DIR] [--json PATH] [--target onnxruntime] [--ours-args '{"batches": [1, 2]}']
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer_models import BUILDERS, Case, ModelUnavailableError

OURS, OURS_NO_VERIFY = "modelport", "modelport-nv"
#: Tool name -> distribution whose version the header prints.
TOOLS: dict[str, str] = {
    OURS: "modelport",
    OURS_NO_VERIFY: "modelport",
    "onnxslim": "onnxslim",
    "onnxsim": "onnxsim",
    "onnxscript": "onnxscript",
    "ort-basic": "onnxruntime",
    "ort-extended": "onnxruntime",
}
CPU_SPECIFIC = {"ort-extended"}
DIAGNOSTIC = {OURS_NO_VERIFY}
ATOL, RTOL = 1e-4, 1e-4
THREADS = 2


# ==================================================================================================
# Child process: run one tool on one file, print one JSON line
# ==================================================================================================


def _peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM).

    Not ``getrusage().ru_maxrss``: Linux carries that over from the parent across fork + exec, so
    every child would report at least the parent's size (torch imported: ~600 MiB).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is


def _run_modelport(src: str, dst: str, options: dict[str, Any]) -> dict[str, Any]:
    # Imported before the clock, as onnxsim and onnxslim import onnxruntime at module import;
    # modelport imports it (and its timing harness) on first use.
    importlib.import_module("onnxruntime")
    importlib.import_module("modelport.bench.harness")
    from modelport.ir.serde import load, save
    from modelport.passes.manager import optimize
    from modelport.verify.inputs import InputPlan

    t0 = time.perf_counter()
    model = load(src)
    t1 = time.perf_counter()
    plan = InputPlan(dims=options["dims"], int_ranges={k: tuple(v) for k, v in options["int_ranges"].items()})
    kwargs = {"plan": plan, **options["kwargs"]}
    result = optimize(model, **kwargs)
    t2 = time.perf_counter()
    save(result.model, dst)
    t3 = time.perf_counter()
    applied = [s.name for s in result.steps if s.status == "applied"]
    info = f"applied: {', '.join(applied) or 'none'}"
    others = [f"{s.name} ({s.status})" for s in result.steps if s.status not in ("applied", "no change")]
    if others:
        info += f"; {', '.join(others)}"
    steps = [[s.name, s.status, round(s.seconds, 4)] for s in result.steps]
    return {"load_s": t1 - t0, "tool_s": t2 - t1, "save_s": t3 - t2, "info": info, "steps": steps}


def _run_onnxslim(src: str, dst: str, options: dict[str, Any]) -> dict[str, Any]:
    import onnx

    onnxslim: Any = importlib.import_module("onnxslim")  # untyped
    t0 = time.perf_counter()
    proto = onnx.load(src)
    t1 = time.perf_counter()
    out = onnxslim.slim(proto)
    t2 = time.perf_counter()
    onnx.save(out, dst)
    return {"load_s": t1 - t0, "tool_s": t2 - t1, "save_s": time.perf_counter() - t2}


def _run_onnxsim(src: str, dst: str, options: dict[str, Any]) -> dict[str, Any]:
    import onnx

    onnxsim: Any = importlib.import_module("onnxsim")  # untyped
    t0 = time.perf_counter()
    proto = onnx.load(src)
    t1 = time.perf_counter()
    out, check = onnxsim.simplify(proto)
    t2 = time.perf_counter()
    onnx.save(out, dst)
    return {"load_s": t1 - t0, "tool_s": t2 - t1, "save_s": time.perf_counter() - t2, "info": f"check={check}"}


def _run_onnxscript(src: str, dst: str, options: dict[str, Any]) -> dict[str, Any]:
    import onnx_ir as ir
    import onnxscript.optimizer

    t0 = time.perf_counter()
    model = ir.load(src)
    t1 = time.perf_counter()
    onnxscript.optimizer.optimize(model)
    t2 = time.perf_counter()
    ir.save(model, dst)
    return {"load_s": t1 - t0, "tool_s": t2 - t1, "save_s": time.perf_counter() - t2}


def _run_ort(src: str, dst: str, level_name: str) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level_name)
    options.optimized_model_filepath = dst
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    t0 = time.perf_counter()
    ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
    return {"load_s": 0.0, "tool_s": time.perf_counter() - t0, "save_s": 0.0}


def _run_ort_basic(src: str, dst: str, options: dict[str, Any]) -> dict[str, Any]:
    return _run_ort(src, dst, "ORT_ENABLE_BASIC")


def _run_ort_extended(src: str, dst: str, options: dict[str, Any]) -> dict[str, Any]:
    return _run_ort(src, dst, "ORT_ENABLE_EXTENDED")


def child_main(tool: str, src: str, dst: str, options_json: str) -> None:
    """Entry point of the subprocess: run ``tool``, print a JSON line with timings and peak RSS."""
    warnings.filterwarnings("ignore")
    options = json.loads(options_json)
    runners = {
        OURS: _run_modelport,
        OURS_NO_VERIFY: _run_modelport,
        "onnxslim": _run_onnxslim,
        "onnxsim": _run_onnxsim,
        "onnxscript": _run_onnxscript,
        "ort-basic": _run_ort_basic,
        "ort-extended": _run_ort_extended,
    }
    rss_before = _peak_rss_mib()
    timings = runners[tool](src, dst, options)
    timings["total_s"] = timings["load_s"] + timings["tool_s"] + timings["save_s"]
    timings["peak_rss_mib"] = _peak_rss_mib()
    timings["rss_after_imports_mib"] = rss_before
    print("@@RESULT " + json.dumps(timings), flush=True)


# ==================================================================================================
# Parent: inputs, reference outputs, measurement of every output file
# ==================================================================================================

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _session(path: Path, level: str, *, threads: int = THREADS) -> Any:
    import onnxruntime as ort

    from modelport.bench.harness import INTERLEAVED_ORT_CONFIG

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.intra_op_num_threads = threads
    options.log_severity_level = 4  # a candidate that fails is reported in the table, not on stderr
    # The latency rounds alternate between sessions: one that just ran must not keep its workers
    # spinning on a core while the next is timed (see modelport.bench.harness.INTERLEAVED_ORT_CONFIG).
    for key, value in INTERLEAVED_ORT_CONFIG.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _batch_is_dynamic(session: Any) -> bool:
    shapes = [i.shape for i in session.get_inputs() if i.shape]
    return bool(shapes) and all(not isinstance(s[0], int) for s in shapes)


def make_feeds(session: Any, case: Case, batch: int, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    """Realistic random inputs: named dims from the case, integer ranges, padding-style masks."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    for spec in session.get_inputs():
        shape = [_dim(d, axis, batch, case, spec.name) for axis, d in enumerate(spec.shape)]
        dtype = _ORT_DTYPES.get(spec.type)
        if dtype is None:
            raise ModelUnavailableError(
                f"input '{spec.name}' has type {spec.type}, which this benchmark cannot generate"
            )
        feeds[spec.name] = _values(spec.name, shape, np.dtype(dtype), case, rng)
    return feeds


def _dim(d: Any, axis: int, batch: int, case: Case, name: str) -> int:
    if isinstance(d, int):
        return d
    if axis == 0:
        return batch
    if d in case.dims:
        return case.dims[d]
    raise ModelUnavailableError(f"input '{name}' has dynamic dim '{d}' on axis {axis} — give its size in Case.dims")


def _values(name: str, shape: list[int], dtype: np.dtype[Any], case: Case, rng: np.random.Generator) -> Any:
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    low, high = case.int_ranges.get(name, (0, 16))
    if "mask" in name and (low, high) == (0, 2) and len(shape) == 2:
        lengths = rng.integers(shape[1] // 2, shape[1] + 1, shape[0])  # padding: ones then zeros
        return (np.arange(shape[1])[None, :] < lengths[:, None]).astype(dtype)
    return rng.integers(low, high, shape).astype(dtype)


@dataclass
class Reference:
    """Inputs and the input model's outputs (ORT, optimizations off) at batch 1 and maybe 2."""

    feeds: dict[int, dict[str, np.ndarray[Any, Any]]]
    outputs: dict[int, list[np.ndarray[Any, Any]]]
    dynamic_batch: bool


def reference_for(case: Case) -> Reference:
    session = _session(case.path, "ORT_DISABLE_ALL")
    dynamic = _batch_is_dynamic(session)
    batches = (1, 2) if dynamic else (1,)
    feeds = {b: make_feeds(session, case, b, seed=b) for b in batches}
    return Reference(feeds, {b: session.run(None, f) for b, f in feeds.items()}, dynamic)


@dataclass
class Row:
    """One line of a table: a tool's output (or the input model) and how it fared."""

    tool: str
    status: str = "ok"  # ok | crash: ... | timeout | frozen batch | diff > tol | ...
    nodes: int | None = None
    size_mb: float | None = None
    tool_s: float | None = None
    total_s: float | None = None
    wall_s: float | None = None
    peak_rss_mib: float | None = None
    create_ms: float | None = None
    latency_off_ms: float | None = None
    latency_all_ms: float | None = None
    max_abs_diff: float | None = None
    info: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def regression(self) -> bool:
        return self.status != "ok"


def count_nodes(path: Path) -> int:
    """Nodes of the main graph, its subgraphs and the bodies of model-local functions."""
    import onnx_ir as ir

    model = ir.load(path)
    total = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
    for function in model.functions.values():
        total += sum(1 for _ in ir.traversal.RecursiveGraphIterator(function))
    return total


def file_size_mb(path: Path) -> float:
    """The .onnx file plus the external-data files its initializers point to."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    side = {
        entry.value
        for tensor in proto.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    side_bytes: int = sum((path.parent / str(name)).stat().st_size for name in side)
    return (path.stat().st_size + side_bytes) / 1e6


def _create_ms(path: Path) -> float:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        _session(path, "ORT_ENABLE_ALL")
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure(row: Row, path: Path, reference: Reference) -> None:
    """Fill the size, session-creation and accuracy columns of ``row``; set its status on a regression."""
    try:
        row.nodes, row.size_mb = count_nodes(path), file_size_mb(path)
        row.create_ms = _create_ms(path)
        plain = _session(path, "ORT_DISABLE_ALL")
    except Exception as e:
        row.status = f"output does not load: {_first_line(e)}"
        return
    row.max_abs_diff, problem = compare(plain, reference)
    if problem:
        row.status = problem


def measure_latency(measured: list[tuple[Row, Path]], feeds: dict[str, np.ndarray[Any, Any]], repeat: int) -> None:
    """Batch-1 latency of every output, optimizations off and at ENABLE_ALL, in interleaved rounds.

    One run of each session per round, ``repeat`` rounds, the median per session: load from other
    processes on the machine then hits every row alike instead of whichever was timed last.
    """
    sessions: list[tuple[Row, str, Any]] = []
    for row, path in measured:
        try:
            for level in ("ORT_DISABLE_ALL", "ORT_ENABLE_ALL"):
                session = _session(path, level)
                for _ in range(2):  # warm-up
                    session.run(None, feeds)
                sessions.append((row, level, session))
        except Exception as e:
            row.status = f"output does not run: {_first_line(e)}"
    samples: dict[int, list[float]] = {i: [] for i in range(len(sessions))}
    for _ in range(repeat):
        for i, (_row, _level, session) in enumerate(sessions):
            t0 = time.perf_counter()
            session.run(None, feeds)
            samples[i].append(time.perf_counter() - t0)
    for i, (row, level, _) in enumerate(sessions):
        median_ms = statistics.median(samples[i]) * 1e3
        if level == "ORT_DISABLE_ALL":
            row.latency_off_ms = median_ms
        else:
            row.latency_all_ms = median_ms


def compare(session: Any, reference: Reference) -> tuple[float | None, str]:
    """Worst |candidate - reference| over outputs and batches, and a regression text ('' if none)."""
    worst = 0.0
    for batch, feeds in reference.feeds.items():
        try:
            outputs = session.run(None, feeds)
        except Exception as e:
            return (worst if batch > 1 else None), (
                f"frozen batch ({_first_line(e)})" if batch > 1 else f"does not run: {_first_line(e)}"
            )
        for got, want in zip(outputs, reference.outputs[batch], strict=True):
            if got.shape != want.shape:
                kind = "frozen batch" if batch > 1 else "output shape changed"
                return worst, f"{kind} ({list(want.shape)} -> {list(got.shape)})"
            a, b = got.astype(np.float64), want.astype(np.float64)
            same_nan = np.isnan(a) & np.isnan(b)
            error = np.where(same_nan, 0.0, np.abs(a - b))
            worst = max(worst, float(np.nan_to_num(error, nan=np.inf).max(initial=0.0)))
            if np.any(~(error <= ATOL + RTOL * np.abs(b))):
                return worst, "diff > tol"
    return worst, ""


def _first_line(e: BaseException) -> str:
    """The informative part of an error: ONNX Runtime's 'Load model from <path> failed:' prefix dropped."""
    text = " ".join(str(e).split())
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ?", "", text).split(" failed:", 1)[-1].strip()
    if len(text) > 150:  # ONNX Runtime puts the node first and the reason last: keep both ends
        text = f"{text[:50]} … {text[-95:]}"
    return f"{type(e).__name__}: {text}"


# ==================================================================================================
# Parent: run tools in subprocesses
# ==================================================================================================


@dataclass
class Settings:
    repeat: int
    tool_runs: int
    timeout: float
    ours_kwargs: dict[str, Any]
    target: str | None
    tools: list[str]


def run_tool(tool: str, case: Case, dst: Path, settings: Settings) -> Row:
    """The tool's row from ``--tool-runs`` fresh subprocesses: median times, highest peak RSS."""
    runs = []
    for _ in range(settings.tool_runs):
        row = run_tool_once(tool, case, dst, settings)
        if row.status != "ok":
            return row
        runs.append(row)
    row = runs[-1]
    row.tool_s = statistics.median(r.tool_s or 0.0 for r in runs)
    row.total_s = statistics.median(r.total_s or 0.0 for r in runs)
    row.wall_s = statistics.median(r.wall_s or 0.0 for r in runs)
    row.peak_rss_mib = max(r.peak_rss_mib or 0.0 for r in runs)
    row.extra["tool_s_runs"] = [r.tool_s for r in runs]
    return row


def run_tool_once(tool: str, case: Case, dst: Path, settings: Settings) -> Row:
    row = Row(tool)
    if tool not in (OURS, OURS_NO_VERIFY) and importlib.util.find_spec(TOOLS[tool]) is None:
        row.status = f"not installed (pip install {TOOLS[tool]})"
        return row
    kwargs = dict(settings.ours_kwargs)
    if tool == OURS_NO_VERIFY:
        kwargs["verify"] = False
    options = {"dims": case.dims, "int_ranges": case.int_ranges, "kwargs": kwargs}
    command = [sys.executable, __file__, "--child", tool, str(case.path), str(dst), json.dumps(options)]
    dst.unlink(missing_ok=True)  # a file left by an earlier run must not pass for this run's output
    t0 = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=settings.timeout, check=False)
    except subprocess.TimeoutExpired:
        row.status = f"timeout (> {settings.timeout:.0f} s)"
        return row
    row.wall_s = time.perf_counter() - t0
    lines = [line for line in done.stdout.splitlines() if line.startswith("@@RESULT ")]
    if done.returncode != 0 or not lines or not dst.exists():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        row.status = f"crash: {tail[:140]}"
        return row
    result = json.loads(lines[-1].removeprefix("@@RESULT "))
    row.tool_s, row.total_s, row.peak_rss_mib = result["tool_s"], result["total_s"], result["peak_rss_mib"]
    row.info = result.get("info", "")
    row.extra = {k: result[k] for k in ("load_s", "save_s", "rss_after_imports_mib", "steps") if k in result}
    return row


def benchmark_model(name: str, folder: Path, settings: Settings) -> dict[str, Any]:
    log(f"[{name}] building")
    try:
        case = BUILDERS[name](folder)
        reference = reference_for(case)
    except ModelUnavailableError as e:
        log(f"[{name}] unavailable: {e}")
        return {"model": name, "unavailable": str(e)}
    baseline = Row("input model", info=case.note)
    measure(baseline, case.path, reference)
    rows, measured = [baseline], [(baseline, case.path)]
    for tool in settings.tools:
        log(f"[{name}] {tool}")
        dst = folder / f"{name}.{tool}.onnx"
        row = run_tool(tool, case, dst, settings)
        if row.status == "ok":
            measure(row, dst, reference)
            _flag_static_batch(row, dst, reference)
        if row.status == "ok" or row.status.startswith(("frozen batch", "diff >", "output shape")):
            measured.append((row, dst))
        rows.append(row)
    log(f"[{name}] latency, {settings.repeat} interleaved rounds")
    measure_latency(measured, reference.feeds[1], settings.repeat)
    return {"model": name, "description": case.description, "dynamic_batch": reference.dynamic_batch, "rows": rows}


def _flag_static_batch(row: Row, path: Path, reference: Reference) -> None:
    """An output whose declared batch axis became a number no longer serves batch 2, whatever ORT allows."""
    if not reference.dynamic_batch or row.status != "ok":
        return
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dims = [i.type.tensor_type.shape.dim for i in graph.input if i.type.tensor_type.shape.dim]
    if dims and any(d[0].HasField("dim_value") for d in dims):
        row.status = "frozen batch (input declares a fixed batch)"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ==================================================================================================
# Report
# ==================================================================================================


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None, best: float | None) -> str:
    if value is None or not best:
        return "—"
    return f"{value / best:.2f}x"


def best_peers(rows: list[Row], target: str | None) -> tuple[int | None, float | None]:
    """(fewest nodes, shortest tool time) among the peers whose output has no regression."""
    peers = [r for r in rows if r.tool in TOOLS and r.tool not in (OURS, *DIAGNOSTIC) and not r.regression]
    node_peers = [r for r in peers if target == "onnxruntime" or r.tool not in CPU_SPECIFIC]
    nodes = [r.nodes for r in node_peers if r.nodes is not None]
    times = [r.tool_s for r in peers if r.tool_s is not None]
    return (min(nodes) if nodes else None), (min(times) if times else None)


def print_table(result: dict[str, Any], target: str | None) -> None:
    print(f"\n### {result['model']}\n")
    if "unavailable" in result:
        print(f"not run: {result['unavailable']}")
        return
    rows: list[Row] = result["rows"]
    print(result["description"] + ("" if result["dynamic_batch"] else " (static batch: checked at batch 1 only)"))
    print()
    best_nodes, fastest = best_peers(rows, target)
    print(
        "| tool | nodes | ×best | size MB | tool s | ×fastest | total s | peak RSS MiB | create ms "
        "| lat off ms | lat all ms | max abs diff | status |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = r.tool + (" †" if r.tool in CPU_SPECIFIC else "")
        diff = "—" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e}"
        print(
            f"| {name} | {r.nodes if r.nodes is not None else '—'} | {_ratio(r.nodes, best_nodes)} "
            f"| {_fmt(r.size_mb, 1)} | {_fmt(r.tool_s, 2)} | {_ratio(r.tool_s, fastest)} | {_fmt(r.total_s, 2)} "
            f"| {_fmt(r.peak_rss_mib, 0)} | {_fmt(r.create_ms, 0)} | {_fmt(r.latency_off_ms, 2)} "
            f"| {_fmt(r.latency_all_ms, 2)} | {diff} | {r.status} |"
        )
    print()
    print(summary_line(rows, target))
    ours = next((r for r in rows if r.tool == OURS), None)
    if ours is not None and ours.info:
        print(f"\nmodelport: {ours.info}")


def summary_line(rows: list[Row], target: str | None) -> str:
    ours = next((r for r in rows if r.tool == OURS), None)
    if ours is None:
        return "summary: modelport not run"
    best_nodes, fastest = best_peers(rows, target)
    nodes_ok = ours.nodes is not None and (best_nodes is None or ours.nodes <= best_nodes)
    time_ok = ours.tool_s is not None and (fastest is None or ours.tool_s <= fastest)
    unverified = next((r for r in rows if r.tool == OURS_NO_VERIFY and r.tool_s is not None), None)
    without = f"; {_fmt(unverified.tool_s, 2)} s without verification" if unverified else ""
    yes = {True: "yes", False: "NO"}
    return (
        f"summary: nodes ≤ best peer: {yes[nodes_ok]} ({ours.nodes} vs {best_nodes or '—'}) · "
        f"time ≤ fastest peer: {yes[time_ok]} ({_fmt(ours.tool_s, 2)} s vs {_fmt(fastest, 2)} s{without}) · "
        f"no regression: {yes[not ours.regression]}" + ("" if not ours.regression else f" ({ours.status})")
    )


def versions() -> str:
    parts = []
    for dist in ("modelport", "onnxslim", "onnxsim", "onnxscript", "onnxruntime", "onnx", "onnx-ir", "torch"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


# ==================================================================================================
# Command line
# ==================================================================================================


def ours_kwargs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[dict[str, Any], list[str]]:
    """Keyword arguments for optimize(): --ours-args plus --target, checked against its signature."""
    from modelport.passes.manager import optimize

    accepted = set(inspect.signature(optimize).parameters)
    kwargs: dict[str, Any] = json.loads(args.ours_args) if args.ours_args else {}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        parser.error(f"--ours-args names {unknown}, which optimize() does not accept — it takes {sorted(accepted)}")
    notes = []
    if args.target:
        if "target" in accepted:
            kwargs["target"] = args.target
        else:
            notes.append(f"optimize() has no target= parameter yet: --target {args.target} ignored")
    return kwargs, notes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(BUILDERS), help=f"comma-separated, from: {', '.join(BUILDERS)}")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, from: {', '.join(TOOLS)}")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per latency median (after 2 warm-ups)")
    parser.add_argument("--tool-runs", type=int, default=1, help="runs of each tool (median time, highest RSS)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a tool counts as hung")
    parser.add_argument("--out", type=Path, help="keep the input and output models in this folder")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument("--target", help="passed to modelport's optimize(target=...) when it accepts one")
    parser.add_argument("--ours-args", help="extra optimize() keyword arguments as JSON, e.g. '{\"batches\": [1]}'")
    args = parser.parse_args()
    for option, known in (("models", BUILDERS), ("tools", TOOLS)):
        chosen = [x for x in getattr(args, option).split(",") if x]
        bad = [x for x in chosen if x not in known]
        if bad:
            parser.error(f"--{option}: unknown {bad} — choose from {', '.join(known)}")
        setattr(args, option, chosen)
    args.ours_kwargs, args.notes = ours_kwargs(args, parser)
    return args


def main() -> None:
    args = parse_args()
    settings = Settings(args.repeat, args.tool_runs, args.timeout, args.ours_kwargs, args.target, args.tools)
    warnings.filterwarnings("ignore")
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # failing candidates are reported in the table, not on stderr
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        results = [benchmark_model(name, folder, settings) for name in args.models]
    print(f"Versions: {versions()}; {os.cpu_count()} CPUs, ORT intra-op threads {THREADS}.")
    print(f"Load average (1 min) at start / end: {load_before:.1f} / {os.getloadavg()[0]:.1f}.")
    for note in args.notes:
        print(f"Note: {note}")
    if settings.ours_kwargs:
        print(f"modelport optimize() extra arguments: {json.dumps(settings.ours_kwargs)}")
    for result in results:
        print_table(result, args.target)
    print(f"\nWhole run: {time.perf_counter() - started:.0f} s")
    if args.json:
        serial = [{**r, "rows": [asdict(row) for row in r.get("rows", [])]} for r in results]
        args.json.write_text(json.dumps({"versions": versions(), "target": args.target, "models": serial}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child_main(*sys.argv[2:])
    else:
        main()
