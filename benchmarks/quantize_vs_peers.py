"""INT8: modelport vs the ONNX Runtime quantizer, side by side in one run — speed, accuracy, calibration cost.

The anchor is ONNX Runtime's own quantizer (``onnxruntime.quantization``), used the way its
documentation shows. Four sections, each printing a table and a summary line (``--json`` keeps
every number):

1. **ResNet-18-like CNN, 3x224x224, batch 8** (the layout of benchmarks/_peer_models.py, optimized
   with modelport first: Conv+BN folded — the FP32 baseline *is* the optimized model, and every INT8
   variant is made from it). Its BatchNorm running statistics are measured on 64 images of the same
   kind, as training would leave them: with _peer_models' random statistics the logits barely depend
   on the image (one top-1 class for every image, and a constant output scores ~35 dB SQNR), so the
   SQNR target would be met by a broken model. That stock model is still quantized and scored, on one
   line under the table. Rows:

   * FP32            — the optimized model;
   * ORT defaults    — ``quantize_static(fp32, out, reader)`` with its defaults (QDQ, per-tensor,
                       S8S8, MinMax): the anchor;
   * ORT tuned       — the same with ``per_channel=True``, uint8 activations, int8 weights (U8S8):
                       the fair, tuned peer;
   * modelport minmax / entropy / percentile / mse — ``collect_ranges(model, samples, method=...)`` then
                       ``quantize_static(model, ranges=...)`` with modelport's defaults (QDQ,
                       per-channel int8 weights, activation format from the CPU: U8S8 on x86).

   Columns. *median ms*: batch 8, ONNX Runtime CPU, 2 intra-op threads, every row timed in the same
   interleaved windows (``bench_interleaved``), so load from other processes hits every row alike;
   *CV*: coefficient of variation of those runs; *×FP32*: FP32 median / row median (higher is
   faster); *×anchor*: ORT-defaults median / row median; *SQNR dB* and *cosine*: the logits against
   FP32 on 64 held-out images (never the calibration images), all batches concatenated; *top-1 =
   FP32*: share of held-out images whose top-1 class matches FP32's; *calib s*: collecting the ranges
   (ours only — ORT's quantizer does not separate it); *total s*: calibration plus QDQ insertion;
   *peak RSS*: VmHWM of the subprocess that did it (interpreter and imports included); *ranges*:
   whether our method's ranges differ from MinMax's.

   Data: calibration uses ``--samples`` (default 100) smooth random RGB images — random 8x8 colour
   fields bilinearly upsampled to 224x224, light noise, clipped to [0, 1], normalized with the
   ImageNet mean/std — generated deterministically (seed 0) and streamed to both quantizers one at a
   time; held-out images use seed 1. Targets: ours ≥ 3.0x FP32 with SQNR ≥ 30 dB; calibration of 100
   samples ≤ 30 s and ≤ 2 GB peak RSS.

2. **BERT-like encoders**, batch 8, sequence 128, optimized with modelport first: _peer_models'
   encoder as it is (4 layers, hidden 256, 4 heads, FFN 1024: BERT-mini's geometry) and the same with
   BERT-base's width (hidden 768, 12 heads, FFN 3072, still 4 layers). FP32 vs
   ``quantize_dynamic(fp32, out)`` defaults vs modelport's dynamic INT8
   (``modelport.quantize.dynamic.quantize_dynamic``: MatMul/Gemm/Attention only). Token ids inside the
   vocabulary, padding masks of 1s then 0s. Cosine and SQNR are the worst over both outputs. Target:
   ≥ 2x FP32 with cosine ≥ 0.99.

3. **Mixed precision where full INT8 breaks**: an RGB-D CNN trained here in a few seconds (6
   classes: dominant colour x near/far) that reads raw depth in millimetres next to normalized RGB —
   trained on metres, with the mm -> m factor folded into its first layer's depth weights. One
   per-tensor INT8 scale for that input has a step of ~20, which rounds every RGB value to zero.
   ``mixed_precision(model, calib, AccuracyBudget.floor(30 dB, cosine 0.999))`` ranks the layers and
   keeps the fewest in FP32; the table shows FP32, full INT8 and the mixed model on 512 labelled test
   scenes that neither calibration nor the search saw.

4. **Calibration methods on outlier activations**: the same RGB-D CNN, calibration scenes where ~2
   depth pixels per image are sensor dropouts (65535 mm). modelport's MinMax / Entropy (KL, 2048 bins)
   / Percentile (99.999) ranges for a few tensors, next to ONNX Runtime's MinMax and Entropy
   calibrators at their default settings (Entropy: 128 bins, 128 quantized bins).

Run: .venv/bin/python benchmarks/quantize_vs_peers.py [--seconds 60] [--samples 100] [--json PATH]
     [--sections resnet,bert,mixed,methods] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer_models import build_bert_legacy, export_cnn

Array = np.ndarray[Any, Any]
Feeds = dict[str, Array]

THREADS = 2
IMAGE = 224
BATCH = 8
HELD_OUT = 64  # images (8 batches of 8) for the accuracy columns
SPEED_TARGET, SQNR_TARGET, CALIB_S_TARGET, CALIB_MIB_TARGET = 3.0, 30.0, 30.0, 2048.0
BERT_SPEED_TARGET, BERT_COSINE_TARGET = 2.0, 0.99
MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
OURS_METHODS = ("minmax", "entropy", "percentile", "mse")


# ==================================================================================================
# Deterministic, realistic inputs
# ==================================================================================================


def _upsample_matrix(coarse: int, size: int) -> Array:
    """Linear interpolation from ``coarse`` grid points to ``size`` pixels, as a [size, coarse] matrix."""
    position = np.linspace(0.0, coarse - 1.0, size)
    left = np.floor(position).astype(int).clip(0, coarse - 2)
    weight = (position - left).astype(np.float32)
    matrix = np.zeros((size, coarse), np.float32)
    matrix[np.arange(size), left] = 1.0 - weight
    matrix[np.arange(size), left + 1] = weight
    return matrix


def smooth_fields(rng: np.random.Generator, channels: int, size: int) -> Array:
    """``[channels, size, size]`` in [0, 1]: random 8x8 fields upsampled bilinearly, plus light noise."""
    up = _upsample_matrix(8, size)
    fields = up @ rng.random((channels, 8, 8), dtype=np.float32) @ up.T
    fields += rng.normal(0.0, 0.02, fields.shape).astype(np.float32)
    return np.clip(fields, 0.0, 1.0)


def rgb_images(count: int, seed: int, size: int = IMAGE) -> Iterator[Array]:
    """ImageNet-normalized ``[1, 3, size, size]`` float32 images, one at a time."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield ((smooth_fields(rng, 3, size) - MEAN) / STD)[None].astype(np.float32)


