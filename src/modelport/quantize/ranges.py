"""Activation ranges for INT8: our own MinMax, Percentile and Entropy calibrators, streamed.

Why our own: in onnxruntime 1.31 the Entropy calibrator returns the same ranges as MinMax at its
default bin counts, so choosing a method silently changes nothing. Here the three methods are
separate numpy calibrators over the values of the *graph* (ONNX Runtime with graph optimizations
disabled, so a fused engine cannot hide a tensor), and a test proves they differ on outliers.

How a tensor's values are seen
    Samples are processed one at a time. The tensors to calibrate are marked as extra model
    outputs in *chunks* whose bytes fit ``memory_budget_mb``: per-tensor bytes come from ONNX shape
    inference with the symbolic dimensions bound to the sample's input shapes (inferred again at the
    concrete input shapes where that leaves sizes open, e.g. a dynamic image size through a Conv);
    a size that depends on the data counts as the whole budget, so that tensor runs alone. After
    the first run at given input shapes the *measured* sizes replace the estimates (the chunks are
    re-planned if they change).
    Each chunk gets its own session of a copy of the model whose outputs are that chunk and whose
    nodes that do not feed it are pruned, so ONNX Runtime frees every other intermediate as usual;
    weights are handed to every session as shared buffers, never copied. A tensor bigger than the
    budget on its own is run alone. A small budget means several runs per sample, never different
    numbers. Per-tensor state is O(bins): min, max and one histogram.

MinMax
    ``low, high = min x, max x`` over every value of every sample (one pass).

Histograms (Percentile and Entropy)
    Pass 1 finds each tensor's global ``low``/``high``; pass 2 histograms ``|x|`` into ``B = bins``
    equal bins over ``[0, A]`` with ``A = max(|low|, |high|)`` (for a non-negative tensor, e.g.
    after Relu, ``|x| = x``: the non-negative range). Exact zeros are left out: 0 is exact in every
    range, and the spike of zeros a Relu leaves would otherwise dominate bin 0 and pull the entropy
    threshold far too low (measured: a ResNet's output SQNR fell from 39 dB to 5 dB). Two passes is
    why ``samples`` must be re-iterable (a Sequence, or a zero-argument callable returning a fresh
    iterator) for these methods. Both methods produce a magnitude threshold ``t`` and the range is
    the symmetric ``[-t, t]`` intersected with the observed ``[low, high]`` — so a one-sided tensor
    keeps its own side, and ``t = A`` gives the MinMax range exactly. (Were the intersection empty —
    a threshold below the minimum of a strictly positive tensor — the MinMax range is kept.)

MSE (least squared error)
    ``t`` minimizes the expected squared error of quantizing the histogrammed values to 8 bits over
    ``[0, t]`` (one-sided tensors: 255 steps) or ``[-t, t]`` (signed: 255 steps over both sides):
    rounding costs ``Δ²/12`` per value inside, clipping ``(|x| - t)²`` per value beyond. It trades
    outliers against resolution explicitly, where Percentile fixes the share of clipped values and
    Entropy compares distributions. See :func:`mse_bins`.

Percentile (symmetric)
    ``t`` is the ``percentile``-th percentile of ``|x|``: the upper edge of the first bin whose
    cumulative count reaches ``percentile/100`` of all values. ``percentile=100`` is MinMax.

Entropy (TensorRT-style KL divergence)
    For every candidate ``i`` in ``L..B`` (``L = 128`` quantized levels, the magnitudes of int8;
    thresholds ``t_i = i·A/B`` from 128 levels up to the full range):

    * ``P`` (reference): bins ``h[0..i)`` with every count beyond the threshold added to the
      last kept bin — clipping puts outliers there.
    * ``Q`` (quantized): ``h[0..i)`` merged into ``L`` levels of ``m = i // L`` bins (the last
      level takes the remainder), each level's count spread evenly over the bins where ``P`` is
      non-zero. ``Q`` holds no outlier mass, which is what penalizes clipping too much.
    * ``KL(P‖Q) = Σ_k P_k log(P_k / Q_k)`` over ``P_k > 0`` after normalizing both. A ``Q_k``
      of 0 under a non-zero ``P_k`` (only the outliers fell in that level) is floored at
      ``1e-4`` counts, as TensorRT's and MXNet's smoothing does.

    ``t`` is the ``t_i`` of least divergence among those that clip at most 1 % of the values
    (``MAX_CLIPPED``): a threshold below nearly all the mass leaves ``P`` one spike that ``Q``
    matches exactly, a KL of ~0 that would otherwise win. ``Q`` is constant within a level, so each
    candidate costs O(L) with prefix sums (``Σ p log p`` and counts per level), not O(B). More bins
    give finer candidates: with ``B = 2048`` a body of values narrower than ``A/16`` cannot be
    resolved (the smallest candidate is 128 bins), which is why the default is not lower.

Cache
    With ``cache_dir`` the result is stored as JSON under a blake2b key of the model's serialized
    bytes (graph and every weight), every sample's bytes (names, dtypes, shapes, data) and the
    settings (method, percentile, bins, tensors, modelport and onnxruntime versions). The key must
    be known *before* running, so with a ``cache_dir`` the data are hashed in a cheap pre-pass
    (hashing is far cheaper than inference) — which also needs re-iterable samples. Every pass
    hashes the samples as they stream by, and passes that saw different data are an error (a
    reader that draws new random samples each time cannot be calibrated in two passes). Writes go
    to a temporary file that is renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from modelport.errors import CalibrationDataError, ConfigError, InputError, ModelportError, QuantizationError
from modelport.ir.serde import clone, infer_shapes, serialize_without_weights
from modelport.ir.specs import TensorSpec, specs_of
from modelport.runners.base import check_feeds
from modelport.runners.onnxruntime import OrtRunner

__all__ = [
    "LEVELS",
    "METHODS",
    "Method",
    "RangeSet",
    "TensorRange",
    "calibration_tensors",
    "collect_ranges",
    "entropy_bins",
    "mse_bins",
    "percentile_bins",
]

logger = logging.getLogger(__name__)

Method = Literal["minmax", "entropy", "percentile", "mse"]
METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile", "mse")
#: Quantized levels the Entropy calibrator assumes for a magnitude (int8: 128).
LEVELS = 128
#: Entropy thresholds may clip at most this share of a tensor's (non-zero) values.
MAX_CLIPPED = 0.01
#: A Q count of zero under a non-zero P count is floored at this (TensorRT/MXNet smoothing).
_Q_FLOOR = 1e-4
_CACHE_FORMAT = 1
_SHAPE_OPS = frozenset({"Shape", "Size"})

Feeds = Mapping[str, np.ndarray[Any, Any]]
Samples = Iterable[Feeds] | Callable[[], Iterable[Feeds]]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class TensorRange:
    """The calibrated range of one activation (per tensor). A quantizer widens it to hold 0."""

    low: float
    high: float


@dataclass
class RangeSet:
    """Ranges of every calibrated tensor, with how they were obtained and the cache key."""

    ranges: dict[str, TensorRange]
    method: str
    samples: int
    settings: dict[str, Any]
    key: str
    from_cache: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "samples": self.samples,
            "settings": self.settings,
            "key": self.key,
            "from_cache": self.from_cache,
            "ranges": {name: {"low": r.low, "high": r.high} for name, r in self.ranges.items()},
        }

    def as_pairs(self) -> dict[str, tuple[float, float]]:
        """``{tensor: (low, high)}``."""
        return {name: (r.low, r.high) for name, r in self.ranges.items()}


# ------------------------------------------------------------------------------------ which tensors


def _typed(model: ir.Model) -> ir.Model:
    """``model`` itself when every main-graph tensor has a dtype, else a copy with inferred types."""
    if all(v.dtype is not None for node in model.graph for v in node.outputs):
        return model
    copy = clone(model)
    infer_shapes(copy)
    return copy


def _data_values(graph: ir.Graph) -> list[ir.Value]:
    """Graph inputs and node outputs that depend on the data (not only on shapes or constants)."""
    inputs = [v for v in graph.inputs if not v.is_initializer()]
    dynamic: set[ir.Value] = set(inputs)
    ordered = list(inputs)
    for node in graph:
        if node.op_type in _SHAPE_OPS and node.domain in ("", "ai.onnx"):
            continue
        has_subgraph = any(
            a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()
        )
        if has_subgraph or any(v is not None and v in dynamic for v in node.inputs):
            dynamic.update(node.outputs)
            ordered.extend(node.outputs)
    return ordered


def calibration_tensors(model: ir.Model) -> list[str]:
    """The float32 tensors a QDQ quantizer needs ranges for, in graph order.

    Graph inputs and outputs of main-graph nodes that depend on the data; shape computations
    (anything computed only from ``Shape``/``Size`` and constants), non-float tensors and
    initializers are left out. ``model`` is not modified (missing dtypes are inferred on a copy).
    """
    typed = _typed(model)
    return [v.name for v in _data_values(typed.graph) if v.name and v.dtype == ir.DataType.FLOAT]


def _check_tensors(model: ir.Model, tensors: Sequence[str]) -> list[str]:
    if isinstance(tensors, str):
        raise ConfigError(f"tensors={tensors!r} is a string — give a list of tensor names, e.g. [{tensors!r}]")
    if not tensors:
        raise ConfigError("tensors=[] names no tensor — give the names to calibrate, or None for all of them")
    graph = model.graph
    known = {v.name: v for v in [*graph.inputs, *(o for node in graph for o in node.outputs)] if v.name}
    for name in tensors:
        if name in graph.initializers:
            raise ConfigError(
                f"'{name}' is an initializer (a weight) — weights are quantized from their values, not calibrated; "
                "leave it out of tensors"
            )
        value = known.get(name)
        if value is None:
            raise ConfigError(
                f"the model has no tensor '{name}' in its main graph — use calibration_tensors(model) to list "
                "the tensors that can be calibrated"
            )
        if value.dtype != ir.DataType.FLOAT:
            raise ConfigError(f"tensor '{name}' has dtype {value.dtype}, but only float32 activations are calibrated")
    return list(dict.fromkeys(tensors))


# ---------------------------------------------------------------------------------- reading samples


class _Samples:
    """The caller's samples as something that can be iterated once or several times."""

    def __init__(self, samples: Samples, *, passes: int, method: str, cached: bool) -> None:
        if isinstance(samples, Mapping):
            raise ConfigError(
                "samples is one feeds dict — give a list of them (one per sample), or a function returning an iterator"
            )
        if isinstance(samples, str | bytes | os.PathLike):
            raise ConfigError(
                f"samples is a path or string ({samples!r}) — read files with load_calibration(path, specs) and "
                "a Python data source with entry_point_reader('package.module:function', specs)"
            )
        self._samples = samples
        self.kind = self._kind(samples)
        if self.kind == "iterator" and (passes > 1 or cached):
            why = (
                f"method '{method}' reads the samples twice (min/max first, then histograms over that range)"
                if passes > 1
                else "a cache_dir needs the samples hashed before they are run"
            )
            raise ConfigError(
                f"{why}, but a one-shot iterator was given — pass a list, or a zero-argument function that "
                "returns a fresh iterator each time (e.g. a generator function)"
            )
        self._consumed = False

    @staticmethod
    def _kind(samples: object) -> str:
        if isinstance(samples, Iterator):
            return "iterator"
        if isinstance(samples, Iterable):
            return "iterable"
        if callable(samples):
            return "callable"
        raise ConfigError(
            f"samples is a {type(samples).__name__} — give a list of feeds dicts, an iterable of them, or a "
            "zero-argument function returning one"
        )

    def _fresh(self) -> Iterator[object]:
        samples: Any = self._samples
        if self.kind == "iterator":
            if self._consumed:
                raise QuantizationError("internal error: a one-shot iterator of samples was read twice")
            self._consumed = True
            return iter(samples)
        if self.kind == "iterable":
            return iter(samples)
        what = getattr(samples, "__qualname__", repr(samples))
        try:
            produced = samples()
        except ModelportError:
            raise
        except Exception as e:
            raise CalibrationDataError(f"the samples function {what} failed: {type(e).__name__}: {e}") from e
        if isinstance(produced, Mapping) or not isinstance(produced, Iterable):
            raise CalibrationDataError(
                f"the samples function {what} returned a {type(produced).__name__} — it must return an iterable "
                "of feeds dicts (or be a generator function)"
            )
        return iter(produced)

    def stream(self, specs: list[TensorSpec], digest: Any) -> Iterator[Feeds]:
        """Checked feeds, one sample at a time; each one is hashed into ``digest`` as it passes."""
        items = self._fresh()
        index = 0
        while True:
            try:
                item = next(items)
            except StopIteration:
                return
            except ModelportError:
                raise
            except Exception as e:
                raise CalibrationDataError(f"reading calibration sample {index} failed: {type(e).__name__}: {e}") from e
            feeds = _check_sample(index, item, specs)
            _hash_feeds(digest, feeds)
            yield feeds
            index += 1


