"""The Runner interface every engine implements, and feed validation shared by all of them.

A runner has a lifecycle: ``activate()`` builds what is expensive (a session, an engine),
``infer()`` runs it any number of times, ``deactivate()`` frees it. Use it as a context manager.
The base class validates feeds against the model's declared inputs before the engine sees them
and times each call with :func:`time.perf_counter`.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import numpy as np

from modelport.errors import BackendError, InputDtypeError, InputShapeError, UnknownInputError
from modelport.ir.specs import TensorSpec

__all__ = ["Feeds", "Outputs", "Runner", "check_feeds"]

Feeds = Mapping[str, np.ndarray[Any, Any]]
Outputs = dict[str, np.ndarray[Any, Any]]


def _dtype_fix(name: str, seen: np.dtype[Any], expected: np.dtype[Any]) -> str:
    return (
        f"input '{name}' has dtype {seen}, but the model expects {expected} — convert it with arr.astype(np.{expected})"
    )


def check_feeds(specs: list[TensorSpec], feeds: Feeds, *, model_name: str = "the model") -> None:
    """Raise an :class:`InputError` subclass unless ``feeds`` match ``specs`` exactly.

    Checks names (unknown and missing), dtypes, rank, and every static dimension.
    """
    expected = {s.name: s for s in specs}
    unknown = [n for n in feeds if n not in expected]
    if unknown:
        raise UnknownInputError(
            f"{model_name} has no input named {', '.join(repr(n) for n in unknown)}; "
            f"its inputs are {', '.join(repr(n) for n in expected)}"
        )
    missing = [n for n in expected if n not in feeds]
    if missing:
        raise UnknownInputError(f"{model_name} needs input {', '.join(repr(n) for n in missing)}, which was not given")
    for name, array in feeds.items():
        spec = expected[name]
        if not isinstance(array, np.ndarray):
            raise InputDtypeError(
                f"input '{name}' is a {type(array).__name__}, not a numpy array — wrap it with np.asarray"
            )
        if array.dtype != spec.dtype:
            raise InputDtypeError(_dtype_fix(name, array.dtype, spec.dtype))
        if spec.shape is None:
            continue
        if array.ndim != len(spec.shape):
            raise InputShapeError(
                f"input '{name}' has rank {array.ndim} (shape {list(array.shape)}), but the model "
                f"expects rank {len(spec.shape)} {spec.shape_str()}"
            )
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
            if isinstance(want, int) and got != want:
                raise InputShapeError(
                    f"input '{name}' has size {got} on axis {axis} (shape {list(array.shape)}), "
                    f"but the model fixes that axis to {want} {spec.shape_str()}"
                )


class Runner(abc.ABC):
    """One inference engine running one model."""

    #: Registry name of the engine ("onnxruntime", "torch", ...).
    backend: str = "abstract"

    def __init__(self, *, name: str = "model") -> None:
        self.name = name
        self._active = False
        self._inputs: list[TensorSpec] | None = None
        self._outputs: list[TensorSpec] | None = None
        #: Wall time of the last :meth:`infer` call in seconds (engine call only).
        self.last_inference_time: float | None = None

    # lifecycle --------------------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> None:
        if self._active:
            return
        self._activate()
        self._inputs = self._input_specs()
        self._outputs = self._output_specs()
        self._active = True

    def deactivate(self) -> None:
        if not self._active:
            return
        self._deactivate()
        self._active = False

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deactivate()

    # signature --------------------------------------------------------------------------------
    def _require_active(self) -> None:
        if not self._active:
            raise BackendError(
                f"{self.backend} runner for '{self.name}' is not active — call activate() or use it in a 'with' block"
            )

    @property
    def inputs(self) -> list[TensorSpec]:
        self._require_active()
        assert self._inputs is not None
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        self._require_active()
        assert self._outputs is not None
        return self._outputs

    # inference --------------------------------------------------------------------------------
    def infer(self, feeds: Feeds, *, check: bool = True) -> Outputs:
        """Run the model on ``feeds`` (validated unless ``check=False``) and return all outputs."""
        self._require_active()
        if check:
            check_feeds(self.inputs, feeds, model_name=f"model '{self.name}'")
        start = time.perf_counter()
        outputs = self._infer(feeds)
        self.last_inference_time = time.perf_counter() - start
        return outputs

    # what an engine implements ----------------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def _input_specs(self) -> list[TensorSpec]: ...

    @abc.abstractmethod
    def _output_specs(self) -> list[TensorSpec]: ...

    @abc.abstractmethod
    def _infer(self, feeds: Feeds) -> Outputs: ...

    def describe(self) -> dict[str, Any]:
        """Engine settings worth reporting (threads, providers, ...)."""
        return {"backend": self.backend}
