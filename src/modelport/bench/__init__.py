"""Benchmarking: latency statistics, throughput, stability."""

from modelport.bench.harness import CV_WARNING, BenchResult, bench, bench_interleaved, bench_runner

__all__ = ["CV_WARNING", "BenchResult", "bench", "bench_interleaved", "bench_runner"]
