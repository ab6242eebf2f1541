"""Dynamic INT8 that knows when it pays: MatMul-heavy models yes, conv-heavy models only if measured.

Dynamic quantization stores the weights as int8 ahead of time and quantizes every activation at
run time (DynamicQuantizeLinear computes a scale per tensor, per call). In a transformer most
multiply-accumulates sit in MatMul/Gemm against constant weights, ONNX Runtime fuses the pattern
into ``DynamicQuantizeMatMul`` with VNNI kernels, and the model gets faster. In a CNN the same
recipe produces ``ConvInteger``, which ONNX Runtime's CPU provider runs as im2col plus an integer
GEMM without fusion, after a full pass over each activation to find its range: the best-known way
to make INT8 slower than FP32. Static INT8 (QDQ, calibrated) is the right tool there.

So this module quantizes MatMul/Gemm/Attention by default and never Conv unless asked,
:func:`workload_profile` says where a model's compute is (share of MACs, or of weight bytes when
shapes are unknown), and :func:`advise_dynamic` measures FP32 against INT8 side by side and refuses
a conv-heavy model unless INT8 measured faster or the caller forces it. Every verdict carries the
numbers it was made on.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from modelport.bench.harness import INTERLEAVED_ORT_CONFIG, BenchResult, bench_interleaved
from modelport.errors import ConfigError, QuantizationError
from modelport.ir.serde import clone, infer_shapes, load_detached, save, weight_bytes
from modelport.ir.specs import concrete_shape, specs_of
from modelport.ir.summary import quantization_kind
from modelport.verify.diff import diff_outputs
from modelport.verify.inputs import InputPlan, generate_feeds, hinted_plan
from modelport.verify.tolerance import EXACT

__all__ = [
    "CONV_HEAVY_SHARE",
    "DEFAULT_OP_TYPES",
    "MIN_COSINE",
    "MIN_SPEEDUP",
    "SUPPORTED_OP_TYPES",
    "DynamicAdvice",
    "SideBySide",
    "WorkloadProfile",
    "advise_dynamic",
    "default_feeds",
    "measure_side_by_side",
    "quantize_dynamic",
    "workload_profile",
]

logger = logging.getLogger(__name__)

Feeds = Mapping[str, np.ndarray[Any, Any]]

#: What dynamic INT8 quantizes unless told otherwise: the ops whose integer kernels pay on CPU.
DEFAULT_OP_TYPES: tuple[str, ...] = ("MatMul", "Gemm", "Attention")
#: Every op type :func:`quantize_dynamic` accepts (Conv and LSTM only when asked for).
SUPPORTED_OP_TYPES: tuple[str, ...] = ("MatMul", "Gemm", "Attention", "LSTM", "Conv")
#: A model whose Conv share of MACs (or weight bytes) is above this is conv-heavy.
CONV_HEAVY_SHARE = 0.5
#: Measured speedup that counts as "pays": interleaved timing on a shared machine moves a few percent.
MIN_SPEEDUP = 1.1
#: Cosine to FP32 below which dynamic INT8 is not recommended (the issue's transformer floor).
MIN_COSINE = 0.99

_CONV_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger"})
_MATMUL_OPS = frozenset({"MatMul", "Gemm", "MatMulInteger"})


# --------------------------------------------------------------------------------------------------
# Where the compute is
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadProfile:
    """Where a model's work is: Conv against MatMul/Gemm, in MACs or (fallback) weight bytes.

    ``matmul_weights`` counts MatMul/Gemm against a constant weight (what dynamic INT8 turns into
    integer GEMMs); ``matmul_activations`` counts MatMul of two activations (attention scores and
    context), which stays FP32 because only constant weights are quantized ahead of time.
    """

    basis: Literal["MACs", "weight bytes"]
    conv: int
    matmul_weights: int
    matmul_activations: int
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    #: Conv/MatMul/Gemm nodes whose MACs could not be sized (left out of the shares).
    unsized: int = 0

    @property
    def total(self) -> int:
        return self.conv + self.matmul_weights + self.matmul_activations

    @property
    def conv_share(self) -> float:
        return self.conv / self.total if self.total else 0.0

    @property
    def matmul_weights_share(self) -> float:
        return self.matmul_weights / self.total if self.total else 0.0

    @property
    def conv_heavy(self) -> bool:
        return self.conv_share > CONV_HEAVY_SHARE

    def describe(self) -> str:
        """One line: the shares and what they are shares of."""
        if not self.total:
            return "no Conv, ConvTranspose, MatMul or Gemm work found"
        shares = (
            f"Conv {_pct(self.conv_share)}, MatMul/Gemm with constant weights {_pct(self.matmul_weights_share)}, "
            f"MatMul of two activations {_pct(self.matmul_activations / self.total)}"
        )
        if self.basis == "MACs":
            shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in self.input_shapes.items())
            unsized = f"; {self.unsized} nodes could not be sized" if self.unsized else ""
            return f"{shares} of {self.total / 1e9:.3g} GMACs (inputs {shapes}{unsized})"
        return f"{shares} of {self.total / 1e6:.3g} MB of weights (MACs unknown: shapes could not be inferred)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "basis": self.basis,
            "conv": self.conv,
            "matmul_weights": self.matmul_weights,
            "matmul_activations": self.matmul_activations,
            "conv_share": self.conv_share,
            "matmul_weights_share": self.matmul_weights_share,
            "conv_heavy": self.conv_heavy,
            "input_shapes": self.input_shapes,
            "unsized": self.unsized,
            "description": self.describe(),
        }


def _pct(share: float) -> str:
    """A share as a percentage that never rounds a little to nothing or nearly all to all."""
    if 0.0 < share < 0.001:
        return "<0.1%"
    if 0.999 < share < 1.0:
        return ">99.9%"
    return f"{share:.1%}"


def _static(shape: ir.Shape | None) -> list[int] | None:
    if shape is None:
        return None
    dims = [d for d in shape if isinstance(d, int)]
    return dims if len(dims) == len(shape) else None


def _is_constant(value: ir.Value | None) -> bool:
    if value is None:
        return False
    if value.const_value is not None:
        return True
    producer = value.producer()
    return producer is not None and producer.op_type == "Constant"


def _macs(node: ir.Node) -> int | None:
    """MACs of one Conv/ConvTranspose/MatMul/Gemm from inferred static shapes; None when unknown."""
    if len(node.inputs) < 2 or node.inputs[0] is None or node.inputs[1] is None or not node.outputs:
        return None
    out, x, w = _static(node.outputs[0].shape), _static(node.inputs[0].shape), _static(node.inputs[1].shape)
    if out is None or x is None or w is None:
        return None
    if node.op_type == "Conv":
        return math.prod(out) * math.prod(w[1:])
    if node.op_type == "ConvTranspose":
        return math.prod(x) * w[1] * math.prod(w[2:])
    if node.op_type == "Gemm":
        trans_a = node.attributes.get("transA")
        return math.prod(out) * (x[0] if trans_a is not None and trans_a.value else x[-1])
    if node.op_type == "MatMul":
        return math.prod(out) * x[-1]
    return None


def _input_shapes(
    model: ir.Model, batch: int, dims: Mapping[str, int] | None, default_dim: int
) -> dict[str, list[int]]:
    return {
        spec.name: list(concrete_shape(spec, batch=batch, dims=dims, default_dim=default_dim))
        for spec in specs_of(model.graph.inputs)
        if spec.shape is not None
    }


def _symbolic_shapes(model: ir.Model) -> None:
    """Fill shapes ONNX inference left symbolic with ONNX Runtime's symbolic shape inference.

    ONNX inference loses the batch of 1 behind ``Slice(position_ids, 0, Shape(ids)[1])`` (BERT
    exports) and every broadcast after it; ORT's inference (shipped with onnxruntime) keeps it.
    """
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from modelport.ir.serde import to_bytes

    inferred = SymbolicShapeInference.infer_shapes(onnx.load_from_string(to_bytes(model)), auto_merge=True)
    found: dict[str, list[int]] = {}
    for info in inferred.graph.value_info:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
        if dims and all(d is not None for d in dims):
            found[info.name] = [int(d) for d in dims if d is not None]
    for node in model.graph:
        for out in node.outputs:
            if out.name in found and _static(out.shape) is None:
                out.shape = ir.Shape(found[out.name])


def _sized_ops(model: ir.Model) -> list[ir.Node]:
    return [n for n in ir.traversal.RecursiveGraphIterator(model.graph) if n.op_type in _CONV_OPS | _MATMUL_OPS]


def _profile_by_macs(model: ir.Model, shapes: Mapping[str, Sequence[int]]) -> WorkloadProfile:
    work = clone(model)
    for value in work.graph.inputs:
        if value.name is not None and value.name in shapes:
            value.shape = ir.Shape(list(shapes[value.name]))
    for node in ir.traversal.RecursiveGraphIterator(work.graph):
        for out in node.outputs:
            if not out.is_graph_output():
                out.shape = None
    infer_shapes(work)
    all_sized = all(_static(v.shape) is not None for v in work.graph.inputs)
    if all_sized and any(_macs(n) is None for n in _sized_ops(work)):
        try:
            _symbolic_shapes(work)
        except Exception as e:  # best effort: the ONNX shapes stand
            logger.debug("ONNX Runtime symbolic shape inference failed: %s", e)
    conv = weights = activations = unsized = 0
    for node in _sized_ops(work):
        macs = _macs(node)
        if macs is None:
            unsized += 1
        elif node.op_type in _CONV_OPS:
            conv += macs
        elif _is_constant(node.inputs[1]) or _is_constant(node.inputs[0]):
            weights += macs
        else:
            activations += macs
    used = {k: list(v) for k, v in shapes.items()}
    return WorkloadProfile("MACs", conv, weights, activations, used, unsized=unsized)


def _profile_by_weights(model: ir.Model) -> WorkloadProfile:
    conv = matmul = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.op_type not in _CONV_OPS | _MATMUL_OPS:
            continue
        nbytes = sum(v.const_value.nbytes for v in node.inputs[:2] if v is not None and v.const_value is not None)
        if node.op_type in _CONV_OPS:
            conv += nbytes
        else:
            matmul += nbytes
    return WorkloadProfile("weight bytes", conv, matmul, 0)


def workload_profile(
    model: ir.Model,
    *,
    batch: int = 1,
    dims: Mapping[str, int] | None = None,
    default_dim: int = 64,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> WorkloadProfile:
    """Share of Conv against MatMul/Gemm work, in MACs at concrete input shapes.

    ``shapes`` gives the input shapes outright (those of real feeds); otherwise dynamic dimensions
    are filled as in :func:`modelport.ir.specs.concrete_shape` (axis 0 gets ``batch``, named dims
    come from ``dims``, the rest ``default_dim``). When shape inference cannot size any of these
    ops, the profile falls back to their weight bytes and says so.
    """
    try:
        chosen = shapes if shapes is not None else _input_shapes(model, batch, dims, default_dim)
        profile = _profile_by_macs(model, chosen)
    except Exception as e:  # shape inference is best effort for foreign ops
        logger.debug("MAC count failed, profiling by weight bytes: %s", e)
        profile = WorkloadProfile("MACs", 0, 0, 0)
    if profile.total == 0:
        by_weights = _profile_by_weights(model)
        if by_weights.total:
            return by_weights
    return profile


# --------------------------------------------------------------------------------------------------
# Quantization through ONNX Runtime
# --------------------------------------------------------------------------------------------------


def _check_op_types(op_types: Sequence[str]) -> None:
    if not op_types:
        raise QuantizationError(f"op_types is empty — give some of: {', '.join(SUPPORTED_OP_TYPES)}")
    unknown = [op for op in op_types if op not in SUPPORTED_OP_TYPES]
    if unknown:
        raise QuantizationError(
            f"dynamic INT8 cannot quantize op types {', '.join(unknown)} — supported: {', '.join(SUPPORTED_OP_TYPES)}"
        )


def _name_nodes(model: ir.Model) -> None:
    """Give every nameless node a unique name (exclusion lists and ORT's bookkeeping go by name)."""
    taken = {n.name for n in ir.traversal.RecursiveGraphIterator(model.graph) if n.name}
    for i, node in enumerate(ir.traversal.RecursiveGraphIterator(model.graph)):
        if node.name:
            continue
        name, k = f"{node.op_type}_{i}", 0
        while name in taken:
            k += 1
            name = f"{node.op_type}_{i}_{k}"
        node.name = name
        taken.add(name)


def _float_attr(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return float(attr.value) if attr is not None else default


def _gemm_to_matmul(graph: ir.Graph, gemm: ir.Node) -> bool:
    """Rewrite ``Gemm(A, const B, C)`` (transA=0) as MatMul(+Add) so the integer MatMul path takes it.

    ONNX Runtime's quantizer does a similar rewrite itself, but transposes the weight in place and
    so corrupts it when another node shares it; here the transposed weight is a new initializer.
    """
    a, b = gemm.inputs[0], gemm.inputs[1]
    c = gemm.inputs[2] if len(gemm.inputs) > 2 else None
    trans_a = gemm.attributes.get("transA")
    if (trans_a is not None and trans_a.value) or a is None or b is None or b.const_value is None:
        return False
    if b.const_value.dtype != ir.DataType.FLOAT:
        return False
    if c is not None and c.const_value is None:
        return False
    weight = b.const_value.numpy()
    trans_b = gemm.attributes.get("transB")
    if trans_b is not None and trans_b.value:
        weight = weight.T
    weight = np.ascontiguousarray(weight * _float_attr(gemm, "alpha", 1.0), dtype=weight.dtype)
    w_value = ir.Value(name=f"{gemm.name}_MatMul_weight", const_value=ir.tensor(weight))
    w_value.shape, w_value.dtype = ir.Shape(weight.shape), ir.DataType.FLOAT
    graph.register_initializer(w_value)
    matmul = ir.node("MatMul", [a, w_value], name=f"{gemm.name}_MatMul")
    new_nodes, result = [matmul], matmul.outputs[0]
    if c is not None and c.const_value is not None:
        bias = np.asarray(c.const_value.numpy() * _float_attr(gemm, "beta", 1.0), dtype=weight.dtype)
        b_value = ir.Value(name=f"{gemm.name}_Add_bias", const_value=ir.tensor(bias))
        b_value.shape, b_value.dtype = ir.Shape(bias.shape), ir.DataType.FLOAT
        graph.register_initializer(b_value)
        add = ir.node("Add", [result, b_value], name=f"{gemm.name}_Add")
        new_nodes.append(add)
        result = add.outputs[0]
    ir.convenience.replace_nodes_and_values(graph, gemm, [gemm], new_nodes, [gemm.outputs[0]], [result])
    return True


def _rewrite_gemms(model: ir.Model) -> list[str]:
    """Rewrite every eligible Gemm of the main graph; return the names of the new MatMuls.

    Done whatever ``op_types`` says: ONNX Runtime's quantizer would otherwise do its own, unsafe
    rewrite of these Gemms (see :func:`_gemm_to_matmul`); :func:`_exclusions` keeps them FP32 when
    Gemm was not asked for.
    """
    graph = model.graph
    rewritten = []
    for node in list(graph):
        if node.op_type == "Gemm" and node.domain == "" and _gemm_to_matmul(graph, node):
            rewritten.append(f"{node.name}_MatMul")
    for name in [n for n, v in graph.initializers.items() if not v.uses() and not v.is_graph_output()]:
        graph.initializers.pop(name)  # a Gemm weight nothing else used
    return rewritten


def _exclusions(
    model: ir.Model, op_types: Sequence[str], nodes_to_exclude: Sequence[str], gemms: Sequence[str]
) -> list[str]:
    """Names ONNX Runtime must leave alone, in terms of the graph it will see."""
    names = {n.name or "" for n in ir.traversal.RecursiveGraphIterator(model.graph)}
    unknown = [n for n in nodes_to_exclude if n not in names and f"{n}_MatMul" not in names]
    if unknown:
        raise QuantizationError(
            f"nodes_to_exclude names nodes the model does not have: {', '.join(unknown)} — "
            "use node names as `modelport inspect` lists them"
        )
    excluded = [*nodes_to_exclude, *(f"{n}_MatMul" for n in nodes_to_exclude)]
    nodes = list(ir.traversal.RecursiveGraphIterator(model.graph))
    if "MatMul" not in op_types:  # Gemm asked for alone: keep the model's own MatMuls in FP32
        excluded += [n.name or "" for n in nodes if n.op_type == "MatMul" and (n.name or "") not in gemms]
    if "Gemm" not in op_types:
        excluded += gemms
    return [n for n in excluded if n]


def _ort_op_types(op_types: Sequence[str]) -> list[str]:
    mapped = {"MatMul" if op == "Gemm" else op for op in op_types}
    return sorted(mapped)


def _prepared(model: ir.Model) -> tuple[ir.Model, list[str]]:
    """A named copy with Gemms rewritten as MatMul, ready for ORT; the names of those MatMuls."""
    work = clone(model)
    _name_nodes(work)
    gemms = _rewrite_gemms(work)
    for graph in work.graphs():
        # The ORT quantizer rewrites some weights but keeps their stale value_info shapes, and its
        # own shape inference then fails; initializers carry their shapes anyway.
        for value in graph.initializers.values():
            value.shape = None
    return work, gemms


def _refuse_encrypted(model: ir.Model) -> None:
    """ONNX Runtime's dynamic quantizer only reads and writes files: refuse to put decrypted plaintext there."""
    from modelport.protect import ENCRYPTED_META

    if ENCRYPTED_META in model.meta:
        raise QuantizationError(
            f"the model was decrypted from an encrypted file ({model.meta[ENCRYPTED_META]}); ONNX Runtime's dynamic "
            "quantizer works on files, so its plaintext would be written to a temporary folder — decrypt it yourself "
            "(modelport decrypt) to a place you trust and quantize that file"
        )


def quantize_dynamic(
    model: ir.Model,
    *,
    per_channel: bool = False,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    nodes_to_exclude: Sequence[str] = (),
) -> ir.Model:
    """Dynamic INT8: int8 weights (QInt8) ahead of time, uint8 activations quantized at run time.

    Only MatMul/Gemm/Attention by default: Conv (``ConvInteger``) is typically slower than FP32 on
    CPU and is quantized only when ``op_types`` names it. Only MatMuls against constant weights
    are quantized. A Gemm with a constant weight becomes MatMul (+Add) even when it stays FP32
    (ONNX Runtime fuses the pair back when it builds a session). Raises :class:`QuantizationError`
    for an already-quantized model, unknown op types or node names, and when nothing in the model
    could be quantized.
    """
    from onnxruntime import quantization as q

    _check_op_types(op_types)
    already = quantization_kind(model)
    if already != "none":
        raise QuantizationError(f"the model is already quantized ({already}) — quantize the FP32 original instead")
    _refuse_encrypted(model)
    work, gemms = _prepared(model)
    excluded = _exclusions(work, op_types, nodes_to_exclude, gemms)
    with tempfile.TemporaryDirectory(prefix="modelport-dq-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        save(work, src)
        try:
            q.quantize_dynamic(
                str(src),
                str(dst),
                op_types_to_quantize=_ort_op_types(op_types),
                per_channel=per_channel,
                weight_type=q.QuantType.QInt8,
                nodes_to_exclude=excluded,
                use_external_data_format=weight_bytes(work) > (1 << 30),
                # Float for tensors whose type shape inference cannot give (outputs of contrib ops such
                # as the com.microsoft Attention that ORT's transformer optimizer fuses).
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": int(ir.DataType.FLOAT)},
            )
        except Exception as e:
            raise QuantizationError(f"ONNX Runtime dynamic quantization failed: {e}") from e
        quantized = load_detached(dst)
    if quantization_kind(quantized) == "none":
        raise QuantizationError(
            f"dynamic INT8 quantized nothing: the model has no {'/'.join(op_types)} node with constant weights "
            f"outside nodes_to_exclude — dynamic INT8 only helps models whose work is in such nodes"
        )
    return quantized


# --------------------------------------------------------------------------------------------------
# Measuring against FP32
# --------------------------------------------------------------------------------------------------


@dataclass
class SideBySide:
    """FP32 and a converted model timed in alternating windows on the same feeds, plus output error."""

    reference: BenchResult
    candidate: BenchResult
    worst_cosine: float
    worst_sqnr_db: float
    #: NaN/Inf values in the candidate's outputs beyond those in the reference's.
    nonfinite: int
    providers: list[str]

    @property
    def speedup(self) -> float:
        return self.reference.median_ms / self.candidate.median_ms

    def timing_text(self, what: str) -> str:
        """``<what> 3.10 ms vs FP32 2.00 ms (0.65x; median, batch 1, CPUExecutionProvider)``."""
        where = self.providers[0] if self.providers else "unknown provider"
        return (
            f"{what} {self.candidate.median_ms:.2f} ms vs FP32 {self.reference.median_ms:.2f} ms "
            f"({self.speedup:.2f}x; median, batch {self.candidate.batch}, {where})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "speedup": self.speedup,
            "fp32_ms": self.reference.median_ms,
            "candidate_ms": self.candidate.median_ms,
            "worst_cosine": self.worst_cosine,
            "worst_sqnr_db": self.worst_sqnr_db,
            "nonfinite": self.nonfinite,
            "providers": self.providers,
            "fp32_bench": self.reference.to_dict(),
            "candidate_bench": self.candidate.to_dict(),
        }


def default_feeds(model: ir.Model, *, batch: int = 1, dims: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Realistic generated inputs (token ids inside the vocabulary, padding masks, images in [0, 1))."""
    plan = hinted_plan(InputPlan(batch=batch, dims=dict(dims or {}), fill="realistic"), model)
    return generate_feeds(specs_of(model.graph.inputs), plan)


def _error_stats(cand: Mapping[str, Any], ref: Mapping[str, Any]) -> tuple[float, float, int]:
    floats = {k: v for k, v in ref.items() if np.asarray(v).dtype.kind == "f"}
    diffs = diff_outputs({k: cand[k] for k in floats if k in cand}, floats, EXACT)
    cosine = min((d.cosine for d in diffs), default=1.0)
    sqnr = min((d.sqnr_db for d in diffs), default=float("inf"))
    nonfinite = sum(
        max(0, d.nan_candidate - d.nan_reference) + max(0, d.inf_candidate - d.inf_reference) for d in diffs
    )
    return cosine, sqnr, nonfinite


def measure_side_by_side(
    reference: ir.Model,
    candidate: ir.Model,
    feeds: Feeds,
    *,
    seconds: float = 2.0,
    threads: int | None = None,
    providers: Sequence[str] | Literal["auto"] | None = None,
    names: tuple[str, str] = ("fp32", "candidate"),
) -> SideBySide:
    """Output error of ``candidate`` against ``reference`` and both latencies, interleaved (ORT)."""
    from modelport.runners.onnxruntime import OrtRunner

    if seconds <= 0:
        raise ConfigError(f"the measurement needs seconds > 0, got {seconds}")
    quiet = INTERLEAVED_ORT_CONFIG  # the two are timed against each other
    ref = OrtRunner(reference, providers=providers, intra_op_threads=threads, name=names[0], session_config=quiet)
    cand = OrtRunner(candidate, providers=providers, intra_op_threads=threads, name=names[1], session_config=quiet)
    with ref, cand:
        cosine, sqnr, nonfinite = _error_stats(cand.infer(feeds), ref.infer(feeds))
        ref_bench, cand_bench = bench_interleaved([ref, cand], feeds, duration=seconds)
        used = list(cand.session.get_providers())
    return SideBySide(ref_bench, cand_bench, cosine, sqnr, nonfinite, used)


# --------------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------------


@dataclass
class DynamicAdvice:
    """Dynamic INT8 of a model, where its work is, how it measured, and whether to use it.

    ``recommended`` is None when nothing was measured. ``refusal`` holds the text of a refusal
    that ``force=True`` overrode; ``warnings`` every problem found, with its numbers.
    """

    model: ir.Model
    profile: WorkloadProfile
    settings: dict[str, Any]
    measurement: SideBySide | None
    recommended: bool | None
    forced: bool = False
    refusal: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        return self.measurement.speedup if self.measurement else None

    @property
    def fp32_ms(self) -> float | None:
        return self.measurement.reference.median_ms if self.measurement else None

    @property
    def int8_ms(self) -> float | None:
        return self.measurement.candidate.median_ms if self.measurement else None

    def summary(self) -> str:
        """One line for a report."""
        if self.measurement is None:
            return f"dynamic INT8 not measured; {self.profile.describe()}"
        verdict = "recommended" if self.recommended else "NOT recommended"
        return (
            f"{verdict}: {self.measurement.timing_text('dynamic INT8')}, cosine to FP32 "
            f"{self.measurement.worst_cosine:.5f}; {self.profile.describe()}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "recommended": self.recommended,
            "summary": self.summary(),
            "speedup": self.speedup,
            "fp32_ms": self.fp32_ms,
            "int8_ms": self.int8_ms,
            "profile": self.profile.to_dict(),
            "settings": self.settings,
            "measurement": self.measurement.to_dict() if self.measurement else None,
            "forced": self.forced,
            "refusal": self.refusal,
            "warnings": self.warnings,
        }


def _refusal_text(profile: WorkloadProfile, op_types: Sequence[str], measured: SideBySide | None) -> str:
    text = (
        f"dynamic INT8 does not suit this conv-heavy model ({profile.describe()}): dynamic quantization "
        "re-quantizes every activation at run time and ONNX Runtime's CPU ConvInteger has no fused kernel, "
        "so it is usually slower than FP32"
    )
    if "Conv" not in op_types:
        text += f"; with Conv left in FP32 only {_pct(profile.matmul_weights_share)} of the work would run in INT8"
    if measured is not None:
        text += f"; measured here: {measured.timing_text('dynamic INT8')}"
    return text + (
        " — use static INT8 (mode int8-static, QDQ with calibration data) for CNNs, "
        "or pass force=True to keep the dynamic INT8 model anyway"
    )


def _warnings(measured: SideBySide, min_speedup: float, min_cosine: float) -> list[str]:
    out = []
    timing = measured.timing_text("dynamic INT8")
    if measured.speedup < 1.0:
        out.append(f"dynamic INT8 is SLOWER than FP32 on this machine: {timing} — keep FP32 here")
    elif measured.speedup < min_speedup:
        out.append(f"dynamic INT8 does not pay on this machine: {timing}, below the {min_speedup:g}x bar")
    if not measured.worst_cosine >= min_cosine:
        out.append(f"dynamic INT8 moves the outputs too far: cosine to FP32 {measured.worst_cosine:.5f} < {min_cosine}")
    if measured.nonfinite:
        out.append(f"dynamic INT8 produced {measured.nonfinite} NaN/Inf values that FP32 does not")
    return out


def advise_dynamic(
    model: ir.Model,
    *,
    measure: bool = True,
    feeds: Feeds | None = None,
    seconds: float = 2.0,
    force: bool = False,
    per_channel: bool = False,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    nodes_to_exclude: Sequence[str] = (),
    batch: int = 1,
    dims: Mapping[str, int] | None = None,
    threads: int | None = None,
    min_speedup: float = MIN_SPEEDUP,
    min_cosine: float = MIN_COSINE,
) -> DynamicAdvice:
    """Quantize dynamically, measure against FP32 side by side, and say whether it pays.

    A conv-heavy model (Conv share of the work above :data:`CONV_HEAVY_SHARE`) is refused with a
    :class:`QuantizationError` that carries the profile and the measured timings, unless it
    measured at least ``min_speedup`` faster or ``force=True``. ``feeds`` default to realistic
    generated inputs at ``batch`` (named dims from ``dims``); they are also what the profile sizes.
    Recommended means: measured at least ``min_speedup`` faster, cosine to FP32 at least
    ``min_cosine``, and no new NaN/Inf.
    """
    if measure and seconds <= 0:
        raise ConfigError(f"the measurement needs seconds > 0, got {seconds}")
    if feeds is None:
        feeds = default_feeds(model, batch=batch, dims=dims)
    profile = workload_profile(model, shapes={k: np.asarray(v).shape for k, v in feeds.items()})
    quantized = quantize_dynamic(model, per_channel=per_channel, op_types=op_types, nodes_to_exclude=nodes_to_exclude)
    measured = None
    if measure:
        names = ("fp32", "int8")
        measured = measure_side_by_side(model, quantized, feeds, seconds=seconds, threads=threads, names=names)
    pays = measured is not None and measured.speedup >= min_speedup
    refusal = _refusal_text(profile, op_types, measured) if profile.conv_heavy and not pays else None
    if refusal is not None and not force:
        raise QuantizationError(refusal)
    settings = {"per_channel": per_channel, "op_types": list(op_types), "nodes_to_exclude": list(nodes_to_exclude)}
    advice = DynamicAdvice(quantized, profile, settings, measured, None, forced=refusal is not None, refusal=refusal)
    if refusal is not None:
        advice.warnings.append(f"forced past a refusal: {refusal}")
    if measured is not None:
        advice.warnings.extend(_warnings(measured, min_speedup, min_cosine))
        advice.recommended = pays and measured.worst_cosine >= min_cosine and measured.nonfinite == 0
    for warning in advice.warnings:
        logger.warning("%s", warning)
    return advice
