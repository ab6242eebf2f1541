"""``compare``: one model on two engines, or two models on one, on identical inputs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import onnx_ir as ir

from modelport.errors import ConfigError
from modelport.runners import create_runner
from modelport.runners.base import Runner
from modelport.verify.compare import CompareReport, compare_runners
from modelport.verify.inputs import InputPlan, integer_input_ranges, merge_ranges
from modelport.verify.tolerance import Tolerance

__all__ = ["DEFAULT_TOLERANCE", "compare"]

#: Default bound for FP32 vs FP32 comparisons.
DEFAULT_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4)

Model = ir.Model | str | os.PathLike[str]


def _runner(backend: str, model: Model, label: str, **options: Any) -> Runner:
    if backend == "onnxruntime":
        from modelport.ir.serde import load

        loaded = model if isinstance(model, ir.Model) else load(model)
        return create_runner(backend, loaded, name=label, **options)
    return create_runner(backend, model, name=label)


def _int_ranges(model: Model) -> dict[str, tuple[int, int]]:
    if isinstance(model, ir.Model):
        return integer_input_ranges(model)
    if str(model).endswith(".onnx"):
        from modelport.ir.serde import load

        return integer_input_ranges(load(model))
    return {}


def compare(
    model_a: Model,
    model_b: Model | None = None,
    *,
    backends: Sequence[str] = ("onnxruntime",),
    batches: Sequence[int] = (1, 2),
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    plan: InputPlan | None = None,
    fills: Sequence[str] = ("random",),
) -> CompareReport:
    """Compare a candidate against a reference on generated inputs at each batch size.

    * two models, one backend: A (candidate) vs B (reference) on that backend;
    * two models, two backends: A on the first, B on the second;
    * one model, two backends: the model on the first (candidate) vs the second (reference);
    * one model, ``onnxruntime`` only: full graph optimizations vs none — catches engine rewrites
      that change results.
    """
    if not backends or len(backends) > 2:
        raise ConfigError(f"give one or two backends, got {list(backends)}")
    if model_b is None and len(backends) == 1 and backends[0] != "onnxruntime":
        raise ConfigError(f"comparing one model needs two backends (or onnxruntime alone), got {list(backends)}")
    plan = plan or InputPlan()
    plan = replace(plan, int_ranges=merge_ranges(_int_ranges(model_b or model_a), plan.int_ranges))
    with ExitStack() as stack:
        if model_b is None and len(backends) == 1:
            cand = _runner("onnxruntime", model_a, "onnxruntime (all optimizations)")
            ref = _runner(
                "onnxruntime",
                model_a,
                "onnxruntime (no optimizations)",
                graph_optimization="disable",
            )
        else:
            second = model_b if model_b is not None else model_a
            cand = _runner(backends[0], model_a, f"A ({backends[0]})")
            ref = _runner(backends[-1], second, f"B ({backends[-1]})")
        stack.enter_context(cand)
        stack.enter_context(ref)
        return compare_runners(cand, ref, tolerance=tolerance, batches=batches, plan=plan, fills=fills)