def _check_sample(index: int, item: object, specs: list[TensorSpec]) -> Feeds:
    if not isinstance(item, Mapping):
        raise CalibrationDataError(
            f"calibration sample {index} is a {type(item).__name__}, not a dict of input name -> numpy array"
        )
    try:
        check_feeds(specs, item, model_name="the model")
    except InputError as e:
        raise CalibrationDataError(f"calibration sample {index} does not fit the model: {e}") from e
    return item


def _hash_feeds(digest: Any, feeds: Feeds) -> None:
    for name in sorted(feeds):
        array = feeds[name]
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype == object:
            digest.update(repr(array.tolist()).encode())
        else:
            digest.update(np.ascontiguousarray(array).data)


def _data_digest() -> Any:
    return hashlib.blake2b(b"modelport-calibration-data", digest_size=32)


# ---------------------------------------------------------------------------------- running chunks


Consume = Callable[[str, np.ndarray[Any, Any]], None]


class _Prober:
    """Runs a model with the tensors to calibrate marked as outputs, a budget's worth per run."""

    def __init__(self, model: ir.Model, tensors: Sequence[str], budget_bytes: int) -> None:
        self.model = model
        self.budget = budget_bytes
        inputs = {v.name for v in model.graph.inputs}
        self.fed = [n for n in tensors if n in inputs]
        self.probed = [n for n in tensors if n not in inputs]
        self.values = {v.name: v for node in model.graph for v in node.outputs if v.name}
        #: Input shapes -> the chunks planned from the sizes measured at those shapes.
        self._plans: dict[tuple[Any, ...], tuple[tuple[str, ...], ...]] = {}
        self._partition: tuple[tuple[str, ...], ...] = ()
        self._runners: list[OrtRunner] = []
        #: Model runs so far, and the largest bytes of marked outputs one run returned.
        self.runs = 0
        self.peak_marked_bytes = 0

    def close(self) -> None:
        for runner in self._runners:
            runner.deactivate()
        self._runners = []
        self._partition = ()

    def run(self, feeds: Feeds, consume: Consume) -> None:
        """Call ``consume(name, array)`` for every tensor, holding one chunk's outputs at a time."""
        for name in self.fed:
            consume(name, feeds[name])
        if not self.probed:
            return
        signature = tuple(sorted((n, a.shape, a.dtype.str) for n, a in feeds.items()))
        partition = self._plans.get(signature)
        first = partition is None
        if partition is None:
            partition = self._plan(self._estimate(feeds))
        measured: dict[str, int] = {}
        for runner in self._session_for(partition):
            outputs = runner.infer(feeds, check=False)
            self.runs += 1
            self.peak_marked_bytes = max(self.peak_marked_bytes, sum(a.nbytes for a in outputs.values()))
            for name, array in outputs.items():
                measured[name] = array.nbytes
                consume(name, array)
            del outputs
        if first:
            # Measured sizes replace the estimates for every later sample with these input shapes.
            self._plans[signature] = self._plan(measured)

    def _estimate(self, feeds: Feeds) -> dict[str, int]:
        """Bytes per tensor from shape inference at these input shapes.

        Symbolic dimensions are bound from the feeds first; if that leaves sizes unknown (a
        dynamic image size through a Conv), shapes are inferred again on a copy with the inputs'
        concrete shapes. A size still unknown (data-dependent) counts as the whole budget, so that
        tensor runs alone until its size is measured.
        """
        bound: dict[str, int] = {}
        for value in self.model.graph.inputs:
            array = feeds.get(value.name or "")
            if array is None or value.shape is None or len(value.shape) != array.ndim:
                continue
            for dim, size in zip(value.shape, array.shape, strict=True):
                if isinstance(dim, ir.SymbolicDim) and dim.value is not None:
                    bound[dim.value] = size
        sizes = {n: _bytes_of(self.values[n], bound) for n in self.probed}
        if any(s is None for s in sizes.values()):
            concrete = _concrete_values(self.model, feeds)
            sizes = {n: _bytes_of(concrete[n], {}) if s is None else s for n, s in sizes.items()}
        unknown = [n for n, s in sizes.items() if s is None]
        if unknown:
            logger.debug("no inferred size for %d tensor(s), e.g. '%s': each runs alone once", len(unknown), unknown[0])
        return {n: self.budget if s is None else s for n, s in sizes.items()}

    def _plan(self, sizes: Mapping[str, int]) -> tuple[tuple[str, ...], ...]:
        chunks: list[tuple[str, ...]] = []
        current: list[str] = []
        total = 0
        for name in self.probed:
            size = sizes.get(name, 0)
            if current and total + size > self.budget:
                chunks.append(tuple(current))
                current, total = [], 0
            if size > self.budget:
                logger.info("tensor '%s' alone needs %.1f MB, more than the memory budget", name, size / 2**20)
            current.append(name)
            total += size
        if current:
            chunks.append(tuple(current))
        return tuple(chunks)

    def _session_for(self, partition: tuple[tuple[str, ...], ...]) -> list[OrtRunner]:
        if partition == self._partition:
            return self._runners
        self.close()
        logger.debug("calibration runs %d chunk(s) per sample: %s", len(partition), [len(c) for c in partition])
        runners = []
        try:
            for index, chunk in enumerate(partition):
                runner = OrtRunner(
                    _chunk_model(self.model, chunk),
                    graph_optimization="disable",
                    share_weights=True,
                    name=f"calibration chunk {index + 1}/{len(partition)}",
                )
                runner.activate()
                runners.append(runner)
        except BaseException:
            for runner in runners:
                runner.deactivate()
            raise
        self._runners, self._partition = runners, partition
        return runners


