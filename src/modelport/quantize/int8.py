"""INT8: static QDQ from modelport's own ranges, and already-quantized models (dynamic: see dynamic.py).

Static INT8 is split in two on purpose:

* **Ranges** come from :mod:`modelport.quantize.ranges` — streaming, memory-bounded, cached on disk,
  with MinMax / Entropy / Percentile calibrators that really differ. ONNX Runtime's calibrators are
  never run here.
* **QDQ insertion** is done by ONNX Runtime's ``QDQQuantizer``, fed those ranges as ``TensorsData``: a
  well-kept library does the graph surgery (per-channel int8 weights, int32 biases, Relu/Clip folded
  into the preceding range, MaxPool/Reshape sharing their input's parameters).

Because ranges are an input, quantizing again with the same ranges and another node selection (per-layer
sensitivity, mixed precision) costs one insertion, not another calibration.

A model that already carries QuantizeLinear/DequantizeLinear (a quantization-aware-training export) is
never quantized again — that would quantize the fake-quantized values a second time. It is left as it
is; :func:`validate_qdq` and :func:`check_qat` prove its pairs are well formed.
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx_ir as ir

from modelport.errors import QuantizationError
from modelport.ir.serde import clone, save, serialized_size
from modelport.ir.summary import quantization_kind

if TYPE_CHECKING:
    from modelport.quantize.ranges import RangeSet

__all__ = [
    "CalibrationMethod",
    "QatSummary",
    "StaticQuantizer",
    "check_qat",
    "is_quantized",
    "qat_summary",
    "quantize_static",
    "validate_qdq",
]

logger = logging.getLogger(__name__)

CalibrationMethod = Literal["minmax", "entropy", "percentile", "mse"]
Feeds = dict[str, np.ndarray[Any, Any]]
Samples = Sequence[Feeds] | Callable[[], Iterable[Feeds]]

_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_QDQ_DOMAINS = ("", "ai.onnx", "com.microsoft")
#: Zero-point element types a QuantizeLinear may produce (int32 is DequantizeLinear-only, for biases).
_QUANTIZED_TYPES = frozenset(
    {
        ir.DataType.INT8,
        ir.DataType.UINT8,
        ir.DataType.INT16,
        ir.DataType.UINT16,
        ir.DataType.INT4,
        ir.DataType.UINT4,
        ir.DataType.FLOAT8E4M3FN,
        ir.DataType.FLOAT8E4M3FNUZ,
        ir.DataType.FLOAT8E5M2,
        ir.DataType.FLOAT8E5M2FNUZ,
    }
)


def _for_ort_quantizer(model: ir.Model) -> ir.Model:
    """A copy without shape annotations on initializers.

    The ORT quantizer rewrites some weights (it transposes Gemm weights with transB) but leaves
    their value_info entries behind, and its own shape inference then fails on the stale shape.
    Initializers carry their shape in the tensor, so the annotation is redundant.
    """
    copy = clone(model)
    for graph in copy.graphs():
        for value in graph.initializers.values():
            value.shape = None
    return copy


# --- static QDQ -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _QdqOptions:
    """Everything QDQQuantizer needs besides the model and the ranges."""

    per_channel: bool
    reduce_range: bool
    activation_type: Literal["uint8", "int8"]
    activation_symmetric: bool
    weight_symmetric: bool
    nodes_to_quantize: list[str] | None
    nodes_to_exclude: list[str]
    op_types: list[str]


def quantize_static(
    model: ir.Model,
    samples: Samples | None = None,
    *,
    ranges: RangeSet | Mapping[str, tuple[float, float]] | None = None,
    method: CalibrationMethod = "minmax",
    per_channel: bool = True,
    activation_type: Literal["uint8", "int8"] | None = None,
    reduce_range: bool | None = None,
    activation_symmetric: bool = False,
    weight_symmetric: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    nodes_to_quantize: Sequence[str] | None = None,
    op_types: Sequence[str] | None = None,
    calibration_options: Mapping[str, Any] | None = None,
) -> ir.Model:
    """Static INT8: QuantizeLinear/DequantizeLinear pairs with scales from calibration ranges.

    ``ranges`` (a ``RangeSet`` or ``{tensor: (low, high)}``) are used as given; without them they are
    collected from ``samples`` with ``collect_ranges(model, samples, method=method,
    **calibration_options)``. ``activation_type`` / ``reduce_range`` left as None take the CPU's
    defaults (:func:`modelport.quantize.hardware.default_int8_settings`). Weights are int8.
    ``nodes_to_quantize`` restricts quantization to those nodes (one node: per-layer sensitivity),
    ``nodes_to_exclude`` keeps nodes float, ``op_types`` restricts the op types. To quantize one model
    many times, keep a :class:`StaticQuantizer` instead: it prepares the model once.

    Raises QuantizationError when the model is already quantized, when a node name or op type is
    unknown, when a range is not finite, or when a tensor the quantized nodes need has no range.
    """
    _refuse_quantized(model)
    if ranges is None:
        ranges = _collect(model, samples, method, calibration_options)
    elif samples is not None:
        logger.debug("ranges were given: the calibration samples are not used")
    return StaticQuantizer(model).quantize(
        ranges,
        per_channel=per_channel,
        activation_type=activation_type,
        reduce_range=reduce_range,
        activation_symmetric=activation_symmetric,
        weight_symmetric=weight_symmetric,
        nodes_to_exclude=nodes_to_exclude,
        nodes_to_quantize=nodes_to_quantize,
        op_types=op_types,
    )


class StaticQuantizer:
    """QDQ insertion prepared once for one model, to quantize it many times from given ranges.

    Preparing the model for ONNX Runtime's quantizer (serialization and ONNX shape inference) is most
    of the cost of one insertion. Per-layer sensitivity and mixed precision quantize the same model once
    per layer selection: they keep one StaticQuantizer and call :meth:`quantize` for each. The model is
    captured when it is first prepared; edit it afterwards and build a new StaticQuantizer.
    """

    def __init__(self, model: ir.Model) -> None:
        _refuse_quantized(model)
        self.model = model
        self._proto: Any = None

    def quantize(
        self,
        ranges: RangeSet | Mapping[str, tuple[float, float]],
        *,
        per_channel: bool = True,
        activation_type: Literal["uint8", "int8"] | None = None,
        reduce_range: bool | None = None,
        activation_symmetric: bool = False,
        weight_symmetric: bool = True,
        nodes_to_exclude: Sequence[str] = (),
        nodes_to_quantize: Sequence[str] | None = None,
        op_types: Sequence[str] | None = None,
    ) -> ir.Model:
        """The model with QDQ inserted from ``ranges``; the options are those of :func:`quantize_static`."""
        pairs = _checked_pairs(ranges)
        for node in self.model.graph:
            # ORT sets every quantized Softmax output to [0, 1] and fails if it had no range before
            if node.op_type == "Softmax" and node.outputs[0].name not in pairs:
                pairs[node.outputs[0].name or ""] = (0.0, 1.0)
        options = _options(
            self.model,
            per_channel=per_channel,
            activation_type=activation_type,
            reduce_range=reduce_range,
            activation_symmetric=activation_symmetric,
            weight_symmetric=weight_symmetric,
            nodes_to_quantize=nodes_to_quantize,
            nodes_to_exclude=nodes_to_exclude,
            op_types=op_types,
        )
        return _insert_qdq(self._prepared(), pairs, options)

    def _prepared(self) -> Any:
        """A fresh copy of the prepared ``onnx.ModelProto`` (ORT's quantizer edits the one it is given)."""
        import onnx

        if self._proto is None:
            try:
                self._proto = _prepared_proto(self.model)
            except Exception as e:
                raise QuantizationError(f"the model could not be prepared for QDQ insertion: {e}") from e
        copy = onnx.ModelProto()
        copy.CopyFrom(self._proto)
        return copy


def _refuse_quantized(model: ir.Model) -> None:
    kind = quantization_kind(model)
    if kind == "none":
        return
    raise QuantizationError(
        f"the model is already quantized ({kind}): {qat_summary(model).describe()} — modelport leaves "
        "quantization-aware-trained and pre-quantized models quantized as they are (check one with "
        "check_qat / validate_qdq); to quantize with modelport, start from the FP32 original"
    )


def _collect(
    model: ir.Model,
    samples: Samples | None,
    method: CalibrationMethod,
    calibration_options: Mapping[str, Any] | None,
) -> RangeSet:
    if samples is None or (isinstance(samples, Sequence) and len(samples) == 0):
        raise QuantizationError(
            "INT8 static quantization needs calibration samples or precomputed ranges — pass --calib PATH "
            "(samples=...) or ranges=collect_ranges(model, samples)"
        )
    from modelport.quantize.ranges import collect_ranges

    return collect_ranges(model, samples, method=method, **dict(calibration_options or {}))


def _checked_pairs(ranges: RangeSet | Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """The ranges as ``{tensor: (low, high)}``, checked to be finite and ordered."""
    raw: Mapping[str, tuple[float, float]] = ranges.as_pairs() if hasattr(ranges, "as_pairs") else ranges
    pairs: dict[str, tuple[float, float]] = {}
    bad: list[str] = []
    for name, (low, high) in raw.items():
        lo, hi = float(low), float(high)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            bad.append(f"'{name}': ({lo}, {hi})")
        pairs[name] = (lo, hi)
    if bad:
        raise QuantizationError(
            f"{len(bad)} calibration range(s) are not finite with low <= high: {', '.join(bad[:5])} — "
            "recalibrate (a NaN or inf in the samples reaches these tensors) or drop those tensors' nodes "
            "with nodes_to_exclude"
        )
    return pairs


def _options(
    model: ir.Model,
    *,
    per_channel: bool,
    activation_type: Literal["uint8", "int8"] | None,
    reduce_range: bool | None,
    activation_symmetric: bool,
    weight_symmetric: bool,
    nodes_to_quantize: Sequence[str] | None,
    nodes_to_exclude: Sequence[str],
    op_types: Sequence[str] | None,
) -> _QdqOptions:
    """Resolve hardware defaults and check node names and op types against the model and ORT."""
    if activation_type is None or reduce_range is None:
        from modelport.quantize.hardware import default_int8_settings

        defaults = default_int8_settings()
        logger.info("INT8 defaults for this CPU: %s", defaults["reason"])
        activation_type = activation_type or defaults["activation_type"]
        reduce_range = defaults["reduce_range"] if reduce_range is None else reduce_range
    if activation_type not in ("uint8", "int8"):
        raise QuantizationError(f"activation_type '{activation_type}' is not supported — choose 'uint8' or 'int8'")
    if nodes_to_quantize is not None and len(nodes_to_quantize) == 0:
        raise QuantizationError(
            "nodes_to_quantize is empty, so nothing would be quantized — pass None to quantize every node"
        )
    names = {node.name for node in model.graph}
    for label, chosen in (("nodes_to_quantize", nodes_to_quantize or ()), ("nodes_to_exclude", nodes_to_exclude)):
        unknown = sorted(set(chosen) - names)
        if unknown:
            raise QuantizationError(
                f"{label} names {len(unknown)} node(s) the model's main graph does not have: {unknown[:5]} — "
                f"node names look like {sorted(n for n in names if n)[:5]}"
            )
    if per_channel and _default_opset(model) < 13:
        raise QuantizationError(
            f"per-channel QDQ needs opset 13 or later and the model has opset {_default_opset(model)} — "
            "convert it first (modelport.surgery.opset.convert_opset, or `modelport surgery opset MODEL 13 -o OUT`), "
            "or pass per_channel=False"
        )
    return _QdqOptions(
        per_channel=per_channel,
        reduce_range=reduce_range,
        activation_type=activation_type,
        activation_symmetric=activation_symmetric,
        weight_symmetric=weight_symmetric,
        nodes_to_quantize=list(nodes_to_quantize) if nodes_to_quantize is not None else None,
        nodes_to_exclude=list(nodes_to_exclude),
        op_types=_op_types(op_types),
    )


def _default_opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))


