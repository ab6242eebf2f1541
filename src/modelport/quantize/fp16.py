"""FP16 that keeps float32 I/O, keeps what overflows in float32, and is recommended only where it pays.

Half precision tops out at 65504 and flushes magnitudes below 6e-8 to zero, with about three
decimal digits in between. A blind conversion therefore turns an ``Exp`` of 12, a sum of squares of
activations around 300 or a ``MatMul`` that reaches 1e5 into ``inf`` (and the next ``Sub`` into
NaN), and it rounds a LayerNorm epsilon of 1e-12 to zero. Three defences, all applied by
:func:`convert_fp16` through ONNX Runtime's own converter (``onnxruntime.transformers.float16``,
which ships with onnxruntime) and its ``op_block_list`` / ``node_block_list``:

* a fixed op block list (:data:`BLOCK_REASONS` says why each op is on it): ops whose values or
  internal accumulators leave the FP16 range, the layer norms and GELUs ONNX Runtime's own GPT-2
  and T5 FP16 recipes keep in FP32, and ops whose FP16 result changes indices or shapes;
* ``ReduceSum``/``ReduceMean`` over at least :data:`LARGE_REDUCTION` elements (or a dynamic axis),
  whose accumulator overflows or stops growing in FP16 even when the result would fit;
* a measured range check (:func:`fp16_range_check`): the FP32 model runs on sample feeds with a
  few intermediate tensors at a time marked as outputs, and every node that produces or reads a
  tensor beyond the FP16 range, or one that would mostly flush to zero, stays FP32.

A blocked node's neighbours are converted, so the converter puts a Cast to FP16 after it and a
Cast back before the next blocked node; that round trip would overflow exactly the values the
block was for, and :func:`convert_fp16` removes it. Inputs and outputs stay float32 (Casts at the
boundary).

FP16 is faster only on hardware with FP16 arithmetic: GPUs, and CPUs with AVX512-FP16, AMX-FP16
or Arm's FP16 vector extension. Elsewhere ONNX Runtime computes FP16 ops through casts to FP32:
its x86 CPU provider runs a converted graph in FP32 between the casts (an all-FP16 graph computes
300 * 300 as 90000, not inf), so there FP16 buys nothing but rounded weights and cast overhead,
and an unblocked activation overflow stays hidden until the model meets a GPU. That is why the
range check looks at the FP32 values rather than at an FP16 run. :func:`fp16_advice` measures
FP32 against FP16 side by side and recommends FP16 only when it measured faster and stayed
accurate, and says so with the numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from modelport.errors import ConfigError, QuantizationError
from modelport.ir.serde import clone, infer_shapes, transform_proto
from modelport.quantize.dynamic import SideBySide, _name_nodes, default_feeds, measure_side_by_side
from modelport.quantize.hardware import cpu_flags
from modelport.verify.tolerance import SignalTolerance

__all__ = [
    "BLOCK_REASONS",
    "DEFAULT_FP16_BLOCK_LIST",
    "FP16_FLAGS",
    "FP16_FLOOR",
    "FP16_MAX",
    "FP16_TINY",
    "LARGE_REDUCTION",
    "Fp16Advice",
    "Fp16Conversion",
    "RangeCheck",
    "RangeFinding",
    "convert_fp16",
    "fp16_advice",
    "fp16_compute",
    "fp16_range_check",
    "to_fp16",
]

logger = logging.getLogger(__name__)

Feeds = Mapping[str, np.ndarray[Any, Any]]

#: The largest finite float16.
FP16_MAX = 65504.0
#: The smallest positive float16 (a subnormal, 2**-24); anything below half of it rounds to zero.
FP16_TINY = 2.0**-24
#: ReduceSum/ReduceMean over at least this many elements stay FP32: an FP16 running sum has an
#: 11-bit significand, so past 2048 adding a value of 1 no longer changes it.
LARGE_REDUCTION = 2048
#: CPU flags (as /proc/cpuinfo names them) that mean FP16 arithmetic, not just conversion (F16C).
FP16_FLAGS = ("avx512_fp16", "amx_fp16", "asimdhp", "fphp")
#: Accuracy FP16 must keep to be recommended (as ``modelport quantize`` uses for fp16).
FP16_FLOOR = SignalTolerance(min_sqnr_db=40.0, min_cosine=0.9999)
#: Measured speedup that counts as "pays" (interleaved timing still moves a few percent).
MIN_SPEEDUP = 1.1

_OVERFLOW = "values overflow FP16 (max 65504)"
_NORM = (
    "the variance is a mean of squares (overflows FP16 once |x| passes about 256) and an epsilon such as "
    "1e-12 rounds to 0 in FP16; ONNX Runtime's GPT-2 and T5 FP16 recipes keep layer norms in FP32"
)
_GELU = (
    "GELU's 1 + erf(x) cancels for negative x and keeps a fraction of a digit in FP16; ONNX Runtime's "
    "GPT-2 FP16 recipe keeps (Fast)Gelu in FP32"
)
_SOFTMAX = "exp and a row sum: over long rows the sum loses FP16 precision and small probabilities fall below 6e-8"

#: Op types kept in FP32, and why. ONNX Runtime's converter adds its own list (ai.onnx.ml ops,
#: Min/Max, ...) to whatever is given here.
BLOCK_REASONS: dict[str, str] = {
    "Exp": f"e^x {_OVERFLOW} for x > 11.1",
    "Pow": f"x^p {_OVERFLOW} fast (a square past |x| = 256, a cube past 40)",
    "ReduceSumSquare": f"a sum of squares {_OVERFLOW} for moderate activations",
    "ReduceL2": f"a sum of squares {_OVERFLOW} for moderate activations",
    "ReduceLogSumExp": f"exponentials {_OVERFLOW}",
    "ReduceProd": "products overflow or vanish in FP16",
    "CumSum": "a running sum grows past the FP16 range and loses precision (spacing 32 above 32768)",
    "Softmax": _SOFTMAX,
    "LogSoftmax": _SOFTMAX,
    "LayerNormalization": _NORM,
    "SimplifiedLayerNormalization": _NORM,
    "SkipLayerNormalization": _NORM,
    "SkipSimplifiedLayerNormalization": _NORM,
    "GroupNormalization": _NORM,
    "InstanceNormalization": _NORM,
    "Erf": _GELU,
    "Gelu": _GELU,
    "FastGelu": _GELU,
    "Range": "its length comes from the bounds: FP16 rounding changes the output shape",
    "RandomNormal": "random generators have no FP16 kernel in ONNX Runtime's CPU provider",
    "RandomUniform": "random generators have no FP16 kernel in ONNX Runtime's CPU provider",
    "NonMaxSuppression": "FP16 box coordinates change which boxes survive",
    "TopK": "FP16 rounding creates ties and changes the chosen indices",
    "RoiAlign": "sampling coordinates lose precision on large images (spacing 0.5 above 1024)",
    "Resize": "coordinates lose precision on large images; the converter keeps its scales FP32 anyway",
    "Upsample": "coordinates lose precision on large images; the converter keeps its scales FP32 anyway",
}
#: The op types of :data:`BLOCK_REASONS`.
DEFAULT_FP16_BLOCK_LIST: tuple[str, ...] = tuple(BLOCK_REASONS)

_SUMS = ("ReduceSum", "ReduceMean")


# --------------------------------------------------------------------------------------------------
# The measured range check
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RangeFinding:
    """A tensor whose FP32 values do not fit FP16."""

    tensor: str
    #: Producer node ("" for a graph input or an initializer) and its op type.
    node: str
    op_type: str
    problem: Literal["overflow", "underflow"]
    max_abs: float
    #: Fraction of the nonzero values below :data:`FP16_TINY`.
    tiny_fraction: float

    def describe(self, limit: float) -> str:
        if self.problem == "overflow":
            return f"'{self.tensor}' reaches |x| = {self.max_abs:.4g}, beyond the FP16 limit used ({limit:.6g})"
        return (
            f"{self.tiny_fraction:.0%} of the nonzero values of '{self.tensor}' are below {FP16_TINY:.3g} "
            "and would flush to zero in FP16"
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RangeCheck:
    """What the range check found, which nodes it keeps in FP32, and what it cost."""

    findings: list[RangeFinding]
    #: Node name -> why it stays FP32.
    blocked: dict[str, str]
    limit: float
    samples: int
    tensors_checked: int
    #: Tensors that could not be probed: no known type, or inside a subgraph (If/Loop/Scan body).
    tensors_skipped: int
    #: Session builds; each marked at most ``most_marked`` tensors as extra outputs.
    runs: int
    most_marked: int

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["findings"] = [f.to_dict() for f in self.findings]
        return data


@dataclass
class _Stats:
    max_abs: float = 0.0
    tiny: int = 0
    nonzero: int = 0

    def update(self, array: np.ndarray[Any, Any]) -> None:
        a = np.abs(np.asarray(array, dtype=np.float32))
        a = a[np.isfinite(a)]  # non-finite in FP32 already is not FP16's fault
        if a.size == 0:
            return
        self.max_abs = max(self.max_abs, float(a.max()))
        self.nonzero += int(np.count_nonzero(a))
        self.tiny += int(np.count_nonzero((a > 0) & (a < FP16_TINY)))

    def finding(self, tensor: str, node: ir.Node | None, limit: float, fraction: float) -> RangeFinding | None:
        name, op = (node.name or "", node.op_type) if node is not None else ("", "")
        tiny = self.tiny / self.nonzero if self.nonzero else 0.0
        if self.max_abs > limit:
            return RangeFinding(tensor, name, op, "overflow", self.max_abs, tiny)
        if self.nonzero and tiny >= fraction:
            return RangeFinding(tensor, name, op, "underflow", self.max_abs, tiny)
        return None


def _samples(feeds: Feeds | Sequence[Feeds] | None, model: ir.Model) -> list[Feeds]:
    if feeds is None:
        return [default_feeds(model)]
    if isinstance(feeds, Mapping):
        return [feeds]
    samples = list(feeds)
    if not samples:
        raise QuantizationError("the FP16 range check got an empty list of samples — pass at least one feeds dict")
    return samples


def _is_float(value: ir.Value) -> bool:
    return value.dtype == ir.DataType.FLOAT


def _probe_chunk(model: ir.Model, values: list[ir.Value], samples: list[Feeds], stats: dict[str, _Stats]) -> None:
    """Run the FP32 model once per sample with ``values`` marked as outputs; fold them into ``stats``."""
    from modelport.runners.onnxruntime import OrtRunner

    graph = model.graph
    extra = [v for v in values if not v.is_graph_output()]
    graph.outputs.extend(extra)
    try:
        # Weights go to the session as buffers; no optimization, so every probed tensor exists.
        runner = OrtRunner(model, share_weights=True, graph_optimization="disable", name="fp32 range check")
        with runner:
            for feeds in samples:
                outputs = runner.infer(feeds)
                for value in values:
                    stats.setdefault(value.name or "", _Stats()).update(outputs[value.name or ""])
    finally:
        for value in extra:
            graph.outputs.remove(value)


def _check_range_options(chunk: int, headroom: float, underflow_fraction: float) -> None:
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1 (tensors marked as outputs per run), got {chunk}")
    if not headroom >= 1.0:
        raise ConfigError(f"headroom must be >= 1 (the FP16 limit is 65504 / headroom), got {headroom}")
    if not 0.0 < underflow_fraction <= 1.0:
        raise ConfigError(f"underflow_fraction must be in (0, 1], got {underflow_fraction}")


def _block_around(findings: list[RangeFinding], model: ir.Model, limit: float) -> dict[str, str]:
    """Every node that produces or reads a flagged tensor, with the reason."""
    values = {v.name: v for v in _main_values(model)}
    blocked: dict[str, str] = {}
    for finding in findings:
        reason = finding.describe(limit)
        if finding.node:
            blocked.setdefault(finding.node, reason)
        value = values.get(finding.tensor)
        for user in value.consumers() if value is not None else ():
            if user.name and user.graph is model.graph:
                blocked.setdefault(user.name, f"reads {reason}")
    return blocked


def _main_values(model: ir.Model) -> list[ir.Value]:
    values = [*model.graph.inputs, *model.graph.initializers.values()]
    for node in model.graph:
        values.extend(node.outputs)
    return [v for v in values if v.name]


def fp16_range_check(
    model: ir.Model,
    feeds: Feeds | Sequence[Feeds] | None = None,
    *,
    chunk: int = 64,
    headroom: float = 2.0,
    underflow_fraction: float = 0.25,
) -> RangeCheck:
    """Run the FP32 model on ``feeds`` and find tensors whose values do not fit FP16.

    A tensor overflows when some |x| exceeds ``65504 / headroom`` (the default headroom of 2
    allows for inputs larger than the samples); it underflows when at least ``underflow_fraction``
    of its nonzero values are below 6e-8. Float initializers are checked the same way without a
    run. Intermediate tensors are marked as outputs ``chunk`` at a time, one session per chunk,
    so memory stays bounded. ``feeds`` is one feeds dict or a list of them (default: realistic
    generated inputs at batch 1). Nodes are referred to by name; nameless nodes get
    ``<op_type>_<index>`` as :func:`convert_fp16` names them.
    """
    _check_range_options(chunk, headroom, underflow_fraction)
    work = clone(model)
    _name_nodes(work)
    infer_shapes(work)
    samples = _samples(feeds, work)
    limit = FP16_MAX / headroom
    stats: dict[str, _Stats] = {}
    for value in work.graph.inputs:
        for sample in samples:
            if _is_float(value) and value.name and value.name in sample:
                stats.setdefault(value.name, _Stats()).update(sample[value.name])
    for value in work.graph.initializers.values():
        if _is_float(value) and value.const_value is not None and value.name:
            stats.setdefault(value.name, _Stats()).update(value.const_value.numpy())
    outputs = [v for node in work.graph for v in node.outputs if v.name]
    probe = [v for v in outputs if _is_float(v)]
    nested = sum(len(n.outputs) for n in ir.traversal.RecursiveGraphIterator(work.graph) if n.graph is not work.graph)
    skipped = sum(1 for v in outputs if v.dtype is None) + nested
    for start in range(0, len(probe), chunk):
        _probe_chunk(work, probe[start : start + chunk], samples, stats)
    values = {v.name: v for v in _main_values(work)}
    findings = []
    for name, stat in stats.items():
        found = stat.finding(name, values[name].producer() if name in values else None, limit, underflow_fraction)
        if found is not None:
            findings.append(found)
    blocked = _block_around(findings, work, limit)
    runs, most = math.ceil(len(probe) / chunk), min(chunk, len(probe))
    check = RangeCheck(findings, blocked, limit, len(samples), len(stats), skipped, runs, most)
    for finding in findings:
        logger.info("FP16 range check: %s", finding.describe(limit))
    return check


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------


@dataclass
class Fp16Conversion:
    """The FP16 model and every node kept in FP32 with the reason."""

    model: ir.Model
    #: Node name -> why it stays FP32.
    blocked: dict[str, str]
    range_check: RangeCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "blocked": self.blocked,
            "range_check": self.range_check.to_dict() if self.range_check else None,
        }


def _reduction_axes(node: ir.Node) -> list[int] | None:
    """The axes a ReduceSum/ReduceMean reduces (None: all of them)."""
    attr = node.attributes.get("axes")
    if attr is not None:
        return [int(a) for a in attr.value]
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        const = ir.convenience.get_const_tensor(node.inputs[1])
        if const is None:
            raise ValueError("axes are computed at run time")
        return [int(a) for a in const.numpy().reshape(-1)]
    return None


def _large_reduction(node: ir.Node) -> str | None:
    """Why this ReduceSum/ReduceMean must stay FP32 (None: it sums few enough elements)."""
    x = node.inputs[0] if node.inputs else None
    if x is None or x.shape is None:
        return f"{node.op_type} over an input of unknown shape may sum more than {LARGE_REDUCTION} elements"
    try:
        axes = _reduction_axes(node)
    except ValueError:
        return f"{node.op_type} over axes computed at run time may sum more than {LARGE_REDUCTION} elements"
    noop = node.attributes.get("noop_with_empty_axes")
    if axes == [] and noop is not None and noop.value:
        return None
    rank = len(x.shape)
    dims = [x.shape[a % rank] for a in (axes if axes else range(rank))]
    sizes = [d for d in dims if isinstance(d, int)]
    if len(sizes) != len(dims):
        return f"{node.op_type} over a dynamic axis may sum more than {LARGE_REDUCTION} elements"
    count = math.prod(sizes)
    if count >= LARGE_REDUCTION:
        return f"{node.op_type} sums {count} elements: an FP16 accumulator overflows or stops growing past 2048"
    return None


def _op_blocks(model: ir.Model, block_list: Sequence[str]) -> dict[str, str]:
    blocked: dict[str, str] = {}
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        name = node.name or ""
        if node.op_type in block_list:
            blocked[name] = BLOCK_REASONS.get(node.op_type, "its op type is in the block list")
        elif node.op_type in _SUMS and node.domain == "":
            why = _large_reduction(node)
            if why:
                blocked[name] = why
    return blocked


def _converter_cast_to_fp16(node: ir.Node) -> bool:
    """A Cast to FP16 that ONNX Runtime's converter put after a blocked node or a graph input."""
    name = node.name or ""
    to = node.attributes.get("to")
    return (
        node.op_type == "Cast"
        and to is not None
        and to.value == ir.DataType.FLOAT16
        and (name.endswith("_cast_to_fp16_node") or name.startswith("graph_input_cast"))
    )