def _bytes_of(value: ir.Value, bound: Mapping[str, int]) -> int | None:
    if value.shape is None or value.dtype is None:
        return None
    count = 1
    for dim in value.shape:
        if isinstance(dim, int):
            count *= dim
        elif dim.value is not None and dim.value in bound:
            count *= bound[dim.value]
        else:
            return None
    return count * int(value.dtype.itemsize)


def _concrete_values(model: ir.Model, feeds: Feeds) -> dict[str, ir.Value]:
    """Node outputs of a copy of ``model`` with shapes inferred at the feeds' concrete shapes."""
    copy = clone(model)
    for value in copy.graph.inputs:
        array = feeds.get(value.name or "")
        if array is not None:
            value.shape = ir.Shape(list(array.shape))
    for node in copy.graph:
        for value in node.outputs:
            value.shape = None
    infer_shapes(copy)
    return {v.name: v for node in copy.graph for v in node.outputs if v.name}


def _chunk_model(model: ir.Model, names: Sequence[str]) -> ir.Model:
    """A copy of ``model`` whose outputs are ``names``, without the nodes that do not feed them."""
    from onnx_ir.passes import common

    copy = clone(model)
    values = {v.name: v for node in copy.graph for v in node.outputs if v.name}
    copy.graph.outputs.clear()
    copy.graph.outputs.extend(values[n] for n in names)
    common.RemoveUnusedNodesPass()(copy)
    return copy