def _op_types(op_types: Sequence[str] | None) -> list[str]:
    """The op types ORT's QDQ quantizer may quantize (all it knows by default), checked against its registries."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    known = set(QDQRegistry) | set(QLinearOpsRegistry)
    if op_types is None:
        return sorted(known)
    unknown = sorted(set(op_types) - known)
    if unknown:
        raise QuantizationError(
            f"op_types {unknown} are not quantizable by ONNX Runtime's QDQ quantizer — choose from {sorted(known)}"
        )
    return list(op_types)


def _tensors_data(pairs: Mapping[str, tuple[float, float]]) -> Any:
    """Our ranges as ORT's ``TensorsData`` (a fresh object: ORT adjusts Relu/Softmax ranges in place)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod as OrtMethod
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    data = {
        name: TensorData(lowest=np.array(low, dtype=np.float32), highest=np.array(high, dtype=np.float32))
        for name, (low, high) in pairs.items()
    }
    return TensorsData(OrtMethod.MinMax, data)


def _prepared_proto(model: ir.Model) -> Any:
    """The model as a shape-inferred ``onnx.ModelProto``, prepared as ORT's own quantize_static does it.

    ORT's ``load_model_with_shape_infer`` reads and writes files; a model that fits one protobuf is
    shape-inferred in memory instead, so a model decrypted from an encrypted file
    (:mod:`modelport.protect`) never has its plaintext written to a temporary folder. Only a model
    over 2 GiB goes through files, and such a model cannot have been encrypted (see below).
    """
    import onnx
    from onnxruntime.quantization.quant_utils import (
        QuantType,
        add_infer_metadata,
        load_model_with_shape_infer,
        update_opset_version,
    )

    prepared = _for_ort_quantizer(model)
    if serialized_size(prepared) < _IN_MEMORY_LIMIT:
        ir.external_data.load_to_model(prepared)  # a copy: the caller's model keeps its lazy weights
        proto = onnx.shape_inference.infer_shapes(ir.serde.serialize_model(prepared))
        add_infer_metadata(proto)  # ORT's "already shape-inferred" marker, as load_model_with_shape_infer sets it
    else:
        _refuse_plaintext_copy(model)
        with tempfile.TemporaryDirectory(prefix="modelport-q-") as tmp:
            src = Path(tmp) / "fp32.onnx"
            save(prepared, src)
            proto = load_model_with_shape_infer(src)  # reads any external weights into memory
    # 8-bit types never need an opset bump; this only lifts opset < 10 models to 11, as ORT does
    return update_opset_version(proto, QuantType.QInt8, QuantType.QUInt8)


