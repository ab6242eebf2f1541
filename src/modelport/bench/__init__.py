"""Benchmarking and capacity planning.

``harness`` (latency statistics, throughput, windows until stable, stages, memory), ``sweep``
(batch / threads / callers sweeps and a recommendation), ``report`` (table, CSV, HTML),
``loadtest`` (load against a KServe v2 server) and ``analyze`` (capacity search over a
repository). The last two are imported from their modules, since they pull in the server stack.
"""

from modelport.bench.harness import (
    CV_WARNING,
    BenchResult,
    BenchSettings,
    bench,
    bench_interleaved,
    bench_runner,
    measure,
)
from modelport.bench.sweep import SweepSpec, recommend, run_sweep

__all__ = [
    "CV_WARNING",
    "BenchResult",
    "BenchSettings",
    "SweepSpec",
    "bench",
    "bench_interleaved",
    "bench_runner",
    "measure",
    "recommend",
    "run_sweep",
]
