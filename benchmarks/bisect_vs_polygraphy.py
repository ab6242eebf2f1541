"""First diverging layer: ``modelport debug bisect`` vs Polygraphy, on the same broken models, in one run.

The question a user asks after a conversion goes wrong is "which layer broke?". Polygraphy answers
it two ways: mark every tensor as an output, save a golden run of the good model and compare the
broken model against it tensor by tensor (pairing tensors by name); or ``debug reduce``, which cuts
the broken model down to a minimal sub-model that still fails a check command. modelport bisects
over tensors paired by structure, marking a few at a time (src/modelport/verify/bisect.py). This
script times all three on the same faults and checks whether each named the right layer.

Model. The ResNet-18-like network of benchmarks/_peer_models.py (BatchNorm kept: legacy export
without constant folding, randomized BN statistics), 1x3x224x224 with a fixed batch, opset 17:
*good.onnx*, the reference of every case.

Faults. ``--faults N`` Convs spread over depth (the Convs in topological order split into N bands —
early / middle / late for 3 — one picked per band, seeded); one output channel of its weight is
scaled by 1.1 (a 10 % error). A fault only counts if it moves the logits by more than
1e-4 + 1e-4·max|logits| on a random image in [0, 1), so every case has something to find; else
another channel (then another Conv of the band) is tried. Each fault is built in two variants:

  * *same graph*         — good.onnx with the one weight corrupted;
  * *optimized+renamed*  — good.onnx through ``modelport.passes.manager.optimize(measure=False)``
                           (Conv+BN folded), every node and intermediate tensor renamed, as another
                           optimizer or exporter would; then the same Conv (found by its weight:
                           the folded weight is the original scaled per output channel) gets the
                           same channel scaled by 1.1 — the same fault, in a graph whose names
                           no longer match the reference.

Rows, each tool run as the documentation shows, every command in a fresh subprocess:

  * *modelport bisect*  — ``modelport debug bisect bad.onnx good.onnx --json`` (or the library's
                          ``bisect()`` through ``python -c`` while that command does not exist:
                          the header says which). Found: the nodes it blames are exactly the
                          corrupted Conv.
  * *polygraphy mark-all* — ``polygraphy run good.onnx --onnxrt --onnx-outputs mark all
                          --save-inputs --save-outputs`` (the golden run), then the same on
                          bad.onnx with ``--load-inputs --load-outputs --atol 1e-4 --rtol 1e-4``.
                          Found: the first tensor reported FAILED, in bad.onnx's topological
                          order, is the corrupted Conv's output.
  * *polygraphy reduce*  — the golden run, ``polygraphy data merge`` of inputs and golden outputs,
                          then ``polygraphy debug reduce bad.onnx --mode=bisect --check polygraphy
                          run polygraphy_debug.onnx ...`` (the check compares the sub-model's
                          outputs with the golden tensors). Found: the reduced model's nodes
                          (Constants aside) are exactly the corrupted Conv.

Columns. *seconds*: wall time of the row's subprocesses added up (interpreter start and imports
included; for Polygraphy the golden run counts in both rows, since each workflow needs it);
*× ours*: seconds / modelport's seconds on the same case; *found?*: as defined above (or why the
row has no answer: timeout, crash); *what it blamed*: the node(s) the tool points at; *tensors
compared*: modelport — paired tensors it compared, of all it paired, with the most marked as
outputs in one run and runs per model; mark-all — tensors Polygraphy compared, of the tensors
bad.onnx has, and how many of those it paired by guessing (Polygraphy pairs by exact name, then by
substring, then by position, with a warning); reduce — how many times it ran the check command;
*data written*: bytes of the files the tool left on disk (modelport writes none — its report goes
to stdout, size in parentheses; Polygraphy's temporary sub-models, deleted as it goes, are not
counted); *peak RSS*: the highest VmHWM of any process of the row (the tool, the check commands
it spawns), read as ``RUSAGE_CHILDREN`` of a small launcher process so the parent (which has
torch imported) does not leak into it.

Before the first case, both tools' packages are imported once in an untimed process, so the first
case does not alone pay for a cold disk cache.

Tolerances. Polygraphy: an element fails when |c - r| > 1e-4 and |c - r| / |r| > 1e-4.
modelport: its defaults, a tensor diverges when max|c - r| > 1e-6 + 1e-4·max|r|. Each tool makes
its own random input, as it does by default: Polygraphy uniform in [0, 1), modelport standard
normal (the fault check above uses [0, 1), Polygraphy's range).

Run: .venv/bin/python benchmarks/bisect_vs_polygraphy.py [--faults 3] [--seed 0] [--workdir DIR]
     [--json PATH] [--skip-reduce] [--timeout 600]
Needs the ``bench`` extra (polygraphy) and onnx-graphsurgeon (for ``polygraphy debug reduce``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer_models import build_resnet18

OURS, MARK_ALL, REDUCE = "modelport bisect", "polygraphy mark-all", "polygraphy reduce"
SAME, OPTIMIZED = "same graph", "optimized+renamed"
ATOL, RTOL = 1e-4, 1e-4
FACTOR = 1.1
SIZE = 224
#: Channels tried per Conv before the next Conv of the band is tried.
CHANNEL_TRIES = 3

#: Runs argv[2:], then writes its exit code, wall time and the peak RSS of every process it waited
#: for (the tool and whatever the tool spawned and reaped) to the file argv[1]. Tiny on purpose:
#: a child's peak RSS starts at its parent's at exec time.
_LAUNCHER = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - t0
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as f:
    json.dump({"rc": rc, "seconds": seconds, "peak_rss_mib": peak_kib / 1024}, f)
"""

