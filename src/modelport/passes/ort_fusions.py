"""ONNX Runtime's own fusions, applied ahead of time (target ``onnxruntime`` only).

ONNX Runtime rewrites every graph at session creation: at its "extended" level it fuses
Conv+activation (``FusedConv``), Gemm+activation, MatMul+scale, LayerNormalization, GELU,
attention, skip-layer-norm and more into ``com.microsoft`` contrib ops that only ORT runs. This
pass runs those rewrites once, offline, and keeps the result, so the saved graph is what ORT
actually executes: fewer nodes and a shorter session start.

It stops at the "extended" level on purpose: the "all" level adds layout transformations
(NCHWc) tied to the CPU the model was optimized on. The result runs only in ONNX Runtime,
hence ``targets = {"onnxruntime"}``; ``may_slow`` makes the manager time it against the graph
before it and revert it if ORT runs it slower.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx_ir as ir

from modelport.ir.serde import load, to_bytes, weight_bytes
from modelport.passes.base import Pass
from modelport.verify.tolerance import Tolerance

__all__ = ["OrtFusionsPass"]

logger = logging.getLogger(__name__)

#: The offline model goes through one protobuf buffer.
_MAX_WEIGHT_BYTES = 1 << 30


class OrtFusionsPass(Pass):
    """Replace the graph with ONNX Runtime's extended-level optimization of it."""

    name = "ort-fusions"
    targets = frozenset({"onnxruntime"})
    may_slow = True
    # Fused kernels (e.g. GELU approximations, LayerNorm in one pass) round differently.
    tolerance = Tolerance(atol=1e-4, rtol=1e-4)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        import onnxruntime as ort

        if weight_bytes(model) > _MAX_WEIGHT_BYTES:
            logger.debug("ort-fusions: skip, weights over %d bytes", _MAX_WEIGHT_BYTES)
            return ir.passes.PassResult(model, modified=False)
        from modelport.protect import ENCRYPTED_META

        if ENCRYPTED_META in model.meta:
            # ONNX Runtime hands back its fused graph only as a file: that would be plaintext on disk.
            logger.warning(
                "ort-fusions: skipped for a model decrypted from an encrypted file (ORT writes the result to disk)"
            )
            return ir.passes.PassResult(model, modified=False)
        nodes_before = sum(1 for _ in model.graph)
        with tempfile.TemporaryDirectory(prefix="modelport-ort-") as tmp:
            path = Path(tmp) / "optimized.onnx"
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            options.optimized_model_filepath = str(path)
            options.log_severity_level = 3
            ort.InferenceSession(to_bytes(model), options, providers=["CPUExecutionProvider"])
            optimized = load(path)
            ir.external_data.load_to_model(optimized)
        if sum(1 for _ in optimized.graph) >= nodes_before:
            logger.debug("ort-fusions: ONNX Runtime found nothing to fuse")
            return ir.passes.PassResult(model, modified=False)
        _adopt(model, optimized)
        return ir.passes.PassResult(model, modified=True)


def _adopt(model: ir.Model, optimized: ir.Model) -> None:
    """Make ``model`` carry ``optimized``'s graph and opsets, keeping the model's own metadata."""
    model.graph = optimized.graph  # opset imports live on the graph