def _fold_round_trips(model: ir.Model) -> int:
    """Let FP32 consumers read the FP32 value instead of its FP16 copy cast back; count them."""
    folded = 0
    for graph in model.graphs():
        for node in list(graph):
            if not _converter_cast_to_fp16(node) or node.inputs[0] is None:
                continue
            source, copy = node.inputs[0], node.outputs[0]
            for user in list(copy.consumers()):
                to = user.attributes.get("to")
                if user.op_type != "Cast" or to is None or to.value != ir.DataType.FLOAT:
                    continue
                folded += 1
                if user.outputs[0].is_graph_output():  # keep the output's name: a no-op Cast stays
                    user.replace_input_with(0, source)
                else:
                    user.outputs[0].replace_all_uses_with(source)
                    graph.remove(user, safe=True)
            if not copy.uses() and not copy.is_graph_output():
                name = copy.name
                graph.remove(node, safe=True)
                if name and source.name == f"{name}_cast_to_fp16" and not source.is_graph_output():
                    source.name = name  # the FP32 value gets its original name back
    return folded


def _dedupe_casts(graph: Any) -> int:
    """Drop the converter's repeated ``<x>_cast_to_fp32`` Casts (and value_info) in a GraphProto.

    ONNX Runtime's converter inserts one Cast per blocked node *input*, all with the same output
    name, so a blocked ``Max(x, x)`` or two blocked readers of one tensor make an invalid model
    ("output is redeclared"). The copies are identical; the first one stays.
    """
    seen: set[str] = set()
    kept, dropped = [], 0
    for node in graph.node:
        if node.op_type == "Cast" and node.name.endswith("_cast_to_fp32_node") and node.output[0] in seen:
            dropped += 1
            continue
        seen.update(node.output)
        kept.append(node)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                dropped += _dedupe_casts(sub)
    if dropped:
        del graph.node[:]
        graph.node.extend(kept)
        names: set[str] = set()
        unique = []
        for info in graph.value_info:
            if info.name not in names:
                names.add(info.name)
                unique.append(info)
        del graph.value_info[:]
        graph.value_info.extend(unique)
    return dropped