#: The library call ``modelport debug bisect --json`` makes, for while that command does not exist.
_OURS_LIBRARY = """
import json, sys
from modelport.verify.bisect import bisect
result = bisect(sys.argv[1], sys.argv[2])
print(json.dumps(result.to_dict()))
sys.exit(1 if result.diverged else 0)
"""


# ==================================================================================================
# Cases: the good model, the faults, the broken models
# ==================================================================================================


@dataclass
class Fault:
    """One Conv of good.onnx with one output channel of its weight scaled by FACTOR."""

    depth: str
    conv: str  # node name in good.onnx
    position: int  # among the Convs, in topological order
    channel: int
    output_change: dict[str, float] = field(default_factory=dict)  # variant -> max |Δ logits|

    @property
    def label(self) -> str:
        parts = self.conv.strip("/").split("/")
        short = "/".join(parts[1:-1]) or self.conv
        return f"{self.depth} {short} ch{self.channel}"


@dataclass
class Case:
    """One broken model to debug against good.onnx."""

    fault: Fault
    variant: str
    folder: Path
    bad: Path
    conv: str  # the corrupted Conv's node name in ``bad``
    conv_output: str  # its output tensor's name in ``bad``

    @property
    def name(self) -> str:
        return f"{self.fault.label}, {self.variant}"


def build_good(folder: Path) -> tuple[Path, str]:
    case = build_resnet18(folder, size=SIZE, dynamic_batch=False)
    good = folder / "good.onnx"
    case.path.replace(good)
    return good, case.description


def _rename_everything(model: Any) -> None:
    """Every node and every intermediate tensor gets a new name (graph inputs and outputs keep theirs)."""
    for i, node in enumerate(model.graph):
        node.name = f"node{i}"
        for j, value in enumerate(node.outputs):
            if not value.is_graph_output():
                value.name = f"tensor{i}_{j}"


def _weight(node: Any) -> Any:
    value = node.inputs[1]
    if value is None or value.const_value is None:
        raise RuntimeError(f"Conv '{node.name}' has no constant weight: cannot inject a fault into it")
    return value.const_value.numpy()


def _folded_counterpart(original: Any, optimized: Any) -> Any:
    """The Conv of ``optimized`` whose weight is ``original``'s scaled per output channel (BN folded in)."""
    import numpy as np

    w = _weight(original).astype(np.float64)
    for node in optimized.graph:
        if node.op_type != "Conv":
            continue
        f = _weight(node).astype(np.float64)
        if f.shape != w.shape:
            continue
        flat_w, flat_f = w.reshape(len(w), -1), f.reshape(len(f), -1)
        scale = (flat_w * flat_f).sum(1) / np.maximum((flat_w * flat_w).sum(1), 1e-30)
        if np.allclose(flat_f, scale[:, None] * flat_w, rtol=1e-4, atol=1e-6):
            return node
    raise RuntimeError(f"no Conv of the optimized model folds '{original.name}' — the fault cannot be mirrored")