def batches(images: Iterator[Array], batch: int) -> list[Array]:
    chunk: list[Array] = []
    out: list[Array] = []
    for image in images:
        chunk.append(image)
        if len(chunk) == batch:
            out.append(np.concatenate(chunk))
            chunk = []
    if chunk:
        out.append(np.concatenate(chunk))
    return out


# ==================================================================================================
# Child process: quantize once, print timings and peak RSS as one JSON line
# ==================================================================================================


def _peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM, not ru_maxrss, which Linux carries over a fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Reader:
    """ONNX Runtime's CalibrationDataReader over a generator (one sample at a time, never all held)."""

    def __init__(self, samples: Iterator[Feeds]) -> None:
        self.samples = samples

    def get_next(self) -> Feeds | None:
        return next(self.samples, None)


def _child_ort(job: dict[str, Any]) -> dict[str, Any]:
    from onnxruntime import quantization as q

    options = dict(job["options"])
    for key in ("activation_type", "weight_type"):
        if key in options:
            options[key] = getattr(q.QuantType, options[key])
    reader = _Reader({"image": x} for x in rgb_images(job["count"], job["seed"]))
    t0 = time.perf_counter()
    q.quantize_static(job["src"], job["dst"], reader, **options)
    return {"total_s": time.perf_counter() - t0, "calib_s": None}


def _child_modelport(job: dict[str, Any]) -> dict[str, Any]:
    from modelport.ir.serde import load, save
    from modelport.quantize.int8 import quantize_static
    from modelport.quantize.ranges import collect_ranges

    model = load(job["src"])

    def samples() -> Iterator[Feeds]:  # re-iterable: Entropy and Percentile take two passes
        return ({"image": x} for x in rgb_images(job["count"], job["seed"]))

    t0 = time.perf_counter()
    ranges = collect_ranges(model, samples, method=job["options"]["method"])
    t1 = time.perf_counter()
    quantized = quantize_static(model, ranges=ranges)
    t2 = time.perf_counter()
    save(quantized, job["dst"])
    Path(job["dst"] + ".ranges.json").write_text(json.dumps(ranges.as_pairs()))
    return {"total_s": t2 - t0, "calib_s": t1 - t0}


def child_main(job_json: str) -> None:
    warnings.filterwarnings("ignore")
    job = json.loads(job_json)
    before = _peak_rss_mib()
    result = _child_ort(job) if job["tool"] == "ort" else _child_modelport(job)
    result["peak_rss_mib"] = _peak_rss_mib()
    result["rss_after_imports_mib"] = before
    print("@@RESULT " + json.dumps(result), flush=True)


