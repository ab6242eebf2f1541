"""Per-layer quantization sensitivity: the output error caused by quantizing each layer alone.

When INT8 ruins a model's accuracy, quantizers report one number for the whole model and leave the
engineer to guess which layer is to blame. Usually one or two layers are: a tensor with an outlier
channel (one feature a thousand times larger than the rest) leaves the other channels with no
levels at all once it shares one scale. This module finds them by measurement: for every layer it
builds the model with *only that layer* in INT8 (every other node excluded from quantization), runs it
in ONNX Runtime on evaluation samples and records the output SQNR, cosine similarity and largest
absolute error against FP32, in a table sorted most sensitive first.

The calibration runs once: every variant reuses the same activation ranges, so a variant differs from
the full INT8 model only in which nodes are quantized, and ranking N layers costs N quantizer passes
and N short inference runs, not N calibrations. A layer whose INT8 variant cannot be built or run is a
row that says why, not a crash.

Errors are measured per output over all evaluation samples concatenated (the SQNR of the whole
signal, not an average of per-sample ratios), and a variant is as good as its worst output. The FP32
reference outputs are computed once and kept; each variant's outputs are folded into running sums
and dropped, so only one copy of the outputs is ever held.

:class:`LayerQuantizer` and :class:`SignalProbe` are the two halves (build a variant, measure it);
:mod:`modelport.quantize.mixed` reuses them to search for the fewest FP32 layers that meet a budget.
"""

from __future__ import annotations

import difflib
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx_ir as ir

from modelport.errors import BackendError, ConfigError, QuantizationError
from modelport.ir.serde import clone
from modelport.ir.summary import quantization_kind

if TYPE_CHECKING:
    from modelport.quantize.int8 import StaticQuantizer
    from modelport.quantize.ranges import RangeSet

__all__ = [
    "LayerQuantizer",
    "LayerSensitivity",
    "SensitivityTable",
    "SignalError",
    "SignalProbe",
    "layer_sensitivity",
    "sensitivity_table",
]

logger = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray[Any, Any]]
Method = Literal["minmax", "entropy", "percentile", "mse"]
#: ``progress(done, total)``: called after each layer's variant is measured.
Progress = Callable[[int, int], None]


def json_float(x: float) -> float | str:
    """``x``, or its text (``'inf'``, ``'nan'``) where JSON has no number for it."""
    return x if math.isfinite(x) else str(x)


@dataclass
class SignalError:
    """How far a variant's outputs are from FP32 on the evaluation samples.

    Each number is the worst over the outputs (lowest SQNR, lowest cosine, largest error), each output
    measured over all samples concatenated. ``worst_output`` is the output with the lowest SQNR.
    Outputs that turn NaN or Inf where FP32 is finite give ``sqnr_db=-inf`` and ``cosine=nan``.
    """

    sqnr_db: float
    cosine: float
    max_abs: float
    worst_output: str

    def describe(self) -> str:
        return f"SQNR {self.sqnr_db:.1f} dB, cosine {self.cosine:.5f} (output '{self.worst_output}')"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sqnr_db": json_float(self.sqnr_db),
            "cosine": json_float(self.cosine),
            "max_abs": json_float(self.max_abs),
            "worst_output": self.worst_output,
        }


@dataclass
class LayerSensitivity:
    """The output error when ONLY this layer is INT8 (every other node stays FP32).

    ``error`` is set (and the numbers are NaN) when the layer's INT8 variant could not be built or run.
    """

    node: str
    op_type: str
    sqnr_db: float
    cosine: float
    max_abs: float
    worst_output: str = ""
    error: str | None = None

    @property
    def measured(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        if self.error is not None:
            return f"its INT8 variant failed: {self.error}"
        return f"SQNR {self.sqnr_db:.1f} dB, cosine {self.cosine:.5f} with only this layer in INT8"

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "op_type": self.op_type,
            "sqnr_db": json_float(self.sqnr_db),
            "cosine": json_float(self.cosine),
            "max_abs": json_float(self.max_abs),
            "worst_output": self.worst_output,
            "error": self.error,
        }


def _sort_key(row: LayerSensitivity) -> tuple[bool, float, float]:
    """Failed rows last; then lowest SQNR first, lowest cosine breaking ties (NaN counts as worst)."""
    sqnr = -math.inf if math.isnan(row.sqnr_db) else row.sqnr_db
    cosine = -math.inf if math.isnan(row.cosine) else row.cosine
    return (not row.measured, sqnr, cosine)