# ------------------------------------------------------------------------------------- calibrators


@dataclass
class _Stats:
    """What is kept per tensor: global min/max, non-finite count, and the |x| histogram."""

    low: float = float("inf")
    high: float = float("-inf")
    nonfinite: int = 0
    hist: np.ndarray[Any, np.dtype[np.int64]] | None = field(default=None, repr=False)

    @property
    def seen(self) -> bool:
        return self.low <= self.high

    @property
    def amax(self) -> float:
        return max(abs(self.low), abs(self.high))

    def observe(self, array: np.ndarray[Any, Any]) -> None:
        if array.size == 0:
            return
        low, high = array.min(), array.max()
        if not (np.isfinite(low) and np.isfinite(high)):
            finite = array[np.isfinite(array)]
            self.nonfinite += array.size - finite.size
            if finite.size == 0:
                return
            low, high = finite.min(), finite.max()
        self.low = min(self.low, float(low))
        self.high = max(self.high, float(high))

    def histogram(self, array: np.ndarray[Any, Any], bins: int) -> None:
        if self.hist is None:
            self.hist = np.zeros(bins, np.int64)
        if array.size == 0 or not self.seen or self.amax == 0.0:
            return
        if self.nonfinite:
            array = array[np.isfinite(array)]
        # Exact zeros (half of a post-Relu tensor) are exact in every range that holds 0: counted,
        # they pile into bin 0 and make the entropy search favour thresholds far too small.
        array = array[array != 0]
        scaled = np.abs(array).astype(np.float32, copy=False)
        scaled *= np.float32(bins / self.amax)
        index = scaled.astype(np.intp).ravel()
        np.minimum(index, bins - 1, out=index)
        self.hist += np.bincount(index, minlength=bins)