#: Serialized size from which shape inference cannot run in memory (one protobuf holds < 2 GiB).
_IN_MEMORY_LIMIT = (1 << 31) - 1


def _refuse_plaintext_copy(model: ir.Model) -> None:
    """Refuse to write a model decrypted from an encrypted file to a temporary file in plaintext."""
    from modelport.protect import ENCRYPTED_META

    if ENCRYPTED_META in model.meta:
        raise QuantizationError(
            f"the model was decrypted from an encrypted file ({model.meta[ENCRYPTED_META]}) and is too large "
            "to prepare in memory; static INT8 would write its plaintext to a temporary file — decrypt it "
            "yourself (modelport decrypt) to a place you trust and quantize that file"
        )


def float_outputs(model: ir.Model) -> int:
    """Drop the QuantizeLinear → DequantizeLinear pair that ends at a graph output; returns how many.

    The quantizer rounds a graph output to 8 bits and immediately dequantizes it: the caller receives
    float either way, so the rounding only adds error (on a ResNet-18's logits, 0.2 dB of SQNR) and
    saves nothing. ONNX Runtime then runs the producing node (a Gemm, a Conv) with an INT8 input and a
    float output. Pairs whose values are used elsewhere are left alone.
    """
    graph = model.graph
    dropped = 0
    for index, value in enumerate(list(graph.outputs)):
        dq = value.producer()
        if dq is None or dq.op_type != "DequantizeLinear" or value.consumers():
            continue
        quantized = dq.inputs[0]
        q = quantized.producer() if quantized is not None else None
        if q is None or q.op_type != "QuantizeLinear" or len(quantized.consumers()) != 1:  # type: ignore[union-attr]
            continue
        source = q.inputs[0]
        if source is None or source.is_graph_input() or source.is_graph_output() or len(source.consumers()) != 1:
            continue
        name, dtype, shape = value.name, value.type, value.shape
        graph.outputs[index] = source
        source.type, source.shape = dtype, shape
        graph.remove([dq, q], safe=True)
        source.name = name
        for parameter in (*q.inputs[1:], *dq.inputs[1:]):
            if parameter is not None and parameter.is_initializer() and not parameter.consumers():
                graph.initializers.pop(parameter.name or "", None)
        dropped += 1
    return dropped


