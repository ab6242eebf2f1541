"""Automatic mixed precision: the fewest FP32 layers that bring an INT8 model within an accuracy budget.

Full INT8 is tried first. When it misses the budget, the layers are ranked by how much each one hurts
when quantized alone (:mod:`modelport.quantize.sensitivity`), and the ``k`` most sensitive are kept in
FP32 (excluded from quantization) for the smallest ``k`` that meets the budget. ``k`` is searched by
doubling (1, 2, 4, ... up to the limit) and then bisection between the last failing and the first
passing count, so a model with hundreds of layers needs about ``2 log2(n)`` builds, not ``n``.

Bisection assumes that keeping more of the most sensitive layers in FP32 never makes the model
worse. That is true in practice (each extra FP32 layer removes a source of quantization noise) but
not guaranteed, so nothing is taken on trust: every ``k`` the search visits is built and measured,
and the model returned is always one that was measured — the smallest passing ``k`` seen, or, when
no count within the limit passes, the best-scoring model seen with ``met=False`` and how far it
misses. All variants share one calibration.

A budget is either a signal floor (output SQNR and cosine against FP32 on evaluation samples, a
:class:`~modelport.verify.tolerance.SignalTolerance`) or a task metric on a labelled
:class:`~modelport.verify.dataset.Dataset` with the largest drop allowed against FP32.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import onnx_ir as ir

from modelport.errors import BackendError, ConfigError, QuantizationError
from modelport.quantize.int8 import is_quantized
from modelport.quantize.sensitivity import (
    Feeds,
    LayerQuantizer,
    LayerSensitivity,
    Method,
    Progress,
    SensitivityTable,
    SignalError,
    SignalProbe,
    json_float,
    sensitivity_table,
)
from modelport.verify.accuracy import AccuracyReport, LabelFromOutputs, Metric, TopK, resolve_metric
from modelport.verify.dataset import Dataset
from modelport.verify.tolerance import SignalTolerance

if TYPE_CHECKING:
    from modelport.quantize.ranges import RangeSet

__all__ = ["AccuracyBudget", "KeptLayer", "MixedResult", "Trial", "fewest_passing", "mixed_precision"]

logger = logging.getLogger(__name__)

#: Metric means are compared with this slack, so that 0.95 - 0.945 still counts as a drop of 0.005.
_METRIC_SLACK = 1e-9


@dataclass(frozen=True)
class AccuracyBudget:
    """What "accurate enough" means: a signal floor OR a task metric, never both.

    * ``signal``: every output's SQNR and cosine against FP32 on the evaluation samples must reach the
      floor (see :meth:`floor`);
    * ``dataset`` + ``metric`` + ``max_drop``: the metric's mean over the labelled dataset may fall at
      most ``max_drop`` below FP32's, in the metric's own units — top-k means are fractions, so half a
      percentage point is ``max_drop=0.005`` (see :meth:`task`). An unlabelled dataset measures
      agreement with FP32's answers instead.
    """

    signal: SignalTolerance | None = None
    dataset: Dataset | None = None
    metric: Metric | None = None
    max_drop: float | None = None

    def __post_init__(self) -> None:
        task = (self.dataset, self.metric, self.max_drop)
        if self.signal is not None and any(x is not None for x in task):
            raise ConfigError(
                "an accuracy budget is a signal floor OR a task metric, not both — "
                "use AccuracyBudget.floor(...) or AccuracyBudget.task(...)"
            )
        if self.signal is None and any(x is None for x in task):
            raise ConfigError(
                "a task-metric budget needs dataset, metric and max_drop (a signal budget needs signal=) — "
                "use AccuracyBudget.task(dataset, 'top1', max_drop=0.005)"
            )
        if self.max_drop is not None and not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise ConfigError(f"max_drop must be a finite number >= 0 (in metric units), got {self.max_drop}")
        if self.dataset is not None and not len(self.dataset):
            raise ConfigError(f"the budget's dataset '{self.dataset.source}' has no samples")

    @classmethod
    def floor(cls, min_sqnr_db: float, min_cosine: float = 0.0) -> AccuracyBudget:
        """Every output must keep ``min_sqnr_db`` SQNR and ``min_cosine`` cosine against FP32."""
        return cls(signal=SignalTolerance(min_sqnr_db=min_sqnr_db, min_cosine=min_cosine))

    @classmethod
    def task(cls, dataset: Dataset, metric: Metric | str, *, max_drop: float) -> AccuracyBudget:
        """``metric`` (``'top1'``, ``'top5'``, ``'pkg.mod:fn'`` or a Metric) may drop at most ``max_drop``."""
        resolved = resolve_metric(metric) if isinstance(metric, str) else metric
        return cls(dataset=dataset, metric=resolved, max_drop=max_drop)

    def __str__(self) -> str:
        if self.signal is not None:
            return str(self.signal)
        assert self.metric is not None and self.dataset is not None
        return f"{self.metric.name} drop <= {self.max_drop:g} on {len(self.dataset)} samples of {self.dataset.source}"


class KeptLayer(NamedTuple):
    """A layer kept in FP32, and why it was chosen."""

    node: str
    op_type: str
    reason: str


class Trial(NamedTuple):
    """One measured setting: how many of the most sensitive layers were FP32, its score, and the verdict.

    The score is the worst output SQNR in dB for a signal budget, the metric's mean for a task budget.
    """

    kept: int
    score: float
    passed: bool


@dataclass
class MixedResult:
    """The model chosen, the layers it keeps in FP32 and why, and every setting measured on the way."""

    model: ir.Model
    kept_fp32: list[KeptLayer]
    met: bool
    why: str
    #: Every measured setting, in the order tried.
    trials: list[Trial]
    #: ``None`` when full INT8 met the budget and no layer had to be ranked.
    sensitivity: SensitivityTable | None
    budget: str
    #: The chosen model's score (see :class:`Trial`).
    score: float
    #: The chosen model's error against FP32 on the evaluation samples (signal budgets).
    signal: SignalError | None = None
    #: The chosen model against FP32 on the budget's dataset, sample by sample (task budgets).
    accuracy: AccuracyReport | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "met": self.met,
            "why": self.why,
            "budget": self.budget,
            "score": json_float(self.score),
            "kept_fp32": [k._asdict() for k in self.kept_fp32],
            "trials": [{**t._asdict(), "score": json_float(t.score)} for t in self.trials],
            "signal": self.signal.to_dict() if self.signal else None,
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "sensitivity": self.sensitivity.to_dict() if self.sensitivity else None,
            "seconds": self.seconds,
        }


# judging a variant against the budget -------------------------------------------------------------


@dataclass
class _Verdict:
    score: float
    passed: bool
    #: What was measured ("SQNR 12.1 dB, cosine 0.98", "top1 0.875 vs FP32 1.000").
    detail: str
    #: How far it misses ("7.9 dB below the 20 dB floor"); empty when it passes.
    gap: str
    signal: SignalError | None = None


class _Judge(Protocol):
    def judge(self, model: ir.Model, name: str) -> _Verdict: ...


class _SignalJudge:
    def __init__(self, probe: SignalProbe, floor: SignalTolerance) -> None:
        self.probe = probe
        self.floor = floor

    def judge(self, model: ir.Model, name: str) -> _Verdict:
        error = self.probe.measure(model, name=name)
        if self.floor.check(error.sqnr_db, error.cosine) is None:
            return _Verdict(error.sqnr_db, True, error.describe(), "", error)
        sqnr, cosine = self.floor.min_sqnr_db, self.floor.min_cosine
        if not error.sqnr_db >= sqnr:
            gap = f"SQNR {error.sqnr_db:.1f} dB is {sqnr - error.sqnr_db:.1f} dB below the {sqnr:g} dB floor"
        else:
            gap = f"cosine {error.cosine:.5f} is {cosine - error.cosine:.5f} below the {cosine:g} floor"
        return _Verdict(error.sqnr_db, False, error.describe(), gap, error)


class _MetricJudge:
    """Scores variants on a dataset whose labels are fixed once (FP32's answers when it has none)."""

    def __init__(self, reference: ir.Model, dataset: Dataset, metric: Metric, max_drop: float) -> None:
        from modelport.runners.onnxruntime import OrtRunner
        from modelport.verify.accuracy import evaluate

        self.dataset = dataset
        self.max_drop = max_drop
        with OrtRunner(reference, name="fp32") as runner:
            if isinstance(metric, TopK) and metric.output is None:
                metric = TopK(metric.k, output=runner.outputs[0].name)  # pin "the first output" for every variant
            self.metric = metric
            self.labelled = dataset if dataset.labels is not None else self._labelled_by(runner)
            self.reference_score = float(np.mean(evaluate(runner, self.labelled, metric)))

    def _labelled_by(self, runner: Any) -> Dataset:
        if not isinstance(self.metric, LabelFromOutputs):
            raise ConfigError(
                f"the budget's dataset '{self.dataset.source}' has no labels, and metric '{self.metric.name}' cannot "
                "take FP32's outputs as labels — add labels to the dataset"
            )
        labels = [self.metric.label_from(runner.infer(feeds)) for feeds in self.dataset.samples]
        return Dataset(list(self.dataset.samples), labels, list(self.dataset.names), self.dataset.source)

    def judge(self, model: ir.Model, name: str) -> _Verdict:
        from modelport.runners.onnxruntime import OrtRunner
        from modelport.verify.accuracy import evaluate

        with OrtRunner(model, name=name) as runner:
            score = float(np.mean(evaluate(runner, self.labelled, self.metric)))
        drop = self.reference_score - score
        detail = f"{self.metric.name} {score:.4f} vs FP32 {self.reference_score:.4f} (drop {drop:+.4f})"
        if drop <= self.max_drop + _METRIC_SLACK:
            return _Verdict(score, True, detail, "")
        gap = f"{self.metric.name} drops {drop:.4f}, {drop - self.max_drop:.4f} more than the {self.max_drop:g} allowed"
        return _Verdict(score, False, detail, gap)


# the search --------------------------------------------------------------------------------------


def fewest_passing(passes: Callable[[int], bool], limit: int) -> int | None:
    """The smallest ``k`` in ``1..limit`` with ``passes(k)``, by doubling then bisection.

    Assumes ``passes`` is monotone (false up to some ``k``, true from there on); each ``k`` is asked
    at most once. Returns ``None`` when ``passes(limit)`` is false (``k=0`` is the caller's business).
    """
    if limit < 1:
        return None
    failing, passing = 0, None
    k = 1
    while passing is None:
        if passes(k):
            passing = k
        elif k == limit:
            return None
        else:
            failing, k = k, min(2 * k, limit)
    while passing - failing > 1:
        middle = (failing + passing) // 2
        if passes(middle):
            passing = middle
        else:
            failing = middle
    return passing


@dataclass
class _Measured:
    model: ir.Model | None
    verdict: _Verdict


class _Search:
    """Builds and judges "the k most sensitive layers in FP32", remembering every k it measured."""

    def __init__(self, quantizer: LayerQuantizer, judge: _Judge) -> None:
        self.quantizer = quantizer
        self.judge = judge
        self.order: list[str] = []
        self.measured: dict[int, _Measured] = {}
        self.trials: list[Trial] = []

    def measure(self, k: int) -> _Measured:
        if k in self.measured:
            return self.measured[k]
        model: ir.Model | None = None
        try:
            model = self.quantizer.keeping(self.order[:k]) if k else self.quantizer.full()
            verdict = self.judge.judge(model, f"int8-fp32x{k}")
        except (QuantizationError, BackendError) as e:
            logger.warning("INT8 with %d layers in FP32 failed: %s", k, e)
            model, verdict = None, _Verdict(-math.inf, False, f"failed: {e}", f"the variant failed: {e}")
        logger.info(
            "%d layer(s) in FP32: %s — %s", k, verdict.detail, "meets the budget" if verdict.passed else "misses"
        )
        self.measured[k] = _Measured(model, verdict)
        self.trials.append(Trial(k, verdict.score, verdict.passed))
        return self.measured[k]

    def passes(self, k: int) -> bool:
        return self.measure(k).verdict.passed

    def best(self) -> int:
        """The measured ``k`` with the highest score (fewest layers on ties) whose model exists."""
        built = [k for k, m in self.measured.items() if m.model is not None]
        if not built:
            reasons = "; ".join(f"k={k}: {m.verdict.detail}" for k, m in sorted(self.measured.items()))
            raise QuantizationError(f"no INT8 variant could be built or run ({reasons})")
        return max(built, key=lambda k: (self.measured[k].verdict.score, -k))


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _limit(max_fp32_layers: int | None, candidates: int) -> int:
    if max_fp32_layers is None:
        return candidates
    if max_fp32_layers < 0:
        raise ConfigError(f"max_fp32_layers must be >= 0, got {max_fp32_layers}")
    return min(max_fp32_layers, candidates)


def _reason(row: LayerSensitivity, rank: int, total: int) -> str:
    place = "the most sensitive" if rank == 1 else f"the {_ordinal(rank)} most sensitive"
    if not row.measured:
        return f"{row.describe()}; ranked {place} of {total} as unmeasurable"
    return f"SQNR {row.sqnr_db:.1f} dB alone (cosine {row.cosine:.5f}), {place} of {total} layers"


def _kept(table: SensitivityTable, names: Sequence[str]) -> list[KeptLayer]:
    rows = {row.node: (i, row) for i, row in enumerate(table.rows, start=1)}
    return [KeptLayer(n, rows[n][1].op_type, _reason(rows[n][1], rows[n][0], len(table.rows))) for n in names]


def _why(search: _Search, chosen: int, met: bool, budget: AccuracyBudget, limit: int) -> str:
    full = search.measured[0].verdict
    picked = search.measured[chosen].verdict
    if met and chosen == 0:
        return f"full INT8 meets the budget ({budget}): {full.detail}"
    layers = f"{chosen} most sensitive layer{'s' if chosen != 1 else ''}"
    if met:
        model = search.measured[chosen].model
        every = " — no node is INT8 any more: this is the FP32 model" if model and not is_quantized(model) else ""
        return (
            f"full INT8 misses the budget ({budget}): {full.gap}; keeping the {layers} in FP32 meets it: "
            f"{picked.detail}{every}"
        )
    tried = ", ".join(str(t.kept) for t in search.trials)
    best = "full INT8" if chosen == 0 else f"the {layers} in FP32"
    return (
        f"no setting tried meets the budget ({budget}) with at most {limit} layers in FP32 "
        f"(tried k = {tried}); the best, {best}, reaches {picked.detail}: {picked.gap}"
    )


# the entry point ----------------------------------------------------------------------------------


def _judge_for(
    budget: AccuracyBudget, quantizer: LayerQuantizer, eval_samples: Sequence[Feeds]
) -> tuple[_Judge, SignalProbe | None]:
    if budget.signal is not None:
        probe = SignalProbe(quantizer.model, eval_samples)
        return _SignalJudge(probe, budget.signal), probe
    assert budget.dataset is not None and budget.metric is not None and budget.max_drop is not None
    return _MetricJudge(quantizer.model, budget.dataset, budget.metric, budget.max_drop), None


def _final_accuracy(model: ir.Model, reference: ir.Model, budget: AccuracyBudget) -> AccuracyReport | None:
    """The chosen model against FP32 on the budget's dataset, with every sample that changed."""
    if budget.dataset is None or budget.metric is None:
        return None
    from modelport.runners.onnxruntime import OrtRunner
    from modelport.verify.accuracy import compare_accuracy

    with OrtRunner(model, name="mixed") as cand, OrtRunner(reference, name="fp32") as ref:
        return compare_accuracy(cand, ref, budget.dataset, budget.metric)


def mixed_precision(
    model: ir.Model,
    calibration: Sequence[Feeds],
    budget: AccuracyBudget,
    *,
    eval_samples: Sequence[Feeds] | None = None,
    max_fp32_layers: int | None = None,
    layers: Sequence[str] | None = None,
    ranges: RangeSet | Mapping[str, tuple[float, float]] | None = None,
    method: Method = "minmax",
    progress: Progress | None = None,
    **quantize_options: Any,
) -> MixedResult:
    """INT8 with the fewest most-sensitive layers in FP32 that meets ``budget``.

    ``calibration`` is calibrated on once (or ``ranges`` reused) for every variant. ``eval_samples``
    (default: the calibration samples) are what layer sensitivity — and a signal budget — is measured
    on; a task budget is measured on its own dataset. ``layers`` limits which layers may be kept in
    FP32 (default: every quantizable layer), ``max_fp32_layers`` how many. ``progress(done, total)``
    follows the sensitivity ranking, the long part. ``quantize_options`` go to
    :func:`~modelport.quantize.int8.quantize_static`.

    When the budget cannot be met, the best-scoring measured model is returned with ``met=False``
    and a ``why`` that says by how much it misses.
    """
    start = time.perf_counter()
    quantizer = LayerQuantizer(model, calibration, ranges=ranges, method=method, **quantize_options)
    candidates = quantizer.resolve(layers)
    limit = _limit(max_fp32_layers, len(candidates))
    samples = eval_samples if eval_samples is not None else calibration
    judge, probe = _judge_for(budget, quantizer, samples)
    search = _Search(quantizer, judge)
    full = search.measure(0)
    table = None
    chosen: int | None = 0
    if not full.verdict.passed:
        table = sensitivity_table(
            quantizer,
            probe or SignalProbe(quantizer.model, samples),
            candidates,
            full_int8=full.verdict.signal,
            progress=progress,
        )
        search.order = [row.node for row in table.rows]
        chosen = fewest_passing(search.passes, limit)
    met = chosen is not None
    if chosen is None:
        chosen = search.best()
    picked = search.measured[chosen]
    assert picked.model is not None  # a passing variant, or the best one that was built
    result = MixedResult(
        model=picked.model,
        kept_fp32=_kept(table, search.order[:chosen]) if table is not None else [],
        met=met,
        why=_why(search, chosen, met, budget, limit),
        trials=search.trials,
        sensitivity=table,
        budget=str(budget),
        score=picked.verdict.score,
        signal=picked.verdict.signal,
        accuracy=_final_accuracy(picked.model, quantizer.model, budget),
        seconds=time.perf_counter() - start,
    )
    (logger.info if met else logger.warning)("mixed precision: %s", result.why)
    return result