def percentile_bins(hist: np.ndarray[Any, Any], percentile: float) -> int:
    """How many bins the ``percentile``-th percentile of the histogrammed values needs (1..len)."""
    cumulative = np.cumsum(hist)
    index = int(np.searchsorted(cumulative, percentile / 100.0 * cumulative[-1], side="left"))
    return min(index + 1, hist.size)


def entropy_bins(hist: np.ndarray[Any, Any], levels: int = LEVELS) -> int:
    """The number of bins ``i`` in ``levels..len(hist)`` whose threshold minimizes KL(P‖Q), among
    the thresholds that clip at most :data:`MAX_CLIPPED` of the values.

    See the module docstring for P and Q. Computed for every candidate at once with prefix sums.
    """
    h = np.asarray(hist, dtype=np.float64)
    n = h.size
    total = h.sum()
    if n <= levels or total == 0:
        return n
    cands = np.arange(levels, n + 1)
    prefix = np.concatenate(([0.0], np.cumsum(h)))
    nonzero = np.concatenate(([0], np.cumsum(h > 0)))
    safe = np.where(h > 0, h, 1.0)
    plogp = np.concatenate(([0.0], np.cumsum(h * np.log(safe))))
    tail = total - prefix[cands]
    last = h[cands - 1] + tail  # P's last kept bin, outliers included
    # Level boundaries: level j spans [j*m, (j+1)*m), the last one up to i.
    m = cands // levels
    start = np.arange(levels)[None, :] * m[:, None]
    stop = start + m[:, None]
    stop[:, -1] = cands
    level_sum = prefix[stop] - prefix[start]
    level_nz = (nonzero[stop] - nonzero[start]).astype(np.float64)
    level_nz[:, -1] += (h[cands - 1] == 0) & (tail > 0)  # the last bin is non-zero in P
    p_mass = level_sum.copy()
    p_mass[:, -1] += tail
    q = np.where(level_sum > 0, level_sum / np.maximum(level_nz, 1.0), _Q_FLOOR)
    sum_p_log_q = np.where(p_mass > 0, p_mass * np.log(q), 0.0).sum(axis=1)
    sum_p_log_p = plogp[cands - 1] + np.where(last > 0, last * np.log(np.where(last > 0, last, 1.0)), 0.0)
    q_total = prefix[cands]
    with np.errstate(divide="ignore"):
        kl = (sum_p_log_p - sum_p_log_q) / total - np.log(total) + np.log(q_total)
    # A threshold that clips most of the values makes P nearly one spike that Q matches exactly
    # (KL ~ 0): a degenerate optimum, e.g. [0.2023, 0.2030] for a tensor spanning [0.2, 2.2].
    kl = np.where((q_total > 0) & (tail <= MAX_CLIPPED * total), kl, np.inf)
    if not np.isfinite(kl).any():
        return n
    return int(cands[int(np.argmin(kl))])


