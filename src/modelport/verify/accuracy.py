"""Dataset accuracy of a candidate model against its reference, sample by sample.

A converted model can match its reference closely on random inputs and still lose accuracy on real
data, and a mean over a test set hides which samples changed. So both models run on every sample of
a :class:`~modelport.verify.dataset.Dataset`, a :class:`Metric` scores each output (higher is better),
and the report lists every sample whose score fell (regressions) or rose (improvements) next to the
two means.

Metrics are ``top<K>`` (the label is among the K highest class scores of one output) or a user
function named ``package.module:function`` with the signature ``fn(outputs, label) -> float``.
Without labels, the reference's own answer becomes the label: top-k then measures agreement with the
reference's top-1 class, and a user function receives the reference's outputs as its label.

Samples run one at a time by default. ``batch_size > 1`` stacks consecutive samples into one call
when every input has a dynamic batch axis; per-sample scores are the same, only faster.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from modelport.entry_points import load_callable
from modelport.errors import BackendError, ConfigError
from modelport.runners.base import Feeds, Outputs, Runner
from modelport.verify.dataset import Dataset

__all__ = [
    "AccuracyReport",
    "LabelFromOutputs",
    "Metric",
    "SampleChange",
    "TopK",
    "UserMetric",
    "compare_accuracy",
    "evaluate",
    "resolve_metric",
]

logger = logging.getLogger(__name__)

#: ``progress(done, total)``: called after each sample (compare_accuracy counts both models' passes).
Progress = Callable[[int, int], None]

_TOPK = re.compile(r"top(\d+)", re.IGNORECASE)
#: Arrays larger than this are summarised, not listed, in a report's JSON.
_JSON_ARRAY_LIMIT = 64


class Metric(Protocol):
    """Scores one sample's outputs against its label; higher is better."""

    name: str

    def score(self, outputs: dict[str, np.ndarray[Any, Any]], label: Any) -> float: ...

    def prediction(self, outputs: dict[str, np.ndarray[Any, Any]]) -> Any: ...


@runtime_checkable
class LabelFromOutputs(Protocol):
    """A metric that can turn a reference's outputs into a label, for datasets without labels."""

    def label_from(self, outputs: dict[str, np.ndarray[Any, Any]]) -> Any: ...


