"""Engines behind one interface. Built-ins are registered by string so that importing
modelport never imports an engine; third parties add an entry point in the
``modelport.runners`` group whose value is ``"package.module:RunnerClass"``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from modelport.errors import BackendError
from modelport.runners.base import Feeds, Outputs, Runner, check_feeds

__all__ = ["BACKENDS", "Feeds", "Outputs", "Runner", "check_feeds", "create_runner", "runner_class"]

#: Built-in engines: name -> "module:class".
BACKENDS: dict[str, str] = {
    "onnxruntime": "modelport.runners.onnxruntime:OrtRunner",
    "onnxruntime-cuda": "modelport.runners.onnxruntime:OrtCudaRunner",
    "onnxruntime-trt": "modelport.runners.onnxruntime:OrtTensorrtRunner",
    "openvino": "modelport.runners.openvino:OpenVinoRunner",
    "torch": "modelport.runners.torch:TorchRunner",
}


def _registry() -> dict[str, str]:
    found = dict(BACKENDS)
    for ep in entry_points(group="modelport.runners"):
        found.setdefault(ep.name, ep.value)
    return found


def runner_class(backend: str) -> type[Runner]:
    """The Runner class registered as ``backend`` (imported only now)."""
    registry = _registry()
    target = registry.get(backend)
    if target is None:
        raise BackendError(f"unknown backend '{backend}' — choose one of: {', '.join(sorted(registry))}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendError(
            f"backend '{backend}' needs a package that is not installed ({e.name}) — "
            f"install it, e.g. pip install 'modelport[{backend}]'"
        ) from e
    cls: type[Runner] = getattr(module, attr)
    return cls


def create_runner(backend: str, model: Any, **options: Any) -> Runner:
    """Instantiate the runner for ``backend`` on ``model`` (not yet activated)."""
    factory: Callable[..., Runner] = runner_class(backend)
    return factory(model, **options)