def mse_bins(hist: np.ndarray[Any, Any], *, one_sided: bool, min_bins: int = 16) -> int:
    """The number of bins ``i`` whose threshold minimizes the expected squared quantization error.

    With the threshold at ``i`` bins, a value inside it is rounded to a step ``Δ = i / S`` (in bin
    units; ``S = 255`` steps for a one-sided tensor, 127.5 per side for a signed one) and errs by
    ``Δ²/12`` on average; a value ``c`` beyond it is clipped and errs by ``(c - i)²``. Both sums come
    from prefix sums of ``h``, ``h·c`` and ``h·c²`` (``c`` = bin centres), for every candidate at once.
    """
    h = np.asarray(hist, dtype=np.float64)
    n = h.size
    if n <= min_bins or h.sum() == 0:
        return n
    centres = np.arange(n, dtype=np.float64) + 0.5
    p0 = np.concatenate(([0.0], np.cumsum(h)))
    p1 = np.concatenate(([0.0], np.cumsum(h * centres)))
    p2 = np.concatenate(([0.0], np.cumsum(h * centres * centres)))
    cands = np.arange(min_bins, n + 1)
    t = cands.astype(np.float64)
    step = t / (255.0 if one_sided else 127.5)
    rounding = p0[cands] * step * step / 12.0
    clipped = (p2[-1] - p2[cands]) - 2.0 * t * (p1[-1] - p1[cands]) + t * t * (p0[-1] - p0[cands])
    return int(cands[int(np.argmin(rounding + clipped))])