def run_child(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", json.dumps(job)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout (> {timeout:.0f} s)"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("@@RESULT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"crash: {tail[:160]}"}
    return {"status": "ok", **json.loads(lines[-1].removeprefix("@@RESULT "))}


# ==================================================================================================
# Measuring in the parent
# ==================================================================================================


def runner(model: Any, name: str) -> Any:
    from modelport.bench.harness import INTERLEAVED_ORT_CONFIG
    from modelport.runners.onnxruntime import OrtRunner

    return OrtRunner(model, intra_op_threads=THREADS, name=name, session_config=INTERLEAVED_ORT_CONFIG)


def outputs_over(run: Any, feeds_list: Sequence[Feeds]) -> dict[str, Array]:
    """Every output over all feeds, concatenated along the batch axis."""
    parts = [run.infer(feeds) for feeds in feeds_list]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


@dataclass
class Accuracy:
    sqnr_db: float
    cosine: float
    top1_agreement: float | None


def accuracy(candidate: Mapping[str, Array], reference: Mapping[str, Array], logits: str | None) -> Accuracy:
    """Worst SQNR / cosine over float outputs; top-1 agreement on ``logits`` when given."""
    from modelport.verify.diff import diff_outputs
    from modelport.verify.tolerance import EXACT

    diffs = diff_outputs(candidate, reference, EXACT)
    agreement = None
    if logits is not None:
        agreement = float(np.mean(candidate[logits].argmax(-1) == reference[logits].argmax(-1)))
    return Accuracy(min(d.sqnr_db for d in diffs), min(d.cosine for d in diffs), agreement)


def time_side_by_side(runners: Sequence[Any], feeds: Feeds, seconds: float) -> list[Any]:
    from modelport.bench.harness import bench_interleaved

    return bench_interleaved(runners, feeds, duration=seconds, rounds=max(4, int(seconds // 5)))


@dataclass
class Row:
    """One line of a table."""

    name: str
    settings: str
    status: str = "ok"
    median_ms: float | None = None
    p90_ms: float | None = None
    cv: float | None = None
    speedup: float | None = None
    vs_anchor: float | None = None
    sqnr_db: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    calib_s: float | None = None
    total_s: float | None = None
    peak_rss_mib: float | None = None
    ranges: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _fill_timing(rows: Sequence[Row], results: Sequence[Any], anchor: int | None) -> None:
    base = results[0].median_ms
    for row, res in zip(rows, results, strict=True):
        row.median_ms, row.p90_ms, row.cv = res.median_ms, res.p90_ms, res.cv
        row.speedup = base / res.median_ms
        if anchor is not None:
            row.vs_anchor = results[anchor].median_ms / res.median_ms


def _fmt(value: float | None, digits: int, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def _fmt_cos(value: float | None) -> str:
    return "—" if value is None else f"{value:.5f}"


def _fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


# ==================================================================================================
# 1. ResNet-18-like at 224x224, batch 8
# ==================================================================================================


def build_resnet18(folder: Path) -> tuple[Path, str]:
    """ResNet-18-like (benchmarks/_peer_models.py's layout) whose BatchNorm statistics fit its inputs.

    _peer_models draws the BatchNorm running statistics at random; they then do not match the real
    activations, every layer leaves a large constant offset and the logits barely depend on the image
    (every held-out image gets the same class; the spread across images is 2 % of the logits' size), so a
    constant output would pass an SQNR floor of 30 dB. Here the running statistics are measured on 64
    images of the same kind (seed 2: neither calibration nor held-out images), as training would leave
    them; scale and shift stay random. Same layers, same work; the export is _peer_models' (legacy
    exporter, opset 17, no constant folding so that BatchNorm stays for modelport to fold).
    """
    import torch
    from _peer_models import _resnet18

    torch.manual_seed(0)
    model = _resnet18()
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average over every batch below
            module.reset_running_stats()
            n = module.num_features
            module.weight.data.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    model.train()
    with torch.no_grad():
        for images in batches(rgb_images(64, seed=2), 16):
            model(torch.from_numpy(images))
    model.eval()
    path = folder / "resnet18.onnx"
    export_cnn(model, torch.zeros(1, 3, IMAGE, IMAGE), path, input_name="image", output_name="logits")
    return path, f"ResNet-18-like, 3x{IMAGE}x{IMAGE}, BatchNorm statistics measured on 64 images"


RESNET_VARIANTS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("ORT defaults (anchor)", "ort", "QDQ, per-tensor, S8S8, MinMax", {}),
    (
        "ORT per-channel U8S8",
        "ort",
        "QDQ, per-channel, U8S8, MinMax",
        {"per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8"},
    ),
    *[
        (f"modelport {m}", "modelport", f"QDQ, per-channel, CPU default format, {m}", {"method": m})
        for m in OURS_METHODS
    ],
]


def _differs(ranges: Mapping[str, Sequence[float]], reference: Mapping[str, Sequence[float]]) -> tuple[int, int]:
    """(tensors whose range differs from the reference's, tensors compared)."""
    shared = [n for n in ranges if n in reference]
    differ = sum(1 for n in shared if not np.allclose(ranges[n], reference[n], rtol=1e-6, atol=1e-9))
    return differ, len(shared)


def _ranges_notes(rows: list[Row], folder: Path) -> None:
    loaded = {}
    for method in OURS_METHODS:
        path = folder / f"resnet18.int8-{method}.onnx.ranges.json"
        if path.exists():
            loaded[method] = json.loads(path.read_text())
    if "minmax" not in loaded:
        return
    for row in rows:
        method = row.name.removeprefix("modelport ")
        if method == "minmax":
            row.ranges = f"reference ({len(loaded['minmax'])} tensors)"
        elif method in loaded:
            differ, total = _differs(loaded[method], loaded["minmax"])
            row.ranges = f"differ from minmax on {differ}/{total}"


def resnet_section(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    from modelport.ir.serde import load, save
    from modelport.passes.manager import optimize
    from modelport.quantize.hardware import default_int8_settings

    log("[resnet] building and optimizing ResNet-18-like at 224x224")
    source, description = build_resnet18(folder)
    optimized = optimize(load(source))
    fp32_path = folder / "resnet18.fp32.onnx"
    save(optimized.model, fp32_path)
    rows = [Row("FP32", "optimized by modelport (Conv+BN folded)")]
    paths = [fp32_path]
    for name, tool, settings, options in RESNET_VARIANTS:
        tag = "ort-" + ("default" if not options else "tuned") if tool == "ort" else f"int8-{options['method']}"
        dst = folder / f"resnet18.{tag}.onnx"
        job = {"tool": tool, "src": str(fp32_path), "dst": str(dst), "count": args.samples, "seed": 0}
        log(f"[resnet] {name}: calibrating on {args.samples} samples in a subprocess")
        result = run_child({**job, "options": options}, args.timeout)
        row = Row(name, settings, status=result["status"])
        if row.status == "ok":
            row.calib_s, row.total_s = result["calib_s"], result["total_s"]
            row.peak_rss_mib = result["peak_rss_mib"]
            row.extra["rss_after_imports_mib"] = result["rss_after_imports_mib"]
            paths.append(dst)
        rows.append(row)
    _ranges_notes(rows, folder)
    minmax_ranges = folder / "resnet18.int8-minmax.onnx.ranges.json"
    if minmax_ranges.exists():
        row, path = resnet_mixed(optimized.model, json.loads(minmax_ranges.read_text()), folder)
        rows.append(row)
        paths.append(path)
    measured = [r for r in rows if r.status == "ok"]
    sensitivity = _measure_rows(measured, paths, args.seconds)
    stock = stock_model_check(folder, args.samples)
    return {
        "section": "resnet",
        "description": f"{description}; optimized by modelport; batch {BATCH}, {THREADS} threads",
        "int8_defaults": default_int8_settings()["reason"],
        "optimize_steps": [s.name for s in optimized.steps if s.status == "applied"],
        "input_dependence": sensitivity,
        "stock_model": stock,
        "rows": rows,
    }


def resnet_mixed(fp32: Any, ranges: Mapping[str, Sequence[float]], folder: Path) -> tuple[Row, Path]:
    """What reaching the SQNR target costs: mixed precision to 30 dB, reusing the minmax ranges.

    The search measures 32 images of its own (seed 3), neither calibration nor held-out images.
    """
    from modelport.ir.serde import save
    from modelport.quantize.mixed import AccuracyBudget, mixed_precision

    log("[resnet] modelport mixed precision to a 30 dB floor (minmax ranges reused)")
    pairs = {name: (float(low), float(high)) for name, (low, high) in ranges.items()}
    search = [{"image": x} for x in batches(rgb_images(32, seed=3), BATCH)]
    result = mixed_precision(fp32, [], AccuracyBudget.floor(SQNR_TARGET), ranges=pairs, eval_samples=search)
    path = folder / "resnet18.int8-mixed.onnx"
    save(result.model, path)
    kept = ", ".join(k.node for k in result.kept_fp32) or "none"
    row = Row(
        "modelport mixed ≥ 30 dB",
        f"minmax ranges reused; {len(result.kept_fp32)} layer(s) kept FP32: {kept}",
        total_s=result.seconds,
        ranges="minmax's",
    )
    row.extra = {"met": result.met, "why": result.why, "trials": [t._asdict() for t in result.trials]}
    return row, path


def _measure_rows(rows: list[Row], paths: list[Path], seconds: float) -> dict[str, Any]:
    """Accuracy on held-out images and interleaved timing at batch 8; returns how input-dependent FP32 is."""
    held_out = batches(rgb_images(HELD_OUT, seed=1), BATCH)
    feeds = [{"image": x} for x in held_out]
    runners = [runner(path, row.name) for row, path in zip(rows, paths, strict=True)]
    for r in runners:
        r.activate()
    try:
        reference = outputs_over(runners[0], feeds)
        for row, r in zip(rows[1:], runners[1:], strict=True):
            acc = accuracy(outputs_over(r, feeds), reference, "logits")
            row.sqnr_db, row.cosine, row.top1_agreement = acc.sqnr_db, acc.cosine, acc.top1_agreement
        log(f"[resnet] timing {len(runners)} rows interleaved for {seconds:.0f} s")
        results = time_side_by_side(runners, feeds[0], seconds)
    finally:
        for r in runners:
            r.deactivate()
    anchor = next((i for i, row in enumerate(rows) if "anchor" in row.name), None)
    _fill_timing(rows, results, anchor)
    logits = reference["logits"]
    constant = {"logits": np.broadcast_to(logits.mean(0), logits.shape)}
    return {
        "held_out_images": len(logits),
        "distinct_top1": len(np.unique(logits.argmax(-1))),
        "constant_output_sqnr_db": accuracy(constant, reference, None).sqnr_db,
    }


def stock_model_check(folder: Path, count: int) -> dict[str, Any]:
    """_peer_models.build_resnet18 as it is (random BatchNorm statistics): modelport minmax INT8 accuracy.

    Shown next to the SQNR a constant output reaches on that model, which is why the table above uses
    BatchNorm statistics measured on images instead.
    """
    from _peer_models import build_resnet18 as stock_resnet18

    from modelport.ir.serde import load
    from modelport.passes.manager import optimize
    from modelport.quantize.int8 import quantize_static
    from modelport.quantize.ranges import collect_ranges

    log("[resnet] the stock _peer_models ResNet-18-like (random BatchNorm statistics): accuracy only")
    sub = folder / "stock"
    sub.mkdir(exist_ok=True)
    fp32 = optimize(load(stock_resnet18(sub, size=IMAGE, dynamic_batch=True).path)).model
    ranges = collect_ranges(fp32, lambda: ({"image": x} for x in rgb_images(count, seed=0)), method="minmax")
    int8 = quantize_static(fp32, ranges=ranges)
    feeds = [{"image": x} for x in batches(rgb_images(HELD_OUT, seed=1), BATCH)]
    with runner(fp32, "fp32") as ref, runner(int8, "int8") as cand:
        reference = outputs_over(ref, feeds)
        acc = accuracy(outputs_over(cand, feeds), reference, "logits")
    logits = reference["logits"]
    constant = {"logits": np.broadcast_to(logits.mean(0), logits.shape)}
    return {
        "sqnr_db": acc.sqnr_db,
        "cosine": acc.cosine,
        "top1_agreement": acc.top1_agreement,
        "distinct_top1": len(np.unique(logits.argmax(-1))),
        "constant_output_sqnr_db": accuracy(constant, reference, None).sqnr_db,
    }


def print_resnet(result: dict[str, Any]) -> None:
    print(f"\n### 1. INT8 static: {result['description']}\n")
    print(f"modelport INT8 format on this CPU: {result['int8_defaults']}")
    dep = result["input_dependence"]
    print(
        f"FP32 on the {dep['held_out_images']} held-out images: {dep['distinct_top1']} distinct top-1 classes; a "
        f"constant output (FP32's mean logits) would score {dep['constant_output_sqnr_db']:.1f} dB SQNR.\n"
    )
    print(
        "| variant | settings | median ms | CV | ×FP32 | ×anchor | SQNR dB | cosine | top-1 = FP32 "
        "| calib s | total s | peak RSS MiB | ranges | status |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(
            f"| {r.name} | {r.settings} | {_fmt(r.median_ms, 2)} | {_fmt_pct(r.cv)} | {_fmt(r.speedup, 2, 'x')} "
            f"| {_fmt(r.vs_anchor, 2, 'x')} | {_fmt(r.sqnr_db, 1)} | {_fmt_cos(r.cosine)} "
            f"| {_fmt_pct(r.top1_agreement)} | {_fmt(r.calib_s, 1)} | {_fmt(r.total_s, 1)} "
            f"| {_fmt(r.peak_rss_mib, 0)} | {r.ranges or '—'} | {r.status} |"
        )
    print()
    print(resnet_summary(result["rows"]))
    stock = result["stock_model"]
    print(
        f"\nstock benchmarks/_peer_models.py ResNet-18-like (random BatchNorm statistics), modelport minmax INT8: "
        f"SQNR {stock['sqnr_db']:.1f} dB, cosine {stock['cosine']:.5f}, top-1 = FP32 {stock['top1_agreement']:.0%} — "
        f"but FP32 gives {stock['distinct_top1']} distinct top-1 class(es) on the {HELD_OUT} held-out images and a "
        f"constant output would score {stock['constant_output_sqnr_db']:.1f} dB there, so that model cannot tell "
        "a good INT8 from a broken one."
    )


def _meets(row: Row) -> bool:
    return (row.speedup or 0.0) >= SPEED_TARGET and (row.sqnr_db or 0.0) >= SQNR_TARGET


def resnet_summary(rows: list[Row]) -> str:
    yes = {True: "yes", False: "NO"}
    calibrated = [r for r in rows if r.name.startswith("modelport") and r.calib_s is not None and r.status == "ok"]
    anchor = next((r for r in rows if "anchor" in r.name), None)
    if not calibrated or any(r.speedup is None for r in calibrated):
        return "summary: a modelport full-INT8 variant did not run"
    slowest = max(r.calib_s or 0.0 for r in calibrated)
    largest = max(r.peak_rss_mib or 0.0 for r in calibrated)
    best = max(calibrated, key=lambda r: r.sqnr_db if r.sqnr_db is not None else -np.inf)
    meeting = [r.name.removeprefix("modelport ") for r in calibrated if _meets(r)]
    each = ", ".join(
        f"{r.name.removeprefix('modelport ')} {r.speedup:.2f}x/{_fmt(r.sqnr_db, 1)} dB" for r in calibrated
    )
    anchor_text = f"{anchor.speedup:.2f}x" if anchor is not None and anchor.speedup else "—"
    lines = [
        f"summary: modelport full INT8 ≥ {SPEED_TARGET}x FP32 with SQNR ≥ {SQNR_TARGET:g} dB: "
        f"{yes[bool(meeting)]}{' with ' + ', '.join(meeting) if meeting else ''} ({each}; ORT defaults "
        f"{anchor_text}; best SQNR: {best.name.removeprefix('modelport ')}) · "
        f"calibration of 100 samples ≤ {CALIB_S_TARGET:g} s: {yes[slowest <= CALIB_S_TARGET]} "
        f"(slowest method {slowest:.1f} s) · ≤ 2 GB peak RSS: {yes[largest <= CALIB_MIB_TARGET]} "
        f"(largest {largest:.0f} MiB)"
    ]
    mixed = next((r for r in rows if r.name.startswith("modelport mixed") and r.status == "ok"), None)
    if mixed is not None:
        lines.append(
            f"reaching {SQNR_TARGET:g} dB with layers in FP32 instead: {mixed.settings.split('; ', 1)[1]} -> "
            f"{_fmt(mixed.sqnr_db, 1)} dB at {_fmt(mixed.speedup, 2, 'x')} FP32 (search {mixed.total_s or 0:.0f} s)"
        )
    return "\n".join(lines)


# ==================================================================================================
# 2. BERT-like encoder, dynamic INT8
# ==================================================================================================

BERT_SEQ = 128


#: (label, hidden, heads, FFN width): BERT-mini's geometry (benchmarks/_peer_models.py as it is) and
#: BERT-base's width (hidden 768, 12 heads, FFN 3072) with the same 4 layers.
BERT_GEOMETRIES = (("BERT-mini-like", 256, 4, 1024), ("BERT-base-width", 768, 12, 3072))


@contextlib.contextmanager
def bert_geometry(hidden: int, heads: int, ffn: int) -> Iterator[None]:
    """_peer_models builds its BERT from module constants: set them for one build, then restore them."""
    import _peer_models

    saved = (_peer_models.HIDDEN, _peer_models.HEADS, _peer_models.FFN)
    _peer_models.HIDDEN, _peer_models.HEADS, _peer_models.FFN = hidden, heads, ffn
    try:
        yield
    finally:
        _peer_models.HIDDEN, _peer_models.HEADS, _peer_models.FFN = saved


def bert_feeds(batch: int, seq: int, seed: int, vocab: int) -> Feeds:
    """Token ids inside the vocabulary, padding masks (ones then zeros), one segment."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq // 2, seq + 1, batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1000, vocab, (batch, seq)).astype(np.int64) * mask  # id 0 is [PAD]
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((batch, seq), np.int64)}


def _bert_variants(folder: Path, geometry: tuple[str, int, int, int]) -> tuple[str, list[Row], list[Any]]:
    """Build one geometry and quantize it both ways: (description, rows, models or paths)."""
    from onnxruntime import quantization as q

    from modelport.ir.serde import load, save
    from modelport.passes.manager import optimize
    from modelport.quantize.dynamic import quantize_dynamic
    from modelport.verify.inputs import InputPlan

    label, hidden, heads, ffn = geometry
    sub = folder / f"bert-{hidden}"
    sub.mkdir(exist_ok=True)
    with bert_geometry(hidden, heads, ffn):
        case = build_bert_legacy(sub)
    fp32 = optimize(load(case.path), plan=InputPlan(dims=case.dims, int_ranges=case.int_ranges)).model
    fp32_path, ort_path = sub / "bert.fp32.onnx", sub / "bert.ort-dynamic.onnx"
    save(fp32, fp32_path)
    t0 = time.perf_counter()
    q.quantize_dynamic(str(fp32_path), str(ort_path))
    ort_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = quantize_dynamic(fp32)
    ours_s = time.perf_counter() - t0
    rows = [
        Row(f"{label}: FP32", "optimized by modelport"),
        Row(f"{label}: ORT quantize_dynamic (anchor)", "defaults: all supported ops, QInt8 weights", total_s=ort_s),
        Row(f"{label}: modelport dynamic", "MatMul/Gemm/Attention, QInt8 weights", total_s=ours_s),
    ]
    return f"{label}: {case.description}", rows, [fp32_path, ort_path, ours]


def bert_section(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    from _peer_models import VOCAB

    feeds = [bert_feeds(BATCH, BERT_SEQ, seed, VOCAB) for seed in (1, 2)]
    descriptions, all_rows = [], []
    for geometry in BERT_GEOMETRIES:
        log(f"[bert] {geometry[0]}: building, optimizing, quantizing")
        description, rows, models = _bert_variants(folder, geometry)
        runners = [runner(m, row.name) for m, row in zip(models, rows, strict=True)]
        for r in runners:
            r.activate()
        try:
            reference = outputs_over(runners[0], feeds)
            for row, r in zip(rows[1:], runners[1:], strict=True):
                acc = accuracy(outputs_over(r, feeds), reference, None)
                row.sqnr_db, row.cosine = acc.sqnr_db, acc.cosine
            log(f"[bert] {geometry[0]}: timing 3 rows interleaved for {args.seconds / 2:.0f} s")
            results = time_side_by_side(runners, feeds[0], args.seconds / 2)
        finally:
            for r in runners:
                r.deactivate()
        _fill_timing(rows, results, 1)
        descriptions.append(description)
        all_rows.extend(rows)
    return {
        "section": "bert",
        "description": f"batch {BATCH}, sequence {BERT_SEQ} (padding masks), {THREADS} threads",
        "models": descriptions,
        "rows": all_rows,
    }


def print_bert(result: dict[str, Any]) -> None:
    print(f"\n### 2. INT8 dynamic, BERT-like encoders: {result['description']}\n")
    for description in result["models"]:
        print(f"* {description}")
    print("\n| variant | settings | median ms | CV | ×FP32 | ×anchor | SQNR dB | worst cosine | quantize s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(
            f"| {r.name} | {r.settings} | {_fmt(r.median_ms, 2)} | {_fmt_pct(r.cv)} | {_fmt(r.speedup, 2, 'x')} "
            f"| {_fmt(r.vs_anchor, 2, 'x')} | {_fmt(r.sqnr_db, 1)} | {_fmt_cos(r.cosine)} | {_fmt(r.total_s, 1)} |"
        )
    verdicts = []
    for ours in (r for r in result["rows"] if r.name.endswith("modelport dynamic")):
        ok = (ours.speedup or 0.0) >= BERT_SPEED_TARGET and (ours.cosine or 0.0) >= BERT_COSINE_TARGET
        label = ours.name.split(":")[0]
        verdicts.append(
            f"{label}: {'yes' if ok else 'NO'} ({_fmt(ours.speedup, 2, 'x')}, cosine {_fmt_cos(ours.cosine)})"
        )
    print(
        f"\nsummary: modelport dynamic ≥ {BERT_SPEED_TARGET:g}x FP32 with cosine ≥ {BERT_COSINE_TARGET}: "
        + "; ".join(verdicts)
    )


# ==================================================================================================
# 3 and 4. An RGB-D CNN: raw depth in millimetres next to normalized RGB
# ==================================================================================================

RGBD_SIZE = 48
DROPOUT_MM = 65535.0
RGBD_BATCH = 64
RGBD_CLASSES = 6  # dominant colour (red / green / blue) x near (< 2 m) / far (> 3 m)


def rgbd_scenes(count: int, seed: int, *, dropouts: float = 0.0) -> tuple[Array, Array]:
    """Labelled scenes ``[count, 4, 48, 48]`` (normalized RGB, depth in mm) and labels ``2 * colour + far``.

    RGB: smooth random colour fields with one channel lifted by 0.4 (the colour class); depth: a smooth
    surface 0.5-2 m away (near) or 3-5 m away (far). ``dropouts`` per image (Poisson) read 65535 mm, the
    invalid-pixel code of many depth sensors.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((count, 4, RGBD_SIZE, RGBD_SIZE), np.float32)
    labels = np.empty(count, np.int64)
    for i in range(count):
        colour, far = int(rng.integers(3)), int(rng.integers(2))
        fields = smooth_fields(rng, 4, RGBD_SIZE)
        rgb = 0.6 * fields[:3]
        rgb[colour] += 0.4
        metres = 3.0 + 2.0 * fields[3] if far else 0.5 + 1.5 * fields[3]
        depth = 1000.0 * metres
        for _ in range(rng.poisson(dropouts)):
            depth[rng.integers(RGBD_SIZE), rng.integers(RGBD_SIZE)] = DROPOUT_MM
        images[i, :3] = (rgb - MEAN) / STD
        images[i, 3] = depth
        labels[i] = 2 * colour + far
    return images, labels


def rgbd_samples(images: Array) -> list[Feeds]:
    return [{"image": images[i : i + 1]} for i in range(len(images))]


def _rgbd_module() -> Any:
    from torch import nn

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class RgbdNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = block(4, 16)
            self.body = nn.Sequential(block(16, 32), block(32, 64))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, RGBD_CLASSES)

        def forward(self, x: Any) -> Any:
            return self.fc(self.pool(self.body(self.stem(x))).flatten(1))

    return RgbdNet()


def train_rgbd() -> Any:
    """Train on depth in metres (a few seconds), then fold the mm -> m conversion into the stem's weights."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = _rgbd_module()
    images, labels = rgbd_scenes(1536, seed=100)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    x[:, 3] /= 1000.0
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(6):
        for batch in torch.split(torch.randperm(len(x), generator=generator), 64):
            optimizer.zero_grad()
            torch.autograd.backward(nn.functional.cross_entropy(net(x[batch]), y[batch]))
            optimizer.step()
    net.eval()
    with torch.no_grad():  # the deployed model reads raw millimetres: the depth weights absorb the 1/1000
        net.stem[0].weight[:, 3] /= 1000.0
    return net


def build_rgbd(folder: Path) -> Any:
    """The trained RGB-D CNN exported (legacy exporter, BN kept) and optimized with modelport (BN folded)."""
    import torch

    from modelport.ir.serde import load
    from modelport.passes.manager import optimize

    path = folder / "rgbd.onnx"
    export_cnn(train_rgbd(), torch.zeros(1, 4, RGBD_SIZE, RGBD_SIZE), path, input_name="image", output_name="logits")
    return optimize(load(path)).model


_RGBD_CACHE: dict[Path, Any] = {}


def rgbd_model(folder: Path) -> Any:
    """Trained once per run, shared by sections 3 and 4."""
    if folder not in _RGBD_CACHE:
        log("[rgbd] training the RGB-D CNN (a few seconds)")
        _RGBD_CACHE[folder] = build_rgbd(folder)
    return _RGBD_CACHE[folder]


def mixed_section(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    from modelport.quantize.int8 import quantize_static
    from modelport.quantize.mixed import AccuracyBudget, mixed_precision

    fp32 = rgbd_model(folder)
    log("[mixed] full INT8, then mixed precision to a 30 dB budget")
    calib, search = rgbd_samples(rgbd_scenes(64, 10)[0]), rgbd_samples(rgbd_scenes(64, 11)[0])
    test_images, test_labels = rgbd_scenes(512, 12)
    full = quantize_static(fp32, calib)
    mixed = mixed_precision(fp32, calib, AccuracyBudget.floor(SQNR_TARGET, 0.999), eval_samples=search)
    kept = [k.node for k in mixed.kept_fp32]
    rows = [
        Row("FP32", "optimized by modelport"),
        Row("full INT8", "modelport quantize_static (minmax, per-channel, CPU default format)"),
        Row("mixed precision", f"the same with {len(kept)} layer(s) in FP32: {', '.join(kept) or 'none'}"),
    ]
    test = [{"image": test_images[i : i + 64]} for i in range(0, len(test_images), 64)]
    runners = [runner(fp32, "fp32"), runner(full, "int8"), runner(mixed.model, "mixed")]
    for r in runners:
        r.activate()
    try:
        reference = outputs_over(runners[0], test)
        for row, r in zip(rows, runners, strict=True):
            got = outputs_over(r, test)
            row.extra["top1_accuracy"] = float(np.mean(got["logits"].argmax(-1) == test_labels))
            if row is not rows[0]:
                acc = accuracy(got, reference, "logits")
                row.sqnr_db, row.cosine, row.top1_agreement = acc.sqnr_db, acc.cosine, acc.top1_agreement
        results = time_side_by_side(runners, {"image": test_images[:RGBD_BATCH]}, min(args.seconds / 3, 20.0))
    finally:
        for r in runners:
            r.deactivate()
    _fill_timing(rows, results, None)
    return {
        "section": "mixed",
        "description": (
            f"RGB-D CNN trained here (4x{RGBD_SIZE}x{RGBD_SIZE}: normalized RGB + raw depth in mm, "
            f"{RGBD_CLASSES} classes), timed at batch {RGBD_BATCH}"
        ),
        "rows": rows,
        "kept": [k._asdict() for k in mixed.kept_fp32],
        "why": mixed.why,
        "met": mixed.met,
        "trials": [t._asdict() for t in mixed.trials],
        "seconds": mixed.seconds,
        "test_images": len(test_images),
    }


def print_mixed(result: dict[str, Any]) -> None:
    print(f"\n### 3. Mixed precision where full INT8 breaks: {result['description']}\n")
    print(
        f"Calibration: 64 scenes; the search measures 64 more; the columns below are measured on "
        f"{result['test_images']} labelled test scenes neither saw. Budget: SQNR ≥ {SQNR_TARGET:g} dB and "
        "cosine ≥ 0.999 against FP32.\n"
    )
    print("| variant | settings | median ms | ×FP32 | top-1 accuracy | Δ points | top-1 = FP32 | SQNR dB | cosine |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = result["rows"][0].extra["top1_accuracy"]
    for r in result["rows"]:
        top1 = r.extra["top1_accuracy"]
        delta = "—" if r is result["rows"][0] else f"{100 * (top1 - base):+.1f}"
        print(
            f"| {r.name} | {r.settings} | {_fmt(r.median_ms, 2)} | {_fmt(r.speedup, 2, 'x')} | {top1:.1%} | {delta} "
            f"| {_fmt_pct(r.top1_agreement)} | {_fmt(r.sqnr_db, 1)} | {_fmt_cos(r.cosine)} |"
        )
    print()
    for kept in result["kept"]:
        print(f"kept in FP32: {kept['node']} ({kept['op_type']}) — {kept['reason']}")
    trials = ", ".join(f"{t['kept']} in FP32: {t['score']:.1f} dB" for t in result["trials"])
    print(f"search (SQNR on the search set): {trials}; {result['seconds']:.1f} s")
    full, mixed = result["rows"][1], result["rows"][2]
    recovered = (full.sqnr_db or 0.0) < SQNR_TARGET <= (mixed.sqnr_db or 0.0)
    print(
        f"summary: full INT8 breaks the model ({full.extra['top1_accuracy']:.1%} top-1 vs FP32 {base:.1%}, "
        f"{_fmt(full.sqnr_db, 1)} dB); mixed precision recovers it: {'yes' if recovered else 'NO'} "
        f"({mixed.extra['top1_accuracy']:.1%}, {_fmt(mixed.sqnr_db, 1)} dB) — {result['why']}"
    )


def _ort_ranges(model_path: Path, samples: list[Feeds], method: str, folder: Path) -> dict[str, tuple[float, float]]:
    """ONNX Runtime's own calibrator at its default settings: ``{tensor: (low, high)}``."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    calibrator = create_calibrator(
        model_path,
        augmented_model_path=str(folder / f"augmented-{method}.onnx"),
        calibrate_method=getattr(CalibrationMethod, method),
    )
    with contextlib.redirect_stdout(sys.stderr):  # ORT prints its progress: keep stdout for the tables
        calibrator.collect_data(_Reader(iter(samples)))
        data = calibrator.compute_data()
    pairs = {}
    for name in data.data:
        low, high = data[name].range_value
        pairs[name] = (float(np.ravel(low)[0]), float(np.ravel(high)[0]))
    return pairs


def methods_section(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    from modelport.ir.serde import save
    from modelport.quantize.ranges import collect_ranges

    log("[methods] RGB-D CNN with depth dropouts: three modelport calibrators vs ORT's MinMax and Entropy")
    fp32 = rgbd_model(folder)
    path = folder / "rgbd.fp32.onnx"
    save(fp32, path)
    samples = rgbd_samples(rgbd_scenes(32, 20, dropouts=2.0)[0])
    ours = {m: collect_ranges(fp32, samples, method=m).as_pairs() for m in OURS_METHODS}  # type: ignore[arg-type]
    peers = {f"ORT {m}": _ort_ranges(path, samples, m, folder) for m in ("MinMax", "Entropy")}
    columns = {**{f"modelport {m}": r for m, r in ours.items()}, **peers}
    shown = _shown_tensors(fp32)
    differ = {m: _differs(ours[m], ours["minmax"]) for m in OURS_METHODS if m != "minmax"}
    ort_same = _differs(peers["ORT Entropy"], peers["ORT MinMax"])
    return {
        "section": "methods",
        "description": (
            f"the RGB-D CNN of section 3, 32 calibration scenes with ~2 depth dropouts ({DROPOUT_MM:.0f} mm) each"
        ),
        "tensors": shown,
        "ranges": {column: {t: values.get(t) for t in shown} for column, values in columns.items()},
        "differ_from_minmax": {m: list(v) for m, v in differ.items()},
        "ort_entropy_differs_from_minmax": list(ort_same),
    }


def _shown_tensors(model: Any) -> list[str]:
    """The input, the first and last Relu outputs, a middle Conv output and the logits."""
    relus = [n.outputs[0].name for n in model.graph if n.op_type == "Relu"]
    convs = [n.outputs[0].name for n in model.graph if n.op_type == "Conv"]
    return [model.graph.inputs[0].name, relus[0], convs[len(convs) // 2], relus[-1], model.graph.outputs[0].name]


def print_methods(result: dict[str, Any]) -> None:
    print(f"\n### 4. Calibration methods on outlier activations: {result['description']}\n")
    columns = list(result["ranges"])
    print("| tensor | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for tensor in result["tensors"]:
        cells = []
        for column in columns:
            value = result["ranges"][column][tensor]
            cells.append("—" if value is None else f"[{value[0]:.4g}, {value[1]:.4g}]")
        print(f"| {tensor} | " + " | ".join(cells) + " |")
    differ = ", ".join(f"{m} on {d[0]}/{d[1]}" for m, d in result["differ_from_minmax"].items())
    ort = result["ort_entropy_differs_from_minmax"]
    print(
        f"\nsummary: modelport's calibrators differ from minmax: {differ} tensors; ONNX Runtime's Entropy "
        f"(default bins) differs from its MinMax on {ort[0]}/{ort[1]} "
        f"tensors{' — identical ranges, as the issue says' if ort[0] == 0 else ''}"
    )


# ==================================================================================================
# Command line
# ==================================================================================================

SECTIONS: dict[str, tuple[Callable[[Path, argparse.Namespace], dict[str, Any]], Callable[[dict[str, Any]], None]]] = {
    "resnet": (resnet_section, print_resnet),
    "bert": (bert_section, print_bert),
    "mixed": (mixed_section, print_mixed),
    "methods": (methods_section, print_methods),
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def versions() -> str:
    parts = []
    for dist in ("modelport", "onnxruntime", "onnx", "onnx-ir", "torch", "numpy"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from: {', '.join(SECTIONS)}")
    parser.add_argument("--seconds", type=float, default=60.0, help="interleaved timing budget of the ResNet table")
    parser.add_argument("--samples", type=int, default=100, help="ResNet calibration samples")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a quantizer counts as hung")
    parser.add_argument("--out", type=Path, help="keep the models in this folder")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    args = parser.parse_args()
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {unknown} — choose from {', '.join(SECTIONS)}")
    return args


def _machine() -> str:
    from modelport.quantize.hardware import int8_acceleration, machine

    return f"{machine()}, {os.cpu_count()} CPUs, INT8 features: {', '.join(int8_acceleration()) or 'none'}"


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.sections:
            results.append(SECTIONS[name][0](folder, args))
    print(f"Versions: {versions()}; {_machine()}; ORT intra-op threads {THREADS}.")
    print(f"Load average (1 min) at start / end: {load_before:.1f} / {os.getloadavg()[0]:.1f}.")
    for result in results:
        SECTIONS[result["section"]][1](result)
    print(f"\nWhole run: {time.perf_counter() - started:.0f} s")
    if args.json:
        serial = [{**r, "rows": [asdict(row) for row in r.get("rows", [])]} for r in results]
        args.json.write_text(json.dumps({"versions": versions(), "machine": _machine(), "sections": serial}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(sys.argv[2])
    else:
        main()