class TopK:
    """1.0 when the label is among the ``k`` highest scores of ``output`` (last axis = classes), else 0.0.

    ``output=None`` means the first output of the reference model. Ties rank the lower class index first.
    """

    def __init__(self, k: int, *, output: str | None = None) -> None:
        if k < 1:
            raise ConfigError(f"top-k needs k >= 1, got top{k} — use top1, top5, ...")
        self.k = k
        self.output = output
        self.name = f"top{k}"

    def __repr__(self) -> str:
        return f"TopK(k={self.k}, output={self.output!r})"

    def _classes(self, outputs: dict[str, np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
        name = self.output if self.output is not None else next(iter(outputs), None)
        if name is None or name not in outputs:
            raise ConfigError(
                f"{self.name}: the model has no output '{name}'; its outputs are {sorted(outputs)} — "
                "choose the class-score output with output=NAME (--metric-output)"
            )
        array = np.asarray(outputs[name])
        if array.ndim == 0 or array.size != array.shape[-1]:
            raise ConfigError(
                f"{self.name}: output '{name}' has shape {list(array.shape)}, but top-k needs one row of class "
                "scores per sample ([1, C] or [C]) — choose the class-score output with output=NAME"
            )
        if array.size < self.k:
            raise ConfigError(f"{self.name}: output '{name}' has {array.size} classes, fewer than k={self.k}")
        return array.reshape(-1)

    def _top(self, scores: np.ndarray[Any, Any]) -> list[int]:
        return [int(i) for i in np.argsort(-scores, kind="stable")[: self.k]]

    def score(self, outputs: dict[str, np.ndarray[Any, Any]], label: Any) -> float:
        scores = self._classes(outputs)
        return 1.0 if _class_index(label, scores.size, self.name) in self._top(scores) else 0.0

    def prediction(self, outputs: dict[str, np.ndarray[Any, Any]]) -> list[int]:
        return self._top(self._classes(outputs))

    def label_from(self, outputs: dict[str, np.ndarray[Any, Any]]) -> int:
        return int(np.argmax(self._classes(outputs)))


def _class_index(label: Any, classes: int, metric: str) -> int:
    if label is None:
        raise ConfigError(
            f"{metric} needs a class label per sample, but the dataset has none — add labels (an .npz "
            "'labels' array or class subfolders), or compare against a reference to measure agreement"
        )
    value = np.asarray(label)
    kind = value.dtype.kind
    integral = value.ndim == 0 and (kind in "iu" or (kind == "f" and float(value).is_integer()))
    if not integral or not 0 <= int(value) < classes:
        raise ConfigError(
            f"{metric}: label {label!r} is not a class index in [0, {classes}) — top-k labels are integers, "
            "one per sample"
        )
    return int(value)


class UserMetric:
    """A user function ``fn(outputs, label) -> float`` named ``package.module:function``."""

    def __init__(self, name: str, fn: Callable[[dict[str, np.ndarray[Any, Any]], Any], Any]) -> None:
        self.name = name
        self._fn = fn

    def __repr__(self) -> str:
        return f"UserMetric({self.name!r})"

    def score(self, outputs: dict[str, np.ndarray[Any, Any]], label: Any) -> float:
        try:
            value = self._fn(outputs, label)
        except Exception as e:
            raise ConfigError(
                f"metric '{self.name}' raised {type(e).__name__}: {e} — fix the function or the labels it receives"
            ) from e
        try:
            result = float(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"metric '{self.name}' returned {type(value).__name__} {value!r:.60}, not a number — it must "
                "return one float per sample (higher is better)"
            ) from e
        if not math.isfinite(result):
            raise ConfigError(f"metric '{self.name}' returned {result}; a score must be a finite number")
        return result

    def prediction(self, outputs: dict[str, np.ndarray[Any, Any]]) -> None:
        return None

    def label_from(self, outputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        return dict(outputs)


def resolve_metric(text: str, *, output: str | None = None) -> Metric:
    """``top1``, ``top5``, ``top<K>`` (on ``output``, default the first), or ``package.module:function``."""
    spec = text.strip()
    match = _TOPK.fullmatch(spec)
    if match:
        return TopK(int(match.group(1)), output=output)
    if ":" not in spec:
        raise ConfigError(f"unknown metric '{text}' — use top1, top5, top<K>, or a function as package.module:function")
    if output is not None:
        raise ConfigError(
            f"output='{output}' chooses the class-score output of top-k; metric '{text}' receives every output — "
            "drop the output option or pick the output inside the function"
        )
    return UserMetric(spec, _load_function(spec))


def _load_function(spec: str) -> Callable[[dict[str, np.ndarray[Any, Any]], Any], Any]:
    target = load_callable(spec, what="metric", expects="a function fn(outputs, label) -> float")
    fn: Callable[[dict[str, np.ndarray[Any, Any]], Any], Any] = target
    return fn


# reports ---------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.size <= _JSON_ARRAY_LIMIT:
            return value.tolist()
        return f"<array {list(value.shape)} {value.dtype}>"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class SampleChange:
    """One sample whose score differs between candidate and reference."""

    index: int
    name: str
    label: Any
    reference: Any
    candidate: Any
    reference_score: float
    candidate_score: float

    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in asdict(self).items()}


@dataclass
class AccuracyReport:
    """Mean per-sample scores of both models and every sample whose score changed."""

    metric: str
    samples: int
    reference_score: float
    candidate_score: float
    #: ``candidate_score - reference_score``.
    delta: float
    #: Samples where the candidate scores strictly lower, by index.
    regressions: list[SampleChange]
    #: Samples where the candidate scores strictly higher, by index.
    improvements: list[SampleChange]
    #: False when the dataset had no labels and the reference's answers served as labels.
    labelled: bool
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "source": self.source,
            "samples": self.samples,
            "labelled": self.labelled,
            "reference_score": self.reference_score,
            "candidate_score": self.candidate_score,
            "delta": self.delta,
            "regressions": [c.to_dict() for c in self.regressions],
            "improvements": [c.to_dict() for c in self.improvements],
        }


# running --------------------------------------------------------------------------------------------


@dataclass
class _Pass:
    scores: list[float]
    predictions: list[Any]
    labels: list[Any]


@contextmanager
def _active(runner: Runner) -> Iterator[Runner]:
    if runner.is_active:
        yield runner
        return
    with runner:
        yield runner


def _batchable(runner: Runner, dataset: Dataset) -> bool:
    inputs_ok = all(s.shape is not None and s.shape and not isinstance(s.shape[0], int) for s in runner.inputs)
    outputs_ok = all(s.shape is not None and s.shape and not isinstance(s.shape[0], int) for s in runner.outputs)
    samples_ok = all(a.ndim > 0 and a.shape[0] == 1 for feeds in dataset.samples for a in feeds.values())
    return bool(inputs_ok and outputs_ok and samples_ok)


def _groups(dataset: Dataset, batch_size: int) -> Iterator[list[int]]:
    """Consecutive sample indices whose feeds have the same shapes, at most ``batch_size`` each."""
    group: list[int] = []
    key: object = None
    for i, feeds in enumerate(dataset.samples):
        shapes = {name: (a.shape, a.dtype) for name, a in feeds.items()}
        if group and (shapes != key or len(group) == batch_size):
            yield group
            group = []
        group.append(i)
        key = shapes
    if group:
        yield group


def _outputs(runner: Runner, dataset: Dataset, batch_size: int) -> Iterator[tuple[int, Outputs]]:
    """(index, outputs) for every sample, in order."""
    if batch_size == 1 or not _batchable(runner, dataset):
        if batch_size > 1:
            logger.info(
                "%s: running samples one at a time (not every input and output has a dynamic axis 0)", runner.name
            )
        for i, sample in enumerate(dataset.samples):
            yield i, runner.infer(sample)
        return
    for group in _groups(dataset, batch_size):
        first = dataset.samples[group[0]]
        feeds: Feeds = {name: np.concatenate([dataset.samples[i][name] for i in group]) for name in first}
        outputs = runner.infer(feeds)
        for name, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != len(group):
                raise BackendError(
                    f"model '{runner.name}' returned output '{name}' with shape {list(array.shape)} for a batch of "
                    f"{len(group)} samples — it does not batch along axis 0; evaluate with batch_size=1"
                )
        for row, i in enumerate(group):
            yield i, {name: array[row : row + 1] for name, array in outputs.items()}


def _run(
    runner: Runner,
    dataset: Dataset,
    metric: Metric,
    labels: Sequence[Any] | None,
    *,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> _Pass:
    """Score every sample; ``labels=None`` derives each label from the runner's own outputs."""
    result = _Pass([], [], [])
    for i, outputs in _outputs(runner, dataset, batch_size):
        try:
            label = labels[i] if labels is not None else _derive(metric, outputs)
            result.scores.append(metric.score(outputs, label))
            result.predictions.append(metric.prediction(outputs))
        except ConfigError as e:
            raise ConfigError(
                f"sample {i} ('{dataset.names[i]}') of {dataset.source}, model '{runner.name}': {e}"
            ) from e
        result.labels.append(label)
        if progress is not None:
            progress(i + 1)
    return result


def _derive(metric: Metric, outputs: Outputs) -> Any:
    if not isinstance(metric, LabelFromOutputs):
        raise ConfigError(f"the dataset has no labels, and metric '{metric.name}' cannot derive them from a reference")
    return metric.label_from(outputs)


def _check(dataset: Dataset, batch_size: int) -> None:
    if not len(dataset):
        raise ConfigError(f"dataset '{dataset.source}' has no samples")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")


def evaluate(
    runner: Runner,
    dataset: Dataset,
    metric: Metric,
    *,
    batch_size: int = 1,
    progress: Progress | None = None,
) -> list[float]:
    """Per-sample scores of one model on a labelled dataset (the runner is activated if it is not)."""
    _check(dataset, batch_size)
    total = len(dataset)
    tick = (lambda done: progress(done, total)) if progress is not None else None
    with _active(runner):
        metric = _pin_output(metric, runner)
        labels = dataset.labels if dataset.labels is not None else [None] * total
        return _run(runner, dataset, metric, labels, batch_size=batch_size, progress=tick).scores


def _pin_output(metric: Metric, reference: Runner) -> Metric:
    """Top-k on 'the first output' means the reference's first output, for both models."""
    if isinstance(metric, TopK) and metric.output is None and reference.outputs:
        return TopK(metric.k, output=reference.outputs[0].name)
    return metric


def compare_accuracy(
    candidate: Runner,
    reference: Runner,
    dataset: Dataset,
    metric: Metric,
    *,
    batch_size: int = 1,
    progress: Progress | None = None,
) -> AccuracyReport:
    """Score both models on every sample and list the samples whose score changed.

    Without labels the reference's answer is the label (``labelled=False``): top-k measures agreement
    with the reference's top-1 class, and the reference scores 1.0 on every sample.
    """
    _check(dataset, batch_size)
    total = 2 * len(dataset)
    with _active(reference), _active(candidate):
        metric = _pin_output(metric, reference)
        ref_tick = (lambda done: progress(done, total)) if progress is not None else None
        ref = _run(reference, dataset, metric, dataset.labels, batch_size=batch_size, progress=ref_tick)
        cand_tick = (lambda done: progress(len(dataset) + done, total)) if progress is not None else None
        cand = _run(candidate, dataset, metric, ref.labels, batch_size=batch_size, progress=cand_tick)
    report = _report(dataset, metric, ref, cand)
    logger.info(
        "%s on %d samples: reference %.4f, candidate %.4f (%+.4f), %d regressions, %d improvements",
        report.metric,
        report.samples,
        report.reference_score,
        report.candidate_score,
        report.delta,
        len(report.regressions),
        len(report.improvements),
    )
    return report


def _report(dataset: Dataset, metric: Metric, ref: _Pass, cand: _Pass) -> AccuracyReport:
    labelled = dataset.labels is not None
    regressions: list[SampleChange] = []
    improvements: list[SampleChange] = []
    for i, (r, c) in enumerate(zip(ref.scores, cand.scores, strict=True)):
        if r == c:
            continue
        label = ref.labels[i]
        if not labelled and isinstance(label, dict):
            label = None  # the reference's outputs: too big for a report row
        change = SampleChange(i, dataset.names[i], label, ref.predictions[i], cand.predictions[i], r, c)
        (regressions if c < r else improvements).append(change)
    reference_score = float(np.mean(ref.scores))
    candidate_score = float(np.mean(cand.scores))
    return AccuracyReport(
        metric=metric.name,
        samples=len(dataset),
        reference_score=reference_score,
        candidate_score=candidate_score,
        delta=candidate_score - reference_score,
        regressions=regressions,
        improvements=improvements,
        labelled=labelled,
        source=dataset.source,
    )