def _tensor_range(stats: _Stats, method: str, percentile: float) -> TensorRange:
    low, high = stats.low, stats.high
    if method == "minmax" or stats.amax == 0.0 or stats.hist is None or stats.hist.sum() == 0:
        return TensorRange(low, high)
    bins = stats.hist.size
    if method == "percentile":
        used = percentile_bins(stats.hist, percentile)
    elif method == "mse":
        used = mse_bins(stats.hist, one_sided=low >= 0.0 or high <= 0.0)
    else:
        used = entropy_bins(stats.hist)
    threshold = used * stats.amax / bins
    clipped = TensorRange(max(low, -threshold), min(high, threshold))
    return clipped if clipped.low <= clipped.high else TensorRange(low, high)


# ------------------------------------------------------------------------------------------- cache


def _model_digest(model: ir.Model) -> bytes:
    """blake2b of the serialized graph and every weight's bytes (weights hashed in place, not copied)."""
    data, names, arrays = serialize_without_weights(model)
    digest = hashlib.blake2b(b"modelport-model", digest_size=32)
    digest.update(data)
    for name, array in zip(names, arrays, strict=True):
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.digest()


def _cache_key(model_digest: bytes, data_digest: bytes, settings: Mapping[str, Any]) -> str:
    digest = hashlib.blake2b(b"modelport-ranges", digest_size=32)
    digest.update(model_digest)
    digest.update(data_digest)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"ranges-{key}.json"


def _prepare_cache_dir(cache_dir: str | os.PathLike[str]) -> Path:
    path = Path(cache_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the calibration cache folder '{path}': {e} — choose another cache_dir") from e
    return path


def _read_cache(path: Path, key: str) -> RangeSet | None:
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        if raw["key"] != key:
            raise ValueError(f"it holds key {raw['key']}")
        ranges = {str(n): TensorRange(float(r["low"]), float(r["high"])) for n, r in raw["ranges"].items()}
        return RangeSet(ranges, str(raw["method"]), int(raw["samples"]), dict(raw["settings"]), key, from_cache=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        logger.warning("ignoring the unreadable calibration cache entry %s (%s); calibrating again", path, e)
        return None


def _write_cache(path: Path, result: RangeSet) -> None:
    text = json.dumps(result.to_dict(), indent=1, sort_keys=True)
    temporary: Path | None = None
    try:
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".ranges-", suffix=".tmp", delete=False) as f:
            temporary = Path(f.name)
            f.write(text)
        os.replace(temporary, path)
    except OSError as e:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot write the calibration cache entry '{path}': {e} — check that cache_dir is writable"
        ) from e


# --------------------------------------------------------------------------------------------- API


def _check_settings(method: str, percentile: float, bins: int, memory_budget_mb: float) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method '{method}' — choose one of {', '.join(METHODS)}")
    if not 0.0 < percentile <= 100.0:
        raise ConfigError(f"percentile={percentile} is outside (0, 100] — e.g. 99.999 keeps all but 1 value in 100000")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < LEVELS:
        raise ConfigError(
            f"bins={bins!r} is too few — histograms need at least {LEVELS} bins (the int8 levels); the default is 2048"
        )
    if not memory_budget_mb > 0:
        raise ConfigError(f"memory_budget_mb={memory_budget_mb} must be positive — e.g. 512")


def _settings(method: str, percentile: float, bins: int, tensors: Sequence[str]) -> dict[str, Any]:
    import onnxruntime

    from modelport import __version__

    settings: dict[str, Any] = {"method": method}
    if method == "percentile":
        settings["percentile"] = percentile
    if method != "minmax":
        settings["bins"] = bins
    if method == "entropy":
        settings["levels"] = LEVELS
    settings.update(
        tensors=sorted(tensors),
        format=_CACHE_FORMAT,
        modelport=__version__,
        onnxruntime=onnxruntime.__version__,
    )
    return settings


def _prepass(source: _Samples, specs: list[TensorSpec], progress: Progress | None) -> tuple[int, bytes]:
    digest = _data_digest()
    count = 0
    for count, _feeds in enumerate(source.stream(specs, digest), start=1):
        if progress:
            progress(f"hashing calibration data: sample {count}")
    return count, digest.digest()


def _sweep(
    source: _Samples,
    specs: list[TensorSpec],
    prober: _Prober,
    consume: Consume,
    label: str,
    progress: Progress | None,
    expected: int | None,
) -> tuple[int, bytes]:
    """One pass over the samples; returns the count and the hash of the data it saw."""
    digest = _data_digest()
    count = 0
    for feeds in source.stream(specs, digest):
        prober.run(feeds, consume)
        count += 1
        if progress:
            progress(f"{label}: sample {count}" + (f"/{expected}" if expected else ""))
    return count, digest.digest()