def _convert(model: ir.Model, block_list: Sequence[str], nodes: Sequence[str]) -> ir.Model:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    ops = sorted(set(block_list) | set(DEFAULT_OP_BLOCK_LIST))

    def convert(proto: Any) -> Any:
        # The converter retypes every float value_info to FLOAT16, also those describing weights it
        # then keeps in float32 for blocked nodes; a weight's type is its tensor's anyway.
        weights = {t.name for t in proto.graph.initializer}
        infos = [info for info in proto.graph.value_info if info.name not in weights]
        del proto.graph.value_info[:]
        proto.graph.value_info.extend(infos)
        converted = convert_float_to_float16(
            proto, keep_io_types=True, op_block_list=ops, node_block_list=sorted(nodes)
        )
        _dedupe_casts(converted.graph)
        return converted

    try:
        converted = transform_proto(model, convert)
    except Exception as e:
        raise QuantizationError(f"FP16 conversion failed in ONNX Runtime's converter: {e}") from e
    folded = _fold_round_trips(converted)
    converted.graph.sort()  # the converter appends its Casts at the end of the node list
    logger.debug("FP16: %d FP32 -> FP16 -> FP32 round trips removed", folded)
    return converted


def convert_fp16(
    model: ir.Model,
    *,
    block_list: Sequence[str] = DEFAULT_FP16_BLOCK_LIST,
    node_block_list: Sequence[str] = (),
    check_range: bool = True,
    feeds: Feeds | Sequence[Feeds] | None = None,
    headroom: float = 2.0,
) -> Fp16Conversion:
    """Convert weights and compute to FP16 with float32 I/O; keep what does not fit FP16 in FP32.

    Kept in FP32: ops in ``block_list``, large ReduceSum/ReduceMean, the nodes named in
    ``node_block_list``, and (``check_range``) every node the measured range check flags on
    ``feeds`` (default: generated inputs; pass real samples where there are any).
    """
    work = clone(model)
    _name_nodes(work)
    infer_shapes(work)
    names = {n.name for n in ir.traversal.RecursiveGraphIterator(work.graph)}
    unknown = [n for n in node_block_list if n not in names]
    if unknown:
        raise QuantizationError(
            f"node_block_list names nodes the model does not have: {', '.join(unknown)} — "
            "use node names as `modelport inspect` lists them"
        )
    blocked = _op_blocks(work, block_list)
    blocked.update({n: "named in node_block_list" for n in node_block_list})
    check = fp16_range_check(work, feeds, headroom=headroom) if check_range else None
    if check is not None:
        for name, why in check.blocked.items():
            blocked.setdefault(name, why)
    converted = _convert(work, block_list, list(blocked))
    return Fp16Conversion(converted, blocked, check)


