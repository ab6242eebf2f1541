"""Eager PyTorch runner: the reference an exported model is compared against.

Runs an ``nn.Module`` (or a ``'package.module:function'`` factory, loaded at activation) in eval
mode under ``torch.inference_mode``; numpy in, numpy out. torch is imported on activation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelport.errors import BackendError, ConfigError
from modelport.export.eager import (
    ModuleCall,
    default_output_names,
    example_feeds,
    flatten_outputs,
    numpy_dtype,
    to_numpy,
    to_tensor,
)
from modelport.export.factory import normalize_example_inputs, resolve_module
from modelport.ir.specs import Dim, TensorSpec
from modelport.runners.base import Feeds, Outputs, Runner

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["TorchRunner"]


class TorchRunner(Runner):
    """Runs a PyTorch module eagerly.

    ``model`` is an ``nn.Module``, a factory spec (``'package.module:function'`` or
    ``'path/to/file.py:function'``) or a zero-argument callable returning a module or
    ``(module, example_inputs)``. Inputs are declared by ``inputs``; without them they are taken
    from ``example_inputs`` or the factory's example inputs, with static shapes except the axes in
    ``dynamic_axes`` (``{name: {axis: label}}``). Inputs are passed to ``forward`` by keyword when
    every name is one of its parameters (or the examples were a dict), by position otherwise.
    Outputs are the flattened tensors ``forward`` returns, named by ``output_names`` or
    ``output``, ``output_1``, ... Activation moves the module to ``device`` and puts it in eval
    mode; its training flag is restored on deactivation.
    """

    backend = "torch"

    def __init__(
        self,
        model: Any,
        *,
        inputs: list[TensorSpec] | None = None,
        example_inputs: Any = None,
        output_names: Sequence[str] | None = None,
        dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
        device: str = "cpu",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name or _default_name(model))
        self._model = model
        self._given_inputs = list(inputs) if inputs is not None else None
        self._example_inputs = example_inputs
        self._output_names = list(output_names) if output_names is not None else None
        self._dynamic_axes = {k: dict(v) for k, v in (dynamic_axes or {}).items()}
        self.device = device
        self._module: nn.Module | None = None
        self._was_training = False
        self._call: ModuleCall | None = None
        self._specs: list[TensorSpec] = []
        self._probe: list[TensorSpec] = []

    # lifecycle --------------------------------------------------------------------------------
    def _activate(self) -> None:
        loaded = resolve_module(self._model)
        module = loaded.module
        examples = self._example_inputs if self._example_inputs is not None else loaded.example_inputs
        self._was_training = module.training
        module.to(self.device).eval()
        self._module = module
        try:
            self._specs, feeds = self._signature(module, examples)
            self._probe = self._output_signature(self._call_module(feeds))
        except BaseException:
            self._release()
            raise

    def _deactivate(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._module is not None:
            self._module.train(self._was_training)
        self._module = None
        self._call = None

    def _signature(self, module: nn.Module, examples: Any) -> tuple[list[TensorSpec], Feeds]:
        """Input specs, the call convention, and feeds for one probing run."""
        if examples is not None:
            normalized = normalize_example_inputs(examples, where=f"torch runner '{self.name}'")
            call = ModuleCall.for_examples(module, normalized)
            tensors = call.tensors(normalized)
            if self._given_inputs is not None:
                call = self._declared_call(module, call, self._given_inputs)
            feeds = {n: to_numpy(t) for n, t in zip(call.names, tensors, strict=True)}
            specs = self._given_inputs or [self._spec_of(n, t) for n, t in zip(call.names, tensors, strict=True)]
            self._call = call
            return specs, feeds
        if self._given_inputs is None:
            raise ConfigError(
                f"torch runner '{self.name}' does not know its inputs — pass "
                "inputs=[TensorSpec(...)] or example_inputs, or return (module, example_inputs) "
                "from the factory"
            )
        self._call = ModuleCall.for_names(module, [s.name for s in self._given_inputs])
        return self._given_inputs, example_feeds(self._given_inputs, module)

    def _declared_call(self, module: nn.Module, from_examples: ModuleCall, specs: list[TensorSpec]) -> ModuleCall:
        """Specs given next to example inputs name them (and set keywords only for a dict)."""
        names = [s.name for s in specs]
        if len(names) != len(from_examples.names):
            raise ConfigError(
                f"torch runner '{self.name}' has {len(names)} input specs for "
                f"{len(from_examples.names)} example inputs — give one spec per example input"
            )
        if from_examples.keyword:
            return ModuleCall.for_names(module, names)
        return ModuleCall(tuple(names), keyword=False)

    def _spec_of(self, name: str, tensor: torch.Tensor) -> TensorSpec:
        axes = self._dynamic_axes.get(name, {})
        shape: tuple[Dim, ...] = tuple(axes.get(i, int(s)) for i, s in enumerate(tensor.shape))
        return TensorSpec(name=name, dtype=numpy_dtype(tensor.dtype), shape=shape)

    def _output_signature(self, outputs: list[torch.Tensor]) -> list[TensorSpec]:
        names = self._output_names or default_output_names(len(outputs))
        if len(names) != len(outputs):
            raise ConfigError(
                f"torch runner '{self.name}' was given {len(names)} output names "
                f"({', '.join(names)}), but forward returns {len(outputs)} tensors"
            )
        # Eager PyTorch declares no output shapes: rank is known, sizes are not.
        return [
            TensorSpec(name=n, dtype=numpy_dtype(t.dtype), shape=(None,) * t.dim())
            for n, t in zip(names, outputs, strict=True)
        ]

    # signature --------------------------------------------------------------------------------
    def _input_specs(self) -> list[TensorSpec]:
        return list(self._specs)

    def _output_specs(self) -> list[TensorSpec]:
        return list(self._probe)

    # inference --------------------------------------------------------------------------------
    def _call_module(self, feeds: Feeds) -> list[torch.Tensor]:
        import torch

        assert self._module is not None and self._call is not None
        args, kwargs = self._call.split([to_tensor(feeds[n], self.device) for n in self._call.names])
        try:
            with torch.inference_mode():
                result = self._module(*args, **kwargs)
        except Exception as e:
            raise BackendError(f"PyTorch module '{self.name}' failed: {type(e).__name__}: {e}") from e
        return flatten_outputs(result)

    def _infer(self, feeds: Feeds) -> Outputs:
        tensors = self._call_module(feeds)
        if len(tensors) != len(self.outputs):
            raise BackendError(
                f"PyTorch module '{self.name}' returned {len(tensors)} tensors, but "
                f"{len(self.outputs)} when activated — the number of outputs must not depend on "
                "the inputs"
            )
        return {spec.name: to_numpy(t) for spec, t in zip(self.outputs, tensors, strict=True)}

    def describe(self) -> dict[str, Any]:
        call = self._call
        return {
            "backend": self.backend,
            "module": self.name,
            "device": self.device,
            "inputs_passed": "unknown" if call is None else ("by keyword" if call.keyword else "by position"),
        }


def _default_name(model: Any) -> str:
    """The factory's name for a spec or a function, the class name for a module."""
    if isinstance(model, str):
        return model.rpartition(":")[2] or model
    if hasattr(model, "forward"):
        return type(model).__name__
    return str(getattr(model, "__name__", type(model).__name__))
