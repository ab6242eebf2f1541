"""Running an ``nn.Module`` eagerly on named inputs: numpy in, numpy out.

Shared by the exporter (which validates ONNX against eager PyTorch) and the torch runner. A
:class:`ModuleCall` fixes the input names and whether they are passed to ``forward`` by position
or by keyword; outputs (a tensor, or tuples, lists and dicts of them) are flattened in order.
"""

# torch is imported inside functions on purpose, so importing modelport never imports it.

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.errors import ExportError
from modelport.export.factory import ExampleInputs
from modelport.ir.specs import TensorSpec
from modelport.verify.inputs import DEFAULT_INT_RANGE, InputPlan, generate_feeds

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "ModuleCall",
    "default_output_names",
    "example_feeds",
    "flatten_outputs",
    "forward_parameters",
    "index_limit",
    "numpy_dtype",
    "to_numpy",
    "to_tensor",
]

Arrays = dict[str, np.ndarray[Any, Any]]


@dataclass(frozen=True)
class ModuleCall:
    """How named inputs reach ``forward``: ``names`` in order, positionally or as keywords."""

    names: tuple[str, ...]
    keyword: bool

    @classmethod
    def for_examples(cls, module: nn.Module, examples: ExampleInputs) -> ModuleCall:
        """Keywords (in ``forward``'s parameter order) for a dict, positions for a tuple."""
        if isinstance(examples, dict):
            params = forward_parameters(module)
            order = {name: i for i, name in enumerate(params)}
            names = sorted(examples, key=lambda n: order.get(n, len(order)))
            return cls(tuple(names), keyword=True)
        params = forward_parameters(module)
        names = [params[i] if i < len(params) else _positional_name(i) for i in range(len(examples))]
        return cls(tuple(names), keyword=False)

    @classmethod
    def for_names(cls, module: nn.Module, names: Sequence[str]) -> ModuleCall:
        """Keywords when every name is a parameter of ``forward``, positions otherwise."""
        params = forward_parameters(module)
        if params and all(name in params for name in names):
            order = {name: i for i, name in enumerate(params)}
            return cls(tuple(sorted(names, key=order.__getitem__)), keyword=True)
        return cls(tuple(names), keyword=False)

    def tensors(self, examples: ExampleInputs) -> list[torch.Tensor]:
        """The example tensors in :attr:`names` order."""
        if isinstance(examples, dict):
            return [examples[name] for name in self.names]
        return list(examples)

    def split(self, tensors: Sequence[torch.Tensor]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments of ``forward`` for tensors in :attr:`names` order."""
        if self.keyword:
            return (), dict(zip(self.names, tensors, strict=True))
        return tuple(tensors), {}

    def run(
        self, module: nn.Module, feeds: Mapping[str, np.ndarray[Any, Any]], *, device: str = "cpu"
    ) -> list[np.ndarray[Any, Any]]:
        """Run ``module`` on numpy feeds under ``torch.inference_mode`` and flatten the outputs."""
        import torch

        args, kwargs = self.split([to_tensor(feeds[name], device) for name in self.names])
        with torch.inference_mode():
            result = module(*args, **kwargs)
        return [to_numpy(t) for t in flatten_outputs(result)]


def forward_parameters(module: nn.Module) -> list[str]:
    """Names of ``forward``'s positional-or-keyword parameters (empty if it takes ``*args``)."""
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in signature.parameters.values() if p.kind in kinds]


def _positional_name(index: int) -> str:
    return "input" if index == 0 else f"input_{index}"


def default_output_names(count: int) -> list[str]:
    """``output``, ``output_1``, ``output_2``, ..."""
    return ["output" if i == 0 else f"output_{i}" for i in range(count)]


def flatten_outputs(result: Any, *, path: str = "output") -> list[torch.Tensor]:
    """Tensors of a ``forward`` result in order: tuples and lists in sequence, dicts by value."""
    import torch

    if isinstance(result, torch.Tensor):
        return [result]
    if result is None:
        return []
    if isinstance(result, list | tuple):
        return [t for i, item in enumerate(result) for t in flatten_outputs(item, path=f"{path}[{i}]")]
    if isinstance(result, Mapping):
        return [t for key, item in result.items() for t in flatten_outputs(item, path=f"{path}[{key!r}]")]
    raise ExportError(
        f"forward returned a {type(result).__name__} at {path} — only tensors (in tuples, lists "
        "or dicts) can be outputs of an exported model; return it as a tensor or drop it"
    )


def numpy_dtype(dtype: torch.dtype) -> np.dtype[Any]:
    """The numpy dtype of a torch dtype (error for dtypes numpy lacks, such as bfloat16)."""
    import torch

    try:
        return np.dtype(torch.empty((), dtype=dtype).numpy().dtype)
    except TypeError as e:
        raise ExportError(f"tensors of dtype {dtype} have no numpy equivalent — cast them (e.g. to float32)") from e


def to_numpy(tensor: torch.Tensor) -> np.ndarray[Any, Any]:
    """The tensor as a numpy array (shares memory with a CPU tensor; copies from a device)."""
    return tensor.numpy(force=True)


def to_tensor(array: np.ndarray[Any, Any], device: str = "cpu") -> torch.Tensor:
    """A tensor on ``device`` holding ``array`` (a copy only when the buffer can't be shared)."""
    import torch

    array = np.ascontiguousarray(array)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device)


def index_limit(module: nn.Module) -> int:
    """Upper bound (exclusive) for generated integer inputs: the smallest embedding table, at
    most the default range, so generated token ids are valid indices for every embedding."""
    from torch import nn

    high = DEFAULT_INT_RANGE[1]
    for sub in module.modules():
        if isinstance(sub, nn.Embedding | nn.EmbeddingBag):
            high = min(high, int(sub.num_embeddings))
    return max(high, 1)


def example_feeds(specs: Sequence[TensorSpec], module: nn.Module, *, seed: int = 0) -> Arrays:
    """Deterministic feeds for ``specs``: standard normal floats, integers in a valid index range.

    Non-static dimensions get 1 on axis 0 and the verify default elsewhere.
    """
    high = index_limit(module)
    ranges = {s.name: (0, high) for s in specs if s.dtype.kind in "iu"}
    return generate_feeds(specs, InputPlan(batch=1, int_ranges=ranges, seed=seed))
