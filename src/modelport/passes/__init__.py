"""Optimization passes (one file each), their registry, and the pipelines per target.

A pipeline entry ``"a+b"`` runs passes ``a`` and ``b`` as one step, judged together: an enabling
rewrite that only pays off when the next pass consumes it (BatchNorm turned into Mul/Add, then
folded into the Conv before it) is verified, counted and timed with its follow-up.
"""

from __future__ import annotations

from typing import ClassVar

import onnx_ir as ir

from modelport.errors import PassError
from modelport.passes.base import Pass
from modelport.passes.constant_folding import ConstantFoldingPass
from modelport.passes.cse import CommonSubexpressionEliminationPass
from modelport.passes.dead_code import DeadCodeEliminationPass
from modelport.passes.lift_constants import LiftConstantsPass
from modelport.passes.noop import NoOpEliminationPass
from modelport.passes.ort_fusions import OrtFusionsPass
from modelport.passes.rules.batchnorm import BatchNormToAffinePass
from modelport.passes.rules.conv_affine import FoldConvAffinePass
from modelport.passes.rules.conv_bn import FuseConvBatchNormPass
from modelport.passes.rules.convtranspose_bn import FuseConvTransposeBatchNormPass
from modelport.passes.rules.focus import FocusToSpaceToDepthPass
from modelport.passes.rules.gemm_conv import GemmToConvPass
from modelport.passes.rules.matmul_add import FuseMatMulAddPass
from modelport.passes.rules.parallel_conv import MergeParallelConvPass
from modelport.passes.rules.relu6 import ClipFusionPass
from modelport.passes.shape_simplify import ShapeSimplificationPass
from modelport.verify.tolerance import EXACT, Tolerance

__all__ = [
    "DEFAULT_PIPELINE",
    "PASSES",
    "PIPELINES",
    "BatchNormToAffinePass",
    "ClipFusionPass",
    "CommonSubexpressionEliminationPass",
    "ConstantFoldingPass",
    "DeadCodeEliminationPass",
    "FocusToSpaceToDepthPass",
    "FoldConvAffinePass",
    "FuseConvBatchNormPass",
    "FuseConvTransposeBatchNormPass",
    "FuseMatMulAddPass",
    "GemmToConvPass",
    "LiftConstantsPass",
    "MergeParallelConvPass",
    "NoOpEliminationPass",
    "OrtFusionsPass",
    "Pass",
    "SequencePass",
    "ShapeSimplificationPass",
    "create_pass",
    "pipeline",
]

#: Registry: pass name -> class.
PASSES: dict[str, type[Pass]] = {
    cls.name: cls
    for cls in (
        LiftConstantsPass,
        NoOpEliminationPass,
        ConstantFoldingPass,
        ShapeSimplificationPass,
        CommonSubexpressionEliminationPass,
        FocusToSpaceToDepthPass,
        FuseConvBatchNormPass,
        FuseConvTransposeBatchNormPass,
        FoldConvAffinePass,
        BatchNormToAffinePass,
        ClipFusionPass,
        FuseMatMulAddPass,
        GemmToConvPass,
        MergeParallelConvPass,
        OrtFusionsPass,
        DeadCodeEliminationPass,
    )
}

# Standard-ONNX cleanup and fusions, in dependency order: Constant nodes become initializers
# (every later pass sees one kind of constant) and constants are folded, so that shape
# inference sees static Slice/Reshape parameters; shape chains next (a Reshape whose
# target becomes a constant may turn out to be a no-op), no-ops and constants again (what the
# shape chains fed is now constant), CSE before the fusions (equal branches merge first), BatchNorm and
# affine folds before the horizontal Conv merge (which would hide them), dead code last.
# Opt-in only: "bn-affine" (a standalone BN as Mul+Add adds a node; useful before a custom
# fold) and "gemm-conv" (timed at batch 1 it can look neutral and be slower at batch 32).
_GENERIC = (
    "lift-constants",
    "constant-folding",
    "shape-simplify",
    "noop",
    "constant-folding",
    "cse",
    "focus-space-to-depth",
    "conv-bn",
    "convtranspose-bn",
    "conv-affine",
    "clip-fusion",
    "matmul-add-gemm",
    "parallel-conv",
    "dead-code",
)

#: The order ``modelport optimize`` runs, per target.
PIPELINES: dict[str, tuple[str, ...]] = {
    "generic": _GENERIC,
    "onnxruntime": (*_GENERIC, "ort-fusions", "dead-code"),
}

#: The generic pipeline (kept under its historical name).
DEFAULT_PIPELINE: tuple[str, ...] = PIPELINES["generic"]


class SequencePass(Pass):
    """Several passes run as one step (registry name ``"a+b"``)."""

    name: ClassVar[str] = "sequence"

    def __init__(self, parts: list[Pass]) -> None:
        super().__init__()
        self.parts = parts
        self.step_name = "+".join(p.name for p in parts)

    @property
    def step_tolerance(self) -> Tolerance:
        total = EXACT
        for p in self.parts:
            total = total + p.tolerance
        return total

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for p in self.parts:
            modified = p(model).modified or modified
        return ir.passes.PassResult(model, modified=modified)


def create_pass(name: str) -> Pass:
    """A pass instance by registry name; ``"a+b"`` runs ``a`` then ``b`` as one step."""
    if "+" in name:
        return _sequence([create_pass(part) for part in name.split("+")])
    cls = PASSES.get(name)
    if cls is None:
        raise PassError(f"unknown pass '{name}' — choose from: {', '.join(PASSES)}")
    return cls()


def _sequence(parts: list[Pass]) -> Pass:
    seq = SequencePass(parts)
    # Per-instance identity for the manager's report and checks.
    seq.name = seq.step_name  # type: ignore[misc]
    seq.tolerance = seq.step_tolerance  # type: ignore[misc]
    seq.targets = frozenset.intersection(*(p.targets for p in parts))  # type: ignore[misc]
    seq.may_slow = any(p.may_slow for p in parts)  # type: ignore[misc]
    return seq


def pipeline(target: str = "generic") -> list[Pass]:
    """Fresh pass instances of the default pipeline for ``target``."""
    names = PIPELINES.get(target)
    if names is None:
        raise PassError(f"unknown target '{target}' — choose from: {', '.join(PIPELINES)}")
    return [create_pass(name) for name in names]