def _save_corrupted(model: Any, node: Any, channel: int, path: Path) -> None:
    """Save ``model`` with ``node``'s weight scaled by FACTOR on one output channel (model left unchanged)."""
    import onnx_ir as ir

    value = node.inputs[1]
    original = value.const_value
    array = original.numpy().copy()
    array[channel] *= FACTOR
    value.const_value = ir.tensor(array, name=value.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ir.save(model, path)
    finally:
        value.const_value = original


class _Oracle:
    """Logits of good.onnx on one random image, to check that a fault changes the outputs."""

    def __init__(self, good: Path) -> None:
        import numpy as np

        self.feeds = {"image": np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)}
        self.reference = self.run(good)

    def run(self, path: Path) -> Any:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, self.feeds)[0]

    def change(self, path: Path) -> float:
        """max |Δ logits| when it exceeds ATOL + RTOL·max|logits|, else 0."""
        import numpy as np

        diff = float(np.abs(self.run(path) - self.reference).max())
        return diff if diff > ATOL + RTOL * float(np.abs(self.reference).max()) else 0.0


def _depths(count: int) -> list[str]:
    return ["early", "middle", "late"] if count == 3 else [f"depth {i + 1}/{count}" for i in range(count)]


def build_cases(good: Path, folder: Path, count: int, seed: int) -> list[Case]:
    """For each depth band, a Conv and channel whose fault shows in the logits in both variants."""
    import numpy as np
    import onnx_ir as ir

    from modelport.passes.manager import optimize

    model = ir.load(good)
    optimized = optimize(model, measure=False).model
    _rename_everything(optimized)
    oracle = _Oracle(good)
    rng = np.random.default_rng(seed)
    convs = [n for n in model.graph if n.op_type == "Conv"]
    cases: list[Case] = []
    for k, (depth, band) in enumerate(zip(_depths(count), np.array_split(np.arange(len(convs)), count), strict=True)):
        for position in rng.permutation(band):
            node = convs[int(position)]
            twin = _folded_counterpart(node, optimized)
            found = _try_channels(node, twin, model, optimized, folder / f"case{k + 1}", oracle, rng)
            if found:
                for case in found:
                    case.fault.depth, case.fault.position = depth, int(position)
                cases += found
                break
        else:
            log(f"no Conv in the {depth} band has a fault that shows in the logits: band skipped")
    return cases


def _try_channels(
    node: Any, twin: Any, model: Any, optimized: Any, folder: Path, oracle: _Oracle, rng: Any
) -> list[Case]:
    """Both variants of a fault on ``node`` (its folded ``twin`` in ``optimized``), or [] if none shows."""
    out_channels = _weight(node).shape[0]
    for channel in rng.choice(out_channels, size=min(CHANNEL_TRIES, out_channels), replace=False):
        fault = Fault("", node.name, 0, int(channel))
        cases = []
        for variant, base, target in ((SAME, model, node), (OPTIMIZED, optimized, twin)):
            sub = folder / variant.replace("+", "-").replace(" ", "-")
            bad = sub / "bad.onnx"
            _save_corrupted(base, target, int(channel), bad)
            fault.output_change[variant] = oracle.change(bad)
            cases.append(Case(fault, variant, sub, bad, target.name, target.outputs[0].name))
        if all(fault.output_change.values()):
            return cases
        log(f"{node.name} channel {channel}: the fault does not show in the logits, trying another")
    return []


# ==================================================================================================
# Running a tool: subprocesses with wall time, peak RSS, files written, a timeout
# ==================================================================================================


@dataclass
class Launch:
    rc: int | None  # None: timed out
    seconds: float
    peak_rss_mib: float
    stdout: str
    stderr: str