@dataclass
class SensitivityTable:
    """Every layer's error when quantized alone, most sensitive first, next to the full INT8 error."""

    #: Most sensitive first: lowest SQNR, then lowest cosine; rows that failed to build come last.
    rows: list[LayerSensitivity]
    #: The error with every quantizable layer in INT8.
    full_int8: SignalError
    #: Wall time of the whole measurement, seconds.
    seconds: float
    #: Number of evaluation samples each variant ran on.
    eval_samples: int = 0
    #: Calibration method of the (single) range collection every variant shares.
    method: str = "minmax"

    def __post_init__(self) -> None:
        self.rows.sort(key=_sort_key)

    def most_sensitive(self, k: int) -> list[str]:
        """Names of the ``k`` most sensitive layers (all of them when ``k`` exceeds the count)."""
        if k < 0:
            raise ConfigError(f"most_sensitive needs k >= 0, got {k}")
        return [row.node for row in self.rows[:k]]

    def rank(self, node: str) -> int:
        """1-based position of ``node`` in the table (1 = most sensitive)."""
        for i, row in enumerate(self.rows, start=1):
            if row.node == node:
                return i
        raise ConfigError(
            f"layer '{node}' is not in the sensitivity table{_suggest(node, [r.node for r in self.rows])}"
        )

    def row(self, node: str) -> LayerSensitivity:
        return self.rows[self.rank(node) - 1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "eval_samples": self.eval_samples,
            "seconds": self.seconds,
            "full_int8": self.full_int8.to_dict(),
            "rows": [row.to_dict() for row in self.rows],
        }


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    return f" — did you mean {', '.join(repr(c) for c in close)}?" if close else ""


# building variants ----------------------------------------------------------------------------------


