"""Optimization passes (one file each) and the manager that verifies every one of them."""

from __future__ import annotations

from modelport.errors import PassError
from modelport.passes.base import Pass
from modelport.passes.constant_folding import ConstantFoldingPass
from modelport.passes.dead_code import DeadCodeEliminationPass
from modelport.passes.noop import NoOpEliminationPass
from modelport.passes.rules.conv_bn import FuseConvBatchNormPass

__all__ = [
    "DEFAULT_PIPELINE",
    "PASSES",
    "ConstantFoldingPass",
    "DeadCodeEliminationPass",
    "FuseConvBatchNormPass",
    "NoOpEliminationPass",
    "Pass",
    "create_pass",
]

#: Registry: pass name -> class.
PASSES: dict[str, type[Pass]] = {
    cls.name: cls
    for cls in (
        NoOpEliminationPass,
        ConstantFoldingPass,
        FuseConvBatchNormPass,
        DeadCodeEliminationPass,
    )
}

#: The order ``modelport optimize`` runs by default.
DEFAULT_PIPELINE: tuple[str, ...] = ("noop", "constant-folding", "conv-bn", "dead-code")


def create_pass(name: str) -> Pass:
    """A pass instance by registry name."""
    cls = PASSES.get(name)
    if cls is None:
        raise PassError(f"unknown pass '{name}' — choose from: {', '.join(PASSES)}")
    return cls()