def _insert_qdq(proto: Any, pairs: Mapping[str, tuple[float, float]], options: _QdqOptions) -> ir.Model:
    """Run ORT's QDQQuantizer on ``proto`` (which it edits) with ``pairs`` as its calibration ranges."""
    from onnxruntime.quantization.quant_utils import QuantType

    act = QuantType.QUInt8 if options.activation_type == "uint8" else QuantType.QInt8
    extra = {"ActivationSymmetric": options.activation_symmetric, "WeightSymmetric": options.weight_symmetric}
    try:
        quantizer = _quantizer_class()(
            proto,
            options.per_channel,
            options.reduce_range,
            QuantType.QInt8,
            act,
            _tensors_data(pairs),
            options.nodes_to_quantize,
            options.nodes_to_exclude,
            options.op_types,
            extra,
        )
        quantized = quantizer.quantize_model()
    except QuantizationError:
        raise
    except Exception as e:
        raise QuantizationError(f"ONNX Runtime QDQ insertion failed: {e}") from e
    result = ir.serde.deserialize_model(quantized)
    result.metadata_props.pop("onnx.infer", None)  # ORT's "already shape-inferred" marker, stale after edits
    float_outputs(result)
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "QDQ inserted (%s activations, int8 weights %s%s): %s",
            options.activation_type,
            "per-channel" if options.per_channel else "per-tensor",
            ", reduce_range" if options.reduce_range else "",
            qat_summary(result).describe() if is_quantized(result) else "nothing was quantized",
        )
    return result