def _default_op_types() -> frozenset[str]:
    """The op types ONNX Runtime's static quantizer quantizes when given no list (QDQ and QOperator)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return frozenset(QDQRegistry) | frozenset(QLinearOpsRegistry)


def _named(model: ir.Model) -> ir.Model:
    """``model``, or a copy whose main-graph nodes all have unique names (quantizer lists use names)."""
    names = [node.name for node in model.graph]
    if all(names) and len(set(names)) == len(names):
        return model
    copy = clone(model)
    seen: set[str] = set()
    renamed = 0
    taken = {n.name for n in copy.graph if n.name}
    for i, node in enumerate(copy.graph):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        candidate = f"{node.op_type}_{i}"
        while candidate in taken or candidate in seen:
            candidate += "_"
        node.name = candidate
        seen.add(candidate)
        renamed += 1
    logger.info("named %d unnamed or duplicate nodes so that layers can be addressed by name", renamed)
    return copy


class LayerQuantizer:
    """INT8 variants of one model from ONE calibration: all layers, one layer only, or all but some.

    ``ranges`` (a ``RangeSet`` or ``{tensor: (low, high)}``) are reused as given; without them the
    ranges are collected once here from ``calibration`` with ``method``. ``options`` are passed to
    :func:`modelport.quantize.int8.quantize_static` for every variant (``per_channel``,
    ``activation_type``, ``op_types``, ...); ``nodes_to_exclude`` and ``nodes_to_quantize`` there
    restrict which nodes count as layers at all.

    Nodes without a (unique) name are named ``<OpType>_<index>`` in a copy, since the quantizer
    addresses nodes by name; :attr:`model` is that copy (or the model itself when all names are unique).
    """

    def __init__(
        self,
        model: ir.Model,
        calibration: Sequence[Feeds],
        *,
        ranges: RangeSet | Mapping[str, tuple[float, float]] | None = None,
        method: Method = "minmax",
        **options: Any,
    ) -> None:
        kind = quantization_kind(model)
        if kind != "none":
            raise QuantizationError(
                f"the model is already quantized ({kind}); layer sensitivity compares INT8 layers against FP32 — "
                "give the FP32 original"
            )
        if ranges is None and not calibration:
            raise QuantizationError(
                "layer sensitivity needs calibration samples (or precomputed ranges=) to quantize the layers — "
                "pass a list of feeds, e.g. from modelport.quantize.load_calibration"
            )
        self.model = _named(model)
        self.method = method
        self.options = dict(options)
        self._calibration_options: Mapping[str, Any] = self.options.pop("calibration_options", None) or {}
        excluded = list(self.options.pop("nodes_to_exclude", None) or ())
        only = self.options.pop("nodes_to_quantize", None)
        self._check_names([*excluded, *(only or [])], "quantize option")
        #: Nodes the caller never wants quantized: every variant excludes them.
        self.base_excluded = set(excluded)
        if only is not None:
            chosen = set(only)
            self.base_excluded |= {node.name or "" for node in self.model.graph if node.name not in chosen}
        op_types = self.options.get("op_types")
        types = frozenset(op_types) if op_types else _default_op_types()
        #: The layers, ``{node: op_type}`` in graph order: the main-graph nodes the quantizer would quantize.
        self.layers: dict[str, str] = {
            node.name or "": node.op_type
            for node in self.model.graph
            if node.domain in ("", "ai.onnx") and node.op_type in types and node.name not in self.base_excluded
        }
        self.ranges = ranges if ranges is not None else self._calibrate(calibration)
        self._quantizer: StaticQuantizer | None = None

    def _check_names(self, names: Iterable[str], what: str) -> None:
        known = [node.name or "" for node in self.model.graph]
        for name in names:
            if name not in known:
                raise ConfigError(
                    f"{what} names node '{name}', which is not in the model's graph{_suggest(name, known)} "
                    "— use the node names shown by 'modelport inspect'"
                )

    def resolve(self, layers: Sequence[str] | None) -> list[str]:
        """``layers`` checked against the quantizable layers (``None``: all of them, in graph order)."""
        if layers is None:
            return list(self.layers)
        self._check_names(layers, "layers")
        for name in layers:
            if name not in self.layers:
                op = next(node.op_type for node in self.model.graph if node.name == name)
                raise ConfigError(
                    f"layer '{name}' ({op}) is not quantized by these settings, so keeping it in FP32 changes "
                    f"nothing — choose among the quantizable layers ({len(self.layers)}: "
                    f"{', '.join(list(self.layers)[:8])}{', ...' if len(self.layers) > 8 else ''})"
                )
        return list(dict.fromkeys(layers))

    def _calibrate(self, calibration: Sequence[Feeds]) -> RangeSet:
        """Activation ranges collected once, shared by every variant."""
        from modelport.quantize.ranges import collect_ranges

        start = time.perf_counter()
        ranges = collect_ranges(self.model, calibration, method=self.method, **dict(self._calibration_options))
        logger.info(
            "calibrated once (%s, %d samples, %.2f s); every variant reuses these ranges",
            self.method,
            len(calibration),
            time.perf_counter() - start,
        )
        return ranges

    def _build(self, *, exclude: Collection[str] = (), only: str | None = None) -> ir.Model:
        if self._quantizer is None:
            from modelport.quantize.int8 import StaticQuantizer

            # Prepared once (serialization + shape inference): each variant is then only the insertion.
            self._quantizer = StaticQuantizer(self.model)
        return self._quantizer.quantize(
            self.ranges,
            nodes_to_exclude=sorted(exclude),
            nodes_to_quantize=[only] if only is not None else None,
            **self.options,
        )

    def full(self) -> ir.Model:
        """Every layer in INT8."""
        return self._build(exclude=self.base_excluded)

    def only(self, layer: str) -> ir.Model:
        """Only ``layer`` in INT8; every other node stays FP32."""
        return self._build(only=layer)

    def keeping(self, fp32: Collection[str]) -> ir.Model:
        """Every layer in INT8 except ``fp32``."""
        return self._build(exclude=self.base_excluded | set(fp32))


# measuring variants ---------------------------------------------------------------------------------


class _Sums:
    """Running sums of one output over samples: enough for SQNR, cosine and the largest error."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0
        self.dot = 0.0
        self.candidate = 0.0
        self.max_abs = 0.0
        self.broken = False

    def add(self, candidate: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]) -> None:
        if candidate.shape != reference.shape or candidate.dtype.kind in "OSU":
            self.broken |= candidate.shape != reference.shape or not np.array_equal(candidate, reference)
            return
        c = candidate.astype(np.float64).ravel()
        r = reference.astype(np.float64).ravel()
        finite = np.isfinite(r)
        if not np.all(np.isfinite(c[finite])):  # NaN or Inf where FP32 is finite: no error can excuse that
            self.broken = True
            return
        c, r = np.where(finite, c, 0.0), np.where(finite, r, 0.0)  # positions FP32 itself has non-finite
        err = np.abs(c - r)
        self.signal += float(r @ r)
        self.noise += float(err @ err)
        self.dot += float(c @ r)
        self.candidate += float(c @ c)
        self.max_abs = max(self.max_abs, float(err.max(initial=0.0)))

    def sqnr_db(self) -> float:
        if self.broken:
            return -math.inf
        if self.noise == 0.0:
            return math.inf
        if self.signal == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)

    def cosine(self) -> float:
        if self.broken:
            return math.nan
        if self.signal == 0.0 and self.candidate == 0.0:
            return 1.0
        if self.signal == 0.0 or self.candidate == 0.0:
            return 0.0
        return self.dot / math.sqrt(self.signal * self.candidate)


