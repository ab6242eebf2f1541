"""OpenVINO runner: a second, independent CPU engine to verify an ONNX model against.

A verification engine must compute what the model says, so every setting that changes numerics
or speed is explicit and read back from the compiled model. The one that matters most: on CPUs
with AMX or avx512_bf16, OpenVINO's CPU plugin silently runs float models in bf16 unless
``INFERENCE_PRECISION_HINT`` is set — an error of ~1e-2 that would be blamed on the model. This
runner pins ``f32`` by default, refuses to run when the compiled model reports another precision
than the one asked for, and reports what it got.

Inputs and outputs carry the ONNX tensor names, numpy dtypes, the ONNX graph's output order and,
where OpenVINO leaves a dimension dynamic, the ONNX graph's name for it (OpenVINO drops
dimension names), so the signature matches what ONNX Runtime reports for the same file.
``openvino`` is imported on activation (extra ``openvino``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import onnx_ir as ir

from modelport.errors import BackendError, ConfigError, ModelLoadError
from modelport.ir.serde import load, to_bytes
from modelport.ir.specs import Dim, TensorSpec, specs_of
from modelport.runners.base import Feeds, Outputs, Runner

__all__ = ["InferencePrecision", "OpenVinoRunner", "PerformanceHint"]

logger = logging.getLogger(__name__)

InferencePrecision = Literal["f32", "bf16", "f16"]
PerformanceHint = Literal["LATENCY", "THROUGHPUT"]

#: Properties read back from the compiled model for describe().
_READ_BACK = (
    "INFERENCE_PRECISION_HINT",
    "INFERENCE_NUM_THREADS",
    "NUM_STREAMS",
    "PERFORMANCE_HINT",
    "EXECUTION_DEVICES",
)


class OpenVinoRunner(Runner):
    """Runs a model with OpenVINO (``Core.read_model`` + ``compile_model``).

    ``model`` is a path (ONNX external data is resolved next to it), serialized bytes, or an
    ``onnx_ir.Model`` (serialized with its weights inline). Dynamic dimensions stay dynamic: the
    model is compiled as declared and takes any size there.

    One ``InferRequest`` serves every :meth:`infer` call, so a runner is not thread-safe: give each
    thread its own runner.
    """

    backend = "openvino"

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes | ir.Model,
        *,
        device: str = "CPU",
        num_threads: int | None = None,
        num_streams: int | None = None,
        performance_hint: PerformanceHint = "LATENCY",
        inference_precision: InferencePrecision = "f32",
        name: str | None = None,
    ) -> None:
        if name is None:
            name = Path(model).stem if isinstance(model, str | os.PathLike) else "model"
        super().__init__(name=name)
        _check_choice("performance_hint", performance_hint, get_args(PerformanceHint))
        _check_choice("inference_precision", inference_precision, get_args(InferencePrecision))
        for option, value in (("num_threads", num_threads), ("num_streams", num_streams)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"OpenVINO option {option}={value!r} is invalid — give a positive integer or None")
        self._model = model
        self.device = device
        self.num_threads = num_threads
        self.num_streams = num_streams
        self.performance_hint = performance_hint
        self.inference_precision = inference_precision
        self._compiled: Any = None
        self._request: Any = None
        self._specs_in: list[TensorSpec] = []
        self._specs_out: list[tuple[TensorSpec, int]] = []
        self._read_back: dict[str, Any] = {}

    # lifecycle --------------------------------------------------------------------------------
    def _activate(self) -> None:
        ov = _import_openvino()
        core = ov.Core()
        self._check_device(core)
        config = self._config(core)
        ov_model = self._read(core)
        onnx_signature = self._onnx_signature()
        try:
            compiled = core.compile_model(ov_model, self.device, config)
        except Exception as e:
            raise BackendError(
                f"OpenVINO could not compile model '{self.name}' for {self.device}: {_ov_message(e)} — "
                "the model may use an op OpenVINO does not support; run it with the onnxruntime backend"
            ) from e
        read_back = _read_back(compiled)
        self._check_precision(read_back)
        inputs = _port_specs(compiled.inputs, onnx_signature[0] if onnx_signature else None, self.name)
        outputs = _port_specs(compiled.outputs, onnx_signature[1] if onnx_signature else None, self.name)
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._read_back = read_back
        self._specs_in = [spec for spec, _ in inputs]
        self._specs_out = outputs
        logger.debug("compiled '%s' for %s: %s", self.name, self.device, read_back)

    def _deactivate(self) -> None:
        self._request = None
        self._compiled = None
        self._read_back = {}

    def _check_device(self, core: Any) -> None:
        available = list(core.available_devices)
        # "GPU" names the first of "GPU.0", "GPU.1", ...
        if self.device in available or any(d.partition(".")[0] == self.device for d in available):
            return
        raise BackendError(
            f"OpenVINO has no device '{self.device}' here (available: {', '.join(available) or 'none'}) — "
            "pick one of those with device=..., or install the device's driver/plugin"
        )

    def _config(self, core: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": self.inference_precision,
            "PERFORMANCE_HINT": self.performance_hint,
        }
        if self.num_threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.num_threads
        if self.num_streams is not None:
            config["NUM_STREAMS"] = self.num_streams
        supported = core.get_property(self.device, "SUPPORTED_PROPERTIES")
        unsupported = [key for key in config if key not in supported]
        if unsupported:
            raise BackendError(
                f"OpenVINO device '{self.device}' does not take {', '.join(unsupported)} — leave the matching "
                "option unset for this device, or run on CPU"
            )
        return config

    def _read(self, core: Any) -> Any:
        source = self._model
        if isinstance(source, str | os.PathLike) and not Path(source).is_file():
            raise ModelLoadError(f"model file '{source}' does not exist — check the path")
        try:
            if isinstance(source, ir.Model):
                return core.read_model(to_bytes(source))
            if isinstance(source, bytes):
                return core.read_model(source)
            return core.read_model(str(source))
        except Exception as e:
            raise BackendError(
                f"OpenVINO could not read model '{self.name}': {_ov_message(e)} — pass a valid .onnx file "
                "(with its external data next to it), its bytes, or an onnx_ir.Model"
            ) from e

    def _onnx_signature(self) -> tuple[list[TensorSpec], list[TensorSpec]] | None:
        """The ONNX graph's inputs and outputs, for names, order and dimension labels."""
        source = self._model
        if isinstance(source, ir.Model):
            graph = source.graph
        elif isinstance(source, bytes) or Path(source).suffix.lower() == ".onnx":
            try:
                graph = load(source).graph
            except ModelLoadError as e:  # OpenVINO read it, so it is another format it knows
                logger.debug("'%s' is not ONNX, signature from OpenVINO alone: %s", self.name, e)
                return None
        else:
            return None
        return specs_of(graph.inputs), specs_of(graph.outputs)

    def _check_precision(self, read_back: dict[str, Any]) -> None:
        got = read_back.get("INFERENCE_PRECISION_HINT")
        if got is not None and got != self.inference_precision:
            raise BackendError(
                f"OpenVINO compiled model '{self.name}' for {self.device} with inference precision {got}, but "
                f"{self.inference_precision} was asked for — this device does not execute "
                f"{self.inference_precision}; use inference_precision='f32' (exact) or '{got}'"
            )

    # signature --------------------------------------------------------------------------------
    def _input_specs(self) -> list[TensorSpec]:
        return list(self._specs_in)

    def _output_specs(self) -> list[TensorSpec]:
        return [spec for spec, _ in self._specs_out]

    # inference --------------------------------------------------------------------------------
    def _infer(self, feeds: Feeds) -> Outputs:
        try:
            results = self._request.infer(dict(feeds), share_inputs=False, share_outputs=False)
        except Exception as e:
            raise BackendError(
                f"OpenVINO failed running model '{self.name}': {_ov_message(e)} — check the feeds against "
                "runner.inputs (infer with check=True names the problem)"
            ) from e
        values = results.to_tuple()
        return {spec.name: values[index] for spec, index in self._specs_out}

    @property
    def compiled_model(self) -> Any:
        """The underlying ``openvino.CompiledModel`` (for tight benchmark loops)."""
        self._require_active()
        return self._compiled

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "backend": self.backend,
            "openvino_version": _openvino_version(),
            "device": self.device,
            "inference_precision": self.inference_precision,
            "performance_hint": self.performance_hint,
            "num_threads": self.num_threads or "default",
            "num_streams": self.num_streams or "default",
        }
        if self._read_back:
            info["compiled"] = dict(self._read_back)
        return info


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as e:
        raise BackendError(
            "backend 'openvino' needs the openvino package — install it, e.g. pip install 'modelport[openvino]'"
        ) from e
    return openvino