def launch(command: list[str], cwd: Path, logs: Path, name: str, timeout: float) -> Launch:
    """Run ``command`` in ``cwd`` under the launcher; stdout and stderr kept in ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    result_file, out_path, err_path = logs / f"{name}.launch.json", logs / f"{name}.out", logs / f"{name}.err"
    result_file.unlink(missing_ok=True)
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(result_file), *command],
            cwd=cwd,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group: a timeout ends the tool and its children
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return Launch(None, timeout, 0.0, out_path.read_text(), err_path.read_text())
    result = json.loads(result_file.read_text())
    return Launch(result["rc"], result["seconds"], result["peak_rss_mib"], out_path.read_text(), err_path.read_text())


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


@dataclass
class Steps:
    """The subprocesses one row is made of: times add up, the peak RSS is the highest, files are kept."""

    cwd: Path
    logs: Path
    timeout: float
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: float = 0.0
    written: dict[str, int] = field(default_factory=dict)
    status: str = "ok"

    def then(self) -> Steps:
        """A copy to go on from (the golden run shared by two workflows)."""
        return Steps(self.cwd, self.logs, self.timeout, dict(self.seconds), self.peak_rss_mib, dict(self.written))

    def run(self, step: str, command: list[str], ok: tuple[int, ...] = (0,)) -> Launch | None:
        """Run one step; None (and ``status`` set) when it timed out or failed."""
        self.cwd.mkdir(parents=True, exist_ok=True)
        before = _snapshot(self.cwd)
        done = launch(command, self.cwd, self.logs, step.replace(" ", "_"), self.timeout)
        after = _snapshot(self.cwd)
        self.written.update({k: v for k, v in after.items() if before.get(k) != v})
        if done.rc is None:
            self.status = f"timeout (> {self.timeout:.0f} s) in {step}"
            return None
        self.seconds[step] = done.seconds
        self.peak_rss_mib = max(self.peak_rss_mib, done.peak_rss_mib)
        if done.rc not in ok:
            self.status = f"{step} failed (exit {done.rc}): {_last_line(done)}"
            return None
        return done

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def _last_line(done: Launch) -> str:
    lines = [line for line in (done.stderr + "\n" + done.stdout).splitlines() if line.strip()]
    return (lines or ["no output"])[-1].strip()[:140]


# ==================================================================================================
# Rows
# ==================================================================================================


@dataclass
class Row:
    case: str
    tool: str
    status: str = "ok"
    seconds: float | None = None
    found: bool | None = None
    blamed: str = ""
    compared: str = ""
    data_bytes: int | None = None
    data_note: str = ""
    peak_rss_mib: float | None = None
    steps: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _finish(row: Row, steps: Steps) -> Row:
    row.status, row.steps, row.seconds = steps.status, dict(steps.seconds), steps.total
    row.peak_rss_mib = steps.peak_rss_mib or None
    row.data_bytes = sum(steps.written.values())
    names = sorted(steps.written, key=lambda k: -steps.written[k])
    row.data_note = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
    if row.status != "ok":
        row.seconds, row.found = None, None
    return row


def ours_command() -> tuple[list[str], str]:
    """How to call our bisection: the CLI when it has ``debug bisect``, else the library through python -c."""
    exe = Path(sys.executable).with_name("modelport")
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "modelport.cli.main"]
    probe = subprocess.run([*cli, "debug", "bisect", "--help"], capture_output=True, text=True, check=False)
    if probe.returncode == 0:
        return [*cli, "debug", "bisect", "{bad}", "{good}", "--json"], "modelport debug bisect BAD GOOD --json"
    return [sys.executable, "-c", _OURS_LIBRARY, "{bad}", "{good}"], (
        "python -c 'bisect(BAD, GOOD).to_dict()' (the CLI has no 'debug bisect' yet)"
    )


def run_ours(case: Case, good: Path, template: list[str], timeout: float) -> Row:
    row = Row(case.name, OURS)
    steps = Steps(case.folder / "modelport", case.folder / "logs", timeout)
    command = [part.format(bad=case.bad, good=good) for part in template]
    done = steps.run("modelport bisect", command, ok=(0, 1))  # 1: the outputs diverge (expected here)
    _finish(row, steps)
    if done is None:
        return row
    try:
        report = json.loads(done.stdout[done.stdout.index("{") :])
    except ValueError:
        row.status, row.seconds = f"no JSON report on stdout: {_last_line(done)}", None
        return row
    nodes = [(n["name"], n["op"]) for n in report["candidate_nodes"]]
    row.found = report["diverged"] and nodes == [(case.conv, "Conv")]
    row.blamed = ", ".join(f"{op} '{name}'" for name, op in nodes) if report["diverged"] else "nothing: outputs agree"
    pairs = report["matching"]["pairs"]
    row.compared = (
        f"{len(report['checks'])} of {pairs} paired, ≤{report['most_tensors_marked_in_one_run']}/run, "
        f"{report['runs_per_side']} runs"
    )
    stdout_bytes = len(done.stdout.encode())
    row.data_note = f"report {stdout_bytes / 1e3:.1f} kB on stdout" + (f"; {row.data_note}" if row.data_bytes else "")
    row.extra = {"bisect_seconds_in_process": report["seconds"], "matching": report["matching"]["by"]}
    return row


def _polygraphy() -> str | None:
    beside = Path(sys.executable).with_name("polygraphy")
    return str(beside) if beside.exists() else shutil.which("polygraphy")


def run_polygraphy(case: Case, good: Path, timeout: float, skip_reduce: bool) -> list[Row]:
    """The mark-all row and (unless skipped) the reduce row; the golden run is shared and counted in both."""
    exe = _polygraphy()
    tools = [MARK_ALL] if skip_reduce else [MARK_ALL, REDUCE]
    if exe is None:
        return [Row(case.name, tool, status="not installed (pip install polygraphy)") for tool in tools]
    golden = Steps(case.folder / "polygraphy", case.folder / "logs", timeout)
    mark_all = [exe, "run", str(good), "--onnxrt", "--onnx-outputs", "mark", "all"]
    golden.run("golden run", [*mark_all, "--save-inputs", "inputs.json", "--save-outputs", "golden.json"])
    rows = [_mark_all(case, exe, golden.then())]
    if skip_reduce:
        return rows
    if importlib.util.find_spec("onnx_graphsurgeon") is None:
        return [*rows, Row(case.name, REDUCE, status="needs onnx-graphsurgeon (pip install onnx-graphsurgeon)")]
    return [*rows, _reduce(case, exe, golden.then())]


_TOLERANCE = ["--atol", str(ATOL), "--rtol", str(RTOL)]
_COMPARED = re.compile(r"(?:PASSED|FAILED) \| Output: ['`](.+?)['`]")
_FAILED = re.compile(r"FAILED \| Output: ['`](.+?)['`]")
_GUESSED = re.compile(r"Output names did not match exactly")
_CHECK_RUN = re.compile(r"(?:PASSED|FAILED) \| Iteration \d+")


def _mark_all(case: Case, exe: str, steps: Steps) -> Row:
    row = Row(case.name, MARK_ALL)
    done = None
    if steps.status == "ok":
        command = [exe, "run", str(case.bad), "--onnxrt", "--onnx-outputs", "mark", "all"]
        command += ["--load-inputs", "inputs.json", "--load-outputs", "golden.json", *_TOLERANCE]
        done = steps.run("bad run", command, ok=(0, 1))  # 1: some tensor failed (expected here)
    _finish(row, steps)
    if done is None:
        return row
    compared, failed = set(_COMPARED.findall(done.stdout)), set(_FAILED.findall(done.stdout))
    if not compared:
        row.status, row.seconds = f"compared nothing: {_last_line(done)}", None
        return row
    order, producers = _tensors_in_order(case.bad)
    guessed = len(_GUESSED.findall(done.stdout))
    row.compared = f"{len(compared)} of {len(order)}" + (f" ({guessed} paired by guess)" if guessed else " (by name)")
    first = next((name for name in order if name in failed), None)
    if first is None:
        row.found, row.blamed = False, "nothing: every compared tensor passed"
        return row
    node, op = producers[first]
    row.found = first == case.conv_output
    row.blamed = f"{op} '{node}' (first FAILED tensor '{first}')"
    row.extra = {"compared": len(compared), "failed": len(failed), "tensors": len(order), "guessed": guessed}
    return row


def _tensors_in_order(path: Path) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """Node outputs in topological order, and the (node name, op) producing each."""
    import onnx_ir as ir

    model = ir.load(path)
    order, producers = [], {}
    for node in model.graph:
        for value in node.outputs:
            order.append(value.name or "")
            producers[value.name or ""] = (node.name or "", node.op_type)
    return order, producers


def _reduce(case: Case, exe: str, steps: Steps) -> Row:
    row = Row(case.name, REDUCE)
    done = None
    if steps.status == "ok":
        steps.run("merge", [exe, "data", "merge", "inputs.json", "golden.json", "-o", "layerwise_inputs.json"])
    if steps.status == "ok":
        check = [exe, "run", "polygraphy_debug.onnx", "--onnxrt", "--load-inputs", "layerwise_inputs.json"]
        check += ["--load-outputs", "golden.json", *_TOLERANCE]
        command = [exe, "debug", "reduce", str(case.bad), "-o", "reduced.onnx", "--mode=bisect"]
        done = steps.run("reduce", [*command, "--load-inputs", "layerwise_inputs.json", "--check", *check])
    _finish(row, steps)
    reduced = steps.cwd / "reduced.onnx"
    if done is None:
        return row
    if not reduced.exists():
        row.status, row.seconds = f"no reduced model written: {_last_line(done)}", None
        return row
    import onnx_ir as ir

    nodes = [(n.name or "", n.op_type) for n in ir.load(reduced).graph if n.op_type != "Constant"]
    row.found = nodes == [(case.conv, "Conv")]
    shown = ", ".join(f"{op} '{name}'" for name, op in nodes[:3]) + (f" +{len(nodes) - 3}" if len(nodes) > 3 else "")
    row.blamed = shown or "an empty model"
    row.compared = f"{len(_CHECK_RUN.findall(done.stdout))} check runs"
    row.extra = {"reduced_nodes": nodes}
    return row


# ==================================================================================================
# Report
# ==================================================================================================


def _mb(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB" if n else "0"


def _found(row: Row) -> str:
    if row.status != "ok":
        return row.status
    return {True: "yes", False: "NO", None: "—"}[row.found]


def print_table(rows: list[Row]) -> None:
    ours = _ours_seconds(rows)
    print(
        "| case | tool | seconds | × ours | found? | what it blamed | tensors compared | data written | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        x = _times_ours(r, ours)
        ratio = "—" if x is None else f"{x:.1f}×"
        seconds = "—" if r.seconds is None else f"{r.seconds:.1f}"
        data = _mb(r.data_bytes) + (f" ({r.data_note})" if r.data_note else "")
        rss = "—" if r.peak_rss_mib is None else f"{r.peak_rss_mib:.0f}"
        print(
            f"| {r.case} | {r.tool} | {seconds} | {ratio} | {_found(r)} | {r.blamed} | {r.compared} | {data} | {rss} |"
        )


def _ours_seconds(rows: list[Row]) -> dict[str, float]:
    return {r.case: r.seconds for r in rows if r.tool == OURS and r.seconds}


def _times_ours(row: Row, ours: dict[str, float]) -> float | None:
    base = ours.get(row.case)
    return None if row.seconds is None or base is None else row.seconds / base


def summary_lines(rows: list[Row]) -> list[str]:
    """Per tool: cases where it named the corrupted Conv (per variant), median time, × ours, peak RSS."""
    ours = _ours_seconds(rows)
    lines = []
    for tool in (OURS, MARK_ALL, REDUCE):
        mine = [r for r in rows if r.tool == tool]
        if not mine:
            continue
        per_variant = []
        for variant in (SAME, OPTIMIZED):
            in_variant = [r for r in mine if r.case.endswith(variant)]
            per_variant.append(f"{variant} {sum(bool(r.found) for r in in_variant)}/{len(in_variant)}")
        text = f"{tool}: named the corrupted Conv in {sum(bool(r.found) for r in mine)}/{len(mine)} cases"
        text += f" ({', '.join(per_variant)})"
        times = [r.seconds for r in mine if r.seconds is not None]
        if times:
            text += f"; median {statistics.median(times):.1f} s"
        ratios = [x for x in (_times_ours(r, ours) for r in mine) if x is not None]
        if ratios and tool != OURS:
            text += f", {statistics.median(ratios):.1f}× ours (median; range {min(ratios):.1f}–{max(ratios):.1f}×)"
        rss = [r.peak_rss_mib for r in mine if r.peak_rss_mib]
        text += f"; peak RSS up to {max(rss):.0f} MiB" if rss else ""
        lines.append(text)
    return lines


def notes(rows: list[Row]) -> list[str]:
    """What the table cannot say in a cell."""
    found: list[str] = []
    guessed = [r for r in rows if r.tool == MARK_ALL and r.extra.get("guessed")]
    if guessed:
        found.append(
            "on the renamed graphs Polygraphy finds no tensor of the golden run by name, so it pairs them by "
            "substring and then by position (one warning each) and compares unrelated tensors — the first fused "
            "Conv's output (BatchNorm folded in) against the reference's Conv output before its BatchNorm, which "
            "differ by design. The check that debug reduce runs pairs the same way: each sub-model's output "
            "is compared with the golden run's first tensor and fails (a shape mismatch, or values that were "
            "never meant to agree), so the reduction ends at the first nodes of the graph, wherever the fault is."
        )
    return found


def versions() -> str:
    parts = []
    for dist in ("modelport", "polygraphy", "onnx-graphsurgeon", "onnxruntime", "onnx", "onnx-ir", "torch"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ==================================================================================================
# Command line
# ==================================================================================================


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=3, help="Convs to corrupt, spread over depth (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Conv and channel choice")
    parser.add_argument("--workdir", type=Path, help="build and keep every model, log and Polygraphy file here")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument("--skip-reduce", action="store_true", help="leave out polygraphy debug reduce (the slow one)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before one tool command counts as hung")
    args = parser.parse_args()
    if args.faults < 1:
        parser.error(f"--faults must be at least 1, got {args.faults}")
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    return args


def warm_up() -> None:
    """Import both tools once, untimed: the first case should not alone pay for a cold disk cache."""
    for modules in ("modelport.verify.bisect, modelport.cli.main", "polygraphy.tools, onnx"):
        subprocess.run([sys.executable, "-c", f"import onnxruntime, {modules}"], capture_output=True, check=False)


def benchmark(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    template, invocation = ours_command()
    log(f"modelport invoked as: {invocation}")
    warm_up()
    log("building good.onnx and the faults")
    good, description = build_good(folder)
    cases = build_cases(good, folder, args.faults, args.seed)
    rows: list[Row] = []
    for case in cases:
        log(f"[{case.name}] modelport")
        rows.append(run_ours(case, good, template, args.timeout))
        log(f"[{case.name}] polygraphy")
        rows += run_polygraphy(case, good, args.timeout, args.skip_reduce)
    return {"description": description, "invocation": invocation, "cases": cases, "rows": rows}


def main() -> None:
    args = parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        result = benchmark(args, folder)
    rows, cases = result["rows"], result["cases"]
    print(f"Versions: {versions()}; {os.cpu_count()} CPUs.")
    print(f"Load average (1 min) at start / end: {load_before:.1f} / {os.getloadavg()[0]:.1f}.")
    print(f"Model: {result['description']}.")
    print(f"modelport invoked as: {result['invocation']}.")
    print(f"Faults: one output channel of a Conv's weight ×{FACTOR}; max |Δ logits| per case:")
    for case in cases:
        print(f"  {case.name}: Conv '{case.conv}', Δ {case.fault.output_change[case.variant]:.3g}")
    print()
    print_table(rows)
    for note in notes(rows):
        print(f"\nNote: {note}")
    print()
    for line in summary_lines(rows):
        print("summary: " + line)
    print(f"\nWhole run: {time.perf_counter() - started:.0f} s")
    if args.json:
        data = {
            "command": " ".join(sys.argv),
            "versions": versions(),
            "model": result["description"],
            "modelport_invocation": result["invocation"],
            "cases": [{**asdict(c), "name": c.name} for c in cases],
            "rows": [asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(data, indent=1, default=str))


if __name__ == "__main__":
    main()