def _same_data(first: tuple[int, bytes], again: tuple[int, bytes], what: str) -> None:
    if first != again:
        raise CalibrationDataError(
            f"the calibration samples changed between passes ({first[0]} samples, then {again[0]} {what}, "
            "with different contents) — the reader must yield the same data every time it is iterated "
            "(seed any random generator, and return a fresh iterator from the function)"
        )


def collect_ranges(
    model: ir.Model,
    samples: Iterable[Feeds] | Callable[[], Iterable[Feeds]],
    *,
    method: Method = "minmax",
    tensors: Sequence[str] | None = None,
    percentile: float = 99.999,
    bins: int = 2048,
    memory_budget_mb: float = 512,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> RangeSet:
    """Calibrate the ranges of ``tensors`` (default: :func:`calibration_tensors`) on ``samples``.

    ``samples`` are feeds dicts of numpy arrays matching the model's inputs: a list, any
    re-iterable, a zero-argument function returning a fresh iterator (a generator function), or —
    for ``method="minmax"`` without ``cache_dir`` only — a one-shot iterator. See the module
    docstring for the methods, the memory budget (bytes of marked outputs per model run) and the
    cache. ``model`` is not modified.
    """
    _check_settings(method, percentile, bins, memory_budget_mb)
    passes = 1 if method == "minmax" else 2
    source = _Samples(samples, passes=passes, method=method, cached=cache_dir is not None)
    work = clone(model)
    infer_shapes(work)
    names = calibration_tensors(work) if tensors is None else _check_tensors(work, tensors)
    if not names:
        raise QuantizationError("the model has no float32 activations to calibrate — is it already quantized?")
    specs = specs_of([v for v in work.graph.inputs if not v.is_initializer()])
    settings = _settings(method, percentile, bins, names)
    model_digest = _model_digest(model)
    folder = _prepare_cache_dir(cache_dir) if cache_dir is not None else None
    hashed: tuple[int, bytes] | None = None
    if folder is not None:
        hashed = _prepass(source, specs, progress)
        key = _cache_key(model_digest, hashed[1], settings)
        cached = _read_cache(_cache_path(folder, key), key)
        if cached is not None:
            logger.info("calibration ranges from the cache (%s)", _cache_path(folder, key))
            return cached
    stats, count, data = _calibrate(work, source, specs, names, method, bins, memory_budget_mb, hashed, progress)
    ranges = {n: _tensor_range(stats[n], method, percentile) for n in names if stats[n].seen}
    _log_gaps(stats)
    result = RangeSet(ranges, method, count, settings, _cache_key(model_digest, data, settings))
    if folder is not None:
        _write_cache(_cache_path(folder, result.key), result)
    return result


def _calibrate(
    work: ir.Model,
    source: _Samples,
    specs: list[TensorSpec],
    names: list[str],
    method: str,
    bins: int,
    memory_budget_mb: float,
    hashed: tuple[int, bytes] | None,
    progress: Progress | None,
) -> tuple[dict[str, _Stats], int, bytes]:
    """Pass 1 (min/max) and, unless MinMax, pass 2 (histograms); returns stats, count, data hash."""
    stats = {n: _Stats() for n in names}
    prober = _Prober(work, names, int(memory_budget_mb * 2**20))
    try:
        expected = hashed[0] if hashed else None
        first = _sweep(source, specs, prober, lambda n, a: stats[n].observe(a), "min/max", progress, expected)
        if first[0] == 0:
            raise CalibrationDataError("the calibration samples are empty — give at least one sample")
        if hashed is not None:
            _same_data(hashed, first, "when run")
        if method != "minmax":
            again = _sweep(
                source, specs, prober, lambda n, a: stats[n].histogram(a, bins), "histograms", progress, first[0]
            )
            _same_data(first, again, "in the histogram pass")
    finally:
        prober.close()
    logger.info(
        "calibrated %d tensors over %d samples (%s): %d model runs, at most %.1f MB of marked outputs per run",
        len(names),
        first[0],
        method,
        prober.runs,
        prober.peak_marked_bytes / 2**20,
    )
    return stats, first[0], first[1]


def _log_gaps(stats: Mapping[str, _Stats]) -> None:
    for name, s in stats.items():
        if not s.seen:
            logger.warning("tensor '%s' held no finite value in any sample; it gets no range", name)
        elif s.nonfinite:
            logger.warning("tensor '%s' held %d NaN/Inf values; its range covers the finite ones", name, s.nonfinite)