class SignalProbe:
    """FP32 reference outputs on evaluation samples, and the error of any variant against them.

    The reference runs once; each :meth:`measure` runs the variant in its own ONNX Runtime session.
    """

    def __init__(self, reference: ir.Model, samples: Sequence[Feeds], *, threads: int | None = None) -> None:
        if not samples:
            raise QuantizationError(
                "measuring quantization error needs evaluation samples — pass eval_samples= or calibration samples"
            )
        self.samples = list(samples)
        self.threads = threads
        self.reference: list[dict[str, np.ndarray[Any, Any]]] = list(self._outputs(reference, "fp32"))

    def _outputs(self, model: ir.Model, name: str) -> Iterable[dict[str, np.ndarray[Any, Any]]]:
        from modelport.runners.onnxruntime import OrtRunner

        with OrtRunner(model, name=name, intra_op_threads=self.threads) as runner:
            for feeds in self.samples:
                yield runner.infer(feeds)

    def measure(self, model: ir.Model, name: str = "int8") -> SignalError:
        """The variant's error against FP32: per output over all samples, the worst output's numbers."""
        sums: dict[str, _Sums] = {out: _Sums() for out in self.reference[0]}
        for outputs, reference in zip(self._outputs(model, name), self.reference, strict=True):
            for out, ref in reference.items():
                if out not in outputs:
                    raise QuantizationError(f"variant '{name}' lost output '{out}' — the quantizer changed the graph")
                sums[out].add(outputs[out], ref)
        return _worst(sums)


def _worst(sums: Mapping[str, _Sums]) -> SignalError:
    worst = min(sums, key=lambda out: sums[out].sqnr_db())
    cosines = [s.cosine() for s in sums.values()]
    cosine = math.nan if any(math.isnan(c) for c in cosines) else min(cosines)
    broken = any(s.broken for s in sums.values())
    max_abs = math.inf if broken else max(s.max_abs for s in sums.values())
    return SignalError(sums[worst].sqnr_db(), cosine, max_abs, worst)


# the table -------------------------------------------------------------------------------------------


def _row(quantizer: LayerQuantizer, probe: SignalProbe, layer: str) -> LayerSensitivity:
    op_type = quantizer.layers[layer]
    try:
        error = probe.measure(quantizer.only(layer), name=f"int8-only-{layer}")
    except (QuantizationError, BackendError) as e:
        logger.warning("layer '%s' (%s): its INT8 variant failed: %s", layer, op_type, e)
        nan = math.nan
        return LayerSensitivity(layer, op_type, nan, nan, nan, error=f"{type(e).__name__}: {e}")
    logger.debug("layer '%s' (%s) alone: %s", layer, op_type, error.describe())
    return LayerSensitivity(layer, op_type, error.sqnr_db, error.cosine, error.max_abs, error.worst_output)


def sensitivity_table(
    quantizer: LayerQuantizer,
    probe: SignalProbe,
    layers: Sequence[str] | None = None,
    *,
    full_int8: SignalError | None = None,
    progress: Progress | None = None,
) -> SensitivityTable:
    """Measure each of ``layers`` (default: every quantizable layer) quantized alone.

    ``full_int8`` is the already-measured error of the all-INT8 model, if the caller has it.
    """
    start = time.perf_counter()
    names = quantizer.resolve(layers)
    if full_int8 is None:
        full_int8 = probe.measure(quantizer.full(), name="int8")
    rows = []
    for i, layer in enumerate(names, start=1):
        rows.append(_row(quantizer, probe, layer))
        if progress is not None:
            progress(i, len(names))
    table = SensitivityTable(
        rows, full_int8, time.perf_counter() - start, eval_samples=len(probe.samples), method=quantizer.method
    )
    if table.rows:
        top = table.rows[0]
        logger.info(
            "sensitivity of %d layers: most sensitive '%s' (%s); full INT8 %s",
            len(rows),
            top.node,
            top.describe(),
            full_int8.describe(),
        )
    return table


def layer_sensitivity(
    model: ir.Model,
    calibration: Sequence[Feeds],
    *,
    eval_samples: Sequence[Feeds] | None = None,
    ranges: RangeSet | Mapping[str, tuple[float, float]] | None = None,
    layers: Sequence[str] | None = None,
    method: Method = "minmax",
    progress: Progress | None = None,
    **quantize_options: Any,
) -> SensitivityTable:
    """Output error (SQNR, cosine, max abs) of ``model`` with each layer alone in INT8, most sensitive first.

    ``calibration`` is calibrated on once (or ``ranges`` reused); ``eval_samples`` (default: the
    calibration samples) are what every variant runs on. ``layers`` defaults to every node the
    quantizer would quantize (Conv, ConvTranspose, MatMul, Gemm, and the other op types of ONNX
    Runtime's static quantizer, or ``op_types=``). ``quantize_options`` go to
    :func:`~modelport.quantize.int8.quantize_static` for every variant.
    """
    quantizer = LayerQuantizer(model, calibration, ranges=ranges, method=method, **quantize_options)
    names = quantizer.resolve(layers)
    probe = SignalProbe(quantizer.model, eval_samples if eval_samples is not None else calibration)
    return sensitivity_table(quantizer, probe, names, progress=progress)