def _openvino_version() -> str:
    try:
        return version("openvino")
    except PackageNotFoundError:
        return "not installed"


def _check_choice(option: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"OpenVINO option {option}={value!r} is invalid — choose one of: {', '.join(choices)}")


def _ov_message(error: Exception) -> str:
    """OpenVINO's message without its 'Exception from src/...cpp:N:' location lines."""
    lines = [line.strip() for line in str(error).splitlines()]
    kept = [line for line in lines if line and not line.startswith("Exception from ")]
    return " ".join(kept) or type(error).__name__


def _plain(value: Any) -> Any:
    """A property value as JSON-friendly data (ov.Type -> 'f32', enums -> their name)."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    to_string = getattr(value, "to_string", None)
    return to_string() if callable(to_string) else str(value)


def _read_back(compiled: Any) -> dict[str, Any]:
    supported = compiled.get_property("SUPPORTED_PROPERTIES")
    return {key: _plain(compiled.get_property(key)) for key in _READ_BACK if key in supported}


def _port_specs(
    ports: Sequence[Any], onnx_specs: list[TensorSpec] | None, model_name: str
) -> list[tuple[TensorSpec, int]]:
    """Specs of compiled-model ports with their port index, in the ONNX graph's order."""
    by_name = {spec.name: (position, spec) for position, spec in enumerate(onnx_specs or [])}
    found: list[tuple[int, TensorSpec, int]] = []
    for index, port in enumerate(ports):
        names = port.get_names()
        match = next((by_name[n] for n in sorted(names) if n in by_name), None)
        name = match[1].name if match else port.get_any_name()
        onnx_shape = match[1].shape if match else None
        spec = TensorSpec(name=name, dtype=_numpy_dtype(port, name, model_name), shape=_shape(port, onnx_shape))
        found.append((match[0] if match else len(by_name) + index, spec, index))
    found.sort(key=lambda item: item[0])
    return [(spec, index) for _, spec, index in found]