def to_fp16(
    model: ir.Model,
    *,
    block_list: Sequence[str] = DEFAULT_FP16_BLOCK_LIST,
    node_block_list: Sequence[str] = (),
    check_range: bool = True,
    feeds: Feeds | Sequence[Feeds] | None = None,
) -> ir.Model:
    """The model of :func:`convert_fp16` (same arguments), for callers that need only the model."""
    return convert_fp16(
        model, block_list=block_list, node_block_list=node_block_list, check_range=check_range, feeds=feeds
    ).model


# --------------------------------------------------------------------------------------------------
# Whether it pays
# --------------------------------------------------------------------------------------------------


def fp16_compute() -> list[str]:
    """The FP16 arithmetic features this CPU has (empty: FP16 is emulated through FP32)."""
    flags = cpu_flags()
    return [f for f in FP16_FLAGS if f in flags]


@dataclass
class Fp16Advice:
    """FP16 next to FP32 on this machine: the conversion, the numbers, and the verdict with reasons."""

    conversion: Fp16Conversion
    measurement: SideBySide
    floor: SignalTolerance
    recommended: bool
    reasons: list[str] = field(default_factory=list)
    cpu_fp16: list[str] = field(default_factory=list)

    @property
    def model(self) -> ir.Model:
        return self.conversion.model

    @property
    def speedup(self) -> float:
        return self.measurement.speedup

    @property
    def fp32_ms(self) -> float:
        return self.measurement.reference.median_ms

    @property
    def fp16_ms(self) -> float:
        return self.measurement.candidate.median_ms

    def summary(self) -> str:
        verdict = "recommended" if self.recommended else "NOT recommended"
        return f"FP16 {verdict}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recommended": self.recommended,
            "summary": self.summary(),
            "speedup": self.speedup,
            "fp32_ms": self.fp32_ms,
            "fp16_ms": self.fp16_ms,
            "reasons": self.reasons,
            "floor": str(self.floor),
            "cpu_fp16": self.cpu_fp16,
            "measurement": self.measurement.to_dict(),
            "conversion": self.conversion.to_dict(),
        }


