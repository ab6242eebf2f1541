"""A runner backed by a Python function: for tests and for engines simulated in code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, Outputs, Runner

__all__ = ["FakeRunner"]


class FakeRunner(Runner):
    """Calls ``fn(feeds) -> outputs``; declares the given input and output specs."""

    backend = "fake"

    def __init__(
        self,
        fn: Callable[[Feeds], Outputs],
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        *,
        name: str = "fake",
    ) -> None:
        super().__init__(name=name)
        self._fn = fn
        self._declared_inputs = inputs
        self._declared_outputs = outputs
        self.calls = 0

    def _activate(self) -> None:
        self.calls = 0

    def _deactivate(self) -> None:
        pass

    def _input_specs(self) -> list[TensorSpec]:
        return list(self._declared_inputs)

    def _output_specs(self) -> list[TensorSpec]:
        return list(self._declared_outputs)

    def _infer(self, feeds: Feeds) -> Outputs:
        self.calls += 1
        return self._fn(feeds)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "function": getattr(self._fn, "__name__", repr(self._fn))}