def _numpy_dtype(port: Any, name: str, model_name: str) -> np.dtype[Any]:
    element = port.get_element_type()
    try:
        dtype: np.dtype[Any] = np.dtype(element.to_dtype())
    except Exception as e:
        raise BackendError(
            f"model '{model_name}': tensor '{name}' has OpenVINO type {element}, which has no numpy dtype — "
            "run it with the onnxruntime backend"
        ) from e
    if dtype.kind in "SUO":
        # OpenVINO's Python binding corrupts memory on string tensors (a crash at exit).
        raise BackendError(
            f"model '{model_name}': tensor '{name}' is a string tensor, which the OpenVINO runner does not run "
            "— use the onnxruntime backend for this model"
        )
    return dtype


def _shape(port: Any, onnx_shape: tuple[Dim, ...] | None) -> tuple[Dim, ...] | None:
    """OpenVINO's shape; a dynamic dimension takes the ONNX graph's label at the same axis."""
    partial = port.get_partial_shape()
    if partial.rank.is_dynamic:
        return None
    dims: list[Dim] = []
    for axis, dim in enumerate(partial):
        if dim.is_static:
            dims.append(int(dim.get_length()))
        elif onnx_shape is not None and len(onnx_shape) == len(partial) and isinstance(onnx_shape[axis], str):
            dims.append(onnx_shape[axis])
        else:
            dims.append(None)
    return tuple(dims)
