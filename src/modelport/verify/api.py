"""``compare`` and ``verify``: one model on two engines, or two models on one, on identical inputs.

``compare`` answers one question (do the outputs match on generated inputs?). ``verify`` runs every
check worth making after a conversion and returns a :class:`~modelport.verify.report.VerifyReport`:
the signature side by side, the engines' settings, outputs on realistic and constant inputs at
batch 1 and batch N and on the user's data, each side's batch consistency, NaN/Inf, accuracy on a
labelled set, and the time each side took.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import onnx_ir as ir

from modelport.errors import BackendError, ConfigError, InputError
from modelport.ir.specs import TensorSpec
from modelport.runners import create_runner
from modelport.runners.base import Feeds, Outputs, Runner
from modelport.verify.compare import (
    BatchComparison,
    CompareReport,
    cannot_run,
    check_batch_consistency,
    check_signature,
    compare_feeds,
    compare_runners,
    plan_runs,
)
from modelport.verify.diff import merge_diffs
from modelport.verify.inputs import (
    FILLS,
    InputPlan,
    effective_batch,
    feeds_batch,
    generate_feeds,
    hinted_plan,
    integer_input_ranges,
    merge_ranges,
)
from modelport.verify.report import MAX_LISTED_SAMPLES, DataRun, Latency, VerifyReport
from modelport.verify.tolerance import Tolerance

if TYPE_CHECKING:
    from modelport.verify.dataset import Dataset

__all__ = ["DEFAULT_TOLERANCE", "compare", "verify", "verify_runners"]

logger = logging.getLogger(__name__)

#: Default bound for FP32 vs FP32 comparisons.
DEFAULT_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4)

Model = ir.Model | str | os.PathLike[str]


def _runner(backend: str, model: Model, label: str, *, loaded: ir.Model | None = None, **options: Any) -> Runner:
    if backend.startswith("onnxruntime"):  # the CPU, CUDA and TensorRT runners take in-memory models
        from modelport.ir.serde import load

        if loaded is None:
            loaded = model if isinstance(model, ir.Model) else load(model)
        return create_runner(backend, loaded, name=label, **options)
    return create_runner(backend, model, name=label)


def _onnx_model(model: Model) -> ir.Model | None:
    """The model as onnx_ir when it is ONNX (in memory or a .onnx path), else None (a torch spec)."""
    if isinstance(model, ir.Model):
        return model
    if str(model).endswith(".onnx"):
        from modelport.ir.serde import load

        return load(model)
    return None


def _check_backends(model_b: Model | None, backends: Sequence[str]) -> None:
    if not backends or len(backends) > 2:
        raise ConfigError(f"give one or two backends, got {list(backends)}")
    if model_b is None and len(backends) == 1 and backends[0] != "onnxruntime":
        raise ConfigError(f"comparing one model needs two backends (or onnxruntime alone), got {list(backends)}")


def _runner_pair(
    model_a: Model,
    model_b: Model | None,
    backends: Sequence[str],
    *,
    loaded_a: ir.Model | None = None,
    loaded_b: ir.Model | None = None,
) -> tuple[Runner, Runner]:
    """(candidate, reference) runners, not yet active; see :func:`compare` for the pairing rules.

    ``loaded_a`` / ``loaded_b`` are the models already read (so ONNX Runtime does not read them again).
    """
    if model_b is None and len(backends) == 1:
        cand = _runner("onnxruntime", model_a, "onnxruntime (all optimizations)", loaded=loaded_a)
        ref = _runner(
            "onnxruntime",
            model_a,
            "onnxruntime (no optimizations)",
            loaded=loaded_a,
            graph_optimization="disable",
        )
        return cand, ref
    second, loaded_second = (model_b, loaded_b) if model_b is not None else (model_a, loaded_a)
    return (
        _runner(backends[0], model_a, f"A ({backends[0]})", loaded=loaded_a),
        _runner(backends[-1], second, f"B ({backends[-1]})", loaded=loaded_second),
    )


def compare(
    model_a: Model,
    model_b: Model | None = None,
    *,
    backends: Sequence[str] = ("onnxruntime",),
    batches: Sequence[int] = (1, 2),
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    plan: InputPlan | None = None,
    fills: Sequence[str] = ("random",),
    lsb: int = 0,
) -> CompareReport:
    """Compare a candidate against a reference on generated inputs at each batch size.

    * two models, one backend: A (candidate) vs B (reference) on that backend;
    * two models, two backends: A on the first, B on the second;
    * one model, two backends: the model on the first (candidate) vs the second (reference);
    * one model, ``onnxruntime`` only: full graph optimizations vs none — catches engine rewrites
      that change results.
    """
    _check_backends(model_b, backends)
    plan = plan or InputPlan()
    plan = replace(plan, int_ranges=merge_ranges(_int_ranges(model_b or model_a), plan.int_ranges))
    with ExitStack() as stack:
        cand, ref = _runner_pair(model_a, model_b, backends)
        stack.enter_context(cand)
        stack.enter_context(ref)
        return compare_runners(cand, ref, tolerance=tolerance, batches=batches, plan=plan, fills=fills, lsb=lsb)


def _int_ranges(model: Model) -> dict[str, tuple[int, int]]:
    loaded = _onnx_model(model)
    return integer_input_ranges(loaded) if loaded is not None else {}


# verify ---------------------------------------------------------------------------------------


def verify(
    model_a: Model,
    model_b: Model | None = None,
    *,
    backends: Sequence[str] = ("onnxruntime",),
    batches: Sequence[int] = (1, 4),
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    lsb: int = 0,
    plan: InputPlan | None = None,
    fills: Sequence[str] = ("realistic", "ones"),
    data: Dataset | str | os.PathLike[str] | None = None,
    metric: str | None = None,
    output: str | None = None,
    max_accuracy_drop: float = 0.0,
    max_rows: int = 8,
) -> VerifyReport:
    """Every check after a conversion: candidate A against reference B (runners paired as in :func:`compare`).

    Generated inputs follow ``fills`` (``realistic`` reads token-id ranges and masks from the
    reference's graph) at each of ``batches``; ``data`` (a :class:`Dataset` or a path for
    :func:`~modelport.verify.dataset.load_dataset`) adds the user's samples, and accuracy when it
    has labels or ``metric`` is given (``top1``, ``top5``, ``pkg.mod:function``; ``output`` names
    the output it scores). Integer outputs pass within ``lsb`` units of the last place.
    """
    _check_backends(model_b, backends)
    _check_options(batches, fills, lsb, max_accuracy_drop, data, metric)
    loaded_a = _onnx_model(model_a)
    loaded_b = _onnx_model(model_b) if model_b is not None else None
    plan = hinted_plan(plan or InputPlan(), loaded_b if model_b is not None else loaded_a)
    with ExitStack() as stack:
        cand, ref = _runner_pair(model_a, model_b, backends, loaded_a=loaded_a, loaded_b=loaded_b)
        stack.enter_context(cand)
        stack.enter_context(ref)
        return verify_runners(
            cand,
            ref,
            batches=batches,
            tolerance=tolerance,
            lsb=lsb,
            plan=plan,
            fills=fills,
            data=data,
            metric=metric,
            output=output,
            max_accuracy_drop=max_accuracy_drop,
            max_rows=max_rows,
        )


def _check_options(
    batches: Sequence[int],
    fills: Sequence[str],
    lsb: int,
    max_accuracy_drop: float,
    data: object,
    metric: str | None,
) -> None:
    if not batches or any(b < 1 for b in batches):
        raise ConfigError(f"batch sizes must be >= 1, got {list(batches)} — e.g. batches=(1, 4)")
    unknown = [f for f in fills if f not in FILLS]
    if unknown or not fills:
        raise ConfigError(f"unknown input fill(s) {unknown or list(fills)} — choose from {', '.join(FILLS)}")
    if lsb < 0:
        raise ConfigError(f"the integer tolerance must be >= 0 LSB, got lsb={lsb}")
    if max_accuracy_drop < 0:
        raise ConfigError(f"max_accuracy_drop must be >= 0, got {max_accuracy_drop}")
    if metric is not None and data is None:
        raise ConfigError(f"metric '{metric}' needs data to score — give a dataset (--data PATH)")


def verify_runners(
    candidate: Runner,
    reference: Runner,
    *,
    batches: Sequence[int] = (1, 4),
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    lsb: int = 0,
    plan: InputPlan | None = None,
    fills: Sequence[str] = ("realistic", "ones"),
    data: Dataset | str | os.PathLike[str] | None = None,
    metric: str | None = None,
    output: str | None = None,
    max_accuracy_drop: float = 0.0,
    max_rows: int = 8,
) -> VerifyReport:
    """:func:`verify` on two runners (activated here if they are not already)."""
    _check_options(batches, fills, lsb, max_accuracy_drop, data, metric)
    plan = plan or InputPlan()
    with ExitStack() as stack:
        cand, ref = _Timed(candidate), _Timed(reference)
        stack.enter_context(cand)
        stack.enter_context(ref)
        report = VerifyReport(candidate.name, reference.name, tolerance, lsb=lsb, max_accuracy_drop=max_accuracy_drop)
        report.engines = {
            "candidate": {"name": candidate.name, **candidate.describe()},
            "reference": {"name": reference.name, **reference.describe()},
        }
        report.signature = check_signature(cand, ref)
        blocker = cannot_run(cand, ref)
        if blocker:
            report.problems.append(f"outputs not compared: {blocker}")
        _generated(
            report, cand, ref, batches=batches, fills=fills, plan=plan, compare=blocker is None, max_rows=max_rows
        )
        if data is not None:
            if blocker is None:
                _user_data(report, cand, ref, data, metric, output)
            else:
                report.problems.append(f"user data not used: {blocker}")
        report.speed = [*cand.latencies("candidate"), *ref.latencies("reference")]
    logger.info("verify %s vs %s: %s", candidate.name, reference.name, report.verdict)
    return report


def _generated(
    report: VerifyReport,
    cand: Runner,
    ref: Runner,
    *,
    batches: Sequence[int],
    fills: Sequence[str],
    plan: InputPlan,
    compare: bool,
    max_rows: int,
) -> None:
    """Compare both sides on each (batch, fill) and check each side's batch consistency at batch > 1.

    A side that cannot run an input (its batch axis became fixed, its engine failed) becomes a
    problem in the report, not an exception: the other checks still run.
    """
    plans, report.notes = plan_runs(ref.inputs, batches=batches, fills=fills, plan=plan)
    for run_plan in plans:
        where = f"batch {run_plan.batch}, {run_plan.fill} inputs"
        feeds = generate_feeds(ref.inputs, run_plan)
        if compare:
            try:
                run = compare_feeds(cand, ref, feeds, report.tolerance, run_plan.fill, lsb=report.lsb)
            except (InputError, BackendError) as e:
                report.problems.append(f"outputs not compared at {where}: {e}")
            else:
                run.inputs = run_plan.describe(ref.inputs)
                report.runs.append(run)
        for side, runner in (("candidate", cand), ("reference", ref)):
            if not _takes_batches(runner, run_plan.batch):
                continue
            same = compare and runner.inputs == ref.inputs
            own = feeds if same else generate_feeds(runner.inputs, run_plan)
            try:
                check = check_batch_consistency(
                    runner,
                    own,
                    tolerance=report.tolerance,
                    lsb=report.lsb,
                    side=side,
                    fill=run_plan.fill,
                    max_rows=max_rows,
                )
            except (InputError, BackendError) as e:
                report.problems.append(f"batch consistency of the {side} not checked at {where}: {e}")
            else:
                report.batch_consistency.append(check)


def _takes_batches(runner: Runner, batch: int) -> bool:
    """Whether ``runner`` takes both batch 1 and ``batch`` (> 1): then its rows can be compared."""
    return batch > 1 and effective_batch(runner.inputs, 1) == 1 and effective_batch(runner.inputs, batch) == batch


def _user_data(
    report: VerifyReport,
    cand: Runner,
    ref: Runner,
    data: Dataset | str | os.PathLike[str],
    metric: str | None,
    output: str | None,
) -> None:
    """Outputs on every sample of the user's data, folded into one comparison; then accuracy."""
    from modelport.verify.dataset import Dataset, load_dataset

    dataset = data if isinstance(data, Dataset) else load_dataset(data, ref.inputs)
    try:
        runs = [
            compare_feeds(cand, ref, sample, report.tolerance, name, lsb=report.lsb)
            for name, sample in zip(dataset.names, dataset.samples, strict=True)
        ]
    except (InputError, BackendError) as e:
        report.problems.append(f"user data {dataset.source} not compared: {e}")
        return
    failed = [run.fill for run in runs if not run.passed]
    report.data = DataRun(
        source=dataset.source,
        samples=len(dataset),
        comparison=BatchComparison(1, "data", _describe_data(dataset, ref.inputs), _fold(runs)),
        failed_count=len(failed),
        failed_samples=failed[:MAX_LISTED_SAMPLES],
    )
    if dataset.labels is not None or metric is not None:
        from modelport.verify.accuracy import compare_accuracy, resolve_metric

        chosen = resolve_metric(metric or "top1", output=output)
        report.accuracy = compare_accuracy(cand, ref, dataset, chosen)


