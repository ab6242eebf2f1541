"""ONNX Runtime runner (CPU by default; any installed execution provider on request).

``providers="auto"`` takes the fastest execution provider the installed onnxruntime offers
(TensorRT, then CUDA) with CPU last as the fallback for nodes the others do not take. ONNX Runtime
may drop a provider it cannot start (a CUDA build without a GPU, a missing cuDNN) and carry on
with the CPU: with "auto" that is allowed and :meth:`OrtRunner.describe` reports the providers of
the *session*; a provider asked for by name that the session dropped is an error, because a
benchmark or a server that silently runs on the CPU is worse than one that refuses to start.

``onnxruntime-cuda`` (:class:`OrtCudaRunner`) and ``onnxruntime-trt`` (:class:`OrtTensorrtRunner`)
are the same runner with the CUDA / TensorRT execution providers asked for by name.

An encrypted model file is decrypted in memory and ONNX Runtime gets its bytes: no plaintext copy is
ever written for it to read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from modelport.errors import BackendError, ConfigError, InputDtypeError
from modelport.ir.serde import serialize_without_weights, to_bytes
from modelport.ir.specs import TensorSpec
from modelport.protect import open_encrypted
from modelport.runners.base import Feeds, Outputs, Runner

__all__ = [
    "AUTO_PROVIDER_ORDER",
    "GraphOptimization",
    "OrtCudaRunner",
    "OrtRunner",
    "OrtTensorrtRunner",
    "ProviderOptions",
    "auto_providers",
]

logger = logging.getLogger(__name__)

ProviderOptions = Mapping[str, Mapping[str, Any]]

GraphOptimization = Literal["disable", "basic", "extended", "all"]
_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_TRT = "TensorrtExecutionProvider"
#: Preference of ``providers="auto"``; CPU is always added last.
AUTO_PROVIDER_ORDER = (_TRT, _CUDA)


def auto_providers(available: Sequence[str]) -> list[str]:
    """The providers ``"auto"`` picks from ``available``: TensorRT > CUDA, then CPU as fallback."""
    return [p for p in AUTO_PROVIDER_ORDER if p in available] + [_CPU]


class OrtRunner(Runner):
    """Runs a model in an ``onnxruntime.InferenceSession``.

    ``model`` is a path (external data is resolved next to it), serialized bytes, or an
    ``onnx_ir.Model``. A loaded model that was not modified in memory should be passed by path.
    A path to a file encrypted by :mod:`modelport.protect` is decrypted in memory with the active
    key when the runner is activated, and the session is built from those bytes.
    ``providers`` is a list of execution providers, ``"auto"`` (see :func:`auto_providers`,
    resolved on activation) or None for CPU only; ``provider_options`` maps a provider to its
    options (``{"CUDAExecutionProvider": {"device_id": 0}}``).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes | ir.Model,
        *,
        providers: Sequence[str] | Literal["auto"] | None = None,
        provider_options: ProviderOptions | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        graph_optimization: GraphOptimization = "all",
        name: str | None = None,
        share_weights: bool = False,
        prepack_shared: bool = False,
        external_initializers: tuple[list[str], list[Any]] | None = None,
        session_config: Mapping[str, str] | None = None,
    ) -> None:
        if name is None:
            name = Path(model).stem if isinstance(model, str | os.PathLike) else "model"
        super().__init__(name=name)
        self._model = model
        if isinstance(providers, str) and providers != "auto":
            raise ConfigError(f"providers={providers!r} is invalid — give 'auto' or a list such as ['{providers}']")
        #: What was asked for: a list of providers, or "auto".
        self.providers: list[str] | Literal["auto"] = "auto" if providers == "auto" else list(providers or [_CPU])
        self.provider_options = {p: dict(o) for p, o in (provider_options or {}).items()}
        self._check_provider_options()
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.graph_optimization = graph_optimization
        #: Session configuration entries (``options.add_session_config_entry``), e.g.
        #: ``{"session.intra_op.allow_spinning": "0"}``.
        self.session_config = dict(session_config or {})
        self.share_weights = share_weights
        #: Let ONNX Runtime prepack weights handed over as buffers (``share_weights`` or
        #: ``external_initializers``), as it does for a model loaded from bytes: the session then
        #: runs the same kernels, and the model is still not serialized with its weights (for
        #: timing, where session start-up should be short and the kernels those of production).
        self.prepack_shared = prepack_shared
        # Weights given as buffers for a model passed as bytes (see serialize_without_weights).
        self._given = external_initializers
        self._shared: tuple[list[str], list[Any]] = ([], [])
        self._session: Any = None

    def _check_provider_options(self) -> None:
        allowed = [*AUTO_PROVIDER_ORDER, _CPU] if self.providers == "auto" else self.providers
        stray = [p for p in self.provider_options if p not in allowed]
        if stray:
            raise ConfigError(
                f"provider options were given for {', '.join(stray)}, which is not among the providers "
                f"({_providers_text(self.providers)}) — "
                "add it to providers or drop its options"
            )

    def _resolve_providers(self, available: Sequence[str]) -> list[str]:
        if self.providers == "auto":
            chosen = auto_providers(available)
            logger.debug("providers='auto' chose %s from %s", chosen, list(available))
            return chosen
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise BackendError(
                f"ONNX Runtime has no {', '.join(missing)} here (available: {', '.join(available)}) — "
                "install the matching onnxruntime package (e.g. the 'gpu' extra) or pick another backend"
            )
        return list(self.providers)

    def _source(self) -> str | bytes:
        model = self._model
        if isinstance(model, bytes):
            if self._given is not None:
                self._shared = self._given
            return model
        if isinstance(model, ir.Model):
            if self.share_weights:
                data, names, arrays = serialize_without_weights(model)
                self._shared = (names, arrays)
                return data
            return to_bytes(model)
        # An encrypted file is decrypted in memory and handed over as bytes: no plaintext file.
        decrypted = open_encrypted(model)
        return decrypted.payload if decrypted is not None else str(model)

    def _activate(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[self.graph_optimization])
        if self.intra_op_threads is not None:
            options.intra_op_num_threads = self.intra_op_threads
        if self.inter_op_threads is not None:
            options.inter_op_num_threads = self.inter_op_threads
        options.log_severity_level = 3
        for key, value in self.session_config.items():
            options.add_session_config_entry(key, value)
        providers = self._resolve_providers(ort.get_available_providers())
        provider_options = [self.provider_options.get(p, {}) for p in providers]
        source = self._source()
        if self._shared[0]:
            # Weights are handed over as buffers, not copied into the model bytes. ORT puts them in
            # the graph before optimizing it, so it optimizes and prepacks them as usual; but
            # prepacking copies them again, so it is off unless asked for.
            names, arrays = self._shared
            options.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays])
            if not self.prepack_shared:
                options.add_session_config_entry("session.disable_prepacking", "1")
        try:
            self._session = ort.InferenceSession(
                source, sess_options=options, providers=providers, provider_options=provider_options
            )
        except Exception as e:
            raise BackendError(f"ONNX Runtime could not load model '{self.name}': {e}") from e
        if self.providers != "auto":
            kept = list(self._session.get_providers())
            dropped = [p for p in providers if p not in kept]
            if dropped:
                self._session = None
                raise BackendError(
                    f"ONNX Runtime dropped {', '.join(dropped)} for model '{self.name}' and would run on "
                    f"{', '.join(kept)} instead — it could not start the provider (no GPU visible, or a "
                    "CUDA/cuDNN/TensorRT library missing: see ONNX Runtime's log with -vv); fix the install, "
                    "or ask for providers='auto' to allow the fallback"
                )

    def _deactivate(self) -> None:
        self._session = None
        self._shared = ([], [])

    def _input_specs(self) -> list[TensorSpec]:
        return _session_specs(self._session.get_inputs())

    def _output_specs(self) -> list[TensorSpec]:
        return _session_specs(self._session.get_outputs())

    def _infer(self, feeds: Feeds) -> Outputs:
        converted = {name: _text_tensor(name, a) if a.dtype == object else a for name, a in feeds.items()}
        try:
            values = self._session.run(None, converted)
        except Exception as e:
            raise BackendError(f"ONNX Runtime failed running model '{self.name}': {e}") from e
        return {spec.name: value for spec, value in zip(self.outputs, values, strict=True)}

    @property
    def session(self) -> Any:
        """The underlying ``onnxruntime.InferenceSession`` (for tight benchmark loops)."""
        self._require_active()
        return self._session

    def describe(self) -> dict[str, Any]:
        """Settings; once active, the providers and provider options the session really uses."""
        if self._session is not None:
            providers: list[str] | str = list(self._session.get_providers())
            in_use = self._session.get_provider_options()
            options = {p: dict(in_use.get(p, {})) for p in providers}
        else:
            providers = self.providers if self.providers == "auto" else list(self.providers)
            options = {p: dict(o) for p, o in self.provider_options.items()}
        return {
            "backend": self.backend,
            "providers": providers,
            "requested_providers": self.providers if self.providers == "auto" else list(self.providers),
            "provider_options": options,
            "intra_op_threads": self.intra_op_threads or "default (physical cores)",
            "inter_op_threads": self.inter_op_threads or "default",
            "graph_optimization": self.graph_optimization,
            "session_config": dict(self.session_config),
        }


