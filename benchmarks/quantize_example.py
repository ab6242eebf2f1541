"""INT8 on the built-in example CNN: modelport vs the ONNX Runtime quantizer's defaults vs FP32.

Side by side in one run, timed in interleaved windows (ONNX Runtime CPU, batch 8 and 1):
  * FP32        — the optimized FP32 model (Conv+BN folded), the baseline;
  * ORT default — onnxruntime.quantization.quantize_static with its default arguments
                  (QDQ, per-tensor, S8S8, MinMax), the anchor tool;
  * modelport   — modelport's int8-static (QDQ, per-channel weights, U8S8, MinMax).
Output error is measured against FP32 on the deterministic calibration images.

Run: .venv/bin/python benchmarks/quantize_example.py [--seconds 6]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from modelport.bench.harness import INTERLEAVED_ORT_CONFIG, bench_interleaved
from modelport.deploy.example import example_calibration, example_model
from modelport.ir.serde import load, save
from modelport.passes.manager import optimize
from modelport.quantize.api import stack_samples
from modelport.quantize.hardware import int8_acceleration
from modelport.quantize.int8 import quantize_static
from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.diff import diff_outputs
from modelport.verify.tolerance import EXACT


class _Reader:
    def __init__(self, samples: list[dict[str, object]]) -> None:
        self.it = iter(samples)

    def get_next(self) -> dict[str, object] | None:
        return next(self.it, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="timing budget per batch size")
    args = parser.parse_args()
    from onnxruntime import quantization as q

    fp32 = optimize(example_model()).model
    samples = [{"image": x[None]} for x in example_calibration(32)]
    ours = quantize_static(fp32, samples)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "ort.onnx"
        save(fp32, src)
        q.quantize_static(str(src), str(dst), _Reader(samples))  # the quantizer's defaults
        ort_default = load(dst)
        ort_default.meta.clear()
        runners = [
            OrtRunner(fp32, name="FP32", session_config=INTERLEAVED_ORT_CONFIG),
            OrtRunner(ort_default, name="ORT quantizer defaults", session_config=INTERLEAVED_ORT_CONFIG),
            OrtRunner(ours, name="modelport int8-static", session_config=INTERLEAVED_ORT_CONFIG),
        ]
        for r in runners:
            r.activate()
    print(f"CPU INT8 features: {', '.join(int8_acceleration()) or 'none'}")
    print("| batch | variant | median ms | p90 ms | CV | speed vs FP32 | SQNR vs FP32 dB |")
    print("|---|---|---|---|---|---|---|")
    for batch in (8, 1):
        feeds = stack_samples(samples, batch)
        reference = runners[0].infer(feeds)
        results = bench_interleaved(runners, feeds, duration=args.seconds, rounds=6)
        for runner, res in zip(runners, results, strict=True):
            sqnr = diff_outputs(runner.infer(feeds), reference, EXACT)[0].sqnr_db
            sqnr_text = "—" if runner is runners[0] else f"{sqnr:.1f}"
            print(
                f"| {batch} | {res.name} | {res.median_ms:.2f} | {res.p90_ms:.2f} | {res.cv:.0%} | "
                f"{results[0].median_ms / res.median_ms:.2f}x | {sqnr_text} |"
            )
    for r in runners:
        r.deactivate()


if __name__ == "__main__":
    main()