def _fold(runs: list[BatchComparison]) -> list[Any]:
    by_output: dict[str, list[Any]] = {}
    for run in runs:
        for d in run.diffs:
            by_output.setdefault(d.name, []).append(d)
    return [merge_diffs(diffs) for diffs in by_output.values()]


def _describe_data(dataset: Dataset, specs: Sequence[TensorSpec]) -> dict[str, Any]:
    first = dataset.samples[0]
    return {
        s.name: {
            "shape": list(first[s.name].shape) if s.name in first else None,
            "dtype": str(s.dtype),
            "values": f"{len(dataset)} samples from {dataset.source}",
        }
        for s in specs
    }


class _Timed(Runner):
    """Wraps an active-or-not runner and keeps (batch, seconds) of every inference through it.

    Every check goes through these wrappers, so the speed section covers all runs verify made
    without threading a log through each function. Times are the wrapped engine's own
    ``last_inference_time``.
    """

    def __init__(self, inner: Runner) -> None:
        super().__init__(name=inner.name)
        self.backend = inner.backend
        self.inner = inner
        self.times: list[tuple[int, float]] = []
        self._started_inner = False

    def _activate(self) -> None:
        self._started_inner = not self.inner.is_active
        self.inner.activate()

    def _deactivate(self) -> None:
        if self._started_inner:
            self.inner.deactivate()

    def _input_specs(self) -> list[TensorSpec]:
        return self.inner.inputs

    def _output_specs(self) -> list[TensorSpec]:
        return self.inner.outputs

    def _infer(self, feeds: Feeds) -> Outputs:
        outputs = self.inner.infer(feeds, check=False)
        if self.inner.last_inference_time is not None:
            self.times.append((feeds_batch(self.inputs, feeds), self.inner.last_inference_time))
        return outputs

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def latencies(self, side: str) -> list[Latency]:
        by_batch: dict[int, list[float]] = {}
        for batch, seconds in self.times:
            by_batch.setdefault(batch, []).append(seconds)
        return [
            Latency(side, self.name, batch, len(times), 1000.0 * sum(times) / len(times))
            for batch, times in sorted(by_batch.items())
        ]