def _providers_text(providers: list[str] | Literal["auto"]) -> str:
    if providers == "auto":
        return f"auto: one of {', '.join([*AUTO_PROVIDER_ORDER, _CPU])}"
    return ", ".join(providers)


def _text_tensor(name: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """ONNX Runtime takes string tensors as ``str``; given ``bytes`` it would store their repr."""
    try:
        decoded = [b.decode() if isinstance(b, bytes) else b for b in array.reshape(-1)]
    except UnicodeDecodeError as e:
        raise InputDtypeError(
            f"input '{name}' holds bytes that are not UTF-8 text, and ONNX Runtime takes string tensors "
            "as text — send UTF-8 strings"
        ) from e
    out = np.empty(array.size, dtype=object)
    out[:] = decoded
    return out.reshape(array.shape)


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


def _session_specs(args: list[Any]) -> list[TensorSpec]:
    specs = []
    for arg in args:
        dtype = _ORT_TYPES.get(arg.type)
        if dtype is None:
            raise BackendError(f"tensor '{arg.name}' has type {arg.type}, which modelport does not handle yet")
        shape = None if arg.shape is None else tuple(arg.shape)
        specs.append(TensorSpec(name=arg.name, dtype=np.dtype(dtype), shape=shape))
    return specs


class OrtCudaRunner(OrtRunner):
    """ONNX Runtime on the CUDA execution provider (CPU only for the nodes CUDA does not take)."""

    backend = "onnxruntime-cuda"

    def __init__(self, model: str | os.PathLike[str] | bytes | ir.Model, *, device_id: int = 0, **options: Any) -> None:
        options.setdefault("providers", [_CUDA, _CPU])
        provider_options = dict(options.pop("provider_options", None) or {})
        provider_options.setdefault(_CUDA, {"device_id": device_id})
        super().__init__(model, provider_options=provider_options, **options)


class OrtTensorrtRunner(OrtRunner):
    """ONNX Runtime on the TensorRT execution provider, with CUDA and then CPU for what TensorRT does not take.

    ``fp16`` lets TensorRT pick FP16 kernels; ``engine_cache`` is a folder where built engines are kept
    (TensorRT's build takes seconds to minutes; the cache makes the second start fast).
    """

    backend = "onnxruntime-trt"

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes | ir.Model,
        *,
        device_id: int = 0,
        fp16: bool = False,
        engine_cache: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("providers", [_TRT, _CUDA, _CPU])
        provider_options = dict(options.pop("provider_options", None) or {})
        trt: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": fp16}
        if engine_cache is not None:
            trt.update(
                trt_engine_cache_enable=True, trt_engine_cache_path=str(engine_cache), trt_timing_cache_enable=True
            )
        provider_options.setdefault(_TRT, trt)
        provider_options.setdefault(_CUDA, {"device_id": device_id})
        super().__init__(model, provider_options=provider_options, **options)
