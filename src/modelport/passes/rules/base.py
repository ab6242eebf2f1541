"""Fusion rules: pattern / check / rewrite, applied to a fixed point by a :class:`RulePass`.

A rule is anchored on one op type (usually the last node of its pattern). ``check`` walks back
from the anchor and returns either a match object that ``rewrite`` consumes or a *reason* why the
rule does not apply; reasons go to the debug log (``modelport -vv optimize ...``), so "why did
this not fuse?" always has an answer. Use :func:`~modelport.passes.base.only_consumer` for the
"no other consumers, not a graph output" invariant.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Generic, TypeVar

import onnx_ir as ir

from modelport.passes.base import Pass

__all__ = ["Rule", "RulePass"]

logger = logging.getLogger(__name__)

M = TypeVar("M")

#: Rounds over a graph before a RulePass stops (every firing removes or replaces nodes, so
#: real graphs reach the fixed point in two or three rounds).
_MAX_ROUNDS = 16


class Rule(Generic[M]):
    """One fusion: which op types anchor it, when it applies, how it rewrites."""

    name: ClassVar[str] = "rule"
    #: Op types (standard domain) the rule is anchored on.
    op_types: ClassVar[frozenset[str]] = frozenset()

    def check(self, node: ir.Node) -> M | str:
        """The match anchored at ``node``, or the reason the rule does not apply."""
        raise NotImplementedError

    def rewrite(self, graph: ir.Graph, match: M) -> None:
        """Replace the matched nodes in ``graph``."""
        raise NotImplementedError


class RulePass(Pass):
    """Apply ``rules`` to every graph (subgraphs included) until none fires."""

    rules: ClassVar[tuple[Rule[Any], ...]] = ()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for graph in model.graphs():
            for _ in range(_MAX_ROUNDS):
                if not self._round(graph):
                    break
                modified = True
        return ir.passes.PassResult(model, modified=modified)

    def applicable(self, model: ir.Model) -> bool:
        """Whether any rule matches anywhere (checks only: nothing is logged or rewritten)."""
        for graph in model.graphs():
            for node in graph:
                if node.domain not in ("", "ai.onnx"):
                    continue
                for rule in self.rules:
                    if node.op_type in rule.op_types and not isinstance(rule.check(node), str):
                        return True
        return False

    def _round(self, graph: ir.Graph) -> bool:
        fired = False
        for node in list(graph):
            if node.graph is not graph or node.domain not in ("", "ai.onnx"):
                continue  # removed by an earlier rewrite in this round, or a custom op
            for rule in self.rules:
                if node.op_type not in rule.op_types:
                    continue
                match = rule.check(node)
                if isinstance(match, str):
                    logger.debug("%s: skip %s '%s': %s", rule.name, node.op_type, node.name, match)
                    continue
                rule.rewrite(graph, match)
                logger.debug("%s: fused at %s '%s'", rule.name, node.op_type, node.name)
                fired = True
                break
        return fired