@functools.cache
def _quantizer_class() -> type[Any]:
    """ORT's QDQQuantizer, checking that every tensor it will quantize has a range before inserting.

    ORT itself stops at the first tensor without a range with a ValueError; this names all of them,
    with the nodes that need them and how to fix it.
    """
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    class RangeCheckedQDQQuantizer(QDQQuantizer):  # type: ignore[misc]
        def _quantize_normal_tensors(self) -> None:
            missing = _tensors_without_range(self)
            if missing:
                raise _missing_ranges_error(missing)
            super()._quantize_normal_tensors()

    return RangeCheckedQDQQuantizer


def _tensors_without_range(quantizer: Any) -> dict[str, list[tuple[str, str]]]:
    """Activations marked for quantization that have no range: ``{tensor: [(role, node name), ...]}``."""
    initializers = {init.name for init in quantizer.model.initializer()}
    producers = quantizer.model.output_name_to_node()
    missing: dict[str, list[tuple[str, str]]] = {}
    for name, info in quantizer.tensors_to_quantize.items():
        if (
            info.is_shared
            or name in initializers
            or name in quantizer.tensor_to_producing_dq
            or name in quantizer.quantization_params
        ):
            continue
        touching = [("input of", node.name) for node in quantizer.tensor_to_its_receiving_nodes.get(name, [])]
        if name in producers:
            touching.insert(0, ("output of", producers[name].name))
        missing[name] = touching
    return missing