def _fp16_reasons(measured: SideBySide, floor: SignalTolerance, min_speedup: float, cpu_fp16: list[str]) -> list[str]:
    timing = measured.timing_text("FP16")
    on_cpu = not measured.providers or measured.providers[0] == "CPUExecutionProvider"
    reasons = []
    if measured.speedup < 1.0:
        reasons.append(f"SLOWER than FP32 on this machine: {timing}")
    elif measured.speedup < min_speedup:
        reasons.append(f"does not pay on this machine: {timing}, below the {min_speedup:g}x bar")
    else:
        reasons.append(f"faster than FP32: {timing}")
    if on_cpu and not cpu_fp16:
        reasons.append(
            f"this CPU has no FP16 arithmetic (none of {', '.join(FP16_FLAGS)}), so ONNX Runtime runs most FP16 "
            "ops through casts to FP32; FP16 pays on GPUs and on CPUs with FP16 compute"
        )
    accuracy = floor.check(measured.worst_sqnr_db, measured.worst_cosine)
    if accuracy:
        reasons.append(f"below the FP16 accuracy floor ({floor}): {accuracy}")
    if measured.nonfinite:
        reasons.append(f"{measured.nonfinite} NaN/Inf values in the FP16 outputs that FP32 does not have")
    return reasons