def _missing_ranges_error(missing: Mapping[str, list[tuple[str, str]]]) -> QuantizationError:
    def where(touching: list[tuple[str, str]]) -> str:
        return ", ".join(f"{role} '{node}'" for role, node in touching) or "graph input"

    shown = "; ".join(f"'{name}' ({where(touching)})" for name, touching in list(missing.items())[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    nodes = sorted({node for touching in missing.values() for _, node in touching})
    return QuantizationError(
        f"no calibration range for {len(missing)} tensor(s) the quantized nodes need: {shown}{more} — pass the "
        "ranges collect_ranges() measured on this same model (tensor names change when the graph is optimized "
        f"after calibration), or keep those nodes float with nodes_to_exclude={nodes}"
    )


# --- already-quantized (QAT) models -----------------------------------------------------------------------


@dataclass
class QatSummary:
    """What quantization an already-quantized model carries, and whether its QDQ pairs are well formed."""

    kind: str
    quantize_nodes: int
    dequantize_nodes: int
    pairs: int
    quantized_weights: list[str] = field(default_factory=list)
    quantized_activations: list[str] = field(default_factory=list)
    quantized_nodes: list[str] = field(default_factory=list)
    per_axis: int = 0
    types: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.kind == "none":
            return "no quantization"
        types = ", ".join(f"{n} {t}" for t, n in sorted(self.types.items())) or "no constant zero points"
        return (
            f"{self.quantize_nodes} QuantizeLinear / {self.dequantize_nodes} DequantizeLinear ({self.pairs} Q->DQ "
            f"pairs; {len(self.quantized_weights)} weights, {len(self.quantized_activations)} activations, "
            f"{self.per_axis} per-axis; {types}) feeding {len(self.quantized_nodes)} nodes"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "quantize_nodes": self.quantize_nodes,
            "dequantize_nodes": self.dequantize_nodes,
            "pairs": self.pairs,
            "quantized_weights": self.quantized_weights,
            "quantized_activations": self.quantized_activations,
            "quantized_nodes": self.quantized_nodes,
            "per_axis": self.per_axis,
            "types": self.types,
            "problems": self.problems,
        }


def is_quantized(model: ir.Model) -> bool:
    """Whether the model already holds quantization (QDQ, QOperator or dynamic integer ops)."""
    return quantization_kind(model) != "none"


def _all_nodes(model: ir.Model) -> list[ir.Node]:
    return list(ir.traversal.RecursiveGraphIterator(model.graph))


def _is_qdq(node: ir.Node) -> bool:
    return node.op_type in _QDQ_OPS and node.domain in _QDQ_DOMAINS


def _is_constant(value: ir.Value | None) -> bool:
    if value is None:
        return False
    producer = value.producer()
    return value.const_value is not None or (producer is not None and producer.op_type == "Constant")


def _const(value: ir.Value | None) -> np.ndarray[Any, Any] | None:
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else np.asarray(tensor.numpy())


def _input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if len(node.inputs) > index else None


def qat_summary(model: ir.Model) -> QatSummary:
    """Count the Q/DQ nodes and pairs of an already-quantized model and what they quantize."""
    summary = QatSummary(quantization_kind(model), 0, 0, 0)
    weights: set[str] = set()
    activations: set[str] = set()
    consumers: set[str] = set()
    for node in _all_nodes(model):
        if not _is_qdq(node):
            continue
        x, scale = _input(node, 0), _input(node, 1)
        quantized: ir.Value | None = None  # the integer tensor this node produces or reads
        if node.op_type == "QuantizeLinear":
            summary.quantize_nodes += 1
            summary.pairs += sum(1 for user, _ in node.outputs[0].uses() if user.op_type == "DequantizeLinear")
            if x is not None:
                (weights if _is_constant(x) else activations).add(x.name or "")
            quantized = node.outputs[0] if node.outputs[0].dtype is not None else _input(node, 2)
        else:
            summary.dequantize_nodes += 1
            consumers.update(_label(user) for user, _ in node.outputs[0].uses() if not _is_qdq(user))
            if x is not None and _is_constant(x):  # a weight stored quantized (no QuantizeLinear before it)
                weights.add(x.name or "")
                quantized = x
        if scale is not None and scale.shape is not None and len(scale.shape) == 1 and scale.shape[0] != 1:
            summary.per_axis += 1
        if quantized is not None and quantized.dtype is not None:
            name = quantized.dtype.name.lower()
            summary.types[name] = summary.types.get(name, 0) + 1
    summary.quantized_weights = sorted(weights)
    summary.quantized_activations = sorted(activations)
    summary.quantized_nodes = sorted(consumers)
    summary.problems = validate_qdq(model)
    return summary


def check_qat(model: ir.Model) -> QatSummary:
    """Accept an already-quantized (QAT) model as it is: its summary, or QuantizationError listing bad pairs."""
    summary = qat_summary(model)
    if summary.problems:
        shown = "; ".join(summary.problems[:5])
        more = f" (and {len(summary.problems) - 5} more)" if len(summary.problems) > 5 else ""
        raise QuantizationError(
            f"the quantized model has {len(summary.problems)} malformed Q/DQ node(s): {shown}{more} — re-export "
            "it from the QAT framework, or quantize the FP32 original with modelport instead"
        )
    return summary


def validate_qdq(model: ir.Model) -> list[str]:
    """Problems with the model's QuantizeLinear/DequantizeLinear nodes (an empty list: well formed).

    Checked where scales and zero points are constants: scales positive and finite; zero-point types
    quantized (int32 only on DequantizeLinear, and then zero); zero point typed like the quantized input;
    scale/zero-point shapes per-tensor or matching the axis; each Q->DQ pair with the same scale, zero
    point and axis.
    """
    problems: list[str] = []
    for node in _all_nodes(model):
        if not _is_qdq(node):
            continue
        problems.extend(_check_qdq_node(node))
        if node.op_type == "QuantizeLinear":
            problems.extend(_check_pairs(node))
    return problems


def _label(node: ir.Node) -> str:
    if node.name:
        return node.name
    out = node.outputs[0].name if node.outputs else "?"
    return f"<unnamed {node.op_type} -> {out}>"


def _check_qdq_node(node: ir.Node) -> list[str]:
    where = f"{node.op_type} '{_label(node)}'"
    scale = _const(_input(node, 1))
    if scale is None:
        return []  # a scale computed at run time cannot be checked here
    problems: list[str] = []
    bad = ~(np.isfinite(scale) & (scale > 0))
    if bad.any():
        problems.append(
            f"{where}: scale has {int(bad.sum())} value(s) that are not finite and > 0 (e.g. {scale[bad].ravel()[0]})"
            " — every scale must be a positive finite number"
        )
    problems.extend(_check_zero_point(node, where, scale))
    problems.extend(_check_shapes(node, where, scale))
    return problems


def _check_zero_point(node: ir.Node, where: str, scale: np.ndarray[Any, Any]) -> list[str]:
    zp_value, x = _input(node, 2), _input(node, 0)
    if zp_value is None or zp_value.dtype is None:
        return []
    dtype = zp_value.dtype
    zp = _const(zp_value)
    problems: list[str] = []
    if dtype == ir.DataType.INT32 and node.op_type == "DequantizeLinear":
        if zp is not None and np.any(zp != 0):
            problems.append(f"{where}: an int32 (bias) zero point must be 0, not {zp[zp != 0].ravel()[0]}")
    elif dtype not in _QUANTIZED_TYPES:
        problems.append(f"{where}: zero point has type {dtype.name.lower()}, which is not a quantized type")
    if node.op_type == "DequantizeLinear" and x is not None and x.dtype is not None and x.dtype != dtype:
        problems.append(
            f"{where}: zero point is {dtype.name.lower()} but the quantized input is {x.dtype.name.lower()}"
        )
    if zp is not None and zp.shape != scale.shape:
        problems.append(f"{where}: zero point shape {list(zp.shape)} differs from scale shape {list(scale.shape)}")
    return problems


def _input_shape(node: ir.Node) -> ir.Shape | None:
    """The shape of the node's data input; for a DequantizeLinear after a QuantizeLinear, the Q input's shape."""
    x = _input(node, 0)
    if x is None:
        return None
    producer = x.producer()
    if x.shape is None and producer is not None and producer.op_type == "QuantizeLinear":
        source = _input(producer, 0)
        return source.shape if source is not None else None
    return x.shape


def _check_shapes(node: ir.Node, where: str, scale: np.ndarray[Any, Any]) -> list[str]:
    """Per-tensor scales are scalars; per-axis scales are 1-D with one value per channel of the axis."""
    shape = _input_shape(node)
    rank = len(shape) if shape is not None else None
    if node.attributes.get_int("block_size", 0):
        if rank is not None and scale.ndim != rank:
            return [f"{where}: blocked scale has rank {scale.ndim}, the input has rank {rank}"]
        return []
    if scale.ndim == 0 or (scale.size == 1 and scale.ndim == 1):
        return []
    if scale.ndim > 1:
        return [f"{where}: scale has shape {list(scale.shape)} — it must be a scalar or 1-D (per-axis)"]
    axis = node.attributes.get_int("axis", 1)
    if shape is None or rank is None:
        return []
    if not -rank <= axis < rank:
        return [f"{where}: axis {axis} is out of range for an input of rank {rank}"]
    dim = shape[axis % rank]
    if isinstance(dim, int) and dim != scale.shape[0]:
        return [f"{where}: per-axis scale has {scale.shape[0]} values but axis {axis} of the input has {dim} channels"]
    return []


def _zero_points(node: ir.Node, scale: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The node's zero points as float64 values, one per scale (absent: the default 0)."""
    zp = _const(_input(node, 2))
    values = np.zeros(scale.size) if zp is None else zp.astype(np.float64).ravel()
    return np.broadcast_to(values, (scale.size,)) if values.size == 1 else values


def _zero_point_type(node: ir.Node) -> str:
    """The integer type of the node's quantized side (uint8 when the zero point is absent, as ONNX says)."""
    zp = _input(node, 2)
    if zp is None:
        return "uint8"
    return zp.dtype.name.lower() if zp.dtype is not None else "unknown"


def _axis(node: ir.Node) -> int:
    axis = node.attributes.get_int("axis", 1)
    shape = _input_shape(node)
    if axis < 0 and shape is not None:
        axis += len(shape)
    return axis


def _check_pairs(q: ir.Node) -> list[str]:
    """Each DequantizeLinear reading this QuantizeLinear must undo it with the same parameters."""
    problems: list[str] = []
    q_scale = _const(_input(q, 1))
    if q_scale is None:
        return []
    for dq, _ in q.outputs[0].uses():
        dq_scale = _const(_input(dq, 1)) if dq.op_type == "DequantizeLinear" else None
        if dq_scale is None:
            continue
        pair = f"QuantizeLinear '{_label(q)}' -> DequantizeLinear '{_label(dq)}'"
        if not np.array_equal(q_scale.ravel(), dq_scale.ravel()):
            problems.append(
                f"{pair}: scales differ ({q_scale.ravel()[:3]} vs {dq_scale.ravel()[:3]}) — a pair must use one "
                "scale, or the round trip rescales the tensor"
            )
            continue
        q_type, dq_type = _zero_point_type(q), _zero_point_type(dq)
        if q_type != dq_type:
            problems.append(f"{pair}: quantized to {q_type} but dequantized from {dq_type}")
        q_zp, dq_zp = _zero_points(q, q_scale), _zero_points(dq, dq_scale)
        if not np.array_equal(q_zp, dq_zp):
            problems.append(
                f"{pair}: zero points differ ({q_zp[:3]} vs {dq_zp[:3]}) — a pair must use one zero point, or "
                "the round trip shifts the tensor"
            )
        if q_scale.size > 1 and _axis(q) != _axis(dq):
            problems.append(f"{pair}: quantized along axis {_axis(q)} but dequantized along axis {_axis(dq)}")
    return problems