def fp16_advice(
    model: ir.Model,
    *,
    feeds: Feeds | None = None,
    range_feeds: Feeds | Sequence[Feeds] | None = None,
    seconds: float = 2.0,
    providers: Sequence[str] | Literal["auto"] | None = None,
    threads: int | None = None,
    min_speedup: float = MIN_SPEEDUP,
    floor: SignalTolerance = FP16_FLOOR,
    block_list: Sequence[str] = DEFAULT_FP16_BLOCK_LIST,
    node_block_list: Sequence[str] = (),
    check_range: bool = True,
    batch: int = 1,
    dims: Mapping[str, int] | None = None,
) -> Fp16Advice:
    """Convert to FP16, measure it against FP32 side by side, and recommend it only where it pays.

    Recommended means: at least ``min_speedup`` faster here (on ``providers``; CPU by default),
    within ``floor`` on every output, and no new NaN/Inf. ``feeds`` (default: realistic generated
    inputs at ``batch``, named dims from ``dims``) are timed and compared; ``range_feeds`` (default:
    ``feeds``) drive the range check.
    """
    if feeds is None:
        feeds = default_feeds(model, batch=batch, dims=dims)
    conversion = convert_fp16(
        model,
        block_list=block_list,
        node_block_list=node_block_list,
        check_range=check_range,
        feeds=range_feeds if range_feeds is not None else feeds,
    )
    measured = measure_side_by_side(
        model, conversion.model, feeds, seconds=seconds, threads=threads, providers=providers, names=("fp32", "fp16")
    )
    cpu_fp16 = fp16_compute()
    accurate = floor.check(measured.worst_sqnr_db, measured.worst_cosine) is None and measured.nonfinite == 0
    recommended = measured.speedup >= min_speedup and accurate
    advice = Fp16Advice(conversion, measured, floor, recommended, _fp16_reasons(measured, floor, min_speedup, cpu_fp16))
    advice.cpu_fp16 = cpu_fp16
    if not recommended:
        logger.warning("%s", advice.summary())
    return advice
